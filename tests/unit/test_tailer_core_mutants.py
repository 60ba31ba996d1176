"""The tailer's loop and public API at their edges: acknowledgements and what
they release, stop and drain, the read-ahead limits, a reader that fails, the
options that build a TailerConfig, and the file objects the loop keeps.

Written against the survivors of `make mutate` over podkit/tailer/core.py
(all but `_open`), files.py (all but the checkpoint functions), base.py and
config.py (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from podkit.metrics import Metrics
from podkit.multiline import MultilineOptions
from podkit.options import UsageError
from podkit.tailer import Chunk, Tailer, TailerConfig, TailingOptions, register_metrics
from podkit.tailer.base import MAX_REMEMBERED
from podkit.tailer.discovery import SKIP_REASONS
from podkit.tailer.files import FINGERPRINT_BYTES, Line, _File, _fp_of
from tests.helpers import stays_async, wait_until_async
from tests.unit.test_tailer import Collector, cfg, write


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


def _saved(tmp: Path) -> dict[str, dict[str, Any]]:
    """checkpoints.json by file name."""
    data = json.loads((tmp / "state" / "checkpoints.json").read_text())
    return {Path(e["path"]).name: e for e in data["files"]}


def _sha(b: bytes) -> bytes:
    return hashlib.sha1(b).digest()


# -- the options -----------------------------------------------------------------------


def test_every_option_reaches_the_tailer_config() -> None:
    o = TailingOptions.from_mapping(
        {
            "path": ["/l/*.log", "/m/*.log"],
            "exclude": ["x.log"],
            "follow_symlinks": True,
            "state_dir": "/s",
            "read_from": "tail",
            "max_line_bytes": "2KiB",
            "partial_flush_timeout": "7s",
            "poll_interval": "3s",
            "checkpoint_interval": "250ms",
            "buffer_max_bytes": "4KiB",
        }
    )
    c = o.config()
    assert c == TailerConfig(
        paths=["/l/*.log", "/m/*.log"],
        exclude=["x.log"],
        state_dir="/s",
        read_from="tail",
        max_line_bytes=2048,
        partial_flush_timeout=7.0,
        poll_interval=3.0,
        checkpoint_interval=0.25,
        max_buffer_bytes=4096,
        follow_symlinks=True,
    )
    # Copies: a program that edits its config's lists does not edit its options.
    c.paths.append("/z")
    c.exclude.append("z")
    assert o.path == ["/l/*.log", "/m/*.log"] and o.exclude == ["x.log"]


def test_multiline_options_and_overrides_reach_the_tailer_config() -> None:
    o = TailingOptions.from_mapping({"path": ["/l/*.log"]})
    m = MultilineOptions.from_mapping({"start": "^\\S", "max_lines": 7, "timeout": "2s"})
    c = o.config(m, paths=["/route/*.log"], max_chunk_lines=9)
    assert (c.multiline_start, c.multiline_max_lines, c.multiline_timeout) == ("^\\S", 7, 2.0)
    assert c.paths == ["/route/*.log"] and c.max_chunk_lines == 9  # the program's word last
    plain = o.config()
    assert (plain.multiline_start, plain.multiline_max_lines, plain.multiline_timeout) == (
        None,
        500,
        3.0,
    )


def test_the_buffer_must_hold_at_least_one_line() -> None:
    same = TailingOptions.from_mapping({"buffer_max_bytes": "2KiB", "max_line_bytes": "2KiB"})
    assert same.buffer_max_bytes == same.max_line_bytes == 2048
    with pytest.raises(
        UsageError, match=r"^--buffer-max-bytes: must be at least --max-line-bytes$"
    ):
        TailingOptions(path=["/l/*.log"], buffer_max_bytes=2047, max_line_bytes=2048).check()


def test_check_config_names_a_missing_glob_base_and_an_unusable_state_dir(
    tmp_path: Path,
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "afile").write_text("")
    ok = TailingOptions(path=[str(tmp_path / "logs" / "*.log")], state_dir=str(tmp_path / "st"))
    assert ok.problems() == []
    gone = str(tmp_path / "gone")
    # The globs given replace --path (a program's routes name their own).
    assert ok.problems([gone + "/*.log"]) == [
        f"--path {gone}: does not exist (is its volume mounted?)"
    ]
    bad = TailingOptions(
        path=[str(tmp_path / "afile" / "*.log"), str(tmp_path / "logs" / "*.log")],
        state_dir=str(tmp_path / "afile" / "st"),
    )
    assert bad.problems() == [
        f"--path {tmp_path / 'afile'}: not a directory",
        f"--state-dir {tmp_path / 'afile' / 'st'}: {tmp_path / 'afile'} is not a directory",
    ]


# -- the Tailer's own state --------------------------------------------------------------


def test_a_new_tailer_starts_from_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"^read_from must be 'head' or 'tail'$"):
        Tailer(TailerConfig(paths=["*.log"], read_from="middle"))
    exclude = ["x.log"]
    t = Tailer(TailerConfig(paths=["logs/*.log"], exclude=exclude, read_from="tail"))
    exclude.append("y.log")
    assert t.paths == [str(tmp_path / "logs" / "*.log")] and t.exclude == ["x.log"]
    assert t.skipped == dict.fromkeys(SKIP_REASONS, 0)
    assert t.skipped_files() == [] and t.files() == []
    assert (t.files_watched, t.inflight_bytes, t.lag_bytes) == (0, 0, 0)
    counters = (t.lines_read, t.bytes_read, t.truncated_lines, t.rotations)
    assert counters == (0, 0, 0, 0)
    assert (t.truncations, t.read_errors, t.checkpoint_errors) == (0, 0, 0)
    assert t.polling is False and t.error is None


async def test_files_reports_each_file_and_whether_it_was_rotated(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "one\ntwo\n")
    t = Tailer(cfg(tmp_path, rotate_wait=30))
    await t.start()
    c = Collector(t, ack=False)
    try:
        await c.until(2)
        ino = (logs / "a.log").stat().st_ino
        assert t.files() == [
            {
                "path": str(logs / "a.log"),
                "inode": ino,
                "size": 8,
                "read": 8,
                "acknowledged": 0,
                "rotated": False,
            }
        ]
        t.ack(c.chunks[0])
        os.rename(logs / "a.log", logs / "a.old")  # out of the glob: rotated away
        t._discover()
        [f] = t.files()
        assert (f["acknowledged"], f["rotated"]) == (8, True)
    finally:
        await t.close()


# -- acknowledgements ---------------------------------------------------------------------


async def test_a_chunk_acknowledged_twice_is_counted_once(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\n")
    write(logs / "b.log", "bee\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t, ack=False)
    try:
        await c.until(2)
        assert t.inflight_bytes == 8
        first = c.chunks[0]
        t.ack(first)
        t.ack(first)
        assert t.inflight_bytes == 4  # the other file's chunk is still out
        orphan = Chunk(None, "/x", ["x"], frozenset(), 0, 2, 2)  # no file behind it
        t._inflight += 2
        t.ack(orphan)
        assert t.inflight_bytes == 4
    finally:
        await t.close()


async def test_a_deleted_file_is_dropped_from_checkpoints_once_all_its_lines_are_acknowledged(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "one\n")
    write(logs / "b.log", "bee\n")
    t = Tailer(cfg(tmp_path, rotate_wait=0.05))
    await t.start()
    c = Collector(t, ack=False)
    try:
        await c.until(2)
        os.unlink(logs / "a.log")
        await wait_until_async(lambda: t.files_watched == 1, what="a.log closed")
        t.checkpoint(force=True)
        assert set(_saved(tmp_path)) == {"a.log", "b.log"}  # its line is still out
        assert t.lag_bytes == 8
        for ch in c.chunks:
            t.ack(ch)
        t.checkpoint(force=True)
        assert set(_saved(tmp_path)) == {"b.log"}
        assert t.lag_bytes == 0
    finally:
        await t.close()


async def test_checkpoint_force_writes_at_once_and_otherwise_waits_its_interval(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "one\n")
    t = Tailer(cfg(tmp_path, checkpoint_interval=60))
    await t.start()
    c = Collector(t)
    try:
        await c.until(1)
        await wait_until_async(lambda: (tmp_path / "state" / "checkpoints.json").exists())
        write(logs / "a.log", "two\n")
        await c.until(2)
        t.checkpoint()  # the last write was less than 60 s ago
        assert _saved(tmp_path)["a.log"]["offset"] in (0, 4)
        t.checkpoint(force=True)
        assert _saved(tmp_path)["a.log"]["offset"] == 8
    finally:
        await t.close()


# -- stop and drain -------------------------------------------------------------------------


async def test_drain_before_start_and_after_close_returns_at_once(
    tmp_path: Path, logs: Path
) -> None:
    t = Tailer(cfg(tmp_path))
    await asyncio.wait_for(t.drain(), 2)
    await t.start()
    await t.close()
    await asyncio.wait_for(t.drain(), 2)
    # Closed without ever starting: nothing to stop.
    await asyncio.wait_for(Tailer(cfg(tmp_path)).close(), 2)
    # Nothing found, nothing acknowledged: no checkpoint file either.
    assert not (tmp_path / "state" / "checkpoints.json").exists()


async def test_close_ends_the_chunks_writes_what_was_acknowledged_and_releases_files(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "one\n")
    t = Tailer(cfg(tmp_path, checkpoint_interval=60))
    await t.start()
    got: list[Chunk] = []

    async def consume() -> None:
        async for ch in t.chunks():
            got.append(ch)

    task = asyncio.create_task(consume())
    await wait_until_async(lambda: got, what="the first chunk")
    await wait_until_async(lambda: (tmp_path / "state" / "checkpoints.json").exists())
    t.ack(got[0])  # acknowledged after the first write, within its 60 s interval
    fds = [f.fd for f in t._files]
    await asyncio.wait_for(t.close(), 5)
    await asyncio.wait_for(task, 2)  # the consumer's loop ended
    assert _saved(tmp_path)["a.log"]["offset"] == 4
    assert t.files_watched == 0 and t._watcher is None
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    # Iterated again (a second consumer): it ends too.
    assert [ch async for ch in t.chunks()] == []
    await asyncio.wait_for(t.close(), 2)  # twice is fine


async def test_the_reading_task_is_named_and_gone_once_closed(tmp_path: Path, logs: Path) -> None:
    """A task dump (asyncio, a hang guard) names the tailer's task; close() ends
    it, leaving nothing pending (asyncio would warn of a task destroyed pending)."""

    def tailer_tasks() -> list[asyncio.Task[Any]]:
        return [x for x in asyncio.all_tasks() if x.get_name() == "tailer"]

    write(logs / "a.log", "one\n")
    t = Tailer(cfg(tmp_path, poll_interval=30, state_dir=None))  # idle for 30 s at a time
    await t.start()
    assert len(tailer_tasks()) == 1
    c = Collector(t)
    await c.until(1)
    await t.close()
    assert tailer_tasks() == []
    await asyncio.wait_for(c.task, 2)


async def test_a_reader_that_fails_ends_the_chunks_with_its_error(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(logs / "a.log", "one\n")
    t = Tailer(cfg(tmp_path))

    def broken(now: float) -> bool:
        raise OSError(5, "the disk went away")

    monkeypatch.setattr(t, "_read_round", broken)
    await t.start()
    with pytest.raises(RuntimeError, match=r"^tailer failed: \[Errno 5\] the disk went away$"):
        async with asyncio.timeout(5):
            async for _ in t.chunks():
                pass
    assert isinstance(t.error, OSError)
    await asyncio.wait_for(t.drain(), 2)  # nothing left to wait for
    with pytest.raises(RuntimeError, match="tailer failed"):  # and again for a second reader
        async with asyncio.timeout(2):
            async for _ in t.chunks():
                pass
    await t.close()


async def test_drain_reads_to_the_end_through_a_full_buffer_and_flushes_the_last_line(
    tmp_path: Path, logs: Path
) -> None:
    lines = [f"{i:05d}" for i in range(2000)]
    write(logs / "a.log", "\n".join(lines))  # the last line has no newline
    t = Tailer(
        cfg(tmp_path, max_buffer_bytes=600, chunk_bytes=256, poll_interval=5, checkpoint_interval=0)
    )
    await t.start()
    c = Collector(t, ack=False)
    await wait_until_async(lambda: t.inflight_bytes >= 600, what="the buffer full")
    drained = asyncio.create_task(t.drain())

    async def ack_slowly() -> None:
        while not drained.done():
            for ch in list(c.chunks):
                t.ack(ch)
            await asyncio.sleep(0.005)

    acker = asyncio.create_task(ack_slowly())
    await asyncio.wait_for(drained, 10)
    await asyncio.wait_for(c.task, 5)
    await acker
    assert c.texts == lines
    # Checkpoints went on while the drain waited for the consumer (the loop that
    # writes them otherwise is draining).
    await wait_until_async(
        lambda: _saved(tmp_path)["a.log"]["offset"] > 0, timeout=2, what="a checkpoint"
    )
    await t.close()


async def test_a_drain_waiting_for_room_still_writes_the_last_acknowledgement(
    tmp_path: Path, logs: Path
) -> None:
    """The consumer stops acknowledging while the drain waits for room: what it
    did acknowledge is checkpointed within a second (the drain's own wake-up),
    not only at close()."""
    write(logs / "a.log", "".join(f"{i:04d}\n" for i in range(1000)))
    t = Tailer(
        cfg(tmp_path, max_buffer_bytes=50, chunk_bytes=50, poll_interval=5, checkpoint_interval=0.2)
    )
    await t.start()
    c = Collector(t, ack=False)
    try:
        await wait_until_async(lambda: t.inflight_bytes >= 50, what="the buffer full")
        drained = asyncio.create_task(t.drain())
        await wait_until_async(lambda: t._draining, what="draining")
        t.ack(c.chunks[0])
        t.checkpoint(force=True)  # written now: the next write is not due for 0.2 s
        assert _saved(tmp_path)["a.log"]["offset"] == c.chunks[0].end
        await wait_until_async(lambda: len(c.chunks) > 1, what="a second chunk")
        second = c.chunks[1]
        t.ack(second)  # ... so this one waits for the drain's next look
        await wait_until_async(
            lambda: _saved(tmp_path)["a.log"]["offset"] == second.end,
            timeout=1.8,
            what="the second acknowledgement checkpointed",
        )
        assert not drained.done()
        c.ack = True
        for ch in list(c.chunks):
            t.ack(ch)
        await asyncio.wait_for(drained, 10)
        await asyncio.wait_for(c.task, 5)
        assert c.texts == [f"{i:04d}" for i in range(1000)]
    finally:
        await t.close()


async def test_drain_hands_on_a_held_multiline_record(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "start 1\n  more\nstart 2\n  more 2\n")
    t = Tailer(cfg(tmp_path, multiline_start=r"^start", multiline_timeout=60))
    await t.start()
    c = Collector(t)
    await c.until(1)
    assert await stays_async(lambda: len(c.texts) == 1, 0.1)  # the second is held
    assert await c.finish() == ["start 1\n  more", "start 2\n  more 2"]


# -- the read-ahead limits ------------------------------------------------------------------


async def test_a_consumer_that_takes_chunks_without_acking_keeps_reading_at_its_pace(
    tmp_path: Path, logs: Path
) -> None:
    """max_queue_bytes bounds what waits in the queue, not what is unacknowledged:
    each chunk taken makes room at once (not at the next 0.1 s tick)."""
    n = 300
    write(logs / "a.log", "".join(f"{i:04d}\n" for i in range(n)))
    t = Tailer(
        cfg(tmp_path, max_queue_bytes=5, chunk_bytes=5, poll_interval=5, checkpoint_interval=60)
    )
    await t.start()
    c = Collector(t, ack=False)
    try:
        start = time.monotonic()
        await c.until(n, timeout=10)
        assert time.monotonic() - start < 8
        assert t.inflight_bytes == 5 * n
    finally:
        await t.close()


async def test_an_ack_makes_room_at_once_when_the_buffer_is_full(
    tmp_path: Path, logs: Path
) -> None:
    n = 200
    write(logs / "a.log", "".join(f"{i:04d}\n" for i in range(n)))
    t = Tailer(
        cfg(tmp_path, max_buffer_bytes=5, chunk_bytes=5, poll_interval=5, checkpoint_interval=60)
    )
    await t.start()
    got: list[Chunk] = []

    async def consume() -> None:
        async for ch in t.chunks():
            got.append(ch)
            # Acknowledged a turn later, while the reader waits for room.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            t.ack(ch)

    task = asyncio.create_task(consume())
    try:
        start = time.monotonic()
        await wait_until_async(lambda: len(got) == n, timeout=10, what="every line")
        # 0.1 s per line if only the loop's tick noticed the room: 20 s.
        assert time.monotonic() - start < 8
    finally:
        await t.close()
        await asyncio.wait_for(task, 2)


async def test_discovery_waits_for_its_poll_and_identity_is_checked_every_tenth_of_a_second(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of loop turns (one per acknowledgement): discovery, a walk of every
    glob, runs at the poll interval only; the cheap identity check (copytruncate
    seen late) every 0.1 s, not at every turn and not less often."""
    n = 400
    write(logs / "a.log", "".join(f"{i:04d}\n" for i in range(n)))
    t = Tailer(
        cfg(tmp_path, max_buffer_bytes=5, chunk_bytes=5, poll_interval=30, checkpoint_interval=60)
    )
    await t.start()
    discovered: list[float] = []
    identified: list[float] = []
    discover, identify = t._discover, t._check_identity

    def spy_discover(initial: bool = False) -> None:
        discovered.append(time.monotonic())
        discover(initial)

    def spy_identify() -> None:
        identified.append(time.monotonic())
        identify()

    monkeypatch.setattr(t, "_discover", spy_discover)
    monkeypatch.setattr(t, "_check_identity", spy_identify)
    got: list[Chunk] = []

    async def consume() -> None:
        async for ch in t.chunks():
            got.append(ch)
            await asyncio.sleep(0.002)  # paces the consumer: one loop turn per line
            t.ack(ch)

    begin = time.monotonic()
    task = asyncio.create_task(consume())
    try:
        await wait_until_async(lambda: len(got) == n, timeout=20, what="every line")
        busy = time.monotonic() - begin
        assert busy > 0.5  # 400 turns of at least 2 ms
        assert len(discovered) <= 1, len(discovered)
        assert 3 <= len(identified) <= busy / 0.1 + 3, (len(identified), busy)
        gaps = [b - a for a, b in zip([begin, *identified], identified, strict=False)]
        assert max(gaps) < 0.6, gaps
    finally:
        await t.close()
        await asyncio.wait_for(task, 2)


async def test_a_rotated_file_closes_on_time_while_reading_waits_for_room(
    tmp_path: Path, logs: Path
) -> None:
    """Reading paused (the consumer stalled): the loop still looks every 0.1 s,
    so a rotated file idle for rotate_wait is closed then, not at the next poll."""
    write(logs / "b.log", "b\n")
    t = Tailer(cfg(tmp_path, max_buffer_bytes=50, poll_interval=30, rotate_wait=0.2))
    await t.start()
    c = Collector(t, ack=False)
    try:
        await c.until(1)
        write(logs / "a.log", "".join(f"{i:04d}\n" for i in range(100)))
        t._discover()
        await wait_until_async(lambda: t.inflight_bytes >= 50, what="the buffer full")
        os.unlink(logs / "b.log")
        t._discover()
        await wait_until_async(lambda: t._files[0].at_eof and t._files[0].eof_since, what="eof")
        gone = time.monotonic()
        await wait_until_async(lambda: t.files_watched == 1, timeout=3, what="b.log closed")
        assert time.monotonic() - gone < 0.8  # rotate_wait (0.2 s) and a look (0.1 s)
        assert [f["path"] for f in t.files()] == [str(logs / "a.log")]
    finally:
        await t.close()


def test_reading_pauses_at_either_limit_reached_exactly(tmp_path: Path) -> None:
    t = Tailer(cfg(tmp_path, max_buffer_bytes=10, max_queue_bytes=20))
    assert not t._full()
    t._inflight, t._queued = 9, 19
    assert not t._full()
    t._inflight = 10
    assert t._full()
    t._inflight, t._queued = 9, 20
    assert t._full()


# -- how long the loop sleeps ---------------------------------------------------------------


class _Pending:
    """A file whose partial line is held (only what _tick looks at)."""

    class split:
        pending = True


def test_the_loop_sleeps_until_the_next_poll_flush_or_checkpoint(tmp_path: Path) -> None:
    t = Tailer(cfg(tmp_path, poll_interval=2.0, checkpoint_interval=0.5))
    assert t._tick() == 2.0  # nothing due but the next poll
    t._dirty_ckpt = True
    assert t._tick() == 0.5  # an acknowledged offset to write
    t._dirty_ckpt = False
    t._files = [_Pending()]  # type: ignore[list-item]
    assert t._tick() == pytest.approx(5.0 / 4)  # a held partial line: a quarter of its timeout
    t = Tailer(cfg(tmp_path, poll_interval=2.0, partial_flush_timeout=0.1))
    t._files = [_Pending()]  # type: ignore[list-item]
    assert t._tick() == 0.05  # ... but not more often than every 50 ms
    t = Tailer(cfg(tmp_path, poll_interval=2.0, multiline_start="^x", multiline_timeout=1.0))
    assert t._tick() == 0.25  # a record may be held: a quarter of its timeout
    t = Tailer(cfg(tmp_path, poll_interval=2.0, multiline_start="^x", multiline_timeout=0.01))
    assert t._tick() == 0.05
    t = Tailer(cfg(tmp_path, poll_interval=0.001, checkpoint_interval=0.5))
    assert t._tick() == 0.01  # never a busy loop
    t = Tailer(cfg(tmp_path, poll_interval=2.0, state_dir=None))
    t._dirty_ckpt = True
    assert t._tick() == 2.0  # no checkpoints kept: nothing to write


async def test_a_partial_line_is_flushed_on_time_between_slow_polls(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "no newline")
    t = Tailer(cfg(tmp_path, poll_interval=30, partial_flush_timeout=0.2))
    await t.start()
    c = Collector(t)
    try:
        start = time.monotonic()
        await c.until(1, timeout=5)
        assert time.monotonic() - start < 2  # not at the next poll, 30 s away
    finally:
        await t.close()


# -- discovery rounds -----------------------------------------------------------------------


async def test_a_directory_that_matches_is_not_refused_and_refusals_stop_nothing(
    tmp_path: Path, logs: Path
) -> None:
    (logs / "0dir.log").mkdir()  # sorted before a.log: discovery goes on past them
    os.symlink("0loop.log", logs / "0loop.log")
    write(logs / "a.log", "a\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    try:
        assert t.skipped_files() == [{"path": str(logs / "0loop.log"), "reason": "symlink_loop"}]
        assert t.files_watched == 1
        assert [Path(f["path"]).name for f in t.files()] == ["a.log"]
    finally:
        await t.close()


async def test_a_refusal_is_forgotten_once_the_path_is_gone(tmp_path: Path, logs: Path) -> None:
    os.mkfifo(logs / "p.log")
    t = Tailer(cfg(tmp_path))
    await t.start()
    try:
        assert t.skipped_files() == [{"path": str(logs / "p.log"), "reason": "not_regular"}]
        t._discover()
        assert t.skipped["not_regular"] == 1  # refused again, counted once
        os.unlink(logs / "p.log")
        t._discover()
        assert t.skipped_files() == []
        os.mkfifo(logs / "p.log")
        t._discover()
        assert t.skipped["not_regular"] == 2  # back again: a new refusal
    finally:
        await t.close()


async def test_a_rename_and_create_counts_a_rotation_and_reads_the_old_file_first(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "old 1\n")
    t = Tailer(cfg(tmp_path, poll_interval=30, rotate_wait=30))
    await t.start()
    c = Collector(t)
    try:
        await c.until(1)
        os.rename(logs / "a.log", logs / "a.log.1")
        write(logs / "a.log", "new 1\n")
        write(logs / "a.log.1", "old 2\n")
        t._discover()
        assert t.rotations == 1
        new = t._current[str(logs / "a.log")]
        assert new.after is not None and new.after.paths == set()
        assert await c.until(3) == ["old 1", "old 2", "new 1"]
        assert [f["rotated"] for f in t.files()] == [True, False]
        os.rename(logs / "a.log", logs / "a.log.2")
        write(logs / "a.log", "newer 1\n")
        t._discover()
        assert t.rotations == 2
        assert await c.until(4) == ["old 1", "old 2", "new 1", "newer 1"]
    finally:
        await t.close()


async def test_a_file_renamed_to_another_matched_name_is_the_same_stream(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "one\n")
    t = Tailer(cfg(tmp_path, poll_interval=30, rotate_wait=0.1))
    await t.start()
    c = Collector(t)
    try:
        await c.until(1)
        os.rename(logs / "a.log", logs / "b.log")  # still matched: not a rotation
        t._discover()
        assert [f["rotated"] for f in t.files()] == [False]
        write(logs / "b.log", "two\n")
        assert await c.until(2) == ["one", "two"]
        # Not closed after rotate_wait, nor read again from the start.
        assert await stays_async(lambda: t.files_watched == 1, 0.3)
        t._discover()
        assert await stays_async(lambda: len(c.texts) == 2, 0.1)
    finally:
        await t.close()


async def test_new_files_are_found_at_each_poll_without_a_watcher(
    tmp_path: Path, logs: Path
) -> None:
    t = Tailer(cfg(tmp_path, poll_interval=0.05))
    await t.start()
    if t._watcher is not None:
        await t._watcher.stop()
        t._watcher = None  # nothing tells the loop: only the poll interval finds it
    c = Collector(t)
    try:
        write(logs / "a.log", "a\n")
        assert await c.until(1, timeout=3) == ["a"]
    finally:
        await t.close()


async def test_a_renamed_file_stays_open_for_rotate_wait_then_closes(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "a\n")  # still matched, and looked at first: not closed
    write(logs / "b.log", "one\nlast, no newline")
    t = Tailer(cfg(tmp_path, rotate_wait=0.5, partial_flush_timeout=60))
    await t.start()
    c = Collector(t)
    try:
        await c.until(2)
        assert [Path(f["path"]).name for f in t.files()] == ["a.log", "b.log"]
        os.rename(logs / "b.log", logs / "b.old")
        t._discover()
        assert await stays_async(lambda: t.files_watched == 2, 0.25)
        # Closed once idle for rotate_wait; its held last line goes out first.
        await wait_until_async(lambda: t.files_watched == 1, timeout=3, what="closed")
        assert [Path(f["path"]).name for f in t.files()] == ["a.log"]
        assert sorted(await c.until(3)) == ["a", "last, no newline", "one"]
    finally:
        await t.close()


async def test_checkpoints_are_only_for_the_files_found_at_start(
    tmp_path: Path, logs: Path
) -> None:
    """An inode that turns up after start-up is a new file even if a checkpoint
    entry named it (inodes are reused): the entries not claimed at start are dropped."""
    other = tmp_path / "other"
    other.mkdir()
    write(other / "x.txt", "one\ntwo\nthree\n")  # short: no whole fingerprint to match by
    st = (other / "x.txt").stat()
    (tmp_path / "state").mkdir()
    entry = {
        "path": str(logs / "c.log"),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "fp": hashlib.sha1(b"one\ntwo\nthree\n").hexdigest(),
        "fp_len": 14,
        "offset": 8,
        "partial": False,
    }
    (tmp_path / "state" / "checkpoints.json").write_text(
        json.dumps({"version": 1, "files": [entry]})
    )
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    try:
        os.rename(other / "x.txt", logs / "c.log")
        t._discover()
        assert await c.until(3) == ["one", "two", "three"]
    finally:
        await t.close()


async def test_the_directory_of_a_file_found_later_is_watched_too(
    tmp_path: Path, logs: Path
) -> None:
    """A file found in a new subdirectory: a file created next to it later is
    noticed by the watcher, not at the next poll (30 s away here)."""
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "*.log")], poll_interval=30))
    await t.start()
    if t.polling:
        await t.close()
        pytest.skip("no inotify here: only polling finds files")
    c = Collector(t)
    try:
        (logs / "sub").mkdir()
        write(logs / "sub" / "a.log", "a\n")
        t._discover()  # as the watcher of logs/ would, for the new directory
        assert await c.until(1) == ["a"]
        write(logs / "sub" / "b.log", "b\n")
        assert await c.until(2, timeout=3) == ["a", "b"]
    finally:
        await t.close()


