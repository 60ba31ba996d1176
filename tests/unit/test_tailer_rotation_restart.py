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
import gzip
import json
import os
import shutil
from pathlib import Path

import pytest

from podkit.tailer import Tailer, TailerConfig, rotation
from tests.unit.test_tailer import Collector, cfg, logs, write
from tests.unit.test_tailer_rotation_mutants import _Vanishing, nums, open_on, want

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
    # Shorter than a fingerprint: only its inode tells it (no copy is found by its
    # first bytes), so only the rename's resume can find it.
    write(renamed, "r0\nr1\n")
    write(copied, nums("c", 0, 10))
    conf = cfg(tmp_path, paths=[str(gone / "*.log"), str(logs / "*.log")])
    await session(conf, 22)
    assert saved_paths(tmp_path)[0] == str(gone / "g.log")  # looked at first
    shutil.rmtree(gone)
    write(renamed, "r2\nr3\n")
    os.rename(renamed, logs / "r.log.1")
    write(copied, nums("c", 10, 15))
    shutil.copyfile(copied, logs / "c.log.1")  # copytruncate
    os.truncate(copied, 0)
    write(copied, nums("d", 0, 2))
    _, c = await run_until(conf, 9)
    texts = await c.finish()
    # Every file looked at for a copy was closed again.
    assert [open_on(p) for p in sorted(logs.iterdir())] == [0] * len(list(logs.iterdir()))
    assert sorted(texts) == sorted(["r2", "r3", *want("c", 10, 15), *want("d", 0, 2)])
    assert [x for x in texts if x[0] in "cd"] == want("c", 10, 15) + want("d", 0, 2)
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
    assert {ch.path for ch in c.chunks} == {str(logs / "app-copy.log")}  # a name of its own


# -- A copy the globs match, seen at start-up: `_identify` resumes it from the
# checkpoint of the file it copies (`_lost`).


async def test_a_copy_resumes_exactly_at_the_checkpoint_and_keeps_it(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    conf = cfg(tmp_path, paths=[str(logs / "app.log*")])
    await session(conf, 20)
    offset = live.stat().st_size
    write(live, "\n" + nums("a", 20, 25))  # an empty line first: a line like any other
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, nums("c", 0, 2))
    _, c = await run_until(conf, 8)
    texts = await c.finish()
    assert sorted(texts) == sorted(["", *want("a", 20, 25), *want("c", 0, 2)])
    first = next(ch for ch in c.chunks if ch.texts[0] == "")
    assert (first.start, first.texts[1]) == (offset, want("a", 20, 21)[0])
    # And from the copy's own checkpoint after that: nothing again.
    write(live, nums("c", 2, 3))
    assert await session(conf, 1) == want("c", 2, 3)


async def test_a_copy_exactly_as_long_as_the_checkpoint_holds_nothing_new(
    tmp_path: Path, logs: Path
) -> None:
    live, copy = logs / "app.log", logs / "app.log.1"
    write(live, nums("a", 0, 20) + "held")  # handed on at the drain: "partial" checkpoint
    conf = cfg(tmp_path, paths=[str(logs / "app.log*"), str(logs / "other.log")])
    assert await session(conf, 20) == [*want("a", 0, 20), "held"]
    shutil.copyfile(live, copy)  # a copy still being made, up to where we were
    os.remove(live)
    t, c = await run_until(conf, 0)
    write(logs / "other.log", "sentinel\n")  # read once the copy has been resumed
    t._discover_now = True
    t._wake.set()
    await c.until(1)
    assert await c.finish() == ["sentinel"]
    write(copy, "\n" + nums("a", 20, 22))  # the copy goes on: the newline ends "held"
    assert await session(conf, 2) == want("a", 20, 22)


async def test_a_copy_resumed_after_a_partial_line_skips_its_newline(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20) + "held")
    conf = cfg(tmp_path, paths=[str(logs / "app.log*")])
    assert await session(conf, 20) == [*want("a", 0, 20), "held"]
    write(live, "\n" + nums("a", 20, 22))
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, nums("c", 0, 1))
    assert sorted(await session(conf, 3)) == sorted(want("a", 20, 22) + want("c", 0, 1))


async def test_a_compressed_copy_resumes_at_the_uncompressed_offset(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20))
    conf = cfg(tmp_path, paths=[str(logs / "app.log*")])
    await session(conf, 20)
    write(live, nums("a", 20, 25))
    with open(logs / "app.log.1.gz", "wb") as out:  # shorter than the offset it resumes at
        out.write(gzip.compress(live.read_bytes()))
    os.truncate(live, 0)
    write(live, nums("c", 0, 2))
    assert sorted(await session(conf, 7)) == sorted(want("a", 20, 25) + want("c", 0, 2))


async def test_a_look_alike_does_not_use_up_the_checkpoint_of_the_file_it_resembles(
    tmp_path: Path, logs: Path
) -> None:
    live, look = logs / "app.log", logs / "look.log"
    write(live, nums("a", 0, 20))
    conf = cfg(tmp_path, rotate_wait=0.05)
    await session(conf, 20)
    os.remove(live)
    # The same first lines (more than a fingerprint), then other ones.
    write(look, nums("a", 0, 6) + nums("x", 0, 5))
    t, c = await run_until(conf, 11)  # read from its start: its own stream
    os.remove(look)
    deadline = asyncio.get_running_loop().time() + 5
    while t.files_watched:
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)
    write(logs / "copy.log", nums("a", 0, 25))  # app.log, copied before it was deleted
    t._discover_now = True
    t._wake.set()
    await c.until(16)
    assert await c.finish() == want("a", 0, 6) + want("x", 0, 5) + want("a", 20, 25)


