"""The proxy's retry decision, settings and credential logic, without sockets.

These are the tests `make mutate` runs against retries.py, oauth2.py and
credentials.py: each rule is asserted at its edges (the budget's floor of 3,
a held slot, the 80% +-5% renewal point, one token request for many waiters).
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from podkit.ambassadors.proxy import Proxy
from podkit.ambassadors.proxy.credentials import (
    Injector,
    JwtMinter,
    SigningKey,
    algorithm_for,
    load_private_key,
)
from podkit.ambassadors.proxy.oauth2 import (
    JITTER,
    RENEW_AT,
    OAuth2Client,
    TokenError,
    parse_token_response,
    renew_delay,
)
from podkit.ambassadors.proxy.retries import budget_allows, kind_allows, should_retry
from podkit.ambassadors.proxy.settings import ListenerOptions, Settings

from podkit import UsageError
from podkit.runner import configure
from podkit.secrets import scrub
from tests.integration.test_proxy_credentials import TokenEndpoint, write_key
from tests.peers.aioapp import AppServer

# -- the retry decision -----------------------------------------------------------


def test_budget_has_a_floor_of_three_and_a_share_above_it() -> None:
    assert budget_allows(0.2, 2, 0) and not budget_allows(0.2, 3, 0)
    assert budget_allows(0.2, 3, 20)  # 20% of 20 = 4
    assert not budget_allows(0.2, 4, 20)
    assert budget_allows(0.5, 9, 20) and not budget_allows(0.5, 10, 20)
    # a try that is itself a retry holds its own slot already
    assert budget_allows(0.2, 3, 0, holding=True) and not budget_allows(0.2, 4, 0, holding=True)
    assert not budget_allows(0.0, 3, 1000) and budget_allows(0.0, 2, 1000)


def test_what_is_retried_and_when_replaying_is_safe() -> None:
    kinds = frozenset({"connect-failure", "reset", "502", "504"})
    # nothing was sent: any method, even a streamed body
    assert kind_allows(kinds, "connect-failure", idempotent=False, streamed=True)
    assert not kind_allows(frozenset(), "connect-failure", idempotent=True, streamed=False)
    for kind in ("reset", "502"):
        assert kind_allows(kinds, kind, idempotent=True, streamed=False)
        assert not kind_allows(kinds, kind, idempotent=False, streamed=False)
        assert not kind_allows(kinds, kind, idempotent=True, streamed=True)
    assert not kind_allows(frozenset({"502"}), "reset", idempotent=True, streamed=False)
    # a timeout is retried for --retry-on timeout or 504
    assert kind_allows(kinds, "timeout", idempotent=True, streamed=False)
    assert kind_allows(frozenset({"timeout"}), "timeout", idempotent=True, streamed=False)
    assert not kind_allows(frozenset({"503"}), "timeout", idempotent=True, streamed=False)
    assert not kind_allows(kinds, "503", idempotent=True, streamed=False)


def test_should_retry_needs_count_kind_and_budget() -> None:
    s = Settings(retries=2)
    ok: dict[str, Any] = dict(idempotent=True, streamed=False, retrying=0, active=1)
    assert should_retry(s, "502", retries=0, **ok)
    assert should_retry(s, "502", retries=1, **ok)
    assert not should_retry(s, "502", retries=2, **ok)
    assert not should_retry(s, "500", retries=0, **ok)  # not in the default --retry-on
    assert not should_retry(s, "502", retries=0, **{**ok, "retrying": 3})
    assert should_retry(s, "502", retries=1, holding=True, **{**ok, "retrying": 3})
    assert not should_retry(Settings(retries=0), "connect-failure", retries=0, **ok)
    assert not should_retry(s, "502", retries=0, **{**ok, "streamed": True})
    assert not should_retry(s, "502", retries=0, **{**ok, "idempotent": False})
    assert should_retry(s, "connect-failure", retries=0, **{**ok, "idempotent": False})


# -- settings: the options hold every default ----------------------------------------


def test_settings_defaults_come_from_the_options(tmp_path: Path) -> None:
    built = _cfg(tmp_path)  # every option at its default, through the program
    bare = Settings()  # what unit tests construct
    for o in ListenerOptions.options():
        if o.attr != "upstream":
            assert getattr(bare, o.attr) == getattr(built, o.attr), o.attr
    assert bare.retry_budget == 0.2 and bare.timeout == 15.0 and bare.replay_max_body == 65536
    assert bare.retry_statuses == built.retry_statuses == {502, 503, 504}
    assert bare.retry_kinds == built.retry_kinds
    with pytest.raises(TypeError, match="retires"):
        Settings(retires=3)


def _cfg(tmp_path: Path, *argv: str) -> Settings:
    p = configure(Proxy, ["--upstream", "http://a:1", *argv], {})
    assert isinstance(p, Proxy)
    return p.listener_settings[0]


def test_credential_options_are_checked(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x:y\n")
    for argv, match in (
        (["--basic-auth-file", str(f), "--bearer-token-file", str(f)], "only one may set"),
        (["--oauth2-token-url", "http://t/", "--jwt-private-key-file", str(f)], "only one"),
        (["--header-file", "X-Key"], "NAME=FILE"),
        (["--header-file", "X Key=" + str(f)], "NAME=FILE"),
        (["--header-file", "Host=" + str(f)], "cannot be set"),
        (["--header-file", f"X-K={tmp_path}/missing"], "no such file"),
        (["--header-file", f"X-K={f}", "--set-header", "x-k: 1"], "X-K is set twice"),
        (["--header-file", f"X-K={f}", "--header-file", f"x-k={f}"], "x-k is set twice"),
        (["--header-file", "X-K="], "NAME=FILE"),
        (["--basic-auth-file", str(f), "--set-header", "Authorization: x"], "conflicts"),
        (["--oauth2-token-url", "http://t/"], "needs --oauth2-client-id"),
        (["--oauth2-token-url", "http://t/", "--oauth2-client-id", "a"], "client-secret-file"),
        (
            [
                *("--oauth2-token-url", "http://t/", "--oauth2-client-id", "a"),
                *("--oauth2-client-auth", "private_key_jwt"),
            ],
            "needs --oauth2-private-key-file",
        ),
        (["--oauth2-token-url", "ftp://t/", "--oauth2-client-id", "a"], "http"),
        (["--jwt-private-key-file", str(f), "--jwt-claim", "novalue"], "KEY=VALUE"),
        (["--jwt-private-key-file", str(f), "--jwt-algorithm", "HS256"], "HS256"),
        (["--jwt-private-key-file", str(f), "--jwt-lifetime", "0s"], "minimum"),
        (["--listen", "tcp://127.0.0.1:1", "--basic-auth-file", str(f)], "not in TCP mode"),
    ):
        argv = list(argv)
        if argv[:2] == ["--listen", "tcp://127.0.0.1:1"]:
            with pytest.raises(UsageError, match=match):
                configure(Proxy, [*argv, "--upstream", "tcp://a:1"], {})
            continue
        with pytest.raises(UsageError, match=match):
            _cfg(tmp_path, *argv)
    s = _cfg(tmp_path, "--header-file", f"X-K={f}", "--basic-auth-file", str(f))
    assert s.header_files() == [("X-K", str(f))]


def _injector(tmp_path: Path, *argv: str) -> Injector:
    changes: list[int] = []
    inj = Injector(_cfg(tmp_path, *argv), lambda: changes.append(1))
    inj.load()
    return inj


def test_file_schemes_render_and_keep_the_last_good_value(tmp_path: Path) -> None:
    basic, key, token = tmp_path / "basic", tmp_path / "key", tmp_path / "token"
    basic.write_text("u:p:w\n")
    key.write_text("k1\n")
    inj = _injector(tmp_path, "--basic-auth-file", str(basic), "--header-file", f"X-Key={key}")
    b64 = base64.b64encode(b"u:p:w").decode()
    assert inj.lines == f"Authorization: Basic {b64}\r\nX-Key: k1\r\n".encode()
    assert sorted(inj.drop) == [b"authorization", b"x-key"]
    gen = inj.generation
    key.write_text("k2\n")
    inj.tick()
    assert inj.lines.endswith(b"X-Key: k2\r\n") and inj.generation == gen + 1
    errors: list[tuple[str, str]] = []
    inj.on_error = lambda *e: errors.append(e)
    key.write_text("k3\x7f\n")  # a control character: kept k2
    inj.tick()
    assert inj.lines.endswith(b"X-Key: k2\r\n")
    # the program's error on `/` (issue 23) names the flag and the file
    assert [(r, m.split(":")[0]) for r, m in errors] == [("credentials", f"--header-file {key}")]
    inj.tick()  # nothing changed: no new generation
    assert inj.generation == gen + 1
    # a rotated password's encoding replaces the old one's (the old is not held forever)
    encodings = [base64.b64encode(f"u:Bq8-pw{i}".encode()).decode() for i in range(4)]
    for i in range(4):
        basic.write_text(f"u:Bq8-pw{i}\n")
        os.utime(basic, ns=(i * 10**9, i * 10**9))
        inj.tick()
        assert inj.lines.startswith(f"Authorization: Basic {encodings[i]}".encode())
    assert scrub(" ".join(encodings)).split(" ") == [*encodings[:2], "***", "***"]
    basic.write_text("no-colon\n")
    with pytest.raises(UsageError, match="--basic-auth-file"):
        _injector(tmp_path, "--basic-auth-file", str(basic))
    token.write_text("has space\n")
    with pytest.raises(UsageError, match="--bearer-token-file"):
        _injector(tmp_path, "--bearer-token-file", str(token))
    token.write_text("t0k\n")
    inj = _injector(tmp_path, "--bearer-token-file", str(token))
    assert inj.lines == b"Authorization: Bearer t0k\r\n" and inj.drop == [b"authorization"]


def test_jwt_claims_algorithms_and_renewal(tmp_path: Path) -> None:
    rs, es, ed = tmp_path / "rs", tmp_path / "es", tmp_path / "ed"
    rs_pub = write_key(rs, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    write_key(es, ec.generate_private_key(ec.SECP256R1()))
    write_key(ed, ed25519.Ed25519PrivateKey.generate())
    s = _cfg(
        tmp_path,
        "--jwt-private-key-file",
        str(rs),
        "--jwt-issuer",
        "i",
        "--jwt-audience",
        "aud",
        "--jwt-subject",
        "sub",
        "--jwt-lifetime",
        "10m",
        "--jwt-claim",
        "team=a=b",
        "--jwt-key-id",
        "k1",
    )
    now = [1_000_000.0]
    m = JwtMinter(s, clock=lambda: now[0])
    token = m.mint()
    claims = jwt.decode(
        token, rs_pub, algorithms=["RS256"], audience="aud", options={"verify_exp": False}
    )
    assert claims == {
        "iss": "i",
        "sub": "sub",
        "aud": "aud",
        "team": "a=b",
        "iat": 1_000_000,
        "nbf": 1_000_000,
        "exp": 1_000_600,
        "jti": claims["jti"],
    }
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    assert not m.due()
    now[0] += 299
    assert not m.due()
    now[0] += 1  # half the lifetime
    assert m.due()
    assert algorithm_for(load_private_key(str(es))) == "ES256"
    assert algorithm_for(load_private_key(str(ed))) == "EdDSA"
    wrong = SigningKey(str(es), "RS256")
    with pytest.raises(ValueError, match="signs ES256, not RS256"):
        wrong.load()
    p384 = tmp_path / "p384"
    write_key(p384, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="P-256"):
        SigningKey(str(p384)).load()
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(ValueError, match="PEM private key"):
        SigningKey(str(tmp_path / "junk")).load()


# -- OAuth2 ------------------------------------------------------------------------


def test_token_responses() -> None:
    ok = b'{"access_token": "abc", "token_type": "bearer", "expires_in": 60}'
    assert parse_token_response(200, ok) == ("abc", 60.0)
    assert parse_token_response(200, b'{"access_token": "a", "token_type": "Bearer"}') == (
        "a",
        None,
    )
    assert parse_token_response(
        200, b'{"access_token": "a", "token_type": "Bearer", "expires_in": "30"}'
    ) == ("a", 30.0)
    bearer = b'"token_type": "Bearer"'
    assert parse_token_response(
        200, b'{"access_token": "a", "expires_in": 1, ' + bearer + b"}"
    ) == (
        "a",
        1.0,
    )
    long_code = "e" * 100
    for status, body, message in (
        (400, b'{"error": "invalid_scope"}', "token endpoint answered 400 (invalid_scope)"),
        (400, b'{"error": "%s"}' % long_code.encode(), f"token endpoint answered 400 ({'e' * 64})"),
        (500, b"<html>", "token endpoint answered 500"),
        (200, b"[]", "token endpoint answered 200 without a JSON object"),
        (200, b"{" + bearer + b"}", "token endpoint answered 200 without an access_token"),
        (
            200,
            b'{"access_token": 5, ' + bearer + b"}",
            "token endpoint answered 200 without an access_token",
        ),
        (
            200,
            b'{"access_token": "a b", ' + bearer + b"}",
            "access_token holds spaces or control characters",
        ),
        (
            200,
            '{"access_token": "\u00e9", "token_type": "Bearer"}'.encode(),
            "access_token holds spaces or control characters",
        ),
        (200, b'{"access_token": "a", "token_type": "mac"}', "token_type 'mac' is not Bearer"),
        (
            200,
            b'{"access_token": "a", "token_type": "%s"}' % (b"m" * 40),
            f"token_type '{'m' * 32}' is not Bearer",
        ),
        (200, b'{"access_token": "a"}', "token_type 'None' is not Bearer"),
        (
            200,
            b'{"access_token": "a", "expires_in": 0, ' + bearer + b"}",
            "expires_in '0' is not a positive number",
        ),
        (
            200,
            b'{"access_token": "a", "expires_in": "%s", ' % (b"x" * 40) + bearer + b"}",
            f"expires_in '{'x' * 32}' is not a positive number",
        ),
        (
            200,
            b'{"access_token": "a", "expires_in": true, ' + bearer + b"}",
            "expires_in 'True' is not a positive number",
        ),
    ):
        with pytest.raises(TokenError) as err:
            parse_token_response(status, body)
        assert str(err.value) == message


def test_renewal_point_is_a_jittered_fraction() -> None:
    rng = random.Random(7)
    delays = [renew_delay(100.0, rng) for _ in range(2000)]
    assert min(delays) >= 100 * (RENEW_AT - JITTER) and max(delays) <= 100 * (RENEW_AT + JITTER)
    assert max(delays) - min(delays) > 8  # really jittered
    assert RENEW_AT - JITTER > 0.5 and RENEW_AT + JITTER < 1.0


def _oauth2_settings(tmp_path: Path) -> Settings:
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    return _cfg(
        tmp_path,
        "--oauth2-token-url",
        "http://127.0.0.1:9/token",
        "--oauth2-client-id",
        "c",
        "--oauth2-client-secret-file",
        str(secret),
    )


def _client(tmp_path: Path) -> tuple[OAuth2Client, list[int]]:
    changes: list[int] = []
    c = OAuth2Client(_oauth2_settings(tmp_path), lambda: changes.append(1), rng=random.Random(1))
    c.check_files()
    return c, changes


async def test_one_token_request_however_many_wait(tmp_path: Path) -> None:
    c, changes = _client(tmp_path)
    calls = 0
    gate = asyncio.Event()

    async def request() -> tuple[str, float | None]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return f"t{calls}", 100.0

    c._request = request  # type: ignore[method-assign]
    waiters = [asyncio.ensure_future(c.refresh(5.0)) for _ in range(100)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == [True] * 100
    assert calls == 1 and c.token == "t1" and changes == [1]
    loop = asyncio.get_running_loop()
    assert c.expires_at - loop.time() == pytest.approx(100.0, abs=1.0)
    assert 75.0 - 1 <= c.renew_at - loop.time() <= 85.0
    # the next renewal is a new request
    assert await c.refresh(5.0) and calls == 2 and c.token == "t2"


async def test_renewed_tokens_are_scrubbed_but_not_kept_forever(tmp_path: Path) -> None:
    """Every renewal registers its token for scrubbing; only the latest two stay
    registered, or a week of renewals would make every log line scan them all."""
    c, _ = _client(tmp_path)
    tokens = [f"Rn7-access-{i:03d}" for i in range(50)]
    issued = iter(tokens)

    async def request() -> tuple[str, float | None]:
        return next(issued), 100.0

    c._request = request  # type: ignore[method-assign]
    for token in tokens:
        assert await c.refresh(1.0) and c.token == token
    assert scrub(" ".join(tokens)).split(" ") == [*tokens[:-2], "***", "***"]


async def test_failure_keeps_the_token_until_it_expires(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    c, changes = _client(tmp_path)
    answers: list[Any] = [("t1", 1.0), TimeoutError()]  # a message-less error

    async def request() -> tuple[str, float | None]:
        a = answers[0] if len(answers) == 1 else answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a  # type: ignore[no-any-return]

    async def until(pred: Any, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if pred():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    caplog.set_level("INFO", logger="podkit.proxy")
    c._request = request  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    await c.start()
    try:
        await until(lambda: c.token)
        assert c.token == "t1" and c.why_none() == "no OAuth2 access token yet"
        await until(lambda: c.fetches >= 2)  # the renewal at ~80% failed ...
        if loop.time() < c.expires_at - 0.05:
            assert c.token == "t1"  # ... and the token is still used until it expires
        await until(lambda: c.token is None)
        assert loop.time() >= c.expires_at
        assert c.why_none() == "no valid OAuth2 access token: TimeoutError"
        assert len(changes) >= 2
    finally:
        await c.close()
    logged = [
        (r.levelname, r.getMessage(), r.token_url, getattr(r, "error", None))  # type: ignore[attr-defined]
        for r in caplog.records
    ]
    url = "http://127.0.0.1:9/token"
    assert logged[0] == ("INFO", "OAuth2 access token obtained", url, None)
    assert caplog.records[0].expires_in == 1.0  # type: ignore[attr-defined]
    failed = ("WARNING", "OAuth2 token request failed; keeping the current token until it expires")
    assert logged[1] == (*failed, url, "TimeoutError")
    expired = "OAuth2 access token expired and could not be renewed; refusing requests"
    assert ("ERROR", expired, url, "TimeoutError") in logged


async def test_no_expires_in_means_no_expiry_but_hourly_renewal(tmp_path: Path) -> None:
    c, _ = _client(tmp_path)

    async def request() -> tuple[str, float | None]:
        return "t", None

    c._request = request  # type: ignore[method-assign]
    assert await c.refresh(1.0)
    loop = asyncio.get_running_loop()
    assert c.expires_at == float("inf")
    assert c.renew_at - loop.time() == pytest.approx(3600.0, abs=1.0)


async def test_a_401_renews_once_per_generation(tmp_path: Path) -> None:
    inj = Injector(_oauth2_settings(tmp_path), lambda: None)
    inj.load()
    assert inj.blocked == "no OAuth2 access token yet"
    assert inj.oauth2 is not None
    calls = 0

    async def request() -> tuple[str, float | None]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return f"t{calls}", 100.0

    inj.oauth2._request = request  # type: ignore[method-assign]
    await inj.oauth2.refresh(1.0)
    assert inj.blocked is None and inj.lines == b"Authorization: Bearer t1\r\n"
    gen = inj.generation
    await asyncio.gather(*(inj.renew_after_401(gen, 1.0) for _ in range(50)))
    assert calls == 2 and inj.lines == b"Authorization: Bearer t2\r\n"
    await inj.renew_after_401(gen, 1.0)  # a late 401 for the old token: nothing to do
    assert calls == 2


# -- the token request on the wire, against a real token endpoint on loopback ----------


def _secret(tmp_path: Path, text: str) -> tuple[str, str]:
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    return "--oauth2-client-secret-file", str(path)


async def _fetch_with(tmp_path: Path, endpoint: TokenEndpoint, *argv: str) -> OAuth2Client:
    s = _cfg(tmp_path, "--oauth2-token-url", endpoint.url, "--oauth2-client-id", "cid", *argv)
    c = OAuth2Client(s, lambda: None, rng=random.Random(1))
    c.check_files()
    async with AppServer(endpoint.app(), endpoint.port):
        assert await c.refresh(5.0), c.error
    return c


async def test_client_secret_basic_on_the_wire(tmp_path: Path) -> None:
    endpoint = TokenEndpoint("cid", secret="p@ss word:/")
    c = await _fetch_with(
        tmp_path,
        endpoint,
        *_secret(tmp_path, "p@ss word:/"),
        "--oauth2-scope",
        "a b",
        "--oauth2-audience",
        "aud",
    )
    assert c.token == "tok-1" and c.error == "" and c.fetches == 1
    req = endpoint.requests[0]
    assert req["form"] == {"grant_type": "client_credentials", "scope": "a b", "audience": "aud"}
    assert req["auth"] == "Basic " + base64.b64encode(b"cid:p%40ss%20word%3A%2F").decode()
    assert req["content_type"] == "application/x-www-form-urlencoded"
    assert req["accept"] == "application/json"


async def test_client_secret_post_on_the_wire(tmp_path: Path) -> None:
    endpoint = TokenEndpoint("cid", secret="pw")
    c = await _fetch_with(
        tmp_path,
        endpoint,
        *_secret(tmp_path, "pw"),
        "--oauth2-client-auth",
        "client_secret_post",
    )
    assert c.token == "tok-1"
    req = endpoint.requests[0]
    assert req["auth"] is None
    assert req["form"] == {
        "grant_type": "client_credentials",
        "client_id": "cid",
        "client_secret": "pw",
    }


async def test_private_key_jwt_on_the_wire(tmp_path: Path) -> None:
    key = tmp_path / "key"
    public = write_key(key, ec.generate_private_key(ec.SECP256R1()))
    endpoint = TokenEndpoint("cid", public_key=public)
    c = await _fetch_with(
        tmp_path,
        endpoint,
        "--oauth2-client-auth",
        "private_key_jwt",
        "--oauth2-private-key-file",
        str(key),
    )
    assert c.token == "tok-1"
    form = endpoint.requests[0]["form"]
    assert form["client_id"] == "cid" and "client_secret" not in form
    claims = jwt.decode(
        form["client_assertion"], public, algorithms=["ES256"], audience=endpoint.url
    )
    assert claims["iss"] == claims["sub"] == "cid"
    assert claims["exp"] - claims["iat"] == 60 and len(claims["jti"]) == 32


async def test_a_refused_token_request_says_why(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("wrong\n")
    endpoint = TokenEndpoint("cid", secret="right")
    s = _cfg(
        tmp_path,
        "--oauth2-token-url",
        endpoint.url,
        "--oauth2-client-id",
        "cid",
        "--oauth2-client-secret-file",
        str(secret),
    )
    changes: list[int] = []
    errors: list[tuple[str, str]] = []
    c = OAuth2Client(s, lambda: changes.append(1), on_error=lambda *e: errors.append(e))
    c.check_files()
    async with AppServer(endpoint.app(), endpoint.port):
        assert not await c.refresh(5.0)
    assert c.token is None and changes == [1]  # the refusal reason is published
    # and is the program's error on `/` (issue 23), naming the endpoint
    assert errors == [("token", f"OAuth2 token request to {endpoint.url} failed: {c.error}")]
    assert "401" in c.error
    assert (
        c.why_none() == "no valid OAuth2 access token: token endpoint answered 401 (invalid_client)"
    )
    # nothing listening: the error is the connection's
    assert not await c.refresh(5.0)
    assert c.fetches == 2 and c.why_none().startswith("no valid OAuth2 access token: ")
    assert "invalid_client" not in c.why_none()


def test_oauth2_files_are_checked_at_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    s = _cfg(
        tmp_path,
        "--oauth2-token-url",
        "http://t/",
        "--oauth2-client-id",
        "c",
        "--oauth2-client-secret-file",
        str(empty),
    )
    with pytest.raises(UsageError, match=f"--oauth2-client-secret-file {empty}: empty"):
        OAuth2Client(s, lambda: None).check_files()
    junk = tmp_path / "junk"
    junk.write_text("junk")
    key = tmp_path / "key"
    write_key(key, ed25519.Ed25519PrivateKey.generate())
    pkjwt = ("--oauth2-token-url", "https://t/", "--oauth2-client-id", "c")
    pkjwt += ("--oauth2-client-auth", "private_key_jwt", "--oauth2-private-key-file")
    s = _cfg(tmp_path, *pkjwt, str(junk))
    with pytest.raises(UsageError, match=f"--oauth2-private-key-file {junk}: not an"):
        OAuth2Client(s, lambda: None).check_files()
    s = _cfg(tmp_path, *pkjwt, str(key), "--oauth2-ca-file", str(junk))
    with pytest.raises(UsageError, match="--oauth2-ca-file"):
        OAuth2Client(s, lambda: None).check_files()


async def test_injector_with_oauth2_waits_for_the_first_token(tmp_path: Path) -> None:
    inj = Injector(_oauth2_settings(tmp_path), lambda: None)
    assert inj.drop == [b"authorization"]
    inj.load()
    assert inj.oauth2 is not None and inj.lines == b""
    assert await inj.wait_usable(0.01) == "no OAuth2 access token yet"  # nothing under way
    gate = asyncio.Event()

    async def request() -> tuple[str, float | None]:
        await gate.wait()
        return "tk", 60.0

    inj.oauth2._request = request  # type: ignore[method-assign]
    fetch = asyncio.ensure_future(inj.oauth2.refresh(5.0))
    await asyncio.sleep(0)
    assert await inj.wait_usable(0.05) == "no OAuth2 access token yet"  # timed out
    waiting = asyncio.ensure_future(inj.wait_usable(5.0))
    await asyncio.sleep(0)
    gate.set()
    assert await waiting is None and await fetch
    assert inj.lines == b"Authorization: Bearer tk\r\n"


def test_injector_per_request_jwt_and_header_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, api = tmp_path / "key", tmp_path / "api"
    public = write_key(key, ed25519.Ed25519PrivateKey.generate())
    api.write_text("k\n")
    inj = _injector(
        tmp_path,
        "--jwt-private-key-file",
        str(key),
        "--jwt-per-request",
        "--header-file",
        f"X-A={api}",
    )
    assert inj.lines == b"X-A: k\r\n" and inj.per_request is not None
    one, two = inj.per_request(), inj.per_request()
    assert one.startswith(b"Authorization: Bearer ") and one.endswith(b"\r\n") and one != two
    claims = jwt.decode(one[22:-2], public, algorithms=["EdDSA"])
    assert claims["exp"] - claims["iat"] == 300
    inj.tick()  # per request: nothing to renew on the tick
    assert inj.lines == b"X-A: k\r\n"
    # interval mode: the line is part of `lines`, renewed when the key changes
    inj = _injector(tmp_path, "--jwt-private-key-file", str(key))
    assert inj.per_request is None and inj.lines.startswith(b"Authorization: Bearer ")
    before, gen = inj.lines, inj.generation
    inj.tick()
    assert inj.lines == before and inj.generation == gen
    public = write_key(key, ed25519.Ed25519PrivateKey.generate())
    inj.tick()
    assert inj.lines != before and inj.generation == gen + 1
    jwt.decode(inj.lines[22:-2], public, algorithms=["EdDSA"])
    key.write_text("broken")
    caplog.set_level("WARNING", logger="podkit.proxy")
    inj.tick()  # a broken key: signed with the last good one, read once
    assert [(r.getMessage(), r.file) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("cannot use the new signing key; signing with the old one", str(key))
    ]
    assert "PEM private key" in caplog.records[0].error  # type: ignore[attr-defined]
    assert inj.generation == gen + 2
    jwt.decode(inj.lines[22:-2], public, algorithms=["EdDSA"])
    inj.tick()
    assert inj.generation == gen + 2
    key.unlink()  # gone: the old key signs, and the absence is noticed once
    inj.tick()
    inj.tick()
    assert inj.generation == gen + 3
    jwt.decode(inj.lines[22:-2], public, algorithms=["EdDSA"])


def test_credential_errors_name_the_flag_and_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x:y\n")
    gone = str(tmp_path / "gone")
    for flag in (
        "--bearer-token-file",
        "--basic-auth-file",
        "--jwt-private-key-file",
        "--oauth2-ca-file",
    ):
        with pytest.raises(UsageError, match=f"^{flag}: {gone}: no such file$"):
            _cfg(tmp_path, flag, gone)
    oauth = ("--oauth2-token-url", "http://t/", "--oauth2-client-id", "c")
    with pytest.raises(UsageError, match=f"^--oauth2-client-secret-file: {gone}: no such"):
        _cfg(tmp_path, *oauth, "--oauth2-client-secret-file", gone)
    with pytest.raises(UsageError, match=f"^--oauth2-private-key-file: {gone}: no such"):
        _cfg(
            tmp_path,
            *oauth,
            *("--oauth2-client-auth", "private_key_jwt", "--oauth2-private-key-file", gone),
        )
    with pytest.raises(UsageError, match=f"^--header-file: {gone}: no such file$"):
        _cfg(tmp_path, "--header-file", f"X-K={gone}")
    with pytest.raises(
        UsageError,
        match=r"^--basic-auth-file and --jwt-private-key-file and --oauth2-token-url: only one",
    ):
        _cfg(tmp_path, "--basic-auth-file", str(f), "--jwt-private-key-file", str(f), *oauth)
    with pytest.raises(UsageError, match=r"^--header-file: not in TCP mode$"):
        configure(
            Proxy,
            ["--listen", "tcp://127.0.0.1:1", "--upstream", "tcp://a:1", "--header-file", f"X={f}"],
            {},
        )
    with pytest.raises(UsageError, match=r"--oauth2-client-secret-file$"):
        _cfg(tmp_path, *oauth, "--oauth2-client-auth", "client_secret_post")
    # a file path may hold '='; the header name may not
    eq = tmp_path / "a=b"
    eq.write_text("v\n")
    assert _cfg(tmp_path, "--header-file", f"X-K={eq}").header_files() == [("X-K", str(eq))]
    assert not _cfg(tmp_path).any_credentials()
    assert _cfg(tmp_path, "--header-file", f"X-K={f}").any_credentials()
    assert _cfg(tmp_path, "--basic-auth-file", str(f)).any_credentials()


def test_secret_values_are_checked_with_reasons(tmp_path: Path) -> None:
    token, basic, key = tmp_path / "token", tmp_path / "basic", tmp_path / "key"
    bad = "the token holds spaces or control characters"
    for text, problem in (("", "empty"), ("a b", bad), ("a\x01b", bad), ("é", bad)):
        token.write_text(text)
        with pytest.raises(UsageError, match=f"^--bearer-token-file {token}: {problem}$"):
            _injector(tmp_path, "--bearer-token-file", str(token))
    for text in ("nocolon", ":pw", "u:p\nx", "u:p\rx"):
        basic.write_text(text + "\n")
        with pytest.raises(
            UsageError, match=f"^--basic-auth-file {basic}: expected one line user:password$"
        ):
            _injector(tmp_path, "--basic-auth-file", str(basic))
    key.write_text("a\x02b")
    with pytest.raises(
        UsageError, match=f"^--header-file {key}: --header-file X-K is empty or holds control"
    ):
        _injector(tmp_path, "--header-file", f"X-K={key}")
    ec_key = tmp_path / "ec"
    write_key(ec_key, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(
        UsageError, match=f"^--jwt-private-key-file {ec_key}: the key signs ES256, not RS256$"
    ):
        _injector(tmp_path, "--jwt-private-key-file", str(ec_key), "--jwt-algorithm", "RS256")
    with pytest.raises(ValueError, match=r"^unsupported key type NoneType$"):
        algorithm_for(None)


async def test_file_changes_are_logged_once_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, basic = tmp_path / "a", tmp_path / "b", tmp_path / "basic"
    a.write_text("1\n")
    b.write_text("1\n")
    basic.write_text("u:p\n")
    inj = _injector(
        tmp_path,
        "--header-file",
        f"X-A={a}",
        "--header-file",
        f"X-B={b}",
        "--basic-auth-file",
        str(basic),
    )
    await inj.start()  # nothing to start without OAuth2
    caplog.set_level("INFO", logger="podkit.proxy")
    # both broken the same way: one warning for each file, not one for both
    a.write_text("\x01")
    b.write_text("\x01")
    basic.write_text("no-colon")
    inj.tick()
    inj.tick()
    warnings = [
        (r.getMessage(), r.file, r.error)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.levelname == "WARNING"
    ]
    bad = "is empty or holds control characters"
    assert warnings == [
        (
            f"cannot use --basic-auth-file {basic}; keeping the old value",
            str(basic),
            "expected one line user:password",
        ),
        (
            f"cannot use --header-file {a}; keeping the old value",
            str(a),
            f"--header-file X-A {bad}",
        ),
        (
            f"cannot use --header-file {b}; keeping the old value",
            str(b),
            f"--header-file X-B {bad}",
        ),
    ]
    assert inj.lines.endswith(b"X-A: 1\r\nX-B: 1\r\n")
    # a broken first file does not stop the next from being reloaded
    caplog.clear()
    b.write_text("2\n")
    inj.tick()
    assert b"X-B: 2\r\n" in inj.lines and b"X-A: 1\r\n" in inj.lines
    assert [(r.getMessage(), r.flag) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("credential file reloaded", "--header-file")
    ]
    # the same file broken in a new way is reported again
    caplog.clear()
    a.unlink()
    inj.tick()
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot use --header-file {a}; keeping the old value"
    ]
    await inj.close()


async def test_after_a_401_files_are_read_again_at_once(tmp_path: Path) -> None:
    token, key = tmp_path / "token", tmp_path / "key"
    token.write_text("old\n")
    inj = _injector(tmp_path, "--bearer-token-file", str(token))
    gen = inj.generation
    token.write_text("new\n")  # rotated within the second: no tick yet
    await inj.renew_after_401(gen, 1.0)
    assert inj.lines == b"Authorization: Bearer new\r\n" and inj.generation == gen + 1
    await inj.renew_after_401(gen, 1.0)  # the same refusal again: nothing more
    assert inj.generation == gen + 1
    public = write_key(key, ed25519.Ed25519PrivateKey.generate())
    inj = _injector(tmp_path, "--jwt-private-key-file", str(key))
    before = inj.lines
    await inj.renew_after_401(inj.generation, 1.0)
    assert inj.lines != before  # a new JWT (new jti)
    jwt.decode(inj.lines[22:-2], public, algorithms=["EdDSA"])
    inj = _injector(tmp_path, "--jwt-private-key-file", str(key), "--jwt-per-request")
    await inj.renew_after_401(inj.generation, 1.0)
    assert inj.lines == b""  # per request: minted at send time, never in `lines`
