"""The X API stand-in speaks the wire protocol that urllib, http.client and tweepy expect."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
import requests.adapters
import tweepy

from tests.fakes.x_server import (
    PARTIAL_ERROR,
    X_EXPANSIONS,
    X_MEDIA_FIELDS,
    X_PLACE_FIELDS,
    X_POLL_FIELDS,
    X_TWEET_FIELDS,
    X_USER_FIELDS,
    FakeXServer,
)

TOKEN = "t0ken"
STREAM = "/2/tweets/search/stream"
RULES = "/2/tweets/search/stream/rules"
PRIVATE = {"non_public_metrics", "organic_metrics", "promoted_metrics"}  # user context only
# Every public field and expansion, as twarc2 asks: X sends only what a request names.
EVERYTHING = {
    "tweet.fields": ",".join(sorted(X_TWEET_FIELDS - PRIVATE)),
    "expansions": ",".join(sorted(X_EXPANSIONS)),
    "user.fields": ",".join(sorted(X_USER_FIELDS)),
    "media.fields": ",".join(sorted(X_MEDIA_FIELDS - PRIVATE)),
    "poll.fields": ",".join(sorted(X_POLL_FIELDS)),
    "place.fields": ",".join(sorted(X_PLACE_FIELDS)),
}


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, keepalive_interval=0.2).start()
    yield server
    server.stop()


def open_stream(
    server: FakeXServer, path: str = STREAM, query: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    """GET a stream asking for `query` (default: EVERYTHING)."""
    if path == STREAM and not server.rules:
        server.add_rule("python", tag="py")  # X answers 409 while no rule is live
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    target = f"{path}?{urlencode(EVERYTHING if query is None else query)}"
    conn.request("GET", target, headers={"Authorization": f"Bearer {TOKEN}"})
    return conn.getresponse()


def read_lines(response: http.client.HTTPResponse, posts: int) -> list[bytes]:
    """Raw lines (keep-alives included) until `posts` non-blank lines arrived."""
    lines: list[bytes] = []
    while sum(1 for line in lines if line.strip()) < posts:
        line = response.readline()
        if not line:
            break
        lines.append(line)
    return lines


def wait_until(condition, timeout: float = 5.0) -> None:
    """sent_ids is updated right after the write returns, which can be after the client read."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


