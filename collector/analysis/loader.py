"""Collected posts from S3 into DuckDB: a local cache of objects, then one `posts` table.

Shared by `collector report` and the starter notebook. Objects are listed only in the
`dt=`/`hour=` partitions that can hold the period, downloaded once into
`{cache_dir}/{bucket}/{key}` (the key keeps the Hive layout, so DuckDB reads `dt` and `hour`
from the path), then read with DuckDB's `read_json`. Posts never pass through Python:
DuckDB parses, projects and aggregates them, within a memory limit.

A bucket's keys are data, not paths: anyone with the collector's key can write any key under
the prefix. Only keys in the collector's own layout (layout.object_key_problem) become cache
paths, each checked to stay under the cache root; an object that cannot be read (another key
layout, an archived storage class, SSE-C, corrupt) is skipped and named, never the end of the
run. DuckDB runs sandboxed (connect): only the cache and the output are reachable.

    period = Period.last(timedelta(hours=24))
    files = sync_cache(s3_client, "my-bucket", "tweets", period, default_cache_dir())
    con = connect()
    result = load_posts(con, files.paths, period)   # table `posts`, see POSTS_COLUMNS
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

try:
    import duckdb
except ImportError:  # the instance lists and reads objects (collector compliance) without it
    duckdb = None  # type: ignore[assignment]  # optional: None means absent

from collector.sink.codecs import DATA_SUFFIXES
from collector.spool.layout import object_key_problem, prefix_path

log = logging.getLogger(__name__)

# A file's partition is the receive time of its FIRST record; the file can hold posts for up
# to rotate.max_seconds (default 300 s) more, so the hour before the period is listed too.
PARTITION_MARGIN = timedelta(hours=1)

# X's OpenAPI 2.167 renames post fields while live answers still use the old names: every
# reader names both spellings (old first) and takes whichever the message holds.
RENAMED_FIELDS = {
    "edit_history_tweet_ids": "edit_history_post_ids",
    "note_tweet": "note_post",
    "referenced_tweets": "referenced_posts",
}
ENTITIES_TYPE = (
    "STRUCT(hashtags STRUCT(tag VARCHAR)[], mentions STRUCT(username VARCHAR)[], "
    "urls STRUCT(url VARCHAR, expanded_url VARCHAR)[])"
)
REFERENCES_TYPE = "STRUCT(type VARCHAR, id VARCHAR)[]"
# A long post's full text and its entities (`text` is cut near 280 characters).
NOTE_TYPE = f"STRUCT(text VARCHAR, entities {ENTITIES_TYPE})"


def both_spellings(name: str, sql_type: str) -> str:
    """`name TYPE, new_name TYPE` for a read_json STRUCT of `data` (RENAMED_FIELDS)."""
    return f"{name} {sql_type}, {RENAMED_FIELDS[name]} {sql_type}"


def either_spelling(name: str, struct: str = "data") -> str:
    """SQL: the field under whichever spelling the message holds."""
    return f"coalesce({struct}.{name}, {struct}.{RENAMED_FIELDS[name]})"


# Only what the report and the example queries use; read_json skips every other field.
_JSON_COLUMNS = {
    "data": "STRUCT(id VARCHAR, created_at TIMESTAMPTZ, lang VARCHAR, author_id VARCHAR, "
    f"{both_spellings('referenced_tweets', REFERENCES_TYPE)}, "
    f"{both_spellings('note_tweet', NOTE_TYPE)}, "
    f"entities {ENTITIES_TYPE})",
    "includes": "STRUCT(users STRUCT(id VARCHAR, username VARCHAR)[])",
    "matching_rules": "STRUCT(id VARCHAR, tag VARCHAR)[]",
}

POSTS_COLUMNS = """
    id VARCHAR, created_at TIMESTAMPTZ, lang VARCHAR, author_id VARCHAR, author_username VARCHAR,
    post_type VARCHAR, hashtags VARCHAR[], mentions VARCHAR[], domains VARCHAR[],
    rule_tags VARCHAR[], dt DATE, hour INTEGER, file VARCHAR
