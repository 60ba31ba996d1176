"""logformat: nginx combined lines per second, on one core, next to rsyslog's mmnormalize.

One generated access log (BENCH_LINES lines, default 200,000, a realistic mix
of IPv4/IPv6 clients, statuses, referers and user agents) is converted by:

  adapter --stdin   `podkit logformat --stdin --format nginx` (the real CLI)
  adapter --path    `podkit logformat --path FILE --output file://...` (tailer + file sink)
  passthrough       the same file read by the core tailer and written by the
                    core file sink unchanged, no parsing: the adapter's own
                    I/O path, i.e. the ceiling parsing is measured against
  rsyslog           rsyslogd: imfile -> mmnormalize (liblognorm rulebase for
                    nginx combined) -> omfile writing the parsed fields as JSON

Every process is pinned to the same single core (taskset) and each figure is
the best of BENCH_TRIALS runs (default 3). Two figures per contender: wall
lines/s (the adapter's from its "ready" record to its last record out,
interpreter start-up excluded; rsyslog's from its start), and lines per
CPU-second (user + system time of the process, all threads, start-up
subtracted). This machine is shared by several busy users, so wall time
mostly measures the wait for the core; CPU-seconds measure what one core can
do, and the ratios of the same run are what to compare.
"""

# ruff: noqa: E501  (the liblognorm rule and user agents are single lines)
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from common import proc_cpu, wait_for_lines  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LINES = int(os.environ.get("BENCH_LINES", "200000"))
TRIALS = int(os.environ.get("BENCH_TRIALS", "3"))
CORE = os.environ.get("BENCH_CORE", "1")
TASKSET = [shutil.which("taskset") or "", "-c", CORE] if shutil.which("taskset") else []

RULEBASE = r"""version=2
rule=:%remote_addr:word% %ident:word% %remote_user:word% [%time_local:char-to{"extradata":"]"}%] "%request:char-to{"extradata":"\""}%" %status:number% %body_bytes_sent:number% "%http_referer:char-to{"extradata":"\""}%" "%http_user_agent:char-to{"extradata":"\""}%"
"""

AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/7.88.1",
    "kube-probe/1.29",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
]


PASS = "passthrough (tailer -> file sink, unchanged)"
RSYSLOG = "rsyslog imfile+mmnormalize+omfile"


def generate(path: Path, n: int) -> int:
    rnd = random.Random(42)
    t0 = 1_764_139_200
    with open(path, "w") as f:
        for i in range(n):
            ip = rnd.choice(
                [f"10.0.{i % 256}.{rnd.randrange(256)}", "::1", f"2001:db8::{i % 65536:x}"]
            )
            ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t0 + i // 50))
            status = rnd.choice([200, 200, 200, 200, 301, 304, 404, 500])
            ref = rnd.choice(["-", "https://example.com/", "https://shop.example.com/cart?id=7"])
            f.write(
                f'{ip} - - [{ts}] "GET /api/v1/items/{i}?page={i % 9} HTTP/1.1" {status} '
                f'{rnd.randrange(50000)} "{ref}" "{rnd.choice(AGENTS)}"\n'
            )
    return path.stat().st_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_time(stderr: str, message: str) -> float:
    for line in stderr.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("message") == message:
            return datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()
    raise RuntimeError(f"no {message!r} record in:\n{stderr[-2000:]}")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


GROK = "grok:%{COMBINEDAPACHELOG}"


def _stdin_once(src: Path, out: Path, fmt: str = "nginx") -> tuple[float, float]:
    cpu0 = _children_cpu()
    with open(src, "rb") as fin, open(out, "wb") as fout:
        res = subprocess.run(
            [*TASKSET, sys.executable, "-m", "podkit", "logformat", "--stdin", "--format", fmt,
             "--admin-addr", "off"],
            stdin=fin, stdout=fout, stderr=subprocess.PIPE, timeout=600, check=True,
        )  # fmt: skip
    err = res.stderr.decode()
    return _log_time(err, "end of input") - _log_time(err, "ready"), _children_cpu() - cpu0


def run_stdin(src: Path, tmp: Path, fmt: str = "nginx") -> tuple[float, float]:
    """The real CLI on a pipe: (wall seconds ready -> end of input, CPU seconds net of start-up)."""
    out = tmp / "stdin.out"
    empty = tmp / "empty.log"
    empty.write_bytes(b"")
    _, startup_cpu = _stdin_once(empty, out, fmt)
    wall, cpu = _stdin_once(src, out, fmt)
    n = 0
    with open(out, "rb") as f:
        for line in f:
            n += 1
            if n == 1:
                assert not json.loads(line).get("parse_error"), (fmt, line)
    assert n == LINES, f"stdin: {n} records, expected {LINES}"
    return wall, max(cpu - startup_cpu, 1e-6)


