"""podkit.httpclient and call_webhook against canned HTTP peers on loopback."""

from __future__ import annotations

import asyncio

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podkit import _http1
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


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer a\nX-Evil: 1"},
        {"Authorization": "Bearer a\r\nX-Evil: 1"},
        {"Authorization": "Bearer a\rX-Evil: 1"},
        {"X-Token": "a\x00b"},
        {"X-Evil: 1\r\nX-Name": "v"},
    ],
)
async def test_fetch_refuses_a_header_that_would_start_another_line(
    headers: dict[str, str],
) -> None:
    """Header values come from files (tokens, header files): a line break in one
    would be an injected header line; nothing is sent."""
    seen: list[bytes] = []
    server = await serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", seen)
    async with server:
        with pytest.raises(HTTPClientError, match="a CR, LF or NUL"):
            await fetch("GET", url(server), headers=headers)
        assert (await fetch("GET", url(server), headers={"X-Token": "fine"})).status == 200
    assert len(seen) == 1 and b"X-Evil" not in seen[0]


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


# -- hostile receivers: every loop bounded, numbers in ASCII digits only -------------


async def storm(answer: bytes) -> asyncio.Server:
    """A receiver that writes `answer` and then keeps the connection open."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(30)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_1xx_storm_is_cut_off_not_waited_out() -> None:
    srv = await storm(b"HTTP/1.1 100 Continue\r\n\r\n" * 10000)
    async with srv:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(HTTPClientError, match="interim"):
            await fetch("POST", url(srv), body=b"{}", timeout=10)
        assert loop.time() - t0 < 5
        with pytest.raises(HookError, match="interim"):
            await call_webhook(url(srv), timeout=10)


async def test_five_interim_answers_are_still_fine() -> None:
    srv = await serve(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 5 + b"HTTP/1.1 204 No\r\n\r\n"
    )
    async with srv:
        assert (await fetch("GET", url(srv))).status == 204


@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (b"HTTP/1.1 200 OK\r\n" + b"a: b\r\n" * 5000 + b"\r\n", "header fields"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nxx", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n", "chunked"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            "chunked",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
            "chunked",
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"x" * 16, "chunked"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 20000,
            "chunks",
        ),
        ("HTTP/1.1 ٢٠٠ OK\r\n\r\n".encode(), "not an HTTP response"),
    ],
)
async def test_hostile_replies_are_errors_not_crashes(answer: bytes, needle: str) -> None:
    srv = await storm(answer)
    async with srv:
        with pytest.raises(HTTPClientError, match=needle):
            await fetch("GET", url(srv), timeout=5)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1", "http/1.1", "HTTP/1.1 "]),
    st.one_of(
        st.sampled_from(["200", "204", "100", "999", "20", "2000", "٢٠٠", "+20"]),
        st.text(max_size=4),
    ),
    st.one_of(
        st.sampled_from(["", " OK", " Not Found", " ", "  x", " \x00", " \x7f", " é"]),
        st.text(max_size=6),
    ),
)
def test_status_lines_agree_with_h11(version: str, code: str, reason: str) -> None:
    """The client's status line grammar is h11's: same verdict, same code."""
    line = f"{version} {code}{reason}"
    raw = line.encode("utf-8")
    if b"\r" in raw or b"\n" in raw:
        return  # a line end inside the line is another line, not this grammar
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.receive_data(raw + b"\r\n\r\n")
    try:
        event = conn.next_event()
        theirs = (
            event.status_code
            if isinstance(event, h11.Response | h11.InformationalResponse)
            else None
        )
    except h11.RemoteProtocolError:
        theirs = None
    m = _http1.STATUS_LINE.fullmatch(raw.decode("latin-1"))
    assert (int(m.group(3)) if m else None) == theirs, line
