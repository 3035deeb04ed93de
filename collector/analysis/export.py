"""`collector export`: the posts of a period as one flat table, in Parquet or CSV, for pandas or R.

    python -m collector export --config collector.toml --since 24h --format parquet --out posts/
    python -m collector export --config collector.toml --from 2026-11-27 --to 2026-11-28 \\
        --format csv --out posts.csv

Same path as the report: the period's S3 objects -> local cache -> DuckDB
(collector.analysis.loader), then DuckDB's COPY writes the file. One row per post (a post the
stream delivered twice, or
that two objects hold, is one row), ordered by created_at then id. `--out` ending in `.parquet`
or `.csv` is one file; anything else is a folder with one `dt=YYYY-MM-DD/posts.parquet` (or
.csv) per UTC day of created_at (Hive partitioning, which pandas, arrow and DuckDB read as a
column).

Columns (EXPORT_COLUMNS), from the X API v2 post object
(https://docs.x.com/x-api/fundamentals/data-dictionary#tweet): id, created_at (UTC),
author_id, author_username (the `includes.users` entry whose id is author_id), text (the full
text: a long post's note_tweet text when X sent one), lang, conversation_id, post_type
(original | reply | quote | repost, see loader.POST_TYPE_SQL),
in_reply_to_id, quoted_id, reposted_id (data.referenced_tweets ids of type replied_to, quoted,
retweeted), in_reply_to_user_id, the public_metrics counts (retweet_count, reply_count,
like_count, quote_count, bookmark_count, impression_count: null when X did not send them),
hashtags, mentions (usernames), urls (expanded; all three of the full text), rule_ids and
rule_tags (matching_rules), geo_place_id and geo_coordinates ([longitude, latitude]) from
data.geo (null unless tweet.fields asks X for geo; blanked for posts X reports as scrub_geo).
Then, in this order: text_truncated (X's cut `text` of a long post, else null), media_types,
media_urls, media_alt_texts (includes.media of attachments.media_keys, in order), poll_options
and poll_votes (includes.polls), place_full_name, place_country_code, place_bbox (includes.places
of geo.place_id; blanked with the geotag), possibly_sensitive, reply_settings,
edit_history_tweet_ids and edited_from_id (the version this post replaced), quoted_author_id,
quoted_author_username, replied_to_author_id, replied_to_author_username (includes.tweets and
includes.users). X's renamed spellings (referenced_posts, note_post, edit_history_post_ids) are
read as the old ones. docs/analysis.md describes each column.

Posts X reports removed (deleted, protected, suspended: `collector compliance`) are left out
and scrub_geo geotags blanked, unless --include-removed.
Lists are Parquet lists; in CSV they are JSON arrays (`["a","b"]`) and created_at is ISO 8601
with a `Z`. A CSV text cell that begins with `=`, `+`, `-`, `@`, a tab or a carriage return
(a post's text, a username) gets a leading `'`, so a spreadsheet shows it as text instead of
running it as a formula (OWASP, "CSV Injection"); `--csv-raw` writes the cells unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import duckdb

from collector.analysis import loader, options
from collector.analysis.loader import Projection
from collector.errors import EX_CONFIG

log = logging.getLogger(__name__)

_REF = f"list_filter({loader.REFERENCES_SQL}, lambda r: r.type = '{{kind}}')[1].id"
_METRICS = (
    "retweet_count",
    "reply_count",
    "like_count",
    "quote_count",
    "bookmark_count",
    "impression_count",
)
_EDIT_HISTORY = loader.either_spelling("edit_history_tweet_ids")
# The objects of includes.* that belong to the post, by the ids it holds.
_MEDIA = "list_transform(data.attachments.media_keys, lambda k: list_filter(includes.media, lambda m: m.media_key = k)[1])"  # noqa: E501
_POLL = "list_filter(includes.polls, lambda p: p.id = data.attachments.poll_ids[1])[1]"
_PLACE = "list_filter(includes.places, lambda p: p.id = data.geo.place_id)[1]"


def _referenced_author(kind: str) -> tuple[str, str]:
    """SQL of (author id, username) of the post this one quotes or replies to, from the
    includes.tweets entry (the referenced_tweets.id.author_id expansion) and includes.users."""
    author = f"list_filter(includes.tweets, lambda t: t.id = {_REF.format(kind=kind)})[1].author_id"
    return author, f"list_filter(includes.users, lambda u: u.id = {author})[1].username"


_QUOTED_AUTHOR = _referenced_author("quoted")
_REPLIED_TO_AUTHOR = _referenced_author("replied_to")

EXPORT_PROJECTION = Projection(
    json_columns={
        "data": "STRUCT(id VARCHAR, created_at TIMESTAMPTZ, text VARCHAR, lang VARCHAR, "
        "author_id VARCHAR, conversation_id VARCHAR, in_reply_to_user_id VARCHAR, "
        f"{loader.both_spellings('referenced_tweets', loader.REFERENCES_TYPE)}, "
        f"{loader.both_spellings('note_tweet', loader.NOTE_TYPE)}, "
        f"{loader.both_spellings('edit_history_tweet_ids', 'VARCHAR[]')}, "
        f"public_metrics STRUCT({', '.join(f'{m} BIGINT' for m in _METRICS)}), "
        f"entities {loader.ENTITIES_TYPE}, "
        "geo STRUCT(place_id VARCHAR, coordinates STRUCT(type VARCHAR, coordinates DOUBLE[])), "
        "attachments STRUCT(media_keys VARCHAR[], poll_ids VARCHAR[]), "
        "possibly_sensitive BOOLEAN, reply_settings VARCHAR)",
        "includes": "STRUCT(users STRUCT(id VARCHAR, username VARCHAR)[], "
        "tweets STRUCT(id VARCHAR, author_id VARCHAR)[], "
        "media STRUCT(media_key VARCHAR, type VARCHAR, url VARCHAR, preview_image_url VARCHAR, "
        "alt_text VARCHAR)[], "
        "polls STRUCT(id VARCHAR, "
        "options STRUCT(position INTEGER, label VARCHAR, votes BIGINT)[])[], "
        "places STRUCT(id VARCHAR, full_name VARCHAR, country_code VARCHAR, "
        "geo STRUCT(bbox DOUBLE[]))[])",
        "matching_rules": "STRUCT(id VARCHAR, tag VARCHAR)[]",
    },
    table=f"""
        id VARCHAR, created_at TIMESTAMPTZ, author_id VARCHAR, author_username VARCHAR,
        text VARCHAR, lang VARCHAR, conversation_id VARCHAR, post_type VARCHAR,
        in_reply_to_id VARCHAR, quoted_id VARCHAR, reposted_id VARCHAR,
        in_reply_to_user_id VARCHAR, {", ".join(f"{m} BIGINT" for m in _METRICS)},
        hashtags VARCHAR[], mentions VARCHAR[], urls VARCHAR[],
        rule_ids VARCHAR[], rule_tags VARCHAR[], geo_place_id VARCHAR, geo_coordinates DOUBLE[],
        text_truncated VARCHAR, media_types VARCHAR[], media_urls VARCHAR[],
        media_alt_texts VARCHAR[], poll_options VARCHAR[], poll_votes BIGINT[],
        place_full_name VARCHAR, place_country_code VARCHAR, place_bbox DOUBLE[],
        possibly_sensitive BOOLEAN, reply_settings VARCHAR, edit_history_tweet_ids VARCHAR[],
        edited_from_id VARCHAR, quoted_author_id VARCHAR, quoted_author_username VARCHAR,
        replied_to_author_id VARCHAR, replied_to_author_username VARCHAR,
        dt DATE, hour INTEGER, file VARCHAR
    """,
    select=f"""data.id, {loader.CREATED_AT_SQL}, data.author_id, {loader.AUTHOR_USERNAME_SQL},
        {loader.FULL_TEXT_SQL}, data.lang, data.conversation_id, {loader.POST_TYPE_SQL},
        {_REF.format(kind="replied_to")}, {_REF.format(kind="quoted")},
        {_REF.format(kind="retweeted")}, data.in_reply_to_user_id,
        {", ".join(f"data.public_metrics.{m}" for m in _METRICS)},
        list_transform({loader.ENTITIES_SQL}.hashtags, lambda h: h.tag),
        list_transform({loader.ENTITIES_SQL}.mentions, lambda m: m.username),
        list_transform({loader.ENTITIES_SQL}.urls, lambda u: coalesce(u.expanded_url, u.url)),
        list_transform(matching_rules, lambda r: r.id),
        list_transform(matching_rules, lambda r: r.tag),
        data.geo.place_id, data.geo.coordinates.coordinates,
        CASE WHEN {loader.NOTE_SQL}.text IS NOT NULL THEN data.text END,
        list_transform({_MEDIA}, lambda m: m.type),
        list_transform({_MEDIA}, lambda m: coalesce(m.url, m.preview_image_url)),
        list_transform({_MEDIA}, lambda m: m.alt_text),
        list_transform({_POLL}.options, lambda o: o.label),
        list_transform({_POLL}.options, lambda o: o.votes),
        {_PLACE}.full_name, {_PLACE}.country_code, {_PLACE}.geo.bbox,
        data.possibly_sensitive, data.reply_settings, {_EDIT_HISTORY},
        CASE WHEN list_position({_EDIT_HISTORY}, data.id) > 1
             THEN {_EDIT_HISTORY}[list_position({_EDIT_HISTORY}, data.id) - 1] END,
        {_QUOTED_AUTHOR[0]}, {_QUOTED_AUTHOR[1]},
        {_REPLIED_TO_AUTHOR[0]}, {_REPLIED_TO_AUTHOR[1]},
        dt, hour, filename""",
)

EXPORT_COLUMNS = (
    "id created_at author_id author_username text lang conversation_id post_type "
    "in_reply_to_id quoted_id reposted_id in_reply_to_user_id "
    + " ".join(_METRICS)
    + " hashtags mentions urls rule_ids rule_tags geo_place_id geo_coordinates"
    # added later, after the columns above (their order is kept for existing scripts)
    " text_truncated media_types media_urls media_alt_texts poll_options poll_votes"
    " place_full_name place_country_code place_bbox possibly_sensitive reply_settings"
    " edit_history_tweet_ids edited_from_id quoted_author_id quoted_author_username"
    " replied_to_author_id replied_to_author_username"
).split()
_LIST_COLUMNS = (
    "hashtags", "mentions", "urls", "rule_ids", "rule_tags", "geo_coordinates", "media_types",
    "media_urls", "media_alt_texts", "poll_options", "poll_votes", "place_bbox",
    "edit_history_tweet_ids",
)  # fmt: skip
# The post's geotag (data.geo, asked for with tweet.fields=geo, and its place): blanked for
# scrub_geo posts (collector.analysis.compliance).
GEO_COLUMNS = (
    "geo_place_id", "geo_coordinates", "place_full_name", "place_country_code", "place_bbox",
)  # fmt: skip
# The VARCHAR columns: post data a spreadsheet could take for a formula (see the docstring).
_TEXT_COLUMNS = (
    *("id", "author_id", "author_username", "text", "lang", "conversation_id", "post_type"),
    *("in_reply_to_id", "quoted_id", "reposted_id", "in_reply_to_user_id", "geo_place_id"),
    *("text_truncated", "place_full_name", "place_country_code", "reply_settings"),
    *("edited_from_id", "quoted_author_id", "quoted_author_username", "replied_to_author_id"),
    "replied_to_author_username",
)
# A spreadsheet starts a formula at these (https://owasp.org/www-community/attacks/CSV_Injection).
FORMULA_START = r"^[=+\-@\t\r]"
# Every string cell (the VARCHAR columns above; the list columns are JSON already) may hold any
# character, from the poster or from X: control characters other than tab, line feed and
# carriage return (which CSV quotes) are written as JSON writes them, \u0000 to \u001f and
# \u007f: a raw NUL ends a C string and stops many CSV readers (R's read.csv, Excel).
_ESCAPED = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]


def _escaped_sql(column: str) -> str:
    """SQL for `column` with the control characters of _ESCAPED as \\uXXXX."""
    expression = column
    for code in _ESCAPED:
        expression = f"replace({expression}, chr({code}), '\\u{code:04x}')"
    return expression


FORMATS = ("parquet", "csv")


def _rows_sql(fmt: str, where: str = "", csv_raw: bool = False) -> str:
    """The export's columns of `posts` (for CSV: lists as JSON, times as ISO 8601 `Z`, text
    cells that would start a formula prefixed with `'` unless csv_raw)."""
    columns = []
    for name in EXPORT_COLUMNS:
        value = _escaped_sql(name) if fmt == "csv" and name in _TEXT_COLUMNS else name
        if fmt == "csv" and not csv_raw and name in _TEXT_COLUMNS:
            columns.append(
                f"CASE WHEN regexp_matches({name}, '{FORMULA_START}') THEN '''' || {value} "
                f"ELSE {value} END AS {name}"
            )
        elif fmt == "csv" and name in _LIST_COLUMNS:
            columns.append(f"to_json({name}) AS {name}")
        elif value != name:
            columns.append(f"{value} AS {name}")
        elif fmt == "csv" and name == "created_at":
            columns.append("strftime(created_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS created_at")
        else:
            columns.append(name)
    return f"SELECT {', '.join(columns)} FROM posts {where} ORDER BY posts.created_at, posts.id"


drop_duplicates = loader.drop_duplicates  # one row per post id, the streamed copy first


def output_format(out: Path, fmt: str | None) -> str:
    """--format, or the one --out's suffix names (parquet when none); ValueError when --out
    ends in the other format's suffix (`--out posts.csv --format parquet`)."""
    named = out.suffix.lower().removeprefix(".")
    if fmt is None:
        return named if named in FORMATS else "parquet"
    if named in FORMATS and named != fmt:
        raise ValueError(f"--out {out} ends in .{named} but --format is {fmt}")
    return fmt


