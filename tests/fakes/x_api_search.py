"""Recent search on the X stand-in: `GET /2/tweets/search/recent`, answered from the timeline.

X's search finds every post that matches, whether a stream delivered it or not: the stand-in
answers from its whole timeline (FakeXServer.timeline_posts: the posts its streams took and
those it made while no stream connection was open). Recent search returns those whose time
lies in [start_time, end_time) and that matched a rule live then whose value equals the query
(the stand-in matches every post against every live rule, so a rule's value finds its posts):

    GET /2/tweets/search/recent?query=...&start_time=...&end_time=...&max_results=100
        [&next_token=...][&tweet.fields=...&expansions=...&user.fields=...]
    -> {"data": [post, ...], "includes": {"users": [...], "tweets": [...]},
        "meta": {"newest_id", "oldest_id", "result_count", "next_token"}}
       or {"meta": {"result_count": 0}} when nothing matches

As X documents it (docs.x.com/x-api/posts/search, "Recent search pagination"): posts in
reverse-chronological order, `max_results` 10-100 (default 10), a `next_token` while more
pages remain (the same token always gives the same page), `start_time` inclusive and
`end_time` exclusive at second granularity (YYYY-MM-DDTHH:mm:ssZ), `start_time` no older than
7 days, `end_time` at least 10 seconds before the request, a query of at most 512 characters
(4,096 on Enterprise: knob `search_query_max_length`), and no stream-only operator (X answers
"Reference to invalid operator"). Since 2026-05-04 keyword search returns no reposts (knob
`search_returns_reposts` to return them). Refusals are X's 400 "Invalid Request" problem with
`errors[].parameters` and `message`. Each post returned is billed (fake.record_delivered).

Fields: as the stand-in renders them for any endpoint (FakeXServer.render_post): id, text and
edit_history_tweet_ids unless `tweet.fields`, `expansions`, `user.fields`... ask for more.

Knobs: search_query_max_length (int), search_returns_reposts (bool),
search_fail_next ([status, n]: the next n searches get X's problem for that status).
Stats: search_requests, search_posts_returned.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from tests.fakes.x_server import (
    PROBLEMS,
    FakeXServer,
    InvalidFields,
    _Handler,
    knob,
    route,
    stats_part,
)

FAMILY = "search"
QUERY_MAX_LENGTH = 512  # 4,096 on Enterprise
WINDOW = timedelta(days=7)
END_TIME_LAG = timedelta(seconds=10)
MAX_RESULTS_RANGE = (10, 100)
DEFAULT_MAX_RESULTS = 10
# Operators only the filtered stream knows (docs.x.com, "Build a rule" vs "Build a query").
STREAM_ONLY_OPERATORS = (
    "sample:", "bio:", "bio_name:", "bio_location:", "followers_count:", "tweets_count:",
    "following_count:", "listed_count:", "url_title:", "url_description:", "url_contains:",
    "source:",
)  # fmt: skip
_OPERATOR = re.compile(
    r"(?<![\w:])-?(" + "|".join(re.escape(op[:-1]) for op in STREAM_ONLY_OPERATORS) + "):"
)
_TOKEN = re.compile(r"^[0-9a-z]{8,40}$")


def _state(fake: FakeXServer) -> dict:
    return fake.ext.setdefault(
        FAMILY,
        {
            "query_max_length": QUERY_MAX_LENGTH,
            "returns_reposts": False,
            "fail_next": [],
            "requests": 0,
            "returned": 0,
        },
    )


@knob("search_query_max_length")
def _query_max_length(fake: FakeXServer, value) -> None:
    _state(fake)["query_max_length"] = int(value)


@knob("search_returns_reposts")
def _returns_reposts(fake: FakeXServer, value) -> None:
    _state(fake)["returns_reposts"] = bool(value)


@knob("search_fail_next")
def _fail_next(fake: FakeXServer, value) -> None:
    status, times = value
    _state(fake)["fail_next"].extend([int(status)] * int(times))


@stats_part
def _stats(fake: FakeXServer) -> dict:
    state = _state(fake)
    return {"search_requests": state["requests"], "search_posts_returned": state["returned"]}


def invalid_request(parameter: str, value: str, message: str) -> dict:
    """X's 400 body for a parameter it refuses."""
    return {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


def _iso_seconds(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(name: str, text: str) -> datetime:
    """The time a start_time/end_time holds, cut to the second; ValueError with X's message."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"Invalid '{name}':'{text}'. '{name}' must be in the format YYYY-MM-DDTHH:mm:ssZ"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


class _Refused(Exception):
    def __init__(self, body: dict) -> None:
        super().__init__(body)
        self.body = body

    @classmethod
    def of(cls, parameter: str, value: str, message: str) -> _Refused:
        return cls(invalid_request(parameter, value, message))


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _window(fake: FakeXServer, query: dict[str, list[str]]) -> tuple[datetime, datetime]:
    """[start, end) of a request, checked as X checks them against the request time."""
    now = datetime.fromtimestamp(fake.clock(), UTC)
    oldest = (now - WINDOW).replace(microsecond=0)
    latest = now - END_TIME_LAG
    times = {}
    for name in ("start_time", "end_time"):
        text = _one(query, name)
        if text is None:
            continue
        try:
            times[name] = _parse_time(name, text)
        except ValueError as exc:
            raise _Refused.of(name, text, str(exc)) from None
    end = times.get("end_time", latest.replace(microsecond=0))
    start = times.get("start_time", oldest)
    if "end_time" in times and end > latest:
        text = _one(query, "end_time")
        raise _Refused.of(
            "end_time",
            text,
            f"Invalid 'end_time':'{text}'. 'end_time' must be "
            "a minimum of 10 seconds prior to the request time.",
        )
    if start < oldest:
        text = _one(query, "start_time")
        raise _Refused.of(
            "start_time",
            text,
            f"Invalid 'start_time':'{text}'. 'start_time' "
            f"must be on or after {_iso_seconds(oldest)}",
        )
    if start >= end:
        text = _one(query, "start_time") or _iso_seconds(start)
        raise _Refused.of(
            "start_time",
            text,
            f"Invalid 'start_time':'{text}'. 'start_time' must be before 'end_time'",
        )
    return start, end


def _checked_query(fake: FakeXServer, query: dict[str, list[str]]) -> str:
    text = _one(query, "query")
    if not text:
        raise _Refused.of("query", "", "The `query` query parameter can not be empty")
    limit = _state(fake)["query_max_length"]
    if len(text) > limit:
        raise _Refused.of(
            "query",
            text,
            f"The `query` query parameter value [{text}] is not "
            f"valid: a query is at most {limit} characters, it has {len(text)}",
        )
    match = _OPERATOR.search(re.sub(r'"[^"]*"', lambda m: " " * len(m[0]), text))  # not in a phrase
    if match:
        raise _Refused(
            invalid_request(
                "query",
                text,
                "There were errors processing your request: Reference to invalid operator "
                f"'{match[1]}'. Operator is not available in current product or product "
                f"packaging. (at position {match.start(1) + 1})",
            )
        )
    return text


def _max_results(query: dict[str, list[str]]) -> int:
    text = _one(query, "max_results")
    if text is None:
        return DEFAULT_MAX_RESULTS
    low, high = MAX_RESULTS_RANGE
    if not text.isdigit() or not low <= int(text) <= high:
        raise _Refused.of(
            "max_results",
            text,
            f"The `max_results` query parameter value [{text}] is not between {low} and {high}",
        )
    return int(text)


def _below(query: dict[str, list[str]]) -> int | None:
    """The id a next_token continues below (tokens are base-36 post ids)."""
    token = _one(query, "next_token")
    if token is None:
        return None
    if not _TOKEN.match(token):
        raise _Refused.of(
            "next_token", token, f"The `next_token` query parameter value [{token}] is not valid"
        )
    return int(token, 36)


def _token(post_id: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while post_id:
        post_id, rest = divmod(post_id, 36)
        text = digits[rest] + text
    return text.rjust(8, "0")


def render(fake: FakeXServer, post_id: int, query: dict[str, list[str]]) -> tuple[dict, dict]:
    """(post, includes) of one post as search sends it: only the fields and expansions the
    request names (fake.render_post; InvalidFields carries X's 400 for an unknown name)."""
    message = json.loads(fake.render_post(post_id, query))
    return message["data"], message.get("includes", {})


def _merge(includes: dict[str, list], more: dict[str, list]) -> None:
    for kind, entries in more.items():
        known = {entry.get("id") for entry in includes.setdefault(kind, [])}
        for entry in entries:
            if entry.get("id") not in known:
                includes[kind].append(entry)
                known.add(entry.get("id"))


@route("GET", "/2/tweets/search/recent")
def search_recent(handler: _Handler, params: dict[str, str]) -> None:
    if not handler.authorized():
        return
    fake = handler.fake
    state = _state(fake)
    state["requests"] += 1
    if state["fail_next"]:
        status = state["fail_next"].pop(0)
        handler.send_json(status, PROBLEMS.get(status, {"title": "Error", "status": status}))
        return
    query = handler.query
    try:
        text = _checked_query(fake, query)
        start, end = _window(fake, query)
        page_size = _max_results(query)
        below = _below(query)
    except _Refused as refusal:
        handler.send_json(400, refusal.body)
        return
    matches = [
        post
        for post in fake.timeline_posts(start.timestamp(), end.timestamp())
        if text in post.rules and (state["returns_reposts"] or not post.repost)
    ]
    matches.sort(key=lambda post: post.id, reverse=True)
    if below is not None:
        matches = [post for post in matches if post.id < below]
    page, rest = matches[:page_size], matches[page_size:]
    if not page:
        handler.send_json(200, {"meta": {"result_count": 0}})
        return
    posts, includes = [], {}
    try:
        for missed in page:
            post, refers_to = render(fake, missed.id, query)
            posts.append(post)
            _merge(includes, refers_to)
    except InvalidFields as refusal:
        handler.send_json(400, refusal.body)
        return
    meta = {
        "newest_id": str(page[0].id),
        "oldest_id": str(page[-1].id),
        "result_count": len(page),
    }
    if rest:
        meta["next_token"] = _token(page[-1].id)
    fake.record_delivered([str(post.id) for post in page])
    state["returned"] += len(page)
    body: dict = {"data": posts, "meta": meta}
    if includes:
        body["includes"] = includes
    handler.send_json(200, body)
