"""The shipper: sealed/ -> ready/ -> S3, against a real moto server and real boto3.

Faults are real too: a TCP proxy in front of moto that refuses connections (an outage) or
swallows the answer to a PUT (a lost response), a tiny tmpfs that runs out of space, a byte
flipped on disk after compression.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import os
import socket
import time
import tracemalloc
from pathlib import Path

import boto3
import pytest
import zstandard
from botocore.config import Config as BotoConfig

from collector.config import Config, RotateConfig, S3Config, SpoolConfig, XConfig
from collector.sink.shipper import BucketMissing, S3Unavailable, Shipper
from collector.spool.compress import compress_file, sidecar_path
from collector.spool.layout import SpoolDirs, object_key
from collector.telemetry.metrics import Metrics
from tests.collector_support import wait_until
from tests.conftest import free_port
from tests.fakes.tcp_proxy import OutageProxy

BUCKET = "shipping-test-bucket"
PREFIX = "tweets"
FAKE_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
FAKE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def config(root: Path, compression: str = "gzip", level: int = 1, bucket: str = BUCKET) -> Config:
    return Config(
        collector_id="test-1",
        x=XConfig(),
        spool=SpoolConfig(dir=root),
        rotate=RotateConfig(),
        s3=S3Config(bucket=bucket, prefix=PREFIX, compression=compression, compression_level=level),
    )


def name(seq: int) -> str:
    return f"test-1-20260102T030405Z-{seq:06d}.jsonl"


def lines(seq: int, count: int = 200) -> bytes:
    return b"".join(
        b'{"data":{"id":"%d","text":"post %d"}}\n' % (seq * 10_000 + i, i) for i in range(count)
    )


def seal(dirs: SpoolDirs, seq: int, data: bytes | None = None) -> Path:
    path = dirs.sealed / name(seq)
    path.write_bytes(lines(seq) if data is None else data)
    return path


def key(seq: int, ext: str = ".gz") -> str:
    return object_key(PREFIX, name(seq) + ext.removeprefix(".jsonl"))


def object_bytes(s3, object_name: str) -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=object_name)["Body"].read()


def data_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


class Harness:
    """Shippers on a spool under tmp_path, stopped at teardown."""

    def __init__(self, root: Path, endpoint: str) -> None:
        self.dirs = SpoolDirs(root / "spool")
        self.dirs.create()
        self.endpoint = endpoint
        self.shippers: list[Shipper] = []

    def client(self, endpoint: str | None = None, boto_attempts: int | None = None):
        retries = BotoConfig(retries={"max_attempts": boto_attempts}) if boto_attempts else None
        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1", config=retries
        )

    def shipper(self, compression: str = "gzip", endpoint: str | None = None, **kw) -> Shipper:
        kw.setdefault("retry_base", 0.05)
        kw.setdefault("retry_cap", 0.5)
        client = self.client(endpoint, kw.pop("boto_attempts", None))
        cfg = config(self.dirs.root, compression, bucket=kw.pop("bucket", BUCKET))
        shipper = Shipper(cfg, self.dirs, Metrics(), client, **kw)
        self.shippers.append(shipper)
        return shipper

    def stop(self) -> None:
        for shipper in self.shippers:
            shipper.stop()


@pytest.fixture
def harness(tmp_path: Path, s3, aws_env):
    s3.create_bucket(Bucket=BUCKET)
    world = Harness(tmp_path, aws_env.url)
    yield world
    world.stop()


def keys_in(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


# -- compression and upload --------------------------------------------------------------


@pytest.mark.parametrize(
    "codec,ext,decode",
    [
        ("gzip", ".jsonl.gz", gzip.decompress),
        (
            "zstd",
            ".jsonl.zst",
            lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
        ),
        ("none", ".jsonl", lambda b: b),
    ],
)
def test_each_codec_lands_byte_for_byte_under_its_partitioned_key(harness, s3, codec, ext, decode):
    shipper = harness.shipper(codec)
    shipper.start()
    shipper.submit(seal(harness.dirs, 7))
    assert shipper.drain(time.monotonic() + 20) == 0

    assert keys_in(s3) == [f"{PREFIX}/dt=2026-01-02/hour=03/test-1-20260102T030405Z-000007{ext}"]
    assert decode(object_bytes(s3, keys_in(s3)[0])) == lines(7)
    assert list(harness.dirs.ready.iterdir()) == []
    assert list(harness.dirs.sealed.iterdir()) == []
    stats = shipper.metrics.snapshot()
    assert stats["files_compressed"] == 1 and stats["files_uploaded"] == 1
    assert (
        stats["bytes_uploaded"]
        == s3.head_object(Bucket=BUCKET, Key=keys_in(s3)[0])["ContentLength"]
    )
    assert stats["last_upload_key"] == keys_in(s3)[0]
    assert stats["pending_files"] == 0 and "last_upload_at" in stats


def test_objects_carry_a_sha256_that_s3_reports(harness, s3):
    shipper = harness.shipper()
    shipper.start()
    shipper.submit(seal(harness.dirs, 1))
    assert shipper.drain(time.monotonic() + 20) == 0
    body = object_bytes(s3, key(1))
    head = s3.head_object(Bucket=BUCKET, Key=key(1), ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()


def test_leftovers_are_uploaded_ahead_of_new_files(harness, s3):
    # an earlier run left a compressed file in ready/, two sealed files, and a half-written tmp
    compress_file(seal(harness.dirs, 1), harness.dirs, "gzip")
    seal(harness.dirs, 2)
    seal(harness.dirs, 3)
    (harness.dirs.ready / f".{name(4)}.gz.tmp").write_bytes(b"half a gzip")
    order: list[str] = []
    client = harness.client()
    client.meta.events.register(
        "before-call.s3.PutObject", lambda params, **_: order.append(params["url_path"])
    )
    shipper = Shipper(config(harness.dirs.root), harness.dirs, Metrics(), client, upload_workers=1)
    harness.shippers.append(shipper)
    shipper.start()
    shipper.submit(seal(harness.dirs, 5))
    assert shipper.drain(time.monotonic() + 20) == 0

    assert [p.rsplit("/", 1)[1] for p in order] == [name(s) + ".gz" for s in (1, 2, 3, 5)]
    assert keys_in(s3) == sorted(key(s) for s in (1, 2, 3, 5))
    assert list(harness.dirs.ready.iterdir()) == []  # the tmp leftover is gone too


def test_a_crash_between_rename_and_unlink_leaves_no_duplicate(harness, s3):
    # compressed and renamed into ready/, but the sealed copy was not yet deleted
    sealed = seal(harness.dirs, 1)
    kept = sealed.read_bytes()
    compress_file(sealed, harness.dirs, "gzip")
    sealed.write_bytes(kept)
    shipper = harness.shipper()
    shipper.start()
    assert shipper.drain(time.monotonic() + 20) == 0
    assert keys_in(s3) == [key(1)]
    assert gzip.decompress(object_bytes(s3, key(1))) == kept
    assert shipper.metrics.snapshot()["files_uploaded"] == 1


def test_big_files_are_streamed_with_bounded_memory(harness, s3):
    # 72 MB of incompressible lines: more than rotate.max_bytes' default of 64 MiB
    row = base64.b64encode(os.urandom(3 * 1024 * 1024 // 4 * 4)).replace(b"+", b"-")
    data = b"".join(b'{"data":"' + row[i : i + 4000] + b'"}\n' for i in range(0, len(row), 4000))
    big = data * 17
    assert len(big) > 70_000_000
    sealed = seal(harness.dirs, 1, big)
    del data, big

    tracemalloc.start()
    try:
        ready = compress_file(sealed, harness.dirs, "gzip")
        compress_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        shipper = harness.shipper(upload_workers=1)
        shipper.start()
        assert shipper.drain(time.monotonic() + 60) == 0
        upload_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not ready.exists()
    assert compress_peak < 8 * 1024 * 1024, compress_peak
    assert upload_peak < 16 * 1024 * 1024, upload_peak
    assert s3.head_object(Bucket=BUCKET, Key=key(1))["ContentLength"] > 50_000_000


# -- checksum confirmation and conditional writes -----------------------------------------


def test_a_checksum_mismatch_keeps_the_file_and_never_overwrites(harness, s3):
    # the disk changed the file after the compressor hashed it: S3 then holds other bytes
    ready = compress_file(seal(harness.dirs, 1), harness.dirs, "gzip")
    corrupt = bytearray(ready.read_bytes())
    corrupt[len(corrupt) // 2] ^= 0xFF
    ready.write_bytes(bytes(corrupt))

    shipper = harness.shipper()
    shipper.start()
    # first the PUT answer disagrees, then every retry meets a 412 and a HEAD that disagrees
    wait_until(lambda: shipper.metrics.snapshot().get("upload_errors", 0) >= 3, timeout=20)
    began = time.monotonic()
    assert shipper.drain(began + 20) == 1  # kept for an operator, without holding the exit
    assert time.monotonic() - began < 5

    assert ready.exists() and sidecar_path(ready).exists()
    assert object_bytes(s3, key(1)) == bytes(corrupt)  # written once, never overwritten
    stats = shipper.metrics.snapshot()
    assert stats.get("files_uploaded", 0) == 0
    assert "SHA-256" in stats["last_error"] and "\n" not in stats["last_error"]


def test_an_existing_different_object_is_never_overwritten(harness, s3, caplog):
    s3.put_object(
        Bucket=BUCKET, Key=key(1), Body=b"someone else's bytes", ChecksumAlgorithm="SHA256"
    )
    shipper = harness.shipper()
    shipper.start()
    shipper.submit(seal(harness.dirs, 1))
    wait_until(lambda: shipper.metrics.snapshot().get("upload_errors", 0) >= 2, timeout=20)
    shipper.stop()

    assert object_bytes(s3, key(1)) == b"someone else's bytes"
    assert data_files(harness.dirs.ready) == [name(1) + ".gz"]
    assert "CONFLICT" in shipper.metrics.snapshot()["last_error"]
    assert any("CONFLICT" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)


class AnswerDropper(OutageProxy):
    """Forwards everything, but swallows the answers to the first `drops` PUT requests."""

    def __init__(self, target_port: int, drops: int) -> None:
        super().__init__(target_port)
        self.drops = drops
        self.dropped = 0

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        to_server = sink.getpeername()[1] == self.target[1]
        try:
            while data := source.recv(65536):
                if to_server and data.startswith(b"PUT "):
                    self._put_pending = sink
                elif (
                    not to_server
                    and getattr(self, "_put_pending", None) is source
                    and data.count(b"HTTP/1.1 ") > data.count(b"HTTP/1.1 100 ")  # not "continue"
                ):
                    self._put_pending = None
                    if self.dropped < self.drops:
                        self.dropped += 1  # S3 stored the object; the client never hears it
                        break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def test_a_lost_put_answer_does_not_create_a_second_object(harness, s3):
    proxy = AnswerDropper(int(harness.endpoint.rsplit(":", 1)[1]), drops=1).start()
    try:
        shipper = harness.shipper(endpoint=proxy.url)
        shipper.start()
        shipper.submit(seal(harness.dirs, 1))
        assert shipper.drain(time.monotonic() + 20) == 0
    finally:
        proxy.stop()
    assert proxy.dropped == 1
    versions = s3.list_object_versions(Bucket=BUCKET).get("Versions", [])
    assert [v["Key"] for v in versions] == [key(1)]
    assert gzip.decompress(object_bytes(s3, key(1))) == lines(1)
    stats = shipper.metrics.snapshot()
    assert stats["files_uploaded"] == 1 and stats.get("bytes_uploaded", 0) == 0


# -- S3 trouble ----------------------------------------------------------------------------


def test_an_s3_outage_delays_uploads_and_loses_nothing(harness, s3, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    proxy = OutageProxy(int(harness.endpoint.rsplit(":", 1)[1])).start()
    try:
        proxy.down = True
        # boto3 gives up at once, so every refused PUT is one of the shipper's own retries.
        shipper = harness.shipper(endpoint=proxy.url, boto_attempts=1)
        shipper.start()
        for seq in range(1, 6):
            shipper.submit(seal(harness.dirs, seq))
        # Long enough for any retry limit to show: the oldest files are retried first, each of
        # them well over 10 times (Fluent Bit's Retry_Limit defaults to 1, many sinks to 3-10).
        wait_until(lambda: shipper.metrics.snapshot().get("upload_errors", 0) >= 40, timeout=60)
        assert len(data_files(harness.dirs.ready)) == 5 and keys_in(s3) == []
        stats = shipper.metrics.snapshot()
        assert stats["pending_files"] == 5
        error = stats["last_error"]
        assert "\n" not in error and FAKE_KEY_ID not in error and FAKE_SECRET not in error
        # 40 refusals in under a minute: the first three are logged, the rest only counted
        warned = [
            r.getMessage()
            for r in caplog.records
            if r.name == "collector.sink.shipper" and "failed, retry" in r.getMessage()
        ]
        assert 1 <= len(warned) <= 4, warned

        proxy.down = False
        assert shipper.drain(time.monotonic() + 30) == 0
    finally:
        proxy.stop()
    assert keys_in(s3) == sorted(key(seq) for seq in range(1, 6))
    for seq in range(1, 6):
        assert gzip.decompress(object_bytes(s3, key(seq))) == lines(seq)
    assert proxy.refused > 0


def test_drain_returns_the_files_left_when_s3_stays_down(harness):
    shipper = harness.shipper(endpoint=f"http://127.0.0.1:{free_port()}")
    shipper.start()
    for seq in (1, 2, 3):
        shipper.submit(seal(harness.dirs, seq))
    began = time.monotonic()
    assert shipper.drain(began + 2) == 3
    assert time.monotonic() - began < 3
    shipper.stop()
    assert data_files(harness.dirs.ready) == [name(s) + ".gz" for s in (1, 2, 3)]


def test_a_missing_bucket_is_named_in_one_line(harness):
    shipper = harness.shipper(bucket="no-such-bucket-here")
    with pytest.raises(BucketMissing) as caught:
        shipper.check_bucket()
    assert "no-such-bucket-here" in str(caught.value) and "\n" not in str(caught.value)


def test_unreachable_s3_at_check_is_s3_unavailable_not_missing(harness):
    shipper = harness.shipper(endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(S3Unavailable) as caught:
        shipper.check_bucket()
    assert BUCKET in str(caught.value) and "\n" not in str(caught.value)


def test_existing_bucket_passes_the_check(harness):
    harness.shipper().check_bucket()


# -- disk full -----------------------------------------------------------------------------


def test_disk_full_during_compression_uploads_from_memory_and_frees_the_disk(
    tiny_disk, s3, aws_env
):
    s3.create_bucket(Bucket=BUCKET)
    world = Harness(tiny_disk, aws_env.url)
    data = base64.b64encode(os.urandom(1_500_000)) + b"\n"  # ~2 MB, barely compressible
    sealed = seal(world.dirs, 1, data)
    filler = tiny_disk / "filler"
    with open(filler, "wb") as handle, contextlib.suppress(OSError):
        while True:  # fill the disk, then give back less than the compressed file needs
            handle.write(b"\0" * 65536)
            handle.flush()
    with open(filler, "r+b") as handle:
        handle.truncate(max(0, filler.stat().st_size - 1_000_000))
    free_before = os.statvfs(tiny_disk).f_bavail
    try:
        shipper = world.shipper()
        assert shipper.drain(time.monotonic() + 20) == 0
        shipper.stop()
        assert not sealed.exists()
        assert list(world.dirs.ready.iterdir()) == []  # no partial output left behind
        assert os.statvfs(tiny_disk).f_bavail > free_before  # the upload freed the disk
        assert shipper.metrics.snapshot()["files_uploaded"] == 1
        # the same key and bytes the disk path writes: a later copy of it is no duplicate
        filler.unlink()
        again = seal(world.dirs, 1, data)
        assert world.shipper().drain(time.monotonic() + 20) == 0
        assert not again.exists()
    finally:
        world.stop()
    assert gzip.decompress(object_bytes(s3, key(1))) == data
    listed = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert [item["Key"] for item in listed] == [key(1)]


def test_submit_never_blocks_while_s3_hangs(harness):
    # a listener that accepts and never answers: uploads hang until their read timeout
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        shipper = harness.shipper(endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}")
        shipper.start()
        seal_times = []
        for seq in range(1, 21):
            began = time.monotonic()
            shipper.submit(seal(harness.dirs, seq))
            seal_times.append(time.monotonic() - began)
        assert max(seal_times) < 0.05
        wait_until(lambda: len(data_files(harness.dirs.ready)) == 20, timeout=20)
    finally:
        silent.close()


def test_threads_stop(harness):
    shipper = harness.shipper()
    shipper.start()
    shipper.stop()
    names = {t.name for t in shipper._threads if t.is_alive()}
    assert names == set()
