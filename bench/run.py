"""Run every bench/bench_*.py in turn (`make bench`); each prints its own figures."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

here = Path(__file__).parent
only = set(sys.argv[1:])
failed = []
for script in sorted(here.glob("bench_*.py")):
    name = script.stem.removeprefix("bench_")
    if only and name not in only:
        continue
    print(f"\n=== {name}", flush=True)
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, str(script)])
    print(f"=== {name}: exit {res.returncode} in {time.monotonic() - t0:.0f}s", flush=True)
    if res.returncode:
        failed.append(name)
sys.exit(1 if failed else 0)
