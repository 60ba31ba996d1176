"""podkit.tailer.rotation under mutation testing (docs/testing.md, issue 25).

What a rotation bug loses or repeats, asserted on what is delivered: every
line once, in order (an old file before its successor), under the name the
glob matched, continued from the right copy at the right offset. The file
system changes happen synchronously between two rounds of the reader (it
runs on this event loop), so each test sees the same interleaving every run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from podkit.tailer import Tailer, rotation
from podkit.tailer.files import _File
from tests.unit.test_tailer import Collector, cfg, logs, write

__all__ = ["logs"]  # the fixture


def nums(prefix: str, a: int, b: int) -> str:
    return "".join(
        f"{prefix} {i:04d} of a line long enough to fill a fingerprint\n" for i in range(a, b)
    )


def want(prefix: str, a: int, b: int) -> list[str]:
    return nums(prefix, a, b).splitlines()


def renamed(t: Tailer, src: Path, dest: Path) -> None:
    """What the watcher reports for a rename of a matched path (from its thread,
    some time later: here on time, before the next discovery)."""
    t._moves.append((str(src), str(dest)))
    t._discover_now = True
    t._wake.set()


async def read_up_to(t: Tailer, path: Path, offset: int) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f["path"] == str(path) and f["read"] == offset for f in t.files()):
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)


def aged(path: Path, seconds_ago: float) -> None:
    """Set the modification time: which copy is the newest must not depend on
    the file system's timestamp resolution."""
    when = os.stat(path).st_mtime - seconds_ago
    os.utime(path, (when, when))


async def test_files_rotated_before_discovery_saw_them_are_read_in_order(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("skipped", 0, 5))
    # Small reads: a file read out of turn shows as interleaved lines.
    t = Tailer(cfg(tmp_path, read_from="tail", chunk_bytes=64, fair_share_bytes=64))
    await t.start()
    c = Collector(t)
    # Before the reader runs again: A (followed, 50 lines unread) is renamed,
    # B is created and renamed before any discovery saw it, C is the new file.
    write(live, nums("a", 0, 50))
    os.rename(live, logs / "app.log.1")
    write(live, nums("b", 0, 50))
    os.rename(live, logs / "app.log.2")
    write(live, nums("c", 0, 10))
    renamed(t, live, logs / "app.log.3")  # renamed, then deleted before we looked
    renamed(t, live, logs / "app.log.1")  # followed already: not opened twice
    renamed(t, live, logs / "app.log.2")
    await c.until(110)
    texts = await c.finish()
    # B read from its start (it is new, not "the tail" of a file found at startup),
    # after A, before C, every line once.
    assert texts == want("a", 0, 50) + want("b", 0, 50) + want("c", 0, 10)
    assert {ch.path for ch in c.chunks} == {str(live)}  # the name the lines were written under
    assert t.rotations == 2  # B replaced A, C replaced B


