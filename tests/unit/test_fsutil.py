"""podkit.fsutil.atomic_write and the tailer's checkpoints under real faults (issue 13, class 5).

A real 64 KiB tmpfs filled to the last byte, and RLIMIT_FSIZE lowered in a
child process: a state file is written completely or not at all, the old one
stays, no temp file is left behind, and the tailer says so once and retries.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from podkit.fsutil import atomic_write, write_all
from podkit.tailer import Tailer, TailerConfig
from tests.helpers import missing
from tests.unit.test_tailer import Collector

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs of our own (mount(2) through libc: no external binary)."""
    if os.geteuid() != 0:
        missing("mounting a tmpfs needs root (CI runs as root)")
    d = tmp_path / "small"
    d.mkdir()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", bytes(d), b"tmpfs", 0, b"size=64k,mode=0755") != 0:
        err = ctypes.get_errno()
        pytest.fail(f"mount tmpfs: {os.strerror(err)}")
    try:
        yield d
    finally:
        libc.umount2(bytes(d), 2)  # MNT_DETACH: never leave it behind


def fill(d: Path, leave: int = 0) -> Path:
    """Fill the filesystem of `d` to its last byte, then free `leave` bytes of it."""
    filler = d / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        size = 4096
        while size:
            try:
                os.write(fd, b"f" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                size //= 2
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


@pytest.mark.parametrize("leave", [0, PAGE], ids=["full", "one-page-free"])
def test_atomic_write_on_a_full_tmpfs_keeps_the_old_file(tmpfs: Path, leave: int) -> None:
    target = tmpfs / "state.json"
    atomic_write(str(target), b"old\n")
    filler = fill(tmpfs, leave)
    new = b"n" * (5 * PAGE)  # with one page free, the first write is short
    with pytest.raises(OSError) as info:
        atomic_write(str(target), new)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "state.json"]  # no .tmp
    filler.unlink()
    atomic_write(str(target), new)
    assert target.read_bytes() == new


def test_write_all_loops_on_short_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        write_all(fd, b"0123456789")
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"0123456789"


def test_atomic_write_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.symlink(victim, tmp_path / "state.json.tmp")
    atomic_write(str(tmp_path / "state.json"), b"new")
    assert victim.read_text() == "untouched"
    assert (tmp_path / "state.json").read_bytes() == b"new"
    assert not os.path.lexists(tmp_path / "state.json.tmp")


def test_atomic_write_under_rlimit_fsize_in_a_child(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    code = textwrap.dedent(
        """
        import errno, resource, sys
        from podkit.fsutil import atomic_write
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        try:
            atomic_write(sys.argv[1], b"x" * 5000)
        except OSError as exc:
            print(errno.errorcode[exc.errno])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "EFBIG"
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


# -- the tailer's checkpoints ------------------------------------------------------------


def _many_files(logs: Path, n: int) -> None:
    logs.mkdir(exist_ok=True)
    for i in range(n):
        (logs / f"app-{i:03d}-{'x' * 40}.log").write_text("one\n")


async def test_tailer_checkpoint_on_a_full_disk_keeps_the_old_one_and_retries(
    tmp_path: Path, tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="podkit.tailer")
    logs = tmp_path / "logs"
    _many_files(logs, 60)  # a checkpoint of ~13 KB: more than the page left free
    cfg = TailerConfig(
        paths=[str(logs / "*.log")],
        state_dir=str(tmpfs),
        poll_interval=0.05,
        checkpoint_interval=0.05,
    )
    t = Tailer(cfg)
    await t.start()
    c = Collector(t)
    await c.until(60)
    t.checkpoint(force=True)
    ckpt = tmpfs / "checkpoints.json"
    before = ckpt.read_bytes()
    assert all(e["offset"] == 4 for e in json.loads(before)["files"])
    filler = fill(tmpfs, leave=PAGE)
    for p in logs.iterdir():
        with open(p, "a") as fh:
            fh.write("two\n")
    await c.until(120)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while t.checkpoint_errors < 3:  # the reader retries every checkpoint_interval
        assert loop.time() < deadline, "checkpoint writes were not retried"
        await asyncio.sleep(0.02)
    assert ckpt.read_bytes() == before  # whole, and the old one
    assert not (tmpfs / "checkpoints.json.tmp").exists()
    said = [r for r in caplog.records if r.getMessage().startswith("cannot write checkpoint")]
    assert len(said) == 1  # once, not every interval
    filler.unlink()
    deadline = loop.time() + 5
    while json.loads(ckpt.read_bytes())["files"][0]["offset"] != 8:
        assert loop.time() < deadline, "checkpoint not written after space came back"
        await asyncio.sleep(0.02)
    # The write runs in a worker thread; the loop says so once it has its result.
    while not any(r.getMessage() == "checkpoint written again" for r in caplog.records):
        assert loop.time() < deadline, "recovery not said"
        await asyncio.sleep(0.02)
    await c.finish()
    assert all(e["offset"] == 8 for e in json.loads(ckpt.read_bytes())["files"])


def test_tailer_checkpoint_under_rlimit_fsize_is_not_torn(tmp_path: Path) -> None:
    """A checkpoint larger than RLIMIT_FSIZE: the write is short, then EFBIG."""
    logs = tmp_path / "logs"
    _many_files(logs, 40)
    state = tmp_path / "state"
    code = textwrap.dedent(
        """
        import asyncio, resource, sys
        from pathlib import Path
        from podkit.tailer import Tailer, TailerConfig

        async def main():
            logs, state = Path(sys.argv[1]), sys.argv[2]
            t = Tailer(TailerConfig(paths=[str(logs / "*.log")], state_dir=state))
            await t.start()
            got = 0
            async for c in t.chunks():
                t.ack(c)
                got += len(c)
                if got == 40:
                    break
            t.checkpoint(force=True)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
            for p in logs.iterdir():
                with open(p, "a") as fh:
                    fh.write("two\\n")
            async for c in t.chunks():
                t.ack(c)
                got += len(c)
                if got == 80:
                    break
            t.checkpoint(force=True)
            print(getattr(t, "checkpoint_errors", "?"))
            t._dirty_ckpt = False  # leave the file as the failed write left it
            await t.close()

        asyncio.run(asyncio.wait_for(main(), 20))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(logs), str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    saved = json.loads((state / "checkpoints.json").read_text())  # not torn
    assert len(saved["files"]) == 40 and all(e["offset"] == 4 for e in saved["files"])
    assert out.stdout.split() == ["1"]
    assert os.listdir(state) == ["checkpoints.json"]
