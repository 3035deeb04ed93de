"""Gap repair: what X matched while the stream was not connected is fetched again by recent
search and stored, in stream shape, beside the streamed posts.

The X stand-in keeps the posts it made while no stream connection was open (its timeline) and
answers recent search from them; the collector runs as a process against it and moto's S3.
"""

from __future__ import annotations

import csv
import html
import http.client
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.telemetry.events import read_events
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    object_lines,
    run_cli,
    s3_objects,
    wait_until,
    write_config,
)
from tests.fakes.x_server import FakeXServer

RULES = [("python lang:en", "python"), ("snake", "snake"), ("bio:engineer", "bio")]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def repaired_lines(s3) -> dict[str, dict]:
    """Post id -> message of every line in a -repair- object."""
    lines = {}
    for key, body in s3_objects(s3).items():
        if "-repair-" in key.rsplit("/", 1)[1]:
            for line in object_lines(body, key):
                message = json.loads(line)
                lines[message["data"]["id"]] = message
    return lines


def all_post_ids(s3) -> list[str]:
    return [
        json.loads(line)["data"]["id"]
        for key, body in s3_objects(s3).items()
        for line in object_lines(body, key)
    ]


def events_in_s3(s3, tmp_path: Path):
    paths = []
    for key, body in s3_objects(s3, events=True).items():
        path = tmp_path / "events" / key.rsplit("/", 1)[1]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        paths.append(path)
    events, problems = read_events(paths)
    assert problems == []
    return events


def rule_ids(server: FakeXServer) -> dict[str, str]:
    """tag (without the collector's prefix) -> live rule id."""
    return {r["tag"].split(":", 1)[1]: r["id"] for r in server.rules.values()}


def connect(server: FakeXServer) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/2/tweets/search/stream", headers={"Authorization": f"Bearer {TOKEN}"})
    return conn.getresponse()


def outage_while_nobody_streams(server: FakeXServer, seconds: float):
    """X matches posts for `seconds` while its streams are refused, then a stream connection
    stays open (nothing more is missed); returns (start, end, the open stream)."""
    server.refuse_streams(503)
    assert connect(server).status == 503  # the timeline runs from the first attempt
    started = time.time()
    time.sleep(seconds)
    server.refuse_streams(None)
    stream = connect(server)
    assert stream.status == 200
    return started, time.time(), stream


def repair_by_hand_after_outage(server: FakeXServer, config: Path, seconds: float = 2.5):
    """`rules sync`, an outage of `seconds` (outage_while_nobody_streams), then `collector repair`
    over the outage widened by 1 s once search can answer for its end; returns (the repair's
    CompletedProcess, start, end)."""
    assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
    start, end, stream = outage_while_nobody_streams(server, seconds)
    time.sleep(max(0.0, end + 17 - time.time()))  # repair asks for an end_time 15 s old
    try:
        result = run_cli(
            "repair", "--config", str(config), "--from", iso(start - 1), "--to", iso(end + 1)
        )
    finally:
        stream.close()
    return result, start, end


