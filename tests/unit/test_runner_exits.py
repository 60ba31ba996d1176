"""The runner's documented exits, in process (podkit/runner.py's docstring,
docs/custom-sidecar.md and docs/waitfor.md): each a failure path that a
changed line in the runner must not turn into a quiet 0.

In process so that `make mutate` sees them; the exits that end the process
with os._exit (a second signal, the shutdown deadline) are in
tests/integration/test_runner_signals.py.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from podkit import InitTask, Sidecar, option
from podkit.runner import run


@pytest.fixture(autouse=True)
def keep_pytest_logging() -> Iterator[None]:
    """run() installs podkit's log handlers on the root logger; put pytest's back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Once(Sidecar):
    """Finishes on its own with exit_code 0; its cleanup() can raise."""

    name = "once"
    cleanup_raises: bool = option(False)
    marker: str = option(None)

    async def run(self) -> None:
        if self.marker:
            Path(self.marker).write_text("ran\n")
        self.exit_code = 0

    async def cleanup(self) -> None:
        if self.cleanup_raises:
            raise RuntimeError("boom from cleanup")


class Then(InitTask):
    """Succeeds, then has the runner exec the command after `--`."""

    name = "then"
    code: int = option(0)
    accepts_command = True

    async def run(self) -> int:
        await asyncio.sleep(0)
        self.exec_after = self.command or None
        return self.code


def test_a_clean_run_exits_0_and_an_exception_in_cleanup_exits_1(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert run(Once, ["--admin-addr", "off", "--marker", str(marker)], env={}) == 0
    assert marker.read_text() == "ran\n"
    assert run(Once, ["--admin-addr", "off", "--cleanup-raises"], env={}) == 1


def test_admin_port_in_use_exits_1_before_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = run(Once, ["--admin-addr", f"127.0.0.1:{port}", "--marker", str(marker)], env={})
    assert code == 1
    assert not marker.exists()  # run() never started


def test_exec_of_a_missing_command_exits_127(tmp_path: Path) -> None:
    assert run(Then, ["--", str(tmp_path / "no-such-command")], env={}) == 127
    assert run(Then, ["--", "podkit-no-such-command-on-path"], env={}) == 127


def test_exec_of_a_file_that_cannot_be_run_exits_126(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    assert run(Then, ["--", str(script)], env={}) == 126
    assert run(Then, ["--", str(tmp_path)], env={}) == 126  # a directory


def test_no_exec_after_a_failure_the_code_is_the_tasks(tmp_path: Path) -> None:
    """exec happens only after a zero exit: a failing task keeps its own code."""
    assert run(Then, ["--code", "3", "--", str(tmp_path / "no-such-command")], env={}) == 3


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Once, ["--admin-addr", "off", "--no-such-flag"], env={}) == 2
    assert run(Then, ["--code", "seven"], env={}) == 2
    assert "error" in capsys.readouterr().err