async def test_a_rotated_file_closing_hands_on_its_held_record(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "start 1\n  more\nstart 2\n  more 2\n")
    t = Tailer(cfg(tmp_path, multiline_start=r"^start", multiline_timeout=60, rotate_wait=0.1))
    await t.start()
    c = Collector(t)
    try:
        await c.until(1)
        os.unlink(logs / "a.log")
        await wait_until_async(lambda: t.files_watched == 0, what="closed")
        assert await c.until(2) == ["start 1\n  more", "start 2\n  more 2"]
    finally:
        await t.close()


# -- metrics --------------------------------------------------------------------------------


async def test_metrics_read_the_current_tailer_and_zero_without_one(tmp_path: Path) -> None:
    m = Metrics("x")
    current: list[Tailer] = []
    register_metrics(m, lambda: current[0] if current else None)
    body = m.render(None)[0].decode()
    for reason in SKIP_REASONS:
        assert f'podkit_x_files_skipped_total{{reason="{reason}"}} 0.0' in body
    assert "podkit_x_checkpoint_errors_total 0.0" in body
    t = Tailer(cfg(tmp_path))
    t.skipped["symlink_loop"] = 3
    t.checkpoint_errors = 2
    current.append(t)
    body = m.render(None)[0].decode()
    assert 'podkit_x_files_skipped_total{reason="symlink_loop"} 3.0' in body
    assert 'podkit_x_files_skipped_total{reason="not_regular"} 0.0' in body
    assert "podkit_x_checkpoint_errors_total 2.0" in body
    assert (
        "# HELP podkit_x_files_skipped_total Matched files not followed, by reason (links out "
        "of the glob's base directory, link loops, FIFOs and devices, /proc, unreadable, "
        "too deep).\n" in body
    )
    assert (
        "# HELP podkit_x_checkpoint_errors_total Checkpoint writes that failed (full disk, "
        "...); the previous one was kept.\n" in body
    )


