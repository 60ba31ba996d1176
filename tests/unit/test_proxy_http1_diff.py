"""The proxy's HTTP/1.1 head parsing, differentially against h11 over generated heads.

h11 is an independent, pure-Python HTTP/1.1 parser. The property: whatever head the
proxy accepts, h11 accepts too and reads the same way (method, target, version, body
framing, keep-alive, and every header line the proxy passes on, in order). The proxy
may refuse more than h11 (it is stricter on purpose: duplicate Host, CL with TE, CL
lists, control characters, versions other than 1.0/1.1), never less, except for the
leniencies listed in `_known_leniency`. Inputs are built from the pieces attackers
combine: framing headers in odd cases and spellings, bare CR/LF, obs-fold, NUL,
whitespace around the colon, Connection lists naming framing fields.
"""

from __future__ import annotations

import os

import h11
import pytest
from h11._connection import _body_framing, _keep_alive
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from podkit.ambassadors.proxy.http1 import (
    BODY_CHUNKED,
    BODY_EOF,
    BODY_NONE,
    ChunkedFramer,
    ProtocolError,
    Request,
    RequestRules,
    Response,
    parse_request,
    parse_response,
)

RULES = RequestRules([b"authorization"], None, keep_host=True)
# what the proxy removes from a request head it passes on (RequestRules' list)
REQ_GONE = {
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"upgrade",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"proxy-authorization",
    b"authorization",
}
RESP_GONE = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
NEVER_LISTED = {b"close", b"keep-alive", b"upgrade", b"", b"content-length", b"transfer-encoding"}

