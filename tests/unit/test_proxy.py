"""proxy internals that are pure functions: head parsing, body framing, balancing, options."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest
from podkit.ambassadors.proxy import Proxy
from podkit.ambassadors.proxy.http1 import (
    BODY_CHUNKED,
    BODY_EOF,
    BODY_NONE,
    ChunkedFramer,
    Conn,
    HeadCache,
    LengthFramer,
    ProtocolError,
    RequestRules,
    parse_request,
    parse_response,
)
from podkit.ambassadors.proxy.listener import Settings
from podkit.ambassadors.proxy.upstream import Balancer, Upstream, parse_target

from podkit import UsageError
from podkit.runner import configure

RULES = RequestRules([b"x-drop"], b"x-user", keep_host=False)


def test_request_head_is_rewritten() -> None:
    req = parse_request(
        b"GET /a?b=1 HTTP/1.1\r\nHost: app\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"Connection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\n"
        b"X-Drop: y\r\nX-User: alice\r\nAccept: */*",
        RULES,
    )
    assert (req.method, req.target, req.minor, req.keep_alive) == (b"GET", b"/a?b=1", 1, True)
    assert req.host == b"app" and req.xff == b"10.0.0.1" and req.hash_value == b"alice"
    assert (
        req.kept == b"\r\nX-User: alice\r\nAccept: */*"
    )  # hop-by-hop, replaced and named ones gone
    assert req.body_len == 0 and not req.chunked


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\n folded", 400),
        (b"GET / HTTP/1.1\r\nHost : a", 400),
        (b"GET / HTTP/1.1\r\nHost: a\nX: bare-lf", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: nul\x00", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"GET / HTTP/1.1", 400),
        (b"GET  / HTTP/1.1\r\nHost: a", 400),
        (b"GET / HTTP/2.0\r\nHost: a", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity", 501),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked",
            501,
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:", 501),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:", 400),
    ],
)
def test_hostile_requests_are_refused(head: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_request(head, RULES)
    assert exc.value.status == status


def test_response_framing() -> None:
    r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive", False)
    assert (r.status, r.body, r.keep_alive) == (200, 5, True)
    assert r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 5"
    r = parse_response(b"HTTP/1.0 200 OK\r\nServer: x", False)
    assert (r.body, r.keep_alive) == (BODY_EOF, False) and r.head.startswith(b"HTTP/1.1 200")
    r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9", False)
    assert (r.body, r.keep_alive) == (BODY_CHUNKED, False) and b"Content-Length" not in r.head
    assert (
        parse_response(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9", False).body == BODY_NONE
    )
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9", True).body == BODY_NONE
    with pytest.raises(ProtocolError):
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nContent-Length: 8", False)
    # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message: the connection cannot be reused
    r = parse_response(
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive", False
    )
    assert (r.body, r.keep_alive) == (BODY_CHUNKED, False)
    r = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", False)
    assert (r.body, r.keep_alive) == (BODY_EOF, False)
    for code in (b"100 Continue", b"204 No Content"):
        r = parse_response(b"HTTP/1.1 " + code + b"\r\nContent-Length: 3", False)
        assert r.body == BODY_NONE and r.keep_alive


def test_chunked_framer_finds_the_end_across_any_split() -> None:
    body = b"5;ext=1\r\nhello\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\nTrailer: t\r\n\r\n"
    tail = b"GET /next"
    for step in (1, 2, 3, 7, len(body) + len(tail)):
        f = ChunkedFramer()
        data = body + tail
        used = 0
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            n = f.feed(piece)
            used += n
            if f.done:
                break
        assert f.done and used == len(body)
    with pytest.raises(ProtocolError):
        ChunkedFramer().feed(b"1_0\r\n")
    with pytest.raises(ProtocolError):
        ChunkedFramer().feed(b"2\r\nabXY")
    with pytest.raises(ProtocolError) as exc:
        ChunkedFramer(limit=4).feed(b"5\r\nhello\r\n")
    assert exc.value.status == 413
    # the size line and the trailers pass on unchanged, so what a server could read
    # differently is refused: control characters, overflow, signs, prefixes, padding
    for bad in (
        b"5;a\rb\r\n",
        b"5;a\x00\r\n",
        b"1000000000000000\r\n",
        b"-5\r\n",
        b"0x5\r\n",
        b" 5\r\n",
        b"5 \r\n",
        b"0\r\nX\rY: z\r\n",
        b"0\r\n folded\r\n",
        b"0\r\nno-colon\r\n",
    ):
        with pytest.raises(ProtocolError):
            ChunkedFramer().feed(bad)
    f = ChunkedFramer()
    good = b'5 ; name="v"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n'
    assert f.feed(good + b"GET") == len(good) and f.done
    out: list[bytes] = []
    f2 = ChunkedFramer()
    f2.out = out
    f2.feed(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert b"".join(out) == b"hello world"  # de-chunking for HTTP/1.0 clients


def test_length_framer() -> None:
    f = LengthFramer(5)
    assert f.feed(b"abc") == 3 and not f.done
    assert f.feed(b"defgh") == 2 and f.done


def _upstreams(*urls: str) -> list[Upstream]:
    s = Settings(listen="x", mode="http", host="127.0.0.1", port=0, targets=[])
    return [Upstream(parse_target(u, "--upstream", False), s, None) for u in urls]


def test_weighted_and_hash_balancing() -> None:
    ups = _upstreams("http://a:1;weight=3", "http://b:1")
    b = Balancer(ups, "weighted")
    got = Counter(b.pick(0.0, 10, None, []).label for _ in range(40))  # type: ignore[union-attr]
    assert got == {"http://a:1": 30, "http://b:1": 10}
    ups = _upstreams("http://a:1", "http://b:1", "http://c:1")
    h = Balancer(ups, "hash-header")
    before = {k: h.pick(0.0, 10, k, []) for k in (b"u1", b"u2", b"u3", b"u4", b"u5", b"u6")}
    ups[0].ejected_until = 100.0  # ejecting one upstream moves only its own keys
    after = {k: h.pick(0.0, 10, k, []) for k in before}
    for k, u in before.items():
        if u is not ups[0]:
            assert after[k] is u
    assert h.pick(0.0, 10, b"u1", []) is not ups[0]


def test_ejection_time_grows_and_is_capped() -> None:
    (u,) = _upstreams("http://a:1")
    u.s.eject_after, u.s.eject_time, u.s.max_eject_time = 2, 10.0, 25.0
    u.failure(0.0, "x")
    assert u.available(0.0)
    u.failure(0.0, "x")
    assert not u.available(5.0) and u.available(10.0)
    u.failure(10.0, "x")
    u.failure(10.0, "x")
    assert u.ejected_until == 30.0  # 2 x 10s
    u.failure(30.0, "x")
    u.failure(30.0, "x")
    assert u.ejected_until == 55.0  # capped at 25s


def test_set_header_cannot_add_a_second_authorization(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    argv = ["--upstream", "http://a:1", "--bearer-token-file", str(token)]
    with pytest.raises(UsageError, match="conflicts with --bearer-token-file"):
        configure(Proxy, [*argv, "--set-header", "authorization: Basic eDp5"], {})
    assert isinstance(configure(Proxy, [*argv, "--set-header", "X-Api-Key: k"], {}), Proxy)


def test_options_are_checked() -> None:
    p = configure(Proxy, ["--upstream", "http://a:1", "--upstream", "http://b:2;weight=2"], {})
    assert isinstance(p, Proxy)
    s = p.listener_settings[0]
    assert [t.weight for t in s.targets] == [1, 2]
    assert s.retry_statuses == {502, 503, 504} and "connect-failure" in s.retry_on
    assert s.retry_budget == 0.2 and s.max_header_bytes == 8192 and s.max_headers == 100
    for argv, flag in (
        (["--upstream", "ftp://a"], "--upstream"),
        (["--upstream", "http://a:1;weight=0"], "--upstream"),
        (["--upstream", "http://a:1", "--lb", "fastest"], "--lb"),
        (["--upstream", "http://a:1", "--retry-on", "418"], "--retry-on"),
        (["--upstream", "http://a:1", "--retry-budget", "150%"], "--retry-budget"),
        (["--upstream", "http://a:1", "--set-header", "nocolon"], "--set-header"),
        (["--upstream", "http://a:1", "--set-header", "X(y): 1"], "--set-header"),
        (["--upstream", "http://a:1", "--set-header", "X-A: b\x00c"], "--set-header"),
        (["--upstream", "http://a:1", "--set-header", "X-A: b\x0bc"], "--set-header"),
        (["--upstream", "http://a:1", "--set-header", "Upgrade: h2c"], "--set-header"),
        (["--upstream", "http://a:1", "--set-header", "X-Forwarded-For: 1.2.3.4"], "--set-header"),
        (["--upstream", "http://a:1", "--health-path", "health"], "--health-path"),
        (["--upstream", "http://a:1", "--max-headers", "0"], "--max-headers"),
        (["--listen", "tcp://127.0.0.1:1", "--upstream", "http://a:1"], "tcp://"),
        ([], "--upstream"),
    ):
        with pytest.raises(UsageError, match=flag.replace("+", r"\+")):
            configure(Proxy, argv, {})


# -- the pool: a connection that received bytes while idle is never reused ----------


class _Transport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True

    abort = close

    def get_extra_info(self, name: str) -> None:
        return None


class _Listener:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, msg: str, extra: dict[str, object]) -> None:
        self.warnings.append(msg)


async def _pool(max_connections: int = 10) -> tuple[Upstream, list[object]]:
    """An upstream whose connections go to a real loopback listener (no method of
    the Upstream replaced: the compiled build's classes do not allow it); the
    listener's accepted connections are returned, to count what was made."""
    accepted: list[object] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    s = Settings(listen="x", mode="http", host="127.0.0.1", port=0, targets=[])
    s.max_connections = max_connections
    u = Upstream(parse_target(f"http://127.0.0.1:{port}", "--upstream", False), s, _Listener())
    return u, accepted


async def _made(accepted: list[object], n: int) -> None:
    """Wait (at most 5 s) until the listener has accepted n connections."""
    async with asyncio.timeout(5):
        while len(accepted) < n:
            await asyncio.sleep(0.005)
    assert len(accepted) == n


def test_pooled_connection_with_buffered_bytes_is_closed_not_reused() -> None:
    async def go() -> None:
        u, made = await _pool()
        owner = Conn()
        c = await u.acquire(owner, None, 0.0)
        u.release(c, 0.0)
        assert u.idle == [c] and c.pooled
        # bytes while idle: an unsolicited response, or the tail of a longer body
        c.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nPOISON")
        assert c.closed and u.idle == [] and u.unsolicited == 1
        assert u.listener.warnings  # type: ignore[attr-defined]
        # and a pooled connection whose buffer is not empty (however it got there)
        d = await u.acquire(owner, None, 0.0)
        u.release(d, 0.0)
        d.buf += b"x"
        e = await u.acquire(owner, None, 0.0)
        assert e is not d and d.closed and not e.buf
        await _made(made, 3)

    asyncio.run(go())


def test_connection_handed_to_a_waiter_is_checked_when_it_arrives() -> None:
    async def go() -> None:
        u, made = await _pool(max_connections=1)
        owner = Conn()
        c = await u.acquire(owner, None, 0.0)
        waiter = asyncio.ensure_future(u.acquire(Conn(), None, 0.0))
        await asyncio.sleep(0)
        assert len(u.pending) == 1
        u.release(c, 0.0)  # handed straight to the waiter...
        c.buf += b"HTTP/1.1 200 OK\r\n"  # ...and bytes arrive before it runs
        await asyncio.sleep(0)
        assert c.closed and not waiter.done()  # not taken: it waits for the slot
        u.lost(c)  # the closed connection's slot comes back
        got = await asyncio.wait_for(waiter, 1)
        assert got is not c and not got.buf
        await _made(made, 2)

    asyncio.run(go())


def test_head_cache_is_bounded_in_bytes() -> None:
    cache = HeadCache(budget=64 * 1024)
    for i in range(1000):
        cache.put(b"GET /%d HTTP/1.1\r\nHost: a\r\nX: " % i + b"v" * 500, i)
        assert cache.used <= cache.budget
    assert 0 < len(cache) < 1000 and cache.dropped > 900
    cache.put(b"x" * 5000, "too big for an eighth of the budget")  # never cached
    assert b"x" * 5000 not in cache
    # the estimate is not below what an entry really holds (key + parsed copy + objects)
    head = b"GET /a HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 2000
    req = parse_request(head, RULES)
    held = sys.getsizeof(head) + sys.getsizeof(req.kept) + sys.getsizeof(req.target) + 200
    assert 2 * len(head) + HeadCache.ENTRY >= held


def test_a_connection_list_never_drops_framing_and_closes_the_client() -> None:
    r = parse_response(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length, x-a\r\nX-A: 1", False
    )
    assert r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 5" and r.body == 5
    assert r.close_client and not r.keep_alive
    req = parse_request(
        b"GET / HTTP/1.1\r\nHost: app\r\nConnection: host, x-a\r\nX-A: 1",
        RequestRules([], None, keep_host=True),
    )
    assert req.kept == b"\r\nHost: app"


def test_identical_content_lengths_from_upstream_become_one() -> None:
    # found by the differential test: h11 merges them; some clients refuse several
    r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: 1\r\ncontent-length: 5", False)
    assert r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: 1" and r.body == 5