class LocalRedirect(requests.adapters.HTTPAdapter):
    """tweepy hard-codes https://api.twitter.com; send its requests to the stand-in instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request, **kwargs):
        request.url = request.url.replace("https://api.twitter.com", self.base_url, 1)
        return super().send(request, **kwargs)


def tweepy_client(server: FakeXServer, **kwargs) -> tweepy.StreamingClient:
    client = tweepy.StreamingClient(TOKEN, **kwargs)
    client.session.mount("https://api.twitter.com", LocalRedirect(server.url))
    return client


def test_stream_sends_chunked_crlf_json_lines_and_records_sent_ids(x_server: FakeXServer) -> None:
    x_server.count = 20
    response = open_stream(x_server)
    assert response.status == 200
    assert response.getheader("Transfer-Encoding") == "chunked"
    lines = [line for line in read_lines(response, 20) if line.strip()]
    assert all(line.endswith(b"\r\n") for line in lines)
    messages = [json.loads(line) for line in lines]
    ids = [m["data"]["id"] for m in messages]
    assert len(set(ids)) == 20
    assert all(1024 <= len(line) <= 8 * 1024 for line in lines)
    assert all(m["includes"]["users"] and m["matching_rules"] for m in messages)
    wait_until(lambda: len(x_server.sent_ids) == 20)
    assert x_server.sent_ids == ids


def test_each_post_carries_its_author_in_includes_users(x_server: FakeXServer) -> None:
    x_server.count = 200
    response = open_stream(x_server)
    messages = [json.loads(line) for line in read_lines(response, 200) if line.strip()]
    authors = []
    for message in messages:
        author_id = message["data"]["author_id"]
        users = {u["id"]: u for u in message["includes"]["users"]}
        assert author_id in users, message["data"]["id"]
        authors.append(users[author_id]["username"])
    # Accounts post more than once, so top-author counts mean something.
    assert 5 < len(set(authors)) < len(authors)
    types = {r["type"] for m in messages for r in m["data"].get("referenced_tweets", [])}
    assert types == {"replied_to", "quoted", "retweeted"}
    reposts = [m for m in messages if m["data"]["text"].startswith("RT @")]
    assert reposts and all(
        m["data"]["referenced_tweets"][0]["type"] == "retweeted" for m in reposts
    )
    assert any(not m["data"].get("referenced_tweets") for m in messages)


def test_stream_sends_keepalives_after_count_is_reached(x_server: FakeXServer) -> None:
    x_server.count = 2
    response = open_stream(x_server, "/2/tweets/sample/stream")
    read_lines(response, 2)
    assert response.readline() == b"\r\n"
    assert response.readline() == b"\r\n"
    wait_until(lambda: len(x_server.sent_ids) == 2)
    assert len(x_server.sent_ids) == 2


def test_wrong_or_missing_token_gets_401_problem_json(x_server: FakeXServer) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}):
        request = urllib.request.Request(x_server.url + STREAM, headers=headers)
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
        assert error.value.code == 401
        assert json.loads(error.value.read())["title"] == "Unauthorized"


def test_rules_add_list_delete_and_dry_run_parse_in_tweepy(x_server: FakeXServer) -> None:
    client = tweepy_client(x_server)
    assert client.get_rules().data is None
    dry = client.add_rules([tweepy.StreamRule("cats", tag="c")], dry_run=True)
    assert dry.meta["summary"]["created"] == 1
    assert client.get_rules().data is None
    added = client.add_rules(
        [tweepy.StreamRule("python lang:en", tag="python"), tweepy.StreamRule("plain")]
    )
    assert [r.value for r in added.data] == ["python lang:en", "plain"]
    duplicate = client.add_rules(tweepy.StreamRule("plain"))
    assert duplicate.errors[0]["title"] == "DuplicateRule"
    listed = client.get_rules()
    assert {(r.value, r.tag) for r in listed.data} == {
        ("python lang:en", "python"),
        ("plain", None),
    }
    assert listed.meta["result_count"] == 2
    python_rule = next(r for r in listed.data if r.tag == "python")
    deleted = client.delete_rules([python_rule.id])
    assert deleted.meta["summary"] == {"deleted": 1, "not_deleted": 0}
    assert [r.value for r in client.get_rules().data] == ["plain"]


def test_stream_carries_the_tags_of_the_current_rules(x_server: FakeXServer) -> None:
    client = tweepy_client(x_server)
    client.add_rules(tweepy.StreamRule("python", tag="py"))
    x_server.count = 1
    message = json.loads(read_lines(open_stream(x_server), 1)[0])
    assert [r["tag"] for r in message["matching_rules"]] == ["py"]


def test_tweepy_streaming_client_receives_posts(x_server: FakeXServer) -> None:
    received: list[tweepy.StreamResponse] = []
    x_server.count = 30
    x_server.add_rule("python", tag="py")  # X answers 409 while no rule is live

    class Collect(tweepy.StreamingClient):
        def on_response(self, response):
            received.append(response)
            if len(received) == 30:
                self.disconnect()

    client = Collect(TOKEN, chunk_size=65536)
    client.session.mount("https://api.twitter.com", LocalRedirect(x_server.url))
    thread = client.filter(threaded=True, expansions=["author_id"])
    thread.join(timeout=20)
    wait_until(lambda: len(x_server.sent_ids) == 30)
    assert [r.data.id for r in received] == [int(i) for i in x_server.sent_ids]
    assert received[0].includes["users"]


def test_drop_after_cuts_the_line_and_keeps_sent_ids_exact(x_server: FakeXServer) -> None:
    x_server.drop_after(3)
    response = open_stream(x_server)
    data = b""
    with pytest.raises(http.client.IncompleteRead) as cut:
        data = response.read()
    data = cut.value.partial
    lines = data.split(b"\r\n")
    assert [json.loads(line)["data"]["id"] for line in lines[:3]] == x_server.sent_ids
    assert lines[3] and not data.endswith(b"\r\n")


def test_fail_next_answers_503_then_429_then_streams(x_server: FakeXServer) -> None:
    x_server.fail_next(503)
    x_server.fail_next(429)
    x_server.count = 1
    for status in (503, 429):
        assert open_stream(x_server).status == status
    assert open_stream(x_server).status == 200
    assert x_server.connections == 3


def test_stall_sends_nothing_not_even_keepalives(x_server: FakeXServer) -> None:
    x_server.count = 1
    response = open_stream(x_server)
    read_lines(response, 1)
    x_server.stall(1.0)
    started = time.monotonic()
    response.readline()
    assert time.monotonic() - started >= 0.8


def test_operational_disconnect_message_then_close(x_server: FakeXServer) -> None:
    x_server.count = 0
    response = open_stream(x_server)
    x_server.operational_disconnect()
    body = response.read()
    message = json.loads([line for line in body.split(b"\r\n") if line.strip()][0])
    assert message["errors"][0]["title"] == "operational-disconnect"


@pytest.mark.parametrize("kind", ["malformed", "non_utf8", "huge", "partial_errors"])
def test_injected_lines(x_server: FakeXServer, kind: str) -> None:
    x_server.count = 0
    response = open_stream(x_server)
    x_server.inject(kind)
    line = b""
    while not line.strip():
        line = response.readline()
    if kind == "malformed":
        with pytest.raises(ValueError):
            json.loads(line)
    elif kind == "non_utf8":
        with pytest.raises(UnicodeDecodeError):
            line.decode()
    else:
        message = json.loads(line)
        wait_until(lambda: x_server.sent_ids)
        assert x_server.sent_ids == [message["data"]["id"]]
        if kind == "huge":
            assert len(line) > 10 * 1024 * 1024
        else:
            assert message["errors"] and message["includes"]


def test_http_control_api_sets_knobs_and_reports_stats(x_server: FakeXServer) -> None:
    request = urllib.request.Request(
        x_server.url + "/_fake/control", data=json.dumps({"count": 5}).encode(), method="POST"
    )
    urllib.request.urlopen(request, timeout=5).close()
    read_lines(open_stream(x_server), 5)

    def sent() -> int:  # counted once the write returned: a moment after the client read it
        with urllib.request.urlopen(x_server.url + "/_fake/stats", timeout=5) as stats:
            return json.load(stats)["sent"]

    wait_until(lambda: sent() == 5)
    assert sent() == 5


def test_rate_limits_posts_per_second(x_server: FakeXServer) -> None:
    x_server.rate = 20
    response = open_stream(x_server)
    started = time.monotonic()
    read_lines(response, 10)
    assert 0.3 <= time.monotonic() - started <= 2.0


def test_created_at_is_the_time_each_post_is_sent(x_server: FakeXServer) -> None:
    """X's created_at is when the post was made, seconds before the stream delivers it; a
    report's posts per minute over what the stand-in sent must follow the clock."""
    x_server.rate = 4
    response = open_stream(x_server)
    times = []
    for line in read_lines(response, 6):
        if line.strip():
            created_at = json.loads(line)["data"]["created_at"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created_at)
            sent = datetime.strptime(created_at, "%Y-%m-%dT%H:%M:%S.%f%z")
            times.append(sent)
            assert abs((datetime.now(UTC) - sent).total_seconds()) < 2.0, created_at
    assert times == sorted(times)
    assert (times[-1] - times[0]).total_seconds() >= 1.0  # 6 posts at 4/s span 1.25 s