def run_stdin_grok(src: Path, tmp: Path) -> tuple[float, float]:
    """The same CLI with --format grok:%{COMBINEDAPACHELOG} (Logstash's pattern)."""
    return run_stdin(src, tmp, GROK)


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_path(src: Path, tmp: Path) -> tuple[float, float]:
    """The real CLI following the file: wall and CPU seconds from ready to the last record."""
    out, state = tmp / "path.out", tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    out.unlink(missing_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [*TASKSET, sys.executable, "-m", "podkit", "logformat", "--path", str(src), "--format",
         "nginx", "--output", f"file://{out}", "--state-dir", str(state),
         "--admin-addr", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        metric = 'podkit_logformat_records_total{format="nginx"}'
        deadline = time.monotonic() + 600
        ready_cpu = None
        while True:
            if ready_cpu is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                        ready_cpu = proc_cpu(proc.pid)
                except OSError:
                    time.sleep(0.01)
                    continue
            try:
                if _metric(port, metric) >= LINES:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("adapter --path did not finish")
            time.sleep(0.05)
        done, cpu = time.time(), proc_cpu(proc.pid) - ready_cpu
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return done - _log_time(err.decode(), "ready"), cpu


PASSTHROUGH = """
import asyncio, sys, time
from podkit.tailer import Tailer, TailerConfig
from podkit.sinks import NdjsonBatch, open_sink

async def main(src, out, total):
    sink = open_sink("file://" + out)
    await sink.start()
    tailer = Tailer(TailerConfig(paths=[src], state_dir=None))
    await tailer.start()
    t0, c0, n = time.time(), time.process_time(), 0
    async for chunk in tailer.chunks():
        texts = chunk.texts
        await sink.send(NdjsonBatch(("\\n".join(texts) + "\\n").encode(), len(texts)))
        tailer.ack(chunk)
        n += len(texts)
        if n >= total:
            break
    print(time.time() - t0, time.process_time() - c0)
    await tailer.close()
    await sink.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def run_passthrough(src: Path, tmp: Path) -> tuple[float, float]:
    out = tmp / "pass.out"
    out.unlink(missing_ok=True)
    res = subprocess.run(
        [*TASKSET, sys.executable, "-c", PASSTHROUGH, str(src), str(out), str(LINES)],
        capture_output=True, timeout=600, check=True,
    )  # fmt: skip
    wall, cpu = res.stdout.decode().split()[-2:]
    return float(wall), float(cpu)


def run_rsyslog(src: Path, tmp: Path) -> tuple[float, float] | None:
    rsyslogd = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin")
    if rsyslogd is None:
        return None
    d = tmp / "rsyslog"
    shutil.rmtree(d, ignore_errors=True)
    (d / "work").mkdir(parents=True)
    (d / "nginx.rb").write_text(RULEBASE)
    out = d / "out.json"
    (d / "rsyslog.conf").write_text(
        f"""
global(workDirectory="{d / "work"}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="mmnormalize")
template(name="json" type="string" string="%$!%\\n")
input(type="imfile" file="{src}" tag="nginx" ruleset="r" freshStartTail="off" addMetadata="off")
ruleset(name="r") {{
  action(type="mmnormalize" rulebase="{d / "nginx.rb"}")
  action(type="omfile" file="{out}" template="json")
}}
"""
    )
    t0 = time.time()
    proc = subprocess.Popen(
        [*TASKSET, rsyslogd, "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_lines(out, LINES, proc)
        done, cpu = time.time(), proc_cpu(proc.pid)
        with open(out, "rb") as f:
            first = json.loads(f.readline())
        assert first.get("status") and first.get("remote_addr"), first
    finally:
        proc.terminate()
        proc.wait(30)
    return done - t0, cpu


def best(fn, src: Path, tmp: Path) -> tuple[float, float] | None:  # type: ignore[no-untyped-def]
    """(wall, cpu) seconds, each the best of TRIALS runs; None when the peer is missing."""
    runs = [fn(src, tmp) for _ in range(TRIALS)]
    if any(r is None for r in runs):
        return None
    return min(r[0] for r in runs), min(r[1] for r in runs)


FORMAT_SAMPLES = {
    "nginx": '2001:db8::7 - - [26/Nov/2026:06:40:01 +0000] "GET /api/v1/items/7?page=2 HTTP/1.1" 200 4123 "https://example.com/" "curl/7.88.1"',
    "syslog": '<165>1 2026-11-26T06:40:01.003Z host.example.com api 4242 REQ [req@1 id="7" ms="12"] request served',
    "klog": 'I1126 06:40:01.525108       1 controller_utils.go:116] "Pod status updated" pod="kube-system/kubedns" status="ready"',
    "logfmt": 'time=2026-11-26T06:40:01.5Z level=info msg="request served" method=GET path=/api status=200 duration_ms=12.5',
    "json": '{"time":"2026-11-26T06:40:01.5Z","level":"info","msg":"request served","method":"GET","status":200,"durationMs":12.5}',
    GROK: '2001:db8::7 - - [26/Nov/2026:06:40:01 +0000] "GET /api/v1/items/7?page=2 HTTP/1.1" 200 4123 "https://example.com/" "curl/7.88.1"',
    "nginx,json,logfmt": 'time=2026-11-26T06:40:01.5Z level=info msg="request served" method=GET path=/api status=200',
}


def format_rates(n: int = 50_000) -> dict[str, float]:
    """In-process conversion (parse + JSON encode) per CPU-second, one format at a time."""
    from podkit.adapters.logformat import Converter

    from podkit.logparse.parsers import create
    from podkit.logparse.timeparse import Clock

    out = {}
    for fmt, line in FORMAT_SAMPLES.items():
        conv = Converter(create(fmt, Clock()), fmt)
        texts = [line] * 1000
        c0 = time.process_time()
        for _ in range(n // 1000):
            batch = conv.convert(texts, "/logs/app.log", time.time_ns())
        assert not batch.records()[0].get("parse_error"), fmt
        out[fmt] = n / (time.process_time() - c0)
    return out


def version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=10)
        return (res.stdout or res.stderr).decode().splitlines()[0].strip()
    except (OSError, IndexError):
        return "unavailable"


def main() -> None:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        src = tmp / "access.log"
        size = generate(src, LINES)
        print(f"input: {LINES} nginx combined lines, {size / 1e6:.1f} MB; best of {TRIALS}; "
              f"pinned to core {CORE if TASKSET else '(taskset missing: not pinned)'}")  # fmt: skip
        print(f"python {sys.version.split()[0]}; {version(['/usr/sbin/rsyslogd', '-v'])}")
        results = {
            "adapter --stdin": best(run_stdin, src, tmp),
            "adapter --stdin " + GROK: best(run_stdin_grok, src, tmp),
            "adapter --path": best(run_path, src, tmp),
            PASS: best(run_passthrough, src, tmp),
            RSYSLOG: best(run_rsyslog, src, tmp),
        }
        print(f"  {'':48s} {'wall (shared machine)':>24s} {'per CPU-second':>20s}")
        for k, r in results.items():
            if r is None:
                print(f"  {k:48s} {'n/a (peer missing)':>24s}")
                continue
            print(f"  {k:48s} {LINES / r[0]:>14,.0f} lines/s {LINES / r[1]:>12,.0f} lines/s")
        for mine in ("adapter --path", "adapter --stdin"):
            for peer in (PASS, RSYSLOG):
                a, p = results[mine], results[peer]
                if a and p:
                    print(f"  ratio {mine} / {peer}: wall {p[0] / a[0]:.2f}, CPU {p[1] / a[1]:.2f}")
        rates = format_rates()
        print("  in-process conversion per CPU-second (parse + encode, no I/O): " + ", ".join(
            f"{k} {v:,.0f}" for k, v in rates.items()))  # fmt: skip
        bar = 100_000
        worst = min(LINES / r[1] for k, r in results.items() if r and k.startswith("adapter"))
        verdict = "meets" if worst >= bar else "MISSES"
        print(f"  bar: {bar:,} lines per CPU-second on one core -> {verdict} ({worst:,.0f})")
        nginx, grok, peer = (
            results[k] for k in ("adapter --stdin", "adapter --stdin " + GROK, RSYSLOG)
        )
        if nginx and peer:
            verdict = "meets" if nginx[1] <= peer[1] else "MISSES"
            print(f"  bar: nginx combined per CPU-second >= rsyslog mmnormalize's -> {verdict} "
                  f"({LINES / nginx[1]:,.0f} vs {LINES / peer[1]:,.0f})")  # fmt: skip
        if grok:
            verdict = "meets" if LINES / grok[1] >= bar else "MISSES"
            print(f"  bar: {GROK} >= {bar:,} lines per CPU-second -> {verdict} ({LINES / grok[1]:,.0f})"
                  + (f"; rsyslog mmnormalize same run {LINES / peer[1]:,.0f}" if peer else ""))  # fmt: skip


if __name__ == "__main__":
    main()