# -- remembered identities ------------------------------------------------------------------


def test_remembered_identities_keep_the_furthest_offset_and_the_newest_fingerprints(
    tmp_path: Path,
) -> None:
    t = Tailer(cfg(tmp_path))
    t._remember({"fp": "a", "offset": 10})
    t._remember({"fp": "a", "offset": 5})  # an older copy: not behind what was read
    assert t._lost["a"]["offset"] == 10
    t._remember({"fp": "a", "offset": 12})
    assert t._lost["a"]["offset"] == 12
    # As far as the one kept: the newer entry (its tail is what was read last).
    t._remember({"fp": "a", "offset": 12, "tail": "newer"})
    assert t._lost["a"] == {"fp": "a", "offset": 12, "tail": "newer"}
    for i in range(MAX_REMEMBERED):
        t._remember({"fp": f"f{i}", "offset": 1})
    assert len(t._lost) == MAX_REMEMBERED and "a" not in t._lost  # the oldest went
    t._remember({"fp": "f0", "offset": 2})  # seen again: now the newest
    t._remember({"fp": "new", "offset": 1})
    assert "f0" in t._lost and "f1" not in t._lost


# -- files ----------------------------------------------------------------------------------


def _open(path: Path, offset: int = 0, max_line_bytes: int = 256 * 1024) -> _File:
    fd = os.open(path, os.O_RDONLY)
    return _File(str(path), fd, os.fstat(fd), offset, max_line_bytes)


