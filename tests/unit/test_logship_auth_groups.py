"""logship's sink TLS and credentials are the core's option groups
(`podkit.http.AuthOptions`, `TLSClientOptions`) under the names logship has
always used: pod specs that set --username, PODKIT_PASSWORD_FILE or
`client-cert-file:` keep working, and the groups' rules apply (issue 20)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from podkit.sidecars.logship import LogShip

from podkit import Sidecar
from podkit.http import AuthOptions, TLSClientOptions
from podkit.options import UsageError
from podkit.runner import configure
from podkit.sinks import RecordBatch, open_sink
from tests.peers.aioapp import AppServer, app_of


@pytest.fixture(autouse=True)
def _no_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("POD_NAME", "POD_NAMESPACE", "NODE_NAME", "CONTAINER_NAME"):
        monkeypatch.delenv(var, raising=False)


def program(argv: list[str], env: dict[str, str] | None = None) -> LogShip:
    p = configure(LogShip, ["--path", "/x/*.log", *argv], env=env or {})
    assert isinstance(p, LogShip)
    return p


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, str]:
    files = {"pw": "s3cret\n", "key": "k-123\n", "token": "tok-1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return {name: str(tmp_path / name) for name in files}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An HTTP sink that records the headers of each request it took."""
    seen: list[dict[str, str]] = []

    async def take(request: web.Request) -> web.Response:
        await request.read()
        seen.append(dict(request.headers))
        return web.Response(status=204)

    async with AppServer(app_of(take, "POST", "/x")) as site:
        yield f"{site.url}/x", seen


async def deliver(p: LogShip) -> None:
    spec = p._specs[-1]
    sink = open_sink(spec["url"], **{**spec["options"], "dead_letter": None})
    await sink.start()
    try:
        await sink.send(RecordBatch([{"message": "m"}]))
    finally:
        await sink.close()


BASIC = "Basic " + base64.b64encode(b"ann:s3cret").decode()


