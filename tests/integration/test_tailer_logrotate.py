"""podkit.tailer with the real logrotate driving rotation, in each of its modes.

The tailer runs across some rotations and is stopped across others, so that
logrotate renames, copies, truncates and compresses files the tailer had not
finished. Every line must arrive exactly once: rotated files are finished
(from a copy, or from inside the `.gz`/`.zst`, at the same uncompressed
offset) and a rotated or compressed copy of what was read is not shipped again.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from podkit.tailer import Tailer, TailerConfig
from tests.helpers import missing, need
from tests.unit.test_tailer import Collector

PER = 200  # lines per generation

MODES = {
    "create": "create",
    "copytruncate": "copytruncate",
    "compress": "compress",
    "delaycompress": "compress\n    delaycompress",
    "dateext": "dateext\n    dateformat -%Y%m%d-%s",
    "copytruncate-compress": "copytruncate\n    compress",
    "zstd": "compress\n    compresscmd /usr/bin/zstd\n    compressoptions -q\n"
    "    uncompresscmd /usr/bin/unzstd\n    compressext .zst",
}


def gen(g: int) -> list[str]:
    # Long enough lines that a generation is more than a fingerprint (256 bytes).
    return [f"gen {g:02d} line {i:04d} of the application log" for i in range(PER)]


class Rotating:
    def __init__(self, tmp: Path, mode: str, pattern: str) -> None:
        self.logrotate = need("logrotate")
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.live = self.logs / "app.log"
        self.live.touch()
        self.conf = tmp / "logrotate.conf"
        self.conf.write_text(
            f"{self.live} {{\n    rotate 20\n    missingok\n    {MODES[mode]}\n}}\n"
        )
        self.state = tmp / "logrotate.state"
        self.mode = mode
        self.cfg = TailerConfig(
            paths=[str(self.logs / pattern)],
            state_dir=str(tmp / "state"),
            poll_interval=0.05,
            checkpoint_interval=0.05,
            rotate_wait=0.3,
            identify_wait=0.3,
        )
        self.written: list[str] = []
        self.g = 0
        self.last = 0  # second of the last rotation

    def write(self) -> None:
        lines = gen(self.g)
        self.g += 1
        with open(self.live, "a") as fh:
            fh.write("".join(s + "\n" for s in lines))
        self.written += lines

    def rotate(self) -> None:
        if self.mode == "dateext":  # the name has the second in it: one rotation a second
            while int(time.time()) <= self.last + 1:
                time.sleep(0.05)
        res = subprocess.run(
            [self.logrotate, "-f", "-s", str(self.state), str(self.conf)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert res.returncode == 0, res.stderr
        self.last = int(time.time())


async def run_until(t: Tailer, c: Collector, n: int) -> None:
    await c.until(n, timeout=15)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
async def test_logrotate_mode_every_line_once(tmp_path: Path, mode: str, pattern: str) -> None:
    if mode == "zstd":
        need("zstd")  # the compressor logrotate runs
        try:
            import zstandard  # noqa: F401
        except ImportError:
            missing("the zstandard module (pip install zstandard) reads .zst rotations")
    r = Rotating(tmp_path, mode, pattern)
    # Running: two rotations of files read to their end.
    t = Tailer(r.cfg)
    await t.start()
    c = Collector(t)
    for _ in range(2):
        r.write()
        await run_until(t, c, len(r.written))
        r.rotate()
    r.write()
    await run_until(t, c, len(r.written))
    got = await c.finish()
    # Stopped: lines the tailer has not read are rotated away (and compressed).
    r.write()
    r.rotate()
    r.write()
    if pattern == "app.log*":  # the glob sees the rotated files: a second rotation is fine
        r.rotate()
        r.write()
    t = Tailer(r.cfg)
    await t.start()
    c = Collector(t)
    await run_until(t, c, len(r.written) - len(got))
    got += await c.finish()
    twice = [s for s, n in Counter(got).items() if n > 1]
    assert not twice, f"{len(twice)} lines twice, e.g. {twice[:2]}"
    assert sorted(got) == sorted(r.written)
    if "compress" in MODES[mode]:
        assert any(p.suffix in (".gz", ".zst") for p in r.logs.iterdir()), os.listdir(r.logs)


async def test_gz_rollover_of_a_logging_library(tmp_path: Path) -> None:
    """log4j/logback style: the live file is compressed to a dated .gz and a new one
    started, while the tailer was stopped with lines of it unread."""
    logs = tmp_path / "logs"
    logs.mkdir()
    live = logs / "app.log"
    cfg = TailerConfig(paths=[str(live)], state_dir=str(tmp_path / "state"), poll_interval=0.05)
    live.write_text("".join(s + "\n" for s in gen(0)))
    t = Tailer(cfg)
    await t.start()
    c = Collector(t)
    await c.until(PER)
    await c.finish()
    with open(live, "a") as fh:
        fh.write("".join(s + "\n" for s in gen(1)))
    with open(live, "rb") as src, gzip.open(logs / "app-2026-12-04.0.log.gz", "wb") as dst:
        dst.write(src.read())
    live.unlink()
    live.write_text("".join(s + "\n" for s in gen(2)))
    t = Tailer(cfg)
    await t.start()
    c = Collector(t)
    await c.until(2 * PER)
    got = await c.finish()
    assert sorted(got) == sorted(gen(1) + gen(2))
