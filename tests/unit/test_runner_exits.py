"""The runner's documented exits, in process (podkit/runner.py's docstring,
docs/custom-sidecar.md and docs/waitfor.md): each a failure path that a
changed line in the runner must not turn into a quiet 0.

In process so that `make mutate` sees them; the exits that end the process
with os._exit (a second signal, the shutdown deadline) are in
tests/integration/test_runner_signals.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def records(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_a_failed_exec_says_which_command_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log is the only place that says why the container's app never started."""
    missing = str(tmp_path / "no-such-command")
    assert run(Then, ["--", missing], env={}) == 127
    recs = records(capsys.readouterr().err)
    assert {"message": "exec", "command": missing}.items() <= recs[-2].items()
    assert {"message": "command not found", "command": missing, "level": "error"}.items() <= (
        recs[-1].items()
    )
    assert run(Then, ["--", str(tmp_path)], env={}) == 126
    last = records(capsys.readouterr().err)[-1]
    assert last["message"] == "cannot exec command" and last["command"] == str(tmp_path)
    assert "Permission denied" in last["error"]


@pytest.mark.parametrize(
    "argv_env",
    [
        (["--check-config"], {}),
        (["--check-config=yes"], {}),
        (["--check-config=TRUE"], {}),
        (["--check-config= on "], {}),
        (["--check-config=1"], {}),
        (["--check-config=Y"], {}),
        ([], {"PODKIT_CHECK_CONFIG": "true"}),
        ([], {"PODKIT_CHECK_CONFIG": " Yes"}),
        ([], {"PODKIT_CHECK_CONFIG": "ON"}),
        ([], {"PODKIT_CHECK_CONFIG": "1"}),
        ([], {"PODKIT_CHECK_CONFIG": "y"}),
    ],
)
def test_check_config_only_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_env: tuple[list[str], dict[str, str]]
) -> None:
    argv, env = argv_env
    marker = tmp_path / "ran"
    assert run(Once, ["--admin-addr", "off", "--marker", str(marker), *argv], env=env) == 0
    assert not marker.exists()
    assert capsys.readouterr().out == "podkit once: configuration OK\n"


@pytest.mark.parametrize(
    "argv_env",
    [
        (["--check-config=0"], {}),
        (["--check-config=no"], {}),
        ([], {"PODKIT_CHECK_CONFIG": "false"}),
        ([], {"PODKIT_CHECK_CONFIG": ""}),
        ([], {"CHECK_CONFIG": "1", "PODKIT_CHECK-CONFIG": "1", "podkit_check_config": "1"}),
    ],
)
def test_check_config_off_runs_the_program(
    tmp_path: Path, argv_env: tuple[list[str], dict[str, str]]
) -> None:
    argv, env = argv_env
    marker = tmp_path / "ran"
    assert run(Once, ["--admin-addr", "off", "--marker", str(marker), *argv], env=env) == 0
    assert marker.exists()


def test_check_config_value_is_all_after_the_first_equals_sign() -> None:
    """`--check-config=x=1` is not "1": the flag's parser refuses it (usage, 2)."""
    assert run(Once, ["--admin-addr", "off", "--check-config=x=1"], env={}) == 2


def test_check_config_after_the_double_dash_belongs_to_the_command(tmp_path: Path) -> None:
    assert run(Then, ["--", str(tmp_path / "cmd"), "--check-config"], env={}) == 127


def test_check_config_reports_every_problem_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.yaml"
    unreadable = tmp_path / "secret"
    unreadable.write_text("x")
    unreadable.chmod(0o000)
    assert (
        run(
            Files,
            ["--check-config", "--token-file", str(unreadable), "--ca-file", str(absent)],
            env={},
        )
        == 2
    )
    err = capsys.readouterr().err.splitlines()
    if os.geteuid() == 0:  # root reads any file: only the absent one is a problem
        assert err == [f"podkit files: error: --ca-file {absent}: no such file"]
    else:
        assert err == [
            f"podkit files: error: --token-file {unreadable}: not readable",
            f"podkit files: error: --ca-file {absent}: no such file",
        ]
    assert run(Files, ["--check-config", "--ca-file", str(unreadable)], env={}) == 0
    assert run(Files, ["--check-config", "--config", str(absent)], env={}) == 2
    assert f"--config {absent}" in capsys.readouterr().err
    assert run(Files, ["--check-config", "--other", str(absent)], env={}) == 0  # not a *_file


class Files(Sidecar):
    """Options that name files to read."""

    name = "files"
    token_file: str = option(None, kind="path")
    ca_file: str = option(None, kind="path")
    other: str = option(None, kind="path")
    extra_file: list[str] = option([], kind="path", repeat=True)

    async def run(self) -> None:
        self.exit_code = 0
