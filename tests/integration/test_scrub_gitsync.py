"""Credentials gitsync mints or fetches never reach its stderr, even when an error names them.

Each test runs the real program against a loopback server whose answer makes
gitsync's error text hold the credential, and reads what the process wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_program, wait_until
from tests.integration.test_gitsync import flags, gitsync, polled
from tests.unit.test_scrub_gitsync_auth import Answering, FakeGitHub, rsa_pem


def test_the_github_app_jwt_is_not_written_when_the_error_echoes_it(tmp_path: Path) -> None:
    key = rsa_pem(tmp_path / "app.pem")
    gh = FakeGitHub(echo=True)  # expires_at echoes the Authorization header
    with Answering(gh.answer) as api:
        p = run_program(
            "gitsync",
            flags(repo="https://git.invalid/o/r", root=tmp_path / "root", one_time=True,
                  admin_addr="off"),
            env={
                "GITSYNC_GITHUB_APP_APPLICATION_ID": "12345",
                "GITSYNC_GITHUB_APP_INSTALLATION_ID": "42",
                "GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
                "GITSYNC_GITHUB_BASE_URL": f"http://127.0.0.1:{api.port}/",
            },
        )  # fmt: skip
    stderr = p.stderr.decode()
    assert p.returncode != 0 and len(gh.jwts) >= 1
    assert "time data 'Bearer ***' does not match format" in stderr  # the error was written
    for app_jwt in gh.jwts:
        assert app_jwt not in stderr
        assert app_jwt.rpartition(".")[2] not in stderr  # not even its signature


def test_an_askpass_url_password_is_not_written_when_the_url_is_refused(tmp_path: Path) -> None:
    """urllib takes `user:password@` for part of the host: every ask failed with
    "nonnumeric port: '<password>@127.0.0.1:<port>'", written once a sync."""
    password = "Ask-URL-pa55w0rd-9913"
    p = run_program(
        "gitsync",
        flags(repo="http://127.0.0.1:1/o/r", root=tmp_path / "root", one_time=True,
              admin_addr="off"),
        env={"GITSYNC_ASKPASS_URL": f"http://alice:{password}@127.0.0.1/creds"},
    )  # fmt: skip
    stderr = p.stderr.decode()
    assert p.returncode != 0
    assert "--askpass-url: nonnumeric port: '***@127.0.0.1'" in stderr, stderr
    assert password not in stderr


def test_the_error_file_is_scrubbed_like_the_log(tmp_path: Path) -> None:
    """--error-file (git-sync's) holds the last sync error: the GitHub App JWT that
    an echoing answer put there was written whole, though the log had it as ***."""
    key = rsa_pem(tmp_path / "app.pem")
    gh = FakeGitHub(echo=True)
    root = tmp_path / "root"
    with Answering(gh.answer) as api:
        p = run_program(
            "gitsync",
            flags(repo="https://git.invalid/o/r", root=root, one_time=True, admin_addr="off",
                  error_file="error.json"),
            env={
                "GITSYNC_GITHUB_APP_APPLICATION_ID": "12345",
                "GITSYNC_GITHUB_APP_INSTALLATION_ID": "42",
                "GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE": str(key),
                "GITSYNC_GITHUB_BASE_URL": f"http://127.0.0.1:{api.port}/",
            },
        )  # fmt: skip
    assert p.returncode != 0 and gh.jwts
    record = json.loads((root / "error.json").read_text())
    assert record["error"] == (
        "GitHub App token: time data 'Bearer ***' does not match format '%Y-%m-%dT%H:%M:%SZ'"
    )
    assert gh.jwts[0] not in (root / "error.json").read_text()


def test_a_credential_url_password_is_not_written_when_its_file_goes(tmp_path: Path) -> None:
    """An error about a --credential entry names it by its URL, password and all."""
    password = "Cred-URL-pa55w0rd-4471"
    pw_file = tmp_path / "pw"
    pw_file.write_text("file-password\n")
    url = f"http://bob:{password}@127.0.0.1:1/"
    cred = json.dumps({"url": url, "username": "bob", "password-file": str(pw_file)})
    root = tmp_path / "root"
    error_file = root / "error.json"
    with gitsync(
        tmp_path,
        *flags(repo="http://127.0.0.1:1/o/r", root=root, period="100ms", error_file="error.json"),
        env={"GITSYNC_CREDENTIAL": f"[{cred}]"},
    ) as p:
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") >= 1, 15)
        pw_file.unlink()  # a Secret taken away: the next sync cannot read it
        # the log says one failure a 30 s; --error-file has each sync's error
        wait_until(lambda: "--credential" in error_file.read_text(), 15)
        written = error_file.read_text() + p.stderr()
    assert "--credential http://bob:***@127.0.0.1:1/: No such file or directory" in written
    assert password not in written
