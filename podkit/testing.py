"""podkit.testing: test a program the way it runs, as kopf.testing does for kopf.

A program (podkit's own or a custom one) runs as a real subprocess with its
own admin server on a free loopback port; the harness waits for `/readyz`,
reads its JSON log records, scrapes and parses `/metrics`, sends signals and
returns the exit code::

    from podkit.testing import ProgramProcess

    def test_heartbeat(tmp_path):
        with ProgramProcess("heartbeat", ["--path", str(tmp_path / "beat")]) as p:
            p.wait_ready()
            p.wait_log("ready")
            assert p.metric("podkit_build_info") == 1
            p.signal()                       # SIGTERM
            assert p.wait() == 0

`program` is a name installed in the `podkit.programs` entry-point group
(`podkit <name>`), a `module:Class` reference (run with `Class.main()`; a
custom sidecar that is not installed), or a whole argv list.

The rule for assertions: `metric()` fails when no series matches, unless the
test says that absence is expected (`missing=0.0`); a helper that answers a
default for a series that is not there lets a renamed metric pass silently.
Waits are on the event (`wait_until`, `wait_log`), never a guessed sleep; that
something does *not* happen is shown by a later event that must follow it or,
where none can, by `stays(pred, seconds)` sampling the whole window.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal as _signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ProgramProcess",
    "Sample",
    "free_port",
    "http",
    "parse_metrics",
    "run_program",
    "stays",
    "wait_until",
]

_serial = itertools.count()


def _port_window() -> range:
    """This process's share of the ports the kernel never picks by itself.

    A port from `bind(0)` comes from the ephemeral range, which every outgoing
    connection on the machine also draws from: between the test learning the
    port and its server binding it, another test's client could take it as its
    local port (a CI run failed so, EADDRINUSE). Ports below the ephemeral
    range are only ever bound on purpose. Each pytest-xdist worker gets its own
    slice, so two workers never hand out the same port either.
    """
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    if lo - 10000 >= 4096:
        start, stop = 10000, lo
    elif 65535 - hi >= 4096:
        start, stop = hi + 1, 65536
    else:  # no room outside the ephemeral range: share it, as bind(0) would
        start, stop = 1024, 65536
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = (stop - start) // max(count, 1)
    return range(start + index * size, start + (index + 1) * size)


_ports: Iterator[int] | None = None


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on host and that no outgoing connection will take.

    Ports come round-robin from this process's window (see `_port_window`),
    starting at a random place so that a rerun does not meet the last run's
    TIME_WAIT sockets; each is checked by binding it.
    """
    global _ports
    if _ports is None:
        window = _port_window()
        first = random.randrange(len(window))
        _ports = itertools.cycle([*window[first:], *window[:first]])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(2000):
        port = next(_ports)
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in {_port_window()}")


