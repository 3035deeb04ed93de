"""The shipper: compresses sealed/ into ready/ and delivers ready/ to S3, beside the stream.

Two stages on the generic runner (collector.spool.stages), all daemon threads; the stream reader
never waits on them:
    shipper-compress    sealed/ -> ready/ (collector.spool.compress), oldest file first
    shipper-upload-N    ready/ -> the S3 sink (collector.sink.s3), then deletes the ready file

A ready file is deleted only after the sink confirmed the object's checksum. S3 errors
(connection refused, timeouts, 5xx, even 403) pause the upload workers with backoff; a
checksum conflict only delays its own file so the others keep flowing. Retries are forever;
their warnings are rate-limited (collector.telemetry.lograte: three, then one a minute with a
count), so months of AccessDenied do not fill the log; `last_error` and the health have the latest.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from collector.sink.codecs import codec_named
from collector.sink.s3 import (
    S3_ERRORS,
    BucketMissing,
    ChecksumConflict,
    S3AccessDenied,
    S3Sink,
    S3Unavailable,
    UploadObserver,
    make_client,
    problem_line,
)
from collector.spool.compress import (
    clean_ready_leftovers,
    compress_file,
    compress_to_memory,
    file_sha256,
    ready_name,
    sidecar_path,
)
from collector.spool.layout import SpoolDirs, fsync_dir
from collector.spool.stages import RETRY_BASE, RETRY_CAP, Stage, StageRunner
from collector.telemetry.lograte import RepeatedWarnings
from collector.telemetry.metrics import (
    BYTES_UPLOADED,
    COMPRESS_ERRORS,
    FILES_COMPRESSED,
    FILES_UPLOADED,
    LAST_ERROR,
    LAST_UPLOAD_AT,
    LAST_UPLOAD_KEY,
    PENDING_FILES,
    UPLOAD_ERRORS,
)
from collector.telemetry.redact import SECRETS

__all__ = ["BucketMissing", "S3AccessDenied", "S3Unavailable", "Shipper", "make_client"]

log = logging.getLogger(__name__)

UPLOAD_WORKERS = 2


class Shipper:
    """sealed/ -> ready/ -> S3: the compress and upload stages wired to one S3 sink."""

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
        observers: Sequence[UploadObserver] = (),
    ) -> None:
        self.dirs = dirs
        self.metrics = metrics
        self.codec = cfg.s3.compression
        self.level = getattr(cfg.s3, "compression_level", 1)
        self.sink = S3Sink(cfg, s3_client, observers)
        self.warnings = RepeatedWarnings(log)
        self._warned = False  # a refusal was logged since the last confirmed upload
        self.runner = StageRunner(
            [
                Stage(
                    "compress",
                    dirs.sealed,
                    self._compress,
                    self._compress_failed,
                    expected=S3_ERRORS,  # with the disk full it uploads from memory itself
                ),
                Stage(
                    "upload",
                    dirs.ready,
                    self._upload,
                    self._upload_failed,
                    workers=upload_workers,
                    expected=S3_ERRORS,
                ),
            ],
            prefix="shipper",
            retry_base=retry_base,
            retry_cap=retry_cap,
        )

    @property
    def bucket(self) -> str:
        return self.sink.bucket

    @property
    def _threads(self) -> list[threading.Thread]:
        return self.runner.threads

    # -- the API app.py uses -------------------------------------------------------------

    def check_bucket(self) -> None:
        self.sink.check_bucket()

    def start(self) -> None:
        if self.runner.threads:
            return
        removed = clean_ready_leftovers(self.dirs)
        if removed:
            log.info("removed %d half-written file(s) from ready/: %s", len(removed), removed)
        leftovers = self.runner.start()
        if leftovers:
            log.info("%d file(s) left by an earlier run are queued first", leftovers)
        self._refresh_pending()

    def submit(self, sealed_path: Path | str) -> None:
        """Queue a file that just landed in sealed/; never blocks."""
        self.runner.submit(Path(sealed_path).name)

    def drain(self, deadline_monotonic: float) -> int:
        """Compress and upload everything pending until the deadline; return #files left."""
        if not self.runner.threads:
            self.start()
        remaining = self.runner.drain(deadline_monotonic)
        self.metrics.set(PENDING_FILES, remaining)
        return remaining

    def stop(self) -> None:
        # one short budget for all threads: an upload stuck in a socket read must not hold the
        # exit (the file stays in ready/ and is confirmed by HEAD after the restart's 412)
        self.runner.stop(budget=2.0)

    def pending(self) -> int:
        return len(self.runner.pending_names())

    # -- helpers -------------------------------------------------------------------------

    def _refresh_pending(self) -> None:
        self.metrics.set(PENDING_FILES, self.pending())

    def _error(self, message: str) -> None:
        self.metrics.set(LAST_ERROR, " ".join(message.split())[:500])

    # -- compression ---------------------------------------------------------------------

    def _compress(self, name: str) -> str | None:
        sealed = self.dirs.sealed / name
        try:
            ready = compress_file(sealed, self.dirs, self.codec, self.level)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self._ship_from_memory(sealed, exc)
            return None
        self.metrics.incr(FILES_COMPRESSED)
        self._refresh_pending()
        return ready.name

    def _ship_from_memory(self, sealed: Path, cause: OSError) -> None:
        """The disk has no room for the compressed copy: compress in memory and upload it
        under the same key and checksum, then delete the sealed file. Uploads free the disk,
        so a full spool drains by itself once S3 answers."""
        log.warning(
            "spool disk full (%s): uploading %s without a ready/ copy", cause.strerror, sealed.name
        )
        codec = codec_named(self.codec)
        if codec.identity:  # same bytes: straight from the sealed file
            outcome = self.sink.deliver_as(sealed, sealed.name, file_sha256(sealed))
        else:
            name, data, sha256 = compress_to_memory(sealed, self.codec, self.level)
            outcome = self.sink.deliver_bytes(name, data, sha256)
        sealed.unlink(missing_ok=True)
        fsync_dir(self.dirs.sealed)
        self.metrics.incr(FILES_COMPRESSED)
        self._uploaded(outcome, sealed.name)

    def _compress_failed(self, name: str, exc: BaseException, delay: float, held: bool) -> None:
        if not isinstance(exc, OSError) or isinstance(exc, ChecksumConflict):
            # the upload from memory failed: named as the upload it is
            self._upload_failed(ready_name(name, self.codec), exc, delay, held)
            return
        # ENOSPC and friends: the sealed file is intact; it is tried again
        message = f"compressing {name} failed, retrying in {delay:.1f} s: {SECRETS.one_line(exc)}"
        log.error("%s", message)
        self._error(message)
        self.metrics.incr(COMPRESS_ERRORS)

    # -- upload --------------------------------------------------------------------------

    def _upload(self, name: str) -> None:
        path = self.dirs.ready / name
        outcome = self.sink.deliver(path)
        path.unlink(missing_ok=True)
        sidecar_path(path).unlink(missing_ok=True)
        fsync_dir(self.dirs.ready)
        self._uploaded(outcome, name)

    def _uploaded(self, outcome, name: str) -> None:
        self.metrics.incr(FILES_UPLOADED)
        if self._warned:  # S3 takes uploads again: the next refusal is news, logged at once
            self._warned = False
            self.warnings.reset_all()
        if outcome.result == "created":
            self.metrics.incr(BYTES_UPLOADED, outcome.size)
        self.metrics.set(LAST_UPLOAD_KEY, outcome.key)
        self.metrics.set(LAST_UPLOAD_AT, datetime.now(UTC).isoformat(timespec="seconds"))
        self._refresh_pending()
        log.debug("uploaded %s (%d bytes) to %s", name, outcome.size, self.sink.where(outcome.key))

    def _upload_failed(self, name: str, exc: BaseException, delay: float, held: bool) -> None:
        self.metrics.incr(UPLOAD_ERRORS)
        if isinstance(exc, ChecksumConflict):
            log.error("%s", exc)
            self._error(str(exc))
            return
        where = self.sink.where(self.sink.key_for(self.dirs.ready / name))
        message = (
            f"uploading {name} to {where} failed, retry in {delay:.1f} s: "
            f"{problem_line(exc, self.sink.cfg)}"
        )
        self._warned = True
        # one key for every refusal: a flapping network alternates error types
        self.warnings.warning("upload", "%s", message)
        self._error(message)
