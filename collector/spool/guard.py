"""What keeps a spool safe under pressure: one owner, and room set aside for the worst moment.

SpoolLock: an exclusive flock on `{spool}/.lock`, held for the life of `collector run`, so two
collectors can never share a spool (the second's start-up recovery would seal the first's open
file under it). The lock file holds the owner's PID, so the refusal can name it. flock locks
die with their process, so a kill -9 or a reboot never leaves a stale lock. `status`, `check`,
`report` and `export` only read the spool and do not take it.

Reserve: a file `{spool}/.reserve` preallocated at start (posix_fallocate, real blocks, not a
sparse file) as large as the writer may hold in memory. When the disk is full at stop, the
reserve is released and what memory held is written into the room it leaves, so a stop never
drops what X delivered. The next start sets the reserve aside again when there is room.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os

from collector.errors import SpoolLocked
from collector.spool.layout import SpoolDirs

log = logging.getLogger(__name__)

# The largest reserve (and so the most the writer holds in memory while the disk refuses).
RESERVE_MAX_BYTES = 32 * 1024 * 1024
RESERVE_SHARE = 0.10  # never more than this share of the spool's file system


class SpoolLock:
    """The spool's exclusive lock; `acquire()` raises SpoolLocked naming the holder's PID."""

    def __init__(self, dirs: SpoolDirs) -> None:
        self.path = dirs.lock_file
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            who = f"pid {holder}" if holder else "another process"
            raise SpoolLocked(
                f"spool.dir {self.path.parent} is in use by another `collector run` ({who}); "
                "one collector per spool: stop that one first or give this one its own spool.dir"
            ) from None
        with contextlib.suppress(OSError):  # the PID is for the refusal's message only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def reserve_size(dirs: SpoolDirs) -> int:
    """Bytes to set aside: RESERVE_MAX_BYTES, at most RESERVE_SHARE of the file system."""
    try:
        disk = os.statvfs(dirs.root)
    except OSError:
        return RESERVE_MAX_BYTES
    share = int(disk.f_blocks * disk.f_frsize * RESERVE_SHARE)
    return max(64 * 1024, min(RESERVE_MAX_BYTES, share))


class Reserve:
    """The preallocated `.reserve` file: `size` bytes of real disk held back until `release()`."""

    def __init__(self, dirs: SpoolDirs, size: int) -> None:
        self.path = dirs.reserve_file
        self.size = size
        self.held = 0  # bytes actually set aside (0 when the disk had no room at start)

    def set_aside(self) -> bool:
        """Preallocate the reserve; False (logged) when the disk has no room for it now."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            log.warning(
                "cannot set aside %d bytes in %s for a stop with the disk full: %s",
                self.size,
                self.path,
                exc,
            )
            self.held = 0
            return False
        self.held = self.size
        return True

    def release(self) -> int:
        """Give the reserve back to the file system; returns the bytes freed."""
        freed, self.held = self.held, 0
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return freed


def free_bytes(dirs: SpoolDirs) -> int | None:
    """Bytes of the spool's file system available to the collector (statvfs f_bavail)."""
    try:
        disk = os.statvfs(dirs.root)
    except OSError:
        return None
    return disk.f_bavail * disk.f_frsize


def free_percent(dirs: SpoolDirs) -> float | None:
    try:
        disk = os.statvfs(dirs.root)
    except OSError:
        return None
    return 100.0 * disk.f_bavail / disk.f_blocks if disk.f_blocks else None