"""

# SQL over one stream message (`data`, `includes`) shared by the report and `export`.
# The author is the `includes.users` entry whose id is data.author_id (X's author_id
# expansion: https://docs.x.com/x-api/fundamentals/expansions).
AUTHOR_USERNAME_SQL = "list_filter(includes.users, lambda u: u.id = data.author_id)[1].username"
# One type per post from data.referenced_tweets[].type: a repost ("retweeted") first, then a
# reply ("replied_to"; a reply that quotes is a reply), then a quote ("quoted"), else original.
POST_TYPES = ("original", "reply", "quote", "repost")
REFERENCES_SQL = either_spelling("referenced_tweets")
_REFERENCE_TYPES = f"list_transform({REFERENCES_SQL}, lambda r: r.type)"
POST_TYPE_SQL = f"""CASE
    WHEN list_contains({_REFERENCE_TYPES}, 'retweeted') THEN 'repost'
    WHEN list_contains({_REFERENCE_TYPES}, 'replied_to') THEN 'reply'
    WHEN list_contains({_REFERENCE_TYPES}, 'quoted') THEN 'quote'
    ELSE 'original' END"""
# A long post's note (note_tweet or note_post); its text and entities are the full text's.
NOTE_SQL = either_spelling("note_tweet")
# The full text: the note's when X sent one, else `text` (a post that was never cut).
FULL_TEXT_SQL = f"coalesce({NOTE_SQL}.text, data.text)"
# Entities of the full text: hashtags, mentions and URLs past the cut are only in the note.
ENTITIES_SQL = f"coalesce({NOTE_SQL}.entities, data.entities)"
# Host of each entities.urls[].expanded_url (the t.co url when X sent no expansion), lower
# case, without a leading "www.".
DOMAINS_SQL = (
    f"list_filter(list_transform({ENTITIES_SQL}.urls, lambda u: regexp_replace(lower("
    r"""
    regexp_extract(coalesce(u.expanded_url, u.url), '^[A-Za-z][A-Za-z0-9+.-]*://([^/:?#]+)', 1)),
    '^www\.', '')), lambda d: d IS NOT NULL AND d <> '')"""
)

# A post without created_at (X sends it only when tweet.fields asks for it) is dated by its id:
# X's ids are snowflakes, milliseconds since X's epoch in the bits above the lowest 22
# (https://docs.x.com/resources/fundamentals/x-ids).
SNOWFLAKE_EPOCH_MS = 1_288_834_974_657
CREATED_AT_SQL = (
    "coalesce(data.created_at, "
    f"epoch_ms((try_cast(data.id AS BIGINT) >> 22) + {SNOWFLAKE_EPOCH_MS})::TIMESTAMPTZ)"
)

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class Period:
    """A half-open UTC interval [start, end)."""

    start: datetime
    end: datetime

    @classmethod
    def last(cls, length: timedelta, now: datetime | None = None) -> Period:
        end = now or datetime.now(UTC)
        return cls(end - length, end)

    def hours(self) -> list[datetime]:
        """Every hour partition that may hold posts of this period, oldest first."""
        hour = (self.start - PARTITION_MARGIN).replace(minute=0, second=0, microsecond=0)
        hours = []
        while hour < self.end:
            hours.append(hour)
            hour += timedelta(hours=1)
        return hours


def parse_duration(text: str) -> timedelta:
    """'90m', '24h', '7d' -> timedelta; ValueError with the expected form otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (expected a number and s, m, h or d, e.g. 24h)")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; naive values are UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-28T08:00Z)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "twittersnake"


def partition_prefix(prefix: str, hour: datetime) -> str:
    return f"{prefix_path(prefix)}dt={hour:%Y-%m-%d}/hour={hour:%H}/"


@dataclass
class Skipped:
    file: str
    reason: str
    lines: int | None = None  # None: the whole file was skipped