async def test_a_rotation_missed_while_starting_is_read_first(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    os.rename(live, logs / "app.log.1")
    write(live, nums("b", 0, 20))
    os.rename(live, logs / "app.log.2")
    write(live, nums("c", 0, 20))
    t = Tailer(cfg(tmp_path, chunk_bytes=64, fair_share_bytes=64))
    renamed(t, live, logs / "app.log.1")  # the glob matched no file yet
    renamed(t, live, logs / "app.log.2")
    await t.start()
    c = Collector(t)
    await c.until(60)
    texts = await c.finish()
    assert texts == want("a", 0, 20) + want("b", 0, 20) + want("c", 0, 20)
    assert {ch.path for ch in c.chunks} == {str(live)}
    assert t.rotations == 3


async def test_copytruncate_continues_from_the_newest_whole_copy(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    other = logs / "other.log"  # followed, starts like app.log, its own stream
    write(live, nums("a", 0, 20))
    write(other, nums("a", 0, 6) + nums("o", 0, 5))  # 6 lines: > FINGERPRINT_BYTES
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(31)
    # Before the reader runs again: an earlier copy (stops at a 39), a copy
    # shorter than what was read (a `head`), the rotation's copy, an unrelated
    # file, then the truncation.
    write(live, nums("a", 20, 40))
    shutil.copyfile(live, logs / "app.log.old")
    write(live, nums("a", 40, 60))
    shutil.copyfile(live, logs / "app.log.1")
    write(logs / "app.log.head", nums("a", 0, 10))
    write(logs / "notes.txt", nums("n", 0, 100))
    aged(logs / "app.log.old", 100)
    aged(logs / "app.log.1", 50)
    aged(logs / "notes.txt", 10)
    aged(other, 5)
    # app.log.head is the newest but one: shorter than what was read, not a copy.
    aged(logs / "app.log.head", 1)
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(76)
    texts = await c.finish()

    def of(path: Path) -> list[str]:
        return [x for ch in c.chunks if ch.path == str(path) for x in ch.texts]

    assert of(live) == want("a", 0, 60) + want("c", 0, 5)
    assert of(other) == want("a", 0, 6) + want("o", 0, 5)
    assert len(texts) == 76
    assert t.truncations == 1


async def test_a_copy_discovery_saw_but_did_not_read_yet_takes_over(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 40))
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    t._discover_now = True  # what the watcher's "created" does: discovery first
    t._wake.set()
    await c.until(45)
    texts = await c.finish()
    assert texts == want("a", 0, 40) + want("c", 0, 5)
    assert t.truncations == 1


async def test_a_one_byte_fingerprint_still_finds_the_copy(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, "x")  # a partial line: one byte read, one byte fingerprinted
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await read_up_to(t, live, 1)
    write(live, "yz\nmore\n")
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, "new\n")
    await c.until(3)
    assert await c.finish() == ["xyz", "more", "new"]


async def test_a_compressed_copy_of_a_followed_file_is_not_read_from_its_start(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 40))
    with open(logs / "app.log.1.gz", "wb") as out:
        out.write(gzip.compress(live.read_bytes()))
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f.twin is not None for f in t._files):  # the .gz waits as a copy
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(45)
    texts = await c.finish()
    assert texts == want("a", 0, 40) + want("c", 0, 5)


async def test_a_rename_reported_after_discovery_saw_the_successor_keeps_the_order(
    tmp_path: Path, logs: Path
) -> None:
    # The watcher's thread may deliver a rename after discovery has already
    # opened the file now at the path: the renamed file came before that one.
    live = logs / "app.log"
    write(live, "")
    t = Tailer(cfg(tmp_path, chunk_bytes=64, fair_share_bytes=64))
    await t.start()
    c = Collector(t)
    write(live, nums("a", 0, 20))
    os.rename(live, logs / "app.log.0")
    write(live, nums("b", 0, 20))
    os.rename(live, logs / "app.log.1")
    write(live, nums("c", 0, 20))
    os.rename(live, logs / "app.log.2")
    write(live, nums("d", 0, 20))
    t._discover()  # discovery first: it sees d after a, not b and c
    renamed(t, live, logs / "app.log.0")
    renamed(t, live, logs / "app.log.1")
    renamed(t, live, logs / "app.log.2")
    await c.until(80)
    texts = await c.finish()
    assert texts == want("a", 0, 20) + want("b", 0, 20) + want("c", 0, 20) + want("d", 0, 20)
    assert {ch.path for ch in c.chunks} == {str(live)}


async def test_a_file_rotated_away_with_nothing_at_its_path_yet_comes_after_its_predecessor(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, "")
    t = Tailer(cfg(tmp_path, chunk_bytes=64, fair_share_bytes=64))
    await t.start()
    c = Collector(t)
    write(live, nums("a", 0, 20))
    os.rename(live, logs / "app.log.0")
    write(live, nums("b", 0, 20))
    os.rename(live, logs / "app.log.1")  # and the application has not reopened app.log
    renamed(t, live, logs / "app.log.0")
    renamed(t, live, logs / "app.log.1")
    await c.until(40)
    assert await c.finish() == want("a", 0, 20) + want("b", 0, 20)


