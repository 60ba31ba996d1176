"""Benchmark the metrics adapter against peers measured in the same run.

1. StatsD over UDP: a load generator in a second process sends batched
   datagrams (~1400 bytes, ~45 lines, as StatsD clients buffer to the MTU)
   for a fixed time, paced at 200,000 lines/s and then unpaced; the adapter
   is single-threaded (one core at most) and its CPU use is reported (set
   BENCH_PIN=1 to pin it to one CPU). Peers, with the same sender: the real
   statsd_exporter (built by `make conformance`, tests/conformance/exporters.py;
   left out when it has not been built), and a minimal Python socket loop
   (recv + count newlines), the ceiling any Python receiver can reach here.
   BENCH_BASELINE_PY=/path/to/other/venv/bin/python also runs that tree's
   adapter in the same run (before/after a change).
2. GET /metrics with 10,000 series, text and OpenMetrics. Peer: a plain
   prometheus_client exporter (start_http_server) serving 10,000 gauge children.
3. RSS with those 10,000 series. Peer: the same plain exporter's RSS.
4. Log rules: two rules (counter with a label, histogram) over 500,000 lines
   appended to a followed file. Peer: a bare Python loop applying the same two
   regexes to the same lines (no tailer, no metrics).

Run: .venv/bin/python bench/bench_metrics.py  (about a minute)
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CPUS = sorted(os.sched_getaffinity(0))
# Pinning (BENCH_PIN=1: adapter and peers on the first CPU, senders on the
# last) makes "one core" explicit, but on a shared machine where other
# benchmarks also pin to CPU 0 it measures their load, not ours. By default
# nothing is pinned; the adapter is single-threaded (one event loop), so it
# never uses more than one core at a time, and its CPU use is reported.
PIN = os.environ.get("BENCH_PIN") == "1"
ADAPTER_CPU = CPUS[0]
SENDER_CPU = CPUS[-1]


def pin(pid: int, cpu: int) -> None:
    if PIN:
        os.sched_setaffinity(pid, {cpu})


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return bytes(r.read())


def wait_http(url: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} never answered")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (to report lines per CPU-second,
    which stays meaningful when other work on the shared core steals time)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + (labels or "")) and (labels or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


SENDER = r"""
import os, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
rate, cpu = float(sys.argv[3]), int(sys.argv[4])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
lines = []
for i in range(3000):
    k = i % 4
    if k == 0: lines.append(b"app.requests.%d.count:1|c" % (i % 700))
    elif k == 1: lines.append(b"app.pool.%d.size:%d|g" % (i % 700, i))
    elif k == 2: lines.append(b"app.db.%d.latency:%d|ms" % (i % 100, i % 250))
    else: lines.append(b"app.hits:1|c|#env:prod,shard:%d" % (i % 50))
packets, cur, size = [], [], 0
for ln in lines * 3:
    if size + len(ln) + 1 > 1400:
        packets.append((b"\n".join(cur), len(cur))); cur, size = [], 0
    cur.append(ln); size += len(ln) + 1
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
dest = ("127.0.0.1", port)
sent = npk = 0
start = time.perf_counter(); end = start + seconds
i = 0
n = len(packets)
while True:
    now = time.perf_counter()
    if now >= end: break
    if rate and sent > (now - start) * rate:
        continue
    for _ in range(16):
        data, cnt = packets[i % n]; i += 1
        try:
            s.sendto(data, dest)
        except OSError:
            continue
        sent += cnt; npk += 1
print(sent, npk, time.perf_counter() - start)
"""

CEILING = r"""
import os, socket, sys, time
port, cpu = int(sys.argv[1]), int(sys.argv[2])
if cpu >= 0:
    os.sched_setaffinity(0, {cpu})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", port))
s.settimeout(1.0)
print("ready", flush=True)
lines = 0
try:
    while True:
        data = s.recv(65536)
        lines += data.count(b"\n") + 1
except socket.timeout:
    pass
