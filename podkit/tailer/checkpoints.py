"""Checkpoints: acknowledged offsets in <state_dir>/checkpoints.json, written
atomically at most once per interval; hostile or corrupt entries refused."""

from __future__ import annotations

import json
import os
import stat
import time
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
        data = json.dumps({"version": 1, "files": entries}, separators=(",", ":"))
        try:
            atomic_write(path, data.encode())
        except OSError as exc:
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
