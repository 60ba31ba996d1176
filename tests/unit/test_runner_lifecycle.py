"""The runner's life cycle in process: signals, the deadline, the records an
operator reads (podkit/runner.py's docstring, docs/custom-sidecar.md).

The program signals its own process, so the runner's real handlers run;
`_hard_exit` (os._exit) is replaced by a recorder, so the exits that would end
the process are asserted instead of ending pytest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from podkit import InitTask, Sidecar, UsageError, __version__, option
from podkit import runner as runner_mod
from podkit.runner import run


@pytest.fixture(autouse=True)
def keep_pytest_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def hard_exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    codes: list[int] = []
    monkeypatch.setattr(runner_mod, "_hard_exit", codes.append)
    return codes


def records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def record(recs: list[dict[str, Any]], message: str) -> dict[str, Any]:
    found = [r for r in recs if r["message"] == message]
    assert len(found) == 1, (message, [r["message"] for r in recs])
    return found[0]


class Signalled(Sidecar):
    """Sends itself --signal once running; --twice sends it again from cleanup()."""

    name = "signalled"
    sig_name: str = option("SIGTERM")
    twice: bool = option(False)
    token: str = option(None, secret=True)

    async def run(self) -> None:
        os.kill(os.getpid(), signal.Signals[self.sig_name])
        while not self.stopping:
            await self.sleep(0.01)

    async def cleanup(self) -> None:
        if self.twice:
            os.kill(os.getpid(), signal.Signals[self.sig_name])


def test_sigterm_stops_a_sidecar_with_0_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    program: list[Signalled] = []

    class Kept(Signalled):
        async def setup(self) -> None:
            program.append(self)

    assert run(Kept, ["--admin-addr", "127.0.0.1:0", "--token", "Tq8-tok"], env={}) == 0
    assert program[0].stop_signal == signal.SIGTERM
    recs = records(capsys)
    start = record(recs, "starting")
    assert start["version"] == __version__ and start["settings"]["token"] == "***"
    listening = record(recs, "admin server listening")
    assert listening["addr"] == f"127.0.0.1:{program[0].admin_port}"
    assert program[0].admin_port and program[0].admin_port > 0
    assert record(recs, "stopping")["signal"] == "SIGTERM"
    assert recs[-1]["message"] == "stopped" and recs[-1]["exit_code"] == 0


def test_admin_on_all_interfaces_is_logged_as_such(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Signalled, ["--admin-addr", ":0"], env={}) == 0
    assert record(records(capsys), "admin server listening")["addr"].startswith("0.0.0.0:")


def test_sigint_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Signalled, ["--admin-addr", "off", "--sig-name", "SIGINT"], env={}) == 0
    assert record(records(capsys), "stopping")["signal"] == "SIGINT"


def test_a_second_signal_exits_at_once_with_128_plus_it(
    capsys: pytest.CaptureFixture[str], hard_exits: list[int]
) -> None:
    run(Signalled, ["--admin-addr", "off", "--twice", "--sig-name", "SIGINT"], env={})
    assert hard_exits == [128 + signal.SIGINT]
    assert record(records(capsys), "second signal; exiting at once")["signal"] == "SIGINT"


class Interrupted(InitTask):
    name = "interrupted"
    sig_name: str = option("SIGTERM")

    async def run(self) -> int:
        os.kill(os.getpid(), signal.Signals[self.sig_name])
        await asyncio.sleep(60)
        return 0


@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_an_interrupted_init_task_exits_128_plus_the_signal(sig: str, code: int) -> None:
    assert run(Interrupted, ["--sig-name", sig], env={}) == code


class Stuck(Sidecar):
    """cleanup() outlives --shutdown-timeout (it ends once the deadline fired)."""

    name = "stuck"
    fired = threading.Event()

    async def run(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        while not self.stopping:
            await self.sleep(0.01)

    async def cleanup(self) -> None:
        while not self.fired.is_set():
            await asyncio.sleep(0.01)


def test_the_shutdown_deadline_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    codes: list[int] = []

    def hard_exit(code: int) -> None:
        codes.append(code)
        Stuck.fired.set()

    monkeypatch.setattr(runner_mod, "_hard_exit", hard_exit)
    run(Stuck, ["--admin-addr", "off", "--shutdown-timeout", "200ms"], env={})
    assert codes == [1]
    assert record(records(capsys), "shutdown deadline exceeded; exiting")["shutdown_timeout"] == 0.2


class Ends(Sidecar):
    name = "ends"
    code: int = option(-1)
    fail: str = option("")

    async def run(self) -> None:
        if self.fail == "usage":
            raise UsageError("--thing: not like that")
        if self.fail == "error":
            raise RuntimeError("boom from run")
        if self.code >= 0:
            self.exit_code = self.code


def test_run_returning_unasked_warns_and_exit_code_is_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    warning = (
        "run() returned while no stop was asked; a native sidecar "
        "would be restarted (set exit_code when finishing on purpose)"
    )
    assert run(Ends, ["--admin-addr", "off"], env={}) == 0
    assert record(records(capsys), warning)["level"] == "warning"
    assert run(Ends, ["--admin-addr", "off", "--code", "3"], env={}) == 3
    assert not [r for r in records(capsys) if r["message"] == warning]


def test_exceptions_from_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Ends, ["--admin-addr", "off", "--fail", "usage"], env={}) == 2
    assert "podkit ends: error: --thing: not like that\n" in capsys.readouterr().err
    assert run(Ends, ["--admin-addr", "off", "--fail", "error"], env={}) == 1
    failed = record(records(capsys), "program failed")
    assert "boom from run" in failed["exc_info"]


def test_cleanup_failure_is_logged_with_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    class Bad(Ends):
        async def cleanup(self) -> None:
            raise RuntimeError("boom from cleanup")

    assert run(Bad, ["--admin-addr", "off", "--code", "0"], env={}) == 1
    assert "boom from cleanup" in record(records(capsys), "cleanup failed")["exc_info"]


def test_admin_port_in_use_is_logged_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        assert run(Ends, ["--admin-addr", addr, "--code", "0"], env={}) == 1
    rec = record(records(capsys), "cannot start admin server")
    assert rec["addr"] == addr and "in use" in rec["error"]
    assert rec["hint"] == (
        f"another process listens on {addr}: give this one "
        "--admin-addr HOST:PORT (or its class a default_admin_addr of its own)"
    )


def test_sighup_reaches_on_sighup() -> None:
    class Hup(Sidecar):
        name = "hup"
        got = 0

        def on_sighup(self) -> None:
            Hup.got += 1
            self.request_stop()

        async def run(self) -> None:
            os.kill(os.getpid(), signal.SIGHUP)
            while not self.stopping:
                await self.sleep(0.01)

    assert run(Hup, ["--admin-addr", "off"], env={}) == 0
    assert Hup.got == 1


def test_admin_on_ipv6_loopback_is_logged_with_its_brackets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(Signalled, ["--admin-addr", "[::1]:0"], env={}) == 0
    assert record(records(capsys), "admin server listening")["addr"].startswith("[::1]:")


def test_a_sidecars_run_is_not_cancelled_by_the_signal() -> None:
    """SIGTERM asks a sidecar to stop; its run() finishes its own way (a last flush)."""
    finished: list[bool] = []

    class Flushes(Signalled):
        async def run(self) -> None:
            await super().run()
            await asyncio.sleep(0.02)  # the last flush, after `stopping` turned true
            finished.append(True)

    assert run(Flushes, ["--admin-addr", "off"], env={}) == 0
    assert finished == [True]
