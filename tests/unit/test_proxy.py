"""proxy internals that are pure functions: head parsing, body framing, balancing, options."""

from __future__ import annotations

from collections import Counter

import pytest
from podkit.ambassadors.proxy import Proxy
from podkit.ambassadors.proxy.http1 import (
    BODY_CHUNKED,
    BODY_EOF,
    BODY_NONE,
    ChunkedFramer,
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


def test_options_are_checked() -> None:
    p = configure(Proxy, ["--upstream", "http://a:1", "--upstream", "http://b:2;weight=2"], {})
    assert isinstance(p, Proxy)
    s = p.listener_settings[0]
    assert [t.weight for t in s.targets] == [1, 2]
    assert s.retry_statuses == {502, 503, 504} and "connect-failure" in s.retry_on
    assert s.retry_budget == 0.2 and s.max_header_bytes == 8192
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
        (["--listen", "tcp://127.0.0.1:1", "--upstream", "http://a:1"], "tcp://"),
        ([], "--upstream"),
    ):
        with pytest.raises(UsageError, match=flag.replace("+", r"\+")):
            configure(Proxy, argv, {})
