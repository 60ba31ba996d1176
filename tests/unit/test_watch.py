"""podkit.watch: the hand-made inotify backend, through the real kernel.

What the users (the tailer's discovery, the reloader) get is the contract:
the same Change kinds, paths and directory flags watchdog's Observer gave,
so one test replays a script of file-system operations against both and
compares. The others pin what the backend is for (one inotify instance and
no thread however many directories) and what it must survive (a watched
directory deleted or moved, a queue overflow, a burst larger than a read,
names that are not UTF-8, inotify unavailable).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from podkit import watch
from podkit.watch import Change, Watcher
from tests.helpers import wait_until_async

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux only")


def inotify_instances() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify":
                n += 1
        except OSError:  # the listing's own fd, closed already
            pass
    return n


class Seen:
    """The changes a Watcher delivered, and a way to wait for one."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.threads: set[int] = set()

    def __call__(self, c: Change) -> None:
        self.threads.add(threading.get_ident())
        self.changes.append(c)

    def kinds(self, path: Path | str) -> list[str]:
        return [c.kind for c in self.changes if c.path == str(path)]

    async def until(self, kind: str, path: Path | str, timeout: float = 5.0) -> Change:
        def found() -> Change | None:
            for c in self.changes:
                if c.kind == kind and c.path == str(path):
                    return c
            return None

        got: Change = await wait_until_async(found, timeout=timeout, what=f"{kind} {path}")
        return got


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """The reader and the rename timer are loop callbacks: an exception in
    them only reaches the loop's handler, so fail the test on it here."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    yield errors
    loop.set_exception_handler(None)
    assert errors == []


def held(w: Watcher, root: Path) -> set[str]:
    """The directories the watch on `root` holds a descriptor for; checks the
    maps agree with each other and with the kernel's owners."""
    ino = w._observer
    g = ino.groups[os.fsencode(str(root))]
    assert {p: wd for wd, p in g.paths.items()} == g.wds
    assert len(g.paths) == len(g.wds)  # one name per descriptor
    assert all(g in ino.owners[wd] for wd in g.paths)
    return {os.fsdecode(p) for p in g.wds}


def dirs_under(root: Path) -> set[str]:
    """`root` and every directory below it, not through links."""
    out = {str(root)}
    for base, dirs, _ in os.walk(root):
        out.update(os.path.join(base, d) for d in dirs if not os.path.islink(os.path.join(base, d)))
    return out


# -- the same events as watchdog's Observer -------------------------------------------


class WatchdogReference:
    """The Watcher as it was on main: watchdog's inotify Observer, same Handler."""

    def __init__(self, root: str, seen: Seen, reads: bool) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop = asyncio.get_running_loop()

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                src = os.fsdecode(event.src_path)
                dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else None
                loop.call_soon_threadsafe(
                    seen, Change(event.event_type, src, dest, event.is_directory)
                )

        self.observer: Any = Observer()
        kw: dict[str, Any] = {} if reads else {"event_filter": watch._content_event_filter()}
        self.observer.schedule(Handler(), root, recursive=True, **kw)
        self.observer.start()

    async def stop(self) -> None:
        self.observer.stop()
        await asyncio.to_thread(self.observer.join, 5)


