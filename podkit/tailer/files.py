"""Identity of a followed file (device, inode, fingerprint of its first bytes),
its read/emit/acknowledged offsets, and the chunks of lines read from it."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections import deque
from typing import Any

from ..linesplit import LineSplitter
from ..multiline import Joiner
from .compressed import Decompressed, compression, read_head

FINGERPRINT_BYTES = 256
#: Bytes before a position compared (as a SHA-1 in checkpoints) before a file
#: known only by its first bytes is resumed there.
TAIL_BYTES = 256


class Line:
    """One line (or one joined multiline record) of one file."""

    __slots__ = ("path", "read_time_ns", "text", "truncated")

    def __init__(self, text: str, path: str, truncated: bool, read_time_ns: int) -> None:
        self.text = text
        self.path = path
        self.truncated = truncated
        self.read_time_ns = read_time_ns

    def __repr__(self) -> str:
        return f"Line({self.text!r}, path={self.path!r}, truncated={self.truncated})"


class Chunk:
    """Consecutive lines of one file, read together.

    `texts` is the fast path (a list of str); `lines` builds `Line` objects on
    first use. `truncated` holds the indices of truncated lines. `nbytes` is
    the span of the file the chunk covers (newlines included).
    """

    __slots__ = (
        "_acked",
        "_end",
        "_file",
        "_lines",
        "file_head",
        "file_key",
        "nbytes",
        "path",
        "read_time_ns",
        "starts",
        "texts",
        "truncated",
    )

    def __init__(
        self,
        f: _File | None,
        path: str,
        texts: list[str],
        truncated: frozenset[int],
        read_time_ns: int,
        end: int,
        nbytes: int,
    ) -> None:
        self._file = f
        self.path = path
        self.texts = texts
        self.truncated = truncated
        self.read_time_ns = read_time_ns
        self._end = end
        self.nbytes = nbytes
        self._acked = False
        self._lines: list[Line] | None = None
        #: With `TailerConfig.identify`: (device, inode) and the file's first
        #: FINGERPRINT_BYTES bytes when the chunk was read (fewer while shorter).
        self.file_key: tuple[int, int] | None = None
        self.file_head = b""
        #: With `identify`: the file offset where each text (line or record) starts;
        #: None when it could not be told exactly (the file changed under us).
        self.starts: list[int] | None = None

    @property
    def start(self) -> int:
        """File offset where the chunk's span begins (its first line, or bytes skipped
        before it: the rest of an over-long line, the newline of a line flushed early)."""
        return self._end - self.nbytes

    @property
    def end(self) -> int:
        """File offset just after the chunk's last line."""
        return self._end

    @property
    def lines(self) -> list[Line]:
        if self._lines is None:
            p, t, tr = self.path, self.read_time_ns, self.truncated
            self._lines = [Line(s, p, i in tr, t) for i, s in enumerate(self.texts)]
        return self._lines

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        return f"Chunk({self.path!r}, lines={len(self.texts)}, end={self._end})"


