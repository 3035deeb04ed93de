"""The spool writer: raw stream lines -> open/ file -> sealed/, plus quarantine and recovery.

Every data line is appended byte for byte (plus "\\n") to the one file in open/ and handed to
the OS within 0.2 s (`tick`). A file is sealed when it reaches max_records, max_bytes or
max_seconds (the ticker fires even when no post arrives): a sealer thread fsyncs it, renames it
atomically into sealed/ and submits it to the shipper, so the reader never waits on the disk.

A full disk: lines wait in memory (at most the spool's reserve, collector.spool.guard), then the
reader waits (TCP backpressure to X); nothing received is dropped. A file at its rotation limit
takes no more lines while it cannot be sealed. Writing resumes only once
`spool.resume_free_percent` of the file system is free again (hysteresis: the first freed bytes
would be taken at once and the disk full again). At stop, the reserve is released and what
memory holds is written into its room.

The sequence number in a file name comes from state.json, which is advanced (atomically,
fsynced) before the number is used: a crash can skip a number, never reuse one.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path

import simdjson

from collector.config import Config
from collector.spool.guard import Reserve, free_percent
from collector.spool.layout import (
    SpoolDirs,
    atomic_write,
    data_file_name,
    durable_rename,
    parse_name,
)
from collector.telemetry.health import DEGRADED, Health
from collector.telemetry.ledger import BillingLedger
from collector.telemetry.lograte import RepeatedWarnings
from collector.telemetry.metrics import (
    BYTES_RECEIVED,
    DROPPED_AFTER_CLOSE,
    ERROR_MESSAGES,
    FILES_SEALED,
    LAST_ERROR,
    LAST_POST_AT,
    LAST_STREAM_ERROR,
    POSTS_RECEIVED,
    QUARANTINED_LINES,
    RECORDS_SEALED,
    SPOOL_WRITE_ERRORS,
    Metrics,
)
from collector.telemetry.status import spool_gauges

log = logging.getLogger(__name__)
_repeated = RepeatedWarnings(log)

FLUSH_BYTES = 256 * 1024  # hand the buffer to the OS at this size, or on the next tick
TICK_SECONDS = 0.2
# Disk full (or any write error): lines wait in memory up to this size, then the reader waits
# (TCP backpressure to X) until the disk takes them; nothing already received is dropped.
MAX_UNWRITTEN_BYTES = 32 * 1024 * 1024
DISK_RETRY_SECONDS = 1.0
DISK_LOG_EVERY_SECONDS = 30.0
DISK_FAILING_AFTER = 60.0  # s: a spool disk refusing writes this long is failing
DATA, ERRORS, BAD = "data", "errors", "bad"
DATA_START = b'{"data":'


class LineBatch(list):
    """The complete lines of one network read (bytes, CRLF removed, none empty), in order.

    The server terminated each one, so none is cut short; each is still parsed in full (one
    JSON data message) before it is kept, and a batch with anything else is taken line by line.
    """


_parsers = threading.local()


def _valid_json(line: bytes) -> bool:
    """True when `line` is one complete JSON text in UTF-8 (simdjson: RFC 8259 and UTF-8 in
    full, a few CPU seconds per million posts), refusing lone UTF-16 surrogate escapes too."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        document = parser.parse(line)
    except ValueError:  # UnicodeDecodeError included
        return False
    del document  # the parser holds one document at a time
    return True


def _all_data(lines: LineBatch) -> bool:
    """True when every line is one JSON object that starts as a data message (classify's fast
    path, for a batch): each is parsed in full, so a line cut where its braces happen to
    balance is not mistaken for data."""
    if not all(map(bytes.startswith, lines, repeat(DATA_START))):
        return False
    return all(map(_valid_json, lines))  # else classify decides, line by line


