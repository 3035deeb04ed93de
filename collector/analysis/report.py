"""`collector report`: one self-contained HTML page about what was collected in a period.

S3 objects of the period -> local cache -> DuckDB (collector.analysis.loader) -> a handful of
aggregates -> matplotlib PNGs embedded as data: URIs. DuckDB does every per-post step, so
memory stays bounded by its memory limit whatever the number of posts.

Sections: posts over time (a bar per minute, hour or day: bucket_for), post types, top authors,
rule tags, hashtags, mentions, linked domains, languages, and the gaps table, which reads the
collectors' connection events (collector.telemetry.events, `{prefix}/_events/`) to tell
"not collecting" from "quiet" (account_gaps).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from collector.analysis import loader
from collector.analysis.loader import LoadResult, Period
from collector.errors import EX_CONFIG
from collector.spool.layout import normalize_prefix
from collector.telemetry.events import REPAIR_EVENTS, Event, read_events

log = logging.getLogger(__name__)

DEFAULT_SINCE = "24h"


@dataclass(frozen=True)
class Source:
    """Where the collector of a config file ships its objects."""

    bucket: str
    prefix: str
    region: str
    endpoint_url: str
    spool_dir: Path | None
    usd_per_post: float = 0.005  # [budget] usd_per_post: X's list price unless configured
    collector_id: str | None = None  # its own repairs are the ones the gaps table counts


def read_source(config_path: Path) -> Source:
    """The bucket, prefix and endpoint of a collector config (the same TOML `run` reads)."""
    try:
        from collector.config import ConfigError, load_config
    except ImportError:  # the report works without the collector's own modules
        load_config = None  # type: ignore[assignment]  # None means absent
    if load_config is not None:
        try:
            cfg = load_config(config_path, streaming=False)  # rules do not matter here
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return Source(
            cfg.s3.bucket,
            cfg.s3.prefix,
            cfg.s3.region,
            cfg.s3.endpoint_url or "",
            cfg.spool.dir,
            cfg.budget.usd_per_post,
            cfg.collector_id,
        )
    try:
        doc = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{config_path}: {error}") from None
    s3 = doc.get("s3", {})
    if not s3.get("bucket"):
        raise ValueError(f"{config_path}: [s3] bucket is required")
    spool = doc.get("spool", {}).get("dir")
    return Source(
        s3["bucket"],
        s3.get("prefix", ""),
        s3.get("region", "us-east-1"),
        s3.get("endpoint_url", ""),
        Path(spool) if spool else None,
        float(doc.get("budget", {}).get("usd_per_post", 0.005)),
        doc.get("collector_id"),
    )


def period_from_args(args: argparse.Namespace, now: datetime | None = None) -> Period:
    now = now or datetime.now(UTC)
    if args.from_time:
        start = loader.parse_time(args.from_time)
        end = loader.parse_time(args.to_time) if args.to_time else now
        if end <= start:
            raise ValueError(f"--to ({end:%Y-%m-%dT%H:%M:%SZ}) must be after --from")
        return Period(start, end)
    if args.to_time:
        raise ValueError("--to needs --from")
    length = loader.parse_duration(args.since or DEFAULT_SINCE)
    if length <= timedelta(0):
        raise ValueError(f"--since {args.since}: the period must be longer than 0 (e.g. 24h)")
    return Period.last(length, now)


def check_options(args: argparse.Namespace) -> None:
    """The numeric options of `report` and `export`: ValueError naming the option otherwise."""
    if getattr(args, "gap_minutes", 1) <= 0:
        raise ValueError(f"--gap-minutes {args.gap_minutes:g}: expected a number of minutes > 0")
    if getattr(args, "top", 1) < 1:
        raise ValueError(f"--top {args.top}: expected a number of rows >= 1")


def cache_dir(args: argparse.Namespace) -> Path:
    return args.cache_dir or loader.default_cache_dir()


def connect(args: argparse.Namespace, output: Path | None = None):
    """loader.connect with --memory-limit, DuckDB reaching only the cache (and `output`, a
    folder export writes into); ValueError naming the option when DuckDB refuses the limit."""
    import duckdb

    allowed = [cache_dir(args)] + ([output] if output is not None else [])
    try:
        return loader.connect(memory_limit=args.memory_limit, allowed_directories=allowed)
    except duckdb.Error as error:
        reason = str(error).splitlines()[0].removeprefix("Parser Error: ")
        raise ValueError(f"--memory-limit {args.memory_limit}: {reason}") from None


# ---------------------------------------------------------------- aggregates (DuckDB)

# The time charts' bucket follows the period so a chart has 1 to about 180 bars.
BUCKETS = (
    ("minute", timedelta(minutes=1)),
    ("hour", timedelta(hours=1)),
    ("day", timedelta(days=1)),
)
MINUTE_BUCKETS_UP_TO = timedelta(hours=3)  # 180 bars at most
HOUR_BUCKETS_UP_TO = timedelta(days=7)  # 168 bars at most; longer periods: one bar a day


def bucket_for(period: Period) -> tuple[str, timedelta]:
    """("minute"|"hour"|"day", its length) for a period's time charts."""
    span = period.end - period.start
    if span <= MINUTE_BUCKETS_UP_TO:
        return BUCKETS[0]
    if span <= HOUR_BUCKETS_UP_TO:
        return BUCKETS[1]
    return BUCKETS[2]