def test_post_ids_are_snowflakes_unique_across_restarts_holding_created_at() -> None:
    """X's ids hold the creation time (ms since 1288834974657, shifted 22 bits): a stand-in
    started again must not send the ids of the last run (an export would merge the posts)."""
    seen: list[dict] = []
    for _ in range(2):
        server = FakeXServer(token=TOKEN).start()
        try:
            server.count = 50
            lines = read_lines(open_stream(server), 50)
        finally:
            server.stop()
        seen.extend(json.loads(line)["data"] for line in lines if line.strip())
    ids = [int(post["id"]) for post in seen]
    assert len(set(ids)) == 100 and ids == sorted(ids)
    for post in seen:
        millis = (int(post["id"]) >> 22) + 1_288_834_974_657
        held = datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
        assert post["created_at"] == held[:-3] + "Z"
        assert post["conversation_id"] == post["id"]
    assert len({post["text"] for post in seen}) > 20  # the templates still vary


def test_stop_ends_open_streams() -> None:
    server = FakeXServer(token=TOKEN, count=0, keepalive_interval=0.1).start()
    response = open_stream(server)
    done = threading.Event()

    def read_until_closed() -> None:
        # the stop cuts the stream without the last chunk, like a network cut
        with contextlib.suppress(http.client.IncompleteRead):
            response.read()
        done.set()

    threading.Thread(target=read_until_closed, daemon=True).start()
    server.stop()
    assert done.wait(5)


