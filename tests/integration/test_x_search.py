"""The X stand-in's timeline and recent search: what matched while no stream was open."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from tests.fakes.x_server import FakeXServer

TOKEN = "t0ken"
SEARCH = "/2/tweets/search/recent"


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, rate=40, keepalive_interval=0.2).start()
    yield server
    server.stop()


def get(server: FakeXServer, path: str, params: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    query = f"?{urlencode(params)}" if params else ""
    conn.request("GET", path + query, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, json.loads(body) if body.strip() else {}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def outage(server: FakeXServer, seconds: float) -> tuple[float, float]:
    """Every stream connection refused with 503 for `seconds`; returns (start, end) epoch."""
    server.refuse_streams(503)
    started = time.time()
    status, _ = get(server, "/2/tweets/search/stream")  # X's timeline runs from the attempt
    assert status == 503
    time.sleep(seconds)
    return started, time.time()


def search_all(server: FakeXServer, params: dict) -> tuple[list[dict], list[dict], int]:
    """Every page: (posts, includes.users, pages)."""
    posts, users, pages, token = [], [], 0, None
    while True:
        status, body = get(server, SEARCH, {**params, **({"next_token": token} if token else {})})
        assert status == 200, body
        pages += 1
        posts += body.get("data", [])
        users += body.get("includes", {}).get("users", [])
        token = body["meta"].get("next_token")
        if not token:
            return posts, users, pages


def test_search_returns_every_post_that_matched_while_no_stream_was_open(x_server):
    x_server.add_rule("python lang:en", tag="py")
    x_server.add_rule("snake", tag="snake")
    start, end = outage(x_server, 1.5)
    missed = x_server.missed_posts()
    assert len(missed) >= 40, "posts keep being made at `rate` while no stream is open"
    assert all(start <= post.at < end + 0.1 for post in missed)
    x_server.clock = lambda: time.time() + 15  # end_time must lie 10 s before the request
    params = {
        "query": "python lang:en",
        "start_time": iso(start - 2),
        "end_time": iso(end + 2),
        "max_results": 10,
        "tweet.fields": "created_at,author_id",
        "expansions": "author_id",
        "user.fields": "username",
    }
    posts, users, pages = search_all(x_server, params)
    originals = [str(p.id) for p in missed if not p.repost]
    assert sorted(p["id"] for p in posts) == sorted(originals)
    assert any(p.repost for p in missed), "the outage holds reposts, which search leaves out"
    assert pages == -(-len(originals) // 10)
    assert [p["id"] for p in posts] == sorted((p["id"] for p in posts), key=int, reverse=True)
    assert set(posts[0]) == {"id", "text", "edit_history_tweet_ids", "created_at", "author_id"}
    assert {p["author_id"] for p in posts} <= {u["id"] for u in users}
    assert set(users[0]) == {"id", "name", "username"}
    assert x_server.billed_posts() == len(originals)  # X bills each post returned
    assert x_server.stats()["search_posts_returned"] == len(originals)
    status, stats = get(x_server, "/_fake/stats")
    assert status == 200 and stats["missed"] == len(x_server.missed_posts()) >= len(missed)


def test_search_returns_streamed_posts_as_well_as_missed_ones(x_server):
    """X's search finds every matching post in the span, whether a stream delivered it or
    not: the posts before a drop and after the reconnect come back too (the margins'
    duplicates), and so do those a stream took but its reader never got."""
    x_server.add_rule("python", tag="py")
    started = time.time()
    stream_lines(x_server, {}, 30)
    outage(x_server, 1.0)
    x_server.refuse_streams(None)
    stream_lines(x_server, {}, 30)
    ended = time.time()
    missed = x_server.missed_posts()
    x_server.clock = lambda: time.time() + 15
    params = {"query": "python", "max_results": 100}
    params |= {"start_time": iso(started - 1), "end_time": iso(ended + 1)}
    posts, _, _ = search_all(x_server, params)
    found = {p["id"] for p in posts}
    streamed = {str(i) for i in x_server.sent_ids if not x_server.is_repost(int(i))}
    timeline = {str(p.id) for p in x_server.timeline_posts() if not p.repost}
    assert len(missed) >= 20 and len(streamed) >= 40
    assert streamed | {str(p.id) for p in missed if not p.repost} <= found
    assert found == timeline  # and a post a stream took after its reader left
    assert len(found) == len(posts), "each post once"
    assert not {i for i in x_server.sent_ids if x_server.is_repost(int(i))} & found


def test_search_start_is_inclusive_and_end_exclusive_at_the_second(x_server):
    x_server.add_rule("python")
    outage(x_server, 2.2)
    missed = x_server.missed_posts()
    x_server.clock = lambda: time.time() + 15
    cut = int(missed[len(missed) // 2].at)
    params = {"query": "python", "max_results": 100}
    params |= {"start_time": iso(cut), "end_time": iso(cut + 1)}
    posts, _, _ = search_all(x_server, params)
    inside = {str(p.id) for p in missed if cut <= p.at < cut + 1 and not p.repost}
    assert {p["id"] for p in posts} == inside and inside


def test_a_stream_connection_ends_the_missed_span(x_server):
    x_server.add_rule("python")
    outage(x_server, 0.5)
    x_server.refuse_streams(None)
    conn = http.client.HTTPConnection("127.0.0.1", x_server.port, timeout=10)
    conn.request("GET", "/2/tweets/search/stream", headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200
    response.readline()
    before = len(x_server.missed_posts())
    time.sleep(0.5)
    assert len(x_server.missed_posts()) == before, "nothing is missed while a stream is open"
    conn.close()


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        ({"max_results": 5}, "max_results", "is not between 10 and 100"),
        ({"query": "x" * 513}, "query", "at most 512 characters"),
        ({"query": "python bio:engineer"}, "query", "Reference to invalid operator 'bio'"),
        ({"start_time": "OLD"}, "start_time", "must be on or after"),
        ({"end_time": "NOW"}, "end_time", "minimum of 10 seconds prior to the request time"),
        ({"next_token": "NOT A TOKEN"}, "next_token", "is not valid"),
    ],
)
def test_search_refuses_what_x_refuses_with_its_problem(x_server, params, parameter, message):
    now = time.time()
    times = {"OLD": iso(now - 8 * 86400), "NOW": iso(now)}
    params = {key: times.get(value, value) for key, value in params.items()}
    status, body = get(x_server, SEARCH, {"query": "python", **params})
    assert status == 400
    assert body["title"] == "Invalid Request"
    assert list(body["errors"][0]["parameters"]) == [parameter]
    assert message in body["errors"][0]["message"]


def test_search_needs_the_bearer_token(x_server):
    conn = http.client.HTTPConnection("127.0.0.1", x_server.port, timeout=10)
    conn.request("GET", f"{SEARCH}?query=python")
    assert conn.getresponse().status == 401


def test_the_7_day_window_follows_the_stand_ins_clock(x_server):
    x_server.add_rule("python")
    start, end = outage(x_server, 0.5)
    x_server.clock = lambda: time.time() + 8 * 86400
    params = {"query": "python", "start_time": iso(start), "end_time": iso(end + 1)}
    status, body = get(x_server, SEARCH, params)
    assert status == 400 and "must be on or after" in body["errors"][0]["message"]
    x_server.clock = lambda: time.time() + timedelta(days=6).total_seconds()
    status, body = get(x_server, SEARCH, {**params, "max_results": 100})
    assert status == 200 and body["meta"]["result_count"] > 0


def stream_lines(server: FakeXServer, params: dict, posts: int | None = None) -> list[dict]:
    """Data lines of one stream connection: `posts` of them, or all until X ends it."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    path = f"/2/tweets/search/stream?{urlencode(params)}"
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200, response.read()
    lines = []
    while posts is None or len(lines) < posts:
        line = response.readline()
        if not line:
            break
        if line.strip():
            lines.append(json.loads(line))
    conn.close()
    return lines


