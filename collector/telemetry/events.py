"""Connection events: when the collector was collecting, and why it was not.

Each event is one small JSON line in its own spool file, written into sealed/ (fsync +
rename, like a sealed data file) and submitted to the shipper, so it reaches S3 with the same
guarantees as the posts: compressed, uploaded with a checksum, retried forever, left in the
spool for the next start when the process stops first. Its object key is
`{prefix}/_events/dt=YYYY-MM-DD/hour=HH/{name}` (spool.layout.object_key), which the report
reads and Athena and Hive skip (a folder starting with `_` is hidden to them).

    {"event": "disconnected", "at": "2026-11-27T10:42:40.123Z", "collector_id": "c1",
     "cause": "stream HTTP 503"}
    {"event": "connected", ..., "cause": null, "api_version": "2.168"}

A `connected` event carries X's `api-version` response header, so a report can tell which API
version (X renames fields between versions) wrote which objects.

EVENTS names every kind. The report turns them into "not collecting" spans (from
disconnected or stop to the next connected) and "quiet" spans (connected, no posts).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from collector.spool.layout import SpoolDirs, atomic_write, event_file_name

log = logging.getLogger(__name__)

EVENTS = {
    "start": "the collector process started",
    "connected": "the stream connection is open: posts are being received",
    "disconnected": "the stream connection ended (cause says why); tweepy reconnects",
    "s3_refusing": "an upload to S3 failed (cause: S3's error code); posts wait in the spool",
    "s3_recovered": "an upload succeeded again after s3_refusing",
    "stop": "the collector process is stopping (cause says why)",
    "repair_started": "gap repair began to fetch again what a span without connection missed "
    "(detail: from, to)",
    "repair_done": "gap repair stored what it found (detail: from, to, searched, posts, posts "
    "per rule, rules not repairable)",
    "repair_failed": "gap repair could not fetch a span (cause: X's reason, the 7-day window or "
    "the budget; detail as repair_done)",
    "budget_paused": "the budget is spent: the stream is closed on purpose until the UTC day or "
    "the billing cycle renews it (cause: the figures); `connected` follows the renewal",
}
REPAIR_EVENTS = ("repair_started", "repair_done", "repair_failed")


@dataclass(frozen=True)
class Event:
    event: str  # one of EVENTS
    at: datetime  # UTC
    collector_id: str
    cause: str | None = None
    detail: dict | None = None  # repair events: the span and the counts (REPAIR_EVENTS)
    api_version: str | None = None  # X's `api-version` header (connected events)

    def to_json(self) -> bytes:
        at = self.at.astimezone(UTC)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        doc: dict[str, object] = {"event": self.event, "at": stamp}
        doc["collector_id"] = self.collector_id
        doc["cause"] = self.cause
        if self.detail is not None:
            doc["detail"] = self.detail
        if self.api_version:
            doc["api_version"] = self.api_version
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_json(cls, line: bytes | str) -> Event:
        """ValueError (KeyError, JSON errors) when the line is not an event."""
        doc = json.loads(line)
        at = datetime.fromisoformat(doc["at"].replace("Z", "+00:00")).astimezone(UTC)
        if doc["event"] not in EVENTS:
            raise ValueError(f"unknown event {doc['event']!r}")
        detail = doc.get("detail")
        detail = detail if isinstance(detail, dict) else None
        return cls(
            doc["event"],
            at,
            str(doc["collector_id"]),
            doc.get("cause"),
            detail,
            api_version=doc.get("api_version"),
        )


class EventLog:
    """Writes events into the spool; thread-safe; never raises into the caller.

    `submit(path)` hands the sealed file to the shipper (Shipper.submit). When the spool
    cannot be written (disk full), the event is kept in memory and written before the next
    one, so the order and the times stay right; the shipper's rescans find every file.
    """

    def __init__(
        self,
        dirs: SpoolDirs,
        collector_id: str,
        submit: Callable[[Path], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.dirs = dirs
        self.collector_id = collector_id
        self.submit = submit
        self.clock = clock
        self._lock = threading.Lock()
        self._unwritten: list[Event] = []
        self._last_number = 0
        self._s3_failing = False

    def record(
        self,
        event: str,
        cause: str | None = None,
        at: datetime | None = None,
        detail: dict | None = None,
        api_version: str | None = None,
    ) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}: one of {', '.join(EVENTS)}")
        at = (at or self.clock()).astimezone(UTC)
        item = Event(event, at, self.collector_id, cause, detail, api_version=api_version)
        with self._lock:
            self._unwritten.append(item)
            self._write_pending()

    def _write_pending(self) -> None:
        while self._unwritten:
            item = self._unwritten[0]
            # Microseconds since the epoch, strictly increasing: a name is never reused, so
            # an object is never overwritten (uploads are conditional).
            number = max(self._last_number + 1, time.time_ns() // 1000)
            path = self.dirs.sealed / event_file_name(self.collector_id, item.at, number)
            try:
                atomic_write(path, item.to_json())
            except OSError as exc:
                log.warning("cannot write the %s event to %s yet: %s", item.event, path, exc)
                return
            self._last_number = number
            self._unwritten.pop(0)
            if self.submit is not None:
                self.submit(path)

    def flush(self) -> int:
        """Write the events a full disk held back (after a stop freed room); returns how many
        are still unwritten."""
        with self._lock:
            self._write_pending()
            return len(self._unwritten)

    def watch_s3(self, outcome) -> None:
        """An S3Sink observer: s3_refusing at the first failed upload, s3_recovered after."""
        if outcome.result == "error":
            with self._lock:
                first, self._s3_failing = not self._s3_failing, True
            if first:
                status = f" (HTTP {outcome.http_status})" if outcome.http_status else ""
                self.record("s3_refusing", f"{outcome.error_code}{status}")
        elif outcome.result in ("created", "existed"):
            with self._lock:
                recovered, self._s3_failing = self._s3_failing, False
            if recovered:
                self.record("s3_recovered")


# An event file holds one line of a few hundred bytes; a bigger one is not ours (a
# decompression bomb under _events/ would otherwise be read whole into memory).
EVENT_FILE_MAX_BYTES = 64 * 1024


def _read_at_most(reader, limit: int) -> bytes:
    """Up to `limit` bytes (a stream reader's read(n) may return fewer before the end)."""
    chunks, size = [], 0
    while size < limit:
        chunk = reader.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_events(paths: list[Path]) -> tuple[list[Event], list[str]]:
    """Events from event objects (any codec), oldest first; and one message per bad file.

    A file that decompresses to more than EVENT_FILE_MAX_BYTES is a bad file: at most that
    many bytes (plus one) are ever decompressed from it.
    """
    from collector.sink.codecs import codec_of

    events, problems = [], []
    for path in paths:
        try:
            with open(path, "rb") as raw, codec_of(path.name).reader(raw) as reader:
                data = _read_at_most(reader, EVENT_FILE_MAX_BYTES + 1)
            if len(data) > EVENT_FILE_MAX_BYTES:
                raise ValueError(
                    f"decompresses to more than {EVENT_FILE_MAX_BYTES} bytes (one event is "
                    "a few hundred): not an event file"
                )
            lines = data.splitlines()
            events += [Event.from_json(line) for line in lines if line.strip()]
        except (OSError, ValueError, KeyError, EOFError) as exc:
            problems.append(f"{path}: {type(exc).__name__}: {exc}")
    events.sort(key=lambda e: (e.at, e.collector_id))
    return events, problems