def is_single_file(out: Path, fmt: str) -> bool:
    return out.suffix.lower() == f".{fmt}"


def output_folder(out: Path, fmt: str) -> Path:
    """The one folder DuckDB may write into besides the cache: --out's, or --out itself."""
    return out.parent if is_single_file(out, fmt) else out


def check_out(out: Path, fmt: str, force: bool = False) -> None:
    """ValueError (one line naming --out) when writing would replace what is there: a single
    file that exists (unless `force`), or a folder that exists and is not empty (always)."""
    if is_single_file(out, fmt):
        if out.is_dir():
            raise ValueError(f"--out {out}: is a folder (give a file name ending in .{fmt})")
        if out.exists() and not force:
            raise ValueError(
                f"--out {out}: the file exists (give a new name, or --force to replace it)"
            )
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(
            f"--out {out}: exists and is not an empty folder "
            f"(give a new folder, or a file name ending in .{fmt})"
        )


def write(con, out: Path, fmt: str, csv_raw: bool = False, force: bool = False) -> int:
    """COPY the `posts` table (EXPORT_PROJECTION) to `out`; returns the rows written.

    One row per post, ordered by created_at then id. A single file must not exist yet (unless
    `force`: it is then replaced whole); a folder gets `dt=YYYY-MM-DD/posts.{fmt}` per UTC day
    of created_at and must not exist yet or be empty (ValueError otherwise, `check_out`).
    Every file is written under a temporary name and renamed, so a reader never sees a
    partial one.
    """
    drop_duplicates(con)
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER"
    check_out(out, fmt, force)
    if is_single_file(out, fmt):
        out.parent.mkdir(parents=True, exist_ok=True)
        return _copy(con, _rows_sql(fmt, csv_raw=csv_raw), out, options)
    out.mkdir(parents=True, exist_ok=True)
    days = con.execute("SELECT DISTINCT created_at::DATE AS d FROM posts ORDER BY d").fetchall()
    rows = 0
    for (day,) in days:
        # One COPY per day keeps each file sorted (a PARTITION_BY write is slower and is not).
        where = f"WHERE created_at::DATE = DATE '{day:%Y-%m-%d}'"
        target = out / f"dt={day:%Y-%m-%d}" / f"posts.{fmt}"
        target.parent.mkdir()
        rows += _copy(con, _rows_sql(fmt, where, csv_raw), target, options)
    return rows