def test_backfill_and_recovery_are_enterprise_only_as_x_answers(x_server):
    x_server.add_rule("python")
    for params in ({"backfill_minutes": 2}, {"start_time": iso(time.time() - 60)}):
        status, body = get(x_server, "/2/tweets/search/stream", params)
        assert status == 400 and body["title"] == "Invalid Request"
        assert list(body["errors"][0]["parameters"]) == [next(iter(params))]
        assert "Enterprise only" in body["errors"][0]["message"]
    x_server.control({"access_level": "enterprise"})
    status, body = get(x_server, "/2/tweets/search/stream", {"backfill_minutes": 6})
    assert status == 400 and "is not between 0 and 5" in body["errors"][0]["message"]
    old = iso(time.time() - 25 * 3600)
    status, body = get(x_server, "/2/tweets/search/stream", {"start_time": old})
    assert status == 400 and "must be on or after" in body["errors"][0]["message"]


def test_backfill_sends_what_matched_while_disconnected_first_oldest_first(x_server):
    x_server.add_rule("python", tag="py")
    x_server.control({"access_level": "enterprise"})
    outage(x_server, 1.0)
    x_server.refuse_streams(None)
    lines = stream_lines(x_server, {"backfill_minutes": 1, "tweet.fields": "created_at"}, 45)
    missed = [str(p.id) for p in x_server.missed_posts()]
    assert len(missed) >= 30
    assert [m["data"]["id"] for m in lines[: len(missed)]] == missed  # every one, reposts too
    assert int(lines[len(missed)]["data"]["id"]) > int(missed[-1])  # then the live stream
    assert all(m["matching_rules"][0]["tag"] == "py" for m in lines)
    assert set(lines[0]["data"]) == {"id", "text", "edit_history_tweet_ids", "created_at"}
    assert x_server.billed_posts() >= len(missed) + 1