def floor_time(value: datetime, step: timedelta) -> datetime:
    """`value` rounded down to a multiple of `step` since the Unix epoch (UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + (value.astimezone(UTC) - epoch) // step * step


@dataclass
class Figures:
    bucket: str  # "minute", "hour" or "day"
    posts_per_bucket: list[tuple[datetime, int]]
    # of those, the posts fetched again by gap repair (not streamed), per bucket
    repaired_per_bucket: list[tuple[datetime, int]]
    posts_per_hour: list[tuple[datetime, int]]
    rules: list[tuple[str, int]]
    hashtags: list[tuple[str, int]]
    mentions: list[tuple[str, int]]
    languages: list[tuple[str, int]]
    authors: list[tuple[str, str, int]]  # (username or "", author id, posts)
    post_types: list[tuple[str, int]]  # every loader.POST_TYPES entry, in that order
    domains: list[tuple[str, int]]
    distinct_ids: int
    first_post: datetime | None
    last_post: datetime | None


def _unnested_counts(con, column: str, top: int) -> list[tuple[str, int]]:
    return con.execute(
        f"SELECT value, count(*) AS n FROM (SELECT unnest({column}) AS value FROM posts) "
        "WHERE value IS NOT NULL GROUP BY value ORDER BY n DESC, value LIMIT ?",
        [top],
    ).fetchall()


def compute_figures(con, period: Period, top: int) -> Figures:
    per = "SELECT date_trunc('{unit}', created_at) AS t, count(*) FROM posts GROUP BY t ORDER BY t"
    bucket, _ = bucket_for(period)
    distinct_ids, first, last = con.execute(
        "SELECT count(DISTINCT id), min(created_at), max(created_at) FROM posts"
    ).fetchall()[0]
    languages = con.execute(
        "SELECT coalesce(lang, '(none)') AS l, count(*) AS n FROM posts "
        "GROUP BY l ORDER BY n DESC, l LIMIT ?",
        [top],
    ).fetchall()
    # A username can change: the one of the author's latest post in the period.
    authors = con.execute(
        "SELECT coalesce(arg_max(author_username, created_at), ''), author_id, count(*) AS n "
        "FROM posts WHERE author_id IS NOT NULL GROUP BY author_id "
        "ORDER BY n DESC, author_id LIMIT ?",
        [top],
    ).fetchall()
    types = dict(con.execute("SELECT post_type, count(*) FROM posts GROUP BY ALL").fetchall())
    return Figures(
        bucket=bucket,
        posts_per_bucket=con.execute(per.format(unit=bucket)).fetchall(),
        repaired_per_bucket=con.execute(
            per.format(unit=bucket).replace("GROUP BY", f"WHERE {loader.REPAIRED_SQL} GROUP BY")
        ).fetchall(),
        posts_per_hour=con.execute(per.format(unit="hour")).fetchall(),
        rules=_unnested_counts(con, "rule_tags", 1000),
        hashtags=_unnested_counts(con, "hashtags", top),
        mentions=_unnested_counts(con, "mentions", top),
        languages=languages,
        authors=authors,
        post_types=[(name, types.get(name, 0)) for name in loader.POST_TYPES],
        domains=_unnested_counts(con, "domains", top),
        distinct_ids=distinct_ids,
        first_post=first,
        last_post=last,
    )


# ---------------------------------------------------------------- gaps (events + posts)

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


# ---------------------------------------------------------------- charts (matplotlib)

DATA_COLOUR = "#1d9bf0"  # every bar; tests count its pixels
REPAIRED_COLOUR = "#8e6bd8"  # posts fetched again by gap repair, stacked on the streamed ones
REPAIRED_LABEL = "fetched again by gap repair"
# Behind the bars of the time chart, so a gap and a quiet spell do not look alike.
SPAN_COLOURS = {
    NOT_COLLECTING: "#f4a6a6",
    PAUSED_BUDGET: "#c6b3e6",
    QUIET: "#fde8a8",
    NO_POSTS: "#d9d9d9",
    "before collection / after the last stop": "#ececec",
}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def chart_spans(gaps: GapAccount | None) -> list[tuple[datetime, datetime, str]]:
    """(start, end, kind) shaded behind the time chart: the gaps (not collecting, quiet, no
    posts), then the time before collection and after the last stop (SPAN_COLOURS' keys)."""
    if gaps is None:
        return []
    spans = [(g.start, g.end, g.kind) for g in gaps.gaps]
    outside = "before collection / after the last stop"
    for edge in (gaps.before_collection, gaps.after_collection):
        if edge and edge[0] < edge[1]:
            spans.append((edge[0], edge[1], outside))
    return spans


def _time_chart(
    points: list[tuple[datetime, int]],
    title: str,
    period: Period,
    spans: Sequence[tuple[datetime, datetime, str]] = (),
    repaired: Sequence[tuple[datetime, int]] = (),
) -> bytes:
    """Bars of posts per bucket; the x axis covers the whole period (whole buckets), in UTC.
    `spans` (chart_spans) are shaded behind the bars, with a legend; the `repaired` part of
    each bar (posts fetched again by gap repair) is a shade of its own on top."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    unit, step = bucket_for(period)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    labelled = set()
    for start, end, kind in spans:
        label = None if kind in labelled else kind
        labelled.add(kind)
        # matplotlib converts datetimes and timedeltas through its date units; its stubs say float
        ax.axvspan(start, end, color=SPAN_COLOURS[kind], linewidth=0, zorder=0, label=label)  # type: ignore[arg-type]
    fetched = dict(repaired)
    ax.bar(
        [t for t, _ in points], [n - fetched.get(t, 0) for t, n in points], width=step,  # type: ignore[arg-type]
        align="edge", color=DATA_COLOUR, linewidth=0,
    )  # fmt: skip
    if fetched:
        streamed = {t: n - fetched.get(t, 0) for t, n in points}
        ax.bar(
            list(fetched), list(fetched.values()), bottom=[streamed.get(t, 0) for t in fetched],  # type: ignore[arg-type]
            width=step, align="edge", color=REPAIRED_COLOUR, linewidth=0, label=REPAIRED_LABEL,  # type: ignore[arg-type]
        )  # fmt: skip
        labelled.add(REPAIRED_LABEL)
    left = floor_time(period.start, step)
    right = floor_time(period.end - timedelta(microseconds=1), step) + step
    ax.set_xlim(left, right)  # type: ignore[arg-type]  # datetimes, as above
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
    ax.set_title(title)
    ax.set_ylabel(f"posts per {unit}")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
    return _png(fig)


def _ranking_chart(rows: list[tuple[str, int]], title: str) -> bytes:
    import matplotlib.pyplot as plt

    rows = list(reversed(rows))
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.3 * len(rows) + 1)))
    ax.barh([str(label)[:48] for label, _ in rows], [n for _, n in rows], color=DATA_COLOUR)
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
    ax.set_title(title)
    ax.set_xlabel("posts")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def author_label(username: str, author_id: str) -> str:
    return f"@{username} ({author_id})" if username else f"id {author_id}"


def render_charts(
    figures: Figures, period: Period, gaps: GapAccount | None = None
) -> dict[str, tuple[str, bytes]]:
    """name -> (title, PNG bytes); a chart with nothing to show is left out. The gaps are
    shaded on the posts-over-time chart."""
    import matplotlib

    matplotlib.use("Agg")
    # Labels are posts' data (hashtags, rule tags, usernames): "$...$" is text, never mathtext.
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _render_charts(figures, period, gaps)


def _render_charts(figures: Figures, period: Period, gaps: GapAccount | None):
    charts = {}
    if figures.posts_per_bucket:
        title = f"Posts per {figures.bucket}"
        chart = _time_chart(
            figures.posts_per_bucket, title, period, chart_spans(gaps), figures.repaired_per_bucket
        )
        charts["posts_over_time"] = (title, chart)
    rankings = [
        ("post_types", "Post types", figures.post_types),
        ("authors", "Top authors", [(author_label(u, i), n) for u, i, n in figures.authors]),
        ("rules", "Posts per rule tag", figures.rules),
        ("hashtags", "Top hashtags", figures.hashtags),
        ("mentions", "Top mentioned accounts", [(f"@{u}", n) for u, n in figures.mentions]),
        ("domains", "Top linked domains", figures.domains),
        ("languages", "Languages", figures.languages),
    ]
    for name, title, rows in rankings:
        if any(n for _, n in rows):
            charts[name] = (title, _ranking_chart(rows, title))
    return charts


# ---------------------------------------------------------------- HTML


def _table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def read_collector_status(spool_dir: Path | None) -> dict | None:
    """The collector's status.json when the report runs where the collector does."""
    if spool_dir is None:
        return None
    try:
        return json.loads((spool_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None


def _flatten(doc: dict, prefix: str = "") -> list[list[object]]:
    rows = []
    for key, value in doc.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        elif not isinstance(value, list):
            rows.append([f"{prefix}{key}", "-" if value is None else value])  # null, as `status`
    return rows


def _collector_section(status: dict | None) -> str:
    if status is None:
        return (
            "<p>No collector status here (status.json is in the collector's spool directory; "
            "run the report on the instance to include it).</p>"
        )
    parts = [_table(["field", "value"], _flatten(status))]
    events = status.get("events")
    if isinstance(events, list) and events and all(isinstance(e, dict) for e in events):
        keys = sorted({k for e in events for k in e})
        parts.append("<h3>Recorded events</h3>")
        parts.append(_table(keys, [[e.get(k, "") for k in keys] for e in events]))
    return "".join(parts)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;
text-align:left}th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5em 0}
.empty{padding:1em;background:#fff4d6;border:1px solid #e8c96b}
"""


MONTHLY_CAP = 3_000_000  # post reads per billing cycle on pay-per-use (X's pricing page)


def cost_per_day(con) -> list[tuple[date, int]]:
    """(UTC day, distinct posts created that day) of the loaded posts: what X billed for them,
    a post billed once per UTC day of delivery (a streamed post arrives seconds after it was
    created; one fetched again by gap repair is billed on the day of the repair)."""
    return con.execute(
        "SELECT CAST(created_at AS DATE) AS d, count(DISTINCT id) FROM posts GROUP BY d ORDER BY d"
    ).fetchall()


def _cost_section(days: list[tuple[date, int]], usd_per_post: float, status: dict | None) -> str:
    parts = [
        "<h2 id='cost'>What it cost</h2><p>X bills pay-per-use reads per post delivered, "
        f"${usd_per_post} a post ([budget] usd_per_post; X's list price for Posts: Read is $0.005, "
        "https://docs.x.com/x-api/getting-started/pricing), once per post and UTC day, up to "
        f"{MONTHLY_CAP:,} post reads per monthly billing cycle. Estimated here from the posts "
        "stored, by the UTC day they were created; the collector's billing ledger (below, and "
        "`collector usage` beside X's own figures) counts what was delivered.</p>"
    ]
    rows = [
        [str(day), f"{n:,}", f"${n * usd_per_post:,.2f}", f"{100 * n / MONTHLY_CAP:.2f} %"]
        for day, n in days
    ]
    total = sum(n for _, n in days)
    rows.append(
        [
            "total",
            f"{total:,}",
            f"${total * usd_per_post:,.2f}",
            f"{100 * total / MONTHLY_CAP:.2f} %",
        ]
    )
    parts.append(_table(["UTC day", "billable posts", "USD", "share of the monthly cap"], rows))
    if status and "spend_usd_cycle" in status:
        budget = status.get("budget") or {}
        limits = [
            f"{name} {budget[name]:,}"
            for name in ("posts_per_day", "usd_per_month")
            if budget.get(name) is not None
        ]
        parts.append(
            "<p>The collector's ledger: "
            f"{status.get('billable_posts_today', 0):,} billable posts today "
            f"(${status.get('spend_usd_today', 0):,.2f}), "
            f"${status.get('spend_usd_cycle', 0):,.2f} this billing cycle (since "
            f"{html.escape(str(status.get('billing_cycle_start')))}), "
            + (
                f"${status['spend_usd_cycle_forecast']:,.2f} forecast at the cycle's end; "
                if status.get("spend_usd_cycle_forecast") is not None
                else f"{html.escape(str(status.get('spend_forecast_note') or 'no forecast'))}; "
            )
            + f"budget: {html.escape(', '.join(limits) or 'none')}.</p>"
        )
    return "".join(parts)


def render_html(
    source: Source,
    period: Period,
    sync: loader.CacheSync | None,
    result: LoadResult,
    figures: Figures | None,
    charts: dict[str, tuple[str, bytes]],
    gap_minutes: float,
    status: dict | None,
    gaps: GapAccount | None = None,
    compliance_line: str | None = None,
    cost_days: list[tuple[date, int]] | None = None,
) -> str:
    where = f"s3://{source.bucket}/{normalize_prefix(source.prefix)}"
    summary: list[list[object]] = [
        ["source", where],
        ["period", f"{_when(period.start)} to {_when(period.end)}"],
        ["objects", result.files],
        ["posts", result.posts],
        ["duplicate copies left out (one row per post id)", result.duplicates],
    ]
    if sync is not None:
        summary.append(["downloaded / already cached", f"{sync.downloaded} / {sync.cached}"])
    if figures is not None:
        summary += [
            ["distinct post ids", figures.distinct_ids],
            ["first / last post", f"{_when(figures.first_post)} / {_when(figures.last_post)}"],
        ]
    summary += [
        ["skipped objects", result.skipped_files],
        ["skipped lines", result.skipped_lines],
    ]
    if compliance_line:
        summary.append(["compliance", compliance_line.removeprefix("compliance: ")])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>TwitterSnake report {html.escape(where)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>TwitterSnake report</h1>{_table(['', ''], summary)}",
    ]
    if result.posts == 0:
        parts.append(f"<p class='empty'>{html.escape(empty_message(source, period, result))}</p>")
    for name, (title, png) in charts.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f"<h2 id='{name}'>{html.escape(title)}</h2>"
            f"<img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
        )
    if figures is not None:
        parts.append(_figure_tables(figures))
    if gaps is not None:
        parts.append(_gaps_section(gaps, gap_minutes))
    parts.append(_cost_section(cost_days or [], source.usd_per_post, status))
    parts.append("<h2 id='collector'>Collector status</h2>" + _collector_section(status))
    if result.skipped:
        rows = [
            [s.file, "whole object" if s.lines is None else s.lines, s.reason]
            for s in result.skipped
        ]
        parts.append("<h2 id='skipped'>Skipped (malformed) objects and lines</h2>")
        parts.append(_table(["object", "skipped", "reason"], rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def format_duration(length: timedelta) -> str:
    """'45 s', '20 min 20 s', '2 h 5 min', '3 d 4 h': the two largest units, whole numbers.

    A span shorter than a second (a reconnection) is 'under 1 s'."""
    seconds = int(length.total_seconds())
    if seconds == 0 and length > timedelta(0):
        return "under 1 s"
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    for index, (name, size) in enumerate(units[:-1]):
        if seconds >= size:
            small_name, small_size = units[index + 1]
            big, rest = divmod(seconds, size)
            small = rest // small_size
            return f"{big} {name} {small} {small_name}" if small else f"{big} {name}"
    return f"{seconds} s"


def _gaps_section(account: GapAccount, gap_minutes: float) -> str:
    parts = [
        "<h2 id='gaps'>Gaps</h2><p>"
        f"<b>{NOT_COLLECTING}</b>: the collector was stopped or its stream disconnected "
        f"(from its connection events); <b>{PAUSED_BUDGET}</b>: the budget ([budget] "
        "posts_per_day or usd_per_month) was spent and the collector closed the stream until "
        f"the next UTC day or billing cycle; <b>{QUIET}</b>: connected, but no post for more than "
        f"{gap_minutes:g} minutes. <b>repair</b>: what gap repair fetched again by X's recent "
        "search for a gap without connection (its repair events; the posts are this "
        "collector's repaired posts in the gap, each counted once however often it was "
        "fetched): repaired, partly repaired "
        "(rules search cannot run, or part of the span), not repaired (why). Search returns no "
        "reposts and matches accents differently from the stream.</p>"
    ]
    if not account.events and not account.collecting:
        parts.append(
            "<p>No collector events in this period (collectors before connection events were "
            f"recorded): every silence longer than {gap_minutes:g} minutes is listed as "
            f"<b>{NO_POSTS}</b>.</p>"
        )
    notes = []
    if account.before_collection:
        start, end = account.before_collection
        notes.append(f"before collection: {_when(start)} to {_when(end)} (not a gap)")
    if account.after_collection:
        start, end = account.after_collection
        notes.append(f"after the last stop: {_when(start)} to {_when(end)} (not a gap)")
    if notes:
        parts.append("<p>" + "<br>".join(html.escape(n) for n in notes) + "</p>")
    rows = [
        [_when(g.start), _when(g.end), format_duration(g.length), g.kind, g.cause, g.repair]
        for g in account.gaps
    ]
    headers = ["from", "to", "length", "kind", "cause", "repair"]
    parts.append(_table(headers, rows) if rows else "<p>None.</p>")
    if account.events:
        events = [[_when(e.at), e.collector_id, e.event, e.cause or ""] for e in account.events]
        parts.append(
            f"<details id='events'><summary>Collector events ({len(events)})</summary>"
            f"{_table(['at', 'collector', 'event', 'cause'], events)}</details>"
        )
    return "".join(parts)


def _figure_tables(figures: Figures) -> str:
    parts = ["<h2 id='rule_counts'>Posts per rule tag</h2>"]
    parts.append(_table(["rule tag", "posts"], [list(r) for r in figures.rules]))
    parts.append("<h2 id='post_type_counts'>Post types</h2>")
    parts.append(_table(["type", "posts"], [list(r) for r in figures.post_types]))
    parts.append("<h2 id='author_counts'>Top authors</h2>")
    authors = [[f"@{u}" if u else "(not in includes.users)", i, n] for u, i, n in figures.authors]
    parts.append(_table(["username", "author id", "posts"], authors))
    parts.append("<h2 id='domain_counts'>Top linked domains</h2>")
    parts.append(_table(["domain", "posts"], [list(r) for r in figures.domains]))
    unit = figures.bucket
    buckets = [[_when(t), n] for t, n in figures.posts_per_bucket]
    parts.append(
        f"<details id='bucket_counts'><summary>Posts per {unit} ({len(buckets)} {unit}"
        f"{'' if len(buckets) == 1 else 's'} with "
        f"posts)</summary>{_table([f'{unit} (UTC)', 'posts'], buckets)}</details>"
    )
    return "".join(parts)


def empty_message(source: Source, period: Period, result: LoadResult) -> str:
    return (
        f"No posts in s3://{source.bucket}/{normalize_prefix(source.prefix)} between "
        f"{_when(period.start)} and {_when(period.end)} "
        f"({result.files} objects in the period's partitions, {result.skipped_files} skipped)."
    )


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the collector's TOML config")
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--since", help=f"period ending now, e.g. 90m, 24h, 7d (default {DEFAULT_SINCE})"
    )
    when.add_argument("--from", dest="from_time", help="period start, ISO 8601 (UTC if no zone)")
    parser.add_argument("--to", dest="to_time", help="period end, ISO 8601 (default now)")
    parser.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")
    parser.add_argument("--png", type=Path, help="also write each chart as DIR/<name>.png")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="object cache (default ~/.cache/twittersnake)"
    )
    parser.add_argument("--offline", action="store_true", help="use the cache only, no S3 call")
    parser.add_argument("--gap-minutes", type=float, default=5.0, help="gap threshold (default 5)")
    parser.add_argument("--top", type=int, default=20, help="rows in the top-N charts (default 20)")
    parser.add_argument("--memory-limit", default="512MB", help="DuckDB memory limit")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    add_compliance_argument(parser)


def add_compliance_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-removed",
        action="store_true",
        help="keep posts X reported deleted, protected or suspended, and their geotags "
        "(for an audit; collector compliance finds them)",
    )


def apply_compliance(con, source: Source, args: argparse.Namespace, geo_columns=()):
    """collector.analysis.compliance.apply on table `posts`; None after one line when the
    results cannot be read and --include-removed was not given."""
    from collector.analysis import compliance

    cache_dir = args.cache_dir or loader.default_cache_dir()
    files = compliance.results_for(source, cache_dir, args.offline)
    if files is None:
        if not args.include_removed:
            return None
        files = []
    return compliance.apply(con, files, args.include_removed, geo_columns)


def compliance_url(source: Source) -> str:
    from collector.analysis.compliance import compliance_prefix

    return f"s3://{source.bucket}/{compliance_prefix(source.prefix)}"


def period_objects(
    source: Source, period: Period, args: argparse.Namespace
) -> tuple[list[Path] | None, loader.CacheSync | None]:
    """The period's objects in the local cache (downloaded first unless --offline).

    (None, None) after printing one line when S3 refuses or cannot be reached (the listing);
    an object S3 refuses alone, or whose key is not the collector's, is in sync.skipped.
    """
    cache = cache_dir(args)
    if args.offline:
        return loader.cached_files(cache, source.bucket, source.prefix, period), None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sync = loader.sync_cache(
            _s3_client(source), source.bucket, source.prefix, period, cache,
            progress=not args.no_progress,
        )  # fmt: skip
    except (BotoCoreError, ClientError) as error:
        print(f"error: s3://{source.bucket}: {error} (--offline uses the cache)", file=sys.stderr)
        return None, None
    return sync.paths, sync


def period_events(source: Source, period: Period, args: argparse.Namespace) -> list[Event]:
    """The collectors' connection events of the period and its lookback (telemetry.events)."""
    cache = cache_dir(args)
    if args.offline:
        paths = loader.cached_event_files(cache, source.bucket, source.prefix, period)
    else:
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = _s3_client(source)
        try:
            listed = loader.list_event_objects(s3, source.bucket, source.prefix, period)
            sync = loader.sync_cache(
                s3, source.bucket, source.prefix, period, cache, progress=False,
                objects=listed,
            )  # fmt: skip
        except (BotoCoreError, ClientError) as error:
            print(f"warning: collector events not read: {error}", file=sys.stderr)
            return []
        paths = sync.paths
        for skipped in sync.skipped:
            print(f"skipped event object {skipped.file}: {skipped.reason}", file=sys.stderr)
    events, problems = read_events(paths)
    for problem in problems:
        print(f"skipped event object {problem}", file=sys.stderr)
    return events


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        source = read_source(args.config)
        period = period_from_args(args)
        check_options(args)
        con = connect(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EX_CONFIG
    files, sync = period_objects(source, period, args)
    if files is None:
        return 1
    events = period_events(source, period, args)
    result = with_sync_skipped(loader.load_posts(con, files, period), sync)
    applied = apply_compliance(con, source, args)
    if applied is None:
        return 1
    result.duplicates = loader.drop_duplicates(con)  # one row per post id
    result.posts = con.execute("SELECT count(*) FROM posts").fetchall()[0][0]
    compliance_line = applied.line(compliance_url(source))
    figures = compute_figures(con, period, args.top) if result.posts else None
    gaps = account_gaps(con, events, period, args.gap_minutes, source.collector_id)
    charts = render_charts(figures, period, gaps) if figures else {}
    status = read_collector_status(source.spool_dir)
    page = render_html(
        source, period, sync, result, figures, charts, args.gap_minutes, status, gaps,
        compliance_line, cost_per_day(con) if result.posts else [],
    )  # fmt: skip
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(page, encoding="utf-8")
        if args.png:
            args.png.mkdir(parents=True, exist_ok=True)
            for name, (_, png) in charts.items():
                (args.png / f"{name}.png").write_bytes(png)
    except OSError as error:
        print(f"error: {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    if result.posts == 0:
        print(empty_message(source, period, result))
    print_skipped(result)
    print(compliance_line)
    print(f"{args.out}: {result.posts} posts {provenance(result, sync, started)}")
    return 0


def with_sync_skipped(result: LoadResult, sync: loader.CacheSync | None) -> LoadResult:
    """The load's result with the objects the cache sync skipped (refused keys, unreadable
    objects) counted among the period's objects and listed first among the skipped."""
    if sync is not None and sync.skipped:
        result.files += len(sync.skipped)
        result.skipped[:0] = sync.skipped
    return result


def print_skipped(result) -> None:
    """One stderr line per object or run of lines the loader skipped (report and export)."""
    for skipped in result.skipped:
        what = "object" if skipped.lines is None else f"{skipped.lines} line(s) of"
        print(f"skipped {what} {skipped.file}: {skipped.reason}", file=sys.stderr)


def provenance(result, sync, started: float) -> str:
    """'from N objects (D downloaded, C cached), S objects and L lines skipped, T s'.

    `sync` is None offline; `started` is a time.monotonic() reading.
    """
    return (
        f"from {result.files} objects"
        + (f" ({sync.downloaded} downloaded, {sync.cached} cached)" if sync else " (offline)")
        + f", {result.skipped_files} objects and {result.skipped_lines} lines skipped,"
        f" {time.monotonic() - started:.1f} s"
    )


def _s3_client(source: Source):
    import boto3

    # endpoint_url None lets boto3 honour AWS_ENDPOINT_URL, like the collector does.
    return boto3.client(
        "s3", region_name=source.region or None, endpoint_url=source.endpoint_url or None
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
