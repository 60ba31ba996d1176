"""File-system change notification: inotify driven by the event loop.

On Linux, `Watcher` talks to inotify itself (ctypes): one inotify instance
per Watcher, one watch descriptor per directory, read by `loop.add_reader`
on the event loop thread, so no thread at all. watchdog's inotify observer,
used before, ran one thread per watched directory (a node agent tailing
/var/log/pods/*/*/ ran one per container). The events are the ones watchdog
gave (kind, paths, and the parent directory's "modified" after a create,
delete, move or close-after-write), so its users cannot tell the difference.

One instance per Watcher rather than per process: a process has one or two
(the tailer's, the reloader's), each with its own mask (`reads`), and
inotify keeps one mask per inode per instance, so sharing would wake a
`reads=False` watcher on every read of its files. Each is tied to the loop
that started it, and stop() closes it, dropping all its watches at once.

Where inotify cannot be used (inotify_init1 fails: no instances left, no
inotify in the kernel; or max_user_watches is reached while starting), it
falls back to watchdog's polling observer and says so once in the log.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("podkit.watch")


@dataclass(frozen=True)
class Change:
    # created, modified, deleted, moved, closed; with reads: opened, closed_no_write,
    # attrib; events_lost (inotify's queue overflowed: look again)
    kind: str
    path: str
    dest: str | None = None
    is_dir: bool = False


def _content_event_filter() -> list[Any]:
    """Events that can mean content changed: no opens, no read-only closes."""
    from watchdog import events as ev

    return [
        ev.FileCreatedEvent,
        ev.DirCreatedEvent,
        ev.FileDeletedEvent,
        ev.DirDeletedEvent,
        ev.FileMovedEvent,
        ev.DirMovedEvent,
        ev.FileModifiedEvent,
        ev.DirModifiedEvent,
        ev.FileClosedEvent,
    ]


# -- inotify(7) by hand ---------------------------------------------------------

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: What a Watcher asks for. IN_DONT_FOLLOW as watchdog did (follow_symlink=False).
#: IN_MOVE_SELF, which watchdog did not ask for, ends a watch whose directory
#: moved: its events would name the old place.
_CONTENT_MASK = (
    IN_MODIFY
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_DONT_FOLLOW
)
#: reads=True adds what reading does (and attribute changes, as watchdog gave).
_ALL_MASK = _CONTENT_MASK | IN_ATTRIB | IN_OPEN | IN_CLOSE_NOWRITE

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then name[len]
#: One read's buffer: room for ~2000 events with short names. A burst bigger
#: than that is read in several reads (the fd stays readable).
_BUFSIZE = 64 * 1024
#: Reads per wake-up before yielding to the rest of the loop.
_READS_PER_WAKE = 16
#: How long a rename's IN_MOVED_FROM waits for its IN_MOVED_TO (watchdog's delay).
_MOVE_WAIT = 0.5


class _Libc:
    """inotify_init1, inotify_add_watch, inotify_rm_watch from the C library."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        init1, add, rm = libc.inotify_init1, libc.inotify_add_watch, libc.inotify_rm_watch
        init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
        add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        add.restype = ctypes.c_int
        rm.argtypes, rm.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        self.init1: Callable[[int], int] = init1
        self.add_watch: Callable[[int, bytes, int], int] = add
        self.rm_watch: Callable[[int, int], int] = rm


_libc_cache: list[_Libc] = []


def _libc() -> _Libc:
    """The C library's inotify calls, looked up once (tests replace them here)."""
    if not _libc_cache:
        try:
            _libc_cache.append(_Libc())
        except (OSError, AttributeError) as exc:  # no libc with inotify (not Linux)
            raise OSError(errno.ENOSYS, f"no inotify in the C library: {exc}") from None
    return _libc_cache[0]


def _check(ret: int, what: str, path: bytes | None = None) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}", os.fsdecode(path) if path else None)
    return ret


