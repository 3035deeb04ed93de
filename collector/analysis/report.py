"""`collector report`: one self-contained HTML page about what was collected in a period.

S3 objects of the period -> local cache -> DuckDB (collector.analysis.loader) -> a handful of
aggregates -> matplotlib PNGs embedded as data: URIs. DuckDB does every per-post step, so
memory stays bounded by its memory limit whatever the number of posts.

Sections: posts over time (a bar per minute, hour or day: bucket_for), post types, top authors,
rule tags, hashtags, mentions, linked domains, languages, and the gaps table, which reads the
collectors' connection events (collector.telemetry.events, `{prefix}/_events/`) to tell
"not collecting" from "quiet" (account_gaps).

Its parts: collector.analysis.options (source, period, cache, the lines shared with export),
collector.analysis.gaps (gap accounting), collector.analysis.charts (matplotlib); this module
holds the aggregates, the HTML and the command.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from collector.analysis import loader

# What report shared with export and the tests before these parts had modules of their own.
from collector.analysis.charts import DATA_COLOUR as DATA_COLOUR
from collector.analysis.charts import REPAIRED_COLOUR as REPAIRED_COLOUR
from collector.analysis.charts import SPAN_COLOURS as SPAN_COLOURS
from collector.analysis.charts import _time_chart as _time_chart
from collector.analysis.charts import bucket_for as bucket_for
from collector.analysis.charts import chart_spans as chart_spans
from collector.analysis.charts import floor_time as floor_time
from collector.analysis.charts import render_charts as render_charts
from collector.analysis.gaps import NO_POSTS as NO_POSTS
from collector.analysis.gaps import NO_REPAIR_RECORDED as NO_REPAIR_RECORDED
from collector.analysis.gaps import NOT_COLLECTING as NOT_COLLECTING
from collector.analysis.gaps import PAUSED_BUDGET as PAUSED_BUDGET
from collector.analysis.gaps import QUIET as QUIET
from collector.analysis.gaps import UNCLEAN_END as UNCLEAN_END
from collector.analysis.gaps import Gap as Gap
from collector.analysis.gaps import GapAccount as GapAccount
from collector.analysis.gaps import account_gaps as account_gaps
from collector.analysis.gaps import collecting_spans as collecting_spans
from collector.analysis.gaps import repair_state as repair_state
from collector.analysis.loader import LoadResult, Period
from collector.analysis.options import DEFAULT_SINCE as DEFAULT_SINCE
from collector.analysis.options import Source as Source
from collector.analysis.options import _s3_client as _s3_client
from collector.analysis.options import add_compliance_argument as add_compliance_argument
from collector.analysis.options import apply_compliance as apply_compliance
from collector.analysis.options import cache_dir as cache_dir
from collector.analysis.options import check_options as check_options
from collector.analysis.options import compliance_url as compliance_url
from collector.analysis.options import connect as connect
from collector.analysis.options import period_from_args as period_from_args
from collector.analysis.options import period_objects as period_objects
from collector.analysis.options import print_skipped as print_skipped
from collector.analysis.options import provenance as provenance
from collector.analysis.options import read_source as read_source
from collector.analysis.options import with_sync_skipped as with_sync_skipped
from collector.errors import EX_CONFIG
from collector.source.pricing import MONTHLY_CAP, USD_PER_POST
from collector.spool.layout import normalize_prefix
from collector.telemetry.events import Event, read_events

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- aggregates (DuckDB)


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


# ---------------------------------------------------------------- charts (matplotlib)


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
        f"${usd_per_post} a post ([budget] usd_per_post; X's list price for Posts: Read is "
        f"${USD_PER_POST}, "
        "https://docs.x.com/x-api/getting-started/pricing), once per post and UTC day, up to "
        f"{MONTHLY_CAP:,} post reads per monthly billing cycle. Estimated here from the posts "
        "stored, by the UTC day they were created, including the posts compliance leaves out "
        "of the other figures (X billed them when it delivered them); the collector's billing "
        "ledger (below, and `collector usage` beside X's own figures) counts what was "
        "delivered.</p>"
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
                f"${status['spend_usd_cycle_forecast']:,.2f} forecast at the cycle's end"
                + (
                    f" (X's monthly cap reached on "
                    f"{html.escape(str(status['monthly_cap_reached_on']))})"
                    if status.get("monthly_cap_reached_on")
                    else ""
                )
                + "; "
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
    billed_days = cost_per_day(con)  # X billed every post it delivered, removed since or not
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
        compliance_line, billed_days,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector report", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
