"""The duplicate figure of issue 17: rotations, kills and a failing sink.

logship follows `app.log*` (a glob that also matches the rotated copies, the
common way to catch the tail of a renamed file). 60,000 lines are written in
ten generations of 6,000; after each generation the file is rotated, by
rename and by copytruncate in turn; logship is killed with SIGKILL twice and
restarted, and the sink answers 503 for a while. Every line must arrive, and
at most 2% of what arrives may be a second copy (issue 17: 35.8% before
identity by content).
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from podkit.testing import ProgramProcess, wait_until
from tests.peers.receiver import Receiver

GENERATIONS = 10
PER_GENERATION = 6_000
KEEP = 4  # rotated copies kept (app.log.1 .. app.log.4), as logrotate's `rotate 4`


def start(tmp: Path, url: str) -> ProgramProcess:
    args = [
        "--path",
        str(tmp / "logs" / "app.log*"),
        "--sink",
        url,
        "--state-dir",
        str(tmp / "state"),
        "--poll-interval",
        "100ms",
        "--batch-max-lines",
        "200",
        "--batch-max-wait",
        "50ms",
        "--retry-max-backoff",
        "300ms",
    ]
    return ProgramProcess("logship", args, tmp=tmp).start()


def shift(logs: Path) -> None:
    """app.log.N -> app.log.N+1, the oldest removed (as logrotate does)."""
    oldest = logs / f"app.log.{KEEP}"
    if oldest.exists():
        oldest.unlink()
    for n in range(KEEP - 1, 0, -1):
        p = logs / f"app.log.{n}"
        if p.exists():
            p.rename(logs / f"app.log.{n + 1}")


def rotate(logs: Path, gen: int) -> None:
    live = logs / "app.log"
    shift(logs)
    if gen % 2 == 0:
        live.rename(logs / "app.log.1")  # rename, then the app creates a new file
        live.touch()
    else:
        shutil.copyfile(live, logs / "app.log.1")  # copytruncate
        os.truncate(live, 0)


def test_rotations_kills_and_503_cost_at_most_two_percent_duplicates(
    tmp_path: Path, receiver: Receiver
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").touch()
    want = [f"g{g:02d} line {i:05d}" for g in range(GENERATIONS) for i in range(PER_GENERATION)]
    written = threading.Event()
    progress = [0]  # generations written and rotated

    def writer() -> None:
        for g in range(GENERATIONS):
            lines = want[g * PER_GENERATION : (g + 1) * PER_GENERATION]
            for a in range(0, PER_GENERATION, 500):
                with open(logs / "app.log", "a") as fh:
                    fh.write("".join(s + "\n" for s in lines[a : a + 500]))
                time.sleep(0.08)  # pacing: the app writes over time, not all at once
            rotate(logs, g)
            progress[0] = g + 1
        written.set()

    p = start(tmp_path, receiver.url)
    p.wait_ready()
    w = threading.Thread(target=writer)
    w.start()
    try:
        for at in (3, 6):  # two kill -9 restarts, mid-stream
            wait_until(lambda at=at: progress[0] >= at, 20, 0.01, what=f"generation {at}")
            if at == 6:
                receiver.fail(503)  # the sink fails for a while around the second kill
            os.kill(p.pid, signal.SIGKILL)
            p.wait(10)
            p = start(tmp_path, receiver.url)
            p.wait_ready()
        wait_until(lambda: receiver.failed >= 3, 10, 0.01, what="503 answers")
        receiver.ok()
        assert written.wait(30)
        wait_until(
            lambda: set(receiver.messages()) >= set(want), 30, 0.1, what="every line delivered"
        )
        got = Counter(receiver.messages())
        lost = [s for s in want if s not in got]
        dups = sum(n - 1 for n in got.values())
        print(f"60,000 lines: {len(lost)} lost, {dups} duplicates ({dups / len(want):.2%})")
        assert not lost
        assert dups <= 0.02 * len(want), f"{dups} duplicates ({dups / len(want):.2%})"
        assert p.stop() == 0
    finally:
        receiver.ok()
        p.stop()
        w.join()