print(lines, flush=True)
"""


def run_sender(port: int, seconds: float, rate: float) -> tuple[int, int, float]:
    out = subprocess.run(
        [PY, "-c", SENDER, str(port), str(seconds), str(rate), str(SENDER_CPU if PIN else -1)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), int(out[1]), float(out[2])


def start_adapter(args: list[str], admin: int, py: str = PY) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [py, "-m", "podkit", "metrics", "--admin-addr", f"127.0.0.1:{admin}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pin(proc.pid, ADAPTER_CPU)
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def statsd_exporter_binary() -> str | None:
    """The statsd_exporter `make conformance` built, if it has been."""
    sys.path.insert(0, str(ROOT))
    from tests.conformance.exporters import CACHE, STATSD_EXPORTER_TAG

    path = CACHE / f"statsd_exporter-{STATSD_EXPORTER_TAG}" / "statsd_exporter"
    return str(path) if path.exists() else None


def measure_receiver(
    proc: subprocess.Popen[bytes],
    port: int,
    url: str,
    lines_metric: str,
    seconds: float,
    rate: float,
) -> dict[str, float]:
    """Send to a running receiver; lines it counted per second and per CPU second."""
    cpu0 = cpu_seconds(proc.pid)
    sent, packets, took = run_sender(port, seconds, rate)
    time.sleep(1.0)  # let it finish what sits in its buffer
    cpu = cpu_seconds(proc.pid) - cpu0
    text = get(url).decode()
    got = metric(text, lines_metric)
    stop(proc)
    return {
        "kernel_drops": metric(text, "podkit_metrics_statsd_udp_kernel_drops_total"),
        "sent": sent,
        "packets": packets,
        "took": took,
        "got": got,
        "lines_per_s": got / took,
        "drop_pct": 100 * (1 - got / sent),
        "lines_per_cpu_s": got / cpu if cpu else 0.0,
        "cpu_pct": 100 * cpu / took,
    }


def bench_statsd(seconds: float = 5.0) -> dict[str, object]:
    results: dict[str, object] = {}
    exporter = statsd_exporter_binary()
    baseline = os.environ.get("BENCH_BASELINE_PY")
    for label, rate in (("paced 200k", 200_000.0), ("unpaced", 0.0)):
        port, admin = free_port(socket.SOCK_DGRAM), free_port()
        proc = start_adapter(["--statsd-udp", f"127.0.0.1:{port}"], admin)
        url = f"http://127.0.0.1:{admin}/metrics"
        ad = measure_receiver(proc, port, url, "podkit_metrics_statsd_lines_total", seconds, rate)
        r: dict[str, object] = {
            "sent_lines_per_s": ad["sent"] / ad["took"],
            "lines_per_packet": ad["sent"] / ad["packets"],
            "adapter_lines_per_s": ad["lines_per_s"],
            "adapter_drop_pct": ad["drop_pct"],
            "adapter_lines_per_cpu_s": ad["lines_per_cpu_s"],
            "adapter_cpu_pct": ad["cpu_pct"],
            "kernel_drops_datagrams": ad["kernel_drops"],
        }
        if baseline:
            port, admin = free_port(socket.SOCK_DGRAM), free_port()
            proc = start_adapter(["--statsd-udp", f"127.0.0.1:{port}"], admin, baseline)
            url = f"http://127.0.0.1:{admin}/metrics"
            b = measure_receiver(
                proc, port, url, "podkit_metrics_statsd_lines_total", seconds, rate
            )
            r["baseline_lines_per_cpu_s"] = b["lines_per_cpu_s"]
            r["baseline_lines_per_s"] = b["lines_per_s"]
        if exporter:
            port, web = free_port(socket.SOCK_DGRAM), free_port()
            proc = subprocess.Popen(
                [
                    exporter,
                    f"--web.listen-address=127.0.0.1:{web}",
                    f"--statsd.listen-udp=127.0.0.1:{port}",
                    "--statsd.listen-tcp=",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            pin(proc.pid, ADAPTER_CPU)
            url = f"http://127.0.0.1:{web}/metrics"
            wait_http(url)
            e = measure_receiver(proc, port, url, "statsd_exporter_lines_total", seconds, rate)
            r["exporter_lines_per_cpu_s"] = e["lines_per_cpu_s"]
            r["exporter_lines_per_s"] = e["lines_per_s"]
            r["exporter_cpu_pct"] = e["cpu_pct"]
        # Peer: the minimal socket loop, same sender, same rate, same core.
        cport = free_port(socket.SOCK_DGRAM)
        ceil = subprocess.Popen(
            [PY, "-c", CEILING, str(cport), str(ADAPTER_CPU if PIN else -1)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert ceil.stdout is not None
        ceil.stdout.readline()
        ccpu0 = cpu_seconds(ceil.pid)
        csent, _, ctook = run_sender(cport, seconds, rate)
        ccpu = cpu_seconds(ceil.pid) - ccpu0
        cgot = int(ceil.stdout.readline())
        ceil.wait()
        r["ceiling_lines_per_cpu_s"] = cgot / ccpu if ccpu else 0.0
        r["ceiling_lines_per_s"] = cgot / ctook
        r["ceiling_drop_pct"] = 100 * (1 - cgot / csent)
        results[label] = r
    return results


def feed_10k(port: int) -> None:
    """10,000 gauge series: 100 names x 100 tag values."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(100):
            lines = [b"app.metric_%d:%d|g|#shard:s%d" % (n, v, v) for v in range(100)]
            for i in range(0, 100, 25):
                s.sendto(b"\n".join(lines[i : i + 25]), ("127.0.0.1", port))
                time.sleep(0.0005)


