"""Core: an idle sidecar's start-up to /readyz and its resident memory.

Peer, same run: Python's own `http.server` (the least a Python process that
answers HTTP can cost) started and probed the same way. Figures: median over
--trials starts; RSS read from /proc after the process has idled for 2 s.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRIALS = int(os.environ.get("BENCH_TRIALS", "10"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_and_probe(cmd: list[str], url: str, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=0.5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.002)
            if time.monotonic() - t0 > 10:
                raise RuntimeError(f"{cmd} never answered")
        ready = time.monotonic() - t0
        time.sleep(2)
        return ready, rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def measure(label: str, cmd_for_port, path: str, env: dict[str, str]) -> tuple[float, float]:
    readies, rsses = [], []
    for _ in range(TRIALS):
        port = free_port()
        r, m = start_and_probe(cmd_for_port(port), f"http://127.0.0.1:{port}{path}", env)
        readies.append(r)
        rsses.append(m)
    ready, rss = statistics.median(readies), statistics.median(rsses) / 1024
    print(f"{label:<44} ready p50 {ready * 1000:6.0f} ms   RSS p50 {rss:5.1f} MB")
    return ready, rss


def main() -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    py = sys.executable
    hb = [py, str(ROOT / "examples" / "custom_sidecar.py"), "--path", "/tmp/podkit-bench-hb"]
    peer_ready, peer_rss = measure(
        "peer: python -m http.server",
        lambda p: [py, "-m", "http.server", "--bind", "127.0.0.1", str(p)],
        "/",
        env,
    )
    rows = [
        ("podkit idle sidecar (uvloop)", hb, env),
        ("podkit idle sidecar (asyncio, no uvloop)", hb, {**env, "PODKIT_EVENT_LOOP": "asyncio"}),
    ]
    for label, cmd, e in rows:
        ready, rss = measure(
            label, lambda p, c=cmd: [*c, "--admin-addr", f"127.0.0.1:{p}"], "/readyz", e
        )
        print(
            f"{'':<44} ratio to peer: ready {ready / peer_ready:.2f}x, RSS {rss / peer_rss:.2f}x"
            f"   bars: ready <= 500 ms {'ok' if ready <= 0.5 else 'MISSED'},"
            f" RSS <= 40 MB {'ok' if rss <= 40 else 'MISSED'}"
        )
    print("\nlargest cumulative imports at start-up (python -X importtime):")
    res = subprocess.run(
        [py, "-X", "importtime", "-c", "import podkit.runner, podkit.admin, uvloop"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    err = res.stderr
    rows_it = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cum, mod = line.split("|")
            try:
                rows_it.append((int(cum), mod.rstrip()))
            except ValueError:
                pass
    for cum, mod in sorted(rows_it, reverse=True)[:12]:
        print(f"  {cum / 1000:7.1f} ms  {mod}")


if __name__ == "__main__":
    main()