async def test_a_copy_of_a_deleted_file_continues_where_the_original_was(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    shutil.copyfile(live, logs / "app.log.1")  # a copy, waiting while app.log lives
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f.twin is not None for f in t._files):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    os.remove(live)  # the original goes: the copy is the stream now
    write(logs / "app.log.1", nums("x", 0, 5))
    await c.until(25)
    texts = await c.finish()
    assert texts == want("a", 0, 20) + want("x", 0, 5)


# -- A truncation with no copy to finish from (docs/testing.md: `_truncated`'s
# no-copy path). What was read of the old content is all there is of it.


async def test_a_truncation_without_a_copy_hands_on_the_held_line(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 5) + "held")  # no newline: held (partial_flush_timeout is 5 s)
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await read_up_to(t, live, live.stat().st_size)
    os.truncate(live, 0)
    write(live, "new\n")  # shorter than what was read: a truncation, and no copy anywhere
    await c.until(7)
    assert await c.finish() == [*want("a", 0, 5), "held", "new"]
    assert t.truncations == 1


async def test_a_truncation_without_a_copy_hands_on_the_held_record(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, "first\n  more\nsecond\n  more of it\n")  # "second" is held by the joiner
    t = Tailer(cfg(tmp_path, multiline_start=r"^\S", multiline_timeout=30.0))
    await t.start()
    c = Collector(t)
    await c.until(1)
    await read_up_to(t, live, live.stat().st_size)
    os.truncate(live, 0)
    write(live, "new\n")
    write(live, "last\n")  # ends "new"'s record
    await c.until(3)
    assert await c.finish() == ["first\n  more", "second\n  more of it", "new", "last"]


async def test_chunks_in_flight_at_a_truncation_do_not_move_the_new_offset(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 5))
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t, ack=False)
    await c.until(5)
    os.truncate(live, 0)
    write(live, "new\n")
    await c.until(6)
    old, new = c.chunks[:-1], c.chunks[-1]
    assert new.texts == ["new"] and new.end == 4
    t.ack(new)  # the new content's chunk first: nothing before it is waited for
    for ch in old:
        t.ack(ch)  # the old content's: must not count against the new one
    assert [f["acknowledged"] for f in t.files()] == [4]
    write(live, "more\n")
    await c.until(7)
    t.ack(c.chunks[-1])
    assert [f["acknowledged"] for f in t.files()] == [9]
    await asyncio.wait_for(t.drain(), 10)
    await asyncio.wait_for(c.task, 5)
    await t.close()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert [e["offset"] for e in saved["files"]] == [9]


async def test_a_compressed_copy_seen_after_a_truncation_continues_from_what_was_read(
    tmp_path: Path, logs: Path
) -> None:
    # copytruncate then compress (no delaycompress): the plain copy is gone before
    # the tailer looks, the .gz turns up later. It holds what was not read yet.
    live = logs / "app.log"
    write(live, nums("a", 0, 10) + "held")
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t, ack=False)  # what was handed on counts, not what was acknowledged
    await c.until(10)
    await read_up_to(t, live, live.stat().st_size)
    write(live, "\n" + nums("a", 10, 15))  # ends the held line: not read yet
    rotated = gzip.compress(live.read_bytes())
    os.truncate(live, 0)
    write(live, nums("c", 0, 2))
    await c.until(13)  # a0-a9, "held" (handed on at the truncation), c0-c1
    with open(logs / "app.log.1.gz", "wb") as out:
        out.write(rotated)
    t._discover_now = True
    t._wake.set()
    await c.until(18)
    texts = await c.finish()
    # Lost with the plain copy: nothing. From the .gz: after "held", without its
    # newline as an empty line of its own.
    assert texts == [*want("a", 0, 10), "held", *want("c", 0, 2), *want("a", 10, 15)]
    assert t.truncations == 1