def script(root: Path, outside: Path) -> Iterator[Callable[[], None]]:
    """File-system operations, each to be settled before the next."""
    f, g = root / "f.log", root / "g.log"
    yield lambda: f.write_text("one\n")
    yield lambda: f.open("a").write("two\n")
    yield lambda: os.rename(f, g)
    yield lambda: (root / "sub").mkdir()
    yield lambda: (root / "sub" / "x").write_text("x")
    yield lambda: (root / "sub" / "deep").mkdir()
    yield lambda: os.rename(root / "sub", root / "sub2")  # within the watch: moved
    yield lambda: (root / "sub2" / "y").write_text("y")  # its watch followed it
    yield lambda: (root / "sub2" / "deep" / "y").write_text("y")  # and its subdirectory's
    yield lambda: os.rename(root / "sub2", outside / "gone")  # out: deleted
    yield lambda: (outside / "gone" / "deep" / "q").write_text("q")  # no longer watched
    (outside / "made" / "deep").mkdir(parents=True)
    (outside / "made" / "deep" / "z").write_text("z")
    yield lambda: os.rename(outside / "made", root / "made")  # in: created, with content
    yield lambda: (root / "made" / "deep" / "w").write_text("w")  # watched below
    yield lambda: g.read_text()
    yield lambda: os.chmod(g, 0o600)
    yield lambda: os.symlink("g.log", root / "link")
    yield lambda: os.unlink(g)
    yield lambda: (root / os.fsdecode(b"caf\xe9.log")).write_text("latin-1 name")
    yield lambda: shutil.rmtree(root / "made")
    (root / "out.log").write_text("o")
    (outside / "in.log").write_text("i")
    # Two renames in one read, each with one half in the watch: not one move.
    yield lambda: (
        os.rename(root / "out.log", outside / "out.log"),
        os.rename(outside / "in.log", root / "in.log"),
    )
    yield lambda: (root / "target").mkdir()
    yield lambda: (root / "mover" / "in").mkdir(parents=True)
    yield lambda: os.rename(root / "mover", root / "target")  # over an empty directory
    yield lambda: (root / "target" / "in" / "f").write_text("f")


