"""logship: ship a 1,000,000-line, 128 MB file; lines per CPU second next to rsyslog.

  logship   podkit logship --path FILE --sink http://127.0.0.1:PORT/ (NDJSON
            batches to a local receiver that counts lines; the receiver runs in
            this process, so its CPU is not logship's)
  rsyslog   rsyslogd (Debian) imfile -> omfile with a JSON template, reading
            the same file in the same run (rsyslog has no plain HTTP output in
            Debian's package, so it gets the cheaper local file output)

Figures: wall seconds from start to the last line delivered, CPU seconds of the
shipper (utime+stime, all threads; logship's interpreter start-up excluded,
measured at /readyz), lines per CPU second, and peak RSS (VmHWM). Each is the
best of TRIALS runs. Bar (issues 4, 17): logship >= 2x rsyslog's lines per CPU
second with one sink, RSS <= 60 MB with one sink and <= 80 MB with three.

Also measured (issue 17), lines per CPU second counting each line once however
many sinks get it: two and three HTTP sinks (each sink reads the file itself),
and one OTLP/HTTP sink (protobuf; the receiver decodes it to count records).
BENCH_MODES picks them (default: one,two,three,otlp).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from common import proc_cpu, wait_for_lines  # bench/ is on sys.path when run as a script

LINES = 1_000_000
LINE_BYTES = 128
TRIALS = int(os.environ.get("BENCH_TRIALS", "2"))
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def make_file(path: Path) -> None:
    with open(path, "w") as f:
        for i in range(LINES):
            head = (
                f"2026-11-26T06:00:{i % 60:02d}.{i % 1000000:06d}Z INFO api[{i % 97}] "
                f"request id={i:08d} path=/api/v1/items/{i % 5000} status=200 "
            )
            f.write(head.ljust(LINE_BYTES - 1, "x") + "\n")


def _hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Receiver:
    """NDJSON receiver counting lines (no parsing: the shipper is what we measure)."""

    def __init__(self) -> None:
        self.lines = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            if request.path == "/v1/logs":
                from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
                    ExportLogsServiceRequest,
                )

                req = ExportLogsServiceRequest.FromString(body)
                self.lines += sum(
                    len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs
                )
            else:
                self.lines += body.count(b"\n")
            return web.Response(text="ok")

        async def start() -> None:
            app = web.Application(client_max_size=64 * 1024**2)
            app.router.add_post("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()


#: Mode -> the sink URLs (PORT replaced by the receiver's).
MODES = {
    "one": ["http://127.0.0.1:PORT/a"],
    "two": ["http://127.0.0.1:PORT/a", "http://127.0.0.1:PORT/b"],
    "three": ["http://127.0.0.1:PORT/a", "http://127.0.0.1:PORT/b", "http://127.0.0.1:PORT/c"],
    "otlp": ["otlp+http://127.0.0.1:PORT/v1/logs"],
}
LABELS = {
    "one": "logship -> HTTP NDJSON",
    "two": "logship -> 2 HTTP sinks",
    "three": "logship -> 3 HTTP sinks",
    "otlp": "logship -> OTLP protobuf",
}


def run_logship(src: Path, tmp: Path, rcv: Receiver, mode: str = "one") -> tuple[float, float, int]:
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    rcv.lines = 0
    admin = 19411
    sinks = [a for u in MODES[mode] for a in ("--sink", u.replace("PORT", str(rcv.port)))]
    want = LINES * len(MODES[mode])
    t0 = time.time()
    proc = subprocess.Popen(
        [PY, "-m", "podkit", "logship", "--path", str(src), *sinks, "--state-dir", str(state),
         "--admin-addr", f"127.0.0.1:{admin}", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        start_cpu = None
        deadline = time.monotonic() + 600
        while rcv.lines < want:
            if start_cpu is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1):
                        start_cpu = proc_cpu(proc.pid)
                except OSError:
                    pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"logship did not finish: {proc.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
            time.sleep(0.005)
        done, cpu, rss = time.time(), proc_cpu(proc.pid), _hwm(proc.pid)
        assert rcv.lines == want, rcv.lines
    finally:
        proc.terminate()
        proc.wait(30)
    return done - t0, cpu - (start_cpu or 0.0), rss


def run_rsyslog(src: Path, tmp: Path) -> tuple[float, float, int] | None:
    rsyslogd = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin")
    if rsyslogd is None:
        return None
    d = tmp / "rsyslog"
    shutil.rmtree(d, ignore_errors=True)
    (d / "work").mkdir(parents=True)
    out = d / "out.json"
    (d / "rsyslog.conf").write_text(
        f"""
