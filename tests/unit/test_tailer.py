"""podkit.tailer: discovery, identity, checkpoints, rotation, partial and long lines."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from podkit.tailer import Chunk, Tailer, TailerConfig
from tests.helpers import stays_async, wait_until_async


def cfg(tmp: Path, **kw: object) -> TailerConfig:
    base: dict[str, object] = dict(
        paths=[str(tmp / "logs" / "*.log")],
        state_dir=str(tmp / "state"),
        poll_interval=0.05,
        checkpoint_interval=0.05,
        partial_flush_timeout=5.0,
        rotate_wait=0.3,
    )
    base.update(kw)
    return TailerConfig(**base)  # type: ignore[arg-type]


class Collector:
    """Consume a tailer's chunks in the background, acking as told."""

    def __init__(self, tailer: Tailer, ack: bool = True) -> None:
        self.tailer = tailer
        self.ack = ack
        self.chunks: list[Chunk] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for c in self.tailer.chunks():
            self.chunks.append(c)
            if self.ack:
                self.tailer.ack(c)

    @property
    def texts(self) -> list[str]:
        return [t for c in self.chunks for t in c.texts]

    async def until(self, n: int, timeout: float = 5.0) -> list[str]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.texts) < n:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"got {len(self.texts)} lines, wanted {n}: {self.texts[-5:]}")
            await asyncio.sleep(0.01)
        return self.texts

    async def finish(self) -> list[str]:
        await asyncio.wait_for(self.tailer.drain(), 10)  # a drain that never ends fails
        await asyncio.wait_for(self.task, 5)
        await self.tailer.close()
        return self.texts


async def take(t: Tailer, n: int, seconds: float = 5.0) -> list[Chunk]:
    """The tailer's chunks, consumed until they hold at least `n` lines.

    A tailer that stops yielding (or ends early) fails the test within
    `seconds`, saying what it had got, instead of holding the whole run.
    """
    got: list[Chunk] = []
    why = f"no more chunks within {seconds}s"
    try:
        async with asyncio.timeout(seconds):
            async for ch in t.chunks():
                got.append(ch)
                if sum(len(c) for c in got) >= n:
                    return got
        why = "the chunks ended"
    except TimeoutError:
        pass
    lines = [x for c in got for x in c.texts]
    raise AssertionError(f"{why}: got {len(lines)} lines, wanted {n}: {lines[-5:]}")


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


def write(path: Path, text: str | bytes, mode: str = "a") -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, mode + "b") as f:
        f.write(data)


