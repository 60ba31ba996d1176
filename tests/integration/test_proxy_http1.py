"""HTTP/1.1 framing through the proxy, on raw sockets at both ends.

The upstream here is a hand-written socket server, on purpose: these tests need an
upstream that resets in the middle of a body, answers with a body delimited only by
the end of the connection, sends 1xx heads or contradictory framing, or closes a
keep-alive connection just as a request arrives. nginx (used everywhere else) does
none of these on demand.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProgramProcess, free_port, http, wait_until
from tests.integration.proxy_sockets import (
    SocketUpstream,
    client,
    exchange,
    read_all,
    recv_head,
)


class RawUpstream(SocketUpstream):
    """Answers each request according to its path; records what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, bytes, bytes]] = []  # (connection number, method, path)

    def serve(self, c: socket.socket, n: int) -> None:
        buf = b""
        count = 0
        while got := recv_head(c, buf):
            head, buf = got
            method, path = head.split(b" ")[:2]
            count += 1
            with self.lock:
                self.seen.append((n, method, path))
            cl = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    cl = int(value)
            while len(buf) < cl:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[cl:]
            if not self.answer(c, method, path, count, head):
                return

    @staticmethod
    def reset(c: socket.socket) -> None:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    def answer(
        self, c: socket.socket, method: bytes, path: bytes, count: int, head: bytes = b""
    ) -> bool:
        """Send the response; False to end the connection."""
        if path == b"/eof-reset":
            c.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1000)
            self.reset(c)
            return False
        if path == b"/cl-reset":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            self.reset(c)
            return False
        if path == b"/chunked":
            c.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            return True
        if path == b"/clte":
            c.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"2\r\nok\r\n0\r\n\r\n"
            )
            return True
        if path == b"/continue":
            c.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            )
            return True
        if path == b"/204":
            c.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            return True
        if path == b"/304":
            c.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
            return True
        if path.endswith(b"/echo-host"):
            host = [h for h in head.split(b"\r\n") if h.lower().startswith(b"host:")]
            body = b"|".join(host)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return True
        if path == b"/stall":
            time.sleep(30)  # never answers within the test
            return False
        if path == b"/stale" and count > 1:
            return False  # the keep-alive race: the server closes as the request arrives
        if method == b"HEAD":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            return True
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True


@pytest.fixture(scope="module")
def up() -> Iterator[RawUpstream]:
    u = RawUpstream()
    yield u
    u.close()


@pytest.fixture(scope="module")
def px(up: RawUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProgramProcess]:
    port = free_port()
    p = ProgramProcess(
        "proxy",
        ["--listen", f"127.0.0.1:{port}", "--upstream", up.url, "--retries", "0"],
        tmp=tmp_path_factory.mktemp("px"),
    )
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