async def test_a_copy_that_took_over_after_a_partial_line_keeps_that_in_its_checkpoint(
    tmp_path: Path, logs: Path
) -> None:
    live = logs / "app.log"
    write(live, nums("a", 0, 20) + "held")
    # Reading pauses once the 20 lines and "held" are out and not acknowledged.
    conf = cfg(tmp_path, partial_flush_timeout=0.05, max_buffer_bytes=1000)
    t = Tailer(conf)
    await t.start()
    c = Collector(t, ack=False)
    await c.until(21)  # "held" handed on without its newline
    write(live, "\n" + nums("a", 20, 25))  # the newline comes, then copytruncate
    shutil.copyfile(live, logs / "app.log.1")
    os.truncate(live, 0)
    write(live, nums("c", 0, 2))
    deadline = asyncio.get_running_loop().time() + 5
    while t.truncations != 1:  # the copy took over (reading is still paused)
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    for ch in c.chunks:
        t.ack(ch)  # acknowledged in the copy's name now, up to after "held"
    await t.close()  # before the copy is read any further
    # The copy resumes from its own checkpoint: after "held", its newline skipped.
    texts = await session(conf, 7)
    assert sorted(texts) == sorted(want("a", 20, 25) + want("c", 0, 2))


async def test_files_resumed_at_start_are_closed_once_read_without_a_discovery(
    tmp_path: Path, logs: Path
) -> None:
    renamed, copied = logs / "r.log", logs / "c.log"
    write(renamed, nums("r", 0, 10))
    write(copied, nums("c", 0, 10))
    # No discovery after the first (polling, once a minute): nothing else tells
    # the resumed files that no matched path names them. From the tail: a file
    # first seen at start-up is read from its end; a copy found then is not one.
    conf = cfg(tmp_path, force_polling=True, poll_interval=60.0, rotate_wait=0.05, read_from="tail")
    t, c = await run_until(conf, 0)  # r0-r9 and c0-c9 are skipped: the tail
    write(renamed, nums("r", 10, 12))
    write(copied, nums("c", 10, 12))
    await c.until(4)
    await c.finish()
    write(renamed, nums("r", 12, 15))
    os.rename(renamed, logs / "r.log.1")
    write(copied, nums("c", 12, 15))
    shutil.copyfile(copied, logs / "c.log.1")
    os.truncate(copied, 0)
    write(copied, nums("d", 0, 2))
    t, c = await run_until(conf, 8)
    deadline = asyncio.get_running_loop().time() + 5
    while t.files_watched != 1:
        assert asyncio.get_running_loop().time() < deadline, t.files()
        await asyncio.sleep(0.01)
    texts = await c.finish()
    assert sorted(texts) == sorted(want("r", 12, 15) + want("c", 12, 15) + want("d", 0, 2))


async def test_a_file_gone_while_looking_for_rotated_files_at_start_is_passed_over(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed, copied = logs / "r.log", logs / "c.log"
    write(renamed, "r0\nr1\n")  # short: found by its inode only
    write(copied, nums("c", 0, 10))  # found by its first bytes only
    conf = cfg(tmp_path)
    await session(conf, 12)
    write(renamed, "r2\n")
    os.rename(renamed, logs / "r.log.1")
    write(copied, nums("c", 10, 12))
    shutil.copyfile(copied, logs / "c.log.1")
    os.truncate(copied, 0)
    write(logs / "x.gone", "deleted as the directory is read\n")
    monkeypatch.setattr(rotation, "os", _Vanishing("x.gone", "stat"))
    assert sorted(await session(conf, 3)) == sorted(["r2", *want("c", 10, 12)])


async def test_every_file_rotated_while_stopped_is_resumed(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    short = [logs / "r.log", logs / "s.log"]  # found by their inodes only
    long = [logs / "c.log", logs / "d.log"]  # found by their first bytes only
    write(other / "o.log", "o0\n")
    for p in short:
        write(p, f"{p.stem}0\n")
    for p in long:
        write(p, nums(p.stem, 0, 10))
    conf = cfg(tmp_path, paths=[str(other / "*.log"), str(logs / "*.log")])
    await session(conf, 23)
    assert saved_paths(tmp_path)[0] == str(other / "o.log")
    os.rename(other / "o.log", other / "o.log.1")
    for p in short:
        write(p, f"{p.stem}1\n")
        os.rename(p, f"{p}.1")
    write(long[0], nums("c", 10, 12))
    shutil.copyfile(long[0], logs / "c.log.1")  # copytruncate
    os.truncate(long[0], 0)
    write(long[1], nums("d", 10, 12))
    shutil.copyfile(long[1], logs / "d.log.1")  # copied away, nothing at its path now
    os.remove(long[1])
    write(logs / "aaa", nums("z", 0, 10))  # another file, looked at first
    # The directory of the first entry is gone by the time it is read; in the
    # other, a file that is none of them is looked at first.
    monkeypatch.setattr(rotation, "os", _Vanishing("other", "scandir", first="aaa"))
    texts = await session(conf, 6)
    assert sorted(texts) == sorted(["r1", "s1", *want("c", 10, 12), *want("d", 10, 12)])
