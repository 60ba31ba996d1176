"""podkit.httpclient and call_webhook against canned HTTP peers on loopback."""

from __future__ import annotations

import asyncio

import pytest

from podkit.hooks import HookError, call_webhook
from podkit.httpclient import HTTPClientError, fetch
from tests.helpers import free_port


async def serve(answer: bytes, seen: list[bytes] | None = None, delay: float = 0) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        if seen is not None:
            seen.append(head + body)
        await asyncio.sleep(delay)
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def url(server: asyncio.Server, path: str = "/hook") -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}{path}"


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
            b"hello",
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
async def test_fetch_reads_every_body_framing(answer: bytes, body: bytes) -> None:
    seen: list[bytes] = []
    srv = await serve(answer, seen)
    async with srv:
        res = await fetch("POST", url(srv) + "?a=1", body=b"{}", headers={"X-Hash": "abc"})
    assert res.body == body and res.status in (200, 204)
    req = seen[0]
    assert req.startswith(b"POST /hook?a=1 HTTP/1.1\r\n")
    assert b"Content-Length: 2\r\n" in req and b"X-Hash: abc\r\n" in req and req.endswith(b"{}")


async def test_fetch_caps_the_body() -> None:
    srv = await serve(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000)
    async with srv:
        res = await fetch("GET", url(srv), max_body=10)
    assert res.body == b"x" * 10


async def test_fetch_rejects_what_is_not_http() -> None:
    srv = await serve(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    async with srv:
        with pytest.raises(HTTPClientError):
            await fetch("GET", url(srv))
    with pytest.raises(HTTPClientError):
        await fetch("GET", "ftp://example.invalid/")


async def test_call_webhook_statuses_timeouts_and_refusals() -> None:
    srv = await serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    async with srv:
        await call_webhook(url(srv))
        with pytest.raises(HookError, match="status 200, expected 202"):
            await call_webhook(url(srv), expected_status=202)
        await call_webhook(url(srv), expected_status=0)
    slow = await serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", delay=5)
    async with slow:
        with pytest.raises(HookError, match=r"timed out after 0\.2s"):
            await call_webhook(url(slow), timeout=0.2)
    port = free_port()  # nothing listens there: refused, and the password stays hidden
    with pytest.raises(HookError, match=r"POST http://user:\*\*\*@127\.0\.0\.1"):
        await call_webhook(f"http://user:secret@127.0.0.1:{port}/", timeout=1)
