"""logship killed (SIGKILL) at random points while it writes checkpoints (issue 13, class 5).

Checkpoints are written after every acknowledged batch of 300 lines, for 30
files, so most kills land between or inside checkpoint writes. After every
kill the checkpoint on disk is whole, the restart comes up ready, and in the
end every line written has arrived.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

from podkit.tailer import checkpoint_entry_error
from tests.helpers import ProgramProcess, wait_until
from tests.peers.receiver import Receiver

FILES = 30
BLOCKS = 40
PER_BLOCK = 50  # lines per file per block: 60,000 lines in all


def start(tmp: Path, url: str) -> ProgramProcess:
    args = [
        "--path",
        str(tmp / "logs" / "*.log"),
        "--sink",
        url,
        "--state-dir",
        str(tmp / "state"),
        "--poll-interval",
        "100ms",
        "--checkpoint-interval",
        "0s",
        "--batch-max-lines",
        "300",
        "--batch-max-wait",
        "50ms",
        "--retry-max-backoff",
        "500ms",
    ]
    return ProgramProcess("logship", args, tmp=tmp).start()


def test_sigkill_at_random_points_of_checkpoint_writes(tmp_path: Path, receiver: Receiver) -> None:
    seed = int(os.environ.get("PODKIT_TEST_SEED", time.time_ns() % 10**6))
    rnd = random.Random(seed)
    logs = tmp_path / "logs"
    logs.mkdir()
    names = [logs / f"app-{i:02d}.log" for i in range(FILES)]
    for p in names:
        p.write_text("")
    want = {
        f"{p.stem} {b:03d} {j:03d}" for p in names for b in range(BLOCKS) for j in range(PER_BLOCK)
    }

    def writer() -> None:
        for b in range(BLOCKS):
            for p in names:
                with open(p, "a") as fh:
                    fh.write("".join(f"{p.stem} {b:03d} {j:03d}\n" for j in range(PER_BLOCK)))
            time.sleep(0.05)

    ckpt = tmp_path / "state" / "checkpoints.json"
    p = start(tmp_path, receiver.url)
    p.wait_ready()
    w = threading.Thread(target=writer)
    w.start()
    kills = mid_write = 0
    try:
        while kills < 8:
            time.sleep(rnd.uniform(0.02, 0.4))
            p.kill()
            kills += 1
            # A temp file left behind: this kill interrupted a checkpoint write
            # (about one kill in eight does, here).
            mid_write += (ckpt.parent / "checkpoints.json.tmp").exists()
            if ckpt.exists():  # whole: never a torn or half-renamed file
                saved = json.loads(ckpt.read_bytes())
                assert all(checkpoint_entry_error(e) is None for e in saved["files"]), seed
            p = start(tmp_path, receiver.url)
            p.wait_ready()  # no crash at restart, whatever the kill left behind
        w.join()
        wait_until(
            lambda: set(receiver.messages()) >= want,
            60,
            0.2,
            what=f"all {len(want)} lines (seed {seed})",
        )
        got = Counter(receiver.messages())
        assert set(got) == want, (seed, mid_write)
        assert "cannot read checkpoints" not in p.stderr()
        assert p.stop() == 0
        assert os.listdir(tmp_path / "state") == ["checkpoints.json"]  # no temp file left
    finally:
        p.stop()
        w.join()
