"""logship killed with SIGKILL while shipping 100k lines/s: how much is sent twice.

An app appends 100,000 lines/s (1,000 every 10 ms) for 10 s to one file;
logship ships it to a local receiver that counts lines. 5 s in, logship is
killed with SIGKILL (5 to 5.5 s in) and restarted at once. Whatever was acknowledged since the
last checkpoint write, and what was in flight, is sent again: duplicates =
lines received - lines written (nothing is lost: the at-least-once tests say
so). Run with the default --checkpoint-interval and with the old 1s, in the
same run. Bar (issue 17): under 1% of the lines.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench_logship import PY, ROOT, Receiver  # bench/ is on sys.path when run as a script

from podkit.testing import free_port

RATE = 100_000
SECONDS = 10
LINES = RATE * SECONDS
TRIALS = int(os.environ.get("BENCH_TRIALS", "3"))


def start(src: Path, state: Path, rcv: Receiver, interval: str | None) -> subprocess.Popen[bytes]:
    admin = free_port()  # a fresh one: the killed process's may linger
    args = [PY, "-m", "podkit", "logship", "--path", str(src), "--sink",
            f"http://127.0.0.1:{rcv.port}/", "--state-dir", str(state),
            "--admin-addr", f"127.0.0.1:{admin}", "--log-level", "warning"]  # fmt: skip
    if interval is not None:
        args += ["--checkpoint-interval", interval]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1):
                return proc
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("logship not ready")


def run(tmp: Path, rcv: Receiver, interval: str | None) -> tuple[int, float]:
    """(duplicates, achieved write rate) of one run with one kill -9."""
    shutil.rmtree(tmp / "state", ignore_errors=True)
    src = tmp / "app.log"
    src.write_bytes(b"")
    rcv.lines = 0
    proc = start(src, tmp / "state", rcv, interval)
    line = b"x" * 100 + b"\n"
    t0 = time.monotonic()

    def writer() -> None:
        with open(src, "ab", buffering=0) as fh:
            for i in range(SECONDS * 100):
                fh.write(line * (RATE // 100))
                delay = t0 + (i + 1) / 100 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    w = threading.Thread(target=writer)
    w.start()
    time.sleep(SECONDS / 2 + random.random() / 2)  # anywhere in a checkpoint interval
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = start(src, tmp / "state", rcv, interval)
    w.join()
    rate = LINES / (time.monotonic() - t0)
    try:
        deadline = time.monotonic() + 120
        last, quiet = -1, time.monotonic()
        while time.monotonic() < deadline:
            if rcv.lines != last:
                last, quiet = rcv.lines, time.monotonic()
            elif rcv.lines >= LINES and time.monotonic() - quiet > 1.0:
                break
            time.sleep(0.05)
        if rcv.lines < LINES:
            raise RuntimeError(f"only {rcv.lines} of {LINES} lines arrived")
    finally:
        proc.terminate()
        proc.wait(30)
    return rcv.lines - LINES, rate


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as t:
        rcv = Receiver()
        print(f"{LINES:,} lines at {RATE:,} lines/s, one kill -9 half way (5 to 5.5 s)")
        for interval in (None, "1s") * TRIALS:
            dups, rate = run(Path(t), rcv, interval)
            name = "default" if interval is None else interval
            print(
                f"--checkpoint-interval {name:8}: {dups:7,} duplicates "
                f"({dups / LINES:.2%}; writer at {rate:,.0f} lines/s)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
