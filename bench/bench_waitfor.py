"""waitfor: how fast it notices a dependency, starts, and how little it holds.

Run: .venv/bin/python bench/bench_waitfor.py [--trials 20]

1. Listener appears -> waiter exits: waitfor (defaults, and --max-interval
   250ms) and a wait-for-it-style loop (`until nc -z; do sleep 1; done`) all
   wait on the same port; once both waitfors are polling, the listener appears
   at a random moment 0.5-1.5 s later; each waiter's exit is timed from that
   moment. Bar: median <= 150 ms.
2. Process start -> first attempt (the listener's accept()): waitfor as the
   console script, a bare `python3 -I -S` connecting a socket (the floor any
   Python program pays here) and `nc -z`. Bar: <= 200 ms.
3. Peak RSS (VmHWM) while waiting: tcp only, and five mixed targets. Bar: <= 30 MB.
4. SIGTERM while waiting -> exit. Bar: <= 500 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
WAITFOR = [str(VENV_BIN / "podkit-waitfor")]
if not Path(WAITFOR[0]).exists():
    WAITFOR = [sys.executable, "-m", "podkit.initkits.waitfor"]
# Bytecode is cached as in an image (pip compiles .pyc at install time); this
# editable checkout runs with PYTHONDONTWRITEBYTECODE=1, which would make every
# start compile podkit from source. The cache goes to a temp dir, not the tree.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="podkit-bench-pyc-")
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def ms(x: float) -> str:
    return f"{x * 1000:7.1f} ms"


def exit_times(procs: dict[str, subprocess.Popen[bytes]]) -> dict[str, float]:
    """Wait for every process in its own thread; the monotonic time each exited."""
    out: dict[str, float] = {}

    def wait(name: str, p: subprocess.Popen[bytes]) -> None:
        p.wait()
        out[name] = time.monotonic()

    threads = [threading.Thread(target=wait, args=item) for item in procs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out


def started(p: subprocess.Popen[bytes]) -> None:
    """Block until waitfor logged its first "waiting" line, then keep its pipe drained."""
    assert p.stderr is not None
    for line in p.stderr:
        if b'"waiting"' in line:
            break
    threading.Thread(target=p.stderr.read, daemon=True).start()


def bench_appear(trials: int) -> dict[str, list[float]]:
    nc = shutil.which("nc")
    results: dict[str, list[float]] = {"waitfor": [], "waitfor-250ms": [], "nc-loop": []}
    for _ in range(trials):
        port = free_port()
        target = f"tcp://127.0.0.1:{port}"
        piped = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        procs = {
            "waitfor": subprocess.Popen([*WAITFOR, target], **piped),
            "waitfor-250ms": subprocess.Popen(
                [*WAITFOR, "--max-interval", "250ms", target], **piped
            ),
        }
        if nc:
            loop = f"until {nc} -z 127.0.0.1 {port}; do sleep 1; done"
            procs["nc-loop"] = subprocess.Popen(["sh", "-c", loop], **QUIET)
        # Start-up is measured apart (2.); here every waiter is already polling.
        started(procs["waitfor"])
        started(procs["waitfor-250ms"])
        time.sleep(random.uniform(0.5, 1.5))
        sock = listen(port)
        appeared = time.monotonic()
        done = exit_times(procs)
        sock.close()
        for name, t in done.items():
            results[name].append(t - appeared)
    return results


def first_attempt(cmd: list[str], sock: socket.socket) -> float:
    sock.settimeout(10)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, **QUIET)
    conn, _ = sock.accept()
    took = time.monotonic() - t0
    conn.close()
    p.wait(10)
    return took


def bench_start(trials: int) -> dict[str, list[float]]:
    port = free_port()
    sock = listen(port)
    out: dict[str, list[float]] = {"waitfor": [], "python3 (bare socket connect)": [], "nc -z": []}
    nc = shutil.which("nc")
    bare = f"import socket; socket.create_connection(('127.0.0.1', {port})).close()"
    try:
        for _ in range(trials):
            out["waitfor"].append(first_attempt([*WAITFOR, f"tcp://127.0.0.1:{port}"], sock))
            out["python3 (bare socket connect)"].append(
                first_attempt([sys.executable, "-I", "-S", "-c", bare], sock)
            )
            if nc:
                out["nc -z"].append(first_attempt([nc, "-z", "127.0.0.1", str(port)], sock))
    finally:
        sock.close()
    return out


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def bench_rss() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp())
    port = free_port()
    cases = {
        "tcp": [f"tcp://127.0.0.1:{port}"],
        "mixed": [
            f"tcp://127.0.0.1:{port}",
            f"https://127.0.0.1:{port}/health",
            f"postgres://app:pw@127.0.0.1:{port}/app",
            f"redis://:pw@127.0.0.1:{port}",
            f"file://{tmp}/absent",
        ],
        "tcp + --admin-addr": ["--admin-addr", "127.0.0.1:0", f"tcp://127.0.0.1:{port}"],
    }
    out = {}
    for name, args in cases.items():
        p = subprocess.Popen([*WAITFOR, "--max-interval", "100ms", *args], **QUIET)
        time.sleep(2.0)
        out[name] = peak_rss(p.pid) / 2**20
        p.terminate()
        p.wait(10)
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(1)
    out["python -c sleep (bare interpreter)"] = peak_rss(p.pid) / 2**20
    p.kill()
    p.wait()
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def bench_sigterm(trials: int) -> list[float]:
    out = []
    for _ in range(trials):
        p = subprocess.Popen(
            [*WAITFOR, f"tcp://127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert p.stderr is not None
        p.stderr.readline()  # "starting"
        p.stderr.readline()  # first "waiting": it is in the wait loop now
        time.sleep(0.2)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        out.append(time.monotonic() - t0)
        assert p.returncode == 143, p.returncode
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    trials = ap.parse_args().trials
    subprocess.run([*WAITFOR, "--timeout", "1ms", "file:///"], **QUIET)  # warm the .pyc cache
    print(f"waitfor: {' '.join(WAITFOR)}; nc: {shutil.which('nc')}; cores: {os.cpu_count()}")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    print(f"\n1. listener appears -> waiter exits, {trials} trials (same port, same moment)")
    res = bench_appear(trials)
    med = {k: statistics.median(v) for k, v in res.items() if v}
    for name, values in res.items():
        if values:
            print(
                f"  {name:14} median {ms(med[name])}  p90 "
                f"{ms(statistics.quantiles(values, n=10)[-1])}  max {ms(max(values))}"
            )
    if "nc-loop" in med:
        for name in ("waitfor", "waitfor-250ms"):
            print(f"  ratio nc-loop / {name}: {med['nc-loop'] / med[name]:.1f}x")
    print("  bar: median <= 150 ms")

    print(f"\n2. process start -> first attempt, {trials} trials")
    st = bench_start(trials)
    smed = {k: statistics.median(v) for k, v in st.items() if v}
    for name, value in smed.items():
        print(f"  {name:30} median {ms(value)}  max {ms(max(st[name]))}")
    for peer in ("python3 (bare socket connect)", "nc -z"):
        if peer in smed:
            print(f"  ratio waitfor / {peer}: {smed['waitfor'] / smed[peer]:.1f}x")
    print("  bar: <= 200 ms")

    print("\n3. peak RSS while waiting")
    for name, mib in bench_rss().items():
        print(f"  {name:36} {mib:6.1f} MiB")
    print("  bar: <= 30 MB")

    print("\n4. SIGTERM while waiting -> exit 143, 10 trials")
    sig = bench_sigterm(10)
    print(f"  median {ms(statistics.median(sig))}  max {ms(max(sig))}   bar: <= 500 ms")
    print(f"\nload average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    shutil.rmtree(os.environ["PYTHONPYCACHEPREFIX"], ignore_errors=True)


if __name__ == "__main__":
    main()