def parse_events(buf: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """(wd, mask, cookie, name) for each struct inotify_event in `buf`.

    read() on an inotify fd returns whole records only, so `buf` never ends
    in the middle of one. The name is NUL-padded; an event on the watched
    directory itself has none.
    """
    pos, end = 0, len(buf)
    size = _HEADER.size
    while pos + size <= end:
        wd, mask, cookie, n = _HEADER.unpack_from(buf, pos)
        pos += size
        name = buf[pos : pos + n].split(b"\0", 1)[0]
        pos += n
        yield wd, mask, cookie, name


@dataclass(eq=False)
class _Group:
    """One directory given to the Watcher (and, recursive, its subdirectories).

    Like a watchdog watch, each keeps its own paths and pairs its own
    renames, so overlapping groups (a recursive base and a file's directory
    under it) each report the event, as two watchdog watches did.
    """

    root: bytes
    recursive: bool
    alive: bool = True
    paths: dict[int, bytes] = field(default_factory=dict)  # wd -> directory
    wds: dict[bytes, int] = field(default_factory=dict)  # directory -> wd
    # cookie -> (path, is_dir, wd of the directory moved or None, deadline)
    pending: dict[int, tuple[bytes, bool, int | None, float]] = field(default_factory=dict)

    def under(self, path: bytes) -> list[bytes]:
        """The watched directories at `path` or below it."""
        prefix = path + b"/"
        return [p for p in self.wds if p == path or p.startswith(prefix)]


class _Inotify:
    """One inotify instance read on the event loop, shared by a Watcher's groups.

    add(), remove() and alive() may be called from another thread (the
    reloader places its watches from its scan thread); `lock` keeps the maps
    whole. Callbacks run on the loop thread, each as its own loop callback
    (as watchdog's call_soon_threadsafe gave them).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, emit: Callable[[Change], None], reads: bool
    ) -> None:
        self.loop = loop
        self.emit = emit
        self.reads = reads
        self.mask = _ALL_MASK if reads else _CONTENT_MASK
        self.lock = threading.RLock()
        self.groups: dict[bytes, _Group] = {}
        self.owners: dict[int, list[_Group]] = {}  # wd -> the groups holding it
        # wd -> IN_IGNORED still to come for our own inotify_rm_watch calls: a
        # late IN_IGNORED must not end a watch the same wd names again.
        self.unwatched: dict[int, int] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.moving: set[_Group] = set()  # groups holding an unpaired IN_MOVED_FROM
        self.last: tuple[_Group, Change] | None = None  # see _put
        self.warned = False
        self.fd = _check(_libc().init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        try:
            loop.add_reader(self.fd, self._readable)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def emitters(self) -> list[_Group]:
        """The live watches (named as watchdog's observer named them)."""
        with self.lock:
            return [g for g in self.groups.values() if g.alive]

    def close(self) -> None:
        with self.lock:
            if self.fd < 0:
                return
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            try:
                self.loop.remove_reader(self.fd)
            except RuntimeError:  # loop already closed
                pass
            os.close(self.fd)  # drops every watch with it
            self.fd = -1
            for g in self.groups.values():
                g.alive = False
            self.groups.clear()
            self.owners.clear()

    # -- placing and removing watches (any thread) --------------------------

    def watch(self, directory: str, recursive: bool) -> None:
        root = os.fsencode(directory)
        with self.lock:
            old = self.groups.pop(root, None)
            if old is not None:
                self._end(old)
            g = _Group(root, recursive)
            self._add_dir(g, root)  # the root's failure is the caller's
            if recursive:
                self._add_below(g, root)
            self.groups[root] = g

    def unwatch(self, directory: str) -> None:
        with self.lock:
            g = self.groups.pop(os.fsencode(directory), None)
            if g is not None:
                self._end(g)

    def alive(self, directory: str) -> bool:
        with self.lock:
            g = self.groups.get(os.fsencode(directory))
            return g is not None and g.alive

    def _add_dir(self, g: _Group, path: bytes) -> int:
        wd = _check(_libc().add_watch(self.fd, path, self.mask), "inotify_add_watch", path)
        old = g.wds.get(path)
        if old is not None and old != wd:
            # The path names a new directory (the old one moved away or was deleted).
            for p in g.under(path):
                self._release(g, g.wds[p])
        if g.paths.get(wd) not in (None, path):
            # The same directory under another name (moved before we saw it): one name.
            g.wds.pop(g.paths[wd], None)
        g.paths[wd] = path
        g.wds[path] = wd
        owners = self.owners.setdefault(wd, [])
        if g not in owners:
            owners.append(g)
        return wd

    def _add_below(self, g: _Group, top: bytes) -> None:
        """Watch every directory below `top` (not followed through links, as watchdog)."""
        for base, dirs, _ in os.walk(top):
            for d in dirs:
                p = os.path.join(base, d)
                if os.path.islink(p):
                    continue
                try:
                    self._add_dir(g, p)
                except OSError as exc:
                    # Gone already, or unreadable: its parent's events still come.
                    if exc.errno in (errno.ENOSPC, errno.ENOMEM) and not self.warned:
                        self.warned = True
                        log.warning(
                            "cannot watch a subdirectory",
                            extra={"path": os.fsdecode(p), "error": str(exc)},
                        )

    def _release(self, g: _Group, wd: int, *, gone: bool = False) -> None:
        """`g` lets go of `wd`; the kernel watch goes with its last holder.

        `gone`: the kernel has ended it already (IN_IGNORED).
        """
        path = g.paths.pop(wd, None)
        if path is not None and g.wds.get(path) == wd:
            del g.wds[path]
        owners = self.owners.get(wd)
        if owners is None or g not in owners:
            return
        owners.remove(g)
        if owners:
            return
        del self.owners[wd]
        if not gone and self.fd >= 0 and _libc().rm_watch(self.fd, wd) == 0:
            self.unwatched[wd] = self.unwatched.get(wd, 0) + 1
        # rm_watch failing (EINVAL) means the kernel ended the watch itself:
        # its IN_IGNORED comes for a wd no longer held, and is dropped.

    def _end(self, g: _Group) -> None:
        g.alive = False
        g.pending.clear()
        for wd in list(g.paths):
            self._release(g, wd)

    # -- reading (the loop thread) ------------------------------------------

    def _readable(self) -> None:
        for _ in range(_READS_PER_WAKE):
            if self.fd < 0:
                return
            try:
                buf = os.read(self.fd, _BUFSIZE)
            except BlockingIOError:  # EAGAIN: drained (os.read retries EINTR itself)
                return
            self.feed(buf)
            if len(buf) < _BUFSIZE // 2:
                return  # a short read: most likely drained (add_reader calls again if not)

    def feed(self, buf: bytes) -> None:
        """Handle the events in one read's worth of records."""
        out: list[Change] = []
        with self.lock:
            self.last = None
            for wd, mask, cookie, name in parse_events(buf):
                self._event(wd, mask, cookie, name, out)
            self._arm_timer()
        for c in out:
            self.loop.call_soon(self.emit, c)

    def _event(self, wd: int, mask: int, cookie: int, name: bytes, out: list[Change]) -> None:
        if mask & IN_Q_OVERFLOW:
            self._overflow(out)
            return
        if mask & IN_IGNORED:
            if self.unwatched.get(wd, 0) > 0:
                self.unwatched[wd] -= 1  # our own rm_watch's
                if not self.unwatched[wd]:
                    del self.unwatched[wd]
                return
            for g in list(self.owners.get(wd, ())):
                self._release(g, wd, gone=True)
                if g.root not in g.wds and g.alive:  # its root's watch ended (unmounted, say)
                    self._end(g)
            return
        for g in list(self.owners.get(wd, ())):
            if g.alive:
                self._group_event(g, wd, mask, cookie, name, out)

    def _group_event(
        self, g: _Group, wd: int, mask: int, cookie: int, name: bytes, out: list[Change]
    ) -> None:
        base = g.paths.get(wd)
        if base is None:
            return  # a directory this group let go of; its events were queued before
        path = os.path.join(base, name) if name else base
        is_dir = bool(mask & (IN_ISDIR | IN_DELETE_SELF | IN_MOVE_SELF))

        def add(c: Change) -> None:
            self._put(g, c, out)

        if mask & IN_MOVED_FROM:
            moved_wd = g.wds.get(path) if is_dir else None
            g.pending[cookie] = (path, is_dir, moved_wd, self.loop.time() + _MOVE_WAIT)
            self.moving.add(g)
        elif mask & IN_MOVED_TO:
            src = g.pending.pop(cookie, None)
            if src is not None:
                src_path, _, moved_wd, _ = src
                if is_dir and g.recursive:
                    self._moved_dir(g, src_path, path, moved_wd)
                add(Change("moved", _dec(src_path), _dec(path), is_dir))
                add(Change("modified", _dec(os.path.dirname(src_path)), None, True))
                add(Change("modified", _dec(os.path.dirname(path)), None, True))
                if is_dir and g.recursive:
                    for sub, sub_dir in _walk(path):
                        renamed = src_path + sub[len(path) :]
                        add(Change("moved", _dec(renamed), _dec(sub), sub_dir))
            else:  # from outside this group: it appeared
                if is_dir and g.recursive:
                    self._new_dir(g, path)
                add(Change("created", _dec(path), None, is_dir))
                add(Change("modified", _dec(os.path.dirname(path)), None, True))
                if is_dir and g.recursive:
                    for sub, sub_dir in _walk(path):
                        add(Change("created", _dec(sub), None, sub_dir))
        elif mask & IN_CREATE:
            add(Change("created", _dec(path), None, is_dir))
            add(Change("modified", _dec(os.path.dirname(path)), None, True))
            if is_dir and g.recursive:
                self._new_dir(g, path)
                # Made with content already (mkdir -p a/b; a copy): what is in it.
                for sub, sub_dir in _walk(path):
                    if os.path.dirname(sub) in g.wds:
                        add(Change("created", _dec(sub), None, sub_dir))
                        add(Change("modified", _dec(os.path.dirname(sub)), None, True))
        elif mask & IN_DELETE:
            add(Change("deleted", _dec(path), None, is_dir))
            add(Change("modified", _dec(os.path.dirname(path)), None, True))
            if is_dir:
                for p in g.under(path):
                    self._release(g, g.wds[p])
        elif mask & IN_MODIFY:
            add(Change("modified", _dec(path), None, is_dir))
        elif mask & IN_DELETE_SELF:
            if path == g.root:
                add(Change("deleted", _dec(path), None, True))
                self._end(g)
        elif mask & IN_MOVE_SELF:
            if path == g.root:
                self._end(g)  # it lives elsewhere now: alive() says so, the user re-adds
        elif mask & IN_ATTRIB:
            if self.reads:
                add(Change("attrib", _dec(path), None, is_dir))
        elif is_dir:
            pass  # opening or closing a directory (listing it) is not news
        elif mask & IN_CLOSE_WRITE:
            add(Change("closed", _dec(path), None, False))
            add(Change("modified", _dec(os.path.dirname(path)), None, True))
        elif mask & IN_OPEN:
            if self.reads:
                add(Change("opened", _dec(path), None, False))
        elif mask & IN_CLOSE_NOWRITE and self.reads:
            add(Change("closed_no_write", _dec(path), None, False))

    def _put(self, g: _Group, c: Change, out: list[Change]) -> None:
        """Add `c` unless the same group's previous change in this batch was the same.

        watchdog's event queue dropped an event equal to the one before it
        still queued (a rename's two "modified" on one directory, a burst of
        writes): its users got one.
        """
        if self.last != (g, c):
            self.last = (g, c)
            out.append(c)

    def _new_dir(self, g: _Group, path: bytes) -> None:
        try:
            self._add_dir(g, path)
        except OSError:
            return  # gone again already: its IN_DELETE follows
        self._add_below(g, path)

    def _moved_dir(self, g: _Group, src: bytes, dst: bytes, moved_wd: int | None) -> None:
        """A directory renamed within the group: its watches follow it, renamed."""
        for p in g.under(dst):  # a directory it replaced
            if g.wds[p] != moved_wd:
                self._release(g, g.wds[p])
        if moved_wd is None or g.paths.get(moved_wd) != src:
            self._new_dir(g, dst)  # it was not watched (appeared before its watch)
            return
        for p in g.under(src):
            wd = g.wds.pop(p)
            q = dst + p[len(src) :]
            g.paths[wd] = q
            g.wds[q] = wd

    def _overflow(self, out: list[Change]) -> None:
        """The kernel dropped events: watch again what is there, and say so.

        Recursive groups re-walk their tree (a directory made during the gap
        has no watch yet; one deleted may have lost its IN_IGNORED), and a
        group whose directory is gone ends (alive() says so). Every other
        group reports "events_lost" on its root, whatever `reads` is: it is
        what tells a user to look again (watchdog left it out with reads=False).
        """
        log.warning("inotify queue overflowed; events were lost")
        for g in list(self.groups.values()):
            if not g.alive:
                continue
            if not os.path.isdir(g.root):  # its IN_DELETE_SELF may be among the lost
                self._end(g)
                continue
            if g.recursive:
                for p in list(g.wds):
                    if p != g.root and not os.path.isdir(p):
                        self._release(g, g.wds[p])
                self._add_below(g, g.root)
            self._put(g, Change("events_lost", _dec(g.root), None, True), out)

    def _arm_timer(self) -> None:
        """Wake when the oldest unpaired IN_MOVED_FROM is due."""
        self.moving = {g for g in self.moving if g.pending and g.alive}
        due = [d for g in self.moving for (_, _, _, d) in g.pending.values()]
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if due and self.fd >= 0:
            self.timer = self.loop.call_at(min(due), self._expire)

    def _expire(self) -> None:
        """Renames whose other half never came: moved out of the group, so deleted."""
        self.timer = None
        out: list[Change] = []
        with self.lock:
            self.last = None
            now = self.loop.time()
            for g in list(self.moving):
                for cookie, (path, is_dir, moved_wd, due) in list(g.pending.items()):
                    if due > now:
                        continue
                    del g.pending[cookie]
                    self._put(g, Change("deleted", _dec(path), None, is_dir), out)
                    self._put(g, Change("modified", _dec(os.path.dirname(path)), None, True), out)
                    if is_dir and g.recursive and g.paths.get(moved_wd or -1) == path:
                        for p in sorted(g.under(path)):
                            self._release(g, g.wds[p])
                            if p != path:
                                self._put(g, Change("deleted", _dec(p), None, True), out)
            self._arm_timer()
        for c in out:
            self.loop.call_soon(self.emit, c)


def _dec(path: bytes) -> str:
    return os.fsdecode(path)


def _walk(top: bytes) -> Iterator[tuple[bytes, bool]]:
    """Everything below `top`, directories first in each, as watchdog listed it."""
    for base, dirs, files in os.walk(top):
        for d in dirs:
            yield os.path.join(base, d), True
        for f in files:
            yield os.path.join(base, f), False


# -- the Watcher ----------------------------------------------------------------


class Watcher:
    """Watch directories and call `callback(change)` on the event loop for each change.

    `reads=False` leaves out opens and read-only closes (and attribute
    changes), both from the inotify mask and from the callbacks: a program
    that reads the files it watches (to hash them, say) would otherwise wake
    itself up forever.
    """

    def __init__(
        self,
        dirs: Iterable[str],
        callback: Callable[[Change], None],
        *,
        recursive: bool = True,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        reads: bool = True,
    ) -> None:
        self.dirs = sorted({os.path.abspath(d) for d in dirs})
        self.callback = callback
        self.recursive = recursive
        self.poll_interval = poll_interval
        self.force_polling = force_polling
        self.reads = reads
        self.polling = False
        #: The inotify backend, or watchdog's PollingObserver; None when stopped.
        self._observer: Any = None
        self._handler: Any = None
        self._recursive_of: dict[str, bool] = {}
        self._watches: dict[tuple[str, bool], Any] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if not self.force_polling:
            try:
                ino = _Inotify(loop, self.callback, self.reads)
            except OSError as exc:  # EMFILE: the user's instances are used up; ENOSYS
                log.warning("inotify unavailable; polling instead", extra={"error": str(exc)})
            else:
                try:
                    for d in self.dirs:
                        if os.path.isdir(d):
                            rec = self._recursive_of.get(d, self.recursive)
                            ino.watch(d, rec)
                            self._watches[(d, rec)] = d
                except OSError as exc:  # ENOSPC: max_user_watches reached
                    ino.close()
                    self._watches.clear()
                    log.warning("inotify unavailable; polling instead", extra={"error": str(exc)})
                else:
                    self._observer = ino
                    return
        self._start_polling(loop)

    def _start_polling(self, loop: asyncio.AbstractEventLoop) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers.polling import PollingObserver

        callback = self.callback

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                src = os.fsdecode(event.src_path)
                dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else None
                change = Change(event.event_type, src, dest, event.is_directory)
                try:
                    loop.call_soon_threadsafe(callback, change)
                except RuntimeError:  # loop closed during shutdown
                    pass

        self._handler = Handler()
        self._observer = PollingObserver(timeout=self.poll_interval)
        for d in self.dirs:
            if os.path.isdir(d):
                self._schedule(d, self._recursive_of.get(d, self.recursive))
        self._observer.start()
        self.polling = True

    def _schedule(self, d: str, recursive: bool) -> None:
        if not self.polling and isinstance(self._observer, _Inotify):
            self._observer.watch(d, recursive)
            self._watches[(d, recursive)] = d
            return
        kw: dict[str, Any] = {} if self.reads else {"event_filter": _content_event_filter()}
        self._watches[(d, recursive)] = self._observer.schedule(
            self._handler, d, recursive=recursive, **kw
        )

    def add(self, directory: str, recursive: bool | None = None) -> None:
        """Watch one more directory (e.g. one created after start).

        `recursive` overrides the watcher's default for this directory. Raises
        OSError when the directory cannot be watched (gone, or inotify's
        max_user_watches reached); before start() it is only recorded. May be
        called from another thread.
        """
        d = os.path.abspath(directory)
        rec = self.recursive if recursive is None else recursive
        if d in self.dirs and (d, rec) in self._watches:
            return
        if d not in self.dirs:
            self.dirs.append(d)
        self._recursive_of[d] = rec
        if self._observer is None:
            return
        try:
            self._schedule(d, rec)
        except OSError:
            self.dirs.remove(d)
            self._recursive_of.pop(d, None)
            raise

    def remove(self, directory: str) -> None:
        """Stop watching a directory given to the constructor or add()."""
        d = os.path.abspath(directory)
        if d in self.dirs:
            self.dirs.remove(d)
        rec = self._recursive_of.pop(d, self.recursive)
        watch = self._watches.pop((d, rec), None)
        if watch is None or self._observer is None:
            return
        if isinstance(self._observer, _Inotify):
            self._observer.unwatch(d)
            return
        try:
            self._observer.unschedule(watch)
        except (KeyError, OSError):  # its emitter already stopped (directory deleted)
            pass

    def alive(self, directory: str) -> bool:
        """Is the watch on `directory` still delivering events?

        A watch ends when its directory is deleted (or moved away). A
        directory made anew under the same name may even get the same inode
        number back, so a caller cannot tell from stat() alone that it must
        add() it again.
        """
        d = os.path.abspath(directory)
        watch = self._watches.get((d, self._recursive_of.get(d, self.recursive)))
        if watch is None or self._observer is None:
            return False
        if isinstance(self._observer, _Inotify):
            return self._observer.alive(d)
        emitter = getattr(self._observer, "_emitter_for_watch", {}).get(watch)
        return emitter is None or bool(emitter.is_alive())

    async def __aenter__(self) -> Watcher:
        """`async with Watcher(...) as w:` starts watching and stops at the end."""
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        obs, self._observer = self._observer, None
        self._watches.clear()
        if obs is None:
            return
        if isinstance(obs, _Inotify):
            obs.close()
            return
        obs.stop()
        await asyncio.to_thread(obs.join, 5)