async def test_a_compressed_copy_of_a_file_closed_after_a_rename_is_not_read_again(
    tmp_path: Path, logs: Path
) -> None:
    # delaycompress: app.log -> app.log.1 (read to its end, closed), later gzipped
    # to app.log.1.gz, which the globs match: what was read of it is not read again.
    live = logs / "app.log"
    write(live, nums("a", 0, 10) + "held")
    conf = cfg(
        tmp_path,
        paths=[str(live), str(logs / "app.log.*.gz")],
        rotate_wait=0.05,
        partial_flush_timeout=30.0,
    )
    t = Tailer(conf)
    await t.start()
    c = Collector(t, ack=False)
    await c.until(10)
    os.rename(live, logs / "app.log.1")
    await c.until(11)  # "held" handed on as it is when the renamed file closes
    await wait_files(t, 0)
    assert c.texts[-1] == "held"
    write(logs / "app.log.1", "\n" + nums("a", 10, 15))  # a late writer, after the close
    with open(logs / "app.log.1.gz", "wb") as out:
        out.write(gzip.compress((logs / "app.log.1").read_bytes()))
    os.remove(logs / "app.log.1")
    t._discover_now = True
    t._wake.set()
    await c.until(16)
    texts = await c.finish()
    assert texts == [*want("a", 0, 10), "held", *want("a", 10, 15)]


async def wait_files(t: Tailer, n: int) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while t.files_watched != n:
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)


# -- A new file shorter than a fingerprint (docs/testing.md: `_identify`'s wait).


def looks_at(t: Tailer, path: Path) -> list[int]:
    """Record the size of `path` each time the tailer tries to identify it."""
    sizes: list[int] = []
    identify = t._identify

    def spy(f: _File) -> bool:
        if f.path == str(path):
            sizes.append(os.fstat(f.fd).st_size)
        return identify(f)

    t._identify = spy  # type: ignore[method-assign]
    return sizes


async def looked(sizes: list[int], n: int) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while len(sizes) < n:
        assert asyncio.get_running_loop().time() < deadline, sizes
        await asyncio.sleep(0.01)


async def test_a_copy_still_being_written_waits_until_it_is_whole(
    tmp_path: Path, logs: Path
) -> None:
    live, other, copy = logs / "app.log", logs / "other.log", logs / "app.log.1"
    write(live, nums("a", 0, 20))
    write(other, nums("o", 0, 20))  # followed too: its first bytes are not the copy's
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*"), str(other)], identify_wait=30.0))
    await t.start()
    c = Collector(t)
    await c.until(40)
    sizes = looks_at(t, copy)
    write(copy, live.read_bytes()[:100])  # `cp` half done: a line and a half of app.log
    t._discover_now = True
    t._wake.set()
    await looked(sizes, 2)  # looked at twice while short: not read
    assert c.texts == want("a", 0, 20) + want("o", 0, 20)
    # A measuring window: while it waits, the reader sleeps between looks (one
    # per poll_interval, 50 ms) instead of spinning.
    before = len(sizes)
    await asyncio.sleep(0.3)
    assert len(sizes) - before < 30, len(sizes) - before
    write(copy, live.read_bytes()[100:])  # the copy is whole: app.log's twin, not read
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f.twin is not None for f in t._files):
        assert asyncio.get_running_loop().time() < deadline, sizes
        await asyncio.sleep(0.01)
    assert await c.finish() == want("a", 0, 20) + want("o", 0, 20)
    assert sizes[0] == 100


async def test_a_short_file_that_stays_a_prefix_is_read_after_the_wait(
    tmp_path: Path, logs: Path
) -> None:
    live, short = logs / "app.log", logs / "app.log.1"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")], identify_wait=0.2))
    await t.start()
    c = Collector(t)
    await c.until(20)
    sizes = looks_at(t, short)
    write(short, nums("a", 0, 2))  # the start of app.log, and nothing more comes
    seen = asyncio.get_running_loop().time()
    t._discover_now = True
    t._wake.set()
    await c.until(22)
    assert asyncio.get_running_loop().time() - seen >= 0.2
    assert await c.finish() == want("a", 0, 20) + want("a", 0, 2)
    assert len(sizes) >= 2  # looked at while waiting, then read