PLAIN_EXPORTER = r"""
import sys, time
from prometheus_client import Gauge, start_http_server
port = int(sys.argv[1])
for n in range(100):
    g = Gauge("app_metric_%d" % n, "plain", ["shard"])
    for v in range(100):
        g.labels("s%d" % v).set(v)
start_http_server(port, addr="127.0.0.1")
print("ready", flush=True)
time.sleep(3600)
"""


def timed_gets(url: str, headers: dict[str, str] | None = None, n: int = 20) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        body = get(url, headers)
        out.append((time.perf_counter() - t) * 1000)
        assert body
    return out


def bench_scrape() -> dict[str, object]:
    port, admin = free_port(socket.SOCK_DGRAM), free_port()
    proc = start_adapter(["--statsd-udp", f"127.0.0.1:{port}"], admin)
    feed_10k(port)
    url = f"http://127.0.0.1:{admin}/metrics"
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if metric(get(url).decode(), "podkit_metrics_series") >= 10000:
            break
        time.sleep(0.1)
    series = metric(get(url).decode(), "podkit_metrics_series")
    om = {"Accept": "application/openmetrics-text; version=1.0.0"}
    text_ms = timed_gets(url)
    om_ms = timed_gets(url, om)
    rss = rss_mb(proc.pid)
    stop(proc)
    pport = free_port()
    peer = subprocess.Popen(
        [PY, "-c", PLAIN_EXPORTER, str(pport)], stdout=subprocess.PIPE, text=True
    )
    assert peer.stdout is not None
    peer.stdout.readline()
    pin(peer.pid, ADAPTER_CPU)
    purl = f"http://127.0.0.1:{pport}/metrics"
    peer_ms = timed_gets(purl)
    peer_rss = rss_mb(peer.pid)
    peer.terminate()
    peer.wait()
    return {
        "series": series,
        "text_p50_ms": statistics.median(text_ms),
        "text_max_ms": max(text_ms),
        "om_p50_ms": statistics.median(om_ms),
        "peer_p50_ms": statistics.median(peer_ms),
        "rss_mb": rss,
        "peer_rss_mb": peer_rss,
    }


RULES = {
    "count": r"status=(?P<status>\d{3}) dur_ms=(?P<dur_ms>\d+)",
    "hist": r"dur_ms=(?P<dur_ms>\d+)",
}