def wait_until(
    pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll pred until it returns something true (returned), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def stays(pred: Callable[[], Any], seconds: float, interval: float = 0.02) -> bool:
    """True if pred() holds at every look for `seconds`; False at the first look it fails.

    For a test that something does *not* happen and no later event can be waited
    for instead: it samples the whole window, where a sleep followed by one look
    sees a single instant. Prefer a sentinel (an event that must follow the one
    that must not happen) when there is one: it needs no window at all.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not pred():
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(interval)


def http(
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; an HTTP error status is an answer, not a raise."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


Sample = tuple[str, dict[str, str], float]


def parse_metrics(text: str) -> list[Sample]:
    """(name, labels, value) of every sample of a Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _argv(program: str | Sequence[str]) -> list[str]:
    if not isinstance(program, str):
        return list(program)
    if ":" in program:  # module:Class, a program that is not installed
        module, _, cls = program.partition(":")
        return [sys.executable, "-c", f"from {module} import {cls} as P; P.main()"]
    return [sys.executable, "-m", "podkit", program]


def run_program(
    program: str | Sequence[str],
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program to completion (an init task, `--help`, a usage error)."""
    return subprocess.run(
        [*_argv(program), *args],
        capture_output=True,
        timeout=timeout,
        input=input,
        env={**os.environ, **(env or {})},
    )


class ProgramProcess:
    """A program run as a real subprocess, stdout and stderr captured to files.

    An admin port on loopback is chosen unless `args` set --admin-addr or
    `admin` is False. Use it as a context manager: leaving it stops the
    program (SIGTERM, then SIGKILL after `stop()`'s timeout).
    """

    def __init__(
        self,
        program: str | Sequence[str],
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        tmp: Path | None = None,
        admin: bool = True,
        cwd: str | None = None,
    ) -> None:
        self.args = list(args)
        self.admin_port: int | None = None
        if admin and not any(a.startswith("--admin-addr") for a in self.args):
            self.admin_port = free_port()
            self.args = ["--admin-addr", f"127.0.0.1:{self.admin_port}", *self.args]
        self.cmd = [*_argv(program), *self.args]
        base = tmp or Path(os.environ.get("TMPDIR", "/tmp"))
        # A unique name per instance: id() is reused after garbage collection,
        # and an appended-to log of an earlier run would leak its records here.
        stem = f"proc-{os.getpid()}-{next(_serial)}"
        self.log_path = base / f"{stem}.log"
        self.out_path = base / f"{stem}.out"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProgramProcess:
        self._err = open(self.log_path, "ab")
        self._out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._out,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
        )
        return self

    def __enter__(self) -> ProgramProcess:
        return self.start()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # A test that failed inside the block gets what the program said: the
        # failure may be the program's (it exited, its admin port refused), and
        # its log is the only witness. Printed to stderr, which pytest shows
        # with the failure.
        running = self.proc is not None and self.proc.poll() is None
        self.stop()
        if exc_type is not None and self.proc is not None:
            tail = self.stderr().splitlines()[-40:]
            state = "was running" if running else f"had exited {self.proc.returncode}"
            print(
                f"--- {' '.join(self.cmd[:4])} ... {state} when the test failed; "
                f"its last {len(tail)} log lines:",
                *tail,
                sep="\n",
                file=sys.stderr,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # -- the admin server -------------------------------------------------

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return http(self.url(path), **kw)

    def wait_ready(self, timeout: float = 15.0) -> ProgramProcess:
        """Until /readyz answers 200; fails at once, with the logs, if the program exits."""

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"program exited {self.proc.returncode}:\n{self.stderr()}")
            try:
                return self.get("/readyz", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, 0.02, what="/readyz")
        return self

    def status(self) -> dict[str, Any]:
        """The JSON status page, `/`."""
        code, _, body = self.get("/")
        assert code == 200, (code, body[:300])
        return dict(json.loads(body))

    def samples(self) -> list[Sample]:
        code, _, body = self.get("/metrics")
        assert code == 200, (code, body[:300])
        return parse_metrics(body.decode())

    def metric(self, name: str, missing: float | None = None, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`.

        No matching sample is a failure, unless `missing` says what absence
        means for this test (e.g. `missing=0.0` for a counter not yet created).
        """
        found = [v for n, lab, v in self.samples() if n == name and labels.items() <= lab.items()]
        if not found:
            if missing is not None:
                return missing
            raise AssertionError(f"no sample {name}{labels or ''} in /metrics")
        return sum(found)

    # -- the process ------------------------------------------------------

    def signal(self, sig: int = _signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit code, once the program has exited."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self._err, self._out):
            f.close()
        return self.proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    # -- what it wrote ----------------------------------------------------

    def stderr(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout(self) -> str:
        try:
            return self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (every stderr line must be one)."""
        return [json.loads(line) for line in self.stderr().splitlines() if line.strip()]

    def wait_log(self, message: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """The first record with this message (and these fields), waiting for it."""

        def found() -> dict[str, Any] | None:
            for rec in self.records():
                if rec.get("message") == message and all(
                    rec.get(k) == v for k, v in fields.items()
                ):
                    return rec
            return None

        return wait_until(found, timeout, what=f"log record {message!r}")  # type: ignore[no-any-return]
