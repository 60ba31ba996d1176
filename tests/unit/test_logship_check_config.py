"""logship --check-config: beyond parsing, the log volume is mounted, the state
directories can be written, the credential files can be read and every sink
URL has a known scheme; exit 2 listing every problem (issue 23)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from podkit.sidecars.logship import LogShip

from podkit.runner import check_config


@pytest.fixture(autouse=True)
def _no_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("POD_NAME", "POD_NAMESPACE", "NODE_NAME", "CONTAINER_NAME"):
        monkeypatch.delenv(var, raising=False)


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = check_config(LogShip, ["--check-config", *argv], {})
    err = capsys.readouterr().err
    return code, [line.removeprefix("podkit logship: error: ") for line in err.splitlines()]


def test_every_problem_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sinks:\n"
        f"  - {{name: b, url: 'http://127.0.0.1:1/x', path: '{tmp_path}/other/*.log',"
        f" password_file: '{tmp_path}/no-pass'}}\n"
    )
    argv = [
        "--config", str(cfg),
        "--path", str(tmp_path / "not-mounted" / "*.log"),
        "--sink", "http://127.0.0.1:1/a",
        "--state-dir", str(tmp_path / "file" / "state"),
        "--username", "u",
        "--password-file", str(tmp_path / "no-token"),
        "--header-file", f"X-Key={tmp_path / 'no-key'}",
    ]  # fmt: skip
    code, lines = check(argv, capsys)
    assert code == 2
    joined = "\n".join(lines)
    assert f"--path {tmp_path / 'not-mounted'}: does not exist" in joined
    assert f"--path {tmp_path / 'other'}: does not exist" in joined  # sink b's own path
    assert f"--state-dir {tmp_path / 'file' / 'state'}: " in joined
    assert f"--password-file {tmp_path / 'no-token'}: no such file" in joined
    assert f"--header-file {tmp_path / 'no-key'}: does not exist" in joined
    assert f"sinks: b: password_file {tmp_path / 'no-pass'}: does not exist" in joined
    assert len(lines) == len(set(lines)), lines  # each problem once


def test_unknown_sink_schemes_are_all_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--path", f"{tmp_path}/*.log", "--sink", "ftp://a/x", "--sink", "gopher://b/y"]
    code, lines = check(argv, capsys)
    assert code == 2
    joined = "\n".join(lines)
    assert "--sink ftp://a/x: unsupported scheme 'ftp'" in joined
    assert "--sink gopher://b/y: unsupported scheme 'gopher'" in joined


def test_a_good_configuration_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    argv = [
        "--path", f"{tmp_path}/*.log",
        "--sink", "http://127.0.0.1:1/a",
        "--state-dir", str(tmp_path / "state" / "new"),  # created at start
        "--bearer-token-file", str(token),
        "--header-file", f"X-Key={token}",
    ]  # fmt: skip
    assert check(argv, capsys) == (0, [])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_header_file_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    key.chmod(0)
    argv = ["--path", f"{tmp_path}/*.log", "--sink", "http://127.0.0.1:1/a",
            "--state-dir", str(tmp_path), "--header-file", f"X-Key={key}"]  # fmt: skip
    code, lines = check(argv, capsys)
    assert (code, lines) == (2, [f"--header-file {key}: not a readable file"])
