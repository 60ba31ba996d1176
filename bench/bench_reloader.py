"""reloader: change-to-reload latency, idle CPU and resident memory.

Peers, measured in the same run:

- latency: the raw inotify notification latency of watchdog alone (an
  Observer in this process, write -> on_any_event callback). That is the floor
  any inotify-based reloader sits on; the reloader adds its debounce, a
  content hash, and an HTTP call. (`inotifywait` is not installed here.)
- idle CPU and RSS: a process running nothing but a watchdog Observer on the
  same directory, and podkit's own idle example sidecar (the foundation's
  floor: asyncio, aiohttp, prometheus-client).

Change -> reload is measured from just before the write to the webhook's
arrival at an aiohttp receiver in this process (one monotonic clock), median
over CHANGES changes, each a kubelet-style atomic swap of a ConfigMap volume.
The same is measured with `--render` (a template with `$(ENV)` rendered and
written atomically before each reload, the hash over the output).
Bar: median <= debounce + 50 ms; idle CPU near zero; RSS <= 35 MB.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHANGES = int(os.environ.get("BENCH_CHANGES", "20"))
DEBOUNCE = float(os.environ.get("BENCH_DEBOUNCE", "1.0"))
IDLE = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    stat = open(f"/proc/{pid}/stat").read()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def atomic_write(target: Path, payload: dict[str, bytes]) -> None:
    """The kubelet's AtomicWriter: new timestamped dir, ..data_tmp renamed over ..data."""
    data = target / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    ts = Path(
        tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=target)
    )
    for k, v in payload.items():
        (ts / k).write_bytes(v)
    os.symlink(ts.name, target / "..data_tmp")
    os.rename(target / "..data_tmp", data)
    for k in payload:
        if not (target / k).is_symlink():
            os.symlink(f"..data/{k}", target / k)
    if old:
        shutil.rmtree(target / old)