def test_a_line_and_a_chunk_carry_what_they_were_given() -> None:
    line = Line("text", "/l/a.log", True, 42)
    assert (line.text, line.path, line.truncated, line.read_time_ns) == (
        "text",
        "/l/a.log",
        True,
        42,
    )
    ch = Chunk(None, "/l/a.log", ["a", "bb"], frozenset({1}), 7, 20, 6)
    assert (ch.path, ch.texts, ch.truncated, ch.read_time_ns) == (
        "/l/a.log",
        ["a", "bb"],
        frozenset({1}),
        7,
    )
    assert (ch.start, ch.end, ch.nbytes, len(ch)) == (14, 20, 6, 2)
    assert (ch.file_key, ch.file_head, ch.starts, ch._acked) == (None, b"", None, False)
    assert [(x.text, x.truncated, x.read_time_ns) for x in ch.lines] == [
        ("a", False, 7),
        ("bb", True, 7),
    ]
    assert repr(ch) == "Chunk('/l/a.log', lines=2, end=20)"


def test_a_new_file_state(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    data = bytes(range(256)) + b"rest\n"
    p.write_bytes(data)
    st = p.stat()
    f = _open(p, offset=100, max_line_bytes=64)
    assert (f.path, f.dev, f.ino, f.size, f.key) == (
        str(p),
        st.st_dev,
        st.st_ino,
        len(data),
        (st.st_dev, st.st_ino),
    )
    assert (f.read_pos, f.emit_pos, f.ack_pos) == (100, 100, 100)
    assert f.split.limit == 64
    assert (f.partial_at, f.is_copy, f.unverified, f.twin, f.after) == (
        -1,
        False,
        False,
        None,
        None,
    )
    assert (f.paths, f.at_eof, f.eof_since, f.closed, f.read_failing, f.joiner) == (
        {str(p)},
        False,
        0.0,
        False,
        False,
        None,
    )
    assert len(f.outstanding) == 0 and f.compressed is None
    assert (f.fp, f.fp_len) == (_sha(data[:FINGERPRINT_BYTES]), FINGERPRINT_BYTES)
    assert f.tail == data[:100]
    assert abs(f.seen_at - time.monotonic()) < 5
    assert f.checkpoint()["partial"] is False  # -1: no line went out unfinished
    one = _open(p, offset=1)
    assert one.checkpoint()["partial"] is False  # ... not even at offset 1
    one.close()
    g = _open(p)
    assert g.tail == b"" and g.read_pos == 0
    f.close()
    g.close()


def test_reads_of_a_plain_and_of_a_compressed_file(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"0123456789")
    f = _open(p)
    assert f.read_at(4, 3) == b"3456" and f.read_at(100, 8) == b"89"
    assert f.read_fingerprint(3) == b"012"
    content = b"".join(b"line %03d\n" % i for i in range(100))  # 900 bytes
    z = tmp_path / "a.log.1.gz"
    z.write_bytes(gzip.compress(content))
    g = _open(z)
    assert g.compressed == "gzip"
    assert g.read_at(9, 18) == b"line 002\n"  # at an offset of the content
    assert g.read_fingerprint(5) == b"line "
    assert (g.fp, g.fp_len) == (_sha(content[:FINGERPRINT_BYTES]), FINGERPRINT_BYTES)
    assert g.tail == b""  # compressed: no tail read at the start
    h = _open(z, offset=18)
    assert h.tail == b""  # nor at an offset
    f.close()
    g.close()
    h.close()
    assert f.read_fingerprint(3) == b""  # closed: nothing, not an error
    assert g.closed and f.closed
    g.close()  # twice is fine


def test_the_fingerprint_grows_with_a_short_file_until_it_is_whole(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"abc")
    f = _open(p)
    assert (f.fp, f.fp_len) == (_sha(b"abc"), 3)
    assert f.fingerprint_matches()
    write(p, b"d" * 300)
    f.update_fingerprint()
    whole = (b"abc" + b"d" * 300)[:FINGERPRINT_BYTES]
    assert (f.fp, f.fp_len) == (_sha(whole), FINGERPRINT_BYTES)
    with open(p, "r+b") as w:  # rewritten after the fingerprint was whole: kept
        w.write(b"X")
    f.update_fingerprint()
    assert (f.fp, f.fp_len) == (_sha(whole), FINGERPRINT_BYTES)
    assert not f.fingerprint_matches()
    f.close()


def test_a_short_file_rewritten_keeps_its_old_fingerprint(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"abc")
    f = _open(p)
    p.write_bytes(b"xyz and more")  # same inode, other first bytes
    f.update_fingerprint()
    assert (f.fp, f.fp_len) == (_sha(b"abc"), 3)  # the identity check notices it, not this
    assert not f.fingerprint_matches()
    with open(p, "r+b") as w:
        w.truncate(2)
    assert not f.fingerprint_matches()  # shorter than the fingerprint
    f.close()


def test_an_empty_file_has_no_fingerprint_yet_and_matches_anything(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"")
    f = _open(p)
    assert (f.fp, f.fp_len) == (_sha(b""), 0)
    assert f.fingerprint_matches()
    write(p, b"now\n")
    f.update_fingerprint()
    assert (f.fp, f.fp_len) == (_sha(b"now\n"), 4)
    f.close()


def test_fp_of_hashes_the_first_bytes_or_says_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"0123456789")
    fd = os.open(p, os.O_RDONLY)
    assert _fp_of(fd, 4) == _sha(b"0123")
    assert _fp_of(fd, 100) == _sha(b"0123456789")
    os.close(fd)
    assert _fp_of(fd, 4) == b""


def test_a_one_byte_fingerprint_is_still_compared(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"a")
    f = _open(p)
    assert f.fp_len == 1 and f.fingerprint_matches()
    p.write_bytes(b"b")  # same inode, same length, another first byte
    assert not f.fingerprint_matches()
    f.close()


def test_closing_a_file_whose_descriptor_is_already_gone_is_quiet(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"x\n")
    f = _open(p)
    os.close(f.fd)
    f.close()
    assert f.closed


def test_the_fingerprint_of_a_compressed_file_decompresses_only_its_head(tmp_path: Path) -> None:
    """Memory stays bounded: a rotation of 32 MiB compressed to 32 KiB is not
    decompressed whole to hash its first 256 bytes."""
    import tracemalloc

    z = tmp_path / "a.log.1.gz"
    z.write_bytes(gzip.compress(b"x" * (32 << 20), compresslevel=1))
    tracemalloc.start()
    try:
        f = _open(z)
        head = f.read_fingerprint(FINGERPRINT_BYTES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    f.close()
    assert head == b"x" * FINGERPRINT_BYTES
    assert peak < 4 << 20, peak