# -- A candidate copy that is not one: the same first bytes, other bytes before
# the position the truncated file was read to.


async def test_a_file_that_only_starts_like_the_truncated_one_is_not_its_copy(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path))  # *.log: the look-alike is not followed
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(logs / "app.log.x", nums("a", 0, 6) + nums("x", 0, 30))  # longer than what was read
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(25)
    assert open_on(logs / "app.log.x") == 0  # the look-alike was looked at and let go
    assert await c.finish() == want("a", 0, 20) + want("c", 0, 5)
    assert t.truncations == 1


async def test_a_waiting_copy_that_diverged_before_the_truncation_is_read_as_its_own(
    tmp_path: Path, logs: Path
) -> None:
    live, twin = logs / "app.log", logs / "app.log.1"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    shutil.copyfile(live, twin)
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f.twin is not None for f in t._files):  # app.log.1 waits as a copy
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    # Before the reader looks again: app.log.1 is rewritten (the same first lines,
    # others after them) and app.log truncated.
    write(twin, nums("a", 0, 6) + nums("x", 0, 30), mode="w")
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(61)
    texts = await c.finish()

    def of(path: Path) -> list[str]:
        return [x for ch in c.chunks if ch.path == str(path) for x in ch.texts]

    assert of(live) == want("a", 0, 20) + want("c", 0, 5)
    assert of(twin) == want("a", 0, 6) + want("x", 0, 30)
    assert len(texts) == 61


