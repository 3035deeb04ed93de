"""The spool's folders and the object keys derived from file names.

A file moves between folders by atomic rename, Maildir style, so a crash at any
instant leaves every record in exactly one well-defined place:

    open/        the one file being written (at most one)
    sealed/      complete, fsynced, waiting for compression
    ready/       compressed, fsynced, waiting for upload; deleted once S3 confirmed it
    quarantine/  lines that are not one complete JSON object, kept for inspection

A data file is named `{collector_id}-{YYYYMMDDTHHMMSSZ}-{seq:06d}.jsonl` in open/ and
sealed/; in ready/ the codec's extension replaces `.jsonl` (collector.codecs: `.jsonl.gz`,
`.jsonl.zst`, or `.jsonl` unchanged for "none"). The name alone determines the object key.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.codecs import DATA_SUFFIXES, EXTENSIONS  # noqa: F401  (EXTENSIONS: by name)

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
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def status_file(self) -> Path:
        return self.root / "status.json"

    def create(self) -> None:
        for folder in (self.open, self.sealed, self.ready, self.quarantine):
            folder.mkdir(parents=True, exist_ok=True)


def data_file_name(collector_id: str, first_record_at: datetime, seq: int) -> str:
    stamp = first_record_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{collector_id}-{stamp}-{seq:06d}.jsonl"


def parse_name(name: str) -> tuple[str, datetime, int]:
    """Return (collector_id, first record time, seq) of a spool file name."""
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"not a spool data file name: {name!r}")
    stamp = datetime.strptime(match["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return match["cid"], stamp, int(match["seq"])


def object_key(prefix: str, ready_name: str) -> str:
    """`{prefix}/dt=YYYY-MM-DD/hour=HH/{name}`: Hive partitions from the name's timestamp."""
    _, stamp, _ = parse_name(ready_name)
    partition = f"dt={stamp:%Y-%m-%d}/hour={stamp:%H}/{ready_name}"
    prefix = prefix.strip("/")
    return f"{prefix}/{partition}" if prefix else partition


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
