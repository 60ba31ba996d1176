"""Core: an idle sidecar's start-up to /readyz and its resident memory.

Peers, same run: a bare `python -c "import asyncio"` started the same way
(spawn to exit: the least any asyncio program costs; issue 20's bar is
start-to-/readyz at most 1.5x it) and Python's own `http.server` (the least a
Python process that answers HTTP can cost), started and probed the same way.
Figures: median over BENCH_TRIALS starts; RSS read from /proc after the
process has idled for 2 s (bar: at most 24 MB).
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


def bare_start(py: str, env: dict[str, str]) -> float:
    """Spawn-to-exit of `python -c "import asyncio"`, spawned as the sidecar is."""
    t0 = time.monotonic()
    subprocess.run([py, "-c", "import asyncio"], stdout=subprocess.DEVNULL, env=env, check=True)
    return time.monotonic() - t0


def main() -> None:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    py = sys.executable
    hb = [py, str(ROOT / "examples" / "custom_sidecar.py"), "--path", "/tmp/podkit-bench-hb"]
    peer = "peer: python -m http.server"
    rows = {
        peer: ((lambda p: [py, "-m", "http.server", "--bind", "127.0.0.1", str(p)]), "/", env),
        "podkit idle sidecar (asyncio: podkit-base)": (
            (lambda p: [*hb, "--admin-addr", f"127.0.0.1:{p}"]),
            "/readyz",
            {**env, "PODKIT_EVENT_LOOP": "asyncio"},
        ),
        "podkit idle sidecar (uvloop installed)": (
            (lambda p: [*hb, "--admin-addr", f"127.0.0.1:{p}"]),
            "/readyz",
            env,
        ),
    }
    # Interleaved, trial by trial, so a busy moment on a shared machine hits
    # every row alike rather than one of them.
    bares: list[float] = []
    got: dict[str, list[tuple[float, int]]] = {label: [] for label in rows}
    for _ in range(TRIALS):
        bares.append(bare_start(py, env))
        for label, (cmd_for_port, path, e) in rows.items():
            port = free_port()
            got[label].append(
                start_and_probe(cmd_for_port(port), f"http://127.0.0.1:{port}{path}", e)
            )
    bare = statistics.median(bares)
    label = 'peer: python -c "import asyncio"'
    print(f"{label:<44} start p50 {bare * 1000:6.0f} ms")
    medians = {
        label: (statistics.median(r for r, _ in v), statistics.median(m for _, m in v) / 1024)
        for label, v in got.items()
    }
    peer_ready, peer_rss = medians[peer]
    for label, (ready, rss) in medians.items():
        print(f"{label:<44} ready p50 {ready * 1000:6.0f} ms   RSS p50 {rss:5.1f} MB")
        if label == peer:
            continue
        print(
            f"{'':<44} ratio to http.server: ready {ready / peer_ready:.2f}x,"
            f" RSS {rss / peer_rss:.2f}x; to bare asyncio start: {ready / bare:.2f}x"
            f"   bars: ready <= 1.5x bare {'ok' if ready <= 1.5 * bare else 'MISSED'},"
            f" RSS <= 24 MB {'ok' if rss <= 24 else 'MISSED'}"
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
