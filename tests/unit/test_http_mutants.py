"""What podkit/http.py promises to every program that calls out, asserted so
that a changed line fails a test (`make mutate`, docs/testing.md)."""

from __future__ import annotations

import aiohttp
import pytest

from podkit import __version__
from podkit.http import bearer_token_problem, client_session, parse_header, parse_headers
from podkit.options import UsageError
from tests.peers.tls import TLSFiles
from tests.unit.test_tls_hostname import https_server


@pytest.mark.parametrize("bad", ["X: a\nb", "X: a\rb", "nocolon", ": v", "Bad Name: v", "B\tad: v"])
def test_parse_header_refuses_and_names_the_flag_and_the_text(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_header(bad)
    assert str(err.value) == f"--header: expected 'Name: value', got {bad!r}"
    with pytest.raises(UsageError, match=r"^--webhook-header: "):
        parse_header(bad, "--webhook-header")


def test_parse_headers_keeps_every_header_and_names_the_flag() -> None:
    assert parse_headers(["A: 1", "B:  two words "]) == {"A": "1", "B": "two words"}
    assert parse_headers([]) == {}
    with pytest.raises(UsageError, match=r"^--header: "):
        parse_headers(["A: 1", "broken"])
    with pytest.raises(UsageError, match=r"^--sink-header: "):
        parse_headers(["broken"], "--sink-header")


async def test_client_session_defaults() -> None:
    async with client_session(7.5, connect_timeout=2.5, headers={"X-A": "b"}) as s:
        assert s.headers["User-Agent"] == f"podkit/{__version__}"
        assert s.headers["X-A"] == "b"
        assert s.timeout.total == 7.5 and s.timeout.connect == 2.5
        assert isinstance(s.cookie_jar, aiohttp.DummyCookieJar)
        assert s.trust_env is False  # no HTTP(S)_PROXY from the pod's env
        assert s.connector is not None and s.connector.limit == 100
    async with client_session(headers={"User-Agent": "mine"}, limit=3) as s:
        assert s.headers["User-Agent"] == "mine"
        assert s.timeout.total is None and s.timeout.connect is None
        assert s.connector is not None and s.connector.limit == 3


async def test_client_session_without_a_context_still_verifies(tls_files: TLSFiles) -> None:
    """No ssl_ctx means the system CAs, never no verification."""
    async with (
        client_session(5) as s,
        https_server(tls_files.server_cert, tls_files.server_key) as port,
    ):
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(f"https://127.0.0.1:{port}/")


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("tok-1.a_b~c+/=", None),
        ("", "empty"),
        (" \t ", "empty"),
        ("tok-a\ntok-b", "one line expected"),
        ("tok-a\rX-Evil: 1", "one line expected"),
        ("tok a", "the token holds spaces or control characters"),
        ("tok\ta", "the token holds spaces or control characters"),
        ("tok\x7f", "the token holds spaces or control characters"),
        ("caf\xe9", "the token holds spaces or control characters"),
    ],
)
def test_bearer_token_problem(token: str, problem: str | None) -> None:
    assert bearer_token_problem(token) == problem