@dataclass
class CacheSync:
    paths: list[Path] = field(default_factory=list)
    downloaded: int = 0
    cached: int = 0
    bytes_downloaded: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # objects refused or unreadable


class UnsafeKey(ValueError):
    """An object key that is not the collector's, or whose cache path leaves the cache."""


def cache_path(
    cache_dir: Path,
    bucket: str,
    prefix: str,
    key: str,
    key_problem: Callable[[str, str], str | None] = object_key_problem,
) -> Path:
    """`{cache_dir}/{bucket}/{key}`, absolute, for a key in the collector's layout.

    Raises UnsafeKey (the reason, for the skipped list) for a key outside the layout
    (key_problem(prefix, key), by default layout.object_key_problem: `..`, glob characters,
    absolute forms...) or whose resolved path is not under the cache root (a symlink planted
    in the cache).
    """
    problem = key_problem(prefix, key)
    if problem:
        raise UnsafeKey(f"refused key: {problem}")
    root = (cache_dir / bucket).resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root):
        raise UnsafeKey(f"refused key: its cache path {path} is outside the cache {root}")
    return path


# S3 answers GetObject for these storage classes with InvalidObjectState until a restore.
ARCHIVED_STORAGE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def unreadable_reason(error) -> str:
    """One line for an S3 refusal of one object (botocore ClientError)."""
    answer = error.response.get("Error", {})
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = answer.get("Code") or str(status)
    reason = f"unreadable object: {code}: {answer.get('Message') or error}"
    if code == "InvalidObjectState":
        reason += " (an archived storage class: restore the object, then run again)"
    elif code in ("400", "InvalidRequest", "BadRequest"):
        reason += " (encrypted with a customer-provided key, SSE-C, which the collector never uses)"
    return reason


def list_objects(s3_client, bucket: str, prefix: str, period: Period) -> list[tuple[str, int]]:
    """(key, size) of every data object in the period's partitions."""
    objects = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for hour in period.hours():
        for page in paginator.paginate(Bucket=bucket, Prefix=partition_prefix(prefix, hour)):
            for item in page.get("Contents", []):
                if item["Key"].endswith(DATA_SUFFIXES):
                    objects.append((item["Key"], item["Size"]))
    return objects


def sync_cache(
    s3_client,
    bucket: str,
    prefix: str,
    period: Period | None,
    cache_dir: Path,
    progress: bool = True,
    workers: int = 4,
    objects: list[tuple[str, int]] | None = None,
    key_problem: Callable[[str, str], str | None] = object_key_problem,
) -> CacheSync:
    """Download the period's objects not yet cached (same key and size) and list them all.

    objects: (key, size) to sync instead of the period's post objects (list_objects; period
    is then not used and may be None);
    key_problem: the layout those keys must have (cache_path). A key outside that layout and
    an object S3 refuses to return (InvalidObjectState for an archived storage class, 400 for
    SSE-C, 403...) are listed in CacheSync.skipped with the reason, not in paths; any other
    failure (S3 unreachable) raises.
    """
    from botocore.exceptions import ClientError
    from tqdm import tqdm

    if objects is None:
        assert period is not None, "sync_cache needs a period or the objects"
        objects = list_objects(s3_client, bucket, prefix, period)
    sync = CacheSync()
    missing = []
    for key, size in objects:
        try:
            path = cache_path(cache_dir, bucket, prefix, key, key_problem)
        except UnsafeKey as unsafe:
            log.warning("skipping s3://%s/%s: %s", bucket, key, unsafe)
            sync.skipped.append(Skipped(f"s3://{bucket}/{key}", str(unsafe)))
            continue
        if path.is_file() and path.stat().st_size == size:
            sync.cached += 1
            sync.paths.append(path)
        else:
            missing.append((key, size, path))
    total = sum(size for _, size, _ in missing)
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="download", disable=not progress or not total
    ) as bar:

        def fetch(item: tuple[str, int, Path]) -> Skipped | None:
            key, _, path = item
            path.parent.mkdir(parents=True, exist_ok=True)
            # A partial download never looks cached: it lands under a temporary name first.
            tmp = path.with_name(f".{path.name}.part")
            try:
                s3_client.download_file(bucket, key, str(tmp), Callback=bar.update)
            except ClientError as error:
                tmp.unlink(missing_ok=True)
                return Skipped(f"s3://{bucket}/{key}", unreadable_reason(error))
            os.replace(tmp, path)
            return None

        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(fetch, missing))
    for (_, size, path), refused in zip(missing, outcomes, strict=True):
        if refused is None:
            sync.paths.append(path)
            sync.downloaded += 1
            sync.bytes_downloaded += size
        else:
            log.warning("skipping %s: %s", refused.file, refused.reason)
            sync.skipped.append(refused)
    sync.paths.sort()
    return sync