# The same examples on every run, so the suite is stable; PODKIT_FUZZ=1 draws new ones
# (and more of them) to hunt for differences.
FUZZ = os.environ.get("PODKIT_FUZZ") == "1"
EXAMPLES = settings(
    max_examples=5000 if FUZZ else 300,
    derandomize=not FUZZ,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


def mostly(
    good: st.SearchStrategy[bytes], bad: st.SearchStrategy[bytes]
) -> st.SearchStrategy[bytes]:
    """Nine times in ten a well-formed piece: most heads must get past the first check
    for the parsers' readings (not only their refusals) to be compared."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 0 else good)


# header names by what they do, each with the values that matter for it
FIELDS: dict[bytes, list[bytes]] = {
    b"Host": [b"a", b"example.com:8080", b""],
    b"Content-Length": [b"0", b"5", b"05", b"12", b"5, 5", b"+5", b"-1", b"1 2", b"9" * 20],
    b"Transfer-Encoding": [
        b"chunked",
        b"Chunked",
        b"gzip, chunked",
        b"chunked, gzip",
        b"identity",
        b"chunked,",
        b"",
    ],
    b"Connection": [
        b"close",
        b"keep-alive",
        b"Keep-Alive, Content-Length",
        b"close, transfer-encoding",
        b"x-a, host",
        b"X-A",
        b"authorization",
        b"upgrade",
        b"te, trailer",
    ],
    b"Upgrade": [b"websocket", b"h2c"],
    b"Keep-Alive": [b"timeout=5"],
    b"TE": [b"trailers"],
    b"X-Request-Id": [b"r-1"],
    b"X-Forwarded-For": [b"10.0.0.1"],
    b"Authorization": [b"Bearer app"],
    b"X-A": [
        b"a",
        b"",
        b" padded ",
        b"\tx\t",
        b"caf\xc3\xa9",
        b"a\x7fb",
        b"a\x01b",
        b"a\x0bb",
        b"a\x0cb",
        b"a\x00b",
        b"a\rb",
        b"a\x1bb",
    ],
}
# framing and Connection three times as often as the others: their mixes are the attacks
NAME_WEIGHTS = sorted(FIELDS) + [b"Content-Length", b"Transfer-Encoding", b"Connection"] * 2
BAD_NAMES = st.sampled_from(
    [b"Host ", b" Host", b"Content-Length ", b"Trans\x00fer-Encoding", b"X:Y", b"", b"\xc3\xa9"]
)
SEPS = mostly(st.sampled_from([b": ", b":", b":\t", b":  "]), st.sampled_from([b" :", b"\t:"]))
EOLS = mostly(st.just(b"\r\n"), st.sampled_from([b"\n", b"\r", b"\r\n ", b"\r\n\t"]))


def _case(name: bytes, how: int) -> bytes:
    return (name, name.lower(), name.upper())[how]


@st.composite
def header_lines(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(NAME_WEIGHTS))
        value = draw(mostly(st.sampled_from(FIELDS[name]), st.binary(max_size=10)))
        name = draw(mostly(st.integers(0, 2).map(lambda i, n=name: _case(n, i)), BAD_NAMES))
        out += draw(EOLS) + name + draw(SEPS) + value
    return out


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    method = draw(
        mostly(
            st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"M-SEARCH"]),
            st.sampled_from([b"get", b"G T", b"GET\x00", b""]),
        )
    )
    target = draw(
        mostly(
            st.sampled_from([b"/", b"/a?b=c", b"*", b"http://h/x", b"/%2e%2e/"]),
            st.one_of(
                st.sampled_from([b"/caf\xc3\xa9", b"/a b", b"", b"/\x7f"]),
                st.binary(min_size=1, max_size=8),
            ),
        )
    )
    version = draw(
        mostly(
            st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
            st.sampled_from([b"HTTP/1.2", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "]),
        )
    )
    sp = draw(mostly(st.just(b" "), st.sampled_from([b"  ", b"\t"])))
    head = method + sp + target + sp + version
    if draw(mostly(st.just(b"y"), st.just(b""))):
        head += b"\r\nHost: " + draw(st.sampled_from([b"a", b"example.com:80", b""]))
    return head + draw(header_lines())


@st.composite
def response_heads(draw: st.DrawFn) -> bytes:
    version = draw(
        mostly(
            st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
            st.sampled_from([b"HTTP/1.2", b"HTTP/2", b"http/1.1"]),
        )
    )
    code = draw(
        mostly(
            st.sampled_from([b"200", b"204", b"304", b"100", b"103", b"404", b"500"]),
            st.sampled_from([b"099", b"2000", b"20", b"2x0"]),
        )
    )
    reason = draw(
        mostly(
            st.sampled_from([b" OK", b"", b" ", b" Caf\xc3\xa9", b" Not Found"]),
            st.sampled_from([b" a\x00b", b" a\rb", b"OK"]),
        )
    )
    head = version + b" " + code + reason
    return head + draw(header_lines())


def _h11_request(head: bytes) -> h11.Request | None:
    c = h11.Connection(h11.SERVER)
    try:
        c.receive_data(head + b"\r\n\r\n")
        ev = c.next_event()
    except h11.RemoteProtocolError:
        return None
    return ev if isinstance(ev, h11.Request) else None


def _h11_response(head: bytes, method: bytes) -> h11.Response | h11.InformationalResponse | None:
    c = h11.Connection(h11.CLIENT)
    c.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    c.send(h11.EndOfMessage())
    try:
        c.receive_data(head + b"\r\n\r\n")
        ev = c.next_event()
    except h11.RemoteProtocolError:
        return None
    return ev if isinstance(ev, h11.Response | h11.InformationalResponse) else None


def _tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [t.strip().lower() for n, v in headers if n == name for t in v.split(b",")]


def _lines(block: bytes) -> list[tuple[bytes, bytes]]:
    """`\\r\\nName: value` lines as (lower-case name, value without surrounding OWS)."""
    out = []
    for line in block.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        out.append(_normal(name.lower(), value.strip(b" \t")))
    return out


def _normal(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """h11 lower-cases transfer codings (they are case-insensitive): compare them so."""
    return (name, value.lower() if name == b"transfer-encoding" else value)


def _known_leniency(head: bytes) -> bool:
    """Heads the proxy accepts on purpose while h11 refuses them."""
    first = head.split(b"\r\n", 1)[0]
    parts = first.split(b" ")
    # a raw UTF-8 (obs-text) request-target, which nginx also passes on
    return len(parts) == 3 and any(b >= 0x80 for b in parts[1])


@EXAMPLES
@given(request_heads())
def test_request_heads_agree_with_h11(head: bytes) -> None:
    assume(b"\r\n\r\n" not in head)  # the blank line ends a head before parsing starts
    try:
        req: Request | None = parse_request(head, RULES)
    except ProtocolError as exc:
        assert exc.status in (400, 431, 501)
        req = None
    ev = _h11_request(head)
    if req is None:
        return  # refusing more than h11 is allowed
    if ev is None:
        assert _known_leniency(head), f"proxy accepted what h11 refuses: {head!r}"
        return
    assert (req.method, req.target) == (ev.method, ev.target)
    assert ev.http_version == (b"1.1" if req.minor else b"1.0")
    kind, args = _body_framing(ev.method, ev)
    if req.chunked:
        assert kind == "chunked"
    else:
        assert (kind, args) == ("content-length", (req.body_len,))
    headers = [_normal(n, v) for n, v in ev.headers]
    if req.minor == 1:
        assert req.keep_alive == _keep_alive(ev)
    hosts = [v for n, v in headers if n == b"host"]
    assert req.host == (hosts[0] if hosts else None)
    # every header line is passed on unchanged and in order, except the hop-by-hop
    # ones, those the proxy replaces, and those Connection names (never framing)
    listed = set(_tokens(headers, b"connection")) - NEVER_LISTED - {b"host"}
    expected = [(n, v) for n, v in headers if n not in REQ_GONE and n not in listed]
    assert _lines(req.kept) == expected


@EXAMPLES
@given(response_heads(), st.sampled_from([b"GET", b"HEAD"]))
def test_response_heads_agree_with_h11(head: bytes, method: bytes) -> None:
    assume(b"\r\n\r\n" not in head)
    try:
        resp: Response | None = parse_response(head, method == b"HEAD")
    except ProtocolError as exc:
        assert exc.status == 502
        resp = None
    ev = _h11_response(head, method)
    if resp is None:
        return
    headers = [_normal(n, v) for n, v in ev.headers] if ev is not None else []
    te = _tokens(headers, b"transfer-encoding")
    if ev is None:
        # h11 knows no transfer coding but chunked; the proxy passes the others on
        # (read until close when chunked is not last, RFC 9112 6.3)
        lines = _lines(b"\r\n" + head.split(b"\r\n", 1)[1] if b"\r\n" in head else b"")
        assert any(n == b"transfer-encoding" for n, _ in lines), (
            f"proxy accepted what h11 refuses: {head!r}"
        )
        return
    assert resp.status == ev.status_code
    assert resp.minor == (1 if ev.http_version == b"1.1" else 0)
    if resp.status < 200:
        assert resp.body == BODY_NONE
    else:
        assert isinstance(ev, h11.Response)
        kind, args = _body_framing(method, ev)
        if resp.body == BODY_NONE:
            assert (kind, args) == ("content-length", (0,))
        elif resp.body == BODY_CHUNKED:
            assert kind == "chunked"
        elif resp.body == BODY_EOF:
            assert kind == "http/1.0"
        else:
            assert (kind, args) == ("content-length", (resp.body,))
        if resp.minor == 1 and not _keep_alive(ev):  # h11 keeps no HTTP/1.0 connection
            assert not resp.keep_alive  # the proxy may close more often, never less
    listed = set(_tokens(headers, b"connection")) - NEVER_LISTED - {b"host"}
    expected = [(n, v) for n, v in headers if n not in RESP_GONE and n not in listed]
    got = _lines(resp.head)
    if te and any(n == b"content-length" for n, _ in headers) and resp.body == BODY_CHUNKED:
        # TE and CL: the proxy drops the length and states the coding once, at the end
        expected = [
            (n, v) for n, v in expected if n not in (b"content-length", b"transfer-encoding")
        ]
        assert got[-1] == (b"transfer-encoding", b"chunked")
        got = got[:-1]
    assert got == expected
    if any(t in (b"content-length", b"transfer-encoding") for t in _tokens(headers, b"connection")):
        assert resp.close_client and not resp.keep_alive


@EXAMPLES
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_never_crash_the_parsers(data: bytes, head_method: bool) -> None:
    for parse in (lambda: parse_request(data, RULES), lambda: parse_response(data, head_method)):
        try:
            parse()
        except ProtocolError:
            pass


CHUNK_PIECES = st.sampled_from(
    [
        b"5\r\nhello\r\n",
        b"1;a=b\r\nx\r\n",
        b"A\r\n0123456789\r\n",
        b'a;x="q"\r\n0123456789\r\n',
        b"5 ;x\r\nhello\r\n",  # BWS before the extension: RFC 9112 7.1.1 allows it
        b"5;a\rb\r\nhello\r\n",  # bare CR in an extension
        b"5\nhello\r\n",  # bare LF
        b"-5\r\nhello\r\n",
        b"0x5\r\nhello\r\n",
        b" 5\r\nhello\r\n",
        b"10000000000000005\r\nhello\r\n",
        b"5\r\nhelloXX",  # no CRLF after the data
        b"3\r\nhello\r\n",  # more data than the size
    ]
)
TRAILERS = st.sampled_from([b"X-T: 1\r\n", b"Y: \r\n", b" folded\r\n", b"Z:\x00\r\n", b"Q\r\n"])


def _h11_chunked(body: bytes) -> bytes | None:
    """The data h11 reads from a chunked body, or None when it refuses or wants more."""
    c = h11.Connection(h11.SERVER)
    c.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    out = b""
    try:
        while True:
            ev = c.next_event()
            if isinstance(ev, h11.Data):
                out += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                return out
            elif ev is h11.NEED_DATA:
                return None
    except h11.RemoteProtocolError:
        return None


@EXAMPLES
@given(st.lists(CHUNK_PIECES, max_size=5), st.lists(TRAILERS, max_size=3), st.integers(1, 40))
def test_chunked_bodies_agree_with_h11(
    pieces: list[bytes], trailers: list[bytes], step: int
) -> None:
    body = b"".join(pieces) + b"0\r\n" + b"".join(trailers) + b"\r\n"
    f = ChunkedFramer()
    data: list[bytes] = []
    f.out = data
    used = 0
    try:
        for i in range(0, len(body), step):
            if f.done:
                break
            used += f.feed(body[i : i + step])
    except ProtocolError as exc:
        assert exc.status == 400
        return  # refusing more than h11 is allowed
    if not f.done:
        return  # still waiting: a size larger than what follows
    theirs = _h11_chunked(body)
    if theirs is None:
        assert b"5 ;x" in body, f"proxy accepted a chunked body h11 refuses: {body!r}"
        return
    assert b"".join(data) == theirs
    assert used == len(body)  # the end found at the same byte: nothing left over


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb",  # VT: h11 refuses, so does the proxy now
        b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 05\r\nContent-Length: 5",
    ],
)
def test_differences_found_by_the_differential_test_are_closed(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(head, RULES)