async def test_reads_existing_and_appended_lines(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\ntwo\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    assert t.files_watched == 1
    c = Collector(t)
    await c.until(2)
    write(logs / "a.log", "three\n")
    write(logs / "b.log", "bee\n")  # a file created after start is found
    await c.until(4)
    texts = await c.finish()
    assert texts[:3] == ["one", "two", "three"] and "bee" in texts
    line = c.chunks[0].lines[0]
    assert line.path == str(logs / "a.log") and not line.truncated and line.read_time_ns > 0


async def test_exclude_and_read_from_tail(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "old\n")
    write(logs / "skip.log", "never\n")
    t = Tailer(cfg(tmp_path, exclude=["skip.log"], read_from="tail"))
    await t.start()
    c = Collector(t)
    write(logs / "a.log", "new\n")
    write(logs / "late.log", "late\n")  # created after start: read from its head
    await c.until(2)
    assert sorted(await c.finish()) == ["late", "new"]


async def test_partial_line_held_until_newline_or_timeout(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "whole\npart")
    t = Tailer(cfg(tmp_path, partial_flush_timeout=0.4))
    await t.start()
    c = Collector(t)
    await c.until(1)
    write(logs / "a.log", "ial\n")
    await c.until(2)
    assert c.texts == ["whole", "partial"]
    written = time.monotonic()
    write(logs / "a.log", "tail-no-newline")
    await c.until(3, timeout=3)
    # Held for partial_flush_timeout from when the tailer read it (after the write).
    assert time.monotonic() - written >= 0.4
    assert c.texts[2] == "tail-no-newline"
    write(logs / "a.log", "\nnext\n")  # the newline ends the already flushed line
    await c.until(4)
    assert await c.finish() == ["whole", "partial", "tail-no-newline", "next"]


async def test_drain_flushes_partial_last_line(tmp_path: Path, logs: Path) -> None:
    t = Tailer(cfg(tmp_path))
    write(logs / "a.log", "")
    await t.start()
    c = Collector(t)
    write(logs / "a.log", "".join(f"line {i}\n" for i in range(1000)) + "last")
    texts = await c.finish()
    assert texts == [f"line {i}" for i in range(1000)] + ["last"]


@pytest.mark.parametrize("chunk_bytes", [64, 1024 * 1024])
async def test_long_lines_truncated_and_file_goes_on(
    tmp_path: Path, logs: Path, chunk_bytes: int
) -> None:
    long = "x" * 5000
    write(logs / "a.log", f"short\n{long}\nafter\n" + "é" * 3000 + "\nend\n")
    t = Tailer(cfg(tmp_path, max_line_bytes=1000, chunk_bytes=chunk_bytes))
    await t.start()
    c = Collector(t)
    await c.until(5)
    texts = await c.finish()
    lines = [ln for ch in c.chunks for ln in ch.lines]
    assert texts[0] == "short" and texts[2] == "after" and texts[4] == "end"
    assert texts[1] == "x" * 1000 and lines[1].truncated
    # A multi-byte character is never split by the cut.
    assert texts[3] == "é" * 500 and lines[3].truncated
    assert [ln.truncated for ln in lines] == [False, True, False, True, False]
    assert t.truncated_lines == 2


async def test_huge_line_without_newline_is_not_buffered(tmp_path: Path, logs: Path) -> None:
    t = Tailer(cfg(tmp_path, max_line_bytes=1000, chunk_bytes=4096, partial_flush_timeout=60))
    write(logs / "a.log", "")
    await t.start()
    c = Collector(t)
    write(logs / "a.log", "y" * 100_000)
    await wait_until_async(
        lambda: all(f.read_pos == 100_000 for f in t._files) and t._queued == 0, what="read"
    )
    assert c.texts == []
    for f in t._files:
        assert len(f.split.carry) == 0 and f.split.head is not None and len(f.split.head) == 1000
    write(logs / "a.log", "\nok\n")
    await c.until(2)
    assert c.texts == ["y" * 1000, "ok"]
    await c.finish()


async def test_invalid_utf8_and_binary_are_replaced(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", b"ok \xff\xfe bad\n\x00\x01\x02bin\n\n\xe2\x82\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    texts = await c.finish()
    assert texts == ["ok \ufffd\ufffd bad", "\x00\x01\x02bin", "", "\ufffd"]


async def test_checkpoint_resumes_after_acknowledged_only(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "".join(f"{i}\n" for i in range(100)))
    t = Tailer(cfg(tmp_path, chunk_bytes=50))
    await t.start()
    got = await take(t, 30)
    for ch in got[:3]:
        t.ack(ch)
    acked = sum(len(c) for c in got[:3])
    await t.close()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == sum(c.nbytes for c in got[:3])
    # Restart: the unacknowledged lines come again, nothing acknowledged does.
    t2 = Tailer(cfg(tmp_path))
    await t2.start()
    c = Collector(t2)
    texts = await c.finish()
    assert texts == [str(i) for i in range(acked, 100)]


async def test_out_of_order_acks_checkpoint_the_contiguous_prefix(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "".join(f"{i}\n" for i in range(30)))
    t = Tailer(cfg(tmp_path, chunk_bytes=20))
    await t.start()
    chunks = await take(t, 30)
    t.ack(chunks[1])
    t.ack(chunks[2])
    f = t._files[0]
    assert f.ack_pos == 0  # chunk 0 is not acknowledged: nothing may be checkpointed
    t.ack(chunks[0])
    assert f.ack_pos == chunks[2]._end
    await t.close()


async def test_rename_rotation_reads_old_file_to_end_first(tmp_path: Path, logs: Path) -> None:
    path = logs / "app.log"
    write(path, "")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    n = 0
    for _rot in range(5):
        with open(path, "a") as fh:
            for _ in range(200):
                fh.write(f"{n}\n")
                n += 1
            os.rename(path, logs / f"app.log.{_rot}")  # the glob no longer matches it
            fh.write(f"{n}\n")  # a late write to the renamed file
            n += 1
        write(path, "")
        await asyncio.sleep(0.02)
    await c.until(n, timeout=10)
    texts = await c.finish()
    assert sorted(map(int, texts)) == list(range(n))
    assert texts == [str(i) for i in range(n)]  # each old file before its successor
    assert t.rotations >= 1


async def test_copytruncate_loses_nothing(tmp_path: Path, logs: Path) -> None:
    path = logs / "app.log"
    write(path, "")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    n = 0
    for _rot in range(4):
        with open(path, "a") as fh:
            for _ in range(100):
                fh.write(f"{n}\n")
                n += 1
        await c.until(n)
        # Lines the tailer has not read yet (it cannot run before the truncate:
        # same event loop) survive only in the copy, which the tailer finds.
        with open(path, "a") as fh:
            for _ in range(100):
                fh.write(f"{n}\n")
                n += 1
            fh.write("partial-")
        shutil.copy(path, logs / f"app.log.{_rot}.bak")
        os.truncate(path, 0)
        write(path, "line\n")
        n += 1
        await c.until(202 * (_rot + 1))  # this round's 200 lines, "partial-" and "line"
    write(path, "after\n")
    await c.until(n + 1)
    texts = await c.finish()
    want: list[str] = []
    k = 0
    for _rot in range(4):
        want += [str(i) for i in range(k, k + 200)] + ["partial-", "line"]
        k += 201
    assert texts == [*want, "after"]
    assert t.truncations == 4


async def test_truncated_and_regrown_past_offset_is_detected(tmp_path: Path, logs: Path) -> None:
    path = logs / "app.log"
    write(path, "aaaa-first\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(1)
    # Truncate and regrow beyond the old offset before the tailer looks again.
    write(path, "bbbb-second-longer-content\n", mode="w")
    await c.until(2)
    assert (await c.finish()) == ["aaaa-first", "bbbb-second-longer-content"]


async def test_reused_inode_is_a_new_file(tmp_path: Path, logs: Path) -> None:
    path = logs / "a.log"
    write(path, "first content line\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.finish()
    ck = tmp_path / "state" / "checkpoints.json"
    data = json.loads(ck.read_text())
    assert data["files"][0]["offset"] == len("first content line\n")
    # Same inode, different first bytes (what a reused inode looks like).
    write(path, "OTHER content line\nmore\n", mode="w")
    t2 = Tailer(cfg(tmp_path))
    await t2.start()
    c2 = Collector(t2)
    assert await c2.finish() == ["OTHER content line", "more"]


async def test_renamed_while_stopped_is_finished_first(tmp_path: Path, logs: Path) -> None:
    path = logs / "app.log"
    write(path, "".join(f"{i}\n" for i in range(10)))
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.finish()
    # While stopped: more lines, a rotation, and lines in the new file.
    write(path, "".join(f"{i}\n" for i in range(10, 20)))
    os.rename(path, logs / "app.log.1")
    write(path, "".join(f"{i}\n" for i in range(20, 25)))
    t2 = Tailer(cfg(tmp_path))
    await t2.start()
    c2 = Collector(t2)
    await c2.until(15)
    assert await c2.finish() == [str(i) for i in range(10, 25)]
    assert all(ch.path == str(path) for ch in c2.chunks)


async def test_deleted_while_read_and_many_files(tmp_path: Path, logs: Path) -> None:
    for i in range(200):
        write(logs / f"f{i}.log", f"file {i}\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    assert t.files_watched == 200
    c = Collector(t)
    await c.until(200)
    with open(logs / "f0.log", "a") as fh:
        os.unlink(logs / "f0.log")
        fh.write("written after delete\n")
    await c.until(201)
    assert "written after delete" in c.texts
    # Closed once idle past rotate_wait.
    await wait_until_async(lambda: t.files_watched == 199, what="the deleted file closed")
    await c.finish()


async def test_backpressure_pauses_reading(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "".join(f"{i:06d}\n" for i in range(50_000)))  # 350 KB
    # A partial line at the end of a read must not be "flushed" while reading is
    # merely paused: the rest of it is in the file.
    t = Tailer(cfg(tmp_path, max_buffer_bytes=40_000, chunk_bytes=8192, partial_flush_timeout=0.1))
    await t.start()
    c = Collector(t, ack=False)
    await wait_until_async(lambda: t.inflight_bytes >= 40_000, what="the buffer full")
    # Nothing marks "paused" from outside: no more is read over a window.
    assert await stays_async(lambda: t.inflight_bytes <= 40_000 + 8192, 0.2), t.inflight_bytes
    assert t.lag_bytes >= 350_000 - 40_000 - 8192
    n = len(c.texts)
    c.ack = True
    for ch in list(c.chunks):
        t.ack(ch)
    await c.until(50_000)
    assert n < 50_000
    assert await c.finish() == [f"{i:06d}" for i in range(50_000)]
    assert t.lag_bytes == 0


async def test_multiline_joins_records(tmp_path: Path, logs: Path) -> None:
    write(
        logs / "a.log",
        "2024 start one\n  at a\n  at b\n2024 start two\n2024 three\n  cont\n",
    )
    t = Tailer(cfg(tmp_path, multiline_start=r"^\d{4} ", multiline_timeout=0.3))
    await t.start()
    c = Collector(t)
    await c.until(3, timeout=3)
    assert c.texts == ["2024 start one\n  at a\n  at b", "2024 start two", "2024 three\n  cont"]
    await asyncio.wait_for(t.drain(), 10)  # a drain that never ends fails
    await t.close()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == (logs / "a.log").stat().st_size


async def test_multiline_checkpoint_never_splits_a_record(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "S1\n c1\nS2\n c2\n")
    t = Tailer(cfg(tmp_path, multiline_start="^S", multiline_timeout=60))
    await t.start()
    c = Collector(t)
    await c.until(1)
    size = (logs / "a.log").stat().st_size
    # The whole file read and every chunk handed on: S2 is held, it may go on
    # (multiline_timeout 60 s: held over a window, not only at one look).
    await wait_until_async(
        lambda: all(f.read_pos == size for f in t._files) and t._queued == 0, what="read"
    )
    assert await stays_async(lambda: c.texts == ["S1\n c1"], 0.1), c.texts
    await t.close()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == len("S1\n c1\n")


async def test_no_state_dir_keeps_no_checkpoints(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "x\n")
    t = Tailer(cfg(tmp_path, state_dir=None))
    await t.start()
    c = Collector(t)
    assert await c.finish() == ["x"]
    assert not (tmp_path / "state").exists()


async def test_polling_fallback_finds_files(tmp_path: Path, logs: Path) -> None:
    t = Tailer(cfg(tmp_path, force_polling=True))
    await t.start()
    assert t.polling
    c = Collector(t)
    write(logs / "new.log", "polled\n")
    await c.until(1)
    assert await c.finish() == ["polled"]


async def test_corrupt_checkpoint_starts_over(tmp_path: Path, logs: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checkpoints.json").write_text("{not json")
    write(logs / "a.log", "x\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    assert await c.finish() == ["x"]


@pytest.mark.parametrize("text", ["ascii", "é-ü", "bad \udcff"])
async def test_max_chunk_lines_splits_with_exact_offsets(
    tmp_path: Path, logs: Path, text: str
) -> None:
    raw = "".join(f"{i} {text}\n" for i in range(10)).encode("utf-8", "surrogateescape")
    write(logs / "a.log", raw)
    t = Tailer(cfg(tmp_path, max_chunk_lines=3))
    await t.start()
    chunks = await take(t, 10)
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert sum(c.nbytes for c in chunks) == len(raw)
    t.ack(chunks[0])
    t.ack(chunks[1])
    await t.close()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == len(b"".join(raw.splitlines(keepends=True)[:6]))


async def test_max_chunk_lines_with_multiline(tmp_path: Path, logs: Path) -> None:
    raw = "".join(f"S{i}\n c{i}\n" for i in range(10))
    write(logs / "a.log", raw)
    t = Tailer(cfg(tmp_path, max_chunk_lines=4, multiline_start="^S", multiline_timeout=60))
    await t.start()
    chunks = await take(t, 9)  # S9 is held: it may go on
    assert [len(c) for c in chunks] == [4, 4, 1]
    assert [c.nbytes for c in chunks] == [4 * 7, 4 * 7, 7]
    assert chunks[1].texts[0] == "S4\n c4"
    await t.close()


async def test_500_files_deleted_release_every_descriptor(tmp_path: Path, logs: Path) -> None:
    """A glob matching 500 files, then all deleted: every fd is closed again and
    nothing of them stays in the tailer's tables (no leak per rotated-away file)."""

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    for i in range(500):
        write(logs / f"m{i:03d}.log", f"line {i}\n")
    t = Tailer(cfg(tmp_path, rotate_wait=0.2))
    await t.start()
    c = Collector(t)
    await c.until(500)
    assert t.files_watched == 500 and fds() >= before + 500
    for i in range(500):
        os.unlink(logs / f"m{i:03d}.log")
    deadline = asyncio.get_running_loop().time() + 10
    while t.files_watched and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert t.files_watched == 0
    assert not t._by_key and not t._current and not t._retired
    assert fds() <= before + 5  # the watcher's own descriptors at most
    assert sorted(await c.finish()) == sorted(f"line {i}" for i in range(500))
    assert fds() <= before + 1


async def test_checkpoint_is_atomic_and_rate_limited(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temp file written and fsynced, then renamed over checkpoints.json, then the
    directory fsynced; at most once per checkpoint_interval, and once more at close."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        assert src.endswith(".tmp") and dst.endswith("checkpoints.json")
        events.append("rename")
        real_replace(src, dst)

    # the checkpoint writer's os is this os: patched for the test's duration
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    t = Tailer(cfg(tmp_path, checkpoint_interval=0.5))
    await t.start()
    c = Collector(t)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    n = 0
    while loop.time() - t0 < 1.6:  # acks all the time: the interval is the only limit
        write(logs / "a.log", f"{n}\n")
        n += 1
        await asyncio.sleep(0.01)
    await c.until(n)
    writes = events.count("rename")
    assert 2 <= writes <= 5, events  # 1.6 s / 0.5 s, plus the one at start-up
    assert events[:3] == ["fsync-file", "rename", "fsync-dir"]
    await c.finish()
    assert events.count("rename") >= writes + 1  # the final one at close()
    assert events[-3:] == ["fsync-file", "rename", "fsync-dir"]
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == (logs / "a.log").stat().st_size


async def test_a_slow_checkpoint_write_does_not_block_the_loop(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: the fsync of a checkpoint runs in a thread; the loop (admin
    server, reader, sinks) goes on while it takes its time."""
    import threading
    import time

    from podkit.fsutil import atomic_write as real
    from podkit.tailer import checkpoints

    gate = threading.Event()
    started: list[float] = []

    def slow_write(path: str, data: bytes, mode: int = 0o644) -> None:
        started.append(time.monotonic())
        gate.wait(5)  # a disk that takes its time; released by the test
        real(path, data, mode)

    monkeypatch.setattr(checkpoints, "atomic_write", slow_write)
    write(logs / "a.log", "one\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    col = Collector(t)
    await col.until(1)
    await wait_until_async(lambda: started, what="the checkpoint write")
    # The loop ran again at once, with the write still blocked in its thread.
    assert time.monotonic() - started[0] < 1.0 and not gate.is_set()
    write(logs / "a.log", "two\n")
    assert await col.until(2, timeout=2) == ["one", "two"]
    assert not gate.is_set()
    gate.set()
    await col.finish()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert [e["offset"] for e in saved["files"]] == [8]  # the newest, written last


def test_an_older_checkpoint_never_replaces_a_newer_one(tmp_path: Path) -> None:
    from podkit.tailer.checkpoints import CheckpointWriter

    w = CheckpointWriter()
    old, new = w.next(), w.next()
    path = str(tmp_path / "checkpoints.json")
    assert w.write(new, path, b"new") is None
    assert w.write(old, path, b"old") is None  # finished late: skipped
    assert (tmp_path / "checkpoints.json").read_bytes() == b"new"
