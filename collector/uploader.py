"""The shipper: compresses sealed/ into ready/ and uploads ready/ to S3, beside the stream.

Threads (all daemons; the stream reader never waits on them):
    shipper-compress    sealed/ -> ready/ (collector.compress), oldest file first
    shipper-upload-N    ready/ -> s3://bucket/{object_key}, then deletes the ready file

A ready file is deleted only after S3 confirmed the object with a checksum: boto3 computes
the SHA-256 of the body it sends (ChecksumAlgorithm="SHA256", which real S3 validates against
the bytes it received) and the checksum S3 reports back must equal the one the compressor
recorded when it wrote the file. Any difference keeps the file and is logged as an error.

No second object for one file: keys are deterministic (the file name) and every PUT carries
If-None-Match: * . A 412 means the object exists (e.g. our earlier PUT succeeded but the
answer was lost); a HEAD with ChecksumMode=ENABLED then decides: same checksum and size ->
done, anything else -> keep the file and log loudly, never overwrite.

Files are bounded by rotate.max_bytes (64 MiB uncompressed by default), so a single PUT
(limit 5 GB) carries each file, streamed from the open file (bounded memory) with a
full-object checksum; no multipart upload, no composite checksums.

Retries are forever: exponential backoff with full jitter, capped (RETRY_CAP). S3 errors
(connection refused, timeouts, 5xx, even 403) pause all uploads; a checksum conflict only
delays its own file so the others keep flowing.

S3 API calls: HeadBucket (check_bucket), PutObject (with If-None-Match and a SHA-256
checksum), HeadObject (after a 412 or when the PUT answer carries no checksum).
IAM: s3:ListBucket on the bucket (HeadBucket), s3:PutObject and s3:GetObject (HeadObject) on
{prefix}/*; plus kms:GenerateDataKey on the key when the bucket uses SSE-KMS.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from collector.compress import (
    clean_ready_leftovers,
    compress_file,
    recorded_sha256,
    sidecar_path,
)
from collector.layout import SpoolDirs, fsync_dir, object_key, parse_name

log = logging.getLogger(__name__)

RETRY_BASE = 0.5  # seconds; attempt n waits uniform(0, min(RETRY_CAP, RETRY_BASE * 2**n))
RETRY_CAP = 60.0
DRAIN_RETRY_CAP = 1.0  # while draining, retry often until the deadline
RESCAN_SECONDS = 30.0  # sealed/ and ready/ are rescanned so nothing is ever forgotten
UPLOAD_WORKERS = 2
CONTENT_TYPES = {".gz": "application/gzip", ".zst": "application/zstd"}
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


class BucketMissing(Exception):
    """The configured bucket does not exist (fatal at start: exit 78)."""


class S3Unavailable(Exception):
    """S3 could not be asked (network, 5xx, access denied): retried, never fatal."""


class ChecksumConflict(Exception):
    """The object in S3 does not hold the bytes of our file: the file is kept."""


def make_client(cfg):
    """An S3 client from boto3's standard credential chain; AWS_ENDPOINT_URL is honoured."""
    config = BotoConfig(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        tcp_keepalive=True,
    )
    return boto3.session.Session().client(
        "s3",
        region_name=cfg.s3.region or None,
        endpoint_url=cfg.s3.endpoint_url or None,
        config=config,
    )


def _full_jitter(attempt: int, base: float, cap: float) -> float:
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


def _order(name: str) -> tuple[int, str]:
    """Oldest first: spool sequence numbers never go back, so leftovers precede new files."""
    try:
        return parse_name(name)[2], name
    except ValueError:
        return 1 << 62, name