class Receiver:
    def __init__(self) -> None:
        from aiohttp import web

        self.port = free_port()
        self.arrivals: list[float] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def handle(request: web.Request) -> web.Response:
            self.arrivals.append(time.monotonic())
            return web.Response(text="ok")

        async def start() -> None:
            app = web.Application()
            app.router.add_post("/-/reload", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing ready on {port}")


def watchdog_latency(directory: Path, n: int) -> list[float]:
    """Peer: write -> watchdog callback, watchdog alone."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    got = threading.Event()
    stamp: list[float] = []

    class H(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("modified", "closed") and not got.is_set():
                stamp.append(time.monotonic())
                got.set()

    obs = Observer()
    obs.schedule(H(), str(directory), recursive=True)
    obs.start()
    out = []
    try:
        time.sleep(0.2)
        for i in range(n):
            got.clear()
            stamp.clear()
            t0 = time.monotonic()
            (directory / "f").write_text(f"x{i}")
            if not got.wait(5):
                raise RuntimeError("watchdog saw nothing")
            out.append(stamp[0] - t0)
            time.sleep(0.05)
    finally:
        obs.stop()
        obs.join()
    return out


def reload_latency(rx: Receiver, change: Any) -> list[float]:
    """change(i) for i = 1..CHANGES; each time, the seconds until the i-th webhook arrives."""
    lat = []
    for i in range(1, CHANGES + 1):
        t0 = time.monotonic()
        change(i)
        deadline = t0 + DEBOUNCE + 10
        while len(rx.arrivals) < i and time.monotonic() < deadline:
            time.sleep(0.002)
        if len(rx.arrivals) < i:
            raise RuntimeError(f"no reload for change {i}")
        lat.append(rx.arrivals[i - 1] - t0)
        time.sleep(0.1)
    return lat


WATCHDOG_ONLY = """
import sys, time
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
obs = Observer()
obs.schedule(FileSystemEventHandler(), sys.argv[1], recursive=True)
obs.start()
while True:
    time.sleep(3600)
"""


def main() -> None:
    import watchdog.version

    py = sys.executable
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="bench-reloader-"))
    procs: list[subprocess.Popen[Any]] = []
    try:
        conf = tmp / "conf"
        conf.mkdir()
        atomic_write(conf, {"app.yml": b"v0", "rules.yml": b"r" * 4096})
        print(
            f"Python {sys.version.split()[0]}, watchdog {watchdog.version.VERSION_STRING}, "
            f"{os.cpu_count()} cores; debounce {DEBOUNCE:g}s; {CHANGES} changes"
        )

        (tmp / "peerdir").mkdir()
        peer = watchdog_latency(tmp / "peerdir", CHANGES)
        peer_med = statistics.median(peer)

        rx = Receiver()
        port = free_port()
        rl = subprocess.Popen(
            [py, "-m", "podkit", "reloader", "--watch", str(conf),
             "--webhook-url", f"http://127.0.0.1:{rx.port}/-/reload",
             "--debounce", f"{DEBOUNCE}s", "--admin-addr", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(rl)
        wait_ready(port)
        rules = b"r" * 4096
        lat = reload_latency(
            rx, lambda i: atomic_write(conf, {"app.yml": b"v%d" % i, "rules.yml": rules})
        )
        med = statistics.median(lat)
        over = med - DEBOUNCE
        print(
            f"\nchange -> reload  p50 {med * 1000:7.1f} ms  (p90 "
            f"{statistics.quantiles(lat, n=10)[-1] * 1000:.1f} ms)  = debounce + "
            f"{over * 1000:.1f} ms   bar debounce + 50 ms: {'ok' if over <= 0.05 else 'MISSED'}"
        )
        print(f"peer: watchdog alone, write -> event  p50 {peer_med * 1000:7.2f} ms")
        print(
            f"reloader's latency beyond its debounce vs the raw notification: "
            f"{over * 1000:.1f} ms vs {peer_med * 1000:.2f} ms "
            f"(ratio {over / peer_med:.1f}x)"
        )
        extra = len(rx.arrivals) - CHANGES
        print(f"extra reloads: {extra}")

        # The same with --render: the template is rendered ($(ENV) substituted)
        # and written atomically before each reload; the hash is over the output.
        src = tmp / "src"
        src.mkdir()
        out = tmp / "out"
        out.mkdir()
        atomic_write(src, {"app.tmpl": b"v: $(BENCH_VALUE)-0\n"})
        rx2 = Receiver()
        port2 = free_port()
        rr = subprocess.Popen(
            [py, "-m", "podkit", "reloader", "--render", f"{src}/app.tmpl:{out}/app.yml",
             "--webhook-url", f"http://127.0.0.1:{rx2.port}/-/reload",
             "--debounce", f"{DEBOUNCE}s", "--admin-addr", f"127.0.0.1:{port2}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**env, "BENCH_VALUE": "x"},
        )  # fmt: skip
        procs.append(rr)
        wait_ready(port2)
        lat2 = reload_latency(
            rx2, lambda i: atomic_write(src, {"app.tmpl": b"v: $(BENCH_VALUE)-%d\n" % i})
        )
        assert (out / "app.yml").read_bytes() == b"v: x-%d\n" % CHANGES
        med2 = statistics.median(lat2)
        over2 = med2 - DEBOUNCE
        print(
            f"with --render: change -> reload  p50 {med2 * 1000:7.1f} ms  = debounce + "
            f"{over2 * 1000:.1f} ms   bar debounce + 50 ms: {'ok' if over2 <= 0.05 else 'MISSED'}"
        )
        rr.terminate()
        rr.wait()

        # Idle: the reloader, a watchdog-only process, and the foundation's idle sidecar.
        wd = subprocess.Popen([py, "-c", WATCHDOG_ONLY, str(conf)], env=env)
        procs.append(wd)
        hb_port = free_port()
        hb = subprocess.Popen(
            [py, str(ROOT / "examples" / "custom_sidecar.py"), "--path", str(tmp / "hb"),
             "--every", "1h", "--admin-addr", f"127.0.0.1:{hb_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(hb)
        wait_ready(hb_port)
        time.sleep(2)
        who = {"reloader": rl.pid, "peer: watchdog alone": wd.pid, "podkit idle sidecar": hb.pid}
        c0 = {k: cpu_seconds(pid) for k, pid in who.items()}
        time.sleep(IDLE)
        c1 = {k: cpu_seconds(pid) for k, pid in who.items()}
        print(f"\nidle over {IDLE:g}s (CPU seconds, utime+stime; clock tick {1 / TICK:g}s):")
        for k, pid in who.items():
            st = proc_status(pid)
            print(
                f"  {k:<22} CPU {c1[k] - c0[k]:6.2f} s ({(c1[k] - c0[k]) / IDLE * 100:5.2f}%)"
                f"   RSS {st['VmRSS'] / 1024:5.1f} MB (anon {st['RssAnon'] / 1024:5.1f},"
                f" file {st['RssFile'] / 1024:5.1f})"
            )
        rss = proc_status(rl.pid)["VmRSS"] / 1024
        base = proc_status(hb.pid)["VmRSS"] / 1024
        print(
            f"reloader RSS {rss:.1f} MB: {rss / base:.2f}x podkit's idle sidecar "
            f"({base:.1f} MB)   bar <= 35 MB: {'ok' if rss <= 35 else 'MISSED'}"
        )
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
