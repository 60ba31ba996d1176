"""gitsync --check-config (issue 23): beyond parsing, --root can be written or
created, the secret files git-sync's flags name can be read, --repo parses and
every `repos:` entry of --config parses; exit 2 listing every problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from podkit.sidecars.gitsync import GitSync

from podkit.runner import check_config


def check(
    argv: list[str], capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None
) -> tuple[int, list[str]]:
    code = check_config(GitSync, ["--check-config", *argv], env or {})
    err = capsys.readouterr().err
    return code, [line.split("error: ", 1)[1] for line in err.splitlines() if line]


def test_every_problem_is_listed_in_git_syncs_spellings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")  # a --root under it cannot be created, even by root
    missing = {
        flag: str(tmp_path / f"absent-{flag}")
        for flag in ("ssh-key-file", "github-app-private-key-file")
    }
    argv = [
        "--repo", "ext::sh -c touch% /tmp/pwned",
        "--root", str(tmp_path / "file" / "git"),
        "--ssh-key-file", missing["ssh-key-file"],
        "--github-app-private-key-file", missing["github-app-private-key-file"],
        "--github-app-application-id", "1",
        "--github-app-installation-id", "2",
    ]  # fmt: skip
    env = {
        "GITSYNC_PASSWORD_FILE": str(tmp_path / "no-password"),
    }
    code, lines = check(argv, capsys, env)
    assert code == 2
    assert "--repo: remote-helper transports (ext::) are refused" in lines
    for flag, path in missing.items():
        assert f"--{flag} {path}: no such file" in lines
    assert f"--password-file {tmp_path / 'no-password'}: no such file" in lines
    assert f"--root {tmp_path / 'file' / 'git'}: {tmp_path / 'file'} is not a directory" in lines
    assert len(lines) == len(set(lines)) == 5, "each problem once"


def test_verify_signatures_files_must_be_readable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signers, keyring = tmp_path / "allowed_signers", tmp_path / "keyring.gpg"
    argv = ["--repo", "https://git.example/x.git", "--root", str(tmp_path / "git"),
            "--verify-signatures", "--allowed-signers-file", str(signers),
            "--gpg-keyring-file", str(keyring)]  # fmt: skip
    code, lines = check(argv, capsys)
    assert code == 2
    assert f"--allowed-signers-file {signers}: no such file" in lines
    assert f"--gpg-keyring-file {keyring}: no such file" in lines
    signers.write_text("")
    keyring.write_text("")
    assert check(argv, capsys) == (0, [])


def test_a_root_that_cannot_be_created_alone_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")  # so the test means the same run as root
    root = tmp_path / "file" / "git"
    code, lines = check(["--repo", "https://git.example/x.git", "--root", str(root)], capsys)
    assert (code, lines) == (2, [f"--root {root}: {tmp_path / 'file'} is not a directory"])


def test_repos_entries_in_config_must_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gitsync.yaml"
    config.write_text(
        "repos:\n  - {name: a, repo: https://git.example/a.git}\n  - {name: b, repo: 'ext::sh'}\n"
    )
    code, lines = check(["--root", str(tmp_path / "git"), "--config", str(config)], capsys)
    assert code == 2
    assert lines == [f"--config {config}: repos[1] (b): --repo: remote-helper transports "
                     "(ext::) are refused"]  # fmt: skip
    config.write_text("repos:\n  - {name: a, repo: https://git.example/a.git, depht: 2}\n")
    code, lines = check(["--root", str(tmp_path / "git"), "--config", str(config)], capsys)
    assert code == 2 and "unknown setting 'depht'" in lines[0]


def test_neither_repo_nor_repos_and_a_url_that_does_not_parse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = check(["--root", str(tmp_path)], capsys)
    assert (code, lines) == (2, ["--repo is required [env PODKIT_REPO] (or repos: in --config)"])
    code, lines = check(["--repo", "https://[::1/x.git", "--root", str(tmp_path)], capsys)
    assert code == 2 and lines[0].startswith("--repo: not a URL")
    code, lines = check(["--repo", "gopher://h/x", "--root", str(tmp_path)], capsys)
    assert lines == ["--repo: unsupported scheme 'gopher'"]


def test_a_good_configuration_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "ssh"
    key.write_text("key")
    argv = ["--repo", "git@github.com:org/x.git", "--root", str(tmp_path / "new" / "git"),
            "--ssh-key-file", str(key)]  # fmt: skip
    assert check(argv, capsys) == (0, [])


def test_the_examples_repos_file_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """examples/gitsync-repos: the ConfigMap's file is what --config reads in the pod."""
    import yaml

    pod = Path(__file__).resolve().parents[2] / "examples" / "gitsync-repos" / "pod.yaml"
    configmap = next(d for d in yaml.safe_load_all(pod.read_text()) if d["kind"] == "ConfigMap")
    config = tmp_path / "repos.yaml"
    config.write_text(configmap["data"]["repos.yaml"])
    argv = ["--config", str(config), "--root", str(tmp_path / "git")]
    assert check(argv, capsys) == (0, [])
