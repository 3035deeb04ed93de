"""The spool's folders and the object keys derived from file names.

A file moves between folders by atomic rename, Maildir style, so a crash at any
instant leaves every record in exactly one well-defined place:

    open/        the one file being written (at most one)
    sealed/      complete, fsynced, waiting for compression
    ready/       compressed, fsynced, waiting for upload; deleted once S3 confirmed it
    quarantine/  lines that are not one complete JSON object, kept for inspection

A data file is named `{collector_id}-{YYYYMMDDTHHMMSSZ}-{seq:06d}.jsonl` in open/ and
sealed/; in ready/ the codec's extension replaces `.jsonl` (collector.sink.codecs: `.jsonl.gz`,
`.jsonl.zst`, or `.jsonl` unchanged for "none"). The name alone determines the object key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.sink.codecs import DATA_SUFFIXES, EXTENSIONS  # noqa: F401  (EXTENSIONS: by name)

# The key prefix when none is configured; every role's default agrees
# (tests/provision/test_prefix.py).
DEFAULT_PREFIX = "raw"
# AWS's "safe characters" for object key names, minus "*" (an IAM wildcard in the policy's
# resource): https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9!_.'()-]+$")
PREFIX_MAX_LENGTH = 512  # keys are at most 1024 bytes; the partition and file name need the rest
_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")

_NAME = re.compile(
    r"^(?P<cid>.+)-(?P<ts>\d{8}T\d{6}Z)-(?P<seq>\d{6,})(?:"
    + "|".join(re.escape(ext) for ext in DATA_SUFFIXES)
    + ")$"
)


@dataclass(frozen=True)
class SpoolDirs:
    root: Path

    @property
    def open(self) -> Path:
        return self.root / "open"

    @property
    def sealed(self) -> Path:
        return self.root / "sealed"

    @property
    def ready(self) -> Path:
        return self.root / "ready"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def ledger(self) -> Path:
        """The billing ledger's day files (collector.telemetry.ledger)."""
        return self.root / "ledger"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    @property
    def lock_file(self) -> Path:
        """Held (flock) by the one `collector run` that owns this spool; holds its PID."""
        return self.root / ".lock"

    @property
    def reserve_file(self) -> Path:
        """Space set aside at start for what memory holds when the disk fills (spool.reserve)."""
        return self.root / ".reserve"

    def create(self) -> None:
        for folder in (self.open, self.sealed, self.ready, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)


def data_file_name(collector_id: str, first_record_at: datetime, seq: int) -> str:
    stamp = first_record_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{collector_id}-{stamp}-{seq:06d}.jsonl"


# Posts fetched again by gap repair (collector.source.repair) are sealed into files of their
# own, `{collector_id}-repair-{YYYYMMDDTHHMMSSZ}-{seq:06d}.jsonl`, timed by their first post, so
# a user tells them apart by name and they land in the partition of their posts.
REPAIR_LABEL = "repair"


def repair_file_name(collector_id: str, first_record_at: datetime, seq: int) -> str:
    return data_file_name(f"{collector_id}-{REPAIR_LABEL}", first_record_at, seq)


def is_repair_name(name: str) -> bool:
    """True for a repaired-posts file or object name (a key's last part)."""
    return f"-{REPAIR_LABEL}-" in name.rsplit("/", 1)[-1]


def parse_name(name: str) -> tuple[str, datetime, int]:
    """Return (collector_id, first record time, seq) of a spool file name."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"not a spool data file name: {name!r}")
    stamp = datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return match["cid"], stamp, int(match["seq"])


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot be a key prefix (what is expected, in words), or None if it can.

    Slashes at either end are allowed (normalize_prefix removes them); inside, each
    "/"-separated segment must be non-empty and made of AWS's safe key characters.
    """
    if not isinstance(prefix, str):
        return f"must be a string, got {type(prefix).__name__}"
    core = prefix.strip("/")
    if len(core) > PREFIX_MAX_LENGTH:
        return f"must be at most {PREFIX_MAX_LENGTH} characters, got {len(core)}"
    if not core:
        return None
    for segment in core.split("/"):
        if not segment:
            return f"must not contain an empty segment ('//'), got {prefix!r}"
        if segment in (".", ".."):
            return f"must not contain a '.' or '..' segment, got {prefix!r}"
        if not _PREFIX_SEGMENT.match(segment):
            return (
                "may hold only letters, digits, '/', '!', '-', '_', '.', \"'\", '(' and ')' "
                f"(AWS's safe key characters, no '*'), got {prefix!r}"
            )
    return None


def normalize_prefix(prefix: str) -> str:
    """The one spelling of a key prefix: no slash at either end ("" = the bucket's root).

    Every place the prefix appears uses it: object keys (object_key), the report's listing
    (loader.partition_prefix), and through the Ansible filter `twittersnake_s3_prefix` the IAM
    policy, the Athena table location and preflight. "tweets/", "/tweets" and "tweets" are all
    "tweets". Raises ValueError (the reason from prefix_problem) for a prefix S3 keys cannot use.
    """
    problem = prefix_problem(prefix)
    if problem:
        raise ValueError(problem)
    return prefix.strip("/")