@pytest.mark.parametrize("reads", [True, False])
async def test_the_changes_are_watchdogs(tmp_path: Path, reads: bool) -> None:
    """Every operation of the script gives the same changes (kind, path, dest,
    is_dir; no more of each) from the backend as from watchdog's Observer;
    the sentinel written after each lets both deliver everything first."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    ours, theirs = Seen(), Seen()
    w = Watcher([str(root)], ours, reads=reads)
    w.start()
    ref = WatchdogReference(str(root), theirs, reads)
    try:
        assert not w.polling
        for n, op in enumerate(script(root, outside)):
            op()
            mark = root / f".sentinel{n}"
            mark.write_text("")
            for seen in (ours, theirs):
                await seen.until("closed", mark, timeout=10)
            # A change after the sentinel's close (none expected) would be missed: settle.
            await asyncio.sleep(0.05)
            mine, ref_changes = Counter(ours.changes), Counter(theirs.changes)
            # watchdog drops a change equal to the one before it only while that
            # one is still queued: on a loaded machine it may give one more.
            assert set(mine) == set(ref_changes), (n, mine - ref_changes, ref_changes - mine)
            assert mine <= ref_changes, (n, mine - ref_changes)
            assert held(w, root) == dirs_under(root), n
            ours.changes.clear()
            theirs.changes.clear()
        assert ours.threads == {threading.get_ident()}  # on the loop's thread
    finally:
        await w.stop()
        await ref.stop()


async def test_each_kind_arrives(tmp_path: Path) -> None:
    """The kinds the users act on, by name: created, modified, closed, moved
    (with dest), deleted; opened and closed_no_write only with reads."""
    seen = Seen()
    async with Watcher([str(tmp_path)], seen, recursive=False) as w:
        assert not w.polling
        f = tmp_path / "a.log"
        fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o644)
        await seen.until("created", f)
        os.write(fd, b"x\n")
        await seen.until("modified", f)
        os.close(fd)
        await seen.until("closed", f)
        f.read_bytes()
        await seen.until("opened", f)
        await seen.until("closed_no_write", f)
        os.rename(f, tmp_path / "b.log")
        moved = await seen.until("moved", f)
        assert moved.dest == str(tmp_path / "b.log") and not moved.is_dir
        os.unlink(tmp_path / "b.log")
        await seen.until("deleted", tmp_path / "b.log")
        (tmp_path / "d").mkdir()
        assert (await seen.until("created", tmp_path / "d")).is_dir
        # The parent's "modified" follows a create, as watchdog's DirModifiedEvent did.
        assert "modified" in seen.kinds(tmp_path)


async def test_reads_false_leaves_reading_out(tmp_path: Path) -> None:
    """A program that reads what it watches must not wake itself: no opens,
    no read-only closes, no attribute changes, not even in the mask."""
    (tmp_path / "f").write_text("x")
    seen = Seen()
    async with Watcher([str(tmp_path)], seen, reads=False) as w:
        assert w._observer.mask & (watch.IN_OPEN | watch.IN_CLOSE_NOWRITE | watch.IN_ATTRIB) == 0
        (tmp_path / "f").read_text()
        os.chmod(tmp_path / "f", 0o600)
        (tmp_path / "mark").write_text("")
        await seen.until("closed", tmp_path / "mark")
        assert [c for c in seen.changes if "mark" not in c.path and c.path != str(tmp_path)] == []


# -- one instance, no thread ----------------------------------------------------------


async def test_300_directories_one_instance_no_thread(tmp_path: Path) -> None:
    dirs = [tmp_path / f"c{i:03d}" for i in range(300)]
    for d in dirs:
        d.mkdir()
    before_fds, before_threads = inotify_instances(), threading.active_count()
    seen = Seen()
    w = Watcher([str(d) for d in dirs[:100]], seen, recursive=False)
    w.start()
    try:
        for d in dirs[100:]:
            w.add(str(d))
        assert not w.polling
        assert inotify_instances() - before_fds == 1
        assert threading.active_count() == before_threads
        assert len(w._observer.emitters) == 300
        for d in (dirs[0], dirs[150], dirs[-1]):
            (d / "0.log").write_text("x\n")
            await seen.until("closed", d / "0.log")
        assert seen.threads == {threading.get_ident()}
    finally:
        await w.stop()
    assert inotify_instances() == before_fds  # closed with its watches


# -- directories that go ----------------------------------------------------------------


async def test_a_deleted_directory_ends_its_watch(tmp_path: Path) -> None:
    """Deleted: "deleted" on the directory, alive() false; made again under
    the same name it is a new watch, and the old one's late IN_IGNORED does
    not end it."""
    d = tmp_path / "pod"
    d.mkdir()
    seen = Seen()
    async with Watcher([str(d)], seen, recursive=False) as w:
        (d / "0.log").write_text("x")
        shutil.rmtree(d)
        assert (await seen.until("deleted", d)).is_dir
        await wait_until_async(lambda: not w.alive(str(d)), what="watch ended")
        assert w._observer.owners == {}  # nothing held for it
        d.mkdir()
        w.remove(str(d))
        w.add(str(d))
        assert w.alive(str(d))
        (d / "1.log").write_text("y")
        await seen.until("closed", d / "1.log")
        assert w.alive(str(d))


async def test_a_moved_directory_ends_its_watch(tmp_path: Path) -> None:
    """Its events would name the old place: the watch ends, and the parent's
    watch (another directory given) reports the move."""
    d = tmp_path / "conf"
    d.mkdir()
    seen = Seen()
    async with Watcher([str(tmp_path), str(d)], seen, recursive=False) as w:
        os.rename(d, tmp_path / "conf.old")
        moved = await seen.until("moved", d)
        assert moved.dest == str(tmp_path / "conf.old") and moved.is_dir
        await wait_until_async(lambda: not w.alive(str(d)), what="watch ended")
        assert w.alive(str(tmp_path))
        (tmp_path / "conf.old" / "x").write_text("x")
        (tmp_path / "mark").write_text("")
        await seen.until("closed", tmp_path / "mark")
        assert not [c for c in seen.changes if "conf" in c.path and c.path.endswith("x")]


async def test_a_directory_renamed_before_its_watch_was_placed(tmp_path: Path) -> None:
    """Made and renamed before its IN_CREATE was read: no watch to move, so
    the new name is watched when the rename is."""
    seen = Seen()
    async with Watcher([str(tmp_path)], seen) as w:
        ino = w._observer
        ino.loop.remove_reader(ino.fd)
        (tmp_path / "x" / "deep").mkdir(parents=True)
        os.rename(tmp_path / "x", tmp_path / "y")
        ino.loop.add_reader(ino.fd, ino._readable)
        moved = await seen.until("moved", tmp_path / "x")
        assert moved.dest == str(tmp_path / "y")
        assert held(w, tmp_path) == dirs_under(tmp_path)
        (tmp_path / "y" / "deep" / "f").write_text("x")
        await seen.until("closed", tmp_path / "y" / "deep" / "f")


async def test_a_recursive_watch_follows_subdirectories(tmp_path: Path) -> None:
    seen = Seen()
    async with Watcher([str(tmp_path)], seen) as w:
        sub = tmp_path / "a"
        sub.mkdir()
        await seen.until("created", sub)
        (sub / "b").mkdir()
        await seen.until("created", sub / "b")
        (sub / "b" / "f").write_text("x")
        await seen.until("closed", sub / "b" / "f")
        held = len(w._observer.owners)
        shutil.rmtree(sub)
        await seen.until("deleted", sub)
        await wait_until_async(lambda: len(w._observer.owners) == held - 2, what="released")
        assert w.alive(str(tmp_path))


async def test_remove_stops_the_changes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    seen = Seen()
    async with Watcher([str(a), str(b)], seen) as w:
        (a / "queued").write_text("x")  # in the kernel's queue when the watch goes
        w.remove(str(a))
        assert not w.alive(str(a)) and str(a) not in w.dirs
        (a / "after").write_text("x")
        (b / "mark").write_text("")
        await seen.until("closed", b / "mark")
        await asyncio.sleep(0.05)
        assert not [c for c in seen.changes if c.path.startswith(str(a))]


async def test_add_from_another_thread(tmp_path: Path) -> None:
    """The reloader places its watches from its scan thread."""
    seen = Seen()
    async with Watcher([], seen) as w:
        for i in range(20):
            (tmp_path / str(i)).mkdir()
            await asyncio.to_thread(w.add, str(tmp_path / str(i)))
        (tmp_path / "19" / "f").write_text("x")
        await seen.until("closed", tmp_path / "19" / "f")
        with pytest.raises(FileNotFoundError):
            await asyncio.to_thread(w.add, str(tmp_path / "missing"))
        assert str(tmp_path / "missing") not in w.dirs


# -- what the kernel may throw at it --------------------------------------------------


def event(wd: int, mask: int, cookie: int = 0, name: bytes = b"") -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


def test_parse_events_reads_every_record() -> None:
    buf = (
        event(1, watch.IN_CREATE, 0, b"a")
        + event(2, watch.IN_Q_OVERFLOW)
        + event(3, watch.IN_MOVED_FROM, 7, b"x" * 16)
    )
    assert list(watch.parse_events(buf)) == [
        (1, watch.IN_CREATE, 0, b"a"),
        (2, watch.IN_Q_OVERFLOW, 0, b""),
        (3, watch.IN_MOVED_FROM, 7, b"x" * 16),
    ]


@pytest.mark.parametrize("reads", [True, False])
async def test_an_overflow_says_events_lost_and_watches_again(tmp_path: Path, reads: bool) -> None:
    """IN_Q_OVERFLOW: every watch reports "events_lost" on its directory
    (reads or not: it is what makes the reloader scan again), and a
    recursive one watches the subdirectories made meanwhile."""
    tree, flat = tmp_path / "tree", tmp_path / "flat"
    tree.mkdir()
    flat.mkdir()
    seen = Seen()
    async with Watcher([str(tree)], seen, reads=reads) as w:
        w.add(str(flat), recursive=False)
        ino = w._observer
        # A subdirectory whose IN_CREATE was lost: no watch on it.
        (tree / "new").mkdir()
        await seen.until("created", tree / "new")
        (tree / "old").mkdir()
        await seen.until("created", tree / "old")
        g = ino.groups[os.fsencode(str(tree))]
        with ino.lock:
            ino._release(g, g.wds[os.fsencode(str(tree / "new"))])
        (tree / "swapped").mkdir()
        await seen.until("created", tree / "swapped")
        # And one deleted, one replaced by a new directory, their events lost.
        ino.loop.remove_reader(ino.fd)
        (tree / "old").rmdir()
        (tree / "swapped").rmdir()
        (tree / "swapped").mkdir()
        ino.feed(event(-1, watch.IN_Q_OVERFLOW))
        assert held(w, tree) == {str(tree), str(tree / "new"), str(tree / "swapped")}
        ino.loop.add_reader(ino.fd, ino._readable)
        for d in (tree, flat):
            assert (await seen.until("events_lost", d)).is_dir
        (tree / "new" / "f").write_text("x")
        await seen.until("closed", tree / "new" / "f")


async def test_a_real_overflow(tmp_path: Path) -> None:
    """The kernel's own IN_Q_OVERFLOW: the queue filled past max_queued_events
    while nothing reads it. The limit is not lowered for the test: it is
    machine-wide, and any other process's instance made meanwhile would get it."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"max_queued_events is {limit}: too many files to make")
    seen = Seen()
    w = Watcher([str(tmp_path)], seen, recursive=False, reads=False)
    w.start()
    try:
        assert not w.polling
        w._observer.loop.remove_reader(w._observer.fd)  # let the queue fill up
        dirfd = os.open(tmp_path, os.O_RDONLY)
        try:
            for i in range(limit // 2 + 100):  # created + closed-after-write each
                os.close(os.open(f"{i}", os.O_CREAT | os.O_WRONLY, dir_fd=dirfd))
        finally:
            os.close(dirfd)
        w._observer.loop.add_reader(w._observer.fd, w._observer._readable)
        await seen.until("events_lost", tmp_path, timeout=20)
        (tmp_path / "after").write_text("x")
        await seen.until("closed", tmp_path / "after", timeout=20)  # still watching
    finally:
        await w.stop()


@pytest.mark.parametrize("bufsize", [1024, watch._BUFSIZE])
async def test_a_burst_larger_than_a_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bufsize: int
) -> None:
    monkeypatch.setattr(watch, "_BUFSIZE", bufsize)
    seen = Seen()
    async with Watcher([str(tmp_path)], seen, reads=False):
        names = [tmp_path / f"file-{i:05d}.log" for i in range(3000)]
        for p in names:
            p.touch()  # created + closed: ~190 KB of records
        await seen.until("closed", names[-1], timeout=20)
        created = {c.path for c in seen.changes if c.kind == "created"}
        assert created == {str(p) for p in names}