# Refusals, as X answers them -------------------------------------------------------------------


def stream_refusal(server: FakeXServer) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + STREAM, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    return error.value.code, json.loads(error.value.read())


def test_filtered_stream_without_a_live_rule_gets_409_rule_configuration_issue(
    x_server: FakeXServer,
) -> None:
    code, problem = stream_refusal(x_server)
    assert code == 409 and problem["connection_issue"] == "RuleConfigurationIssue"
    assert problem["detail"].startswith("You must define rules")
    x_server.add_rule("python")
    assert open_stream(x_server).status == 200


def test_usage_cap_refusal_is_xs_usage_capped_problem(x_server: FakeXServer) -> None:
    x_server.add_rule("python")
    x_server.refuse_streams(429, "UsageCapExceeded")
    code, problem = stream_refusal(x_server)
    assert code == 429 and problem["title"] == "UsageCapExceeded"
    assert problem["detail"] == "Usage cap exceeded: Monthly product cap"
    assert problem["type"] == "https://api.twitter.com/2/problems/usage-capped"
    x_server.refuse_streams(None)
    assert open_stream(x_server).status == 200


def test_rules_over_the_length_limit_are_refused_inside_a_200(x_server: FakeXServer) -> None:
    client = tweepy_client(x_server)
    long_value = "python " * 150  # 1,050 characters: over pay-per-use's 1,024
    response = client.add_rules(
        [tweepy.StreamRule(long_value, tag="long"), tweepy.StreamRule("short", tag="s")]
    )
    (error,) = response.errors
    assert error["title"] == "UnprocessableEntity" and error["value"] == long_value
    assert error["type"] == "https://api.twitter.com/2/problems/invalid-rules"
    assert "1024" in error["details"][0]
    assert [r.value for r in response.data] == ["short"]
    assert response.meta["summary"]["invalid"] == 1


def test_a_repeated_value_in_one_request_is_a_duplicate_of_the_first(x_server: FakeXServer) -> None:
    client = tweepy_client(x_server)
    response = client.add_rules(
        [tweepy.StreamRule("same", tag="a"), tweepy.StreamRule("same", tag="b")]
    )
    (created,) = response.data
    (error,) = response.errors
    assert error["title"] == "DuplicateRule" and error["id"] == created.id
    assert [r.tag for r in client.get_rules().data] == ["a"]