global(workDirectory="{d / "work"}" maxMessageSize="64k")
module(load="imfile" mode="inotify")
template(name="json" type="list") {{
  constant(value="{{\\"time\\":\\"")
  property(name="timegenerated" dateFormat="rfc3339")
  constant(value="\\",\\"message\\":\\"")
  property(name="msg" format="json")
  constant(value="\\",\\"file\\":\\"")
  property(name="$!metadata!filename" format="json")
  constant(value="\\"}}\\n")
}}
input(type="imfile" file="{src}" tag="app" ruleset="r" freshStartTail="off" addMetadata="on")
ruleset(name="r") {{
  action(type="omfile" file="{out}" template="json")
}}
"""
    )
    t0 = time.time()
    proc = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_lines(out, LINES, proc)
        done, cpu, rss = time.time(), proc_cpu(proc.pid), _hwm(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    return done - t0, cpu, rss


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-logship-") as t:
        tmp = Path(t)
        src = tmp / "app.log"
        make_file(src)
        assert src.stat().st_size == LINES * LINE_BYTES
        rcv = Receiver()
        modes = os.environ.get("BENCH_MODES", "one,two,three,otlp").split(",")
        # Interleaved with the peer's runs, so both see the same machine load.
        ours: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
        peer = []
        for _ in range(TRIALS):
            for m in modes:
                ours[m].append(run_logship(src, tmp, rcv, m))
            peer.append(run_rsyslog(src, tmp))
    rsv = subprocess.run(["/usr/sbin/rsyslogd", "-v"], capture_output=True, text=True)
    rsv_version = rsv.stdout.splitlines()[0] if rsv.stdout else "rsyslog ?"
    print(f"python {sys.version.split()[0]}; {rsv_version}")
    print(f"{LINES} lines, {LINES * LINE_BYTES / 1e6:.0f} MB, best of {TRIALS}")
    print(f"{'':26}{'wall s':>9}{'lines/s':>10}{'CPU s':>9}{'lines/CPU s':>14}{'peak RSS MiB':>14}")
    for m, runs in ours.items():
        wall, cpu, rss = min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)
        row = f"{wall:9.2f}{LINES / wall:10,.0f}{cpu:9.2f}{LINES / cpu:14,.0f}{rss / 2**20:14.1f}"
        print(f"{LABELS[m]:26}{row}")
    if any(p is None for p in peer):
        print("rsyslog: not installed; no ratio")
        return 0
    pw = min(p[0] for p in peer if p)
    pc = min(p[1] for p in peer if p)
    pr = max(p[2] for p in peer if p)
    plps = LINES / pc
    row = f"{pw:9.2f}{LINES / pw:10,.0f}{pc:9.2f}{plps:14,.0f}{pr / 2**20:14.1f}"
    print(f"{'rsyslog imfile -> omfile':26}{row}")
    for m, runs in ours.items():
        ratio = LINES / min(r[1] for r in runs) / plps
        print(f"ratio lines/CPU s: {LABELS[m]} / rsyslog = {ratio:.2f}x")
    print("bars: one sink >= 2x rsyslog; RSS <= 60 MB one sink, <= 80 MB three")
    return 0


if __name__ == "__main__":
    sys.exit(main())