# Connection events (collector.telemetry.events) live under {prefix}/_events/dt=/hour=/.
# The state at the period's start comes from the last event before it, looked for this far back.
EVENTS_LOOKBACK = timedelta(days=1)


def event_day_prefixes(prefix: str, period: Period) -> list[str]:
    """`{prefix}/_events/dt=YYYY-MM-DD/` for each day from the lookback to the period's end."""
    from collector.spool.layout import EVENTS_FOLDER

    day = (period.start - EVENTS_LOOKBACK).date()
    prefixes = []
    while day <= period.end.date():
        prefixes.append(f"{prefix_path(prefix)}{EVENTS_FOLDER}/dt={day:%Y-%m-%d}/")
        day += timedelta(days=1)
    return prefixes


def list_event_objects(s3_client, bucket: str, prefix: str, period: Period):
    """(key, size) of every event object of the period and its lookback (one LIST a day)."""
    objects = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for day_prefix in event_day_prefixes(prefix, period):
        for page in paginator.paginate(Bucket=bucket, Prefix=day_prefix):
            for item in page.get("Contents", []):
                if item["Key"].endswith(DATA_SUFFIXES):
                    objects.append((item["Key"], item["Size"]))
    return objects


def cached_event_files(cache_dir: Path, bucket: str, prefix: str, period: Period) -> list[Path]:
    """The event objects of the period and its lookback already in the cache."""
    paths = []
    for day_prefix in event_day_prefixes(prefix, period):
        folder = cache_dir / bucket / day_prefix
        if folder.is_dir():
            paths += sorted(p for p in folder.rglob("*") if p.name.endswith(DATA_SUFFIXES))
    return _in_layout(cache_dir, bucket, prefix, paths)


def _in_layout(
    cache_dir: Path,
    bucket: str,
    prefix: str,
    paths: list[Path],
    key_problem: Callable[[str, str], str | None] = object_key_problem,
) -> list[Path]:
    """The cached files whose key is in the collector's layout (cache_path), absolute; others
    (cached by an older version that trusted keys) are left out with a warning naming them."""
    kept = []
    for path in paths:
        key = path.relative_to(cache_dir / bucket).as_posix()
        try:
            kept.append(cache_path(cache_dir, bucket, prefix, key, key_problem))
        except UnsafeKey as refused:
            log.warning("skipping cached %s: %s", path, refused)
    return kept


def cached_files(cache_dir: Path, bucket: str, prefix: str, period: Period) -> list[Path]:
    """The period's objects already in the cache (offline mode: no S3 call)."""
    paths = []
    for hour in period.hours():
        folder = cache_dir / bucket / partition_prefix(prefix, hour)
        if folder.is_dir():
            paths += sorted(p for p in folder.iterdir() if p.name.endswith(DATA_SUFFIXES))
    return _in_layout(cache_dir, bucket, prefix, paths)


