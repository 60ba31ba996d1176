"""The proxy's HTTP/1.1 parser, framers and head cache at their edges.

Written against the survivors of `make mutate` over ambassadors/proxy/http1.py
(docs/testing.md): each test states what a client or an upstream would see
(bytes taken as the body, the status and reason refused with, what is passed on).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from podkit.ambassadors.proxy.http1 import (
    BODY_CHUNKED,
    BODY_EOF,
    BODY_NONE,
    MAX_CHUNK_EXCESS,
    MAX_HEADERS,
    MAX_LINE,
    MAX_TRAILERS,
    ChunkedFramer,
    EofFramer,
    HeadCache,
    LengthFramer,
    ProtocolError,
    Request,
    RequestRules,
    Response,
    local_reply,
    parse_request,
    parse_request_head,
    parse_response,
)


@contextlib.contextmanager
def _refused(status: int, reason: str) -> Iterator[None]:
    """Refused with this status and this reason (the reason is what the client reads
    in x-podkit-proxy's reply body and the access log)."""
    with pytest.raises(ProtocolError) as exc:
        yield
    assert (exc.value.status, exc.value.reason) == (status, reason)


# -- local replies ---------------------------------------------------------------


def test_local_reply_is_a_complete_response_with_its_reason() -> None:
    assert local_reply(502, "upstream_refused", "no\nupstream") == (
        b"HTTP/1.1 502 Bad Gateway\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 12\r\n"
        b"x-podkit-proxy: upstream_refused\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"no upstream\n"
    )


def test_local_reply_kept_open_and_an_unlisted_status() -> None:
    reply = local_reply(418, "teapot", "é", close=False)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"HTTP/1.1 418 Error"
    assert b"Connection" not in head
    assert body == "é\n".encode() and f"Content-Length: {len(body)}".encode() in head


# -- framers ---------------------------------------------------------------------


def test_length_framer_takes_exactly_its_bytes() -> None:
    assert LengthFramer(0).done  # no body: the message ends with its head
    f = LengthFramer(1)
    assert not f.done
    f = LengthFramer(5)
    assert f.feed(b"12") == 2 and not f.done and f.remaining == 3
    assert f.feed(b"345") == 3  # an exact fit ends the body
    assert f.done and f.remaining == 0
    # What follows is the next message's: none of it is this body's.
    assert f.feed(b"GET / HTTP/1.1\r\n") == 0
    g = LengthFramer(2)
    assert g.feed(b"12GET") == 2 and g.done and g.remaining == 0


def test_eof_framer_takes_everything_until_the_end() -> None:
    f = EofFramer()
    assert not f.done
    assert f.feed(b"abc") == 3 and f.feed(b"") == 0 and not f.done


def _chunked(body: bytes, **kw: object) -> ChunkedFramer:
    f = ChunkedFramer(**kw)  # type: ignore[arg-type]
    assert f.feed(body) == len(body)
    return f


def test_chunked_limit_is_inclusive() -> None:
    assert _chunked(b"5\r\nhello\r\n0\r\n\r\n", limit=5).done
    with _refused(413, "request body over --max-body-bytes"):
        ChunkedFramer(limit=5).feed(b"3\r\nhel\r\n3\r\nlo!\r\n")


def _ext_chunk(line_len: int) -> bytes:
    """A 1-byte chunk whose size line (with its CR) is `line_len` bytes long."""
    return b"1;" + b"a" * (line_len - 3) + b"\r\nx\r\n"


# Each 1-byte chunk whose size line is L bytes (CR included) uses L + 1 + 4 - 16 - 2
# bytes of the allowance: a line of 2063 bytes uses 2048, an eighth of it.
EIGHTH = 2063
BIG = b"%x\r\n" % 10000 + b"d" * 10000 + b"\r\n"  # data pays for itself and more


@pytest.mark.parametrize("before", [b"", BIG])
def test_chunked_extension_allowance_is_exact(before: bytes) -> None:
    """What big chunks paid for is not carried over to later small ones."""
    assert MAX_CHUNK_EXCESS == 8 * 2048
    assert _chunked(before + _ext_chunk(EIGHTH) * 8 + b"0\r\n\r\n").done
    with _refused(400, "chunked body with too much non-data"):
        ChunkedFramer().feed(before + _ext_chunk(EIGHTH) * 7 + _ext_chunk(EIGHTH + 1))
    # A line using exactly one byte counts too.
    with _refused(400, "chunked body with too much non-data"):
        ChunkedFramer().feed(before + _ext_chunk(16) + _ext_chunk(EIGHTH) * 8)


def test_chunked_size_lines_of_the_longest_length_pass() -> None:
    line = b"1;" + b"a" * (MAX_LINE - 3) + b"\r"  # MAX_LINE bytes before the LF
    assert _chunked(line + b"\nx\r\n0\r\n\r\n").done
    f = ChunkedFramer()
    assert f.feed(line) == len(line)  # held across reads: still not too long
    rest = b"\nx\r\n0\r\n\r\n"
    assert f.feed(rest) == len(rest) and f.done


def test_chunked_trailer_count_is_inclusive() -> None:
    trailers = b"".join(b"t%d: v\r\n" % i for i in range(MAX_TRAILERS))
    assert _chunked(b"0\r\n" + trailers + b"\r\n").done
    with _refused(400, f"more than {MAX_TRAILERS} trailer lines"):
        ChunkedFramer().feed(b"0\r\n" + trailers + b"one-more: v\r\n\r\n")


def test_chunked_trailers_cannot_bring_back_what_the_proxy_sets() -> None:
    rules = _rules(drop=[b"X-Secret"])
    with _refused(400, "a trailer names a field the proxy sets"):
        ChunkedFramer(forbidden=rules.no_trailer).feed(b"0\r\nx-secret: 1\r\n\r\n")
    with _refused(400, "a trailer names a field the proxy sets"):
        ChunkedFramer(forbidden=rules.no_trailer).feed(b"0\r\nHost: evil\r\n\r\n")
    assert _chunked(b"0\r\nx-other: 1\r\n\r\n", forbidden=rules.no_trailer).done
    # --keep-host passes the client's Host on in the head; never a second one in trailers.
    kept = _rules(keep_host=True).no_trailer
    with _refused(400, "a trailer names a field the proxy sets"):
        ChunkedFramer(forbidden=kept).feed(b"0\r\nHost: evil\r\n\r\n")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"1\r\nxZZ", "malformed chunked body"),
        (b"1\nx\r\n", "bare LF in chunked body"),
        (b"g\r\n", "malformed chunk size"),
        (b"0\r\nbad trailer\r\n", "malformed trailer line"),
        (b"1;" + b"a" * MAX_LINE + b"\r\n", "chunk header line too long"),
        (b"1;" + b"a" * (MAX_LINE - 2) + b"\r\n", "chunk header line too long"),
    ],
)
def test_chunked_refusals_say_why(body: bytes, reason: str) -> None:
    with _refused(400, reason):
        ChunkedFramer().feed(body)