def _copy(con, query: str, target: Path, options: str) -> int:
    tmp = target.with_name(f".{target.name}.part")
    quoted = str(tmp).replace("'", "''")
    rows = con.execute(f"COPY ({query}) TO '{quoted}' ({options})").fetchall()[0][0]
    os.replace(tmp, target)
    return rows


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the collector's TOML config")
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--since", help=f"period ending now, e.g. 90m, 24h, 7d (default {options.DEFAULT_SINCE})"
    )
    when.add_argument("--from", dest="from_time", help="period start, ISO 8601 (UTC if no zone)")
    parser.add_argument("--to", dest="to_time", help="period end, ISO 8601 (default now)")
    parser.add_argument(
        "--format", choices=FORMATS, help="default: --out's suffix (.csv, .parquet), else parquet"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="a new file ending in .parquet/.csv, or a new or empty folder (one "
        "dt=YYYY-MM-DD/ per day)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --out file (never a folder)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="object cache (default ~/.cache/twittersnake)"
    )
    parser.add_argument("--offline", action="store_true", help="use the cache only, no S3 call")
    parser.add_argument(
        "--memory-limit", default="512MB", help="DuckDB memory limit (default 512MB)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    options.add_compliance_argument(parser)
    parser.add_argument(
        "--csv-raw",
        action="store_true",
        help="CSV: write text cells as they are (by default a cell starting with = + - @ tab "
        "or CR gets a leading ' so spreadsheets do not run it as a formula)",
    )


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        source = options.read_source(args.config)
        period = options.period_from_args(args)
        args.format = output_format(args.out, args.format)
        check_out(args.out, args.format, args.force)
        con = options.connect(args, output_folder(args.out, args.format))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EX_CONFIG
    files, sync = options.period_objects(source, period, args)
    if files is None:
        return 1
    result = loader.load_posts(con, files, period, EXPORT_PROJECTION)
    result = options.with_sync_skipped(result, sync)
    applied = options.apply_compliance(con, source, args, GEO_COLUMNS)
    if applied is None:
        return 1
    kept = con.execute("SELECT count(*) FROM posts").fetchall()[0][0]
    try:
        rows = write(con, args.out, args.format, args.csv_raw, args.force)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EX_CONFIG
    except (OSError, duckdb.IOException) as error:
        print(f"error: --out {args.out}: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    options.print_skipped(result)
    print(applied.line(options.compliance_url(source)))
    print(
        f"{args.out}: {rows} posts ({kept - rows} duplicates left out), "
        f"{len(EXPORT_COLUMNS)} columns, {args.format}, {options.provenance(result, sync, started)}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector export", description=__doc__.splitlines()[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