def open_on(path: Path) -> int:
    """Descriptors of this process open on `path` (other tests' come and go)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return n


async def test_a_newer_look_alike_does_not_hide_the_copy(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 40))
    shutil.copyfile(live, logs / "app.log.1")  # the rotation's copy
    aged(logs / "app.log.1", 50)
    # Newer, as long, the same first lines (another instance's banner, say).
    write(logs / "app-2.log.old", nums("a", 0, 6) + nums("x", 0, 60))
    aged(logs / "app-2.log.old", 10)
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(45)
    assert await c.finish() == want("a", 0, 40) + want("c", 0, 5)


async def test_a_newer_look_alike_discovery_saw_does_not_hide_the_copy(
    tmp_path: Path, logs: Path
) -> None:
    live, look = logs / "app.log", logs / "app.log.x"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 40))
    shutil.copyfile(live, logs / "app.log.1")
    aged(logs / "app.log.1", 50)
    write(look, nums("a", 0, 6) + nums("x", 0, 60))
    aged(look, 10)
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    t._discover_now = True  # discovery opens both before the truncation is seen
    t._wake.set()
    await c.until(111)
    texts = await c.finish()

    def of(path: Path) -> list[str]:
        return [x for ch in c.chunks if ch.path == str(path) for x in ch.texts]

    assert of(live) == want("a", 0, 40) + want("c", 0, 5)
    assert of(look) == want("a", 0, 6) + want("x", 0, 60)
    assert len(texts) == 111


# -- After a copy took over: its last line, the next truncation, the checkpoint,
# and whether it stays open for discovery.


async def test_a_followed_copy_hands_on_its_cut_last_line_before_the_successor(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 30) + "cut")  # copied mid-line
    shutil.copyfile(live, logs / "app.log.1")
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f.twin is not None for f in t._files):  # the copy waits, followed
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(36)
    assert c.texts == [*want("a", 0, 30), "cut", *want("c", 0, 5)]
    await c.finish()


async def test_a_second_copytruncate_soon_after_the_first_finds_its_copy(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 25))
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, "b0\n")  # little read after the first truncation: less than a tail
    await c.until(26)
    write(live, "b1\nb2\n")
    shutil.copyfile(live, logs / "app.log.2")
    os.truncate(live, 0)
    write(live, "c0\n")
    await c.until(29)
    assert await c.finish() == [*want("a", 0, 25), "b0", "b1", "b2", "c0"]
    assert t.truncations == 2


async def test_a_truncation_is_checkpointed_even_with_nothing_after_it(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    size = live.stat().st_size
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(20)
    state = tmp_path / "state" / "checkpoints.json"

    def offsets() -> list[int]:
        try:
            return [e["offset"] for e in json.loads(state.read_text())["files"]]
        except (OSError, ValueError):
            return []

    deadline = asyncio.get_running_loop().time() + 5
    while offsets() != [size]:  # acknowledged and written
        assert asyncio.get_running_loop().time() < deadline, offsets()
        await asyncio.sleep(0.01)
    os.truncate(live, 0)  # and nothing written since: no ack to write a checkpoint
    while t.truncations != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await t.close()
    assert offsets() == [0]


async def test_a_copy_the_globs_match_stays_open_for_discovery(tmp_path: Path, logs: Path) -> None:
    # Shorter than a fingerprint: were it closed and found again by discovery,
    # nothing would tell it from a new file, and it would be read again.
    live = logs / "app.log"
    write(live, "x0\nx1\n")
    conf = cfg(tmp_path, paths=[str(logs / "app.log*")], force_polling=True, poll_interval=60.0)
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(2)
    write(live, "x2\n")
    shutil.copyfile(live, logs / "app.log.1")  # no discovery runs until told
    os.truncate(live, 0)
    write(live, "y0\n")
    await c.until(4)
    assert await c.finish() == ["x0", "x1", "x2", "y0"]  # drain() discovers once more


async def test_a_copy_the_globs_do_not_match_is_closed_once_read(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, force_polling=True, poll_interval=60.0))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 25))
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(30)
    await wait_files(t, 1)  # with no discovery to tell it is not at a matched path
    assert await c.finish() == want("a", 0, 25) + want("c", 0, 5)


async def test_a_move_out_of_the_globs_tree_does_not_stop_the_next_being_caught(
    tmp_path: Path, logs: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    live = logs / "app.log"
    # Polling: only the moves reported here are seen (inotify would report them too).
    conf = cfg(
        tmp_path, chunk_bytes=64, fair_share_bytes=64, force_polling=True, poll_interval=60.0
    )
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    # Before any discovery saw them: A goes out of the globs' tree (not followed
    # there: refused), B is renamed next to it, C is the new file.
    write(live, nums("a", 0, 10))
    os.rename(live, archive / "app.log.0")
    write(live, nums("b", 0, 10))
    os.rename(live, logs / "app.log.1")
    write(live, nums("c", 0, 10))
    renamed(t, live, archive / "app.log.0")
    renamed(t, live, logs / "app.log.1")
    await c.until(20)
    assert await c.finish() == want("b", 0, 10) + want("c", 0, 10)


# -- A rotated file let go (`_forget`): what is still owed for it, and the checkpoint.


async def test_a_rotated_file_let_go_with_lines_unacknowledged_still_counts_as_lag(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    t = Tailer(cfg(tmp_path, rotate_wait=0.05))
    await t.start()
    c = Collector(t, ack=False)
    await c.until(10)
    old = live.stat().st_size
    os.rename(live, logs / "app.log.1")
    write(live, "b0\n")
    t._discover_now = True
    t._wake.set()
    await c.until(11)
    deadline = asyncio.get_running_loop().time() + 5
    while any(f["path"] == str(live) and f["rotated"] for f in t.files()) or len(t.files()) != 1:
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)
    assert t.lag_bytes == old + 3  # the closed file's lines are still owed
    for ch in c.chunks:
        t.ack(ch)
    assert t.lag_bytes == 0
    await c.finish()


async def test_a_rotated_file_let_go_leaves_the_checkpoint(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    t = Tailer(cfg(tmp_path, rotate_wait=0.05))
    await t.start()
    c = Collector(t)
    await c.until(10)
    os.rename(live, logs / "app.log.1")
    write(live, "b0\n")
    t._discover_now = True
    t._wake.set()
    await c.until(11)
    state = tmp_path / "state" / "checkpoints.json"
    new = live.stat().st_ino

    def inodes() -> list[int]:
        try:
            return [e["ino"] for e in json.loads(state.read_text())["files"]]
        except (OSError, ValueError):
            return []

    deadline = asyncio.get_running_loop().time() + 5
    while inodes() != [new]:  # nothing else happens that would rewrite it
        assert asyncio.get_running_loop().time() < deadline, inodes()
        await asyncio.sleep(0.01)
    while open_on(logs / "app.log.1"):  # closed once let go
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    await c.finish()


async def test_a_waiting_copy_that_grows_into_something_else_is_read_as_its_own(
    tmp_path: Path, logs: Path
) -> None:
    live, twin = logs / "app.log", logs / "app.log.1"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(20)
    shutil.copyfile(live, twin)  # `cp`: a copy of a file that lives on
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f.twin is not None for f in t._files):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    write(live, nums("a", 20, 25))
    write(twin, nums("x", 0, 5))  # written to on its own: not a copy after all
    await c.until(50)
    texts = await c.finish()

    def of(path: Path) -> list[str]:
        return [x for ch in c.chunks if ch.path == str(path) for x in ch.texts]

    assert of(live) == want("a", 0, 25)
    assert of(twin) == want("a", 0, 20) + want("x", 0, 5)
    assert len(texts) == 50


class _Vanishing:
    """`os` as rotation.py sees it, where one directory entry is gone by the time
    it is looked at (between the scan and its stat, or between the stat and
    the open): what a file deleted during the search for a copy does."""

    def __init__(self, name: str, at: str, first: str = "") -> None:
        self.name, self.at, self.first = name, at, first  # `first`: listed before the others

    def __getattr__(self, attr: str) -> object:
        return getattr(os, attr)

    def scandir(self, d: str) -> list[object]:
        if os.path.basename(d) == self.name and self.at == "scandir":
            raise FileNotFoundError(2, "No such file or directory", d)
        entries: list[object] = []
        for e in os.scandir(d):
            if e.name == self.name and self.at == "stat":
                entries.insert(0, self._Gone(e))  # first: what comes after it still counts
            elif e.name == self.first:
                entries.insert(0, e)
            else:
                entries.append(e)
        return entries

    def open(self, path: str, flags: int, mode: int = 0o777) -> int:
        if os.path.basename(path) == self.name and self.at == "open":
            raise FileNotFoundError(2, "No such file or directory", path)
        return os.open(path, flags, mode)

    class _Gone:
        def __init__(self, e: os.DirEntry[str]) -> None:
            self.name, self.path = e.name, e.path

        def is_file(self, follow_symlinks: bool = True) -> bool:
            return True  # it was, when scanned

        def stat(self, follow_symlinks: bool = True) -> os.stat_result:
            raise FileNotFoundError(2, "No such file or directory", self.path)


@pytest.mark.parametrize("at", ["stat", "open"])
async def test_a_file_gone_during_the_search_for_the_copy_is_passed_over(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch, at: str
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(20)
    write(live, nums("a", 20, 40))
    shutil.copyfile(live, logs / "app.log.1")
    aged(logs / "app.log.1", 50)
    shutil.copyfile(live, logs / "app.log.gone")  # the newest: looked at first
    monkeypatch.setattr(rotation, "os", _Vanishing("app.log.gone", at))
    os.truncate(live, 0)
    write(live, nums("c", 0, 5))
    await c.until(45)
    assert await c.finish() == want("a", 0, 40) + want("c", 0, 5)


async def test_a_reported_move_whose_file_is_gone_does_not_stop_the_next(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    # Polling: only the moves reported here are seen (inotify would report them too).
    t = Tailer(cfg(tmp_path, force_polling=True, poll_interval=60.0))
    await t.start()
    c = Collector(t)
    write(live, nums("a", 0, 10))
    os.rename(live, logs / "app.log.0")
    os.remove(logs / "app.log.0")  # renamed, then deleted before we looked
    write(live, nums("b", 0, 10))
    os.rename(live, logs / "app.log.1")
    renamed(t, live, logs / "app.log.0")
    renamed(t, live, logs / "app.log.1")
    await c.until(10)
    assert await c.finish() == want("b", 0, 10)


async def test_a_file_rewritten_before_its_first_read_takes_no_other_file_for_its_copy(
    tmp_path: Path, logs: Path
) -> None:
    first, second = logs / "a.log", logs / "b.log"
    write(first, nums("a", 0, 20))
    # Reading pauses once a.log's lines are out and not acknowledged.
    t = Tailer(cfg(tmp_path, max_buffer_bytes=1000))
    await t.start()
    c = Collector(t, ack=False)
    await c.until(20)
    write(second, nums("b", 0, 10))
    deadline = asyncio.get_running_loop().time() + 5
    while not any(f["path"] == str(second) for f in t.files()):  # found, not read
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    write(logs / "notes.txt", nums("n", 0, 30))  # the newest file there, and long
    write(second, nums("c", 0, 3), mode="w")  # rewritten: what it held first is gone
    while t.truncations != 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    for ch in c.chunks:
        t.ack(ch)
    await c.until(23)
    assert await c.finish() == want("a", 0, 20) + want("c", 0, 3)


async def test_a_compressed_copy_of_a_file_let_go_partly_acknowledged_is_not_read_again(
    tmp_path: Path, logs: Path
) -> None:
    # The consumer has acknowledged only the first chunk when the renamed file is
    # let go: what was handed on (all of it) is what a later copy continues from.
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    conf = cfg(
        tmp_path,
        paths=[str(live), str(logs / "app.log.*.gz")],
        rotate_wait=0.05,
        chunk_bytes=512,
    )
    t = Tailer(conf)
    await t.start()
    c = Collector(t, ack=False)
    await c.until(20)
    t.ack(c.chunks[0])
    os.rename(live, logs / "app.log.1")
    await wait_files(t, 0)
    with open(logs / "app.log.1.gz", "wb") as out:
        out.write(gzip.compress((logs / "app.log.1").read_bytes() + nums("a", 20, 22).encode()))
    os.remove(logs / "app.log.1")
    t._discover_now = True
    t._wake.set()
    await c.until(22)
    texts = await c.finish()
    assert texts == want("a", 0, 22)


async def test_a_look_alike_of_a_file_let_go_is_read_from_its_start(
    tmp_path: Path, logs: Path
) -> None:
    live, look = logs / "app.log", logs / "other.log"
    write(live, nums("a", 0, 20))
    conf = cfg(tmp_path, paths=[str(live), str(look)], rotate_wait=0.05)
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(20)
    os.rename(live, logs / "app.log.1")
    await wait_files(t, 0)  # let go: what was read of it is remembered
    # The same first lines (more than a fingerprint), then others: not a copy.
    write(look, nums("a", 0, 6) + nums("x", 0, 30))
    t._discover_now = True
    t._wake.set()
    await c.until(56)
    assert await c.finish() == want("a", 0, 20) + want("a", 0, 6) + want("x", 0, 30)


async def test_a_compressed_file_followed_first_does_not_stop_the_identity_checks(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    with open(logs / "app.log.2.gz", "wb") as out:  # an old rotation, followed first
        out.write(gzip.compress(nums("o", 0, 3).encode()))
    write(live, nums("a", 0, 40))
    # chunk_bytes and max_buffer_bytes: reading pauses half way through app.log.
    conf = cfg(
        tmp_path,
        paths=[str(logs / "*.gz"), str(live)],
        chunk_bytes=512,
        max_buffer_bytes=1000,
    )
    t = Tailer(conf)
    await t.start()
    c = Collector(t, ack=False)
    await c.until(10)
    shutil.copyfile(live, logs / "app.log.1")  # copytruncate, regrown past our position
    os.truncate(live, 0)
    write(live, nums("c", 0, 40))
    deadline = asyncio.get_running_loop().time() + 5
    while t.truncations != 1:  # seen by the identity check while reading is paused
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)
    for ch in c.chunks:
        t.ack(ch)
    c.ack = True
    await c.until(83)
    texts = await c.finish()
    assert [x for x in texts if x[0] != "o"] == want("a", 0, 40) + want("c", 0, 40)
