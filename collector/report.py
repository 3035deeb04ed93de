"""`collector report`: one self-contained HTML page about what was collected in a period.

S3 objects of the period -> local cache -> DuckDB (collector.loader) -> a handful of
aggregates -> matplotlib PNGs embedded as data: URIs. DuckDB does every per-post step, so
memory stays bounded by its memory limit whatever the number of posts.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector import loader
from collector.layout import normalize_prefix
from collector.loader import LoadResult, Period

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


def read_source(config_path: Path) -> Source:
    """The bucket, prefix and endpoint of a collector config (the same TOML `run` reads)."""
    try:
        from collector.config import load_config
    except ImportError:  # the report works without the collector's own modules
        load_config = None
    if load_config is not None:
        cfg = load_config(config_path, streaming=False)  # rules do not matter here
        return Source(
            cfg.s3.bucket, cfg.s3.prefix, cfg.s3.region, cfg.s3.endpoint_url or "", cfg.spool.dir
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
    return Period.last(loader.parse_duration(args.since or DEFAULT_SINCE), now)


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
    posts_per_hour: list[tuple[datetime, int]]
    rules: list[tuple[str, int]]
    hashtags: list[tuple[str, int]]
    mentions: list[tuple[str, int]]
    languages: list[tuple[str, int]]
    authors: list[tuple[str, str, int]]  # (username or "", author id, posts)
    post_types: list[tuple[str, int]]  # every loader.POST_TYPES entry, in that order
    domains: list[tuple[str, int]]
    gaps: list[tuple[datetime, datetime, timedelta]]
    distinct_ids: int
    first_post: datetime | None
    last_post: datetime | None


def _unnested_counts(con, column: str, top: int) -> list[tuple[str, int]]:
    return con.execute(
        f"SELECT value, count(*) AS n FROM (SELECT unnest({column}) AS value FROM posts) "
        "WHERE value IS NOT NULL GROUP BY value ORDER BY n DESC, value LIMIT ?",
        [top],
    ).fetchall()


def compute_figures(con, period: Period, gap_minutes: float, top: int) -> Figures:
    per = "SELECT date_trunc('{unit}', created_at) AS t, count(*) FROM posts GROUP BY t ORDER BY t"
    bucket, _ = bucket_for(period)
    # Gaps: consecutive distinct post seconds, with the period's edges as sentinels.
    gaps = con.execute(
        """
        WITH t AS (
            SELECT DISTINCT date_trunc('second', created_at) AS ts FROM posts
            UNION ALL SELECT ?::TIMESTAMPTZ UNION ALL SELECT ?::TIMESTAMPTZ),
        g AS (SELECT lag(ts) OVER (ORDER BY ts) AS gap_start, ts AS gap_end FROM t)
        SELECT gap_start, gap_end, gap_end - gap_start FROM g
        WHERE gap_end - gap_start > to_seconds(?::DOUBLE) ORDER BY gap_start
        """,
        [period.start, period.end, gap_minutes * 60],
    ).fetchall()
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
        posts_per_hour=con.execute(per.format(unit="hour")).fetchall(),
        rules=_unnested_counts(con, "rule_tags", 1000),
        hashtags=_unnested_counts(con, "hashtags", top),
        mentions=_unnested_counts(con, "mentions", top),
        languages=languages,
        authors=authors,
        post_types=[(name, types.get(name, 0)) for name in loader.POST_TYPES],
        domains=_unnested_counts(con, "domains", top),
        gaps=gaps,
        distinct_ids=distinct_ids,
        first_post=first,
        last_post=last,
    )


# ---------------------------------------------------------------- charts (matplotlib)

DATA_COLOUR = "#1d9bf0"  # every bar; tests count its pixels


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _time_chart(points: list[tuple[datetime, int]], title: str, period: Period) -> bytes:
    """Bars of posts per bucket; the x axis covers the whole period (whole buckets), in UTC."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    unit, step = bucket_for(period)
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.bar(
        [t for t, _ in points], [n for _, n in points], width=step, align="edge",
        color=DATA_COLOUR, linewidth=0,
    )  # fmt: skip
    left = floor_time(period.start, step)
    right = floor_time(period.end - timedelta(microseconds=1), step) + step
    ax.set_xlim(left, right)
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    ax.set_ylabel(f"posts per {unit}")
    ax.set_xlabel("time (UTC)")
    ax.grid(alpha=0.3)
    return _png(fig)