async def test_names_that_are_not_utf8(tmp_path: Path) -> None:
    seen = Seen()
    async with Watcher([str(tmp_path)], seen):
        raw = os.path.join(os.fsencode(str(tmp_path)), b"caf\xe9-\xff.log")
        with open(raw, "wb") as f:
            f.write(b"x")
        c = await seen.until("closed", os.fsdecode(raw))
        assert os.fsencode(c.path) == raw


async def test_events_for_a_watch_descriptor_no_longer_held(tmp_path: Path) -> None:
    """Queued before a remove() (or made up): dropped, not misnamed."""
    seen = Seen()
    async with Watcher([str(tmp_path)], seen) as w:
        ino = w._observer
        ino.feed(event(999, watch.IN_CREATE, 0, b"ghost") + event(999, watch.IN_IGNORED))
        (tmp_path / "mark").write_text("")
        await seen.until("closed", tmp_path / "mark")
        assert not [c for c in seen.changes if "ghost" in c.path]
        assert w.alive(str(tmp_path))


class FakeCalls:
    """inotify_add_watch handing out chosen watch descriptors (to reuse one)."""

    def __init__(self, real: Any, wds: list[int]) -> None:
        self.init1 = real.init1
        self.wds = wds
        self.removed: list[int] = []

    def add_watch(self, fd: int, path: bytes, mask: int) -> int:
        return self.wds.pop(0)

    def rm_watch(self, fd: int, wd: int) -> int:
        self.removed.append(wd)
        return 0