def test_every_connection_can_end_with_an_operational_disconnect(x_server: FakeXServer) -> None:
    x_server.disconnect_every_connection = True
    for _ in range(3):
        response = open_stream(x_server)
        assert response.status == 200
        body = response.read()  # the server ends the chunked body after the message
        assert b"OperationalDisconnect" in body


def stream_messages(server: FakeXServer, posts: int, query: dict[str, str] | None) -> list[dict]:
    # the stand-in counts a post once its write returned, a moment after the client read it:
    # the last call's posts are all counted before the next count is set
    wait_until(lambda: server.count is None or len(server.sent_ids) >= server.count)
    server.count = len(server.sent_ids) + posts
    response = open_stream(server, query=query)
    assert response.status == 200
    messages = [json.loads(line) for line in read_lines(response, posts) if line.strip()]
    response.close()
    return messages


def test_a_request_without_fields_gets_only_id_text_and_edit_history(x_server) -> None:
    messages = stream_messages(x_server, 50, {})
    for message in messages:
        assert set(message) == {"data", "matching_rules"}
        assert set(message["data"]) == {"id", "text", "edit_history_tweet_ids"}
        assert message["data"]["id"] in message["data"]["edit_history_tweet_ids"]


def test_only_the_fields_and_expansions_asked_for_are_sent(x_server) -> None:
    query = {"tweet.fields": "created_at,lang", "expansions": "author_id,referenced_tweets.id"}
    query["user.fields"] = "public_metrics"
    messages = stream_messages(x_server, 200, query)
    asked = {"id", "text", "edit_history_tweet_ids", "created_at", "lang"}
    for message in messages:
        data, includes = message["data"], message["includes"]
        # an expansion puts the id it expands into the post
        assert asked <= set(data) <= asked | {"author_id", "referenced_tweets"}
        assert includes["users"][0]["id"] == data["author_id"]
        assert all(
            set(u) == {"id", "name", "username", "public_metrics"} for u in includes["users"]
        )
        assert set(includes) <= {"users", "tweets"}
        for tweet in includes.get("tweets", []):  # tweet.fields apply to included posts too
            assert set(tweet) <= asked and "author_id" not in tweet
    assert any("tweets" in m["includes"] for m in messages)


def test_everything_asked_builds_every_includes_kind(x_server) -> None:
    messages = stream_messages(x_server, 400, EVERYTHING)
    kinds = {kind for m in messages for kind in m.get("includes", {})}
    assert kinds == {"users", "tweets", "media", "places", "polls"}
    for message in messages:
        data, includes = message["data"], message["includes"]
        users = {u["id"] for u in includes["users"]}
        # referenced_tweets.id.author_id: the quoted or replied-to post's author is there too
        assert all(t["author_id"] in users for t in includes.get("tweets", []))
        for poll in includes.get("polls", []):
            assert poll["id"] in data["attachments"]["poll_ids"] and poll["options"]
        for media in includes.get("media", []):
            assert media["media_key"] in data["attachments"]["media_keys"]
        assert data["edit_controls"]["editable_until"] > data["created_at"]
    assert any(len(m["data"]["edit_history_tweet_ids"]) > 1 for m in messages)
    assert any("alt_text" in media for m in messages for media in m["includes"].get("media", []))
    assert not any("note_tweet" in m["data"] for m in messages)  # no long posts by default