def _ranking_chart(rows: list[tuple[str, int]], title: str) -> bytes:
    import matplotlib.pyplot as plt

    rows = list(reversed(rows))
    fig, ax = plt.subplots(figsize=(10, max(2.0, 0.3 * len(rows) + 1)))
    ax.barh([str(label)[:48] for label, _ in rows], [n for _, n in rows], color=DATA_COLOUR)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title)
    ax.set_xlabel("posts")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def author_label(username: str, author_id: str) -> str:
    return f"@{username} ({author_id})" if username else f"id {author_id}"


def render_charts(figures: Figures, period: Period) -> dict[str, tuple[str, bytes]]:
    """name -> (title, PNG bytes); a chart with nothing to show is left out."""
    import matplotlib

    matplotlib.use("Agg")
    charts = {}
    if figures.posts_per_bucket:
        title = f"Posts per {figures.bucket}"
        charts["posts_over_time"] = (title, _time_chart(figures.posts_per_bucket, title, period))
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


def _table(headers: list[str], rows: list[list[object]]) -> str:
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
            rows.append([f"{prefix}{key}", value])
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


def render_html(
    source: Source,
    period: Period,
    sync: loader.CacheSync | None,
    result: LoadResult,
    figures: Figures | None,
    charts: dict[str, tuple[str, bytes]],
    gap_minutes: float,
    status: dict | None,
) -> str:
    where = f"s3://{source.bucket}/{normalize_prefix(source.prefix)}"
    summary = [
        ["source", where],
        ["period", f"{_when(period.start)} to {_when(period.end)}"],
        ["objects", result.files],
        ["posts", result.posts],
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
        parts.append(_figure_tables(figures, gap_minutes))
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
    """'45 s', '20 min 20 s', '2 h 5 min', '3 d 4 h': the two largest units, whole numbers."""
    seconds = int(length.total_seconds())
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    for index, (name, size) in enumerate(units[:-1]):
        if seconds >= size:
            small_name, small_size = units[index + 1]
            big, rest = divmod(seconds, size)
            small = rest // small_size
            return f"{big} {name} {small} {small_name}" if small else f"{big} {name}"
    return f"{seconds} s"


def _figure_tables(figures: Figures, gap_minutes: float) -> str:
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
        f"<details id='bucket_counts'><summary>Posts per {unit} ({len(buckets)} {unit}s with "
        f"posts)</summary>{_table([f'{unit} (UTC)', 'posts'], buckets)}</details>"
    )
    parts.append(f"<h2 id='gaps'>Gaps: no posts for more than {gap_minutes:g} minutes</h2>")
    rows = [[_when(a), _when(b), format_duration(d)] for a, b, d in figures.gaps]
    parts.append(_table(["from", "to", "length"], rows) if rows else "<p>None.</p>")
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


def period_objects(
    source: Source, period: Period, args: argparse.Namespace
) -> tuple[list[Path] | None, loader.CacheSync | None]:
    """The period's objects in the local cache (downloaded first unless --offline).

    (None, None) after printing one line when S3 refuses or cannot be reached.
    """
    cache_dir = args.cache_dir or loader.default_cache_dir()
    if args.offline:
        return loader.cached_files(cache_dir, source.bucket, source.prefix, period), None
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        sync = loader.sync_cache(
            _s3_client(source), source.bucket, source.prefix, period, cache_dir,
            progress=not args.no_progress,
        )  # fmt: skip
    except (BotoCoreError, ClientError) as error:
        print(f"error: s3://{source.bucket}: {error} (--offline uses the cache)", file=sys.stderr)
        return None, None
    return sync.paths, sync


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        source = read_source(args.config)
        period = period_from_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 78
    files, sync = period_objects(source, period, args)
    if files is None:
        return 1
    con = loader.connect(memory_limit=args.memory_limit)
    result = loader.load_posts(con, files, period)
    figures = compute_figures(con, period, args.gap_minutes, args.top) if result.posts else None
    charts = render_charts(figures, period) if figures else {}
    status = read_collector_status(source.spool_dir)
    page = render_html(source, period, sync, result, figures, charts, args.gap_minutes, status)
    args.out.write_text(page, encoding="utf-8")
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
        for name, (_, png) in charts.items():
            (args.png / f"{name}.png").write_bytes(png)
    if result.posts == 0:
        print(empty_message(source, period, result))
    for skipped in result.skipped:
        what = "object" if skipped.lines is None else f"{skipped.lines} line(s) of"
        print(f"skipped {what} {skipped.file}: {skipped.reason}", file=sys.stderr)
    print(
        f"{args.out}: {result.posts} posts from {result.files} objects"
        + (f" ({sync.downloaded} downloaded, {sync.cached} cached)" if sync else " (offline)")
        + f", {result.skipped_files} objects and {result.skipped_lines} lines skipped,"
        f" {time.monotonic() - started:.1f} s"
    )
    return 0


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
