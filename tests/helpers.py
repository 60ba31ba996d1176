"""Shared test helpers: free ports, required tools, and a podkit program as a subprocess."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
_serial = itertools.count()
REQUIRE_ALL = os.environ.get("PODKIT_REQUIRE_ALL") == "1"


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def missing(reason: str) -> None:
    """Skip on a laptop; fail in CI (PODKIT_REQUIRE_ALL=1), where every tool must be present."""
    if REQUIRE_ALL:
        pytest.fail(f"required for this test but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def need(tool: str, *extra_dirs: str) -> str:
    """The path of an external binary, or skip/fail the test when it is missing."""
    path = shutil.which(
        tool,
        path=os.pathsep.join(
            [
                *extra_dirs,
                os.environ.get("PATH", ""),
                "/usr/sbin",
                "/sbin",
                "/usr/lib/postgresql/15/bin",
            ]
        ),
    )
    if path is None:
        missing(f"{tool} not installed (see .ci/run for the package)")
    assert path is not None
    return path


def wait_until(
    pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    def up() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(up, timeout, what=f"{host}:{port} to accept connections")


def http(
    url: str,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ProgramProcess:
    """A podkit program run as a real subprocess, logs captured to a file.

    `args` follow the program name: ProgramProcess("logship", ["--path", ...]).
    An admin port is chosen unless the args set --admin-addr.
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
        if isinstance(program, str):
            self.cmd = [sys.executable, "-m", "podkit", program, *self.args]
        else:
            self.cmd = [*program, *self.args]
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

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
        return http(self.url(path), **kw)

    def wait_ready(self, timeout: float = 15.0) -> ProgramProcess:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"program exited {self.proc.returncode}:\n{self.stderr()}")
            try:
                return self.get("/readyz", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, 0.02, what="/readyz")
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
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
        def found() -> dict[str, Any] | None:
            for rec in self.records():
                if rec.get("message") == message and all(
                    rec.get(k) == v for k, v in fields.items()
                ):
                    return rec
            return None

        return wait_until(found, timeout, what=f"log record {message!r}")  # type: ignore[no-any-return]


def run_program(
    program: str,
    args: Sequence[str],
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run `podkit <program> args` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "podkit", program, *args],
        capture_output=True,
        timeout=timeout,
        input=input,
        env={**os.environ, **(env or {})},
    )
