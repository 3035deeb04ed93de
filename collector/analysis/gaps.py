"""Gaps in a period, for the report: "not collecting" (stopped, disconnected, paused by the
budget), read from the collectors' connection events (collector.telemetry.events), apart from
"quiet" (connected, but no post for more than --gap-minutes); and what gap repair
(collector.source.repair) did for each "not collecting" span."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from collector.analysis import loader
from collector.analysis.loader import Period
from collector.telemetry.events import REPAIR_EVENTS, Event

log = logging.getLogger(__name__)


NOT_COLLECTING = "not collecting"


PAUSED_BUDGET = "paused: budget"  # the budget closed the stream on purpose (budget_paused)


BUDGET_CAUSE = "budget reached: "


QUIET = "quiet"


NO_POSTS = "no posts"  # no collector events recorded: quiet or not collecting, unknown


UNCLEAN_END = (
    "the collector ended without a stop event (killed?); counted from its last sign of life "
    "(last streamed post or heartbeat)"
)


# Events after which the collector was running (so it ran before the first one we see).
_RUNNING_EVENTS = {"disconnected", "stop", "s3_refusing", "s3_recovered", "budget_paused"}


@dataclass(frozen=True)
class Gap:
    start: datetime
    end: datetime
    kind: str  # NOT_COLLECTING, PAUSED_BUDGET, QUIET or NO_POSTS
    cause: str = ""
    repair: str = ""  # NOT_COLLECTING: what gap repair fetched again (repair_state)

    @property
    def length(self) -> timedelta:
        return self.end - self.start


@dataclass
class GapAccount:
    """Where the period had no posts, and why.

    collecting: (start, end, collecting?, cause) spans covering the period from the first
    connection on; before_collection / after_collection: the period's time before the
    collector first connected, and after its last stop (None when there is none).
    """

    gaps: list[Gap]
    events: list[Event]
    collecting: list[tuple[datetime, datetime, bool, str]]
    before_collection: tuple[datetime, datetime] | None = None
    after_collection: tuple[datetime, datetime] | None = None
    # `start` events of a collector still connected: the previous process ended unseen
    unclean_restarts: set[datetime] = field(default_factory=set)


def collecting_spans(events: list[Event], period: Period) -> GapAccount:
    """Collecting / not-collecting spans from the connection events (oldest first).

    Collecting means at least one collector's stream is connected. A `start` of a collector
    that never said `stop` (killed) ends its connection there.
    """
    account = GapAccount([], [e for e in events if period.start <= e.at < period.end], [])
    events = [e for e in events if e.event not in REPAIR_EVENTS]  # not about the connection
    connected: set[str] = set()
    spans: list[tuple[datetime, datetime, bool, str]] = []
    since, cause = None, ""
    if events and events[0].event in _RUNNING_EVENTS:
        connected.add(events[0].collector_id)  # it was connected before its first event
        since = period.start
    for event in events:
        was = bool(connected)
        if event.event == "connected":
            connected.add(event.collector_id)
        elif event.event in ("disconnected", "stop", "budget_paused"):
            connected.discard(event.collector_id)
        elif event.event == "start" and event.collector_id in connected:
            connected.discard(event.collector_id)  # the previous process ended without a stop
            account.unclean_restarts.add(event.at)
        if was == bool(connected):
            continue
        if since is not None and since < event.at:
            spans.append((since, event.at, was, cause))
        elif since is None:
            account.before_collection = (period.start, event.at)
        since = event.at
        cause = "" if connected else (event.cause or event.event)
        if event.event == "budget_paused" and not connected:
            cause = f"{BUDGET_CAUSE}{event.cause or ''}"
        elif event.event == "stop" and not connected:
            cause = f"stopped ({event.cause})" if event.cause else "stopped"
        elif event.event == "start" and not connected:
            cause = UNCLEAN_END
    if since is not None:
        last = events[-1]
        if not connected and last.event == "stop":
            account.after_collection = (max(last.at, period.start), period.end)
        else:
            spans.append((since, period.end, bool(connected), cause))
    elif events:
        _never_connected(events, period, account, spans)
    account.collecting = [
        (max(a, period.start), min(b, period.end), c, why)
        for a, b, c, why in spans
        if b > period.start and a < period.end
    ]
    if account.before_collection is not None:
        start, end = account.before_collection
        account.before_collection = (start, min(end, period.end)) if end > start else None
    return account


def _never_connected(events: list[Event], period: Period, account: GapAccount, spans) -> None:
    """Collectors ran (from their first event on) but never connected: not collecting."""
    refusals = [e.cause for e in events if e.event == "disconnected" and e.cause]
    why = f"never connected ({refusals[-1]})" if refusals else "never connected"
    first, last = events[0], events[-1]
    end = last.at if last.event == "stop" else period.end
    account.before_collection = (period.start, first.at)
    spans.append((first.at, end, False, why))
    if last.event == "stop":
        account.after_collection = (max(last.at, period.start), period.end)


def account_gaps(
    con, events: list[Event], period: Period, gap_minutes: float, collector_id: str | None = None
) -> GapAccount:
    """ "not collecting" spans from the events, "quiet" ones (connected, no post for more
    than gap_minutes) from the posts; without any event, every silence is NO_POSTS. The repair
    column counts the repairs of `collector_id` only (every collector's when None)."""
    account = collecting_spans(events, period)
    sentinels = {period.start, period.end}
    for start, end, _, _ in account.collecting:
        sentinels |= {start, end}
    for edge in (account.before_collection, account.after_collection):
        if edge:
            sentinels |= set(edge)
    con.execute("CREATE OR REPLACE TEMP TABLE gap_edges (ts TIMESTAMPTZ)")
    con.executemany("INSERT INTO gap_edges VALUES (?)", [[t] for t in sorted(sentinels)])
    silences = con.execute(
        """
        WITH t AS (
            SELECT DISTINCT date_trunc('second', created_at) AS ts FROM posts
            UNION SELECT ts FROM gap_edges),
        g AS (SELECT lag(ts) OVER (ORDER BY ts) AS gap_start, ts AS gap_end FROM t)
        SELECT gap_start, gap_end FROM g
        WHERE gap_end - gap_start > to_seconds(?::DOUBLE) ORDER BY gap_start
        """,
        [gap_minutes * 60],
    ).fetchall()
    gaps = [
        Gap(a, b, PAUSED_BUDGET if why.startswith(BUDGET_CAUSE) else NOT_COLLECTING, why)
        for a, b, on, why in account.collecting
        if not on
    ]
    repairs = [
        e
        for e in events
        if e.event in ("repair_done", "repair_failed")
        and e.detail
        and (collector_id is None or e.collector_id == collector_id)
    ]
    for restart in sorted(account.unclean_restarts):
        # From the last sign of life to the restart of a process that never said stop
        # (kill -9, power loss): the end of collection was not recorded.
        since = last_sign_of_life(con, events, repairs, restart)
        if since < restart:
            gaps.append(Gap(max(since, period.start), restart, NOT_COLLECTING, UNCLEAN_END))
    for start, end in silences:
        if not events:
            gaps.append(Gap(start, end, NO_POSTS))
        elif end in account.unclean_restarts:
            continue  # the unclean end's gap, bounded above
        elif any(a <= start and end <= b and on for a, b, on, _ in account.collecting):
            gaps.append(Gap(start, end, QUIET))
    account.gaps = [
        replace(g, repair=repair_state(g, repairs, con, collector_id))
        if g.kind == NOT_COLLECTING
        else g
        for g in _merge_adjacent(sorted(gaps, key=lambda g: g.start))
    ]
    return account


def last_sign_of_life(
    con, events: list[Event], repairs: list[Event], restart: datetime
) -> datetime:
    """When a collector that ended without a stop event was last seen collecting, before its
    `restart`: the latest of its last `start`/`connected` event, its last streamed post and its
    heartbeat (the start of the repair span the restart closed: collector.source.repair records
    it every 10 s while connected). Posts fetched again by gap repair are no sign of life: they
    fill the gap they are counted in."""
    signs = [e.at for e in events if e.at < restart and e.event in ("start", "connected")]
    streamed = con.execute(
        f"SELECT max(created_at) FROM posts WHERE NOT {loader.REPAIRED_SQL} AND created_at < ?",
        [restart],
    ).fetchall()[0][0]
    if streamed is not None:
        signs.append(streamed)
    for event in repairs:
        try:
            start = loader.parse_time((event.detail or {})["from"])
            end = loader.parse_time((event.detail or {})["to"])
        except (KeyError, TypeError, ValueError):
            continue
        if start < restart <= end + _REPAIR_SLACK:
            signs.append(start)
    return max(signs, default=restart)


REPAIRED, PARTLY_REPAIRED, NOT_REPAIRED = "repaired", "partly repaired", "not repaired"


NO_REPAIR_RECORDED = (
    f"{NOT_REPAIRED} (no repair recorded: x.repair off, or collected before gap repair)"
)


_REPAIR_SLACK = timedelta(seconds=2)  # repair spans are whole seconds, events milliseconds


def repaired_posts(con, gap: Gap, collector_id: str | None) -> int:
    """Distinct posts in `collector_id`'s repair objects (every collector's when None) whose
    created_at lies in the gap: a span repaired twice (automatically, then by hand) or
    repaired by another collector counts each post once, for this collector only."""
    sql = f"SELECT count(DISTINCT id) FROM posts WHERE {loader.REPAIRED_SQL}"
    sql += " AND created_at >= ? AND created_at < ?"
    params: list[object] = [gap.start - _REPAIR_SLACK, gap.end + _REPAIR_SLACK]
    if collector_id is not None:
        sql += " AND contains(file, ?)"
        params.append(f"/{collector_id}-repair-")
    return con.execute(sql, params).fetchall()[0][0]


def searched_span(event: Event, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """What a repair searched (its `searched` window: older than 7 days or too recent parts
    left out), else its span."""
    try:
        first, last = (event.detail or {})["searched"]
        return loader.parse_time(first), loader.parse_time(last)
    except (KeyError, TypeError, ValueError):
        return start, end


def repair_state(gap: Gap, repairs: list[Event], con=None, collector_id: str | None = None) -> str:
    """What gap repair did for a "not collecting" gap, from its repair_done / repair_failed
    events (collector.source.repair) and the repaired posts in it (repaired_posts):
    `repaired (N posts fetched again)`, `partly repaired (...; not repairable: rule ...)` or
    `not repaired (why)`."""

    def detail(event: Event) -> dict:
        return event.detail or {}

    def span(event: Event) -> tuple[datetime, datetime]:
        return loader.parse_time(detail(event)["from"]), loader.parse_time(detail(event)["to"])

    touching = []
    for event in repairs:
        try:
            start, end = span(event)
        except (KeyError, TypeError, ValueError):
            continue
        if start < gap.end + _REPAIR_SLACK and end > gap.start - _REPAIR_SLACK:
            touching.append((event, start, end))
    if not touching:
        return NO_REPAIR_RECORDED
    done = [(e, a, b) for e, a, b in touching if e.event == "repair_done"]
    if not done:
        return f"{NOT_REPAIRED} ({touching[-1][0].cause or 'repair failed'})"
    if con is not None:
        posts = repaired_posts(con, gap, collector_id)
    else:  # without the posts: the largest repair's count (repairs of one span overlap)
        posts = max(int(detail(e).get("posts") or 0) for e, _, _ in done)
    rules = sorted(
        {r.get("rule", "?") for e, _, _ in done for r in detail(e).get("not_repairable") or []}
    )
    searched = [searched_span(e, a, b) for e, a, b in done]
    covered = min(a for a, _ in searched) <= gap.start + _REPAIR_SLACK
    covered = covered and max(b for _, b in searched) >= gap.end - _REPAIR_SLACK
    methods = {detail(e).get("method", "search") for e, _, _ in done}
    fetched = f"{posts} posts fetched again"
    if methods == {"backfill"}:
        fetched = "backfill_minutes on the reconnect"
    elif "recovery" in methods:
        fetched += " by Recovery"
    if covered and not rules:
        return f"{REPAIRED} ({fetched})"
    notes = [fetched] + ([f"not repairable: {', '.join(rules)}"] if rules else [])
    if not covered:
        notes.append("part of the span not searched")
    return f"{PARTLY_REPAIRED} ({'; '.join(notes)})"


def _merge_adjacent(gaps: list[Gap]) -> list[Gap]:
    """One row for back-to-back "not collecting" spans (the first one's cause)."""
    merged: list[Gap] = []
    for gap in gaps:
        last = merged[-1] if merged else None
        if last and last.kind == gap.kind == NOT_COLLECTING and last.end == gap.start:
            merged[-1] = Gap(last.start, gap.end, NOT_COLLECTING, last.cause)
        else:
            merged.append(gap)
    return merged
