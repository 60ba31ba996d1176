"""Follow log files: discovery, identity, checkpoints, rotation, at-least-once.

The on-disk contract, stated once:

* A file is identified by device + inode + a fingerprint (SHA-1) of its first
  `FINGERPRINT_BYTES` bytes (fewer while the file is shorter). A reused inode
  with different first bytes is a new file; a file shorter than its offset was
  truncated (copytruncate) and starts again at 0.
* `<state_dir>/checkpoints.json` holds, for every open file, the offset up to
  which the consumer acknowledged every line (`ack()`): never an offset that
  was only read. It is replaced atomically (temp file, fsync, rename, fsync of
  the directory) at most once per `checkpoint_interval` and at `close()`.
* A renamed file is kept open and read to its end before its successor at the
  same path is read; it is closed once it has been idle at EOF for
  `rotate_wait` and no glob matches it any more. After a restart, a
  checkpointed file that was renamed away is looked up by inode in its old
  directory and read to its end first.
* Files are opened without following symbolic links out of the glob: every
  path component below the glob's base directory (the part of the pattern
  before its first wildcard) is opened with `O_NOFOLLOW` relative to the one
  before it, and a link is resolved and followed only when its target lies
  inside that base directory. `follow_symlinks` lifts that limit (a writer of
  the volume can then make the program read any file it can read). Either
  way, FIFOs, devices and sockets, and with `follow_symlinks` anything under
  /proc, /sys or /dev, are never opened; a link loop is reported, never
  followed, and never stops discovery. Each refused path is logged once and
  counted by reason (`skipped`).
* A checkpoint entry that is not what this module writes (wrong types,
  negative or impossible values, an offset beyond the end of the file, a
  fingerprint longer than the file) is discarded with one warning, and its
  file is read as a file seen for the first time (from 0 when the offset is
  beyond its end: the file was truncated while we were away); an unreadable
  checkpoint file likewise for all files. A checkpoint that cannot be written
  (full disk) leaves the previous one in place, is logged once, and is
  retried at the next interval.
* A last line without newline is held until the newline arrives or
  `partial_flush_timeout` passes (and at drain). A line longer than
  `max_line_bytes` is cut to that length and marked truncated; the rest of it
  is skipped without buffering it. Invalid UTF-8 is replaced (U+FFFD).

The hot path reads `chunk_bytes` (1 MiB) at a time, decodes the block once and
splits it once; per-line Python work happens only for over-long lines or when
multiline joining is on. Reading pauses while more than `max_buffer_bytes` of
read lines are unacknowledged, so memory stays bounded when the consumer
(a sink that is down) stalls: the files themselves are the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import glob
import hashlib
import json
import logging
import os
import re
import stat
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .aio import wait_for
from .fsutil import atomic_write
from .multiline import Joiner
from .options import option

if TYPE_CHECKING:
    from .metrics import Metrics
    from .program import Program

log = logging.getLogger("podkit.tailer")

FINGERPRINT_BYTES = 256
CHECKPOINT_FILE = "checkpoints.json"
#: A checkpoint file larger than this is not a checkpoint this module wrote
#: (about 200 bytes a file): refused rather than parsed.
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024
_GLOB_CHARS = re.compile(r"[*?\[]")
#: Why a matched path was not followed (the `reason` label of files_skipped_total).
SKIP_REASONS = (
    "symlink_outside",
    "symlink_loop",
    "not_regular",
    "special_file",
    "open_failed",
    "too_deep",
)
#: Directories below a glob's base directory that `**` descends at most: a tree
#: made deeper than this (to exhaust the stack) is cut there and reported.
MAX_DEPTH = 64
#: Pseudo-filesystems a followed link may not lead into, even with follow_symlinks:
#: /proc/self/environ holds the program's environment, /dev and /sys devices.
_SPECIAL_DIRS = ("/proc", "/sys", "/dev")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC

FOLLOW_SYMLINKS_HELP = (
    "follow symbolic links to files outside the glob's base directory; anyone who can "
    "write the volume can then make the program read any file it can read (FIFOs, "
    "devices, /proc, /sys and /dev stay refused)"
)


#: Most frequent checkpoint write. A kill -9 resends what was acknowledged since
#: the last write (plus what was in flight): at 100k lines/s, 50 ms is 5,000
#: lines, under 1% of a 10 s run (measured in docs/benchmarks.md). A write is
#: one small file, fsync'd: about 3 ms of disk and 0.3 ms of CPU here.
CHECKPOINT_INTERVAL = 0.05


def checkpoint_interval_option() -> Any:
    """`--checkpoint-interval`, declared once for every program that checkpoints a tailer."""
    return option(
        f"{int(CHECKPOINT_INTERVAL * 1000)}ms",
        kind="duration",
        min=0,
        help="most frequent checkpoint write: after a kill -9, what was acknowledged "
        "within it (and what was in flight) is sent again",
    )


def follow_symlinks_option() -> Any:
    """The `--follow-symlinks` option, declared once for every program that tails files."""
    return option(False, help=FOLLOW_SYMLINKS_HELP, env_alias=False)


@dataclass
class TailerConfig:
    paths: list[str]
    exclude: list[str] = field(default_factory=list)
    #: Directory for checkpoints.json; None keeps no checkpoints.
    state_dir: str | None = None
    #: Where a file first seen at start-up (without a checkpoint) is read from.
    read_from: str = "head"
    max_line_bytes: int = 256 * 1024
    partial_flush_timeout: float = 5.0
    poll_interval: float = 1.0
    checkpoint_interval: float = CHECKPOINT_INTERVAL
    multiline_start: str | None = None
    multiline_max_lines: int = 500
    multiline_timeout: float = 3.0
    #: Unacknowledged bytes at which reading pauses.
    max_buffer_bytes: int = 16 * 1024 * 1024
    #: Read-ahead: queued chunks the consumer has not taken yet, in bytes. Reading
    #: further ahead of a slower consumer gains nothing and costs memory.
    max_queue_bytes: int = 2 * 1024 * 1024
    #: Most lines in one chunk (0: no limit). A consumer that acknowledges per
    #: batch sets its batch size here, so no chunk spans two batches and a
    #: crash re-sends no more than the batches in flight.
    max_chunk_lines: int = 0
    chunk_bytes: int = 1024 * 1024
    #: How long a renamed/deleted file idle at EOF stays open for late writes.
    rotate_wait: float = 5.0
    #: Poll instead of inotify (filesystems without inotify, tests).
    force_polling: bool = False
    #: Bytes read from one file per round before the others get a turn.
    fair_share_bytes: int = 4 * 1024 * 1024
    #: Give each chunk its file's identity (`file_key`, `file_head`), so a consumer
    #: can derive ids that are the same when a line is read again after a restart.
    identify: bool = False
    #: Follow links to targets outside the glob's base directory (see the module doc).
    follow_symlinks: bool = False
    #: How long a new file shorter than FINGERPRINT_BYTES whose bytes so far are the
    #: start of a followed file waits before it is read as a new file (a copy being
    #: written is complete well within it).
    identify_wait: float = 1.0


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

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        self.size = st.st_size
        self.read_pos = offset  # next byte to read
        self.emit_pos = offset  # end of the last line handed on
        self.ack_pos = offset  # end of the last acknowledged line (the checkpoint)
        self.carry = b""  # the start of an unfinished line
        self.carry_since = 0.0
        self.head: bytes | None = None  # first max_line_bytes of an over-long line
        self.skipping = False  # discarding the rest of an over-long line
        self.flushed_partial = False  # a held line went out before its newline came
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
        self.fp = b""
        self.fp_len = 0
        self.update_fingerprint()

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def read_fingerprint(self, n: int) -> bytes:
        try:
            return os.pread(self.fd, n, 0)
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
            with contextlib.suppress(OSError):
                os.close(self.fd)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "dev": self.dev,
            "ino": self.ino,
            "fp": self.fp.hex(),
            "fp_len": self.fp_len,
            "offset": self.ack_pos,
            # The line before the offset went out without its newline: skip that newline.
            "partial": self.ack_pos == self.partial_at,
        }


def _fp_of(fd: int, n: int) -> bytes:
    try:
        return hashlib.sha1(os.pread(fd, n, 0)).digest()
    except OSError:
        return b""


def _split_glob(pattern: str) -> tuple[str, list[str]]:
    """(base, components): the longest directory prefix of a glob without glob
    characters, and the components of the pattern below it."""
    parts = pattern.split(os.sep)
    out: list[str] = []
    for p in parts[:-1]:
        if _GLOB_CHARS.search(p):
            break
        out.append(p)
    base = os.sep.join(out) or (os.sep if pattern.startswith(os.sep) else ".")
    return base, [p for p in parts[len(out) :] if p]


def _base_dir(pattern: str) -> str:
    return _split_glob(pattern)[0]


def watch_log_volume(program: Program, patterns: list[str], files: int) -> None:
    """What "ready" means for a program that tails (logship, logformat --path):
    every glob's base directory exists. Named `log-volume` on `/readyz?verbose`
    and `/`; a missing one and no matching file are also said once at start."""
    patterns = list(patterns)
    program.readiness("log-volume", lambda: missing_bases(patterns))
    why = missing_bases(patterns)
    if why:
        program.log.warning("not ready until the log volume exists", extra={"reason": why})
    elif not files:
        program.log.warning("no file matches yet", extra={"path": patterns})


def missing_bases(patterns: list[str]) -> str | None:
    """None when every glob's base directory (the part before its first
    wildcard) exists, else a reason naming the first that does not: the log
    volume is not mounted. A readiness check of the programs that tail: files
    that do not exist yet are normal (the app writes them), a directory that
    does not exist is a pod spec that forgot the volume."""
    for pattern in patterns:
        base = _base_dir(os.path.abspath(pattern))
        if not os.path.isdir(base):
            return f"{base} does not exist (is the volume that holds {pattern} mounted?)"
    return None


def _within(path: str, base: str) -> bool:
    """`path` (resolved) is `base` or below it."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _special(path: str) -> bool:
    return any(_within(path, d) for d in _SPECIAL_DIRS)