def test_chunked_long_line_across_reads() -> None:
    f = ChunkedFramer()
    assert f.feed(b"1;" + b"a" * (MAX_LINE - 2)) == MAX_LINE
    with _refused(400, "chunk header line too long"):
        f.feed(b"a")


def test_chunked_data_collected_when_asked() -> None:
    f = ChunkedFramer()
    f.out = []
    body = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT"
    # Byte by byte: every state resumes where the previous read stopped.
    taken = sum(f.feed(body[i : i + 1]) for i in range(len(body)))
    assert taken == len(body) - 4 and f.done
    assert b"".join(f.out) == b"abcde" and f.total == 5


# -- the head cache --------------------------------------------------------------

KEY = b"k" * 100
COST = 2 * len(KEY) + HeadCache.ENTRY


def test_head_cache_keeps_a_head_of_exactly_an_eighth() -> None:
    c = HeadCache(budget=8 * COST)
    assert c.used == 0 and c.dropped == 0
    c.put(KEY, "parsed")
    assert c[KEY] == "parsed" and c.used == COST and c.dropped == 0
    big = HeadCache(budget=8 * COST - 1)  # an eighth is one byte less than the cost
    big.put(KEY, "parsed")
    assert KEY not in big and big.dropped == 1 and big.used == 0
    big.put(KEY + b"2", "parsed")
    assert big.dropped == 2


def test_head_cache_fills_to_its_budget_then_empties() -> None:
    c = HeadCache(budget=8 * COST)
    keys = [bytes([65 + i]) * len(KEY) for i in range(9)]
    for k in keys[:8]:
        c.put(k, k)
    assert len(c) == 8 and c.used == 8 * COST and c.dropped == 0  # exactly full
    c.put(keys[8], keys[8])
    assert list(c) == [keys[8]] and c.used == COST and c.dropped == 8


# -- request heads ---------------------------------------------------------------


def _rules(**kw: object) -> RequestRules:
    """Built inside each test: mutmut maps a mutant to the tests that call its
    function, and a module-level object is built before any test runs."""
    args: dict[str, object] = {"drop": [], "hash_name": None, "keep_host": False}
    args.update(kw)
    return RequestRules(**args)  # type: ignore[arg-type]


