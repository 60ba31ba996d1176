"""The proxy against a hostile upstream and a hostile app, on raw sockets at both ends.

The upstream is a hand-written socket server on purpose: no real server sends an
unsolicited response on an idle keep-alive connection, two thousand 1xx heads, or a
Connection header naming its own Content-Length on demand. Each test states the
attack it makes and what the proxy must do (issue 13, classes 1, 2, 4 and 9).

The connection-pool paths differ between event loops (uvloop delivers data and
EOF through its own callbacks), so the pool tests run under both.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from podkit.ambassadors.proxy.http1 import HEAD_CACHE_BYTES, MAX_INTERIM

from tests.helpers import ProgramProcess, free_port, rss_bytes, wait_until
from tests.integration.proxy_sockets import (
    SocketUpstream,
    client,
    exchange,
    read_all,
    recv_head,
)

TOKEN = "s3cret-token-13"
API_KEY = "k3y-13"


def _read_body(c: socket.socket, head: bytes, buf: bytes) -> tuple[bytes, bytes]:
    """A request body as it came (chunked ones with their framing), and what follows."""
    low = head.lower()
    m = re.search(rb"\r\ncontent-length: *(\d+)", low)
    if m:
        n = int(m.group(1))
        while len(buf) < n:
            data = c.recv(65536)
            if not data:
                raise OSError("closed in a body")
            buf += data
        return buf[:n], buf[n:]
    if b"\r\ntransfer-encoding: chunked" in low:
        while not re.search(rb"(^|\r\n)0\r\n(?:[^\r\n]+\r\n)*\r\n", buf):
            data = c.recv(65536)
            if not data:
                raise OSError("closed in a body")
            buf += data
        m2 = re.search(rb"(^|\r\n)0\r\n(?:[^\r\n]+\r\n)*\r\n", buf)
        assert m2 is not None
        return buf[: m2.end()], buf[m2.end() :]
    return b"", buf


class Hostile(SocketUpstream):
    """An upstream that misbehaves by request path; records what reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, bytes, bytes]] = []  # (connection, head, body)
        self.unique = 0

    def serve(self, c: socket.socket, n: int) -> None:
        buf = b""
        while got := recv_head(c, buf):
            head, buf = got
            body, buf = _read_body(c, head, buf)
            with self.lock:
                self.seen.append((n, head, body))
            answer = self.answer(head)
            if b" /drip " in head.split(b"\r\n", 1)[0]:
                # a byte per packet: the head's end must be found across every split
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(answer)):
                    c.send(answer[i : i + 1])
            else:
                c.sendall(answer)

    def answer(self, head: bytes) -> bytes:
        path = head.split(b" ")[1]
        if path == b"/echo":  # what a server with TRACE enabled (or a debug page) sends
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(head) + head
        if path == b"/overlong":  # more body than its Content-Length, in the same packet
            return ok(b"ok") + ok(b"POISON")
        if path == b"/conn-cl":
            return (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello"
            )
        if path == b"/conn-te":
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                b"Connection: Transfer-Encoding\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
        if path.startswith(b"/1xx/"):
            n = int(path[5:])
            return b"HTTP/1.1 100 Continue\r\n\r\n" * n + ok(b"final")
        if path.startswith(b"/headers/"):
            n = int(path[9:])  # header lines in all, Content-Length included
            lines = b"".join(b"X-%d: v\r\n" % i for i in range(n - 1))
            return b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok"
        if path.startswith(b"/big-head/"):
            with self.lock:
                self.unique += 1
                u = self.unique
            pad = b"%d-" % u + b"p" * int(path[10:])
            return b"HTTP/1.1 200 OK\r\nX-Pad: " + pad + b"\r\nContent-Length: 2\r\n\r\nok"
        return ok(path)

    def conn_of(self, path: bytes) -> int:
        with self.lock:
            return next(n for n, head, _ in reversed(self.seen) if head.split(b" ")[1] == path)

    def send(self, n: int, data: bytes) -> None:
        with self.lock:
            c = self.conns[n]
        c.sendall(data)


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@pytest.fixture(scope="module")
def up() -> Iterator[Hostile]:
    u = Hostile()
    yield u
    u.close()