def read_response(s: socket.socket, buf: bytes = b"", head: bool = False) -> tuple[bytes, bytes]:
    """One Content-Length-framed response (head and body) and what followed it."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, buf
        buf += data
    top, rest = buf.split(b"\r\n\r\n", 1)
    n = 0
    for line in top.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length" and not (head or top.startswith(b"HTTP/1.1 304")):
            n = int(value)
    while len(rest) < n:
        rest += s.recv(65536)
    return top + b"\r\n\r\n" + rest[:n], rest[n:]


def test_truncated_bodies_reach_the_client_as_a_reset(px: ProgramProcess) -> None:
    # A body delimited by the connection's end: a clean end would make the cut look
    # complete, so the client must see a reset.
    out, end = exchange(px, b"GET /eof-reset HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and end == "reset", (out[:200], end)
    out, end = exchange(px, b"GET /cl-reset HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and end == "reset", (out[:200], end)
    assert len(out.split(b"\r\n\r\n", 1)[1]) < 100000


def test_http10_client_gets_no_chunked_and_no_1xx(px: ProgramProcess) -> None:
    out, end = exchange(px, b"GET /chunked HTTP/1.0\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower() and body == b"hello world" and end == "eof"
    out, _ = exchange(px, b"GET /continue HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200") and b"100 Continue" not in out
    out, _ = exchange(px, b"GET /continue HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")


def test_bodiless_responses_keep_the_connection_in_step(px: ProgramProcess) -> None:
    with client(px) as s:
        s.sendall(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n")
        r, rest = read_response(s, head=True)
        assert r.startswith(b"HTTP/1.1 200") and b"Content-Length: 5" in r and rest == b""
        for path in (b"/204", b"/304", b"/x"):
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            r, rest = read_response(s, rest)
            assert r.split(b" ")[1] in (b"204", b"304", b"200") and rest == b"", r
        assert r.endswith(b"\r\n\r\nok")
    # TE and CL from the upstream: TE wins, the length is dropped, the body stays framed
    out, _ = exchange(px, b"GET /clte HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    head, body = out.split(b"\r\n\r\n", 1)
    assert b"content-length" not in head.lower() and body == b"2\r\nok\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "body",
    [
        b"5;a\rb\r\nhello\r\n0\r\n\r\n",  # bare CR in a chunk extension
        b"10000000000000005\r\nhello\r\n0\r\n\r\n",  # 17 hex digits: overflow
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\r\nhello\r\n0\r\nX\rY: z\r\n\r\n",  # trailer with a bare CR
        b"5\r\nhello\r\n0\r\n folded: t\r\n\r\n",  # obs-fold in the trailers
    ],
)
def test_malformed_chunked_requests_are_refused(px: ProgramProcess, body: bytes) -> None:
    out, _ = exchange(
        px, b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )
    assert out.startswith(b"HTTP/1.1 400"), out[:200]


@pytest.mark.parametrize(
    "head",
    [
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\nok",
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /x HTTP/1.1\nHost: a\n\n",  # bare LF only: refused at once, not after a timeout
        b"GET /x HTTP/1.1\r\nHost: a\n\r\n",
    ],
)
def test_smuggling_heads_are_refused(px: ProgramProcess, head: bytes) -> None:
    out, end = exchange(px, head)
    assert out[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 501"), out[:200]
    assert end == "eof"  # and the connection is not reused after it


def test_client_leaving_mid_upload_does_not_pool_the_connection(
    px: ProgramProcess, up: RawUpstream
) -> None:
    before = len(up.seen)
    with client(px) as s:
        s.sendall(b"POST /upload-cut HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123")
        n = wait_until(
            lambda: next((c for c, _, p in up.seen[before:] if p == b"/upload-cut"), None),
            what="upload reached the upstream",
        )
    # the proxy must drop that upstream connection: 96 bytes of it are owed and never came
    wait_until(lambda: n in up.closed_conns, what="half-sent upstream connection closed")
    out, _ = exchange(px, b"GET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.endswith(b"\r\n\r\nok")


def test_stale_keepalive_connection_is_replayed_when_safe(
    px: ProgramProcess, up: RawUpstream
) -> None:
    def prime() -> None:
        with client(px) as s:  # leaves one pooled connection that will close on its next request
            s.sendall(b"GET /stale HTTP/1.1\r\nHost: a\r\n\r\n")
            r, _ = read_response(s)
            assert r.endswith(b"ok")

    prime()
    # --retries 0: only the free replay of an idempotent request can save this one
    out, _ = exchange(px, b"GET /stale HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out
    prime()
    before = len(up.seen)
    out, _ = exchange(
        px, b"POST /stale HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    assert out.startswith(b"HTTP/1.1 502"), out  # a POST is never replayed
    assert sum(1 for _, m, _ in up.seen[before:] if m == b"POST") == 1
    _, _, body = px.get("/")
    st: dict[str, Any] = json.loads(body)
    u = st["listeners"][0]["upstreams"][0]
    assert u["consecutive_failures"] == 0 and not u["ejected"]  # a stale socket is no failure


def test_pipelined_requests_are_answered_in_order(px: ProgramProcess) -> None:
    with client(px) as s:
        s.sendall(
            b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nHEAD /p2 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"GET /chunked HTTP/1.1\r\nHost: a\r\n\r\nGET /p3 HTTP/1.1\r\nHost: a\r\n"
            b"Connection: close\r\n\r\n"
        )
        out, end = read_all(s)
    assert end == "eof"
    assert out.count(b"HTTP/1.1 200") == 4
    bodies = [r.split(b"\r\n\r\n", 1)[1] for r in out.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"ok", b"", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"ok"], out


def test_a_local_error_after_a_pipelined_request_comes_after_its_response(
    px: ProgramProcess,
) -> None:
    # The fast path holds its writes to the end of the loop turn (Cork); a
    # reply the proxy makes itself for the next pipelined request must not
    # overtake the held response (a client would pair them the wrong way).
    for bad in (b"NOT A REQUEST\r\n\r\n", b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"):
        with client(px) as s:
            s.sendall(b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\n" + bad)
            out, _ = read_all(s)
        assert out.startswith(b"HTTP/1.1 200 OK"), out
        assert out.index(b"HTTP/1.1 200") < out.index(b"HTTP/1.1 400"), out


def test_sigterm_drains_then_cuts_off_at_the_shutdown_timeout(
    up: RawUpstream, tmp_path: Path
) -> None:
    port = free_port()
    p = ProgramProcess(
        "proxy",
        ["--listen", f"127.0.0.1:{port}", "--upstream", up.url, "--shutdown-timeout", "2s"],
        tmp=tmp_path,
    )
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        with client(p) as s:
            s.sendall(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n")
            wait_until(lambda: any(path == b"/stall" for _, _, path in up.seen), what="stalled")
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            assert p.proc is not None
            p.proc.wait(10)
            took = time.monotonic() - t0
            out, end = read_all(s)
        # in flight past --shutdown-timeout minus its one second of margin: cut off
        assert p.proc.returncode == 0 and 0.5 <= took < 4, (p.proc.returncode, took)
        assert end in ("eof", "reset") and not out.startswith(b"HTTP/1.1 200")
        assert any("shutdown deadline" in r["message"] for r in p.records())
        with pytest.raises(OSError):
            http(f"http://127.0.0.1:{port}/x")


def test_absolute_form_host_comes_from_the_target(up: RawUpstream, tmp_path: Path) -> None:
    port = free_port()
    p = ProgramProcess(
        "proxy",
        ["--listen", f"127.0.0.1:{port}", "--upstream", up.url, "--preserve-host"],
        tmp=tmp_path,
    )
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        out, _ = exchange(
            p,
            f"GET http://127.0.0.1:{up.port}/echo-host HTTP/1.1\r\n".encode()
            + b"Host: other.example\r\nConnection: close\r\n\r\n",
        )
        # RFC 9112 3.2.2: a Host that disagrees with the absolute-form target is replaced
        assert out.endswith(f"\r\n\r\nHost: 127.0.0.1:{up.port}".encode()), out
        out, _ = exchange(
            p, b"GET /echo-host HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"
        )
        assert out.endswith(b"\r\n\r\nHost: app.example"), out  # --preserve-host
