"""Append-only NDJSON files holding whole records (the file sink, the dead-letter file)."""

from __future__ import annotations

import logging
import os
import stat
import threading

log = logging.getLogger("podkit.sinks")  # one logger for every sink, as before the split


class _DiskError(OSError):
    """A write to a sink's file failed (after it was cut back to whole records)."""


class _AppendFile:
    """An NDJSON file appended to in whole records: a failed write leaves nothing.

    A write can fail part-way: ENOSPC on a full filesystem, EFBIG past
    RLIMIT_FSIZE (after a short write up to the limit), EIO. The bytes written
    so far would be a torn record, glued to the next one when the write is
    retried; so the file is truncated back to its size before the write. If
    even that fails, the cut is made before the next write. A file found with
    a torn last record when opened (a kill during a write) is cut back too:
    the record was not acknowledged, so it is written again. Only regular
    files are cut (a FIFO or /dev/stdout cannot be). Reopened when someone
    rotates or removes it. Thread-safe, so writes can run off the event loop.
    """

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._cut: int | None = None  # truncate to this size before the next write
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ino:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._ino, self._cut = fd, (st.st_dev, st.st_ino), None
        if stat.S_ISREG(st.st_mode) and st.st_size:
            self._cut = _last_newline_end(self.path, st.st_size)
            if self._cut != st.st_size:
                log.warning(
                    "file ended in a torn record; cutting it off",
                    extra={"path": self.path, "bytes": st.st_size - self._cut},
                )
            else:
                self._cut = None
        return fd

    def open(self) -> None:
        with self._lock:
            self._open()

    def append(self, data: bytes) -> None:
        with self._lock:
            try:
                self._append(data)
            except OSError as exc:
                raise _DiskError(exc.errno, f"{self.path}: {exc.strerror or exc}") from None

    def _append(self, data: bytes) -> None:
        fd = self._open()
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
        size = st.st_size
        if regular and self._cut is not None:
            os.ftruncate(fd, self._cut)
            size, self._cut = self._cut, None
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)  # short writes happen (RLIMIT_FSIZE, a full disk)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            if regular:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    self._cut = size
            raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _last_newline_end(path: str, size: int) -> int:
    """The size of `path` up to and including its last newline (0 if none)."""
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            i = block.rfind(b"\n")
            if i >= 0:
                return start + i + 1
            end = start
    return 0