async def test_a_late_ignored_does_not_end_a_reused_watch_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remove() on A then add() on B may get A's wd back before A's IN_IGNORED
    is read: that IN_IGNORED is A's, not B's."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    c = tmp_path / "c"
    c.mkdir()
    fake = FakeCalls(watch._libc(), [7, 7, 7])
    monkeypatch.setattr(watch, "_libc_cache", [fake])
    seen = Seen()
    async with Watcher([str(a)], seen) as w:
        w.remove(str(a))
        w.add(str(b))
        w.remove(str(b))
        assert fake.removed == [7, 7]
        w.add(str(c))
        w._observer.feed(event(7, watch.IN_IGNORED))  # A's
        w._observer.feed(event(7, watch.IN_IGNORED))  # B's
        assert w.alive(str(c))
        w._observer.feed(event(7, watch.IN_CREATE, 0, b"f"))
        await seen.until("created", c / "f")
        w._observer.feed(event(7, watch.IN_IGNORED))  # C's own: the kernel ended it
        assert not w.alive(str(c))
        assert fake.removed == [7, 7]  # not removed again: it is gone


# -- no inotify: polling ----------------------------------------------------------------


@contextmanager
def failing(monkeypatch: pytest.MonkeyPatch, call: str, code: int) -> Iterator[None]:
    real = watch._libc()

    class Calls:
        init1 = real.init1
        add_watch = real.add_watch
        rm_watch = real.rm_watch

    def fail(*args: Any) -> int:
        ctypes.set_errno(code)
        return -1

    setattr(Calls, call, staticmethod(fail))
    monkeypatch.setattr(watch, "_libc_cache", [Calls()])
    yield