class _Skip(Exception):
    """A matched path that must not be opened, and why (one of SKIP_REASONS)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class _Link(Exception):
    """A component below the base directory is a symbolic link."""


def _open_regular_at(name: str, dir_fd: int | None) -> tuple[int, os.stat_result]:
    """Open a regular file without following a link at its last component.

    Checked before opening (opening a device can have effects: a tape rewinds,
    a watchdog arms) and after (it may have been swapped in between).
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise _Link(name)
    if not stat.S_ISREG(st.st_mode):
        raise _Skip("not_regular", stat.filemode(st.st_mode))
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Link(name) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Skip("not_regular", stat.filemode(st.st_mode))
    return fd, st


def _open_beneath(base_real: str, rel: str) -> tuple[int, os.stat_result]:
    """Open `base_real/rel`, every component with O_NOFOLLOW relative to the one
    before it, so that nothing, not even a link swapped in meanwhile, leads out."""
    parts = [p for p in rel.split(os.sep) if p and p != "."]
    if not parts or ".." in parts:
        raise _Skip("symlink_outside", rel)
    dfd = os.open(base_real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Link(part) from None
                raise
            os.close(dfd)
            dfd = nfd
        return _open_regular_at(parts[-1], dfd)
    finally:
        os.close(dfd)


class Tailer:
    """Follow the files matching `cfg.paths`; see the module docstring for guarantees."""

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
        self._last_poll = 0.0
        self._last_identity = 0.0
        self._started = False
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
        self.polling = False
        #: Set when the reader died; chunks() raises after the last chunk.
        self.error: BaseException | None = None

    # -- public API ----------------------------------------------------------

    async def start(self) -> None:
        """Load checkpoints, discover files, start reading. Returns after discovery."""
        self._load_checkpoints()
        self._discover(initial=True)
        self._resume_rotated()
        self._saved.clear()
        self._started = True
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

    # -- discovery -----------------------------------------------------------

    def _excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        for pat in self.exclude:
            if fnmatch.fnmatchcase(path, pat) or (
                "/" not in pat and fnmatch.fnmatchcase(name, pat)
            ):
                return True
        return False

    def _match(self) -> dict[str, tuple[str, str]]:
        """Matched paths, each with its glob's base directory (as given, and resolved)."""
        seen: dict[str, tuple[str, str]] = {}
        for pat in self.paths:
            base, parts = _split_glob(pat)
            try:
                base_real = os.path.realpath(base, strict=True)
                st = os.stat(base_real)
            except OSError:
                continue
            found: list[str] = []
            key = (st.st_dev, st.st_ino)
            self._walk(base, base_real, parts, 0, found, {key}, set())
            for p in sorted(found):
                if p not in seen and not self._excluded(p):
                    seen[p] = (base, base_real)
        return seen

    def _walk(
        self,
        d: str,
        base_real: str,
        parts: list[str],
        i: int,
        out: list[str],
        chain: set[tuple[int, int]],
        visited: set[tuple[int, int, int]],
    ) -> None:
        """glob.glob(recursive=True), but safe in a tree someone else writes.

        glob follows every link to a directory, so `a -> .` and `b -> .` make it
        walk 2^40 paths; here each directory is walked once per pattern
        component, a link back to a directory being walked is reported as a
        loop, and links leading out of the base directory are not entered
        unless `follow_symlinks`. Hidden names match only a pattern that starts
        with a dot, as in glob.
        """
        part = parts[i]
        last = i == len(parts) - 1
        if part == "**":
            if not last:
                self._walk(d, base_real, parts, i + 1, out, chain, visited)
            names = [n for n in self._listdir(d) if not n.startswith(".")]
            for n in names:
                p = os.path.join(d, n)
                if last:
                    out.append(p)
                key = self._enter(p, base_real, chain, visited, i)
                if key is not None:
                    self._walk(p, base_real, parts, i, out, chain | {key}, visited)
            return
        if glob.has_magic(part):
            hidden = part.startswith(".")
            names = [
                n
                for n in self._listdir(d)
                if fnmatch.fnmatchcase(n, part) and (hidden or not n.startswith("."))
            ]
        else:
            names = [part] if os.path.lexists(os.path.join(d, part)) else []
        for n in names:
            p = os.path.join(d, n)
            if last:
                out.append(p)
                continue
            key = self._enter(p, base_real, chain, visited, i + 1)
            if key is not None:
                self._walk(p, base_real, parts, i + 1, out, chain | {key}, visited)

    @staticmethod
    def _listdir(d: str) -> list[str]:
        try:
            with os.scandir(d) as it:
                return [e.name for e in it]
        except OSError:
            return []

    def _enter(
        self,
        p: str,
        base_real: str,
        chain: set[tuple[int, int]],
        visited: set[tuple[int, int, int]],
        i: int,
    ) -> tuple[int, int] | None:
        """The directory `p` to walk next (its key), or None: not a directory,
        a link that may not be followed, a loop, too deep, or walked already."""
        try:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(p, strict=True)
                st = os.stat(real)
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if not self.cfg.follow_symlinks and not _within(real, base_real):
                    self._skip(p, "symlink_outside", real)
                    return None
                if _special(real) and not _within(base_real, real):
                    self._skip(p, "special_file", real)
                    return None
                if (st.st_dev, st.st_ino) in chain:
                    self._skip(p, "symlink_loop", real)
                    return None
            elif not stat.S_ISDIR(st.st_mode):
                return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._skip(p, "symlink_loop")
            return None
        if len(chain) > MAX_DEPTH:
            self._skip(p, "too_deep")
            return None
        key = (st.st_dev, st.st_ino)
        if (*key, i) in visited:
            return None
        visited.add((*key, i))
        return key

    def _skip(self, path: str, reason: str, detail: str = "") -> None:
        """Refuse `path`: one warning and one count per path (discovery repeats)."""
        if self._skips.get(path) != reason and self._skips_next.get(path) != reason:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            if reason == "open_failed":
                self.read_errors += 1
            log.warning(
                "not following file: %s",
                reason.replace("_", " "),
                extra={"path": path, "reason": reason, "detail": detail or None},
            )
        self._skips_next[path] = reason

    def _base_for(self, path: str) -> tuple[str, str]:
        """The base directory (given, resolved) of the glob whose tree holds `path`."""
        best: tuple[str, str] | None = None
        for pat in self.paths:
            base, _ = _split_glob(pat)
            if _within(path, base) and (best is None or len(base) > len(best[0])):
                best = (base, base)
        if best is None:
            best = (os.path.dirname(path), os.path.dirname(path))
        try:
            return best[0], os.path.realpath(best[0], strict=True)
        except OSError:
            return best

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
            for f in self._files:
                self._watcher.add(os.path.dirname(f.path))

    def _open_checked(self, path: str, base: tuple[str, str]) -> tuple[int, os.stat_result]:
        """Open the regular file `path` matched under `base`; _Skip when it may not be read."""
        if self.cfg.follow_symlinks:
            real = os.path.realpath(path, strict=True)
            if _special(real) and not _within(base[1], real):
                raise _Skip("special_file", real)
            return _open_regular_at(real, None)
        try:
            return _open_beneath(base[1], os.path.relpath(path, base[0]))
        except _Link:
            pass
        # A link below the base directory: follow it only if it stays inside.
        real = os.path.realpath(path, strict=True)
        if not _within(real, base[1]):
            raise _Skip("symlink_outside", real) from None
        try:
            return _open_beneath(base[1], os.path.relpath(real, base[1]))
        except _Link:
            # Resolved, then a link again: it is being swapped under us.
            raise _Skip("symlink_outside", real) from None

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
        saved = self._saved.pop(key, None)
        if saved is not None:
            fp_len = saved["fp_len"]
            if fp_len > st.st_size or saved["offset"] > st.st_size:
                # Shorter than what we had read: truncated while we were away, or the
                # entry is wrong. Every line is in what is there now: read it all.
                log.warning(
                    "checkpoint beyond the end of the file; reading it from the start",
                    extra={"path": path, "offset": saved["offset"], "size": st.st_size},
                )
            elif _fp_of(fd, fp_len).hex() == saved["fp"]:
                offset = saved["offset"]
                # Claimed by its own inode; otherwise a copy of it may still turn up.
                self._lost.pop(saved["fp"], None)
            else:
                log.info(
                    "inode reused by a new file; reading it from the start", extra={"path": path}
                )
        elif initial and self.cfg.read_from == "tail":
            offset = st.st_size
        f = _File(path, fd, st, offset)
        f.joiner = self._new_joiner()
        f.unverified = saved is None and offset == 0
        if saved is not None and offset and offset == saved.get("offset") and saved.get("partial"):
            f.flushed_partial = True
            f.partial_at = offset
        self._files.append(f)
        self._by_key[key] = f
        self._dirty_ckpt = True
        return f

    def _resume_rotated(self) -> None:
        """Find checkpointed files that were renamed away while we were down."""
        for key, saved in list(self._saved.items()):
            d = os.path.dirname(str(saved.get("path", "")))
            if not d or not os.path.isdir(d):
                continue
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) != key or not stat.S_ISREG(st.st_mode):
                    continue
                path = str(saved["path"])
                f = self._open(e.path, initial=False, base=self._base_for(path))
                if f is None or (f.read_pos == 0 and saved["offset"] != 0):
                    # Fingerprint mismatch: not our file after all.
                    if f is not None:
                        self._forget(f)
                    break
                f.path = path  # records keep the name the lines were written under
                f.paths.clear()
                # Read it before the file now at its old path.
                self._files.remove(f)
                self._files.insert(0, f)
                succ = self._current.get(path)
                if succ is not None and succ is not f:
                    succ.after = f
                log.info("resuming a file renamed while stopped", extra={"path": e.path})
                break

    def _forget(self, f: _File) -> None:
        for t in self._files:
            if t.twin is f:
                # The original goes (deleted, renamed away and idle): its copy
                # continues from where it was.
                t.twin = None
                self._take_over(t, f)
        f.close()
        if f in self._files:
            self._files.remove(f)
        if self._by_key.get(f.key) is f:
            del self._by_key[f.key]
        for p in list(f.paths):
            if self._current.get(p) is f:
                del self._current[p]
        if f.outstanding:
            self._retired.append(f)
        self._dirty_ckpt = True

    def _start_watcher(self) -> None:
        from .watch import Watcher

        dirs = {_base_dir(p) for p in self.paths} | {os.path.dirname(f.path) for f in self._files}
        recursive = any("**" in p for p in self.paths)
        self._watcher = Watcher(
            [d for d in dirs if os.path.isdir(d)],
            self._on_change,
            recursive=recursive,
            poll_interval=self.cfg.poll_interval,
            force_polling=self.cfg.force_polling,
        )
        try:
            self._watcher.start()
            self.polling = self._watcher.polling
        except Exception as exc:  # watching is an optimisation; polling always runs
            log.warning("cannot watch directories; polling only", extra={"error": str(exc)})
            self._watcher = None
            self.polling = True

    def _on_change(self, change: Any) -> None:
        if change.kind in ("created", "moved", "deleted"):
            self._discover_now = True
            if change.kind == "moved" and change.dest and self._matches(change.path):
                self._moves.append((change.path, change.dest))
        self._wake.set()

    def _matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.paths) and not self._excluded(path)

    def _catch_up_moves(self) -> None:
        """Open files renamed away before discovery ever saw them (fast rotation).

        Without this, a file created and rotated between two discoveries would
        never be read: its new name no longer matches the glob.
        """
        moves, self._moves = self._moves, []
        for src, dest in moves:
            try:
                st = os.lstat(dest)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in self._by_key or not stat.S_ISREG(st.st_mode):
                continue
            f = self._open(dest, initial=False, base=self._base_for(src))
            if f is None:
                continue
            f.path = src  # its lines were written under the name the glob matched
            f.paths = {src}  # stands in as src's current file until discovery runs
            old = self._current.get(src)
            if old is not None and old is not f:
                old.paths.discard(src)
                f.after = old
            self._current[src] = f
            self.rotations += 1
            log.debug("caught a file rotated before discovery", extra={"path": dest})

    # -- reading ---------------------------------------------------------------

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
        if any(f.carry or f.head is not None for f in self._files):
            t = min(t, max(0.05, self.cfg.partial_flush_timeout / 4))
        if self._multiline is not None:
            t = min(t, max(0.05, self.cfg.multiline_timeout / 4))
        if self._dirty_ckpt and self.cfg.state_dir:
            t = min(t, self.cfg.checkpoint_interval)
        return max(0.01, t)

    def _check_identity(self) -> None:
        """Detect copytruncate that the file already outgrew: its first bytes changed."""
        self._last_identity = time.monotonic()
        for f in self._files:
            # Even at offset 0: first bytes we fingerprinted are gone, so the
            # content was copied away and truncated before we read any of it.
            if f.fp_len and not f.fingerprint_matches():
                self._truncated(f)
            else:
                f.update_fingerprint()

    def _ready(self, f: _File) -> bool:
        if f.twin is not None:
            return False
        a = f.after
        if a is None:
            return True
        return a.closed or a.at_eof

    def _read_round(self, now: float) -> bool:
        progressed = False
        for f in list(self._files):
            if self._full():
                return True
            if f.closed or not self._ready(f):
                continue
            if self._read_file(f, self.cfg.fair_share_bytes):
                progressed = True
        return progressed

    def _read_file(self, f: _File, budget: int) -> bool:
        """Read up to `budget` bytes of `f`; True when something was read."""
        try:
            st = os.fstat(f.fd)
        except OSError:
            return False
        f.size = st.st_size
        if f.unverified and st.st_size:
            return self._identify(f)
        if st.st_size < f.read_pos:
            self._truncated(f)
        elif f.at_eof and st.st_size > f.read_pos and not f.fingerprint_matches():
            # Growth after idling at EOF: cheap moment to catch truncate-and-regrow.
            self._truncated(f)
        if not self._ready(f):
            return True  # its copy (copytruncate) goes first
        got = 0
        n = self.cfg.chunk_bytes
        while got < budget and not self._full():
            try:
                data = os.pread(f.fd, n, f.read_pos)
            except OSError as exc:
                if not f.read_failing:  # once until a read works again, not every round
                    f.read_failing = True
                    self.read_errors += 1
                    log.warning("read failed", extra={"path": f.path, "error": str(exc)})
                return got > 0
            f.read_failing = False
            if not data:
                break
            got += len(data)
            f.at_eof = False
            self._consume(f, data)
            if f.fp_len < FINGERPRINT_BYTES:
                f.update_fingerprint()  # while small, so identity and copies stay telling
            if len(data) < n:
                break
        if (got == 0 or f.read_pos >= f.size) and not f.at_eof:
            f.at_eof = True
            f.eof_since = time.monotonic()
            if f.is_copy:
                # Its last line is complete as it is; hand it on before the successor's.
                self._flush_partial(f, force=True)
        if f.read_pos > f.size:
            f.size = f.read_pos
        return got > 0

    def _truncated(self, f: _File, copy: _File | None = None) -> None:
        """copytruncate: finish the old content (from its copy), then start again at 0."""
        self.truncations += 1
        if copy is None:
            copy = next((t for t in self._files if t.twin is f), None) or self._find_copy(f)
        if copy is not None and copy.key in self._by_key:
            # A copy we saw before the truncation: it stops waiting and takes over.
            self._files.remove(copy)
            copy.twin = None
            copy.unverified = False
            copy.is_copy = True
            self._copy_name = copy.path
        log.info(
            "file truncated; reading it from the start",
            extra={"path": f.path, "copy": self._copy_name or None},
        )
        if copy is not None:
            self._take_over(copy, f)
            copy.path = f.path
            self._files.insert(self._files.index(f), copy)
            self._by_key[copy.key] = copy
            f.after = copy
        else:
            self._flush_partial(f, force=True)
            # Chunks still in flight belong to the old content; their acks must not
            # move the new content's offset.
            for c in f.outstanding:
                c._file = None
            f.outstanding.clear()
            if f.joiner is not None:
                f.joiner.reset()
        f.read_pos = f.emit_pos = f.ack_pos = 0
        f.carry = b""
        f.head = None
        f.skipping = False
        f.fp_len = 0
        f.fp = b""
        f.update_fingerprint()
        self._dirty_ckpt = True

    def _take_over(self, copy: _File, f: _File) -> None:
        """`copy` holds what we had not read of `f` yet: it takes over exactly where
        we were (held line, joiner, unacknowledged chunks)."""
        copy.read_pos, copy.emit_pos, copy.ack_pos = f.read_pos, f.emit_pos, f.ack_pos
        copy.carry, copy.carry_since, copy.head = f.carry, f.carry_since, f.head
        copy.skipping, copy.flushed_partial = f.skipping, f.flushed_partial
        copy.partial_at = f.partial_at
        copy.joiner, f.joiner = f.joiner, self._new_joiner()
        copy.outstanding, f.outstanding = f.outstanding, deque()
        for c in copy.outstanding:
            c._file = copy

    def _identify(self, f: _File) -> bool:
        """Before the first read of a file without checkpoint: is it a file we know
        under another inode (copytruncate's copy, a copy moved between directories
        or filesystems)? Its first FINGERPRINT_BYTES bytes tell. True when `f` was
        given a position or a role (and is read from the next round).

        Only whole fingerprints count: two files whose first few lines are the same
        (a banner) are not the same stream, and a file shorter than that is read as
        new once it stops being a prefix of a followed file (a copy being written).
        """
        head = f.read_fingerprint(FINGERPRINT_BYTES)
        if len(head) < FINGERPRINT_BYTES:
            if time.monotonic() - f.seen_at < self.cfg.identify_wait and any(
                g.read_fingerprint(FINGERPRINT_BYTES).startswith(head)
                for g in self._known(f)
            ):
                return False  # maybe a copy still being written: look again
            f.unverified = False
            return self._read_file(f, self.cfg.fair_share_bytes)
        f.unverified = False
        fp = hashlib.sha1(head).digest()
        g = next((g for g in self._known(f) if g.fp == fp), None)
        if g is not None:
            if g.fingerprint_matches():
                # g still holds this content: f is a copy not truncated yet (or `cp`).
                f.twin = g
                log.debug("copy of a followed file", extra={"path": f.path, "of": g.path})
            else:
                # g was truncated and we had not noticed yet: f is what g was.
                self._truncated(g, copy=f)
            return True
        saved = self._lost.pop(fp.hex(), None)
        if saved is not None and saved["offset"] <= f.size:
            # A copy of a checkpointed file whose inode is gone or rewritten.
            f.read_pos = f.emit_pos = f.ack_pos = saved["offset"]
            if saved.get("partial") and saved["offset"]:
                f.flushed_partial = True
                f.partial_at = saved["offset"]
            self._dirty_ckpt = True
            log.info(
                "resuming a copy of a checkpointed file",
                extra={"path": f.path, "of": saved["path"], "offset": saved["offset"]},
            )
        return self._read_file(f, self.cfg.fair_share_bytes)

    def _known(self, f: _File) -> list[_File]:
        """Followed files `f` could be a copy of (whole fingerprint, read themselves)."""
        return [
            g
            for g in self._files
            if g is not f and g.twin is None and not g.unverified and g.fp_len == FINGERPRINT_BYTES
        ]

    def _find_copy(self, f: _File) -> _File | None:
        """The copy copytruncate made of `f` (same first bytes, at least as long)."""
        self._copy_name = ""
        if f.fp_len == 0:
            return None
        d = os.path.dirname(f.path)
        found: list[tuple[float, str, os.stat_result]] = []
        try:
            for e in os.scandir(d):
                with contextlib.suppress(OSError):
                    if e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        found.append((st.st_mtime, e.path, st))
        except OSError:
            return None
        for _mtime, epath, st in sorted(found, reverse=True):  # newest first
            key = (st.st_dev, st.st_ino)
            if key == f.key or st.st_size < f.read_pos:
                continue
            known = self._by_key.get(key)
            if known is not None:
                # Followed already: only a copy we have not read any of yet qualifies.
                if (known.twin is f or known.unverified) and _fp_of(known.fd, f.fp_len) == f.fp:
                    self._copy_name = epath
                    return known
                continue
            try:
                fd = os.open(epath, _FILE_FLAGS)  # a link swapped in since the scan: refused
            except OSError:
                continue
            if _fp_of(fd, f.fp_len) == f.fp:
                self._copy_name = epath
                copy = _File(epath, fd, os.fstat(fd), f.read_pos)
                # Matched by the globs (`app.log*`): not closed before discovery sees it.
                copy.paths = {epath} if self._matches(epath) else set()
                copy.is_copy = True
                return copy
            os.close(fd)
        return None

    def _new_joiner(self) -> Joiner | None:
        if self._multiline is None:
            return None
        return Joiner(
            self._multiline,
            self.cfg.multiline_max_lines,
            self.cfg.multiline_timeout,
            self.cfg.max_line_bytes,
        )

    def _consume(self, f: _File, data: bytes) -> None:
        """Split freshly read bytes into lines and queue them.

        Offsets are positional: a chunk spans from the end of what was handed
        on before (plus what the joiner holds) to just after its last newline,
        so bytes skipped inside an over-long line are covered by the next chunk.
        """
        start = f.read_pos  # file offset of data[0]
        f.read_pos += len(data)
        if f.flushed_partial:
            f.flushed_partial = False
            if data[:1] == b"\n" and not f.skipping:
                # The newline that ends the line already handed on: not an empty line.
                data = data[1:]
                start += 1
        texts: list[str] = []
        trunc: list[int] = []
        sizes: list[int] | None = [] if f.joiner is not None else None
        end = -1  # file offset just after the last newline seen
        limit = self.cfg.max_line_bytes
        if f.skipping:
            i = data.find(b"\n")
            if i < 0:
                return  # still inside the over-long line: discard without buffering
            if f.head is not None:
                trunc.append(0)
                texts.append(decode_cut(f.head))
                if sizes is not None:
                    sizes.append(0)  # gets the remainder of the span below
                f.head = None
            f.skipping = False
            end = start + i + 1
            data = data[i + 1 :]
            start = end
        if f.carry:
            start -= len(f.carry)
            data = f.carry + data
            f.carry = b""
        cut = data.rfind(b"\n")
        exact = False  # str lengths of `parts` are their byte lengths
        parts: list[str] = []
        if cut >= 0:
            block = memoryview(data)[:cut]  # no copy of the (1 MiB) block
            rest = data[cut + 1 :]
            end = start + cut + 1
            text = str(block, "utf-8", "replace")
            parts = text.split("\n")
            # Equal lengths mean one byte per character, so str lengths are byte lengths.
            exact = len(text) == len(block)
            if len(block) > limit:
                if exact:
                    too_long = max(map(len, parts)) > limit
                else:
                    too_long = max(map(len, data[:cut].split(b"\n"))) > limit
                if too_long:
                    exact = False
                    parts, cut_idx = cut_long(data[:cut], limit)
                    trunc.extend(len(texts) + i for i in cut_idx)
            if texts:
                texts.extend(parts)
            else:
                texts = parts
            if sizes is not None:
                sizes.extend(len(b) + 1 for b in data[:cut].split(b"\n"))
        else:
            rest = data
        if len(rest) > limit:
            f.head = rest[:limit]
            f.skipping = True
            f.carry_since = time.monotonic()
            rest = b""
        elif rest:
            f.carry_since = time.monotonic()
        f.carry = rest
        if not texts:
            return
        mcl = self.cfg.max_chunk_lines
        if f.joiner is None and mcl and len(texts) > mcl:
            self._queue_split(f, texts, trunc, end - f.emit_pos, parts, exact, data[:cut], mcl)
        else:
            held = f.joiner.pending_bytes if f.joiner is not None else 0
            self._emit(f, texts, trunc, end - f.emit_pos - held, sizes)

    def _queue_split(
        self,
        f: _File,
        texts: list[str],
        trunc: list[int],
        span: int,
        parts: list[str],
        exact: bool,
        block: bytes,
        most: int,
    ) -> None:
        """Queue `texts` as chunks of at most `most` lines, each with its byte span.

        `parts` are the block's lines (the tail of `texts`); spans are summed in C
        over their str lengths when those equal byte lengths, else over the
        block's byte lines. The first chunk takes the remainder (a skipped
        over-long line before the block belongs to it).
        """
        src: list[str] | list[bytes] = parts if exact else block.split(b"\n")
        off = len(texts) - len(parts)
        starts = range(0, len(texts), most)
        spans = [
            sum(map(len, src[a - off : min(a + most, len(texts)) - off]))
            + min(a + most, len(texts))
            - a
            for a in starts[1:]
        ]
        spans.insert(0, span - sum(spans))
        for a, sp in zip(starts, spans, strict=True):
            b = min(a + most, len(texts))
            self._queue_chunk(f, texts[a:b], [i - a for i in trunc if a <= i < b], sp)

    def _emit(
        self, f: _File, texts: list[str], trunc: list[int], span: int, sizes: list[int] | None
    ) -> None:
        if f.joiner is not None:
            assert sizes is not None
            # Whatever precedes the first line (skipped bytes) belongs to its record.
            sizes[0] += span - sum(sizes)
            texts, trunc, span = f.joiner.feed(texts, sizes, set(trunc))
            if not texts:
                return
            most = self.cfg.max_chunk_lines
            if most and len(texts) > most:
                rs = f.joiner.last_sizes
                for a in range(0, len(texts), most):
                    b = min(a + most, len(texts))
                    tr = [i - a for i in trunc if a <= i < b]
                    self._queue_chunk(f, texts[a:b], tr, sum(rs[a:b]), rs[a:b])
                return
            self._queue_chunk(f, texts, trunc, span, list(f.joiner.last_sizes))
            return
        self._queue_chunk(f, texts, trunc, span)

    def _queue_chunk(
        self,
        f: _File,
        texts: list[str],
        trunc: list[int],
        span: int,
        sizes: list[int] | None = None,
    ) -> None:
        begin = f.emit_pos
        f.emit_pos += span
        chunk = Chunk(f, f.path, texts, frozenset(trunc), time.time_ns(), f.emit_pos, span)
        if self.cfg.identify:
            # Read now, while the fd is surely this file's (a retired file's fd is closed).
            chunk.file_key = f.key
            chunk.file_head = f.read_fingerprint(FINGERPRINT_BYTES)
            chunk.starts = self._starts(f, texts, begin, span, sizes)
        f.outstanding.append(chunk)
        self._inflight += span
        self._queued += span
        self.lines_read += len(texts)
        self.bytes_read += span
        self.truncated_lines += len(trunc)
        self._queue.put_nowait(chunk)

    def _starts(
        self, f: _File, texts: list[str], begin: int, span: int, sizes: list[int] | None
    ) -> list[int] | None:
        """Exact start offsets of `texts` (only with `identify`: it reads the span again).

        Texts decoded with replacements or cut at max_line_bytes no longer tell
        their byte length, so the span's raw bytes are split once more (from the
        page cache); joined records bring their sizes from the joiner.
        """
        if sizes is not None and len(sizes) == len(texts) and sum(sizes) == span:
            out, pos = [], begin
            for n in sizes:
                out.append(pos)
                pos += n
            return out
        if f.joiner is not None:
            return None
        try:
            raw = os.pread(f.fd, span, begin)
        except OSError:
            return None
        if len(raw) != span:
            return None
        pos = begin
        if raw.startswith(b"\n") and raw.count(b"\n") == len(texts) + (raw[-1:] == b"\n"):
            # The newline of a line handed on before it came: not a line of its own.
            raw = raw[1:]
            pos += 1
        lines = raw.split(b"\n")
        if raw.endswith(b"\n"):
            lines.pop()
        if len(lines) != len(texts):
            return None
        out = []
        for line in lines:
            out.append(pos)
            pos += len(line) + 1
        return out

    def _flush_partial(self, f: _File, force: bool = False, line: bool = True) -> None:
        """Hand on a held last line (`line`) and the joiner's record (when due or `force`)."""
        texts: list[str] = []
        trunc: list[int] = []
        held = f.joiner.pending_bytes if f.joiner is not None else 0
        span = 0
        if not line:
            pass
        elif f.head is not None:
            trunc.append(0)
            texts.append(decode_cut(f.head))
            f.head = None  # the rest of the line, if more comes, is still skipped
        elif f.carry:
            texts.append(f.carry.decode("utf-8", "replace"))
            f.carry = b""
            f.flushed_partial = True
            f.partial_at = f.read_pos
        if texts:
            span = f.read_pos - f.emit_pos - held
        if f.joiner is not None:
            if texts:
                texts, trunc, span = f.joiner.feed(texts, [span], set(trunc))
            if force or f.joiner.due():
                t3, tr3, s3 = f.joiner.flush()
                trunc += [len(texts) + i for i in tr3]
                texts += t3
                span += s3
        if texts:
            self._queue_chunk(f, texts, trunc, span)

    def _flush_due(self, now: float) -> None:
        timeout = self.cfg.partial_flush_timeout
        for f in self._files:
            line_due = (
                (f.carry or f.head is not None)
                and now - f.carry_since >= timeout
                and self._at_end(f)  # not merely paused mid-file (sink down, consumer behind)
            )
            record_due = f.joiner is not None and f.joiner.due(now)
            if line_due or record_due:
                self._flush_partial(f, line=bool(line_due))

    def _at_end(self, f: _File) -> bool:
        try:
            return os.fstat(f.fd).st_size <= f.read_pos
        except OSError:
            return True

    def _close_idle(self, now: float) -> None:
        wait = self.cfg.rotate_wait
        for f in list(self._files):
            if f.paths or not f.at_eof or (now - f.eof_since < wait and not f.is_copy):
                continue
            if f.carry or f.head is not None or (f.joiner is not None and f.joiner.pending):
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
            if f.carry or f.head is not None or (f.joiner is not None and f.joiner.pending):
                self._flush_partial(f, force=True)

    # -- checkpoints -----------------------------------------------------------

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
                kept = self._lost.get(e["fp"])
                if kept is None or kept["offset"] < e["offset"]:
                    self._lost[e["fp"]] = e

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
    if not isinstance(fp, str) or len(fp) != 40 or fp.strip("0123456789abcdef"):
        return "fp is not a SHA-1 in hex"
    if not isinstance(e.get("path"), str) or not e["path"]:
        return "path is not a string"
    if not isinstance(e.get("partial", False), bool):
        return "partial is not a boolean"
    return None


def decode_cut(raw: bytes) -> str:
    """Decode a cut-off line, dropping a multi-byte character split by the cut."""
    end = len(raw)
    back = 0
    while back < 3 and end - back > 0 and (raw[end - back - 1] & 0xC0) == 0x80:
        back += 1
    if end - back > 0:
        lead = raw[end - back - 1]
        need = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 1
        if back + 1 < need:
            raw = raw[: end - back - 1]
    return raw.decode("utf-8", "replace")


def cut_long(block: bytes, limit: int) -> tuple[list[str], list[int]]:
    """The slow path: split a block that holds over-long lines, cutting each.

    Public, with decode_cut(), so that a reader of a stream (logformat's
    --stdin) cuts lines exactly the way files are cut here.
    """
    texts: list[str] = []
    cut: list[int] = []
    for i, raw in enumerate(block.split(b"\n")):
        if len(raw) > limit:
            cut.append(i)
            texts.append(decode_cut(raw[:limit]))
        else:
            texts.append(raw.decode("utf-8", "replace"))
    return texts, cut
