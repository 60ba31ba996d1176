"""Rotations compressed before they were read to the end (logrotate `compress`,
`delaycompress`; a logging library's `.gz` rollover).

A compressed file is recognised by its first bytes (gzip, and zstd when the
optional `zstandard` module imports), never by its name, and is read at
offsets of its *uncompressed* content: the same offsets, and the same
fingerprint, as the file it was made from. So a checkpoint of `app.log.1`
resumes inside `app.log.1.gz`, and a `.gz` of a file that was read to its end
ships nothing again. A compressed file is taken as complete and unchanging;
one still being written (a truncated stream) reads as "nothing yet".
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
from typing import IO, Any

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: Decompressed and dropped at a time when skipping forward to an offset.
_SKIP = 1 << 20

_zstd: Any
try:  # optional: zstd rotations are read only where the module is installed
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None


def compression(fd: int) -> str | None:
    """ "gzip", "zstd" or None (plain), from the file's first bytes."""
    try:
        magic = os.pread(fd, 4, 0)
    except OSError:
        return None
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    if magic == ZSTD_MAGIC and _zstd is not None:
        return "zstd"
    return None


class Decompressed:
    """pread() of a compressed file's uncompressed bytes: forward by decompressing
    (sequential reads cost nothing extra), backward by starting over."""

    def __init__(self, fd: int, kind: str) -> None:
        self.fd = fd
        self.kind = kind
        self._stream: IO[bytes] | Any = None
        self._pos = 0

    def _open(self) -> None:
        raw = io.BufferedReader(_PRead(self.fd))
        if self.kind == "gzip":
            self._stream = gzip.GzipFile(fileobj=raw, mode="rb")
        else:
            assert _zstd is not None
            self._stream = _zstd.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        self._pos = 0

    def close(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def pread(self, n: int, pos: int) -> bytes:
        """Up to `n` uncompressed bytes at `pos`; b"" at the end, or while the
        stream is incomplete or corrupt (it is started over at the next call)."""
        try:
            if self._stream is None or pos < self._pos:
                self.close()
                self._open()
            while self._pos < pos:
                skipped = self._stream.read(min(pos - self._pos, _SKIP))
                if not skipped:
                    return b""
                self._pos += len(skipped)
            data: bytes = self._stream.read(n)
        except (OSError, EOFError, ValueError) as exc:
            self.close()
            if isinstance(exc, OSError) and not _is_format_error(exc):
                raise
            return b""
        except Exception:  # zstandard.ZstdError: a stream cut short or not zstd after all
            self.close()
            return b""
        self._pos += len(data)
        return data


class _PRead(io.RawIOBase):
    """The file's bytes through pread() at a position of its own: readers of one
    fd (the head's fingerprint, the reader) never move each other, nor the fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = os.pread(self.fd, len(b), self.pos)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _is_format_error(exc: OSError) -> bool:
    """gzip.BadGzipFile is an OSError; a read error of the disk is one too."""
    return isinstance(exc, gzip.BadGzipFile) or exc.errno is None


def read_head(fd: int, n: int) -> bytes:
    """The first `n` bytes of the file's content, uncompressed if it is compressed."""
    kind = compression(fd)
    if kind is None:
        return os.pread(fd, n, 0)
    d = Decompressed(fd, kind)
    try:
        return d.pread(n, 0)
    finally:
        d.close()