def test_recovery_restreams_a_period_then_ends(x_server):
    x_server.add_rule("python")
    x_server.control({"access_level": "enterprise"})
    before = stream_lines(x_server, {}, 20)  # streamed: Recovery sends them again
    start, end = outage(x_server, 1.0)
    x_server.refuse_streams(None)
    missed = [str(p.id) for p in x_server.missed_posts()]
    window = {"start_time": iso(start - 5), "end_time": iso(end + 1)}
    lines = stream_lines(x_server, window)  # ends by itself
    ids = [m["data"]["id"] for m in lines]
    assert ids == sorted(ids, key=int)
    assert set(missed) <= set(ids)
    assert {m["data"]["id"] for m in before} <= set(ids)


def test_the_documented_gap_repair_switches_make_the_stand_in_answer_as_x(x_server):
    """The `/_fake/control` lines of docs/collector.md's gap-repair example work as written:
    the outage refuses streams with 503 and ends, search fails as told, stats count it all."""
    import re
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "collector.md").read_text()
    section = docs.split("Gap repair ([Gap repair](#gap-repair)) can be tried")[1]
    section = section.split("```\n\n")[0]
    bodies = [json.loads(b) for b in re.findall(r"_fake/control -d '(\{.*\})'", section)]
    assert [next(iter(b)) for b in bodies] == [
        "rate", "refuse_streams", "refuse_streams", "operational_disconnect", "search_fail_next"
    ]  # fmt: skip
    x_server.add_rule("python", tag="py")
    x_server.control(bodies[0])
    x_server.control(bodies[1])  # the outage on
    assert get(x_server, "/2/tweets/search/stream")[0] == 503
    x_server.control(bodies[2])  # the outage off
    conn = http.client.HTTPConnection("127.0.0.1", x_server.port, timeout=10)
    conn.request("GET", "/2/tweets/search/stream", headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status == 200
    conn.close()
    x_server.control(bodies[3])
    x_server.clock = lambda: time.time() + 15
    x_server.control(bodies[4])
    params = {"query": "python", "start_time": iso(time.time() - 30), "end_time": iso(time.time())}
    assert [get(x_server, SEARCH, params)[0] for _ in range(3)] == [503, 503, 200]
    stats = get(x_server, "/_fake/stats")[1]
    assert {"missed", "search_requests", "search_posts_returned", "sent"} <= set(stats)
    assert stats["search_requests"] == 3