def bench_log(n: int = 500_000) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    log = tmp / "app.log"
    log.write_text("")
    statuses = ("200", "200", "200", "404", "500")
    lines = [
        f"2026-11-26T06:00:00Z GET /api/items/{i % 977} status={statuses[i % 5]} "
        f"dur_ms={i % 1500} bytes={i % 9000}\n"
        for i in range(n)
    ]
    cfg = tmp / "adapter.yaml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            sources:
              - type: log
                path: {log}
                poll_interval: 50ms
                rules:
                  - match: '{RULES["count"]}'
                    counter: app_requests_total
                    labels: [status]
                  - match: '{RULES["hist"]}'
                    histogram: app_request_duration_seconds
                    value: dur_ms
                    scale: 0.001
                    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1]
            """
        )
    )
    admin = free_port()
    proc = start_adapter(["--config", str(cfg)], admin)
    url = f"http://127.0.0.1:{admin}/metrics"
    cpu0 = cpu_seconds(proc.pid)
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write("".join(lines))
    while True:
        done = metric(get(url).decode(), "podkit_metrics_log_lines_total")
        if done >= n:
            break
        time.sleep(0.05)
    took = time.perf_counter() - t0
    adapter_cpu = cpu_seconds(proc.pid) - cpu0
    counted = metric(get(url).decode(), "app_requests_total")
    stop(proc)
    mtail_cpu, mtail_counted = run_mtail(tmp, log)
    # Peer: the same two regexes in a bare loop over the same lines, same core.
    peer = subprocess.run(
        [
            PY,
            "-c",
            textwrap.dedent(
                f"""
                import os, re, time
                if {PIN}:
                    os.sched_setaffinity(0, {{{ADAPTER_CPU}}})
                a = re.compile({RULES["count"]!r}).search
                b = re.compile({RULES["hist"]!r}).search
                t = time.perf_counter()
                counts, obs = {{}}, 0
                with open({str(log)!r}) as f:
                    for line in f:
                        m = a(line)
                        if m:
                            counts[m.group("status")] = counts.get(m.group("status"), 0) + 1
                        m = b(line)
                        if m:
                            obs += float(m.group("dur_ms")) * 0.001
                print(time.perf_counter() - t)
                """
            ),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    peer_took = float(peer.stdout.strip())
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return {
        "lines": n,
        "counted": counted,
        "adapter_lines_per_s": n / took,
        "peer_lines_per_s": n / peer_took,
        "adapter_lines_per_cpu_s": n / adapter_cpu,
        "mtail_lines_per_cpu_s": n / mtail_cpu if mtail_cpu else 0.0,
        "mtail_counted": mtail_counted,
    }


# The same two rules as mtail writes them (a counter by status, a histogram
# of the duration in seconds), for the peer mtail is: the log-to-metrics tool
# people compare podkit's log source with.
MTAIL_PROG = r"""
counter app_requests_total by status
histogram app_request_duration_seconds buckets 0.005, 0.01, 0.05, 0.1, 0.5, 1