class _File:
    """An open file being followed."""

    def __init__(
        self,
        path: str,
        fd: int,
        st: os.stat_result,
        offset: int,
        max_line_bytes: int = 256 * 1024,
    ) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size
        self.read_pos = offset  # next byte to read
        self.emit_pos = offset  # end of the last line handed on
        self.ack_pos = offset  # end of the last acknowledged line (the checkpoint)
        self.split = LineSplitter(max_line_bytes)  # the held partial line, if any
        self.carry_since = 0.0  # when it was last grown
        self.partial_at = -1  # the offset where that happened (kept in the checkpoint)
        self.is_copy = False  # copytruncate's copy: nobody writes to it any more
        #: Opened from 0 without a checkpoint: its first bytes are compared with the
        #: files already followed (and the checkpoints) before any of it is read.
        self.unverified = False
        self.seen_at = time.monotonic()
        #: Same content as this open file (a copy not truncated yet, `cp`): not read
        #: while that file is; takes over its position when it is truncated or goes.
        self.twin: _File | None = None
        self.outstanding: deque[Chunk] = deque()
        self.paths: set[str] = {path}  # glob matches that currently name this file
        self.after: _File | None = None  # predecessor to finish first (rotation)
        self.at_eof = False
        self.eof_since = 0.0
        self.closed = False
        self.read_failing = False
        self.joiner: Joiner | None = None
        #: A compressed rotation ("gzip", "zstd"): read at uncompressed offsets.
        self.compressed = compression(fd)
        self._z = Decompressed(fd, self.compressed) if self.compressed else None
        self._zhead = b""
        self.fp = b""
        self.fp_len = 0
        self.update_fingerprint()
        #: The last TAIL_BYTES bytes before read_pos (b"" until known): with the
        #: fingerprint, what tells a copy of this content from a file that only
        #: starts the same.
        self.tail = b""
        if offset and not self.compressed:
            self.tail = self.bytes_before(offset)

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def read_at(self, n: int, pos: int) -> bytes:
        """Up to `n` bytes of content at `pos` (uncompressed, for a compressed file)."""
        if self._z is not None:
            return self._z.pread(n, pos)
        return os.pread(self.fd, n, pos)

    def bytes_before(self, pos: int) -> bytes:
        """The TAIL_BYTES bytes of content before `pos` (fewer near the start)."""
        n = min(TAIL_BYTES, pos)
        try:
            data = self.read_at(n, pos - n)
        except OSError:
            return b""
        return data if len(data) == n else b""

    def same_before(self, pos: int, tail: bytes) -> bool:
        """The content before `pos` ends with `tail` (nothing known: True)."""
        return not tail or self.bytes_before(pos)[-len(tail) :] == tail

    def read_fingerprint(self, n: int) -> bytes:
        try:
            if self._z is None:
                return os.pread(self.fd, n, 0)
            if len(self._zhead) < FINGERPRINT_BYTES:  # unchanging once complete
                self._zhead = read_head(self.fd, FINGERPRINT_BYTES)
            return self._zhead[:n]
        except OSError:
            return b""

    def update_fingerprint(self) -> None:
        if self.fp_len >= FINGERPRINT_BYTES:
            return
        head = self.read_fingerprint(FINGERPRINT_BYTES)
        if self.fp and hashlib.sha1(head[: self.fp_len]).digest() != self.fp:
            return  # rewritten since: leave it to the identity check to notice
        if len(head) > self.fp_len or not self.fp:
            self.fp_len = len(head)
            self.fp = hashlib.sha1(head).digest()

    def fingerprint_matches(self) -> bool:
        """False when the first bytes changed (the file was truncated and rewritten)."""
        if self.fp_len == 0:
            return True
        head = self.read_fingerprint(self.fp_len)
        return len(head) == self.fp_len and hashlib.sha1(head).digest() == self.fp

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._z is not None:
                self._z.close()
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def checkpoint(self) -> dict[str, Any]:
        tail = self.tail if self.ack_pos == self.read_pos else b""
        if len(tail) != min(TAIL_BYTES, self.ack_pos):
            tail = b""  # partly known: the whole of it or nothing
        # A closed file's fd number may be another file's by now: never read through it.
        if not tail and self.ack_pos and not self.compressed and not self.closed:
            tail = self.bytes_before(self.ack_pos)
        entry = {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "fp": self.fp.hex(),
            "fp_len": self.fp_len,
            "offset": self.ack_pos,
            # The line before the offset went out without its newline: skip that newline.
            "partial": self.ack_pos == self.partial_at,
        }
        if tail:
            entry["tail"] = hashlib.sha1(tail).hexdigest()
        return entry

    def matches_entry(self, entry: dict[str, Any], pos: int) -> bool:
        """The content before `pos` is what `entry` (a checkpoint) saw before its offset."""
        want = entry.get("tail")
        if not want or not pos:
            return True
        return bool(hashlib.sha1(self.bytes_before(pos)).hexdigest() == want)


def _fp_of(fd: int, n: int) -> bytes:
    try:
        return hashlib.sha1(read_head(fd, n)).digest()
    except OSError:
        return b""
