"""Ingest: tweepy stream from the stand-in -> spool files byte for byte, rotated, sealed, recovered.

Real tweepy against the real stand-in on loopback; the shipper is replaced by a list that records
what the spool writer hands over (its API boundary), since S3 is not what these tests are about.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.config import Config, load_config
from collector.source.stream import LineSplitter, open_stream, start_stream
from collector.spool import writer as spool
from collector.spool.layout import SpoolDirs, parse_name
from collector.spool.writer import Quarantine, SeqState, SpoolWriter, recover_open_files
from collector.telemetry.health import Health
from collector.telemetry.metrics import Metrics
from tests.collector_support import TOKEN, wait_until, wait_until_steady, write_config
from tests.fakes.x_server import PARTIAL_ERROR, FakeXServer


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, keepalive_interval=0.5, count=0).start()
    server.add_rule("python lang:en", tag="test-1:python")  # X answers 409 while no rule is live
    yield server
    server.stop()


class Ingest:
    """The reader + writer half of `collector run`, sealed files collected in a list."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.dirs = SpoolDirs(cfg.spool.dir)
        self.dirs.create()
        self.metrics = Metrics()
        self.sealed: list[Path] = []
        self.writer = SpoolWriter(cfg, self.dirs, self.metrics, self.sealed.append)
        self.stop_event = threading.Event()
        self.writer.run_ticker(self.stop_event)
        self.stream = open_stream(cfg, TOKEN, self.writer.accept, self.metrics)
        self.thread = start_stream(cfg, self.stream)

    def close(self) -> None:
        self.stream.disconnect()
        self.writer.close()
        self.stop_event.set()

    def lines(self) -> list[bytes]:
        return [line for path in self.sealed for line in path.read_bytes().split(b"\n")[:-1]]

    def ids(self) -> list[str]:
        return [json.loads(line)["data"]["id"] for line in self.lines()]


def make_ingest(tmp_path: Path, server: FakeXServer, **rotate) -> Ingest:
    cfg = load_config(write_config(tmp_path, server.url, **rotate))
    ingest = Ingest(cfg)
    wait_until(lambda: ingest.stream.connected.is_set(), 10)
    return ingest


def expected_line(server: FakeXServer, post_id: str) -> bytes:
    """The exact bytes the stand-in rendered for a post (its own template), CRLF stripped."""
    return (server.post_body(int(post_id)) + server._matching_rules).removesuffix(b"\r\n")


