"""Helpers the benchmarks share: a process's CPU from /proc, and waiting on a peer's output."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, all its threads (rsyslog is multi-threaded)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_lines(
    path: Path, count: int, proc: subprocess.Popen[bytes], timeout: float = 600
) -> None:
    """Follow `path` until it holds `count` lines; fail if `proc` dies or time runs out."""
    seen, pos, deadline = 0, 0, time.monotonic() + timeout
    while seen < count:
        try:
            with open(path, "rb") as f:
                f.seek(pos)
                data = f.read()
                pos += len(data)
                seen += data.count(b"\n")
        except FileNotFoundError:
            pass
        if seen >= count:
            return
        if time.monotonic() > deadline or proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else b""
            raise RuntimeError(f"{proc.args!r} did not finish ({seen}/{count} lines): {err!r}")
        time.sleep(0.01)
