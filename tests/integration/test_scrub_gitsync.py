"""Credentials gitsync mints or fetches never reach its stderr, even when an error names them.

Each test runs the real program against a loopback server whose answer makes
gitsync's error text hold the credential, and reads what the process wrote.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_program
from tests.integration.test_gitsync import flags
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