def test_lines_are_spooled_byte_for_byte_and_rotated_by_record_count(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    ingest = make_ingest(tmp_path, x_server, max_records=500, max_seconds=60)
    x_server.count = 1200
    wait_until(lambda: ingest.writer.posts == 1200)
    ingest.close()
    assert [len(p.read_bytes().split(b"\n")) - 1 for p in ingest.sealed] == [500, 500, 200]
    assert ingest.lines() == [expected_line(x_server, i) for i in x_server.sent_ids]
    assert all(p.read_bytes().endswith(b"}\n") for p in ingest.sealed)
    seqs = [parse_name(p.name)[2] for p in ingest.sealed]
    assert seqs == sorted(set(seqs))
    assert not list(ingest.dirs.open.iterdir())


def test_a_received_line_is_in_the_open_file_within_a_second(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    ingest = make_ingest(tmp_path, x_server, max_records=10_000, max_seconds=60)
    x_server.count = 1
    wait_until(lambda: x_server.sent_ids, 5, 0.01)
    sent_at = time.monotonic()

    def in_open_file() -> bool:
        return any(
            x_server.sent_ids[0].encode() in p.read_bytes() for p in ingest.dirs.open.iterdir()
        )

    wait_until(in_open_file, 5, 0.02)
    assert time.monotonic() - sent_at < 1.0
    assert ingest.sealed == []  # still open: written to the OS, not sealed
    ingest.close()


def test_max_seconds_seals_on_a_timer_while_no_post_arrives(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    ingest = make_ingest(tmp_path, x_server, max_records=10_000, max_seconds=0.5)
    x_server.count = 3
    wait_until(lambda: len(x_server.sent_ids) == 3)
    last_post = time.monotonic()
    wait_until(lambda: ingest.sealed, 5, 0.05)
    assert time.monotonic() - last_post < 1.5
    assert ingest.ids() == x_server.sent_ids
    ingest.close()


def test_max_bytes_rotates_before_a_file_grows_past_one_line_over(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    ingest = make_ingest(tmp_path, x_server, max_records=10_000, max_bytes=40_000, max_seconds=60)
    x_server.count = 100
    wait_until(lambda: ingest.writer.posts == 100)
    ingest.close()
    for path in ingest.sealed[:-1]:
        data = path.read_bytes()
        last_line = data[:-1].rsplit(b"\n", 1)[-1]
        assert len(data) >= 40_000 > len(data) - len(last_line) - 1
    assert ingest.ids() == x_server.sent_ids


def test_bad_lines_are_quarantined_and_data_with_partial_errors_is_kept(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    ingest = make_ingest(tmp_path, x_server, max_records=10_000, max_seconds=60)
    for kind in ("malformed", "non_utf8", "partial_errors"):
        x_server.inject(kind)
    x_server.count = 5
    wait_until(lambda: ingest.writer.posts == 6)  # 5 posts + the one with partial errors
    x_server.operational_disconnect()  # an errors-only message, then a reconnect
    wait_until(lambda: ingest.writer.error_messages == 1)
    wait_until(lambda: x_server.connections >= 2)
    ingest.close()
    assert sorted(ingest.ids()) == sorted(x_server.sent_ids)
    assert len(ingest.ids()) == 6
    quarantined = b"".join(p.read_bytes() for p in ingest.dirs.quarantine.iterdir())
    assert b"cut in the middle\n" in quarantined
    assert b"\xff\xfe\xc3\x28" in quarantined
    assert b"operational-disconnect" not in b"".join(ingest.lines())
    assert ingest.writer.quarantine.count == 2
    # posts whose expanded objects X cannot return carry `errors` too: the injected one is kept
    partial = [line for line in ingest.lines() if PARTIAL_ERROR["detail"].encode() in line]
    assert len(partial) == 1 and json.loads(partial[0])["data"]


def test_a_10_mb_line_is_spooled_whole(tmp_path: Path, x_server: FakeXServer) -> None:
    ingest = make_ingest(tmp_path, x_server, max_records=10_000, max_seconds=60)
    x_server.inject("huge")
    x_server.count = 2
    wait_until(lambda: ingest.writer.posts == 3, 30)
    ingest.close()
    assert sorted(ingest.ids()) == sorted(x_server.sent_ids)
    assert max(len(line) for line in ingest.lines()) > 10 * 1024 * 1024


class DiskCalls:
    """This process's os.write, os.fsync and os.rename/os.replace, in the order they happened.

    Each entry is (call, file identity (st_dev, st_ino), destination path or None). A write or an
    fsync is recorded when it has returned, a rename just before it starts: so "fsync before
    rename" in this list means the data was on disk before the file changed folders.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, tuple[int, int], Path | None]] = []
        self._lock = threading.Lock()
        real = {name: getattr(os, name) for name in ("write", "fsync", "rename", "replace")}

        def identity(stat: os.stat_result) -> tuple[int, int]:
            return stat.st_dev, stat.st_ino

        def record(call: str, ident: tuple[int, int], dest: Path | None = None) -> None:
            with self._lock:
                self.calls.append((call, ident, dest))

        def write(fd: int, data) -> int:
            written = real["write"](fd, data)
            record("write", identity(os.fstat(fd)))
            return written

        def fsync(fd) -> None:
            real["fsync"](fd)
            record("fsync", identity(os.fstat(fd if isinstance(fd, int) else fd.fileno())))

        def renamer(name: str):
            def rename(src, dst, *args, **kwargs):
                record(name, identity(os.lstat(src)), Path(dst))
                return real[name](src, dst, *args, **kwargs)

            return rename

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", renamer("rename"))
        monkeypatch.setattr(os, "replace", renamer("replace"))

    def snapshot(self) -> list[tuple[str, tuple[int, int], Path | None]]:
        with self._lock:
            return list(self.calls)


def test_each_file_is_fsynced_before_its_rename_into_sealed_then_the_folder(
    tmp_path: Path, x_server: FakeXServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kill -9 keeps the page cache, so only the order of the calls shows a missing fsync:
    # data fsynced, then renamed into sealed/, then sealed/ itself fsynced (the rename durable).
    disk = DiskCalls(monkeypatch)
    ingest = make_ingest(tmp_path, x_server, max_records=100, max_seconds=60)
    x_server.count = 250
    wait_until(lambda: ingest.writer.posts == 250)
    ingest.close()
    wait_until(lambda: len(ingest.sealed) == 3)
    calls = disk.snapshot()
    sealed_dir = ingest.dirs.sealed
    folder = (sealed_dir.stat().st_dev, sealed_dir.stat().st_ino)
    into_sealed = [
        (i, ident)
        for i, (call, ident, dest) in enumerate(calls)
        if dest and dest.parent == sealed_dir
    ]
    assert len(into_sealed) == 3, calls
    for at, ident in into_sealed:
        writes = [i for i, (call, f, _) in enumerate(calls[:at]) if call == "write" and f == ident]
        assert writes, "the sealed file was never written through os.write"
        fsynced = [i for i, (call, f, _) in enumerate(calls[:at]) if call == "fsync" and f == ident]
        assert fsynced and fsynced[-1] > writes[-1], (
            "a file was renamed into sealed/ without an fsync after its last write"
        )
        assert ("fsync", folder, None) in calls[at + 1 :], "sealed/ not fsynced after the rename"


def test_recovery_seals_leftovers_and_quarantines_a_torn_last_line(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    dirs = SpoolDirs(cfg.spool.dir)
    dirs.create()
    good = [b'{"data":{"id":"1"}}', b'{"data":{"id":"2"}}']
    (dirs.open / "test-1-20260101T000000Z-000007.jsonl").write_bytes(
        b"\n".join(good) + b'\n{"data":{"id":"3","te'
    )
    (dirs.open / "test-1-20260101T000001Z-000008.jsonl").write_bytes(b"")
    quarantine = Quarantine(dirs, Metrics())
    sealed = recover_open_files(dirs, quarantine)
    assert [p.name for p in sealed] == ["test-1-20260101T000000Z-000007.jsonl"]
    assert sealed[0].parent == dirs.sealed
    assert sealed[0].read_bytes() == b"\n".join(good) + b"\n"
    assert not list(dirs.open.iterdir())
    torn = list(dirs.quarantine.glob("*-torn.lines"))
    assert torn and torn[0].read_bytes() == b'{"data":{"id":"3","te\n'
    # The next file never reuses a number that holds data, even without state.json
    # (the empty 000008 held nothing and is gone).
    assert SeqState(dirs).next_seq == 8


def test_seq_is_persisted_before_use_and_survives_a_lost_state_file(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9"))
    dirs = SpoolDirs(cfg.spool.dir)
    dirs.create()
    state = SeqState(dirs)
    assert [state.reserve(), state.reserve()] == [1, 2]
    assert json.loads(dirs.state_file.read_text()) == {"next_seq": 3}
    assert SeqState(dirs).next_seq == 3  # a restart continues after the last reserved number
    (dirs.sealed / "test-1-20260101T000000Z-000041.jsonl").write_bytes(b"")
    dirs.state_file.unlink()
    assert SeqState(dirs).next_seq == 42


@pytest.mark.slow  # tweepy's real timer
def test_a_stalled_stream_is_dropped_and_reconnected_without_losing_posts(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    # X: reconnect when nothing, not even a keep-alive, arrived for 20+ s (tweepy: 21 s timeout).
    ingest = make_ingest(tmp_path, x_server, max_records=10_000, max_seconds=0.5)
    x_server.count = 50
    wait_until(lambda: ingest.writer.posts == 50)
    x_server.stall(22)
    wait_until(lambda: x_server.connections >= 2, 40, 0.5)
    # The stand-in notices the dropped connection only when it writes after the stall: wait
    # until keep-alives have ended that stream, so no post goes to a socket nobody reads.
    wait_until(lambda: x_server.streams_open == 1, 20, 0.1)
    x_server.count = 100
    wait_until(lambda: ingest.writer.posts == 100, 20)
    ingest.close()
    assert ingest.ids() == x_server.sent_ids
    assert ingest.metrics.snapshot()["reconnects"] >= 1


@pytest.mark.slow  # tweepy's real timer
def test_429_waits_a_minute_before_reconnecting_then_loses_nothing(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    # X: back off at least 60 s after a 429 (doubling after that); tweepy implements it and our
    # on_request_error must leave it to tweepy rather than give up or retry sooner.
    x_server.fail_next(429, 1)
    ingest = Ingest(load_config(write_config(tmp_path, x_server.url, max_seconds=0.5)))
    wait_until(lambda: ingest.stream.connected.is_set(), 80, 0.2)
    assert x_server.connections == 2  # one refused attempt, then the one that connected
    refused_at, connected_at = x_server.connection_times
    assert connected_at - refused_at >= 60
    x_server.count = 30
    wait_until(lambda: ingest.writer.posts == 30)
    ingest.close()
    assert ingest.ids() == x_server.sent_ids
    assert ingest.metrics.snapshot()["http_errors"] == 1


def fill(disk: Path) -> Path:
    """Fills the tmpfs until the kernel says ENOSPC; returns the ballast file."""
    ballast = disk / "ballast"
    with open(ballast, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return ballast


def test_a_full_spool_disk_holds_the_stream_then_loses_nothing(
    tiny_disk: Path, x_server: FakeXServer, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    # Small in-memory allowance, so the reader also has to wait (TCP backpressure to X).
    monkeypatch.setattr(spool, "MAX_UNWRITTEN_BYTES", 64 * 1024)
    cfg = load_config(write_config(tiny_disk, x_server.url, max_seconds=0.5))
    ingest = Ingest(cfg)
    health = ingest.writer.health = Health()
    wait_until(lambda: ingest.stream.connected.is_set(), 10)
    x_server.count = 20
    wait_until(lambda: len(ingest.sealed) >= 1 and ingest.writer.posts == 20)
    ballast = fill(tiny_disk)
    x_server.count = 600  # ~2.7 MB more than the disk can take now
    wait_until(lambda: ingest.metrics.snapshot().get("spool_write_errors", 0) >= 1, 20)
    # The reader takes posts until its in-memory allowance is full, then holds the stream.
    held = wait_until_steady(lambda: ingest.writer.posts, steady_for=2.0, timeout=30)
    assert held < 600, "the reader kept taking posts with nowhere to put them"
    state, reason = health.state()  # nothing is collected meanwhile: status shows why
    assert state == "degraded" and "No space left on device" in reason, reason
    ballast.unlink()  # space again
    wait_until(lambda: ingest.writer.posts == 600, 60)
    assert health.state() == ("healthy", None)
    ingest.close()
    assert ingest.ids() == x_server.sent_ids  # every post, once, in order
    assert not list(ingest.dirs.quarantine.glob("*"))
    errors = [r.getMessage() for r in caplog.records if "spool disk full" in r.getMessage()]
    assert errors and all("\n" not in e for e in errors)
    assert "No space left on device" in errors[0] and str(tiny_disk) in errors[0]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100_000])
def test_lines_are_cut_at_crlf_whatever_the_read_sizes(size: int) -> None:
    # what X sends: posts, keep-alives (bare CRLF), a CRLF that falls between two reads
    stream = b'{"data":{"id":"1"}}\r\n\r\n{"data":{"id":"2"}}\r\n\r\n\r\n{"data":{"id":"3"}}\r\n'
    stream += b'{"data":{"id":"4","te'  # the connection ends in the middle of a message
    splitter = LineSplitter()
    lines = []
    for start in range(0, len(stream), size):
        lines += splitter.feed(stream[start : start + size])
    assert lines == [
        b'{"data":{"id":"1"}}',
        b"",
        b'{"data":{"id":"2"}}',
        b"",
        b"",
        b'{"data":{"id":"3"}}',
    ]
    assert splitter.pending == b'{"data":{"id":"4","te'