def spellings(url: str, f: dict[str, str], tmp_path: Path) -> dict[str, tuple[list[str], Any]]:
    """Each way a pod spec gives basic auth and an API-key header to logship."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"sink: ['{url}']\nusername: ann\npassword-file: {f['pw']}\n"
        f"header-file: ['X-Api-Key={f['key']}']\n"
    )
    entry = tmp_path / "entry.yaml"
    entry.write_text(
        f"sinks:\n  - {{url: '{url}', username: ann, password_file: '{f['pw']}',"
        f" header_file: ['X-Api-Key={f['key']}']}}\n"
    )
    return {
        "flags": (
            [
                *("--sink", url, "--username", "ann", "--password-file", f["pw"]),
                *("--header-file", f"X-Api-Key={f['key']}"),
            ],
            {},
        ),
        "env": (
            [],
            {
                "PODKIT_SINK": url,
                "PODKIT_USERNAME": "ann",
                "PODKIT_PASSWORD_FILE": f["pw"],
                "PODKIT_HEADER_FILE": f"X-Api-Key={f['key']}",
            },
        ),
        "config file": (["--config", str(cfg)], {}),
        "sinks: entry": (["--config", str(entry)], {}),
    }


@pytest.mark.parametrize("how", ["flags", "env", "config file", "sinks: entry"])
async def test_the_old_credential_names_still_reach_the_sink(
    how: str,
    receiver: tuple[str, list[dict[str, str]]],
    secrets: dict[str, str],
    tmp_path: Path,
) -> None:
    url, seen = receiver
    argv, env = spellings(url, secrets, tmp_path)[how]
    p = program(argv, env)
    if how != "sinks: entry":
        assert p.sink_auth.basic_auth_user == "ann" and p.sink_auth.configured
    await deliver(p)
    assert len(seen) == 1
    assert seen[0]["Authorization"] == BASIC and seen[0]["X-Api-Key"] == "k-123"


async def test_the_bearer_token_file_by_its_env_name(
    receiver: tuple[str, list[dict[str, str]]], secrets: dict[str, str]
) -> None:
    url, seen = receiver
    await deliver(program(["--sink", url], {"PODKIT_BEARER_TOKEN_FILE": secrets["token"]}))
    assert seen[0]["Authorization"] == "Bearer tok-1"


def test_the_old_tls_names_fill_the_core_group(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("client-key-file: /k.pem\ninsecure: true\n")
    env = {"PODKIT_CLIENT_CERT_FILE": "/c.pem", "PODKIT_CA_FILE": "/ca.pem"}
    p = program(["--sink", "https://h/x", "--config", str(cfg)], env)
    assert isinstance(p.sink_tls, TLSClientOptions) and isinstance(p.sink_auth, AuthOptions)
    assert (p.sink_tls.ca_file, p.sink_tls.cert_file, p.sink_tls.key_file) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    assert p.sink_tls.insecure
    opts = p._specs[0]["options"]
    assert (opts["ca_file"], opts["client_cert_file"], opts["client_key_file"]) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
    )
    flags = {o.flag_name for o in LogShip.options()}
    assert {
        "--username",
        "--password-file",
        "--bearer-token-file",
        "--header-file",
        "--ca-file",
        "--client-cert-file",
        "--client-key-file",
        "--insecure",
    } <= flags
    assert not flags & {"--basic-auth-user", "--cert-file", "--key-file"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # refused before, by the sink's own checks; now by the group's, as in every program
        (["--username", "a:b", "--password-file", "/p"], "--username: basic auth user names"),
        (["--username", "u"], "--username and --password-file: give both"),
        (
            ["--username", "u", "--password-file", "/p", "--bearer-token-file", "/t"],
            "--bearer-token-file and --username",
        ),
        (["--client-key-file", "/k"], "--client-key-file: needs --client-cert-file"),
        (["--header-file", "bad name=/f"], "--header-file: expected NAME=FILE"),
        # new: the one parser's refusals, the proxy's until now
        (["--header-file", "Host=/f"], "--header-file: Host cannot be set"),
        (["--header-file", "Transfer-Encoding=/f"], "Transfer-Encoding cannot be set"),
        (["--header-file", "X-K=/a", "--header-file", "x-k=/b"], "x-k is set twice"),
        (
            ["--header-file", "authorization=/a", "--bearer-token-file", "/t"],
            "--header-file: Authorization conflicts with --bearer-token-file",
        ),
        (
            ["--header-file", "Authorization=/a", "--username", "u", "--password-file", "/p"],
            "--header-file: Authorization conflicts with --username",
        ),
    ],
)
def test_the_groups_rules_name_logships_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        program(["--sink", "https://h/x", *argv])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("username: u", "sinks: http: --username and --password-file"),
        ("{username: 'a:b', password_file: /p}", "sinks: http: --username: basic auth"),
        ("header_file: ['Host=/f']", "sinks: http: header_file: Host cannot be set"),
        ("header_file: ['X-K=/a', 'x-k=/b']", "sinks: http: --header-file: x-k is set twice"),
        ("client_key_file: /k", "sinks: http: --client-key-file: needs --client-cert-file"),
    ],
)
def test_a_sinks_entry_is_held_to_the_same_rules(tmp_path: Path, entry: str, message: str) -> None:
    if entry.startswith("{"):
        entry = entry[1:-1]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"sinks:\n  - {{url: 'http://a/x', {entry}}}\n")
    with pytest.raises(UsageError) as exc:
        program(["--config", str(cfg)])
    assert message in str(exc.value)


class Custom(Sidecar):
    """A custom sidecar with the core groups, handing them to a sink whole."""

    name = "custom"
    tls: TLSClientOptions = TLSClientOptions.include(about="the sink")
    auth: AuthOptions = AuthOptions.include(about="the sink")

    async def run(self) -> None:
        pass


async def test_a_custom_sidecar_hands_its_groups_to_a_sink(
    receiver: tuple[str, list[dict[str, str]]], secrets: dict[str, str]
) -> None:
    url, seen = receiver
    argv = ["--basic-auth-user", "ann", "--basic-auth-password-file", secrets["pw"]]
    p = configure(Custom, [*argv, "--header-file", f"X-Api-Key={secrets['key']}"], {})
    assert isinstance(p, Custom)
    sink = open_sink(url, auth=p.auth, tls=p.tls)
    await sink.start()
    try:
        await sink.send(RecordBatch([{"message": "m"}]))
    finally:
        await sink.close()
    assert seen[0]["Authorization"] == BASIC and seen[0]["X-Api-Key"] == "k-123"
    with pytest.raises(UsageError, match="give auth= or its parts, not both"):
        open_sink(url, auth=p.auth, username="u", password_file="/p")
    # an unreadable file is retried, named by the program's own flag
    gone = configure(Custom, ["--bearer-token-file", secrets["token"] + ".gone"], {})
    assert isinstance(gone, Custom)
    sink = open_sink(url, auth=gone.auth)
    with pytest.raises(UsageError, match=r"--bearer-token-file .*token\.gone"):
        sink.auth.headers()
