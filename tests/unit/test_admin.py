"""The admin server's HTTP handling, in-process over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from podkit import Sidecar
from podkit import admin as admin_mod
from podkit.admin import AdminServer, Request, Response


class Prog(Sidecar):
    name = "admintest"

    def __init__(self) -> None:
        super().__init__()
        self.posted: list[bytes] = []
        self.add_route("POST", "/sync", self.sync)
        self.add_route("GET", "/boom", self.boom)

    async def sync(self, request: Request) -> Response:
        self.posted.append(request.body)
        return Response.json({"queued": True, "q": request.query.get("x")}, status=202)

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("handler bug")


@pytest.fixture
async def server() -> AsyncIterator[tuple[AdminServer, Prog]]:
    prog = Prog()
    srv = AdminServer(prog, "127.0.0.1:0")
    await srv.start()
    yield srv, prog
    await srv.stop()


async def exchange(port: int, data: bytes, read_until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(-1), 5) if read_until_close else b""
    writer.close()
    return out


async def test_keep_alive_serves_several_requests_on_one_connection(
    server: tuple[AdminServer, Prog],
) -> None:
    srv, prog = server
    assert srv.port
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    for expected in (b"503", b"200"):
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 " + expected)
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        prog.set_ready()
    writer.close()


async def test_post_with_body_query_head_404_405(server: tuple[AdminServer, Prog]) -> None:
    srv, prog = server
    assert srv.port
    out = await exchange(
        srv.port,
        b"POST /sync?x=1 HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    assert out.startswith(b"HTTP/1.1 202 Accepted") and b'"q": [\n    "1"\n  ]' in out
    assert prog.posted == [b"hello"]
    out = await exchange(srv.port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"\r\n\r\n")
    assert b"Content-Length: 3" in out
    out = await exchange(srv.port, b"GET /nope HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404")
    out = await exchange(srv.port, b"GET /sync HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405") and b"Allow: POST" in out


async def test_handler_failure_is_a_500_not_a_crash(server: tuple[AdminServer, Prog]) -> None:
    srv, _ = server
    assert srv.port
    out = await exchange(srv.port, b"GET /boom HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 500")
    out = await exchange(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        (b"POST /sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"POST /sync HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", b"400"),
        (b"POST /sync HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST /sync HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", b"400"),
        # The grammar and limits of podkit._http1 (issue 13, class 9).
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 101 + b"\r\n", b"431"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/2.0\r\n\r\n", b"505"),
        (b"GET / HTTP/1.1\r\nbad name: x\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", b"400"),
        (b"G\x01T / HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /\x7f HTTP/1.1\r\n\r\n", b"400"),
        (b"GET  / HTTP/1.1\r\n\r\n", b"400"),
    ],
)
async def test_hostile_requests_get_an_error_and_close(
    server: tuple[AdminServer, Prog], request_bytes: bytes, status: bytes
) -> None:
    srv, prog = server
    assert srv.port
    out = await exchange(srv.port, request_bytes)
    assert out.startswith(b"HTTP/1.1 " + status), out[:80]
    assert b"Connection: close" in out
    assert prog.posted == []


async def test_slow_client_is_cut_off(
    server: tuple[AdminServer, Prog], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = server
    assert srv.port
    monkeypatch.setattr(admin_mod, "HEAD_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost:")
    assert await asyncio.wait_for(reader.read(-1), 5) == b""  # closed without a reply
    writer.close()


async def test_stop_closes_idle_keep_alive_connections(server: tuple[AdminServer, Prog]) -> None:
    srv, _ = server
    assert srv.port
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
    await reader.readuntil(b"ok\n")
    await asyncio.wait_for(srv.stop(), 5)
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    writer.close()