def prefix_path(prefix: str) -> str:
    """`{prefix}/` for use before a key's remainder; "" for the bucket's root."""
    prefix = normalize_prefix(prefix)
    return f"{prefix}/" if prefix else ""


def bucket_name_problem(name: str) -> str | None:
    """Why `name` is not a valid S3 general purpose bucket name, or None if it is.

    The rules of https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html:
    3-63 characters; lowercase letters, digits, '.' and '-'; begins and ends with a letter or
    digit; no '..'; not an IP address; no reserved prefix (xn--, sthree-, amzn-s3-demo-) or
    suffix (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3).
    """
    if not isinstance(name, str) or not name:
        return "is required (a bucket name such as my-team-tweets)"
    if "://" in name or name.startswith("arn:"):
        return f"must be a bare bucket name, without a scheme, ARN or path, got {name!r}"
    if not 3 <= len(name) <= 63:
        return f"must be 3-63 characters long, got {len(name)} ({name!r})"
    if not _BUCKET_CHARS.match(name):
        return (
            "may hold only lowercase letters, digits, '.' and '-', and must begin and end "
            f"with a letter or digit, got {name!r}"
        )
    if ".." in name:
        return f"must not contain two adjacent periods, got {name!r}"
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        return f"must not be formatted as an IP address, got {name!r}"
    for reserved in _BUCKET_RESERVED_PREFIXES:
        if name.startswith(reserved):
            return f"must not start with the reserved prefix {reserved!r}, got {name!r}"
    for reserved in _BUCKET_RESERVED_SUFFIXES:
        if name.endswith(reserved):
            return f"must not end with the reserved suffix {reserved!r}, got {name!r}"
    return None


# Connection events (collector.telemetry.events) ship through the same spool as one small file each,
# named `{collector_id}-{YYYYMMDDTHHMMSSZ}-{microseconds}.event.jsonl`, and land under
# `{prefix}/_events/` in the same dt=/hour= layout: Athena and Hive skip `_` folders.
EVENTS_FOLDER = "_events"
_EVENT_NAME = re.compile(
    r"^(?P<cid>.+)-(?P<ts>\d{8}T\d{6}Z)-(?P<n>\d+)\.event(?:"
    + "|".join(re.escape(ext) for ext in DATA_SUFFIXES)
    + ")$"
)


def event_file_name(collector_id: str, at: datetime, number: int) -> str:
    stamp = at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{collector_id}-{stamp}-{number}.event.jsonl"


def object_key(prefix: str, ready_name: str) -> str:
    """`{prefix}/dt=YYYY-MM-DD/hour=HH/{name}`: Hive partitions from the name's timestamp.

    An event file's key is `{prefix}/_events/dt=YYYY-MM-DD/hour=HH/{name}`.
    """
    event = _EVENT_NAME.match(ready_name)
    if event:
        stamp = datetime.strptime(event["ts"], "%Y%m%dT%H%M%SZ")
        folder = f"{EVENTS_FOLDER}/"
    else:
        _, stamp, _ = parse_name(ready_name)
        folder = ""
    return f"{prefix_path(prefix)}{folder}dt={stamp:%Y-%m-%d}/hour={stamp:%H}/{ready_name}"


# A collector writes only names made of these (config: collector_id, the stamp, the codec's
# extension); anything else in a key (a glob character, a slash, a backslash) is not ours.
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def object_key_problem(prefix: str, key: str) -> str | None:
    """Why `key` is not a key a collector writes under `prefix`, or None when it is one.

    A key from a bucket listing is data: it is accepted only when it is exactly
    object_key(prefix, its file name), so `..`, glob characters (`*`, `?`, `[`, `{`), absolute
    forms and keys outside the `dt=`/`hour=` layout are refused before they name a local path.
    """
    if not isinstance(key, str) or not key:
        return "is empty"
    name = key.rsplit("/", 1)[-1]
    if not _SAFE_FILE_NAME.match(name):
        return (
            "file name may hold only letters, digits, '.', '_' and '-' (a collector's "
            f"{{collector_id}}-{{YYYYMMDDTHHMMSSZ}}-{{seq}} name), got {name!r}"
        )
    try:
        expected = object_key(prefix, name)
    except ValueError:
        return f"{name!r} is not a collector data or event file name"
    if key != expected:
        return f"not in the collector's key layout (expected {expected!r})"
    return None


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_rename(
    source: Path, target: Path, fd: int | None = None, sync_data: bool = True
) -> None:
    """Move `source` to `target` (same file system) so that a crash at any instant leaves the
    complete file under one of the two names, the Maildir way: fsync the file's data, rename
    atomically (a `target` already there is replaced), fsync the target's folder, then the
    source's when it is another one.

    fd: an open descriptor of `source` to fsync (closed here, also on error); None opens one.
    sync_data: False when the caller has fsynced the data already (a sealed file, a file it
    just wrote and fsynced). Raises OSError as the system calls do.
    """
    if sync_data:
        if fd is None:
            fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    durable_rename(tmp, path, sync_data=False)