def test_request_head_limits_are_inclusive() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a" + b"".join(
        b"\r\nx-%d: v" % i for i in range(MAX_HEADERS - 1)
    )
    assert head.count(b"\r\n") == MAX_HEADERS
    assert parse_request(head, _rules()).host == b"a"
    with _refused(431, f"more than {MAX_HEADERS} header lines (--max-headers)"):
        parse_request(head + b"\r\nx-last: v", _rules())
    assert parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 18, _rules())
    with _refused(400, "malformed Content-Length"):
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"1" * 19, _rules())


def test_response_head_limits_are_inclusive() -> None:
    head = b"HTTP/1.1 200 OK" + b"".join(b"\r\nx-%d: v" % i for i in range(MAX_HEADERS))
    assert parse_response(head + b"\r\nContent-Length: 3", False, MAX_HEADERS + 1).body == 3
    with _refused(502, f"more than {MAX_HEADERS} header lines from upstream"):
        parse_response(head + b"\r\nx-last: v", False)


def test_request_head_interface_matches_the_core() -> None:
    method, target, version, fields = parse_request_head(
        b"POST /p?q HTTP/1.0\r\nX-A:  one  \r\nx-b:\t2"
    )
    assert (method, target, version) == ("POST", "/p?q", "1.0")
    assert fields == [("x-a", "one"), ("x-b", "2")]


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"HTTP/2 200 OK", "malformed status line from upstream"),
        (b"", "malformed status line from upstream"),
        (b"HTTP/1.1 200 OK\r\nx y: 1", "malformed header line from upstream"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1x", "malformed Content-Length from upstream"),
    ],
)
def test_response_refusals_say_why(head: bytes, reason: str) -> None:
    with _refused(502, reason):
        parse_response(head, False)


def test_response_bodies() -> None:
    def body(head: bytes, method_head: bool = False) -> int:
        return parse_response(head, method_head).body

    assert body(b"HTTP/1.1 200 OK\r\nContent-Length: 5") == 5
    assert body(b"HTTP/1.1 200 OK\r\nContent-Length: 5", method_head=True) == BODY_NONE
    assert body(b"HTTP/1.1 199 Early\r\nContent-Length: 5") == BODY_NONE
    assert body(b"HTTP/1.1 200 OK\r\nContent-Length: 5") == 5
    assert body(b"HTTP/1.1 204 No\r\nContent-Length: 5") == BODY_NONE
    assert body(b"HTTP/1.1 304 No\r\nContent-Length: 5") == BODY_NONE
    assert body(b"HTTP/1.1 205 Reset\r\nContent-Length: 0") == 0
    assert body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked") == BODY_CHUNKED
    assert body(b"HTTP/1.1 200 OK") == BODY_EOF


def _resp(*lines: bytes, status: bytes = b"HTTP/1.1 200 OK") -> Response:
    return parse_response(b"\r\n".join([status, *lines]), False)


def test_response_content_length_edges() -> None:
    assert _resp(b"Content-Length: 5 \t").body == 5  # trailing whitespace is not the value
    assert _resp(b"Content-Length: " + b"9" * 18).body == int(b"9" * 18)
    with _refused(502, "malformed Content-Length from upstream"):
        _resp(b"Content-Length: " + b"1" * 19)
    with _refused(502, "malformed Content-Length from upstream"):
        _resp(b"Content-Length: 5", b"Content-Length: 6")
    # Identical lengths become one line for the client (RFC 9110 8.6).
    r = _resp(b"Content-Length: 5", b"X-A: 1", b"Content-Length: 5")
    assert r.body == 5 and r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1"


def test_response_connection_decides_keep_alive() -> None:
    assert _resp().keep_alive is False  # no length: until close
    assert _resp(b"Content-Length: 0").keep_alive is True
    assert _resp(b"Content-Length: 0", b"Connection: close").keep_alive is False
    # Every Connection header counts, not only the last.
    assert _resp(b"Content-Length: 0", b"Connection: close", b"Connection: x-a").keep_alive is False
    old = b"HTTP/1.0 200 OK"
    assert _resp(b"Content-Length: 0", status=old).keep_alive is False
    r = _resp(b"Content-Length: 0", b"Connection: keep-alive", status=old)
    assert r.keep_alive is True
    assert r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 0"  # the client is spoken 1.1 to


def test_response_upgrade() -> None:
    r = parse_response(
        b"HTTP/1.1 101 Switching\r\nConnection: upgrade\r\nUpgrade: websocket", False
    )
    assert r.upgrade == b"websocket" and r.body == BODY_NONE
    assert _resp(b"Content-Length: 0").upgrade is None


