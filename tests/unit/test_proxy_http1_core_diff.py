"""The proxy's tuned parser against podkit's core HTTP/1.1 grammar (issue 20).

Both answer `parse_request_head(head) -> (method, target, version, headers)` and raise
`podkit._http1.ParseError`. Over generated heads (the pieces request smuggling is made
of: framing headers in odd spellings, bare CR/LF, obs-fold, NUL, control characters):
whatever both accept they read the same; the proxy refuses more than the core only for
the reasons it states (it forwards what it accepts, so it is stricter on framing); and
it accepts nothing the core refuses except the one leniency named below.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from podkit.ambassadors.proxy import http1 as proxy

from podkit import _http1 as core
from tests.unit.test_proxy_http1_diff import EXAMPLES, request_heads

# The reasons the proxy refuses a head the core accepts: each is a rule of the proxy's
# own (it passes the head on, so framing must be unambiguous), not a disagreement.
PROXY_STRICTER = {
    "more than one Host header",
    "both Content-Length and Transfer-Encoding",
    "unsupported Transfer-Encoding",
    "Transfer-Encoding in an HTTP/1.0 request",
    "HTTP/1.1 request without Host",
    "malformed Content-Length",
    "conflicting Content-Length headers",
    "malformed request line",  # HTTP/1.2..1.9: the core reads any 1.x
    "malformed header line (or bare CR/LF, NUL, obs-fold)",  # other CTLs in a value
}


def _parse(parser: object, head: bytes) -> object:
    try:
        return parser.parse_request_head(head)  # type: ignore[attr-defined]
    except core.ParseError as exc:
        return exc


def _leniency(head: bytes) -> bool:
    """A raw UTF-8 (obs-text) request-target: the proxy passes it on, as nginx does."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    return len(parts) == 3 and any(b >= 0x80 for b in parts[1])


@EXAMPLES
@given(request_heads())
def test_proxy_parser_and_core_grammar_agree(head: bytes) -> None:
    assume(b"\r\n\r\n" not in head)
    mine, theirs = _parse(proxy, head), _parse(core, head)
    if isinstance(mine, core.ParseError) and isinstance(theirs, core.ParseError):
        return
    if isinstance(mine, core.ParseError):
        assert str(mine) in PROXY_STRICTER, (head, mine, theirs)
        return
    if isinstance(theirs, core.ParseError):
        assert _leniency(head), f"the proxy accepted what the core refuses: {head!r}"
        return
    assert mine == theirs


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked", 400),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip", 501),
        (b"GET / HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b", 400),
    ],
)
def test_the_proxy_refuses_what_it_must_not_forward(head: bytes, status: int) -> None:
    core.parse_request_head(head)  # the core grammar alone lets each of these through
    with pytest.raises(core.ParseError) as info:
        proxy.parse_request_head(head)
    assert info.value.status == status


def test_the_same_reading_of_a_plain_head() -> None:
    head = b"GET /a?b HTTP/1.0\r\nHost: x\r\nX-A:  padded \t\r\nx-a: 2"
    expected = ("GET", "/a?b", "1.0", [("host", "x"), ("x-a", "padded"), ("x-a", "2")])
    assert proxy.parse_request_head(head) == core.parse_request_head(head) == expected
    with pytest.raises(core.ParseError) as info:
        proxy.parse_request_head(b"GET / HTTP/1.1\r\nHost: a" + b"\r\nX: 1" * 100)
    assert info.value.status == 431
