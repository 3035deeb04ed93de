"""sealed/ -> ready/: stream a sealed file through the codec, fsync, rename atomically.

The compressor also records the SHA-256 of the bytes it wrote in a sidecar
`ready/.{name}.sha256` (base64, S3's format). The uploader compares that value with the
checksum S3 reports for the object, so a confirmed upload proves that S3 holds exactly
the bytes the compressor produced, not merely what was on the disk at upload time.

Crash safety, step by step (each step leaves a state the next start understands):
    1. codec output -> ready/.{name}.tmp, fsync          crash: tmp removed at start, redo
    2. sidecar ready/.{name}.sha256 (atomic_write)        crash: orphan sidecar removed, redo
    3. rename tmp -> ready/{name}, fsync ready/           crash: sealed + ready both exist
    4. unlink sealed/{name}, fsync sealed/                        -> sealed copy is dropped
Memory stays bounded (CHUNK) whatever the file size.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

from collector.sink.codecs import DATA_SUFFIXES, Codec, codec_named
from collector.spool.layout import SpoolDirs, atomic_write, durable_rename, fsync_dir

CHUNK = 1 << 20  # 1 MiB: codec calls release the GIL on large buffers


def ready_name(sealed_name: str, codec: str) -> str:
    """`x.jsonl` -> `x.jsonl.gz` / `x.jsonl.zst` / `x.jsonl`."""
    stem = sealed_name.removesuffix(".jsonl")
    return stem + codec_named(codec).extension


def sealed_stem(name: str) -> str:
    """The `.jsonl`-less stem shared by a sealed file and its ready counterpart."""
    for ext in DATA_SUFFIXES:  # longest first
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def sidecar_path(ready_path: Path) -> Path:
    return ready_path.with_name(f".{ready_path.name}.sha256")


def tmp_path(ready_path: Path) -> Path:
    return ready_path.with_name(f".{ready_path.name}.tmp")


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def file_sha256(path: Path) -> str:
    """Base64 SHA-256 of a file, read in CHUNK pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return b64(digest.digest())


def recorded_sha256(ready_path: Path) -> str:
    """The compressor's checksum for a ready file; computed from the file when no sidecar exists."""
    try:
        value = sidecar_path(ready_path).read_text().strip()
    except FileNotFoundError:
        value = ""
    return value or file_sha256(ready_path)


class _HashingWriter:
    """A file wrapper that hashes everything written through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def _encode(source: BinaryIO, sink: _HashingWriter, codec: Codec, level: int) -> None:
    with codec.writer(sink, codec.clamp(level)) as encoder:  # type: ignore[arg-type]
        while block := source.read(CHUNK):
            encoder.write(block)


def already_ready(dirs: SpoolDirs, sealed_name: str) -> Path | None:
    """The ready file of any codec made from this sealed file (a crash between steps 3 and 4)."""
    stem = sealed_stem(sealed_name)
    for ext in DATA_SUFFIXES:
        candidate = dirs.ready / (stem + ext)
        if candidate.exists():
            return candidate
    return None


def compress_file(sealed: Path, dirs: SpoolDirs, codec: str, level: int = 1) -> Path:
    """Move `sealed` into ready/ through `codec`; return the ready path.

    On any OSError (ENOSPC...) the partial output is removed and the sealed file is kept.
    """
    done = already_ready(dirs, sealed.name)
    if done is not None:
        _unlink_durably(sealed)
        return done
    chosen = codec_named(codec)
    target = dirs.ready / ready_name(sealed.name, codec)
    partial = tmp_path(target)
    try:
        if chosen.identity:
            # same bytes: hash, record, rename across folders (one file system) instead of copying
            atomic_write(sidecar_path(target), file_sha256(sealed).encode())
            durable_rename(sealed, target, sync_data=False)  # sealed files are fsynced
            return target
        with open(sealed, "rb") as source, open(partial, "wb") as out:
            sink = _HashingWriter(out)
            _encode(source, sink, chosen, level)
            out.flush()
            os.fsync(out.fileno())
        atomic_write(sidecar_path(target), b64(sink.digest.digest()).encode())
        durable_rename(partial, target, sync_data=False)  # fsynced above
    except BaseException:
        sidecar = sidecar_path(target)
        for leftover in (partial, sidecar, sidecar.with_name(f".{sidecar.name}.tmp")):
            leftover.unlink(missing_ok=True)
        raise
    _unlink_durably(sealed)
    return target


def compress_to_memory(sealed: Path, codec: str, level: int = 1) -> tuple[str, bytes, str]:
    """(ready name, bytes, base64 SHA-256) of `sealed` through `codec`, without the disk.

    For a full disk: the bytes equal what compress_file would write (gzip without name or
    mtime, zstd with its checksum), so the object key and checksum are the same either way and
    an upload of one can never duplicate the other. Memory: the compressed file.
    """
    chosen = codec_named(codec)
    name = ready_name(sealed.name, codec)
    buffer = io.BytesIO()
    with open(sealed, "rb") as source:
        sink = _HashingWriter(buffer)
        _encode(source, sink, chosen, level)
    return name, buffer.getvalue(), b64(sink.digest.digest())


def clean_ready_leftovers(dirs: SpoolDirs) -> list[str]:
    """Remove what a crash left half-done in ready/: tmp files and sidecars without data."""
    removed: list[str] = []
    if not dirs.ready.is_dir():
        return removed
    for path in dirs.ready.iterdir():
        name = path.name
        if not name.startswith("."):
            continue
        orphan_sidecar = name.endswith(".sha256") and not (dirs.ready / name[1:-7]).exists()
        if name.endswith(".tmp") or orphan_sidecar:
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed


def _unlink_durably(path: Path) -> None:
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
