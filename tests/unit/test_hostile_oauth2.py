"""The proxy's OAuth2 client against token endpoint answers it cannot use, byte for byte.

The endpoint chooses its answer. Whatever it is, a fetch either yields a
usable token or fails as a TokenError: counted, logged as a failed request,
retried with backoff. Before the fixes a body nested past the recursion
limit raised RecursionError out of the fetch task, which ended the keeper
for good (no renewal ever again, the token dropped at expiry); and an
`expires_in` of NaN or 1e999 (Python's decoder takes both) was accepted, NaN
turning the keeper into a loop that never sleeps and never renews.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from podkit.ambassadors.proxy import Proxy
from podkit.ambassadors.proxy.oauth2 import OAuth2Client, TokenError, parse_token_response

from podkit.runner import configure

OK = b'{"access_token": "abc", "token_type": "Bearer", "expires_in": 60}'
BAD_BODIES = {
    "nested-too-deep": b"[" * 50_000 + b"]" * 50_000,
    "object-nested-too-deep": b'{"access_token": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "expires-nan": b'{"access_token": "abc", "token_type": "Bearer", "expires_in": NaN}',
    "expires-inf": b'{"access_token": "abc", "token_type": "Bearer", "expires_in": Infinity}',
    "expires-1e999": b'{"access_token": "abc", "token_type": "Bearer", "expires_in": 1e999}',
    "expires-huge-int": b'{"access_token": "abc", "token_type": "Bearer", "expires_in": 1'
    + b"0" * 400
    + b"}",
    "expires-negative": b'{"access_token": "abc", "token_type": "Bearer", "expires_in": -1}',
}


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
@pytest.mark.parametrize("status", [200, 400])
def test_an_unusable_answer_is_a_token_error(status: int, body: bytes) -> None:
    with pytest.raises(TokenError):
        parse_token_response(status, body)


def test_a_good_answer_still_parses() -> None:
    assert parse_token_response(200, OK) == ("abc", 60.0)


class RawTokenEndpoint:
    """Answers every request with `body` (status 200) over a raw socket."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            self.requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(self.body), self.body)
            )
            await writer.drain()
        finally:
            writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._one, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def client(tmp_path: Path, port: int) -> OAuth2Client:
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    argv = [
        "--upstream", "http://a:1",
        "--oauth2-token-url", f"http://127.0.0.1:{port}/token",
        "--oauth2-client-id", "c",
        "--oauth2-client-secret-file", str(secret),
    ]  # fmt: skip
    p = configure(Proxy, argv, {})
    assert isinstance(p, Proxy)
    c = OAuth2Client(p.listener_settings[0], lambda: None, rng=random.Random(1))
    c.check_files()
    return c


@pytest.fixture
async def keepers() -> AsyncIterator[list[OAuth2Client]]:
    started: list[OAuth2Client] = []
    yield started
    for c in started:
        await c.close()


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_the_keeper_retries_an_unusable_answer_and_takes_a_good_one(
    tmp_path: Path, keepers: list[OAuth2Client], body: bytes
) -> None:
    endpoint = RawTokenEndpoint(body)
    async with endpoint as port:
        c = client(tmp_path, port)
        keepers.append(c)
        await c.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while c.fetches < 2:  # the first failed, and the keeper asked again
            assert loop.time() < deadline, (c.fetches, c.error)
            assert c._task is not None and not c._task.done(), c._task
            await asyncio.sleep(0.02)
        assert c.token is None and c.error
        assert c.why_none().startswith("no valid OAuth2 access token")
        endpoint.body = OK  # the endpoint is fixed: the keeper is still there to see it
        while c.token != "abc":
            assert loop.time() < deadline, (c.fetches, c.error)
            assert not c._task.done(), c._task
            await asyncio.sleep(0.02)