def cached_post_files(cache_dir: Path) -> list[Path]:
    """Every post object in a report/export cache (`{cache_dir}/{bucket}/{prefix}/dt=YYYY-MM-DD/
    hour=HH/*.jsonl.gz`, any bucket and prefix), sorted and resolved (DuckDB's
    allowed_directories compares resolved paths), without the collector's connection events
    (`_events/`) and compliance results (`_compliance/`), which are not posts."""
    root = Path(cache_dir).resolve()
    return sorted(
        path
        for path in root.rglob("dt=*/hour=*/*")
        if path.name.endswith(DATA_SUFFIXES)
        and not {"_events", "_compliance"} & set(path.relative_to(root).parts)
    )


def connect(
    memory_limit: str = "512MB",
    threads: int | None = None,
    allowed_directories: Iterable[Path] | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that spills to disk rather than exceeding `memory_limit`, sandboxed.

    Only `allowed_directories` (default: default_cache_dir(); the report passes its cache,
    export its cache and output) can be read or written: DuckDB's `allowed_directories` with
    `enable_external_access = false`, then `lock_configuration` so no later statement lifts
    them ("Securing DuckDB", https://duckdb.org/docs/stable/operations_manual/securing_duckdb/overview).
    It spills into `.duckdb-tmp/` of the first directory. Raises duckdb.Error for a bad limit.
    """
    folders = [Path(d).resolve() for d in (allowed_directories or [default_cache_dir()])]
    con = duckdb.connect(config={"memory_limit": memory_limit})
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    # Insertion order is irrelevant to every aggregate; dropping it saves memory.
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET temp_directory = ?", [str(folders[0] / ".duckdb-tmp")])
    con.execute("SET allowed_directories = ?", [[f"{folder}/" for folder in folders]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


@dataclass
class LoadResult:
    files: int = 0
    posts: int = 0
    duplicates: int = 0  # copies of a post id left out (drop_duplicates)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def skipped_lines(self) -> int:
        return sum(s.lines or 0 for s in self.skipped)

    @property
    def skipped_files(self) -> int:
        return sum(1 for s in self.skipped if s.lines is None)


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


def _read_json(files: list[Path], columns: dict[str, str] | None = None) -> str:
    # ignore_errors turns a non-JSON line into a row of NULLs: counted below, never a post.
    return (
        f"read_json({_sql_list(str(f) for f in files)}, format='newline_delimited', "
        f"columns={columns or _JSON_COLUMNS!r}, hive_partitioning=true, hive_types={{'dt': DATE, "
        f"'hour': INTEGER}}, filename=true, ignore_errors=true, maximum_object_size=16777216)"
    )


@dataclass(frozen=True)
class Projection:
    """What to read from each stream message and the table it becomes.

    json_columns: read_json's `columns` (every other field is skipped while parsing);
    table: the table's column definitions, `id` and `file` among them; select: the SELECT
    list over read_json's output (`data`, `includes`, `matching_rules`, `dt`, `hour`,
    `filename`), in the table's column order.
    """

    json_columns: dict[str, str]
    table: str
    select: str


# The report's `posts` table (POSTS_COLUMNS).
REPORT_PROJECTION = Projection(
    _JSON_COLUMNS,
    POSTS_COLUMNS,
    f"""data.id, {CREATED_AT_SQL}, data.lang, data.author_id, {AUTHOR_USERNAME_SQL},
        {POST_TYPE_SQL},
        list_transform({ENTITIES_SQL}.hashtags, lambda h: lower(h.tag)),
        list_transform({ENTITIES_SQL}.mentions, lambda m: m.username),
        {DOMAINS_SQL},
        list_transform(matching_rules, lambda r: coalesce(r.tag, r.id)),
        dt, hour, filename""",
)


def _insert(
    con: duckdb.DuckDBPyConnection, files: list[Path], period: Period, projection: Projection
) -> None:
    con.execute(
        f"""
        INSERT INTO raw_lines
        SELECT {projection.select}
        FROM {_read_json(files, projection.json_columns)}
        WHERE data.id IS NULL OR ({CREATED_AT_SQL} >= ? AND {CREATED_AT_SQL} < ?)
        """,
        [period.start, period.end],
    )


def _without_lone_surrogates(value: object) -> object:
    """`value` with every lone UTF-16 surrogate in its strings replaced by U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {key: _without_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def _repair_surrogates(path: Path) -> Path | None:
    """The data lines of `path` that hold a lone UTF-16 surrogate escape, with U+FFFD in its
    place, in a file beside it (`.NAME.repaired`, inside the folders DuckDB may read, never
    listed as an object); None when there are none.

    JSON allows `"\\ud83d"` without its pair (RFC 8259, section 8.2) and X sends it in post
    text; DuckDB refuses the line ("no low surrogate in string"). The standard library reads
    it, so the post is kept with a replacement character, as a lenient UTF-16 decoder does.
    """
    import json

    from collector.sink.codecs import codec_of

    repaired = []
    reader = codec_of(path.name).reader
    # a codec's reader is a readable binary stream; typeshed wants a RawIOBase
    with open(path, "rb") as raw, io.BufferedReader(reader(raw)) as lines:  # type: ignore[type-var]
        for line in lines:
            if b"\\u" not in line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "data" in message and _has_lone_surrogate(message):
                repaired.append(json.dumps(_without_lone_surrogates(message)).encode())
    if not repaired:
        return None
    target = path.with_name(f".{path.name}.repaired")
    target.write_bytes(b"\n".join(repaired) + b"\n")
    return target


# What a bad file raises: truncated or corrupt compression, unreadable JSON, and whatever else
# an object's content or path makes DuckDB raise (a binder error, a permission error): data
# from the bucket never ends the run, the object is skipped and named.
_FILE_ERRORS = (duckdb.Error,) if duckdb is not None else ()


def load_posts(
    con: duckdb.DuckDBPyConnection,
    files: list[Path],
    period: Period,
    projection: Projection = REPORT_PROJECTION,
) -> LoadResult:
    """Create table `posts` (POSTS_COLUMNS) from `files`; report, never raise on, bad files.

    Posts whose created_at is outside the period are left out; a line that is not one JSON
    data message and an object that cannot be read (truncated gzip, any DuckDB error on it)
    are counted in LoadResult.skipped and logged, the rest still loads.
    """
    con.execute(f"CREATE OR REPLACE TABLE raw_lines ({projection.table})")
    result = LoadResult(files=len(files))
    if files:
        try:
            _insert(con, files, period, projection)
        except _FILE_ERRORS:
            # A corrupt file (truncated gzip...) fails the whole scan: find it file by file.
            con.execute("DELETE FROM raw_lines")
            for path in files:
                try:
                    _insert(con, [path], period, projection)
                except _FILE_ERRORS as error:
                    reason = str(error).splitlines()[0]
                    log.warning("skipping %s: %s", path, reason)
                    result.skipped.append(Skipped(str(path), reason))
    _load_repaired(con, period, projection)
    bad_lines = con.execute(
        "SELECT file, count(*) FROM raw_lines WHERE id IS NULL GROUP BY file ORDER BY file"
    ).fetchall()
    for file, lines in bad_lines:
        log.warning("skipping %d malformed line(s) in %s", lines, file)
        result.skipped.append(Skipped(file, "malformed line(s): not one JSON data message", lines))
    con.execute("DELETE FROM raw_lines WHERE id IS NULL")
    con.execute("DROP TABLE IF EXISTS posts")
    con.execute("ALTER TABLE raw_lines RENAME TO posts")
    result.posts = con.execute("SELECT count(*) FROM posts").fetchall()[0][0]
    return result


# A row read from an object of posts fetched again by gap repair (collector.source.repair):
# `{collector_id}-repair-{YYYYMMDDTHHMMSSZ}-{seq}.jsonl...` (spool.layout.repair_file_name).
REPAIRED_SQL = r"regexp_matches(file, '-repair-[0-9]{8}T[0-9]{6}Z-[0-9]+\.jsonl[^/]*$')"


def drop_duplicates(con: duckdb.DuckDBPyConnection) -> int:
    """Keep one row per post id in `posts`; returns the rows dropped.

    The streamed copy is kept before one fetched again by gap repair, then the copy in the first
    object by name. At-least-once delivery and the repair's margins put a post in two objects;
    most periods have none, and then the table is left as it is (a window over every column
    costs as much as the export).
    """
    duplicates = con.execute("SELECT count(*) - count(DISTINCT id) FROM posts").fetchall()[0][0]
    if duplicates:
        con.execute(
            "CREATE OR REPLACE TABLE posts AS SELECT * FROM posts QUALIFY row_number() "
            f"OVER (PARTITION BY id ORDER BY {REPAIRED_SQL}, file) = 1"
        )
    return duplicates


def _load_repaired(con: duckdb.DuckDBPyConnection, period: Period, projection: Projection) -> None:
    """Load the posts DuckDB could not read only for a lone surrogate (_repair_surrogates),
    under their own file's name, and count one bad line less for each."""
    failed = con.execute(
        "SELECT file, count(*) FROM raw_lines WHERE id IS NULL GROUP BY file"
    ).fetchall()
    for file, bad in failed:
        try:
            repaired = _repair_surrogates(Path(file))
        except (OSError, EOFError, ValueError) as error:
            log.debug("cannot look for lone surrogates in %s: %s", file, error)
            continue
        if repaired is None:
            continue
        try:
            _insert(con, [repaired], period, projection)
            # every repaired line is one of the file's bad lines, inside the period or not
            lines = repaired.read_bytes().count(b"\n")
        finally:
            repaired.unlink(missing_ok=True)
        con.execute("UPDATE raw_lines SET file = ? WHERE file = ?", [file, str(repaired)])
        con.execute(
            "DELETE FROM raw_lines WHERE rowid IN (SELECT rowid FROM raw_lines "
            "WHERE id IS NULL AND file = ? LIMIT ?)",
            [file, min(lines, bad)],
        )
        log.info("read %d post(s) with a lone UTF-16 surrogate (U+FFFD) in %s", lines, file)


SQL_DIR = Path(__file__).resolve().parent / "sql"
EXAMPLE_QUERIES = ("posts_per_hour", "top_hashtags", "posts_per_rule")


# read_json's columns for the Athena-shaped view: the columns of sql/athena_table.sql.
_ATHENA_JSON_COLUMNS = {
    **_JSON_COLUMNS,
    "data": "STRUCT(id VARCHAR, created_at TIMESTAMPTZ, lang VARCHAR, author_id VARCHAR, "
    f"text VARCHAR, entities {ENTITIES_TYPE}, "
    f"{both_spellings('note_tweet', NOTE_TYPE)}, "
    f"{both_spellings('referenced_tweets', REFERENCES_TYPE)}, "
    f"{both_spellings('edit_history_tweet_ids', 'VARCHAR[]')}, "
    "geo STRUCT(place_id VARCHAR, coordinates STRUCT(type VARCHAR, coordinates DOUBLE[])))",
}


def _athena_entities(entities: str) -> str:
    return f"""{{'hashtags': list_transform({entities}.hashtags, lambda h: h.tag),
                 'mentions': list_transform({entities}.mentions, lambda m: m.username)}}"""


# The compliance results table's columns (sql/athena_compliance_table.sql; RESULT_FIELDS).
_COMPLIANCE_COLUMNS = (
    "id", "action", "reason", "created_at", "redacted_at", "job_id", "checked_at"
)  # fmt: skip


def athena_view(con: duckdb.DuckDBPyConnection, files: list[Path], name: str = "posts") -> None:
    """A DuckDB view shaped like the Athena table (sql/athena_table.sql), for its queries.

    Trino's UNNEST expands an array of one-field rows into a plain column; DuckDB keeps the
    struct. Lists of the field itself give DuckDB the same result for the same query text.
    """
    if not files:
        raise ValueError("no objects to query")
    notes = ", ".join(
        f"""'{spelling}': {{'text': data.{spelling}.text,
                           'entities': {_athena_entities(f"data.{spelling}.entities")}}}"""
        for spelling in ("note_tweet", RENAMED_FIELDS["note_tweet"])
    )
    renamed = ", ".join(
        f"'{spelling}': data.{spelling}"
        for old in ("referenced_tweets", "edit_history_tweet_ids")
        for spelling in (old, RENAMED_FIELDS[old])
    )
    con.execute(
        f"""
        CREATE OR REPLACE VIEW {name} AS
        SELECT {{'id': data.id, 'created_at': strftime(data.created_at, '%Y-%m-%dT%H:%M:%S.%gZ'),
                 'lang': data.lang, 'author_id': data.author_id, 'text': data.text,
                 'entities': {_athena_entities("data.entities")}, {notes}, {renamed},
                 'geo': data.geo
               }} AS data,
               list_transform(matching_rules, lambda r: r.tag) AS matching_rules,
               strftime(dt, '%Y-%m-%d') AS dt, lpad(hour::VARCHAR, 2, '0') AS hour
        FROM {_read_json(files, _ATHENA_JSON_COLUMNS)}
        WHERE data.id IS NOT NULL
        """
    )


def athena_compliance_view(
    con: duckdb.DuckDBPyConnection, files: list[Path], name: str = "posts_compliance"
) -> None:
    """A DuckDB view shaped like the Athena compliance results table
    (sql/athena_compliance_table.sql) over result files in the cache
    (`{prefix}/_compliance/dt=YYYY-MM-DD/{job_id}.jsonl`); empty without files."""
    columns = ", ".join(f"{column} VARCHAR" for column in _COMPLIANCE_COLUMNS)
    if not files:
        con.execute(f"CREATE OR REPLACE TABLE {name} ({columns}, dt VARCHAR)")
        return
    read = {column: "VARCHAR" for column in _COMPLIANCE_COLUMNS}
    con.execute(
        f"""
        CREATE OR REPLACE VIEW {name} AS
        SELECT {", ".join(_COMPLIANCE_COLUMNS)}, strftime(dt, '%Y-%m-%d') AS dt
        FROM read_json({_sql_list(str(f) for f in files)}, format='newline_delimited',
                       columns={read!r}, hive_partitioning=true, hive_types={{'dt': DATE}})
        """
    )


_ONE_FIELD_ROW = re.compile(r"ROW\(\w+ ([^,()]+(?:\[\])*)\)", re.IGNORECASE)


def duckdb_types(sql: str) -> str:
    """Trino's ARRAY(T) as DuckDB's T[], innermost first; an array of one-field rows as a list
    of the field, as athena_view reads those (Trino's UNNEST expands them to the field)."""
    while (start := sql.upper().rfind("ARRAY(")) >= 0:
        depth, end = 0, start + len("ARRAY")
        for end in range(start + len("ARRAY"), len(sql)):
            depth += {"(": 1, ")": -1}.get(sql[end], 0)
            if depth == 0:
                break
        inner = sql[start + len("ARRAY(") : end]
        one_field = _ONE_FIELD_ROW.fullmatch(inner)
        sql = f"{sql[:start]}{one_field[1] if one_field else inner}[]{sql[end + 1 :]}"
    return sql


def compliant_view(con: duckdb.DuckDBPyConnection) -> None:
    """The view `posts_compliant` (sql/posts_compliant.sql) over `posts` (athena_view) and
    `posts_compliance` (athena_compliance_view): the same statement Athena runs, with
    Trino's array types written as DuckDB's (duckdb_types)."""
    con.execute(duckdb_types((SQL_DIR / "posts_compliant.sql").read_text()))


def example_query(name: str) -> str:
    return (SQL_DIR / f"{name}.sql").read_text()