@pytest.mark.slow  # repair asks for an end_time 15 s old: the test waits for it
def test_collector_repair_by_hand_stores_what_matched_in_the_span(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    try:
        config = write_config(
            tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES,
            x_extra="repair_margin_seconds = 0",
        )  # fmt: skip
        result, start, end = repair_by_hand_after_outage(server, config)
    finally:
        server.stop()
    # X's search finds every post of the span: the outage's and the stream's after it
    in_span = server.timeline_posts(int(start - 1), int(end + 1))
    searchable = {str(p.id) for p in in_span if not p.repost}
    assert result.returncode == 0, result.stderr
    missed = server.missed_posts(int(start - 1), int(end + 1))
    assert {str(p.id) for p in missed if not p.repost} <= searchable
    assert len(searchable) > 40
    repaired = repaired_lines(s3)
    assert set(repaired) == searchable
    assert all_post_ids(s3) == list(repaired)  # one line per post, found by two rules
    ids = rule_ids(server)
    for message in repaired.values():
        assert set(message) == {"data", "includes", "matching_rules"}
        assert message["includes"]["users"][0]["id"] == message["data"]["author_id"]
        assert sorted(r["id"] for r in message["matching_rules"]) == sorted(
            [ids["python"], ids["snake"]]
        )
    # X billed what search returned (and what the test's own stream read), once per post
    assert server.billed_posts() == len(searchable | set(server.sent_ids))
    out = result.stdout
    repair_keys = [k for k in s3_objects(s3) if "-repair-" in k]
    assert repair_keys and sorted(
        line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("uploaded ")
    ) == sorted(f"s3://{BUCKET}/{key}" for key in repair_keys)
    assert "left by an earlier run" not in out + result.stderr
    n = len(searchable)
    assert f"{n} post(s) fetched again (test-1:python {n}, test-1:snake {n})" in out
    assert "not repairable: test-1:bio ('bio:' is a stream-only operator" in out
    events = events_in_s3(s3, tmp_path)
    assert [e.event for e in events] == ["repair_started", "repair_done"]
    detail = events[-1].detail
    assert detail["posts"] == n and detail["rules"] == {"test-1:python": n, "test-1:snake": n}
    assert detail["not_repairable"][0]["rule"] == "test-1:bio"


def test_a_span_older_than_search_allows_is_not_repaired_and_says_why(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    try:
        config = write_config(tmp_path, server.url, s3_endpoint=aws_env.url)
        old = time.time() - 8 * 86400
        result = run_cli(
            "repair", "--config", str(config), "--from", iso(old), "--to", iso(old + 60)
        )
    finally:
        server.stop()
    assert result.returncode == 1
    assert "failed: the span is older than recent search's 7 days" in result.stdout
    assert [e.event for e in events_in_s3(s3, tmp_path)] == ["repair_started", "repair_failed"]


def test_a_span_partly_older_than_7_days_says_which_part_was_searched(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    try:
        config = write_config(
            tmp_path, server.url, s3_endpoint=aws_env.url, x_extra="repair_margin_seconds = 0"
        )
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        now = int(time.time())
        start, end = now - 8 * 86400, now - 6 * 86400
        result = run_cli("repair", "--config", str(config), "--from", iso(start), "--to", iso(end))
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    searched = re.search(r"^repaired (\S+) to (\S+) of (\S+) to (\S+): ", result.stdout, re.M)
    assert searched, result.stdout
    oldest = searched[1]
    assert (searched[2], searched[3], searched[4]) == (iso(end), iso(start), iso(end))
    assert iso(now - 7 * 86400) < oldest <= iso(now - 7 * 86400 + 120)
    assert f"; {iso(start)} to {oldest} not searched (older than recent search's 7 days)" in (
        result.stdout
    )
    (done,) = [e for e in events_in_s3(s3, tmp_path) if e.event == "repair_done"]
    assert done.detail["searched"] == [oldest, iso(end)]


def test_a_repair_up_to_now_is_cut_15_s_back_or_says_there_is_nothing_yet(s3, aws_env, tmp_path):
    """X refuses an end_time less than 10 s before the request: `--to now` searches up to 15 s
    ago and names the part it left; a span that is all newer says so in one line."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    try:
        config = write_config(
            tmp_path, server.url, s3_endpoint=aws_env.url, x_extra="repair_margin_seconds = 0"
        )
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        now = time.time()
        recent = run_cli(
            "repair", "--config", str(config), "--from", iso(now - 60), "--to", iso(now + 1)
        )
        after = time.time()
        searches = server.stats()["search_requests"]
        empty = run_cli(
            "repair", "--config", str(config), "--from", iso(now - 5), "--to", iso(now + 1)
        )
        searches = server.stats()["search_requests"] - searches
    finally:
        server.stop()
    assert recent.returncode == 0, recent.stdout + recent.stderr
    assert "Invalid 'end_time'" not in recent.stdout + recent.stderr
    cut = re.search(r"^repaired \S+ to (\S+) of ", recent.stdout, re.M)[1]
    assert iso(now - 16) <= cut <= iso(after - 15)
    assert f"; {cut} to {iso(now + 1)} not searched (less than 15 s old: X's search refuses" in (
        recent.stdout
    )
    assert empty.returncode == 1
    (line,) = [x for x in empty.stdout.splitlines() if "failed" in x]
    assert "failed: nothing to search yet: the span starts after " in line
    assert searches == 0, "nothing to search: no request"


def test_repair_searches_only_the_rules_this_collector_owns(s3, aws_env, tmp_path):
    """Other clients' rules on the same X app are never searched (nor billed); a by-hand run
    whose configured rules are not live says so and searches nothing."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    server.add_rule("someone else's topic", tag="their-app:topic")
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir(), other.mkdir()
    start, end = iso(time.time() - 120), iso(time.time() - 60)
    try:
        config = write_config(mine, server.url, s3_endpoint=aws_env.url, rules=RULES[:2])
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        ours = run_cli("repair", "--config", str(config), "--from", start, "--to", end)
        config_2 = write_config(other, server.url, s3_endpoint=aws_env.url)
        config_2.write_text(config_2.read_text().replace('"test-1"', '"test-2"'))
        searches = server.stats()["search_requests"]
        theirs = run_cli("repair", "--config", str(config_2), "--from", start, "--to", end)
        searches = server.stats()["search_requests"] - searches
    finally:
        server.stop()
    assert ours.returncode == 0, ours.stdout + ours.stderr
    assert "post(s) fetched again (test-1:python 0, test-1:snake 0)" in ours.stdout
    assert "their-app" not in ours.stdout
    assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    assert (
        "post(s) fetched again (no rule); configured but not live on X, not searched: "
        "test-2:python (`collector rules sync` makes them live)" in theirs.stdout
    )
    assert searches == 0


def test_repair_refuses_times_it_cannot_read(tmp_path):
    config = write_config(tmp_path, "http://127.0.0.1:9")
    result = run_cli("repair", "--config", str(config), "--from", "yesterday", "--to", "now")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "collector: error: --from 'yesterday': expected an ISO 8601 time, e.g. 2026-11-28T08:00Z"
    )


def report_gap_rows(page: str) -> list[list[str]]:
    section = page.split("<h2 id='gaps'>", 1)[1].split("<details", 1)[0]
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in section else ""
    return [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


@pytest.mark.slow
def test_a_stream_outage_is_repaired_in_stream_shape_counted_once_and_shown(s3, aws_env, tmp_path):
    """The stream is down (503 on every connection) while X keeps matching; once it is back,
    every post X matched in the outage (search returns no reposts) is in S3 in stream shape,
    the stream-only rule is named not repairable, and report, export and twarc2 read them."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=20, keepalive_interval=0.5).start()
    config = write_config(
        tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES,
        x_extra="repair_margin_seconds = 1",
    )  # fmt: skip
    collector = CollectorProcess(config)
    period_start = time.time() - 60
    try:
        wait_until(lambda: server.streams_open == 1 and len(server.sent_ids) > 20, 30)
        server.refuse_streams(503)
        server.operational_disconnect()
        wait_until(lambda: server.streams_open == 0, 10)
        time.sleep(3)
        down = run_cli("status", "--config", str(config))
        server.refuse_streams(None)  # tweepy's next attempt (5 s after the 503) gets through
        wait_until(lambda: server.streams_open == 1, 30)
        missed = server.missed_posts()  # nothing is missed while the stream is open
        wait_until(lambda: repaired_lines(s3), 60, 0.5)
        wait_until(lambda: "repaired" in (status_of(tmp_path).get("repair_last") or ""), 20)
        status = status_of(tmp_path)
    finally:
        code = collector.stop()
        server.stop()
    assert code == 0, collector.log
    assert re.search(
        r"repair_open +not connected since \S+Z: will be repaired on reconnect", down.stdout
    ), down.stdout
    searchable = {str(p.id) for p in missed if not p.repost}
    reposts = {str(p.id) for p in missed if p.repost}
    assert len(searchable) >= 40, "the outage lasted a few seconds at 20 posts/s"
    repaired = repaired_lines(s3)
    stored = all_post_ids(s3)
    assert searchable <= set(stored), "every post X matched in the outage is stored"
    assert searchable <= set(repaired)
    assert not reposts & set(stored), "search returns no reposts: they stay missing"
    ids = rule_ids(server)
    for post_id in searchable:
        message = repaired[post_id]
        assert list(message) == ["data", "includes", "matching_rules"]
        assert message["includes"]["users"][0]["id"] == message["data"]["author_id"]
        assert {r["id"] for r in message["matching_rules"]} == {ids["python"], ids["snake"]}
    assert "not repairable: test-1:bio ('bio:' is a stream-only operator" in status["repair_last"]
    assert status["repair_not_repairable"] == [
        "test-1:bio: 'bio:' is a stream-only operator: recent search refuses it"
    ]
    # one repair in this run: each post counted once, though two rules found it
    assert status["repair_posts_fetched"] == len(repaired)
    assert "repair: rule 'bio:engineer' (tag test-1:bio) is not repairable" in collector.log

    # The report counts every post once and shows the gap as repaired but for the bio rule.
    window = ["--from", iso(period_start), "--to", iso(time.time() + 60)]
    out = tmp_path / "report.html"
    result = run_cli(
        "report", "--config", str(config), "--out", str(out), "--no-progress",
        "--cache-dir", str(tmp_path / "cache"), *window,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{out}: {len(set(stored))} posts" in result.stdout
    page = out.read_text()
    outage_rows = [row for row in report_gap_rows(page) if row[3] == "not collecting"]
    assert len(outage_rows) == 1, report_gap_rows(page)
    assert outage_rows[0][5].startswith("partly repaired (")
    assert "posts fetched again; not repairable: test-1:bio)" in outage_rows[0][5]

    # export: one row per post, repaired ones included
    csv_out = tmp_path / "posts.csv"
    result = run_cli(
        "export", "--config", str(config), "--out", str(csv_out), "--no-progress",
        "--cache-dir", str(tmp_path / "cache"), *window,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with csv_out.open() as handle:
        exported = [row["id"] for row in csv.DictReader(handle)]
    assert sorted(exported) == sorted(set(stored))

    # twarc2 flatten reads a repaired object like a streamed one
    key, body = next((k, b) for k, b in s3_objects(s3).items() if "-repair-" in k)
    raw = tmp_path / "repaired.jsonl"
    raw.write_bytes(b"".join(line + b"\n" for line in object_lines(body, key)))
    flat = tmp_path / "flat.jsonl"
    twarc2 = Path(sys.executable).with_name("twarc2")
    done = subprocess.run(
        [str(twarc2), "--bearer-token", "unused", "flatten", str(raw), str(flat)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in flat.read_text().splitlines()]
    assert [r["id"] for r in rows] == [
        json.loads(line)["data"]["id"] for line in object_lines(body, key)
    ]
    assert all(r["author"]["id"] == r["author_id"] for r in rows)


def status_of(folder: Path) -> dict:
    try:
        return json.loads((folder / "spool" / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_enterprise_repairs_a_span_by_recovery_with_every_rule(s3, aws_env, tmp_path):
    """On Enterprise, Recovery re-streams the period: stream-only operators are no obstacle and
    reposts come back too (search would leave both out)."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    server.control({"access_level": "enterprise"})
    try:
        config = write_config(
            tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES,
            x_extra='repair_margin_seconds = 0\naccess_level = "enterprise"',
        )  # fmt: skip
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        start, end, stream = outage_while_nobody_streams(server, 2.0)
        missed = server.missed_posts()
        stream.close()
        result = run_cli(
            "repair", "--config", str(config), "--from", iso(start - 1), "--to", iso(end + 1)
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    fetched = int(re.search(r"by Recovery: (\d+) post\(s\) fetched again", result.stdout)[1])
    assert fetched >= len(missed)  # and what the stream sent in the period: X re-streams it all
    repaired = repaired_lines(s3)
    assert {str(p.id) for p in missed} <= set(repaired)
    assert any(p.repost for p in missed)
    ids = rule_ids(server)
    for post in missed:
        rules = {r["id"] for r in repaired[str(post.id)]["matching_rules"]}
        assert rules == {ids["python"], ids["snake"], ids["bio"]}
    (done,) = [e for e in events_in_s3(s3, tmp_path) if e.event == "repair_done"]
    assert done.detail["method"] == "recovery" and done.detail["not_repairable"] == []


@pytest.mark.slow
def test_enterprise_short_drop_is_backfilled_on_the_reconnect(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=20, keepalive_interval=0.5).start()
    server.control({"access_level": "enterprise"})
    config = write_config(
        tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES,
        x_extra='repair_margin_seconds = 1\naccess_level = "enterprise"',
    )  # fmt: skip
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: server.streams_open == 1 and len(server.sent_ids) > 20, 30)
        server.refuse_streams(503)
        server.operational_disconnect()
        wait_until(lambda: server.streams_open == 0, 10)
        time.sleep(3)
        server.refuse_streams(None)
        wait_until(lambda: server.streams_open == 1, 30)
        missed = server.missed_posts()
        wait_until(lambda: "backfill" in (status_of(tmp_path).get("repair_last") or ""), 40)
        wait_until(lambda: {str(p.id) for p in missed} <= set(all_post_ids(s3)), 20, 0.5)
    finally:
        code = collector.stop()
        server.stop()
    assert code == 0, collector.log
    assert all(q.get("backfill_minutes") == ["5"] for q in server.stream_queries)
    assert len(missed) >= 40 and any(p.repost for p in missed)
    assert not repaired_lines(s3), "backfill comes on the stream: nothing to search"
    (done,) = [e for e in events_in_s3(s3, tmp_path) if e.event == "repair_done"]
    assert done.detail["method"] == "backfill"


@pytest.mark.slow  # repair asks for an end_time 15 s old: the test waits for it
def test_a_repair_honours_the_budget_and_keeps_what_it_fetched(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=60).start()
    try:
        config = write_config(
            tmp_path, server.url, s3_endpoint=aws_env.url, x_extra="repair_margin_seconds = 0",
            extra="[budget]\nposts_per_day = 20\n",
        )  # fmt: skip
        result, start, end = repair_by_hand_after_outage(server, config)
    finally:
        server.stop()
    in_span = server.timeline_posts(int(start - 1), int(end + 1))
    missed = {str(p.id) for p in in_span if not p.repost}  # what search finds in the span
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: the budget is spent (" in result.stdout
    assert len(missed) > 100
    kept = set(repaired_lines(s3))
    # the first page (100 posts, newest first) spent the budget of 20: it is stored, X billed it
    assert len(kept) == 100 and kept < missed
    assert "cost: X bills up to $" in result.stdout


@pytest.mark.slow
def test_enterprise_long_stop_is_repaired_by_recovery_after_the_restart(s3, aws_env, tmp_path):
    """A collector stopped for longer than backfill reaches (here: its stop time moved 10
    minutes back in the spool's repair state) repairs the span by Recovery after its restart."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=20, keepalive_interval=0.5).start()
    server.control({"access_level": "enterprise"})
    config = write_config(
        tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES,
        x_extra='repair_margin_seconds = 1\naccess_level = "enterprise"',
    )  # fmt: skip
    try:
        first = CollectorProcess(config)
        wait_until(lambda: server.streams_open == 1 and len(server.sent_ids) > 10, 30)
        assert first.stop() == 0, first.log
        state_file = tmp_path / "spool" / "repair.json"
        state = json.loads(state_file.read_text())
        stopped = datetime.fromisoformat(state["down_since"].replace("Z", "+00:00"))
        state["down_since"] = iso((stopped - timedelta(minutes=10)).timestamp())
        state_file.write_text(json.dumps(state))
        time.sleep(2)  # X keeps matching while nobody is connected
        second = CollectorProcess(config)
        wait_until(lambda: server.streams_open == 1, 30)
        missed = server.missed_posts()
        wait_until(lambda: "by Recovery" in (status_of(tmp_path).get("repair_last") or ""), 60)
        wait_until(lambda: {str(p.id) for p in missed} <= set(repaired_lines(s3)), 30, 0.5)
        assert second.stop() == 0, second.log
    finally:
        server.stop()
    assert len(missed) >= 20
    recovery = [q for q in server.stream_queries if "start_time" in q]
    assert len(recovery) == 1 and recovery[0]["start_time"][0] < iso(stopped.timestamp())
    (done,) = [e for e in events_in_s3(s3, tmp_path) if e.event == "repair_done"]
    assert done.detail["method"] == "recovery" and done.detail["posts"] >= len(missed)


def stored_ids_by_origin(s3) -> tuple[set[str], set[str]]:
    """(ids in streamed objects, ids in -repair- objects)."""
    streamed, repaired = set(), set()
    for key, body in s3_objects(s3).items():
        into = repaired if "-repair-" in key.rsplit("/", 1)[1] else streamed
        into.update(json.loads(line)["data"]["id"] for line in object_lines(body, key))
    return streamed, repaired


@pytest.mark.slow  # X answers for an end_time 10 s old: the repair waits for it
def test_kill_9_and_restart_with_repair_loses_no_post_the_stand_in_sent(s3, aws_env, tmp_path):
    """kill -9 while posts flow, then a restart: what the stand-in wrote to the dead socket,
    what the killed process held and what X made before the restart come back by search.
    Every post the stand-in sent is in S3 afterwards (reposts aside: search does not return
    them), and export has each once."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=50, keepalive_interval=0.5).start()
    config = write_config(
        tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES[:2],
        x_extra="repair_margin_seconds = 1",
    )  # fmt: skip
    period_start = time.time() - 60
    try:
        first = CollectorProcess(config)
        wait_until(lambda: server.streams_open == 1 and len(server.sent_ids) > 100, 30)
        first.kill()
        killed_at = time.time()
        time.sleep(1)  # X keeps matching; the stand-in writes to the dead socket until it notices
        killed = run_cli("status", "--config", str(config))
        second = CollectorProcess(config)
        wait_until(lambda: "repaired" in (status_of(tmp_path).get("repair_last") or ""), 60)
        server.count = 0  # no new posts: the reader gets everything sent before its stop
        time.sleep(1)
        assert second.stop() == 0, second.log
    finally:
        server.stop()
    assert killed.returncode == 3, killed.stdout
    assert re.search(
        r"repair_open +not connected since \S+Z \(its last sign of life: the collector ended "
        r"without a stop\): will be repaired once it runs and connects",
        killed.stdout,
    ), killed.stdout
    sent = set(server.sent_ids)
    streamed, repaired = stored_ids_by_origin(s3)
    stored = streamed | repaired
    reposts = {i for i in sent if server.is_repost(int(i))}
    assert sent - reposts <= stored, "every post the stand-in sent is stored"
    just_before = {i for i in sent if killed_at - 0.5 <= ((int(i) >> 22) + 1288834974657) / 1000
                   < killed_at}  # fmt: skip
    assert just_before and just_before - reposts <= stored
    assert (sent - streamed) - reposts <= repaired, "what the kill lost came back by search"
    assert len(repaired) >= 40, "the span runs from the last sign of life to the restart"

    window = ["--from", iso(period_start), "--to", iso(time.time() + 60)]
    csv_out = tmp_path / "posts.csv"
    result = run_cli(
        "export", "--config", str(config), "--out", str(csv_out), "--no-progress",
        "--cache-dir", str(tmp_path / "cache"), *window,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with csv_out.open() as handle:
        exported = [row["id"] for row in csv.DictReader(handle)]
    assert sorted(exported) == sorted(stored)

    # the report's gap runs from the last streamed post or heartbeat, not the repaired posts
    out = tmp_path / "report.html"
    result = run_cli(
        "report", "--config", str(config), "--out", str(out), "--no-progress",
        "--cache-dir", str(tmp_path / "cache"), *window,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in report_gap_rows(out.read_text()) if r[3] == "not collecting"]
    assert row[4].startswith("the collector ended without a stop event (killed?)")
    assert row[2] != "under 1 s" and row[5].startswith("repaired (")


@pytest.mark.slow  # repair asks for an end_time 15 s old: the test waits for it
def test_kill_9_in_a_stall_repairs_from_the_last_byte_received(s3, aws_env, tmp_path):
    """The stream stalls (open, silent) for longer than the 10 s heartbeat, the collector is
    killed, X sends again, the collector restarts: the span runs from the last byte received
    before the stall, not from the last heartbeat, and what X matched in the stall is stored."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=5, keepalive_interval=0.5).start()
    config = write_config(
        tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES[:2],
        x_extra="repair_margin_seconds = 0",
    )  # fmt: skip
    try:
        first = CollectorProcess(config)
        wait_until(lambda: server.streams_open == 1 and len(server.sent_ids) > 5, 30)
        server.stall(60)
        stalled_at = time.time()
        time.sleep(15)  # a heartbeat runs in the stall
        first.kill()
        server.stall(0)
        second = CollectorProcess(config)
        repair = wait_until(
            lambda: (status_of(tmp_path).get("repair_last") or "").startswith("repaired ") and
            status_of(tmp_path)["repair_last"], 60, 0.5,
        )  # fmt: skip
        matched = server.missed_posts(stalled_at, stalled_at + 15)
        searchable = {str(p.id) for p in matched if not p.repost}
        wait_until(lambda: searchable <= set(all_post_ids(s3)), 20, 0.5)
        assert second.stop() == 0, second.log
    finally:
        server.stop()
    start = re.match(r"repaired (\S+) to ", repair)[1]
    assert stalled_at - 2 <= datetime.fromisoformat(start).timestamp() <= stalled_at, repair
    assert len(searchable) >= 50, "15 s at 5 posts/s, a few reposts aside"


def status_json(config: Path) -> tuple[int, dict]:
    shown = run_cli("status", "--json", "--config", str(config))
    return shown.returncode, json.loads(shown.stdout)


@pytest.mark.slow  # repair asks for an end_time 15 s old: the test waits for it
def test_a_repair_beside_the_running_collector_counts_in_its_budget_and_usage(
    s3, aws_env, tmp_path
):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=30).start()
    collector = None
    try:
        config = write_config(
            tmp_path, server.url, s3_endpoint=aws_env.url, rules=RULES, max_seconds=0.5,
            x_extra="repair_margin_seconds = 0",
        )  # fmt: skip
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        server.refuse_streams(503)
        assert connect(server).status == 503  # X's timeline runs: it matches, nobody streams
        start = time.time()
        time.sleep(2.5)
        server.refuse_streams(None)
        collector = CollectorProcess(config)
        wait_until(lambda: server.streams_open == 1, 20)
        end = time.time()
        wait_until(lambda: len(server.sent_ids) >= 20, 20)
        server.count = 0  # the stream sends nothing more: X's bill stops moving
        time.sleep(max(0.0, end + 17 - time.time()))  # repair asks for an end_time 15 s old
        result = run_cli(
            "repair", "--config", str(config), "--from", iso(start - 1), "--to", iso(end + 1)
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "budget: a collector runs on this spool; this repair's posts go to its" in (
            result.stdout
        )
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        billed = server.billed_posts(day)
        streamed = len(set(server.sent_ids))
        assert billed >= streamed + 40  # the repair fetched posts the stream never delivered
        code, status = wait_until(
            lambda: (r := status_json(config))[1].get("billable_posts_today") == billed and r,
            10,
            0.5,
        )
        assert status["spend_usd_today"] == pytest.approx(billed * 0.005)
        usage = run_cli("usage", "--config", str(config))
        assert usage.returncode == 0 and "difference: none" in usage.stdout, usage.stdout
        assert f"ledger (this collector): {billed:,} billable posts since " in usage.stdout
        assert collector.stop() == 0

        # a restart with a budget of what X billed stays paused: the repair's posts count
        text = config.read_text().replace(
            'collector_id = "test-1"\n',
            f'collector_id = "test-1"\n[budget]\nposts_per_day = {billed}\n',
        )
        config.write_text(text)
        collector = CollectorProcess(config)
        code, status = wait_until(
            lambda: (r := status_json(config))[1].get("state") == "running" and r, 20, 0.5
        )
        assert code == 1 and status["connection"] == "paused"
        assert status["health_reason"] == (
            f"budget reached: {billed:,} posts today (posts_per_day {billed:,}); "
            "paused until 00:00 UTC"
        )
    finally:
        if collector is not None:
            collector.stop()
        server.stop()