def test_an_expanded_object_x_cannot_return_comes_as_a_partial_error(x_server) -> None:
    """X leaves an object it cannot return (deleted, withheld) out of `includes` and names it
    in `errors` beside `data` (resource-not-found, the shape of x_server.PARTIAL_ERROR)."""
    messages = stream_messages(x_server, 400, EVERYTHING)
    named: set[tuple[str, str]] = set()
    for message in messages:
        data, includes = message["data"], message.get("includes", {})
        expected = []
        for ref in data.get("referenced_tweets", []):
            if ref["id"] not in {t["id"] for t in includes.get("tweets", [])}:
                expected.append(("tweet", "referenced_tweets.id", ref["id"]))
        for key in data.get("attachments", {}).get("media_keys", []):
            if key not in {m["media_key"] for m in includes.get("media", [])}:
                expected.append(("media", "attachments.media_keys", key))
        place = data.get("geo", {}).get("place_id")
        if place and place not in {p["id"] for p in includes.get("places", [])}:
            expected.append(("place", "geo.place_id", place))
        errors = message.get("errors", [])
        got = [(e["resource_type"], e["parameter"], e["value"]) for e in errors]
        assert sorted(got) == sorted(expected), data["id"]
        for error in errors:
            assert set(error) == set(PARTIAL_ERROR)
            assert error["type"] == "https://api.twitter.com/2/problems/resource-not-found"
            assert error["detail"] == (
                f"Could not find {error['resource_type']} with {error['parameter']}: "
                f"[{error['value']}]."
            )
        named |= {(kind, parameter) for kind, parameter, _ in got}
    assert {"tweet", "media", "place"} <= {kind for kind, _ in named}
    # without the expansions nothing is missing, so nothing is reported
    plain = stream_messages(x_server, 100, {"tweet.fields": "referenced_tweets,attachments,geo"})
    assert not any("errors" in m for m in plain)


def test_long_posts_carry_their_full_text_and_entities_in_note_tweet(x_server) -> None:
    x_server.control({"note_share": 1.0})
    messages = stream_messages(x_server, 20, EVERYTHING)
    for message in messages:
        data = message["data"]
        note = data["note_tweet"]
        assert len(note["text"]) == 4000 and len(data["text"]) <= 280
        assert note["text"].startswith(data["text"])
        tags = re.findall(r"#(\w+)", note["text"])
        assert [h["tag"] for h in note["entities"]["hashtags"]] == tags
        for hashtag in note["entities"]["hashtags"]:
            assert note["text"][hashtag["start"] : hashtag["end"]] == "#" + hashtag["tag"]
        assert all(h["end"] <= len(data["text"]) for h in data["entities"]["hashtags"])
    # without tweet.fields=note_tweet only the cut text arrives
    cut = stream_messages(x_server, 5, {"tweet.fields": "entities"})
    assert all("note_tweet" not in m["data"] and len(m["data"]["text"]) <= 280 for m in cut)


def test_renamed_spellings_carry_the_same_values(x_server) -> None:
    x_server.control({"note_share": 0.5})
    post_id = 2_000_000_000_000_000_000
    old = json.loads(x_server.render_post(post_id, EVERYTHING))
    x_server.control({"renamed_fields": True})
    new = json.loads(x_server.render_post(post_id, EVERYTHING))
    renamed = {"edit_history_tweet_ids": "edit_history_post_ids", "note_tweet": "note_post",
               "referenced_tweets": "referenced_posts"}  # fmt: skip
    assert {renamed.get(k, k): v for k, v in old["data"].items()} == new["data"]
    assert "edit_history_post_ids" in new["data"] and "edit_history_tweet_ids" not in new["data"]
    # a request may name the new spelling too
    asked = json.loads(x_server.render_post(post_id, {"tweet.fields": "note_post"}))
    assert set(asked["data"]) <= {"id", "text", "edit_history_post_ids", "note_post"}


def test_render_post_is_what_the_stream_sent(x_server) -> None:
    query = {"tweet.fields": "author_id,entities", "expansions": "author_id"}
    messages = stream_messages(x_server, 10, query)
    for message in messages:
        message.pop("matching_rules")
        assert json.loads(x_server.render_post(int(message["data"]["id"]), query)) == message


def test_an_unknown_field_is_refused_with_400_naming_it(x_server) -> None:
    response = open_stream(x_server, query={"tweet.fields": "created_at,bogus_field"})
    assert response.status == 400
    body = json.loads(response.read())
    assert body["title"] == "Invalid Request"
    assert body["errors"][0]["parameters"] == {"tweet.fields": ["bogus_field"]}
    assert x_server.sent_ids == []
