"""--check-config of reloader, waitfor, kubefiles and logformat: beyond parsing,
the paths they need exist, what they write is writable, the commands they run
are found; exit 2 listing every problem, 0 when all is well (issue 23)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from podkit.adapters.logformat import LogFormat
from podkit.initkits.waitfor import WaitFor
from podkit.sidecars.kubefiles import KubeFiles
from podkit.sidecars.reloader import Reloader

from podkit.program import Program
from podkit.runner import check_config


def check(
    cls: type[Program], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[str]]:
    code = check_config(cls, ["--check-config", *argv], {})
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line]


def test_reloader_lists_a_missing_watch_a_missing_template_and_an_unwritable_dest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    argv = [
        "--watch", str(tmp_path / "not-mounted"),
        "--render", f"{tmp_path / 'absent.tmpl'}:{ro / 'out.conf'}",
        "--render-files-from", str(tmp_path / "no-dir"),
        "--webhook-url", "http://127.0.0.1:1/-/reload",
        "--bearer-token-file", str(tmp_path / "no-token"),
    ]  # fmt: skip
    code, lines = check(Reloader, argv, capsys)
    assert code == 2
    joined = "\n".join(lines)
    assert "--watch " + str(tmp_path / "not-mounted") + ": does not exist" in joined
    assert "--render " + str(tmp_path / "absent.tmpl") + ": does not exist" in joined
    assert "--render-files-from " + str(tmp_path / "no-dir") in joined
    assert "--bearer-token-file " + str(tmp_path / "no-token") + ": no such file" in joined
    if os.geteuid() != 0:  # root writes anywhere
        assert f"--render {ro}: not writable" in joined
    ro.chmod(0o755)


def test_reloader_passes_a_good_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "t.tmpl").write_text("x")
    argv = ["--watch", str(tmp_path), "--render", f"{tmp_path / 't.tmpl'}:{tmp_path / 'o'}",
            "--process", "nginx"]  # fmt: skip
    assert check(Reloader, argv, capsys) == (0, [])


def test_waitfor_lists_commands_that_are_not_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["exec:///no/such/check", "tcp://127.0.0.1:1", "--", "no-such-app-xyz", "--serve"]
    code, lines = check(WaitFor, argv, capsys)
    assert code == 2 and len(lines) == 2
    assert "target 'exec:/no/such/check': command '/no/such/check' not found" in lines[0]
    assert "the command after --: command 'no-such-app-xyz' not found" in lines[1]
    assert check(WaitFor, ["exec:///bin/true", "--", "true"], capsys) == (0, [])


def test_kubefiles_lists_a_folder_it_cannot_create(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "namespace").write_text("own")
    file_in_the_way = tmp_path / "file"
    file_in_the_way.write_text("")
    argv = ["--label", "a=b", "--folder", str(file_in_the_way / "sub"),
            "--server", "http://127.0.0.1:1", "--service-account-dir", str(sa)]  # fmt: skip
    code, lines = check(KubeFiles, argv, capsys)
    assert code == 2 and lines == [
        f"podkit kubefiles: error: --folder {file_in_the_way / 'sub'}: "
        f"{file_in_the_way} is not a directory"
    ]
    argv[3] = str(tmp_path / "new" / "folder")  # created at start: fine
    assert check(KubeFiles, argv, capsys) == (0, [])


def test_logformat_lists_an_unmounted_log_directory_and_state_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    argv = ["--format", "nginx",
            "--path", str(tmp_path / "logs" / "*.log"),
            "--path", str(tmp_path / "other" / "**" / "app.log"),
            "--state-dir", str(blocker / "state"),
            "--output", f"file://{blocker}/out.json"]  # fmt: skip
    code, lines = check(LogFormat, argv, capsys)
    assert code == 2
    joined = "\n".join(lines)
    assert f"--path {tmp_path / 'logs'}: does not exist (is its volume mounted?)" in joined
    assert f"--path {tmp_path / 'other'}: does not exist" in joined
    assert f"--state-dir {blocker / 'state'}: {blocker} is not a directory" in joined
    assert f"--output {blocker}: {blocker} is not a directory" in joined
    (tmp_path / "logs").mkdir()
    ok = ["--format", "nginx", "--path", str(tmp_path / "logs" / "*.log"),
          "--state-dir", str(tmp_path / "state")]  # fmt: skip
    assert check(LogFormat, ok, capsys) == (0, [])