@contextlib.contextmanager
def _proxy(up: Hostile, tmp: Path, loop: str) -> Iterator[ProgramProcess]:
    token = tmp / "token"
    token.write_text(TOKEN + "\n")
    port = free_port()
    p = ProgramProcess(
        "proxy",
        [
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            up.url,
            "--retries",
            "0",
            "--bearer-token-file",
            str(token),
            "--set-header",
            f"X-Api-Key: {API_KEY}",
            "--max-header-bytes",
            "64KiB",
            "--access-log",
            "false",
        ],
        tmp=tmp,
        env={"PODKIT_EVENT_LOOP": loop},
    )
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def px_loop(
    request: pytest.FixtureRequest, up: Hostile, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProgramProcess]:
    """The proxy under each event loop (PODKIT_EVENT_LOOP)."""
    with _proxy(up, tmp_path_factory.mktemp("px"), request.param) as p:
        yield p


@pytest.fixture(scope="module")
def px(up: Hostile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProgramProcess]:
    with _proxy(up, tmp_path_factory.mktemp("px1"), "uvloop") as p:
        yield p


def read_response(s: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(head, body, rest) of one response framed by Content-Length or chunked."""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        assert data, buf
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    low = head.lower()
    if b"\r\ntransfer-encoding: chunked" in low:
        while not rest.endswith(b"0\r\n\r\n"):
            data = s.recv(65536)
            assert data, rest
            rest += data
        return head, rest, b""
    m = re.search(rb"\r\ncontent-length: (\d+)", low)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        data = s.recv(65536)
        assert data, rest
        rest += data
    return head, rest[:n], rest[n:]


def metric(p: ProgramProcess, name: str) -> float:
    _, _, text = p.get("/metrics")
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


GET = b"GET %s HTTP/1.1\r\nHost: app\r\n\r\n"


def request_by(path: str, p: ProgramProcess, target: bytes, close: bool = False) -> bytes:
    """A request for `target` that the proxy serves on the callback fast path (a bodiless
    GET with an idle pooled connection waiting) or on the coroutine (a POST with a body)."""
    extra = b"Connection: close\r\n" if close else b""
    if path == "fast":
        _warm(p)
        return b"GET " + target + b" HTTP/1.1\r\nHost: app\r\n" + extra + b"\r\n"
    return (
        b"POST " + target + b" HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n" + extra + b"\r\nhi"
    )


def _warm(p: ProgramProcess) -> None:
    """Leave an idle pooled connection, so the next bodiless GET takes the fast path."""
    with client(p) as s:
        s.sendall(GET % b"/warm")
        _, body, _ = read_response(s)
        assert body == b"/warm"


# -- class 1: bytes never cross from one request to another --------------------------


@pytest.mark.parametrize("path", ["fast", "slow"])
@pytest.mark.parametrize(
    "stray",
    [
        ok(b"POISON"),  # an unsolicited response
        b"tail-of-a-longer-body" + ok(b"POISON"),  # the rest of a body past its length
    ],
    ids=["unsolicited", "tail"],
)
def test_bytes_on_an_idle_pooled_connection_never_reach_the_next_request(
    px_loop: ProgramProcess, up: Hostile, path: str, stray: bytes
) -> None:
    p = px_loop
    before = metric(p, "podkit_proxy_upstream_unsolicited_closed_total")
    with client(p) as s:
        s.sendall(GET % b"/prime")
        _, body, _ = read_response(s)
        assert body == b"/prime"
    # the proxy has answered, so that upstream connection is idle in its pool now
    n = up.conn_of(b"/prime")
    up.send(n, stray)
    # the proxy must close it rather than keep it for the next request
    wait_until(lambda: n in up.closed_conns, 5, what="poisoned pooled connection closed")
    request = (
        GET % b"/next"
        if path == "fast"
        else b"POST /next HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n\r\nhi"
    )
    with client(p) as s:
        s.sendall(request)
        _, body, _ = read_response(s)
    assert body == b"/next"
    assert metric(p, "podkit_proxy_upstream_unsolicited_closed_total") == before + 1


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_a_body_longer_than_its_length_never_reaches_the_next_request(
    px_loop: ProgramProcess, up: Hostile, path: str
) -> None:
    with client(px_loop) as s:
        s.sendall(request_by(path, px_loop, b"/overlong"))
        _, body, _ = read_response(s)
        assert body == b"ok"
        n = up.conn_of(b"/overlong")
        wait_until(lambda: n in up.closed_conns, 5, what="overlong connection closed")
        s.sendall(GET % b"/after")
        _, body, _ = read_response(s)
        assert body == b"/after"


# -- class 2: credentials never reach anyone but the upstream -----------------------


@pytest.mark.parametrize("method", [b"TRACE", b"trace", b"TRACK"])
def test_trace_is_refused_and_never_carries_the_credentials(
    px: ProgramProcess, up: Hostile, method: bytes
) -> None:
    _warm(px)  # the fast path must refuse it too
    before = len(up.seen)
    out, _ = exchange(px, method + b" /echo HTTP/1.1\r\nHost: app\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 ") and b"x-podkit-proxy: trace-refused" in out, out
    assert TOKEN.encode() not in out and API_KEY.encode() not in out
    assert len(up.seen) == before  # nothing went upstream


def test_the_apps_authorization_is_replaced_never_forwarded_alongside(
    px: ProgramProcess, up: Hostile
) -> None:
    for extra in (
        b"Authorization: Bearer app\r\nauthorization: Basic YXBwOmFwcA==\r\n",
        # naming the injected fields (and framing) in Connection removes none of them
        b"Authorization: Bearer app\r\nConnection: authorization, x-api-key, content-length\r\n",
    ):
        with client(px) as s:
            s.sendall(
                b"POST /echo HTTP/1.1\r\nHost: app\r\nX-Api-Key: app-key\r\n"
                + extra
                + b"Content-Length: 2\r\n\r\nhi"
            )
            _, echoed, _ = read_response(s)
        lines = echoed.lower().split(b"\r\n")
        assert [x for x in lines if x.startswith(b"authorization:")] == [
            b"authorization: bearer " + TOKEN.lower().encode()
        ]
        assert [x for x in lines if x.startswith(b"x-api-key:")] == [
            b"x-api-key: " + API_KEY.encode()
        ]
        assert b"content-length: 2" in lines


@pytest.mark.parametrize(
    "trailer",
    [b"Authorization: Bearer app", b"X-Api-Key: app-key", b"Content-Length: 99", b"Host: evil"],
)
def test_request_trailers_cannot_bring_back_what_the_proxy_sets(
    px: ProgramProcess, up: Hostile, trailer: bytes
) -> None:
    before = len(up.seen)
    out, _ = exchange(
        px,
        b"POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 400 "), out
    assert all(trailer not in body for _, _, body in up.seen[before:])
    # an ordinary trailer still passes
    out, _ = exchange(
        px,
        b"POST /echo HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 "), out


@pytest.mark.parametrize("path", ["fast", "slow"])
@pytest.mark.parametrize("target", [b"/conn-cl", b"/conn-te"])
def test_a_response_connection_header_never_removes_framing(
    px: ProgramProcess, path: str, target: bytes
) -> None:
    with client(px) as s:
        s.sendall(request_by(path, px, target))
        out, end = read_all(s)
    head, body = out.split(b"\r\n\r\n", 1)
    if target == b"/conn-cl":
        assert b"\r\nContent-Length: 5" in head and body == b"hello", out
    else:
        assert b"\r\nTransfer-Encoding: chunked" in head, out
        assert body == b"5\r\nhello\r\n0\r\n\r\n", out
    # and the client connection is closed after it: nothing after it can be trusted
    assert b"\r\nConnection: close" in head and end == "eof", (out, end)


# -- class 9: every parser terminates, every loop is bounded ---------------------------


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_a_flood_of_1xx_responses_is_cut_off(px_loop: ProgramProcess, path: str) -> None:
    def request(target: bytes) -> bytes:
        return request_by(path, px_loop, target, close=True)

    # at the cap: passed on, then the final response
    out, _ = exchange(px_loop, request(b"/1xx/%d" % MAX_INTERIM))
    assert out.count(b"100 Continue") == MAX_INTERIM and out.endswith(b"final"), out[-200:]
    # two thousand in one segment (deep enough to overflow a recursive reader): refused
    out, _ = exchange(px_loop, request(b"/1xx/2000"))
    assert out.count(b"100 Continue") <= MAX_INTERIM, out.count(b"100 Continue")
    assert b"HTTP/1.1 502 " in out and b"x-podkit-proxy: bad-response" in out, out[-300:]
    assert b"final" not in out


@pytest.mark.parametrize("path", ["fast", "slow"])
def test_a_head_dripping_in_a_byte_at_a_time_is_read_whole(px: ProgramProcess, path: str) -> None:
    with client(px) as s:
        s.sendall(request_by(path, px, b"/drip"))
        head, body, rest = read_response(s)
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"/drip" and rest == b""


def test_header_line_counts_are_capped(px: ProgramProcess) -> None:
    def req(n: int) -> bytes:  # n header lines, Host included
        lines = b"".join(b"X-%d: v\r\n" % i for i in range(n - 1))
        return b"GET /h HTTP/1.1\r\nHost: a\r\n" + lines + b"Connection: close\r\n\r\n"

    out, _ = exchange(px, req(99))  # 99 + Connection = 100: the default --max-headers
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]
    out, _ = exchange(px, req(100))
    assert out.startswith(b"HTTP/1.1 431 "), out[:200]
    for n, status in ((100, b"200"), (101, b"502")):
        out, _ = exchange(
            px, b"GET /headers/%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % n
        )
        assert out.startswith(b"HTTP/1.1 " + status), (n, out[:200])


def test_trailers_and_chunk_overhead_are_capped(px: ProgramProcess) -> None:
    head = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    many_trailers = (
        b"5\r\nhello\r\n0\r\n" + b"".join(b"X-%d: t\r\n" % i for i in range(65)) + b"\r\n"
    )
    out, _ = exchange(px, head + many_trailers)
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    # one data byte per chunk behind a 4000-byte extension: mostly framing, refused
    padded = b"".join(b"1;x=" + b"e" * 4000 + b"\r\nz\r\n" for _ in range(6)) + b"0\r\n\r\n"
    out, _ = exchange(px, head + padded)
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    # a byte at a time without extensions is a legitimate stream: passed
    bytewise = b"1\r\nz\r\n" * 3000 + b"0\r\n\r\n"
    out, _ = exchange(px, head + bytewise)
    assert out.startswith(b"HTTP/1.1 200 "), out[:200]


# -- class 4: memory is bounded in bytes ---------------------------------------------


def test_head_caches_stay_within_their_byte_budget(px: ProgramProcess) -> None:
    """Unique large request and response heads: the caches keyed by them must not grow
    past their budget (before: 256 entries of any size, i.e. tens of MiB)."""
    metrics_before = metric(px, "podkit_proxy_head_cache_dropped_total")
    rss0 = rss_bytes(px.pid)
    with client(px) as s:
        for i in range(300):
            # a 40 KiB request head, each one different, and a 24 KiB response head
            s.sendall(
                b"GET /big-head/24000 HTTP/1.1\r\nHost: a\r\nX-Big: %d-" % i
                + b"b" * 40000
                + b"\r\n\r\n"
            )
            _, body, rest = read_response(s)
            assert body == b"ok" and rest == b""
    grown = rss_bytes(px.pid) - rss0
    assert grown < 12 << 20, f"RSS grew {grown >> 20} MiB"
    held = metric(px, "podkit_proxy_head_cache_bytes")
    assert 0 < held <= 2 * HEAD_CACHE_BYTES, held
    assert metric(px, "podkit_proxy_head_cache_dropped_total") > metrics_before + 250


def test_status_and_metrics_name_what_was_refused(px: ProgramProcess) -> None:
    _, _, text = px.get("/metrics")
    for name in (
        "podkit_proxy_upstream_unsolicited_closed_total",
        "podkit_proxy_head_cache_dropped_total",
        "podkit_proxy_head_cache_bytes",
    ):
        assert name.encode() in text
    _, _, body = px.get("/")
    assert b'"unsolicited_closed"' in body
