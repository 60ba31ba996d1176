"""run()'s entry: argv and env defaults, --version, --help, validate(), the
event loop choice, log settings (podkit/runner.py, docs/custom-sidecar.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podkit import Sidecar, UsageError, __version__, option
from podkit.runner import configure, public_settings, run


@pytest.fixture(autouse=True)
def keep_pytest_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class Entry(Sidecar):
    """Entry: records what it ran with."""

    name = "entry"
    marker: str = option(None)
    refuse: bool = option(False)
    ports: list[int] = option([], repeat=True)
    loops: list[str] = []

    def validate(self) -> None:
        if self.refuse:
            raise UsageError("--refuse: refused by validate()")

    async def run(self) -> None:
        Entry.loops.append(type(asyncio.get_running_loop()).__module__)
        if self.marker:
            Path(self.marker).write_text("ran\n")
        self.exit_code = 0


class NoDoc(Sidecar):
    name = "nodoc"
    summary = "a summary, no docstring"


def test_argv_and_env_default_to_the_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setattr(sys, "argv", ["podkit-entry", "--admin-addr", "off"])
    monkeypatch.setenv("PODKIT_MARKER", str(marker))
    assert run(Entry) == 0
    assert marker.exists()
    monkeypatch.setenv("PODKIT_CHECK_CONFIG", "1")
    marker.unlink()
    assert run(Entry) == 0
    assert not marker.exists()  # checked only


def test_configure_reads_the_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODKIT_PORTS", "8080")
    program = configure(Entry, ["--admin-addr", "off"])
    assert program.ports == [8080]  # type: ignore[attr-defined]
    assert program.command == []


def test_version_and_help(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(Entry, ["--version"], env={}) == 0
    assert capsys.readouterr().out == f"podkit entry {__version__}\n"
    assert run(Entry, ["--help"], env={}) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: podkit entry") and "records what it ran with" in out
    assert run(NoDoc, ["--help"], env={}) == 0
    assert "a summary, no docstring" in capsys.readouterr().out


def test_validate_refuses_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Entry, ["--admin-addr", "off", "--refuse"], env={}) == 2
    assert capsys.readouterr().err == "podkit entry: error: --refuse: refused by validate()\n"


def test_check_config_names_flags_that_do_not_parse(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Entry, ["--check-config", "--ports", "x"], env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("podkit entry: error: ") and "--ports" in err
    assert run(Entry, ["--check-config=1=x"], env={}) == 2  # "1=x" is not "1": the flag is wrong
    assert run(Entry, ["--check-config", "--refuse"], env={"PODKIT_PORTS": "x"}) == 2
    assert "PODKIT_PORTS" in capsys.readouterr().err


def test_check_config_reports_a_missing_file_among_repeated_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class Many(Sidecar):
        name = "many"
        extra_file: list[str] = option([], kind="path", repeat=True)

    absent = tmp_path / "absent"
    args = ["--check-config", "--extra-file", __file__, "--extra-file", str(absent)]
    assert run(Many, args, env={}) == 2
    assert capsys.readouterr().err == f"podkit many: error: --extra-file {absent}: no such file\n"


def test_the_event_loop_is_uvloop_unless_asked_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    Entry.loops.clear()
    monkeypatch.delenv("PODKIT_EVENT_LOOP", raising=False)
    assert run(Entry, ["--admin-addr", "off"], env={}) == 0
    monkeypatch.setenv("PODKIT_EVENT_LOOP", "asyncio")
    assert run(Entry, ["--admin-addr", "off"], env={}) == 0
    monkeypatch.setenv("PODKIT_EVENT_LOOP", "uvloop")
    assert run(Entry, ["--admin-addr", "off"], env={}) == 0
    assert [m.split(".")[0] for m in Entry.loops] == ["uvloop", "asyncio", "uvloop"]


def test_without_uvloop_asyncio_unless_uvloop_was_demanded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    Entry.loops.clear()
    monkeypatch.delenv("PODKIT_EVENT_LOOP", raising=False)
    assert run(Entry, ["--admin-addr", "off"], env={}) == 0
    assert [m.split(".")[0] for m in Entry.loops] == ["asyncio"]
    monkeypatch.setenv("PODKIT_EVENT_LOOP", "uvloop")
    with pytest.raises(ImportError):
        run(Entry, ["--admin-addr", "off"], env={})


def test_log_settings_name_the_program_and_keep_the_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(Entry, ["--admin-addr", "off"], env={}) == 0
    recs = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert recs and all(r["program"] == "entry" for r in recs)
    assert run(Entry, ["--admin-addr", "off", "--log-level", "warning"], env={}) == 0
    assert capsys.readouterr().err == ""  # starting/stopped are info


def test_settings_of_a_list_that_holds_no_strings() -> None:
    program = configure(Entry, ["--admin-addr", "off", "--ports", "1", "--ports", "2"], env={})
    assert public_settings(program)["ports"] == [1, 2]


def test_version_after_the_double_dash_belongs_to_the_command(tmp_path: Path) -> None:
    from tests.unit.test_runner_exits import Then

    assert run(Then, ["--", str(tmp_path / "cmd"), "--version"], env={}) == 127


def test_an_explicit_env_is_the_only_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("PODKIT_MARKER", str(marker))
    assert run(Entry, ["--admin-addr", "off"], env={}) == 0
    assert not marker.exists()  # the process env was not read


def test_check_config_names_an_unknown_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(Entry, ["--check-config", "--no-such-flag"], env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("podkit entry: error: ") and "--no-such-flag" in err