def _data_files(folder: Path) -> list[str]:
    """Names of spool data files in `folder` (dot files are temporaries and sidecars)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return sorted((n for n in names if not n.startswith(".")), key=_order)


class _WorkQueue:
    """File names to process, lowest sequence first; each may be held back until a time.

    A name is queued or in progress at most once, so rescans and repeated submits are harmless.
    The queue holds a handful of names at a time, so a linear scan is all it needs.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._not_before: dict[str, float] = {}
        self._busy: set[str] = set()

    def put(self, name: str, not_before: float = 0.0) -> None:
        with self._cond:
            if name in self._not_before or name in self._busy:
                return
            self._not_before[name] = not_before
            self._cond.notify()

    def take(self, stop: threading.Event, timeout: float) -> str | None:
        """The oldest eligible name, marked busy; None after `timeout` or on stop."""
        give_up = time.monotonic() + timeout
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                eligible = [n for n, when in self._not_before.items() if when <= now]
                if eligible:
                    name = min(eligible, key=_order)
                    del self._not_before[name]
                    self._busy.add(name)
                    return name
                if now >= give_up:
                    return None
                wake = min([give_up, *self._not_before.values()])
                self._cond.wait(max(0.01, min(wake - now, 1.0)))
        return None

    def done(self, name: str) -> None:
        with self._cond:
            self._busy.discard(name)

    def retry(self, name: str, not_before: float = 0.0) -> None:
        with self._cond:
            self._busy.discard(name)
        self.put(name, not_before)

    def hurry(self, within: float) -> None:
        """Bring every held-back name forward to at most `within` seconds from now."""
        with self._cond:
            latest = time.monotonic() + within
            for name, when in self._not_before.items():
                self._not_before[name] = min(when, latest)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Backoff:
    """Consecutive-failure counter shared by the workers of one stage."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap = base, cap
        self._failures = 0
        self._lock = threading.Lock()

    def failed(self, cap: float | None = None) -> float:
        with self._lock:
            attempt = self._failures
            self._failures += 1
        return _full_jitter(attempt, self.base, self.cap if cap is None else min(cap, self.cap))

    def succeeded(self) -> None:
        with self._lock:
            self._failures = 0


class Shipper:
    def __init__(
        self,
        cfg,
        dirs: SpoolDirs,
        metrics,
        s3_client=None,
        *,
        retry_base: float = RETRY_BASE,
        retry_cap: float = RETRY_CAP,
        upload_workers: int = UPLOAD_WORKERS,
    ) -> None:
        self.dirs = dirs
        self.metrics = metrics
        self.bucket = cfg.s3.bucket
        self.prefix = cfg.s3.prefix
        self.codec = cfg.s3.compression
        self.level = getattr(cfg.s3, "compression_level", 1)
        self.s3 = s3_client if s3_client is not None else make_client(cfg)
        self.retry_base, self.retry_cap = retry_base, retry_cap
        self.upload_workers = upload_workers
        self._compress_queue = _WorkQueue()
        self._upload_queue = _WorkQueue()
        self._compress_backoff = _Backoff(retry_base, retry_cap)
        self._upload_backoff = _Backoff(retry_base, retry_cap)
        self._conflicts: dict[str, int] = {}
        self._conflicts_lock = threading.Lock()
        self._stop = threading.Event()
        self._draining = False
        self._threads: list[threading.Thread] = []
        self._secrets = _known_secrets(self.s3)

    # -- the API app.py uses -------------------------------------------------------------

    def check_bucket(self) -> None:
        if not self.bucket:
            raise BucketMissing("s3.bucket is empty: name the bucket the collector writes to")
        try:
            self.s3.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
                raise BucketMissing(
                    f"S3 bucket '{self.bucket}' does not exist (s3.bucket in the config)"
                ) from None
            if status == 403:
                raise S3Unavailable(
                    f"S3 bucket '{self.bucket}': access denied to HeadBucket "
                    "(the collector's credentials need s3:ListBucket on it)"
                ) from None
            raise S3Unavailable(f"S3 bucket '{self.bucket}': {self._one_line(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise S3Unavailable(f"S3 bucket '{self.bucket}': {self._one_line(exc)}") from None

    def start(self) -> None:
        if self._threads:
            return
        removed = clean_ready_leftovers(self.dirs)
        if removed:
            log.info("removed %d half-written file(s) from ready/: %s", len(removed), removed)
        leftovers = self._rescan()
        if leftovers:
            log.info("%d file(s) left by an earlier run are queued first", leftovers)
        self._spawn("shipper-compress", self._compress_loop)
        for number in range(1, self.upload_workers + 1):
            self._spawn(f"shipper-upload-{number}", self._upload_loop)
        self._refresh_pending()

    def submit(self, sealed_path: Path | str) -> None:
        """Queue a file that just landed in sealed/; never blocks."""
        self._compress_queue.put(Path(sealed_path).name)

    def drain(self, deadline_monotonic: float) -> int:
        """Compress and upload everything pending until the deadline; return #files left."""
        self._draining = True
        if not self._threads:
            self.start()
        self._rescan()
        self._compress_queue.hurry(DRAIN_RETRY_CAP)
        self._upload_queue.hurry(DRAIN_RETRY_CAP)
        while time.monotonic() < deadline_monotonic:
            with self._conflicts_lock:
                conflicted = set(self._conflicts)
            # a conflicting file waits for an operator, not for the deadline
            if not set(self._pending_names()) - conflicted:
                break
            time.sleep(0.05)
        remaining = self.pending()
        self.metrics.set("pending_files", remaining)
        return remaining

    def stop(self) -> None:
        self._stop.set()
        self._compress_queue.wake()
        self._upload_queue.wake()
        # one short budget for all threads: an upload stuck in a socket read must not hold the
        # exit (the file stays in ready/ and is confirmed by HEAD after the restart's 412)
        give_up = time.monotonic() + 2.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, give_up - time.monotonic()))

    # -- helpers -------------------------------------------------------------------------

    def _pending_names(self) -> list[str]:
        return _data_files(self.dirs.sealed) + _data_files(self.dirs.ready)

    def pending(self) -> int:
        return len(self._pending_names())

    def _refresh_pending(self) -> None:
        self.metrics.set("pending_files", self.pending())

    def _rescan(self) -> int:
        sealed, ready = _data_files(self.dirs.sealed), _data_files(self.dirs.ready)
        for name in sealed:
            self._compress_queue.put(name)
        for name in ready:
            self._upload_queue.put(name)
        return len(sealed) + len(ready)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _sleep(self, seconds: float) -> None:
        """Wait, but return early on stop, and after DRAIN_RETRY_CAP once draining."""
        end = time.monotonic() + seconds
        began = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= end or (self._draining and now - began >= DRAIN_RETRY_CAP):
                return
            self._stop.wait(min(0.1, end - now))

    def _retry_cap(self) -> float | None:
        return DRAIN_RETRY_CAP if self._draining else None

    def _one_line(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "[REDACTED]")
        text = _ACCESS_KEY_ID.sub("[REDACTED]", text)
        return " ".join(text.split())[:400]

    def _error(self, message: str) -> None:
        self.metrics.set("last_error", " ".join(message.split())[:500])

    # -- compression ---------------------------------------------------------------------

    def _compress_loop(self) -> None:
        next_rescan = time.monotonic() + RESCAN_SECONDS
        while not self._stop.is_set():
            if time.monotonic() >= next_rescan:
                self._rescan()
                next_rescan = time.monotonic() + RESCAN_SECONDS
            name = self._compress_queue.take(self._stop, timeout=1.0)
            if name is not None:
                self._compress_one(name)

    def _compress_one(self, name: str) -> None:
        sealed = self.dirs.sealed / name
        if not sealed.exists():
            self._compress_queue.done(name)
            return
        try:
            ready = compress_file(sealed, self.dirs, self.codec, self.level)
        except OSError as exc:
            # ENOSPC and friends: the sealed file is intact; try again later
            delay = self._compress_backoff.failed(self._retry_cap())
            message = f"compressing {name} failed, retrying in {delay:.1f} s: {self._one_line(exc)}"
            log.error("%s", message)
            self._error(message)
            self.metrics.incr("compress_errors")
            self._compress_queue.retry(name)
            self._sleep(delay)
            return
        self._compress_backoff.succeeded()
        self._compress_queue.done(name)
        self.metrics.incr("files_compressed")
        self._upload_queue.put(ready.name)
        self._refresh_pending()

    # -- upload --------------------------------------------------------------------------

    def _upload_loop(self) -> None:
        while not self._stop.is_set():
            name = self._upload_queue.take(self._stop, timeout=1.0)
            if name is not None:
                self._upload_one(name)

    def _upload_one(self, name: str) -> None:
        path = self.dirs.ready / name
        if not path.exists():
            self._upload_queue.done(name)
            return
        key = object_key(self.prefix, name)
        try:
            size, created = self._put_confirmed(path, key)
        except ChecksumConflict as exc:
            with self._conflicts_lock:
                attempt = self._conflicts.get(name, 0)
                self._conflicts[name] = attempt + 1
            delay = _full_jitter(attempt, self.retry_base, self._retry_cap() or self.retry_cap)
            log.error("%s", exc)
            self._error(str(exc))
            self.metrics.incr("upload_errors")
            self._upload_queue.retry(name, time.monotonic() + delay)
            return
        except (BotoCoreError, ClientError, OSError) as exc:
            self._upload_failed(name, key, self._one_line(exc))
            return
        except Exception as exc:  # a bug: keep the file, keep the thread alive, say so
            log.exception("unexpected error uploading %s", name)
            self._upload_failed(name, key, self._one_line(exc))
            return
        self._upload_backoff.succeeded()
        with self._conflicts_lock:
            self._conflicts.pop(name, None)
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
        fsync_dir(self.dirs.ready)
        self._upload_queue.done(name)
        self.metrics.incr("files_uploaded")
        if created:
            self.metrics.incr("bytes_uploaded", size)
        self.metrics.set("last_upload_key", key)
        self.metrics.set("last_upload_at", datetime.now(UTC).isoformat(timespec="seconds"))
        self._refresh_pending()
        log.debug("uploaded %s (%d bytes) to s3://%s/%s", name, size, self.bucket, key)

    def _upload_failed(self, name: str, key: str, reason: str) -> None:
        delay = self._upload_backoff.failed(self._retry_cap())
        message = (
            f"uploading {name} to s3://{self.bucket}/{key} failed, retry in {delay:.1f} s: {reason}"
        )
        log.warning("%s", message)
        self._error(message)
        self.metrics.incr("upload_errors")
        self._upload_queue.retry(name)
        self._sleep(delay)

    def _put_confirmed(self, path: Path, key: str) -> tuple[int, bool]:
        """PUT `path` once, conditionally; return (size, created) once S3 confirmed its checksum."""
        expected = recorded_sha256(path)
        size = path.stat().st_size
        try:
            with open(path, "rb") as body:
                answer = self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    ContentType=CONTENT_TYPES.get(path.suffix, "application/x-ndjson"),
                    ChecksumAlgorithm="SHA256",
                    IfNoneMatch="*",
                )
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 412 or exc.response.get("Error", {}).get("Code") == "PreconditionFailed":
                self._confirm_existing(path, key, expected, size)
                return size, False
            raise
        reported = answer.get("ChecksumSHA256")
        if reported is None:  # nothing to compare in the answer: ask for the object's checksum
            self._confirm_existing(path, key, expected, size)
        elif reported != expected:
            raise ChecksumConflict(
                f"s3://{self.bucket}/{key}: S3 reports SHA-256 {reported}, the compressor wrote "
                f"{expected}; keeping {path.name} in the spool (the object is not overwritten)"
            )
        return size, True

    def _confirm_existing(self, path: Path, key: str, expected: str, size: int) -> None:
        head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        reported = head.get("ChecksumSHA256")
        if reported == expected and head.get("ContentLength") == size:
            log.info(
                "s3://%s/%s already holds %s (same SHA-256): done", self.bucket, key, path.name
            )
            return
        raise ChecksumConflict(
            f"CONFLICT s3://{self.bucket}/{key} already exists with different content "
            f"(SHA-256 {reported}, {head.get('ContentLength')} bytes; "
            f"ours {expected}, {size} bytes); "
            f"keeping {path.name} in the spool, never overwriting"
        )


def _known_secrets(client) -> list[str]:
    """Credential strings to scrub from messages (env plus whatever the client resolved)."""
    values = [
        os.environ.get(name, "")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    ]
    # credentials may be missing or resolve lazily: the env values and the key-id pattern remain
    with contextlib.suppress(Exception):
        frozen = client._request_signer._credentials.get_frozen_credentials()
        values += [frozen.access_key or "", frozen.secret_key or "", frozen.token or ""]
    # short values ("testing") would scrub ordinary words; real keys are 16+ characters
    return sorted({v for v in values if len(v) >= 12}, key=len, reverse=True)