def _parsed_id(parser, line: bytes) -> int | str | None:
    """The post id (data.id) of a line simdjson parses in full, None when it has none (as
    text when it is not decimal: the ledger counts it as uncountable); ValueError when the
    line is not one JSON text in UTF-8 (as _valid_json)."""
    document = parser.parse(line)
    try:
        value = document.at_pointer("/data/id")
    except (KeyError, TypeError, IndexError, ValueError):
        value = None
    value = value if type(value) is str else None  # nothing left referencing the parser
    del document  # the parser holds one document at a time
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _data_ids(lines: LineBatch) -> list[int | str] | None:
    """`_all_data` that also returns each line's post id (for the billing ledger), read from
    the same full parse: None when a line is not a data message (classify decides then)."""
    if not all(map(bytes.startswith, lines, repeat(DATA_START))):
        return None
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    ids = []
    for line in lines:
        try:
            post_id = _parsed_id(parser, line)
        except ValueError:  # UnicodeDecodeError included
            return None
        if post_id is not None:
            ids.append(post_id)
    return ids


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(line: bytes) -> tuple[object, str]:
    """(message, "") for one complete JSON text in UTF-8, else (None, the reason to quarantine).

    The standard library parses (this is the path of the unusual lines); it also accepts the
    one thing JSON allows and simdjson does not: a lone UTF-16 surrogate escape (`"\\ud83d"`
    without its pair, seen in X's post text), decoded leniently by the analysis
    (collector.analysis.loader). NaN and Infinity stay refused (not JSON).
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not-utf8"
    try:
        return json.loads(text, parse_constant=_reject_constant), ""
    except (ValueError, RecursionError):
        return None, "not-json"


def classify(line: bytes) -> tuple[str, str]:
    """(DATA | ERRORS | BAD, reason) for one stream line, parsed in full (`_parse`).

    DATA: a JSON object with `data` (partial expansion errors beside it are normal); ERRORS: an
    object with `errors` only (X's stream error messages); BAD: anything else, with the reason
    (not-utf8, not-json, not-object, no-data) that names its quarantine file.
    """
    if line.startswith(DATA_START) and _valid_json(line):
        return DATA, ""  # the common case, without building the message
    message, reason = _parse(line)
    if reason:
        return BAD, reason
    if not isinstance(message, dict):
        return BAD, "not-object"
    if "data" in message:
        return DATA, ""
    if "errors" in message:
        return ERRORS, ""
    return BAD, "no-data"


class Quarantine:
    """Lines that are not one complete JSON data object, kept in quarantine/ for inspection."""

    def __init__(self, dirs: SpoolDirs, metrics: Metrics) -> None:
        self.dirs = dirs
        self.metrics = metrics
        self._lock = threading.Lock()
        self.count = 0

    def keep(self, line: bytes, reason: str) -> None:
        stamp = datetime.now(UTC)
        path = self.dirs.quarantine / f"{stamp:%Y%m%d}-{reason}.lines"
        with self._lock:
            self.count += 1
            count = self.count
            with open(path, "ab") as handle:
                handle.write(line + b"\n")
        self.metrics.set(QUARANTINED_LINES, count)
        if count <= 10 or count % 1000 == 0:
            log.warning(
                "quarantined a %s line (%d bytes) in %s (%d so far)", reason, len(line), path, count
            )


class SeqState:
    """The next file sequence number, persisted in state.json before it is used.

    Shared by the spool writer and gap repair (thread-safe)."""

    def __init__(self, dirs: SpoolDirs) -> None:
        self._lock = threading.Lock()
        self.path = dirs.state_file
        state = {}
        if self.path.exists():
            try:
                state = json.loads(self.path.read_text())
            except ValueError:
                log.error("state file %s is unreadable; deriving seq from the spool", self.path)
        seen = [
            _seq_of(p) for folder in (dirs.open, dirs.sealed, dirs.ready) for p in _files(folder)
        ]
        self.next_seq = max([int(state.get("next_seq", 1)), *[s + 1 for s in seen if s]])

    def reserve(self) -> int:
        with self._lock:
            seq = self.next_seq
            self.next_seq += 1
            atomic_write(self.path, json.dumps({"next_seq": self.next_seq}).encode() + b"\n")
            return seq


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def _seq_of(path: Path) -> int | None:
    try:
        return parse_name(path.name)[2]
    except ValueError:
        return None


@dataclass
class _OpenFile:
    path: Path
    fd: int
    opened_at: float  # monotonic
    records: int = 0
    size: int = 0


class SpoolWriter:
    """Appends data lines to open/, rotates, and seals files in a background thread."""

    def __init__(
        self,
        cfg: Config,
        dirs: SpoolDirs,
        metrics: Metrics,
        on_sealed: Callable[[Path], None],
        quarantine: Quarantine | None = None,
        health: Health | None = None,
        reserve: Reserve | None = None,
        ledger: BillingLedger | None = None,
    ) -> None:
        self.cfg = cfg
        self.dirs = dirs
        self.metrics = metrics
        self.on_sealed = on_sealed
        self.quarantine = quarantine or Quarantine(dirs, metrics)
        self.seq = SeqState(dirs)
        self._lock = threading.Lock()
        self._file: _OpenFile | None = None
        self._buffer = bytearray()
        self._closed = False
        self._to_seal: queue.Queue[_OpenFile | None] = queue.Queue()
        self._sealer = threading.Thread(target=self._seal_loop, name="sealer", daemon=True)
        self._sealer.start()
        # Counters kept locally (no lock per line) and published on each tick.
        self.posts = 0
        self.bytes = 0
        self.error_messages = 0
        self.last_post_at: float | None = None
        self.dropped_after_close = 0
        self._disk_error: str | None = None  # the last write error, until a write succeeds
        self.health = health  # a failing disk shows in status
        self.reserve = reserve  # released at stop when the disk is full (collector.spool.guard)
        self.resume_free_percent = getattr(cfg.spool, "resume_free_percent", 0.0)
        # counts every data line's post as X bills it (telemetry.ledger)
        self.ledger = ledger
        self._disk_logged_at = -DISK_LOG_EVERY_SECONDS

    # Called by the stream thread with one non-empty line or a LineBatch.
    def accept(self, line: bytes | LineBatch) -> None:
        if isinstance(line, LineBatch):
            ids = _data_ids(line) if self.ledger is not None else None
            if ids is not None or (self.ledger is None and _all_data(line)):
                if ids and self.ledger is not None:
                    self.ledger.add(ids)
                self._store(line)
            else:
                for one in line:
                    self.accept(one)
            return
        kind, reason = classify(line)
        if kind == BAD:
            self.quarantine.keep(line, reason)
            return
        if kind == ERRORS:
            self._stream_error(line)
            return
        if self.ledger is not None:
            self.ledger.add_lines([line])
        self._store([line])

    def _store(self, lines: list[bytes]) -> None:
        """Append data lines (each plus "\n") to the open file."""
        size = sum(map(len, lines)) + len(lines)
        while True:
            with self._lock:
                if self._closed:
                    self.dropped_after_close += len(lines)
                    return
                bound = self._memory_bound()
                if len(self._buffer) >= bound:
                    self._flush()
                if self._file is not None and self._at_limit():
                    self._rotate()  # stays open while the disk refuses: it takes no more lines
                if self._file is not None and self._at_limit():
                    split = False
                elif len(self._buffer) < bound and self._ensure_file():
                    if len(lines) == 1 or self._fits(size, len(lines)):
                        self._append(lines, size)
                        return
                    split = True
                else:
                    split = False
            if split:  # these lines end the file: one by one, so it ends where it must
                for line in lines:
                    self._store([line])
                return
            # The disk refuses: hold the stream (X sees a slow reader) rather than drop lines.
            time.sleep(DISK_RETRY_SECONDS)

    def _memory_bound(self) -> int:
        """The most bytes held in memory while the disk refuses: the reserve's size at most, so
        that at stop everything held fits into the room the released reserve leaves."""
        if self.reserve is not None and self.reserve.size:
            return min(MAX_UNWRITTEN_BYTES, self.reserve.size)
        return MAX_UNWRITTEN_BYTES

    def _at_limit(self) -> bool:
        current, rotate = self._file, self.cfg.rotate
        assert current is not None  # called with a file open
        return current.records >= rotate.max_records or current.size >= rotate.max_bytes

    def _may_write(self) -> bool:
        """After a disk error, writing resumes only once spool.resume_free_percent is free."""
        if self._disk_error is None or not self.resume_free_percent:
            return True
        free = free_percent(self.dirs)
        return free is None or free >= self.resume_free_percent

    def _fits(self, size: int, records: int) -> bool:
        """True when `records` more lines leave the open file below both rotation limits."""
        current, rotate = self._file, self.cfg.rotate
        assert current is not None  # called with a file open
        return (
            current.records + records < rotate.max_records
            and current.size + size < rotate.max_bytes
        )

    def _append(self, lines: list[bytes], size: int) -> None:
        current, buffer = self._file, self._buffer
        assert current is not None  # called with a file open
        for line in lines:
            buffer += line
            buffer += b"\n"
        current.records += len(lines)
        current.size += size
        self.posts += len(lines)
        self.bytes += size
        self.last_post_at = time.time()
        rotate = self.cfg.rotate
        if current.records >= rotate.max_records or current.size >= rotate.max_bytes:
            self._rotate()
        elif len(buffer) >= FLUSH_BYTES:
            self._flush()

    def _stream_error(self, line: bytes) -> None:
        self.error_messages += 1
        text = line.decode("utf-8", "replace")
        self.metrics.set(LAST_STREAM_ERROR, text[:500])
        # X may repeat it on every connection (an incident): the first few, then a count
        _repeated.warning(text[:500], "stream sent an error message (not data): %s", text[:500])

    def tick(self) -> None:
        """Every TICK_SECONDS: hand buffered lines to the OS; seal a file past max_seconds."""
        with self._lock:
            current = self._file
            if current is not None:
                age = time.monotonic() - current.opened_at
                if age >= self.cfg.rotate.max_seconds:
                    self._rotate()
                else:
                    self._flush()
        if self.ledger is not None:
            self.ledger.sync()
        self.publish()

    def publish(self) -> None:
        m = self.metrics
        m.set(POSTS_RECEIVED, self.posts)
        m.set(BYTES_RECEIVED, self.bytes)
        m.set(ERROR_MESSAGES, self.error_messages)
        m.set(DROPPED_AFTER_CLOSE, self.dropped_after_close)
        if self.last_post_at is not None:
            m.set(LAST_POST_AT, self.last_post_at)

    def run_ticker(self, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            while not stop.wait(TICK_SECONDS):
                try:
                    self.tick()
                except Exception:  # the timer must keep firing whatever one tick ran into
                    log.exception("spool tick failed")

        thread = threading.Thread(target=loop, name="ticker", daemon=True)
        thread.start()
        return thread

    def close(self, timeout: float = 20.0) -> None:
        """Stop accepting lines, seal the open file and wait until the sealer is done.

        With the disk full, the reserve set aside at start is released so that what memory
        holds is written into the open file (sealed, shipped by this or the next run).
        """
        deadline = time.monotonic() + timeout / 2
        with self._lock:
            self._closed = True
            self.resume_free_percent = 0.0  # stopping: every free byte is welcome
            while self._file is not None:
                self._rotate()
                if self._file is None or time.monotonic() > deadline:
                    break
                if self.reserve is not None and self.reserve.held:
                    held, freed = len(self._buffer), self.reserve.release()
                    log.warning(
                        "spool disk full at stop: released the %d-byte reserve to write the %d"
                        " bytes held in memory into %s",
                        freed,
                        held,
                        self._file.path,
                    )
                    continue
                time.sleep(DISK_RETRY_SECONDS)  # disk full: a last chance before giving up
            if self._file is not None:
                log.error(
                    "stopping with the spool disk full: %d received bytes could not be written"
                    " (the lines already in %s are kept and sealed on the next start)",
                    len(self._buffer),
                    self._file.path,
                )
                os.close(self._file.fd)
                self._file = None
        self._to_seal.put(None)
        self._sealer.join(timeout)
        self.publish()

    # Under self._lock ----------------------------------------------------------------------

    def _ensure_file(self) -> bool:
        """The open file, created on first use; False while the disk refuses a new one."""
        if self._file is not None:
            return True
        if not self._may_write():
            return False
        try:
            self._open_new()
        except OSError as exc:
            self._disk_failed(f"cannot create a spool file in {self.dirs.open}: {exc}")
            return False
        return True

    def _open_new(self) -> _OpenFile:
        seq = self.seq.reserve()  # persisted before the number is used
        name = data_file_name(self.cfg.collector_id, datetime.now(UTC), seq)
        path = self.dirs.open / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o640)
        self._file = _OpenFile(path=path, fd=fd, opened_at=time.monotonic())
        return self._file

    def _flush(self) -> bool:
        """Hand the buffer to the OS; True when it is empty. A write error keeps the rest."""
        if not self._buffer or self._file is None:
            return not self._buffer
        if not self._may_write():
            self._disk_failed(self._disk_error or "waiting for free space", count=False)
            return False
        written = 0
        try:
            with memoryview(self._buffer) as view:
                while written < len(view):
                    written += os.write(self._file.fd, view[written:])
        except OSError as exc:
            self._disk_failed(f"cannot write {self._file.path}: {exc}")
        finally:
            del self._buffer[:written]
        if not self._buffer and self._disk_error is not None:
            log.warning("spool disk writable again: %s", self.dirs.root)
            self._disk_error = None
            if self.health is not None:
                self.health.clear("spool")
        return not self._buffer

    def _disk_failed(self, message: str, count: bool = True) -> None:
        pending = spool_gauges(self.dirs)["oldest_pending_seconds"]
        line = (
            f"spool disk full or failing: {message}; {len(self._buffer)} bytes held in memory,"
            f" oldest pending {pending:.0f} s"
        )
        if self.resume_free_percent:
            line += f"; writing resumes at {self.resume_free_percent:g}% free"
        self._disk_error = message
        self.metrics.set(LAST_ERROR, line)
        if count:
            self.metrics.incr(SPOOL_WRITE_ERRORS)
        if self.health is not None:
            self.health.report("spool", DEGRADED, line, failing_after=DISK_FAILING_AFTER)
        now = time.monotonic()
        if now - self._disk_logged_at >= DISK_LOG_EVERY_SECONDS:
            self._disk_logged_at = now
            log.error("%s", line)

    def _rotate(self) -> None:
        # A file is sealed only once all its lines are on disk; otherwise retry on the next tick.
        if not self._flush():
            return
        self._to_seal.put(self._file)
        self._file = None

    # Sealer thread ---------------------------------------------------------------------------

    def _seal_loop(self) -> None:
        while True:
            item = self._to_seal.get()
            if item is None:
                return
            sealed = self._seal_with_retries(item)
            if sealed is None:  # stopping: the file stays in open/, recovered on the next start
                continue
            self.metrics.incr(FILES_SEALED)
            self.metrics.incr(RECORDS_SEALED, item.records)
            try:
                self.on_sealed(sealed)
            except Exception as exc:  # the shipper finds the file in sealed/ on its next start
                log.error("could not queue %s for upload: %s", sealed.name, exc)

    def _seal_with_retries(self, item: _OpenFile) -> Path | None:
        """Seal one file, retrying while the disk refuses (fsync, rename); None if stopping."""
        fd: int | None = item.fd
        target = self.dirs.sealed / item.path.name
        while True:
            try:
                return seal_file(item.path, self.dirs, fd=fd)
            except OSError as exc:
                fd = None  # seal_file closed it
                if not item.path.exists() and target.exists():  # renamed; only a dir fsync failed
                    return target
                log.error("cannot seal %s: %s", item.path.name, exc)
                self.metrics.set(LAST_ERROR, f"cannot seal {item.path.name}: {exc}")
                if self._closed:
                    return None
                time.sleep(DISK_RETRY_SECONDS)


def seal_file(path: Path, dirs: SpoolDirs, fd: int | None = None) -> Path:
    """fsync `path`, rename it into sealed/ atomically, make the rename durable."""
    target = dirs.sealed / path.name
    durable_rename(path, target, fd=fd)
    return target


def recover_open_files(dirs: SpoolDirs, quarantine: Quarantine) -> list[Path]:
    """Seal what a crash left in open/; a torn last line goes to quarantine. Returns sealed paths.

    Lines are appended whole, so only the tail of a file can be torn (a write cut by kill -9
    or a power loss): everything after the last "\\n" is quarantined and cut off.
    """
    sealed = []
    for path in sorted(_files(dirs.open), key=lambda p: (_seq_of(p) or 0, p.name)):
        if _seq_of(path) is None:
            target = dirs.quarantine / f"unknown-{path.name}"
            os.rename(path, target)
            log.warning("moved unexpected file %s from open/ to %s", path.name, target)
            continue
        _cut_torn_tail(path, quarantine)
        if path.stat().st_size == 0:
            path.unlink()
            continue
        sealed.append(seal_file(path, dirs))
        log.info("recovered %s from open/ into sealed/", path.name)
    return sealed


def _cut_torn_tail(path: Path, quarantine: Quarantine) -> None:
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as handle:
        block = 64 * 1024
        end = size
        while end > 0:
            start = max(0, end - block)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep == size:
            return
        handle.seek(keep)
        tail = handle.read()
        quarantine.keep(tail, "torn")
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
