"""Enterprise recovery on the X stand-in's filtered stream: `backfill_minutes` and Recovery.

As docs.x.com/x-api/fundamentals/recovery-and-redundancy describes them (Enterprise only):
    GET /2/tweets/search/stream?backfill_minutes=N   (0-5) the posts matched in the N minutes
        before the connection while no stream was open (the timeline: FakeXServer.missed_posts)
        come first, oldest first, then the live posts; not deduplicated
    GET /2/tweets/search/stream?start_time=T[&end_time=T]   Recovery: every post matched in
        [start_time, end_time) (the last 24 hours; end_time defaults to now), streamed ones and
        missed ones, oldest first, then the connection ends (X's limit of 2 concurrent jobs is
        not modelled: a job here ends at once)
Below Enterprise (knob `access_level`, default "pay-per-use") either parameter gets X's 400
Invalid Request naming it (as xdevplatform/twitter-api-typescript-sdk#46 shows for
backfill_minutes; the wording of `message` is ours). Lines carry the live rules'
matching_rules and only the fields the request names.

Knobs: access_level ("pay-per-use", "pro", "enterprise"). Stats: backfilled, recovered.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.fakes.x_server import (
    SNOWFLAKE_EPOCH_MS,
    FakeXServer,
    knob,
    stats_part,
    stream_gate,
    stream_replay,
)

FAMILY = "recovery"
BACKFILL_MAX_MINUTES = 5
RECOVERY_WINDOW = timedelta(hours=24)


def _state(fake: FakeXServer) -> dict:
    return fake.ext.setdefault(
        FAMILY, {"access_level": "pay-per-use", "backfilled": 0, "recovered": 0}
    )


@knob("access_level")
def _access_level(fake: FakeXServer, value) -> None:
    _state(fake)["access_level"] = str(value)


@stats_part
def _stats(fake: FakeXServer) -> dict:
    state = _state(fake)
    return {"backfilled": state["backfilled"], "recovered": state["recovered"]}


def _one(query: dict, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _invalid(parameter: str, value: str, message: str) -> tuple[int, dict]:
    return 400, {
        "errors": [{"parameters": {parameter: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def _recovery_window(fake: FakeXServer, query: dict) -> tuple[float, float]:
    """[start, end) epoch seconds of a Recovery request; ValueError (parameter, message)."""
    now = datetime.fromtimestamp(fake.clock(), UTC)
    start_text, end_text = _one(query, "start_time"), _one(query, "end_time")
    if start_text is None:
        raise ValueError("start_time", "", "Recovery needs `start_time` (and may take `end_time`)")
    times = {}
    for name, text in (("start_time", start_text), ("end_time", end_text)):
        if text is None:
            continue
        try:
            times[name] = _time(text)
        except ValueError:
            raise ValueError(name, text, f"Invalid '{name}':'{text}'.") from None
    start, end = times["start_time"], times.get("end_time", now)
    oldest = now - RECOVERY_WINDOW
    if start < oldest:
        message = f"'start_time' must be on or after {oldest:%Y-%m-%dT%H:%M:%SZ}"
        raise ValueError(
            "start_time", start_text, f"Invalid 'start_time':'{start_text}'. {message}"
        )
    if end <= start:
        raise ValueError("end_time", end_text or "", "'end_time' must be after 'start_time'")
    return start.timestamp(), end.timestamp()


@stream_gate
def _enterprise_only(fake: FakeXServer, handler) -> tuple[int, dict] | None:
    query = handler.query
    asked = [name for name in ("backfill_minutes", "start_time", "end_time") if name in query]
    if not asked:
        return None
    state = _state(fake)
    if state["access_level"] != "enterprise":
        name = asked[0]
        message = f"The `{name}` query parameter is not available to your access level: "
        return _invalid(name, _one(query, name) or "", message + "Enterprise only")
    minutes = _one(query, "backfill_minutes")
    if minutes is not None and not (minutes.isdigit() and int(minutes) <= BACKFILL_MAX_MINUTES):
        message = f"value [{minutes}] is not between 0 and {BACKFILL_MAX_MINUTES}"
        return _invalid(
            "backfill_minutes", minutes, f"The `backfill_minutes` query parameter {message}"
        )
    if "start_time" in query or "end_time" in query:
        try:
            _recovery_window(fake, query)
        except ValueError as refusal:
            return _invalid(*refusal.args)
    return None


def _at(post_id: int) -> float:
    return ((post_id >> 22) + SNOWFLAKE_EPOCH_MS) / 1000


def _lines(fake: FakeXServer, ids: list[int], selection) -> list[tuple[str, bytes]]:
    tail = fake._matching_rules
    return [(str(i), fake.post_body(i, selection) + tail) for i in sorted(ids)]


@stream_replay
def _replay(fake: FakeXServer, query: dict, selection) -> tuple[list, bool] | None:
    state = _state(fake)
    if state["access_level"] != "enterprise":
        return None
    if "start_time" in query:
        start, end = _recovery_window(fake, query)
        missed = [p.id for p in fake.missed_posts(start, end)]
        streamed = [int(i) for i in list(fake.sent_ids) if i.isdigit()]
        ids = set(missed) | {i for i in streamed if start <= _at(i) < end}
        state["recovered"] += len(ids)
        return _lines(fake, list(ids), selection), True
    minutes = _one(query, "backfill_minutes")
    if minutes and int(minutes) > 0:
        now = time.time()
        ids = [p.id for p in fake.missed_posts(now - int(minutes) * 60, now)]
        state["backfilled"] += len(ids)
        return _lines(fake, ids, selection), False
    return None
