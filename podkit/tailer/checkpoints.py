"""Checkpoints: acknowledged offsets in <state_dir>/checkpoints.json, written
atomically at most once per interval; hostile or corrupt entries refused."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

from ..fsutil import atomic_write
from .base import _Base, log
from .discovery import _FILE_FLAGS
from .files import FINGERPRINT_BYTES

CHECKPOINT_FILE = "checkpoints.json"
#: A checkpoint file larger than this is not a checkpoint this module wrote
#: (about 200 bytes a file): refused rather than parsed.
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024


def _read_state_file(path: str, limit: int) -> bytes:
    """The bytes of a state file: a regular file (a FIFO there would block the
    start-up forever), not a link, at most `limit` bytes (else ValueError)."""
    fd = os.open(path, _FILE_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > limit:
                raise ValueError(f"larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def checkpoint_entry_error(e: Any) -> str | None:
    """Why a checkpoint entry is not one this module writes, or None when it is."""
    if not isinstance(e, dict):
        return "not an object"
    for k in ("dev", "ino", "offset", "fp_len"):
        v = e.get(k)
        if type(v) is not int:  # bool is an int, and "12" or 1.5 are no offsets
            return f"{k} is not an integer"
        if v < 0:
            return f"{k} is negative"
    if e["fp_len"] > FINGERPRINT_BYTES:
        return f"fp_len is larger than {FINGERPRINT_BYTES}"
    fp = e.get("fp")
    if not isinstance(fp, str) or not _is_sha1(fp):
        return "fp is not a SHA-1 in hex"
    if not isinstance(e.get("path"), str) or not e["path"]:
        return "path is not a string"
    if not isinstance(e.get("partial", False), bool):
        return "partial is not a boolean"
    tail = e.get("tail")
    if tail is not None and (not isinstance(tail, str) or not _is_sha1(tail)):
        return "tail is not a SHA-1 in hex"
    return None


def _is_sha1(v: str) -> bool:
    return len(v) == 40 and not v.strip("0123456789abcdef")


class _Checkpoints(_Base):
    """Load and write the acknowledged offsets."""

    def _ckpt_path(self) -> str | None:
        d = self.cfg.state_dir
        return os.path.join(d, CHECKPOINT_FILE) if d else None

    def _load_checkpoints(self) -> None:
        path = self._ckpt_path()
        if path is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            data = json.loads(_read_state_file(path, MAX_CHECKPOINT_BYTES))
            if not isinstance(data, dict) or not isinstance(data.get("files"), list):
                raise ValueError("not a checkpoint object with a files list")
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError) as exc:
            # A corrupt checkpoint must not stop shipping: start over (at least once).
            log.error(
                "cannot read checkpoints; starting over", extra={"path": path, "error": str(exc)}
            )
            return
        for e in data["files"]:
            why = checkpoint_entry_error(e)
            if why is not None:
                # One bad entry costs its own file's position, not everyone's.
                log.warning(
                    "checkpoint entry discarded; its file is read as a new one",
                    extra={"path": path, "entry": str(e)[:200], "error": why},
                )
                continue
            self._saved[(e["dev"], e["ino"])] = e
            if e["fp_len"] == FINGERPRINT_BYTES:
                self._remember(e)

    def _write_checkpoint(self, force: bool = False) -> None:
        path = self._ckpt_path()
        if path is None or not self._dirty_ckpt:
            return
        now = time.monotonic()
        if not force and now - self._last_ckpt < self.cfg.checkpoint_interval:
            return
        self._last_ckpt = now
        self._dirty_ckpt = False
        entries = []
        for f in self._files + self._retired:
            if f.twin is not None or f.unverified:
                # Not read yet, and maybe a copy: after a restart it is matched by
                # content again rather than read from an offset of its own.
                continue
            f.update_fingerprint() if not f.closed else None
            entries.append(f.checkpoint())
        data = json.dumps({"version": 1, "files": entries}, separators=(",", ":")).encode()
        writer = self._ckpt_writer
        if force:
            # close() and a consumer's last word: written before returning (after
            # any write in flight, which is older and then skipped).
            self._ckpt_done(path, writer.write(writer.next(), path, data))
            return
        writer.submit(path, data, self._ckpt_done)

    def _ckpt_done(self, path: str, exc: OSError | None) -> None:
        if exc is not None:
            # The previous checkpoint is intact: a restart resends a little more.
            # Retried at the next interval; said once, not every second of a full disk.
            self._dirty_ckpt = True
            self.checkpoint_errors += 1
            if not self._ckpt_failing:
                self._ckpt_failing = True
                log.error(
                    "cannot write checkpoint; keeping the previous one and retrying",
                    extra={"path": path, "error": str(exc)},
                )
            return
        if self._ckpt_failing:
            self._ckpt_failing = False
            log.info("checkpoint written again", extra={"path": path})

    async def _ckpt_flushed(self) -> None:
        """Wait for the checkpoint write in flight (close() before its final one)."""
        await self._ckpt_writer.idle()


class CheckpointWriter:
    """Writes checkpoints in a worker thread: an fsync (about 3 ms of disk, far
    more on a busy node) never stalls the event loop, so the admin server,
    the reader and the sinks go on meanwhile.

    Atomicity is atomic_write's (temp file, fsync, rename). Order: each
    snapshot is numbered when taken, on the loop; a write skips a snapshot
    older than the one already on disk, and while one write runs only the
    newest snapshot waits (the ones in between are superseded), so an older
    checkpoint never replaces a newer one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one writer of the file at a time
        self._taken = 0  # the newest snapshot's number
        self._written = 0  # the number of the snapshot on disk
        self._pending: tuple[int, str, bytes] | None = None
        self._task: asyncio.Task[None] | None = None

    def next(self) -> int:
        self._taken += 1
        return self._taken

    def write(self, seq: int, path: str, data: bytes) -> OSError | None:
        """Write snapshot `seq` unless a newer one is on disk; the error, if any."""
        with self._lock:
            if seq <= self._written:
                return None
            try:
                atomic_write(path, data)
            except OSError as exc:
                return exc
            self._written = seq
            return None

    def submit(self, path: str, data: bytes, done: Callable[[str, OSError | None], None]) -> None:
        """Write in the background; `done(path, error)` runs on the loop after it."""
        self._pending = (self.next(), path, data)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._drain(done), name="checkpoint-writer"
            )

    async def _drain(self, done: Callable[[str, OSError | None], None]) -> None:
        while self._pending is not None:
            seq, path, data = self._pending
            self._pending = None
            done(path, await asyncio.to_thread(self.write, seq, path, data))

    async def idle(self) -> None:
        if self._task is not None:
            # Shielded: a cancelled close() must not leave the thread's result unread.
            await asyncio.shield(self._task)
