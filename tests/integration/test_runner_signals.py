"""The runner's exits that end the process with os._exit, from the outside.

Synchronised on the program's own log lines, never on a sleep: a second signal
sent before the first was handled would be taken for the first.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from tests.helpers import ROOT, ProgramProcess

SAMPLES = [sys.executable, str(ROOT / "tests" / "sample_programs.py")]


def test_second_sigterm_exits_at_once_while_cleanup_hangs(tmp_path: Path) -> None:
    args = ["--cleanup-hang", "--shutdown-timeout", "60s"]
    with ProgramProcess([*SAMPLES, "basic"], args, tmp=tmp_path) as p:
        p.wait_ready()
        p.signal(signal.SIGTERM)
        p.wait_log("stopping")  # the first signal is handled: cleanup() now hangs
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.wait(5) == 128 + signal.SIGTERM
        assert time.monotonic() - t0 < 2  # not the 60 s deadline
        p.wait_log("second signal; exiting at once", signal="SIGTERM")
        assert not any(r["message"] == "stopped" for r in p.records())
