"""The codecs a spool file can be shipped in: one source for every fact about them.

Each codec has a name (the `s3.compression` value and the collector role's
`collector_s3_compression` choices), the extension of its ready file and object key, the S3
Content-Type of its objects, the compression levels it accepts (`s3.compression_level`), and a
streaming writer and reader (bounded memory whatever the file size).

gzip is written by ISA-L's igzip (PyPI `isal`, conda-forge `python-isal`) when it is
installed, else by Python's zlib. Both write standard gzip (RFC 1952) that gzip, DuckDB and
Athena read; the header carries no file name and mtime 0, so the same input always gives the
same bytes with a given backend. ISA-L has levels 0-3 (0 is fast compression, not "store");
with the zlib fallback they map to zlib levels 1, 1, 6, 9.

zstd is written by `zstandard` with a content checksum (RFC 8878), levels -7..22.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

import zstandard

try:
    from isal import igzip
except ImportError:  # the zlib fallback: same format, slower
    igzip = None  # type: ignore[assignment]  # optional: None means absent

GZIP_BACKEND = "zlib" if igzip is None else "isal"
_ZLIB_LEVEL_FOR = {0: 1, 1: 1, 2: 6, 3: 9}  # ISA-L level -> zlib level, fallback only


def _gzip_writer(sink: BinaryIO, level: int) -> contextlib.AbstractContextManager[BinaryIO]:
    if igzip is not None:
        gz = igzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=level, mtime=0)
        return cast(contextlib.AbstractContextManager[BinaryIO], gz)  # its __enter__ says IGzipFile
    return gzip.GzipFile(
        filename="", mode="wb", fileobj=sink, compresslevel=_ZLIB_LEVEL_FOR[level], mtime=0
    )


def _gzip_reader(source: BinaryIO) -> BinaryIO:
    return (gzip if igzip is None else igzip).GzipFile(fileobj=source, mode="rb")


def _zstd_writer(sink: BinaryIO, level: int) -> contextlib.AbstractContextManager[BinaryIO]:
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return compressor.stream_writer(sink, closefd=False)


def _zstd_reader(source: BinaryIO) -> BinaryIO:
    return zstandard.ZstdDecompressor().stream_reader(source, closefd=False)


def _plain_writer(sink: BinaryIO, level: int) -> contextlib.AbstractContextManager[BinaryIO]:
    return contextlib.nullcontext(sink)


def _plain_reader(source: BinaryIO) -> BinaryIO:
    return source


@dataclass(frozen=True)
class Codec:
    """One codec. writer(sink, level) is a context manager: write bytes into it, and on exit
    the format is complete in `sink` (which stays open); reader(source) reads the original
    bytes back. `levels` are the accepted `s3.compression_level` values (any for "none")."""

    name: str
    extension: str
    content_type: str
    levels: range | None
    writer: Callable[[BinaryIO, int], contextlib.AbstractContextManager[BinaryIO]]
    reader: Callable[[BinaryIO], BinaryIO]

    @property
    def identity(self) -> bool:
        """True when the ready file holds the sealed file's bytes unchanged."""
        return self.levels is None

    def accepts(self, level: int) -> bool:
        return self.levels is None or level in self.levels

    def clamp(self, level: int) -> int:
        """`level` moved into `levels` (config validation refuses others; this is the backstop)."""
        if self.levels is None:
            return level
        return min(max(level, self.levels.start), self.levels.stop - 1)

    def describe_levels(self) -> str:
        if self.levels is None:
            return "any integer (ignored)"
        return f"an integer from {self.levels.start} to {self.levels.stop - 1}"


CODECS: dict[str, Codec] = {
    codec.name: codec
    for codec in (
        Codec("gzip", ".jsonl.gz", "application/gzip", range(0, 4), _gzip_writer, _gzip_reader),
        Codec("zstd", ".jsonl.zst", "application/zstd", range(-7, 23), _zstd_writer, _zstd_reader),
        Codec("none", ".jsonl", "application/x-ndjson", None, _plain_writer, _plain_reader),
    )
}
EXTENSIONS = {name: codec.extension for name, codec in CODECS.items()}
# Longest first, so ".jsonl.gz" is recognised before ".jsonl".
DATA_SUFFIXES = tuple(sorted(EXTENSIONS.values(), key=len, reverse=True))


def codec_named(name: str) -> Codec:
    """The codec called `name`; KeyError names the choices."""
    try:
        return CODECS[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}: one of {', '.join(CODECS)}") from None


def codec_of(file_name: str) -> Codec:
    """The codec of a ready file or object key, from its extension (".jsonl" is "none")."""
    for suffix in DATA_SUFFIXES:
        if file_name.endswith(suffix):
            return next(c for c in CODECS.values() if c.extension == suffix)
    raise ValueError(f"not a spool data file name: {file_name!r}")