def test_response_connection_naming_framing_closes_both_sides() -> None:
    r = _resp(b"Content-Length: 3", b"Connection: content-length, x-hop", b"X-Hop: 1")
    assert r.body == 3 and r.keep_alive is False and r.close_client is True
    assert r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 3"
    r = _resp(b"Content-Length: 3", b"Connection: x-hop", b"X-Hop: 1", b"X-Kept: 2")
    assert r.keep_alive is True and r.close_client is False
    assert r.head == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Kept: 2"


def test_response_transfer_encoding() -> None:
    r = _resp(b"Transfer-Encoding: chunked", b"Content-Length: 9")
    assert r.body == BODY_CHUNKED and r.keep_alive is False  # TE wins; suspect connection
    assert r.head == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
    r = _resp(b"Transfer-Encoding: chunked, gzip")
    assert r.body == BODY_EOF and r.keep_alive is False
    r = _resp(b"Transfer-Encoding: gzip, chunked")
    assert r.body == BODY_CHUNKED and r.keep_alive is True
    r = _resp(b"Transfer-Encoding: chunked", status=b"HTTP/1.0 200 OK")
    assert r.keep_alive is False  # TE in 1.0: faulty framing (RFC 9112 6.1)


def test_request_fields_the_proxy_acts_on() -> None:
    head = (
        b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Request-Id: r1"
        b"\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2"
        b"\r\nX-Forwarded-Proto: http\r\nX-User: alice\r\nConnection: upgrade"
        b"\r\nUpgrade: websocket\r\nX-App: 1\r\nTE: trailers\r\nX-Secret: s"
    )
    req = parse_request(head, _rules(drop=[b"X-Secret"], hash_name=b"X-User"))
    assert (req.method, req.target, req.minor, req.host) == (b"POST", b"/u", 1, b"h")
    assert req.body_len == 5 and req.chunked is False and req.keep_alive is True
    assert req.request_id == b"r1" and req.upgrade == b"websocket"
    assert req.xff == b"10.0.0.1, 10.0.0.2" and req.xfp == b"http"
    assert req.hash_value == b"alice"
    # What the proxy sets or strips is gone; the host goes too (it sets its own).
    assert req.kept == b"\r\nX-Request-Id: r1\r\nX-User: alice\r\nX-App: 1"
    kept = parse_request(head, _rules(keep_host=True)).kept
    assert kept == b"\r\nHost: h\r\nX-Request-Id: r1\r\nX-User: alice\r\nX-App: 1\r\nX-Secret: s"


def test_request_chunked_and_its_conflicts() -> None:
    req = parse_request(b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked", _rules())
    assert req.chunked is True and req.body_len == -1 and req.kept == b""
    with _refused(400, "both Content-Length and Transfer-Encoding"):
        parse_request(
            b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1",
            _rules(),
        )


def test_a_fresh_request_has_no_access_log_fields_yet() -> None:
    """httpproxy makes them once, when `log_head is None`: anything else would be
    logged as the method and path."""
    req = parse_request(b"GET /x HTTP/1.1\r\nHost: h", _rules())
    assert req.log_head is None


def test_request_head_interface_honours_max_headers() -> None:
    from podkit._http1 import ParseError

    head = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2"
    assert parse_request_head(head, max_headers=3)[0] == "GET"
    with pytest.raises(ParseError) as exc:
        parse_request_head(head, max_headers=2)
    assert exc.value.status == 431


def _req(*lines: bytes, line: bytes = b"GET / HTTP/1.1") -> Request:
    return parse_request(b"\r\n".join([line, *lines]), _rules())


def test_request_values_and_repeats() -> None:
    assert _req(b"Host: h", b"Content-Length: 5 \t").body_len == 5  # OWS after the value
    assert _req(b"Host: hostX").host == b"hostX"  # only whitespace is stripped
    r = _req(b"Host: h", b"X-Forwarded-Proto: http", b"X-Forwarded-Proto: https")
    assert r.xfp == b"http, https"


def test_request_keep_alive_by_version_and_connection() -> None:
    assert _req(b"Host: h").keep_alive is True
    assert _req(b"Host: h", b"Connection: close").keep_alive is False
    old = b"GET / HTTP/1.0"
    assert _req(line=old).keep_alive is False
    assert _req(b"Connection: keep-alive", line=old).keep_alive is True


def test_request_upgrade_needs_connection_upgrade() -> None:
    assert _req(b"Host: h", b"Upgrade: websocket").upgrade is None
    r = _req(b"Host: h", b"Upgrade: websocket", b"Connection: Upgrade")
    assert r.upgrade == b"websocket"
