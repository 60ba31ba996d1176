"""The settings the runner logs at start ("starting", settings=...) and shows on
the admin server: every password and secret hidden, everything else as given."""

from __future__ import annotations

from podkit import Sidecar, option
from podkit.runner import configure, public_settings


class Settings(Sidecar):
    name = "settings"
    password: str = option(None, secret=True)
    upstream: str = option(None, kind="url")
    mirrors: list[str] = option([], kind="url", repeat=True)
    plain: str = option("none")
    dsn: str = option(None)
    count: int = option(3)
    targets: list[str] = option([], positional=True, repeat=True)

    async def run(self) -> None:
        self.exit_code = 0


def settings(*argv: str) -> dict[str, object]:
    return public_settings(configure(Settings, ["--admin-addr", "off", *argv], env={}))


def test_secrets_and_passwords_in_urls_are_hidden() -> None:
    got = settings(
        "--password", "Pw9-hunter2",
        "--upstream", "https://u:Pw9-up@h:8443/x",
        "--mirrors", "redis://:Pw9-m1@m1:6379/0",
        "--mirrors", "http://m2/",
        "--dsn", "postgres://app:Pw9-dsn@db/app",
        "tcp://a:Pw9-t@h:1", "plain-target",
    )  # fmt: skip
    assert got["password"] == "***"
    assert got["upstream"] == "https://u:***@h:8443/x"
    assert got["mirrors"] == ["redis://:***@m1:6379/0", "http://m2/"]
    assert got["dsn"] == "postgres://app:***@db/app"
    assert got["targets"] == ["tcp://a:***@h:1", "plain-target"]
    assert "Pw9" not in repr(got)


def test_everything_else_is_shown_as_given() -> None:
    got = settings("--plain", "a:b@c", "--count", "5")
    assert got["plain"] == "a:b@c"  # no "://": not a URL, nothing to redact
    assert got["count"] == 5
    assert got["password"] is None and got["upstream"] is None  # unset stays unset
    assert got["mirrors"] == [] and got["targets"] == []
    assert set(got) >= {"password", "upstream", "mirrors", "plain", "dsn", "count", "targets"}