@pytest.mark.parametrize(
    ("call", "code"),
    [("init1", errno.EMFILE), ("init1", errno.ENOSYS), ("add_watch", errno.ENOSPC)],
)
async def test_polling_when_inotify_cannot_be_had(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    call: str,
    code: int,
) -> None:
    """No instance left (EMFILE), none in the kernel (ENOSYS), or no watch
    left (ENOSPC) while starting: watchdog's polling observer, said once."""
    seen = Seen()
    before = inotify_instances()
    with failing(monkeypatch, call, code):
        w = Watcher([str(tmp_path)], seen, poll_interval=0.05)
        w.start()
    try:
        assert w.polling
        assert inotify_instances() == before  # none left open by the failed start
        assert [r.getMessage() for r in caplog.records] == ["inotify unavailable; polling instead"]
        (tmp_path / "f").write_text("x")
        await seen.until("created", tmp_path / "f")
    finally:
        await w.stop()


async def test_add_raises_when_no_watch_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After start, max_user_watches reached costs that directory only: the
    caller hears of it (the tailer and the reloader then poll for it)."""
    (tmp_path / "a").mkdir()
    seen = Seen()
    async with Watcher([str(tmp_path)], seen, recursive=False) as w:
        with failing(monkeypatch, "add_watch", errno.ENOSPC), pytest.raises(OSError) as exc:
            w.add(str(tmp_path / "a"))
        assert exc.value.errno == errno.ENOSPC
        assert exc.value.filename == str(tmp_path / "a")
        assert "inotify_add_watch" in str(exc.value)
        assert str(tmp_path / "a") not in w.dirs and not w.alive(str(tmp_path / "a"))
        assert not w.polling and w.alive(str(tmp_path))


async def test_an_overflow_ends_the_watch_of_a_directory_gone_meanwhile(tmp_path: Path) -> None:
    """Its IN_DELETE_SELF and IN_IGNORED may be among the events lost."""
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    gone.mkdir()
    kept.mkdir()
    seen = Seen()
    async with Watcher([str(gone), str(kept)], seen) as w:
        ino = w._observer
        ino.loop.remove_reader(ino.fd)  # what the kernel says about it is "lost"
        gone.rmdir()
        ino.feed(event(-1, watch.IN_Q_OVERFLOW))
        assert not w.alive(str(gone)) and w.alive(str(kept))
        await seen.until("events_lost", kept)
        assert "events_lost" not in seen.kinds(gone)
        ino.loop.add_reader(ino.fd, ino._readable)
        # The ended watch (still listed until remove()) does not stop the next one.
        ino.feed(event(-1, watch.IN_Q_OVERFLOW))
        await wait_until_async(lambda: seen.kinds(kept).count("events_lost") == 2, what="again")


async def test_a_rename_split_across_two_reads_is_one_move(tmp_path: Path) -> None:
    """inotify does not promise a rename's two halves in one read."""
    seen = Seen()
    async with Watcher([str(tmp_path)], seen) as w:
        ino = w._observer
        wd = ino.groups[os.fsencode(str(tmp_path))].wds[os.fsencode(str(tmp_path))]
        ino.feed(event(wd, watch.IN_MOVED_FROM, 5, b"a"))
        ino.feed(event(wd, watch.IN_MOVED_TO, 5, b"b"))
        moved = await seen.until("moved", tmp_path / "a")
        assert moved.dest == str(tmp_path / "b")
        ino.feed(event(wd, watch.IN_CREATE, 0, b"c"))
        await seen.until("created", tmp_path / "c")
        assert "deleted" not in seen.kinds(tmp_path / "a")
