"""podkit.tailer: a file is known by its content, not only by its inode (issue 17).

A copy made by copytruncate (new inode, same first bytes), a file moved to
another directory the globs cover (or copied there and removed: another
filesystem) and a hard link are the same stream: read on from where it was,
never shipped again from 0. Two files that merely start alike are not.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections import Counter
from pathlib import Path

from podkit.tailer import Tailer
from tests.unit.test_tailer import Collector, cfg, logs, write

__all__ = ["logs"]  # the fixture


def lines(prefix: str, n: int) -> str:
    return "".join(f"{prefix} {i:04d} some text to fill the fingerprint\n" for i in range(n))


def want(prefix: str, n: int) -> list[str]:
    return lines(prefix, n).splitlines()


async def until(cond: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def once(texts: list[str]) -> None:
    twice = [t for t, n in Counter(texts).items() if n > 1]
    assert not twice, f"{len(twice)} lines twice, e.g. {twice[:3]}"


async def test_copytruncate_copy_seen_before_the_truncation_is_not_read_again(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, lines("a", 100))
    t = Tailer(cfg(tmp_path, paths=[str(logs / "app.log*")]))
    await t.start()
    c = Collector(t)
    await c.until(100)
    write(live, lines("b", 20))  # not read yet, perhaps: then it comes from the copy
    shutil.copyfile(live, logs / "app.log.1")
    await until(lambda: t.files_watched == 2)  # discovery saw the copy first
    os.truncate(live, 0)
    write(live, lines("c", 30))
    await c.until(150)
    texts = await c.finish()
    once(texts)
    assert sorted(texts) == sorted(want("a", 100) + want("b", 20) + want("c", 30))


async def test_copy_made_while_stopped_resumes_from_the_checkpoint(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, lines("a", 100))
    conf = cfg(tmp_path, paths=[str(logs / "app.log*")])
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(100)
    await c.finish()
    # While stopped: more lines, then copytruncate, then the app writes on.
    write(live, lines("b", 10))
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, lines("c", 5))
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(15)
    texts = await c.finish()
    once(texts)
    assert sorted(texts) == sorted(want("b", 10) + want("c", 5))


async def test_moved_to_another_directory_the_globs_cover(tmp_path: Path, logs: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    conf = cfg(tmp_path, paths=[str(logs / "*.log"), str(archive / "*.log")])
    write(logs / "a.log", lines("a", 50))
    write(logs / "b.log", lines("b", 50))
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(100)
    os.rename(logs / "a.log", archive / "a.log")  # same filesystem: same inode
    write(archive / "a.log", lines("a2", 5))
    await c.until(105)
    await c.finish()
    # While stopped, b.log goes to the archive by copy and delete (another
    # filesystem: a new inode), after a few more lines.
    write(logs / "b.log", lines("b2", 7))
    shutil.copyfile(logs / "b.log", archive / "b.log")
    os.unlink(logs / "b.log")
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(7)
    texts = await c.finish()
    once(texts)
    assert sorted(texts) == sorted(want("b2", 7))


async def test_hard_link_is_the_same_stream(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, lines("a", 40))
    conf = cfg(tmp_path, paths=[str(logs / "app.log*")])
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(40)
    os.link(live, logs / "app.log.1")
    os.unlink(live)
    write(logs / "app.log.1", lines("b", 3))  # the app still writes through its fd
    write(live, lines("c", 4))  # and a new file starts
    await c.until(47)
    await c.finish()
    # While stopped: linked again, the first name removed.
    os.link(logs / "app.log.1", logs / "app.log.2")
    os.unlink(logs / "app.log.1")
    write(logs / "app.log.2", lines("d", 2))
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(2)
    texts = await c.finish()
    once(texts)
    assert texts == want("d", 2)


async def test_files_that_only_start_alike_are_both_read(tmp_path: Path, logs: Path) -> None:
    banner = "service starting, version 1.2.3\n"
    write(logs / "a.log", banner + lines("a", 20))
    t = Tailer(cfg(tmp_path, identify_wait=0.2))
    await t.start()
    c = Collector(t)
    await c.until(21)
    write(logs / "b.log", banner)  # a prefix of a.log for now: waits a little
    await asyncio.sleep(0.05)
    write(logs / "b.log", lines("b", 3))  # then differs
    write(logs / "c.log", banner)  # stays a prefix: read once identify_wait is over
    await c.until(21 + 4 + 1)
    texts = await c.finish()
    assert texts.count(banner.strip()) == 3
    assert sorted(texts[21:]) == sorted([banner.strip()] * 2 + want("b", 3))


BANNER = "".join(f"banner line {i}: the same words at every start of the app\n" for i in range(6))


async def test_a_long_banner_is_not_an_identity(tmp_path: Path, logs: Path) -> None:
    """Files whose first 256 bytes are the same (a banner longer than that) but
    whose content differs are separate streams: none is resumed at another's
    position, while running (a file gone, a twin) or after a restart."""
    assert len(BANNER) > 256
    conf = cfg(tmp_path, identify_wait=0.2)
    write(logs / "a.log", BANNER + lines("a", 30))
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(36)
    os.unlink(logs / "a.log")  # gone: its identity is remembered for a late copy
    write(logs / "b.log", BANNER + lines("b", 40))  # longer: could be taken for it
    await c.until(36 + 46)
    write(logs / "c.log", BANNER + lines("c", 50))  # b.log is open: c.log is no twin of it
    await c.until(36 + 46 + 56)
    os.unlink(logs / "b.log")
    await c.finish()
    # Stopped: c.log rewritten in place with the banner and more than before.
    write(logs / "c.log", BANNER + lines("d", 60), mode="w")
    t = Tailer(conf)
    await t.start()
    c2 = Collector(t)
    await c2.until(66)
    texts = c.texts + await c2.finish()
    assert sorted(texts) == sorted(
        BANNER.splitlines() * 4 + want("a", 30) + want("b", 40) + want("c", 50) + want("d", 60)
    )


async def test_rewritten_in_place_with_the_same_start_is_read_from_its_start(
    tmp_path: Path, logs: Path
) -> None:
    """Same inode, same first 256 bytes, same length, other lines after them: the
    checkpoint's offset would skip every new line; the bytes before it tell."""
    conf = cfg(tmp_path)
    write(logs / "a.log", BANNER + lines("a", 20))
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(26)
    await c.finish()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())["files"]
    assert len(saved) == 1 and len(saved[0]["tail"]) == 40
    write(logs / "a.log", BANNER + lines("b", 20), mode="r+")  # in place: same inode
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(26)
    assert sorted(await c.finish()) == sorted(BANNER.splitlines() + want("b", 20))


async def test_identities_remembered_are_bounded_and_keep_the_furthest(tmp_path: Path) -> None:
    from podkit.tailer.base import MAX_REMEMBERED

    t = Tailer(cfg(tmp_path))
    for i in range(MAX_REMEMBERED + 10):
        t._remember({"fp": f"{i:040x}", "offset": i})
    assert len(t._lost) == MAX_REMEMBERED
    assert f"{0:040x}" not in t._lost and f"{MAX_REMEMBERED + 9:040x}" in t._lost
    fp = f"{MAX_REMEMBERED + 9:040x}"
    t._remember({"fp": fp, "offset": 3})  # a nearer offset does not move it back
    assert t._lost[fp]["offset"] == MAX_REMEMBERED + 9
    t._remember({"fp": fp, "offset": 10**9})
    assert t._lost[fp]["offset"] == 10**9