/status=(?P<status>\d{3}) dur_ms=(?P<dur_ms>\d+)/ {
  app_requests_total[$status]++
}
/dur_ms=(?P<dur_ms>\d+)/ {
  app_request_duration_seconds = $dur_ms * 0.001
}
"""


def run_mtail(tmp: Path, log: Path) -> tuple[float, float]:
    """(CPU seconds mtail spent on the log beyond its start-up, requests it counted).

    `mtail --one_shot` reads the files from the start and exits; its start-up
    and program compile are measured on an empty log and taken off."""
    import resource
    import shutil

    binary = shutil.which("mtail")
    if binary is None:
        print("mtail not installed (Debian package mtail): no mtail figure", flush=True)
        return 0.0, 0.0
    progs = tmp / "progs"
    progs.mkdir(exist_ok=True)
    (progs / "rules.mtail").write_text(MTAIL_PROG)
    empty = tmp / "empty.log"
    empty.write_text("")

    def one_shot(path: Path) -> tuple[float, str]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [binary, "--one_shot", "--one_shot_format", "prometheus", "--progs", str(progs)]
        cmd += ["--logs", str(path), "--logtostderr"]
        if PIN:
            cmd = ["taskset", "-c", str(ADAPTER_CPU), *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return cpu, out.stdout

    base, _ = one_shot(empty)
    cpu, text = one_shot(log)
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("app_requests_total{")
    )
    shutil.rmtree(progs)
    empty.unlink()
    return max(cpu - base, 1e-9), counted


def versions() -> str:
    from importlib.metadata import version

    return (
        f"Python {sys.version.split()[0]}, aiohttp {version('aiohttp')}, "
        f"prometheus-client {version('prometheus-client')}, uvloop {version('uvloop')}, "
        f"cores {len(CPUS)}, "
        + (
            f"adapter pinned to cpu {ADAPTER_CPU}, sender to cpu {SENDER_CPU}"
            if PIN
            else "unpinned"
        )
    )


def main() -> None:
    print(versions(), flush=True)
    st = bench_statsd()
    for label, r in st.items():
        assert isinstance(r, dict)
        print(
            f"statsd UDP {label}: adapter {r['adapter_lines_per_s']:,.0f} lines/s "
            f"(drop {r['adapter_drop_pct']:.2f}%, kernel drops {r['kernel_drops_datagrams']:.0f} "
            f"datagrams) | peer minimal socket loop {r['ceiling_lines_per_s']:,.0f} lines/s "
            f"(drop {r['ceiling_drop_pct']:.2f}%) | ratio "
            f"{r['adapter_lines_per_s'] / r['ceiling_lines_per_s']:.2f} | sent "
            f"{r['sent_lines_per_s']:,.0f} lines/s, {r['lines_per_packet']:.0f} lines/packet | "
            f"per CPU-second: adapter {r['adapter_lines_per_cpu_s']:,.0f} lines "
            f"({r['adapter_cpu_pct']:.0f}% of a core used), "
            f"peer {r['ceiling_lines_per_cpu_s']:,.0f}"
            + (
                f" | statsd_exporter {r['exporter_lines_per_s']:,.0f} lines/s, "
                f"{r['exporter_lines_per_cpu_s']:,.0f} per CPU-second "
                f"({r['exporter_cpu_pct']:.0f}% of a core)"
                if "exporter_lines_per_cpu_s" in r
                else " | statsd_exporter not built (make conformance)"
            )
            + (
                f" | baseline adapter {r['baseline_lines_per_cpu_s']:,.0f} per CPU-second"
                if "baseline_lines_per_cpu_s" in r
                else ""
            ),
            flush=True,
        )
    sc = bench_scrape()
    print(
        f"/metrics with {sc['series']:.0f} series: text p50 {sc['text_p50_ms']:.1f} ms "
        f"(max {sc['text_max_ms']:.1f}), OpenMetrics p50 {sc['om_p50_ms']:.1f} ms | peer plain "
        f"prometheus_client exporter p50 {sc['peer_p50_ms']:.1f} ms | ratio "
        f"{sc['text_p50_ms'] / sc['peer_p50_ms']:.2f}",  # type: ignore[operator]
        flush=True,
    )
    print(
        f"RSS with 10k series: adapter {sc['rss_mb']:.1f} MB | peer plain exporter "
        f"{sc['peer_rss_mb']:.1f} MB | ratio {sc['rss_mb'] / sc['peer_rss_mb']:.2f}",  # type: ignore[operator]
        flush=True,
    )
    lg = bench_log()
    print(
        f"log rules (2 rules, {lg['lines']} lines): adapter {lg['adapter_lines_per_s']:,.0f} "
        f"lines/s (counted {lg['counted']:.0f}) | peer bare regex loop "
        f"{lg['peer_lines_per_s']:,.0f} lines/s | ratio "
        f"{lg['adapter_lines_per_s'] / lg['peer_lines_per_s']:.2f}",  # type: ignore[operator]
        flush=True,
    )
    print(
        f"log rules per CPU second: adapter {lg['adapter_lines_per_cpu_s']:,.0f} | peer mtail "
        f"{lg['mtail_lines_per_cpu_s']:,.0f} (counted {lg['mtail_counted']:.0f}) | ratio "
        f"{lg['adapter_lines_per_cpu_s'] / max(lg['mtail_lines_per_cpu_s'], 1):.2f}",  # type: ignore[operator, call-overload]
        flush=True,
    )
    print(json.dumps({"statsd": st, "scrape": sc, "log": lg}, default=float))


if __name__ == "__main__":
    main()
