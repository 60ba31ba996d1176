"""podkit.tailer.rotation when the tailer was stopped while files rotated
(docs/testing.md, issue 25): `_resume_rotated` (renamed while stopped),
`_resume_copies` (copied while stopped, under a name the globs do not match)
and `_identify`'s resume of a copy the globs do match.

Each test runs a tailer, stops it (its checkpoint written), changes the files
as a rotation would, starts a second one and asserts on what it delivers:
every line not delivered before, once, in order, under the original name.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from podkit.tailer import Tailer, TailerConfig
from tests.unit.test_tailer import Collector, cfg, logs, write
from tests.unit.test_tailer_rotation_mutants import nums, want

__all__ = ["logs"]  # the fixture


async def run_until(conf: TailerConfig, n: int) -> tuple[Tailer, Collector]:
    """Start a tailer, wait for `n` lines; the caller finishes it."""
    t = Tailer(conf)
    await t.start()
    c = Collector(t)
    await c.until(n)
    return t, c


async def session(conf: TailerConfig, n: int) -> list[str]:
    """A whole run of the tailer: start, `n` lines, drain, stop (checkpoint written)."""
    _, c = await run_until(conf, n)
    return await c.finish()


def saved_paths(tmp_path: Path) -> list[str]:
    state = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    return [e["path"] for e in state["files"]]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_renamed_while_stopped_with_nothing_at_its_path_yet(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    conf = cfg(tmp_path)
    await session(conf, 10)
    write(live, nums("a", 10, 20))
    os.rename(live, logs / "app.log.1")  # and the application has not reopened app.log
    t, c = await run_until(conf, 10)
    write(live, nums("b", 0, 5))
    t._discover_now = True
    t._wake.set()
    await c.until(15)
    assert await c.finish() == want("a", 10, 20) + want("b", 0, 5)
    assert {ch.path for ch in c.chunks} == {str(live)}


async def test_renamed_while_stopped_is_read_before_its_successor_in_small_reads(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    # Small reads: a successor read alongside shows as interleaved lines.
    conf = cfg(tmp_path, chunk_bytes=64, fair_share_bytes=64, rotate_wait=0.05)
    await session(conf, 10)
    write(live, nums("a", 10, 40))
    os.rename(live, logs / "app.log.1")
    write(live, nums("b", 0, 20))
    t, c = await run_until(conf, 50)
    deadline = asyncio.get_running_loop().time() + 5
    while t.files_watched != 1:  # the renamed one closed once read: nothing left of it
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)
    assert await c.finish() == want("a", 10, 40) + want("b", 0, 20)
    assert {ch.path for ch in c.chunks} == {str(live)}


async def test_renamed_while_stopped_and_rewritten_is_not_ours(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    conf = cfg(tmp_path)
    await session(conf, 10)
    os.rename(live, logs / "app.log.1")
    write(logs / "app.log.1", nums("x", 0, 20), mode="w")  # same inode, other content
    write(live, nums("b", 0, 5))
    t, c = await run_until(conf, 5)
    assert t.files_watched == 1  # app.log.1 was let go
    assert await c.finish() == want("b", 0, 5)


async def test_a_directory_gone_while_stopped_does_not_stop_the_others_resuming(
    tmp_path: Path, logs: Path
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    renamed, copied = logs / "r.log", logs / "c.log"
    write(gone / "g.log", nums("g", 0, 10))
    write(renamed, nums("r", 0, 10))
    write(copied, nums("c", 0, 10))
    conf = cfg(tmp_path, paths=[str(gone / "*.log"), str(logs / "*.log")])
    await session(conf, 30)
    assert saved_paths(tmp_path)[0] == str(gone / "g.log")  # looked at first
    shutil.rmtree(gone)
    write(renamed, nums("r", 10, 15))
    os.rename(renamed, logs / "r.log.1")
    write(copied, nums("c", 10, 15))
    shutil.copyfile(copied, logs / "c.log.1")  # copytruncate
    os.truncate(copied, 0)
    write(copied, nums("d", 0, 2))
    fds = open_fds()
    _, c = await run_until(conf, 12)
    texts = await c.finish()
    assert open_fds() == fds  # every file looked at for a copy was closed again
    assert sorted(texts) == sorted(want("r", 10, 15) + want("c", 10, 15) + want("d", 0, 2))
    assert [x for x in texts if x.startswith("c ") or x.startswith("d ")] == want(
        "c", 10, 15
    ) + want("d", 0, 2)
    assert {ch.path for ch in c.chunks} == {str(renamed), str(copied)}


async def test_a_copy_made_while_stopped_is_read_before_its_successor_in_small_reads(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    conf = cfg(tmp_path, chunk_bytes=64, fair_share_bytes=64)
    await session(conf, 10)
    write(live, nums("a", 10, 40) + "cut")  # copied mid-line
    shutil.copyfile(live, logs / "app.log.1")  # copytruncate
    os.truncate(live, 0)
    write(live, nums("b", 0, 20))
    _, c = await run_until(conf, 51)
    # Its last line is complete as it is: nobody writes to a copy.
    assert await c.finish() == [*want("a", 10, 40), "cut", *want("b", 0, 20)]
    assert {ch.path for ch in c.chunks} == {str(live)}


async def test_a_copy_the_globs_match_is_opened_once(tmp_path: Path, logs: Path) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 10))
    conf = cfg(tmp_path)
    await session(conf, 10)
    write(live, nums("a", 10, 15))
    shutil.copyfile(live, logs / "app-copy.log")  # moved to another name the globs match
    os.remove(live)
    t, c = await run_until(conf, 5)
    assert t.files_watched == 1
    assert await c.finish() == want("a", 10, 15)
