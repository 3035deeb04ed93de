"""What `collector report` and `collector export` share: where the posts are (Source, read from
the collector's own config), which period (--since, --from/--to), the local object cache and the
DuckDB connection, the compliance option, and the lines both print about what they read and
skipped."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.analysis import loader
from collector.analysis.loader import LoadResult, Period
from collector.source.pricing import USD_PER_POST

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
    usd_per_post: float = USD_PER_POST  # [budget] usd_per_post: X's list price unless configured
    collector_id: str | None = None  # its own repairs are the ones the gaps table counts
    credentials_file: str = ""  # [s3] credentials_file: the collector's key, as `check` uses


def read_source(config_path: Path) -> Source:
    """The bucket, prefix and endpoint of a collector config (the same TOML `run` reads).

    ValueError naming the file and key when the config, or the AWS credentials file its
    s3.credentials_file names, cannot be read."""
    try:
        from collector.config import ConfigError, load_config
    except ImportError:  # the report works without the collector's own modules
        load_config = None  # type: ignore[assignment]  # None means absent
    if load_config is not None:
        try:
            cfg = load_config(config_path, streaming=False)  # rules do not matter here
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return source_of(cfg)
    try:
        doc = tomllib.loads(config_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"{config_path}: {error}") from None
    s3 = doc.get("s3", {})
    if not s3.get("bucket"):
        raise ValueError(f"{config_path}: [s3] bucket is required")
    spool = doc.get("spool", {}).get("dir")
    source = Source(
        s3["bucket"],
        s3.get("prefix", ""),
        s3.get("region", "us-east-1"),
        s3.get("endpoint_url", ""),
        Path(spool) if spool else None,
        float(doc.get("budget", {}).get("usd_per_post", USD_PER_POST)),
        doc.get("collector_id"),
        str(s3.get("credentials_file", "")),
    )
    _session(source)  # a credentials file that cannot be read is a config error, said now
    return source


def source_of(cfg) -> Source:
    """The Source of a loaded collector config (collector.config.Config); ValueError naming
    s3.credentials_file when that file cannot be read."""
    source = Source(
        cfg.s3.bucket,
        cfg.s3.prefix,
        cfg.s3.region,
        cfg.s3.endpoint_url or "",
        cfg.spool.dir,
        cfg.budget.usd_per_post,
        cfg.collector_id,
        cfg.s3.credentials_file,
    )
    _session(source)
    return source


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


def add_compliance_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-removed",
        action="store_true",
        help="keep posts X reported deleted, bounced, protected or suspended, and their geotags "
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


def _session(source: Source):
    """boto3's session with the key of s3.credentials_file when the config names one (the
    collector's own key, as `collector run` and `check` use it, whoever runs the command),
    else boto3's standard credential chain. ValueError naming the file when it is unreadable."""
    import boto3

    if not source.credentials_file:
        return boto3.session.Session()
    from collector.errors import Fatal
    from collector.sink.s3 import credentials_file_session

    try:
        return credentials_file_session(source.credentials_file)
    except Fatal as error:
        raise ValueError(str(error)) from None


def _s3_client(source: Source):
    # endpoint_url None lets boto3 honour AWS_ENDPOINT_URL, like the collector does.
    return _session(source).client(
        "s3", region_name=source.region or None, endpoint_url=source.endpoint_url or None
    )
