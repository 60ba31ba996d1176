"""The Tailer: its public API and the loop that discovers, reads, closes and
checkpoints, put together from the parts in this package."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..aio import wait_for
from .base import log
from .checkpoints import CheckpointWriter, _Checkpoints
from .compressed import compression
from .config import TailerConfig
from .discovery import SKIP_REASONS, _Discovery, _Skip
from .files import Chunk, _File, _fp_of
from .reading import _Reader
from .rotation import _Rotation

if TYPE_CHECKING:
    from ..metrics import Metrics


class Tailer(_Discovery, _Rotation, _Reader, _Checkpoints):
    """Follow the files matching `cfg.paths`; the guarantees are in `podkit.tailer`'s docstring."""

    def __init__(self, cfg: TailerConfig) -> None:
        if cfg.read_from not in ("head", "tail"):
            raise ValueError("read_from must be 'head' or 'tail'")
        self.cfg = cfg
        self.paths = [os.path.abspath(p) for p in cfg.paths]
        self.exclude = list(cfg.exclude)
        self._files: list[_File] = []  # open files, predecessors before successors
        self._by_key: dict[tuple[int, int], _File] = {}
        self._current: dict[str, _File] = {}  # matched path -> the file it names now
        self._retired: list[_File] = []  # closed, but chunks not all acknowledged
        self._saved: dict[tuple[int, int], dict[str, Any]] = {}  # loaded checkpoints
        #: Loaded checkpoints by fingerprint (whole FINGERPRINT_BYTES only) that no
        #: inode has claimed: a copy made while we were away resumes from one.
        self._lost: dict[str, dict[str, Any]] = {}
        self._queue: asyncio.Queue[Chunk | None] = asyncio.Queue()
        self._inflight = 0
        self._queued = 0
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._discover_now = True
        self._draining = False
        self._drained = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None
        self._dirty_ckpt = False
        self._last_ckpt = 0.0
        self._ckpt_writer = CheckpointWriter()
        self._last_poll = 0.0
        self._last_identity = 0.0
        self._multiline = re.compile(cfg.multiline_start) if cfg.multiline_start else None
        self._copy_name = ""
        self._moves: list[tuple[str, str]] = []  # (src, dest) renames seen by the watcher
        #: Counters for metrics: lines/bytes handed on, truncated lines, rotations, errors.
        self.lines_read = 0
        self.bytes_read = 0
        self.truncated_lines = 0
        self.rotations = 0
        self.truncations = 0
        self.read_errors = 0
        #: Matched paths refused (links out of the glob, FIFOs, loops, ...), by reason.
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)
        self._skips: dict[str, str] = {}  # path -> reason, as of the last discovery
        self._skips_next: dict[str, str] = {}  # ... and of the one running now
        #: Checkpoint writes that failed (the previous checkpoint was kept).
        self.checkpoint_errors = 0
        self._ckpt_failing = False
        self._watch_failing = False  # a directory could not be watched (said once)
        self.polling = False
        #: Set when the reader died; chunks() raises after the last chunk.
        self.error: BaseException | None = None

    async def start(self) -> None:
        """Load checkpoints, discover files, start reading. Returns after discovery."""
        self._load_checkpoints()
        self._discover(initial=True)
        self._resume_rotated()
        self._resume_copies()
        self._saved.clear()
        self._start_watcher()
        self._task = asyncio.create_task(self._run(), name="tailer")

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Chunks in file order; ends once `drain()` has read everything (or on close)."""
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                self._queue.put_nowait(None)  # later iterations end too
                if self.error is not None:
                    raise RuntimeError(f"tailer failed: {self.error}") from self.error
                return
            self._queued -= chunk.nbytes
            self._acked.set()
            yield chunk

    def ack(self, chunk: Chunk) -> None:
        """The consumer is done with `chunk`: its offsets may be checkpointed."""
        if chunk._acked:
            return
        chunk._acked = True
        self._inflight -= chunk.nbytes
        self._acked.set()
        f = chunk._file
        if f is None:
            return
        q = f.outstanding
        while q and q[0]._acked:
            c = q.popleft()
            f.ack_pos = c._end
            self._dirty_ckpt = True
        if f.closed and not q and f in self._retired:
            self._retired.remove(f)

    async def drain(self) -> None:
        """Stop discovering, read every file to its end, then end `chunks()`."""
        if self._task is None or self._closed:
            return
        self._draining = True
        self._wake.set()
        await self._drained.wait()

    async def close(self) -> None:
        """Stop reading, write the final checkpoint, release files and watchers."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._queue.put_nowait(None)
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        await self._ckpt_flushed()
        self._write_checkpoint(force=True)
        for f in self._files:
            f.close()
        self._files.clear()

    def checkpoint(self, force: bool = False) -> None:
        """Write acknowledged offsets now if due (or `force`); the reader does it too,
        but only while it runs, so a consumer still delivering after `drain()` calls this."""
        self._write_checkpoint(force=force)

    @property
    def lag_bytes(self) -> int:
        """Bytes written to followed files but not acknowledged yet."""
        total = 0
        for f in self._files:
            # Fresh sizes: while reading is paused, nothing else looks at them.
            with contextlib.suppress(OSError):
                if not f.compressed:
                    f.size = os.fstat(f.fd).st_size
            total += max(0, f.size - f.ack_pos)
        return total + sum(max(0, f.size - f.ack_pos) for f in self._retired)

    @property
    def files_watched(self) -> int:
        return len(self._files)

    @property
    def inflight_bytes(self) -> int:
        return self._inflight

    def skipped_files(self) -> list[dict[str, str]]:
        """Matched paths currently refused, and why, for status pages."""
        return [{"path": p, "reason": r} for p, r in self._skips.items()]

    def files(self) -> list[dict[str, Any]]:
        """Per-file state, for status pages."""
        return [
            {
                "path": f.path,
                "inode": f.ino,
                "size": f.size,
                "read": f.read_pos,
                "acknowledged": f.ack_pos,
                "rotated": not f.paths,
            }
            for f in self._files
        ]

    def _discover(self, initial: bool = False) -> None:
        self._discover_now = False
        self._last_poll = time.monotonic()
        if self._moves:
            self._catch_up_moves()
        matched = self._match()
        now_current: dict[str, _File] = {}
        for path, base in matched.items():
            try:
                st = os.stat(path)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    self._skip(path, "symlink_loop")
                continue
            if not stat.S_ISREG(st.st_mode):
                if not stat.S_ISDIR(st.st_mode):
                    self._skip(path, "not_regular", stat.filemode(st.st_mode))
                continue
            key = (st.st_dev, st.st_ino)
            old = self._current.get(path)
            f = self._by_key.get(key)
            if f is not None and not f.closed:
                # Same inode as a file already open (a rename into the glob, or unchanged).
                f.paths.add(path)
                now_current[path] = f
                if old is not None and old is not f:
                    old.paths.discard(path)
                continue
            f = self._open(path, initial, base)
            if f is None:
                continue
            if old is not None and old is not f:
                # Rename-and-create rotation: finish the old file before this one.
                old.paths.discard(path)
                f.after = old
                self.rotations += 1
                log.debug("rotated", extra={"path": path})
            now_current[path] = f
        for f in self._files:
            # Only the paths that name it now (a copy found at a truncation may have
            # been given a name discovery had not seen yet).
            f.paths = {p for p in f.paths if now_current.get(p) is f}
        self._current = now_current
        # Paths refused in this round stay known (warned once); the others may be
        # warned about again if they come back.
        self._skips, self._skips_next = self._skips_next, {}
        if self._watcher is not None:
            self._sync_watches()

    def _open(self, path: str, initial: bool, base: tuple[str, str]) -> _File | None:
        try:
            fd, st = self._open_checked(path, base)
        except _Skip as skip:
            self._skip(path, skip.reason, skip.detail)
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._skip(path, "symlink_loop")
            elif exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # not gone in a race
                self._skip(path, "open_failed", str(exc))
            return None
        key = (st.st_dev, st.st_ino)
        offset = 0
        restored = False  # the position comes from this inode's own checkpoint
        saved = self._saved.pop(key, None)
        if saved is not None:
            fp_len = saved["fp_len"]
            # A compressed file's size says nothing of its content's length.
            plain = compression(fd) is None
            if plain and (fp_len > st.st_size or saved["offset"] > st.st_size):
                # Shorter than what we had read: truncated while we were away, or the
                # entry is wrong. Every line is in what is there now: read it all.
                log.warning(
                    "checkpoint beyond the end of the file; reading it from the start",
                    extra={"path": path, "offset": saved["offset"], "size": st.st_size},
                )
            elif _fp_of(fd, fp_len).hex() == saved["fp"]:
                offset = saved["offset"]
                restored = True
                # Claimed by its own inode; otherwise a copy of it may still turn up.
                self._lost.pop(saved["fp"], None)
            else:
                log.info(
                    "inode reused by a new file; reading it from the start", extra={"path": path}
                )
        elif initial and self.cfg.read_from == "tail":
            offset = st.st_size
        f = _File(path, fd, st, offset, self.cfg.max_line_bytes)
        if restored and saved is not None and not f.matches_entry(saved, offset):
            # Same first bytes, other content before the offset: rewritten.
            log.info(
                "file rewritten while we were away; reading it from the start", extra={"path": path}
            )
            f.read_pos = f.emit_pos = f.ack_pos = 0
            f.tail = b""
            restored = False
            offset = 0
            self._remember(saved)
        f.joiner = self._new_joiner()
        # Read from 0 on no checkpoint of its own (a reused inode is no checkpoint):
        # unless its first bytes are those of a file we know.
        f.unverified = not restored and offset == 0
        if saved is not None and offset and offset == saved.get("offset") and saved.get("partial"):
            f.split.flushed = True
            f.partial_at = offset
        self._files.append(f)
        self._by_key[key] = f
        self._dirty_ckpt = True
        return f

    async def _run(self) -> None:
        try:
            # Not `while True`: a belt to podkit.aio.wait_for's braces, should a
            # cancel ever be swallowed (gh-86296), close() still ends this task.
            while not self._closed:
                if self._draining:
                    await self._drain_all()
                    return
                now = time.monotonic()
                if self._discover_now or now - self._last_poll >= self.cfg.poll_interval:
                    self._discover()
                    self._check_identity()
                elif now - self._last_identity >= 0.1:
                    # Often, and also while the consumer is behind and nothing is read:
                    # a copytruncate seen late is recovered from its copy only while
                    # the copy still holds what we had not read.
                    self._check_identity()
                progressed = self._read_round(now)
                self._flush_due(time.monotonic())
                self._close_idle(time.monotonic())
                self._write_checkpoint()
                if self._full():
                    self._acked.clear()
                    with contextlib.suppress(TimeoutError):
                        await wait_for(self._acked.wait(), min(0.1, self._tick()))
                    continue
                if progressed:
                    await asyncio.sleep(0)
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._wake.wait(), self._tick())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A consumer must not wait forever on a reader that died: chunks() raises.
            log.exception("tailer failed")
            self.error = exc
            raise
        finally:
            if self._draining or self._closed or self.error is not None:
                self._queue.put_nowait(None)
                self._drained.set()

    def _full(self) -> bool:
        """Reading pauses: too much unacknowledged, or the consumer is behind."""
        return (
            self._inflight >= self.cfg.max_buffer_bytes or self._queued >= self.cfg.max_queue_bytes
        )

    def _tick(self) -> float:
        """How long the loop may sleep: until the next poll, flush or checkpoint."""
        t = self.cfg.poll_interval
        if any(f.split.pending for f in self._files):
            t = min(t, max(0.05, self.cfg.partial_flush_timeout / 4))
        if self._multiline is not None:
            t = min(t, max(0.05, self.cfg.multiline_timeout / 4))
        if self._dirty_ckpt and self.cfg.state_dir:
            t = min(t, self.cfg.checkpoint_interval)
        return max(0.01, t)

    def _close_idle(self, now: float) -> None:
        wait = self.cfg.rotate_wait
        for f in list(self._files):
            if f.paths or not f.at_eof or (now - f.eof_since < wait and not f.is_copy):
                continue
            if f.split.pending or (f.joiner is not None and f.joiner.pending):
                self._flush_partial(f, force=True)
            log.debug("closing rotated file", extra={"path": f.path})
            self._forget(f)

    async def _drain_all(self) -> None:
        """Read every file to its end, hand on held lines, end the chunk stream."""
        self._discover()
        while True:
            while self._full():
                self._acked.clear()
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._acked.wait(), 1.0)
                self._write_checkpoint()
            progressed = self._read_round(time.monotonic())
            if not progressed:
                break
            await asyncio.sleep(0)
        for f in self._files:
            if f.split.pending or (f.joiner is not None and f.joiner.pending):
                self._flush_partial(f, force=True)


def register_metrics(metrics: Metrics, get: Callable[[], Tailer | None]) -> None:
    """Serve the tailer's refusals and failed checkpoint writes as the program's
    `files_skipped_total{reason}` and `checkpoint_errors_total` (read at scrape
    time from the tailer `get()` returns, which may not exist yet)."""
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.registry import Collector

    prefix = metrics.prefix

    class _TailerCollector(Collector):
        def collect(self) -> Any:
            t = get()
            skipped = CounterMetricFamily(
                prefix + "files_skipped",
                "Matched files not followed, by reason (links out of the glob's base "
                "directory, link loops, FIFOs and devices, /proc, unreadable, too deep).",
                labels=["reason"],
            )
            for reason in SKIP_REASONS:
                skipped.add_metric([reason], t.skipped.get(reason, 0) if t else 0)
            yield skipped
            yield CounterMetricFamily(
                prefix + "checkpoint_errors",
                "Checkpoint writes that failed (full disk, ...); the previous one was kept.",
                value=t.checkpoint_errors if t else 0,
            )

    metrics.registry.register(_TailerCollector())
