"""Post counts on the X stand-in: `GET /2/tweets/counts/recent` (loaded by tests.fakes.x_server).

    GET /2/tweets/counts/recent?query=...[&granularity=minute|hour|day][&start_time&end_time]
    -> {"data": [{"start": "...Z", "end": "...Z", "tweet_count": N}, ...],
        "meta": {"total_tweet_count": N}}

As X documents it (docs.x.com/x-api/posts/counts/introduction and the OpenAPI's
`SearchCount`): the last 7 days by default (end_time defaults to 30 s before the request),
buckets aligned on the granularity (default hour), the first and last buckets cut by the
window; a query of at most 512 characters (4,096 on Enterprise) in search syntax, so a
stream-only operator is refused like recent search refuses it (X's 400 "Invalid Request"). OpenAPI
2.167 renames the fields `post_count` / `total_post_count`; live answers still say tweet: the
knob `counts_spelling` ("tweet" or "post") chooses, and clients read both.

How many posts a query matches: `counts_per_day` {query: posts per day} (knob), spread evenly
over time (a bucket gets its share of the day, rounded so that the buckets of a whole day add
up to the day's posts; the total is the sum of the buckets).
A query not listed matches nothing.

The bill: Counts: Recent costs $0.005 per request (https://docs.x.com/x-api/getting-started/pricing);
the stand-in counts every authorized request it answers with 200 in its own counter
(stats `counts_requests`, `counts_usd`), apart from the posts it bills (`fake.billed`).

Knobs: counts_per_day ({query: n}), counts_spelling ("tweet" | "post"),
counts_query_max_length (int). Stats: counts_requests, counts_usd, counts_queries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.fakes.x_api_search import _OPERATOR, STREAM_ONLY_OPERATORS, _Refused, _window
from tests.fakes.x_server import FakeXServer, _Handler, knob, route, stats_part

FAMILY = "counts"
USD_PER_REQUEST = 0.005  # Counts: Recent
QUERY_MAX_LENGTH = 512
GRANULARITIES = {"minute": 60, "hour": 3600, "day": 86400}
DEFAULT_GRANULARITY = "hour"
DEFAULT_END_LAG = timedelta(seconds=30)
assert STREAM_ONLY_OPERATORS  # the same list recent search refuses


def _state(fake: FakeXServer) -> dict:
    return fake.ext.setdefault(
        FAMILY,
        {
            "per_day": {},
            "spelling": "tweet",
            "query_max_length": QUERY_MAX_LENGTH,
            "requests": 0,
            "queries": [],
        },
    )


@knob("counts_per_day")
def _per_day(fake: FakeXServer, value) -> None:
    _state(fake)["per_day"] = {str(k): float(v) for k, v in dict(value).items()}


@knob("counts_spelling")
def _spelling(fake: FakeXServer, value) -> None:
    if value not in ("tweet", "post"):
        raise ValueError(f"counts_spelling must be 'tweet' or 'post', got {value!r}")
    _state(fake)["spelling"] = value


@knob("counts_query_max_length")
def _query_max_length(fake: FakeXServer, value) -> None:
    _state(fake)["query_max_length"] = int(value)


@stats_part
def _stats(fake: FakeXServer) -> dict:
    state = _state(fake)
    return {
        "counts_requests": state["requests"],
        "counts_usd": round(state["requests"] * USD_PER_REQUEST, 3),
        "counts_queries": list(state["queries"]),
    }


def _iso_ms(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _query(fake: FakeXServer, handler: _Handler) -> str:
    text = (handler.query.get("query") or [""])[-1]
    if not text:
        raise _Refused.of("query", "", "The `query` query parameter can not be empty")
    limit = _state(fake)["query_max_length"]
    if len(text) > limit:
        raise _Refused.of(
            "query",
            text,
            f"The `query` query parameter value [{text}] is not valid: a query is at most "
            f"{limit} characters, it has {len(text)}",
        )
    match = _OPERATOR.search(text)
    if match:
        raise _Refused.of(
            "query",
            text,
            "There were errors processing your request: Reference to invalid operator "
            f"'{match[1]}'. Operator is not available in current product or product "
            f"packaging. (at position {match.start(1) + 1})",
        )
    return text


def _granularity(handler: _Handler) -> int:
    text = (handler.query.get("granularity") or [DEFAULT_GRANULARITY])[-1]
    if text not in GRANULARITIES:
        raise _Refused.of(
            "granularity",
            text,
            f"The `granularity` query parameter value [{text}] is not one of [minute,hour,day]",
        )
    return GRANULARITIES[text]


def buckets(start: datetime, end: datetime, step: int, per_day: float) -> list[tuple]:
    """(start, end, count) for [start, end) cut at multiples of `step` seconds since the epoch."""
    found = []
    cursor = start

    def posts_before(when: datetime) -> int:  # since the epoch: buckets add up without drift
        return round(per_day * when.timestamp() / 86400)

    while cursor < end:
        edge = datetime.fromtimestamp((cursor.timestamp() // step + 1) * step, UTC)
        stop = min(edge, end)
        found.append((cursor, stop, posts_before(stop) - posts_before(cursor)))
        cursor = stop
    return found


@route("GET", "/2/tweets/counts/recent")
def counts_recent(handler: _Handler, params: dict[str, str]) -> None:
    fake = handler.fake
    if not handler.authorized():
        return
    state = _state(fake)
    try:
        text = _query(fake, handler)
        step = _granularity(handler)
        query = dict(handler.query)
        if "end_time" not in query:
            # X's default end: 30 s before the request (search's own default is 10 s)
            now = datetime.fromtimestamp(fake.clock(), UTC) - DEFAULT_END_LAG
            query["end_time"] = [now.strftime("%Y-%m-%dT%H:%M:%SZ")]
        start, end = _window(fake, query)
    except _Refused as refused:
        handler.send_json(400, refused.body)
        return
    state["requests"] += 1
    state["queries"].append(text)
    rows = buckets(start, end, step, state["per_day"].get(text, 0.0))
    name = "tweet" if state["spelling"] == "tweet" else "post"
    data = [{"end": _iso_ms(b), "start": _iso_ms(a), f"{name}_count": n} for a, b, n in rows]
    handler.send_json(200, {"data": data, "meta": {f"total_{name}_count": sum(r[2] for r in rows)}})
