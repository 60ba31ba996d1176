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
import os
import shutil
from pathlib import Path

from podkit.tailer import Tailer
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
