"""The core's shared option groups (TLS client, auth, retry, webhook,
multiline) and the stop scope: declared once, used by every program."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from pathlib import Path

import pytest

from podkit import Sidecar, UsageError
from podkit.aio import until_stopped
from podkit.hooks import WebhookOptions
from podkit.http import AuthOptions, TLSClientOptions
from podkit.multiline import MultilineOptions
from podkit.retry import RetryOptions
from podkit.runner import configure
from tests.peers.tls import TLSFiles, make_ca


class Client(Sidecar):
    name = "client"
    tls: TLSClientOptions = TLSClientOptions.include(about="the sink")
    auth: AuthOptions = AuthOptions.include()
    hook: WebhookOptions = WebhookOptions.include(
        prefix="webhook-", defaults={"method": "GET"}, also_env={"timeout": "REQ_TIMEOUT"}
    )
    retry: RetryOptions = RetryOptions.include(prefix="retry-")
    lines: MultilineOptions = MultilineOptions.include(prefix="multiline-")

    async def run(self) -> None:
        pass


def cfg(*argv: str, env: dict[str, str] | None = None) -> Client:
    program = configure(Client, list(argv), env or {})
    assert isinstance(program, Client)
    return program


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_ca(tmp_path_factory.mktemp("ca"))


def test_the_flags_are_the_ones_every_program_spells_the_same() -> None:
    flags = {o.flag_name for o in Client.options()}
    assert {
        "--ca-file",
        "--cert-file",
        "--key-file",
        "--insecure",
        "--bearer-token-file",
        "--basic-auth-user",
        "--basic-auth-password-file",
        "--header-file",
        "--webhook-method",
        "--webhook-status",
        "--webhook-timeout",
        "--webhook-header",
        "--retry-max-backoff",
        "--multiline-start",
        "--multiline-max-lines",
        "--multiline-timeout",
    } <= flags
    helps = {o.flag_name: o.help for o in Client.options()}
    assert "the sink" in helps["--ca-file"] and "{about}" not in helps["--ca-file"]


def test_defaults_come_from_the_group_unless_the_program_says_otherwise() -> None:
    p = cfg()
    assert p.hook.method == "GET" and p.hook.status == 200 and p.hook.timeout == 5.0
    assert p.retry.max_backoff == 30.0
    assert p.lines.max_lines == 500 and p.lines.timeout == 3.0 and p.lines.joiner() is None
    assert p.tls.ca_file is None and not p.tls.insecure and not p.auth.configured
    # another tool's env name, given at the point of use
    assert cfg(env={"REQ_TIMEOUT": "2s"}).hook.timeout == 2.0
    with pytest.raises(TypeError, match="no options"):
        WebhookOptions.include(defaults={"nope": 1})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key-file", "/k.pem"], "--key-file: needs --cert-file"),
        (["--basic-auth-user", "u"], "--basic-auth-user and --basic-auth-password-file"),
        (
            [
                "--bearer-token-file",
                "/t",
                "--basic-auth-user",
                "u",
                "--basic-auth-password-file",
                "/p",
            ],
            "give one of them, not both",
        ),
        (["--webhook-method", "GE T"], "--webhook-method: not an HTTP method"),
        (["--webhook-status", "600"], "--webhook-status: 600 is above the maximum 599"),
        (["--webhook-header", "nocolon"], "--webhook-header: expected 'Name: value'"),
        (["--retry-max-backoff", "0s"], "--retry-max-backoff: 0.0 is below the minimum"),
        (["--multiline-start", "(unclosed"], "--multiline-start: invalid regex"),
        (["--multiline-max-lines", "0"], "--multiline-max-lines: 0 is below the minimum 1"),
    ],
)
def test_each_groups_mistakes_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        cfg(*argv)


def test_the_method_is_normalised_once() -> None:
    assert cfg("--webhook-method", " post ").hook.method == "POST"


def test_retry_backoff_starts_low_and_is_capped_by_the_flag() -> None:
    b = cfg("--retry-max-backoff", "300ms").retry.backoff(0.5)
    assert b.initial == 0.3 and b.maximum == 0.3  # the start never above the cap
    b = cfg().retry.backoff(0.2)
    assert b.initial == 0.2 and b.maximum == 30.0


def test_multiline_group_builds_the_joiner() -> None:
    j = cfg("--multiline-start", "^S", "--multiline-max-lines", "2").lines.joiner()
    assert j is not None
    out, _, _ = j.feed(["S1", "c", "c2", "S2"], [3, 2, 3, 3])
    assert out == ["S1\nc", "c2"]  # cut at two lines
    own = cfg().lines.joiner(start="^T")
    assert own is not None and own.start.pattern == "^T"


def test_auth_headers_come_from_files_and_follow_their_changes(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    p = cfg("--bearer-token-file", str(token))
    assert p.auth.headers() == {"Authorization": "Bearer tok-1"}
    token.write_text("tok-22\n")  # a rotated Secret: a new size, so re-read
    assert p.auth.headers() == {"Authorization": "Bearer tok-22"}

    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    key = tmp_path / "key"
    key.write_text("k-123\n")
    org = tmp_path / "org"
    org.write_text(" acme ")
    p = cfg(
        "--basic-auth-user",
        "ann",
        "--basic-auth-password-file",
        str(pw),
        "--header-file",
        f"X-Api-Key={key}",
        "--header-file",
        f"X-Org={org}",
    )
    got = p.auth.headers()
    assert got["Authorization"] == "Basic " + base64.b64encode(b"ann:s3cret").decode()
    assert got["X-Api-Key"] == "k-123" and got["X-Org"] == "acme"
    key.write_text("k-456\n")  # a rotated Secret: the next request carries the new key
    os.utime(key, ns=(1, 1))
    assert p.auth.headers()["X-Api-Key"] == "k-456"


def test_auth_reports_an_unreadable_file_naming_flag_and_path(tmp_path: Path) -> None:
    p = cfg("--bearer-token-file", str(tmp_path / "absent"))
    with pytest.raises(UsageError, match=r"--bearer-token-file .*absent: No such file"):
        p.auth.headers()
    with pytest.raises(UsageError, match=r"--header-file.*NAME=FILE"):
        cfg("--header-file", str(tmp_path / "no-name"))
    with pytest.raises(UsageError, match=r"--header-file .*absent: No such file"):
        cfg("--header-file", f"X-Key={tmp_path / 'absent'}").auth.headers()
    two = tmp_path / "two"
    two.write_text("a\nb\n")
    with pytest.raises(UsageError, match="one line expected"):
        cfg("--header-file", f"X-Key={two}").auth.headers()


def test_tls_context_trusts_the_ca_file_and_presents_the_client_certificate(tls: TLSFiles) -> None:
    p = cfg(
        "--ca-file",
        str(tls.ca),
        "--cert-file",
        str(tls.client_cert),
        "--key-file",
        str(tls.client_key),
    )
    p.tls.check_files()
    ctx = p.tls.ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert p.tls.ssl_context() is ctx  # built once
    assert len(ctx.get_ca_certs()) == 1  # only the given CA, not the system's
    loose = p.tls.ssl_context(check_hostname=False)
    assert loose is not ctx and not loose.check_hostname and loose.verify_mode == ssl.CERT_REQUIRED
    off = cfg("--insecure").tls.ssl_context()
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname


def test_tls_files_are_checked_at_start(tmp_path: Path, tls: TLSFiles) -> None:
    with pytest.raises(UsageError, match=r"--ca-file .*nope\.pem"):
        cfg("--ca-file", str(tmp_path / "nope.pem")).tls.check_files()
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(UsageError, match="--ca-file/--cert-file/--key-file"):
        cfg("--cert-file", str(junk)).tls.check_files()


def test_a_group_compares_by_its_values_not_its_caches(tls: TLSFiles) -> None:
    a, b = cfg("--ca-file", str(tls.ca)).tls, cfg("--ca-file", str(tls.ca)).tls
    a.ssl_context()
    assert a == b and "_ssl" not in repr(a)


# -- until_stopped ---------------------------------------------------------------


async def test_until_stopped_returns_true_when_the_work_finishes() -> None:
    stop = asyncio.Event()
    assert await until_stopped(asyncio.sleep(0), stop) is True


async def test_until_stopped_raises_the_works_error() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await until_stopped(boom(), asyncio.Event())


async def test_a_stop_cancels_a_coroutine_but_leaves_a_task_to_its_owner() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    loop = asyncio.get_running_loop()
    loop.call_soon(stop.set)
    assert await until_stopped(forever(), stop) is False
    assert cancelled.is_set()  # cancelled and awaited before returning

    task = asyncio.create_task(asyncio.sleep(30))
    assert await until_stopped(task, stop) is False  # already stopped
    assert not task.done()  # the caller's: to drain or bound
    task.cancel()


async def test_finishing_wins_over_a_stop_that_arrives_with_it() -> None:
    stop = asyncio.Event()
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    fut.set_result(1)
    stop.set()
    assert await until_stopped(fut, stop) is True


async def test_cancelling_the_caller_cancels_the_work_and_is_not_swallowed() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    outer = asyncio.create_task(until_stopped(work(), asyncio.Event()))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert cancelled.is_set()


def test_no_hand_built_stop_races_in_these_programs() -> None:
    root = Path(__file__).resolve().parents[2]
    for rel in ("adapters/logformat/program.py", "sidecars/kubefiles/program.py"):
        text = (root / rel).read_text()
        assert "self.wait_stopping())" not in text, rel
