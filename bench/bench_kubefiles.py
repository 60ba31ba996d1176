"""kubefiles: watch event -> file on disk latency, and idle RSS with 1,000 objects.

The peer is the FAKE Kubernetes API of tests/peers/kubeapi.py (no API server
runs here), in this process. kiwigrid/k8s-sidecar, the program kubefiles
replaces, is not on PyPI (it ships only as an image), so it cannot run side
by side here: the figures are podkit's own.

- latency: OBJECTS ConfigMaps (~1 KiB each) are listed and watched; then, CHANGES
  times, one is replaced and the time runs from just before the fake API
  queues the watch event to the moment the new bytes are in the file (polled
  every 0.5 ms, one monotonic clock). Bar: p50 and p90 <= 100 ms.
- idle: after the changes, IDLE seconds with bookmarks only; RSS (VmRSS)
  and CPU of the kubefiles process, and the RSS of podkit's idle example
  sidecar in the same run (the floor every podkit program stands on).
  Bar: RSS <= 40 MB with 1,000 objects.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import proc_cpu  # noqa: E402
from tests.peers.kubeapi import FakeKubeAPI  # noqa: E402

OBJECTS = int(os.environ.get("BENCH_OBJECTS", "1000"))
CHANGES = int(os.environ.get("BENCH_CHANGES", "50"))
IDLE = float(os.environ.get("BENCH_IDLE_SECONDS", "20"))
LABELS = {"grafana_dashboard": "1"}


def rss(pid: int) -> dict[str, float]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def body(i: int, version: int) -> dict[str, str]:
    panel = f'{{"type": "graph", "title": "panel {version}"}}' * 20
    return {f"dash-{i:04d}.json": f'{{"title": "dashboard {i}", "panels": [{panel}]}}'}


def main() -> int:
    api = FakeKubeAPI()
    api.bookmark_interval = 60.0  # as the real API server: about once a minute
    api.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-kubefiles-"))
    sa, folder = tmp / "sa", tmp / "out"
    sa.mkdir()
    (sa / "token").write_text("token-1")
    (sa / "namespace").write_text("default")
    for i in range(OBJECTS):
        api.apply("configmap", "default", f"d{i}", body(i, 0), LABELS)
    port = 19517
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "podkit",
            "kubefiles",
            "--server",
            api.url,
            "--service-account-dir",
            str(sa),
            "--label",
            "grafana_dashboard=1",
            "--folder",
            str(folder),
            "--admin-addr",
            f"127.0.0.1:{port}",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() - t0 > 60:
                raise RuntimeError("kubefiles did not become ready")
            time.sleep(0.02)
        start_s = time.monotonic() - t0
        files = len(list(folder.glob("dash-*.json")))
        lat = []
        for n in range(CHANGES):
            i = (n * 37) % OBJECTS
            data = body(i, n + 1)
            path, want = folder / f"dash-{i:04d}.json", next(iter(data.values())).encode()
            t = time.monotonic()
            api.apply("configmap", "default", f"d{i}", data, LABELS)
            while True:
                try:
                    if path.read_bytes() == want:
                        break
                except FileNotFoundError:
                    pass
                if time.monotonic() - t > 5:
                    raise RuntimeError(f"change {n} not on disk after 5 s")
                time.sleep(0.0005)
            lat.append((time.monotonic() - t) * 1000)
            time.sleep(0.05)
        # The floor in the same run: podkit's idle example sidecar (asyncio,
        # the admin server, prometheus-client), with nothing to do.
        floor = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "custom_sidecar.py"),
                "--path",
                str(tmp / "hb"),
                "--admin-addr",
                "127.0.0.1:0",
            ],
            stderr=subprocess.DEVNULL,
        )
        cpu0 = proc_cpu(proc.pid)
        time.sleep(IDLE)
        idle_cpu = proc_cpu(proc.pid) - cpu0
        mem = rss(proc.pid)
        floor_mem = rss(floor.pid)
        floor.terminate()
        floor.wait(10)
        lat.sort()
        p50, p90 = statistics.median(lat), lat[int(len(lat) * 0.9) - 1]
        print(f"objects listed and written: {files} of {OBJECTS}, ready after {start_s:.2f} s")
        print(
            f"watch event -> file on disk, {CHANGES} changes: p50 {p50:.2f} ms, "
            f"p90 {p90:.2f} ms, max {lat[-1]:.2f} ms (bar 100 ms: "
            f"{'met' if p90 <= 100 else 'MISSED'})"
        )
        print(f"idle CPU over {IDLE:g} s: {idle_cpu:.2f} s")
        print(
            f"RSS idle with {OBJECTS} objects: {mem['VmRSS']:.1f} MB (anon {mem['RssAnon']:.1f}, "
            f"file {mem['RssFile']:.1f}) (bar 40 MB: {'met' if mem['VmRSS'] <= 40 else 'MISSED'})"
        )
        print(
            f"same run, podkit's idle example sidecar (the floor): {floor_mem['VmRSS']:.1f} MB; "
            f"kubefiles is {mem['VmRSS'] / floor_mem['VmRSS']:.2f}x"
        )
        print("peer: kiwigrid/k8s-sidecar is not on PyPI (image only): no side-by-side figure")
        return 0 if p90 <= 100 and mem["VmRSS"] <= 40 else 1
    finally:
        proc.terminate()
        proc.wait(10)
        api.stop()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
