"""HTTP/1.1 grammar and limits, stated once and free of I/O (RFC 9110, RFC 9112).

The admin server reads request heads and the one-shot client reads response
heads with these rules, so both refuse the same bytes, and a test can hold them
against an independent parser (h11) over generated input. The grammar is h11's
(`h11/_abnf.py`), restated; the limits are podkit's own.

Numbers are parsed from ASCII digits only: Python's `int()` also accepts other
Unicode digits ('١٢'), a sign, underscores and surrounding space, none of which
RFC 9110 §8.6 (Content-Length) or RFC 9112 §7.1 (chunk-size) allows.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: The most header fields a head may carry (Go, nginx and h11 all cap them one way or another).
MAX_HEADERS = 100
#: The longest request line (nginx answers 414 past its 8 KiB large_client_header_buffers).
MAX_REQUEST_LINE = 8 * 1024
#: Interim (1xx) responses read before the final one; Go's net/http stops after 5.
MAX_INTERIM = 5
#: Nesting a JSON body may have; deeper is refused before the C decoder recurses.
MAX_JSON_DEPTH = 64

_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
# VCHAR and obs-text; h11 also keeps other CTLs except NUL. ASCII whitespace
# spelled out: on str, `\s` would also take NEL (\x85) and NBSP (\xa0).
_FIELD_VCHAR = r"[^\x00\t\n\x0b\x0c\r ]"
_FIELD_CONTENT = rf"{_FIELD_VCHAR}+(?:[ \t]+{_FIELD_VCHAR}+)*"
REQUEST_LINE = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
STATUS_LINE = re.compile(rf"HTTP/([0-9])\.([0-9]) ([0-9]{{3}})(?: (?:[ \t]|{_FIELD_VCHAR})*)?")
HEADER_LINE = re.compile(rf"({_TOKEN}):[ \t]*((?:{_FIELD_CONTENT})?)[ \t]*")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ParseError(ValueError):
    """A head that breaks the grammar or a limit; `status` is the answer a server gives."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_content_length(value: str) -> int:
    """A Content-Length value: 1 to 18 ASCII digits, nothing else (raises ValueError)."""
    if not _DIGITS.fullmatch(value):
        raise ValueError(f"malformed Content-Length {value[:20]!r}")
    return int(value)


def parse_chunk_size(line: bytes) -> int:
    """The size from a chunk-size line (extensions ignored): hex digits only."""
    size = line.split(b";", 1)[0].rstrip(b" \t\r\n")
    if not _HEX.fullmatch(size):
        raise ValueError(f"malformed chunk size {size[:20]!r}")
    return int(size, 16)


def parse_header_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(lower-case name, value) pairs; obs-fold, bad names or values and too many are refused."""
    if len(lines) > MAX_HEADERS:
        raise ParseError(431, "too many header fields")
    out = []
    for line in lines:
        m = HEADER_LINE.fullmatch(line)
        if m is None:
            raise ParseError(400, "malformed header line")
        out.append((m.group(1).lower(), m.group(2)))
    return out


def parse_request_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Method, target, version ("1.0"/"1.1") and headers from a head without its final CRLF CRLF."""
    lines = head.decode("latin-1").split("\r\n")
    if len(lines[0]) > MAX_REQUEST_LINE:
        raise ParseError(414, "request line too long")
    m = REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        raise ParseError(400, "malformed request line")
    method, target, major, minor = m.groups()
    if major != "1":
        raise ParseError(505, "HTTP version not supported")
    return method, target, f"1.{minor}", parse_header_lines(lines[1:])


def check_json_depth(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` (ValueError) before a decoder recurses into it."""
    raw = data.encode() if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual case, at C speed
        return
    depth = 0
    for m in re.finditer(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', raw):
        c = m.group()
        if c in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise ValueError(f"JSON nested deeper than {limit}")
        elif c in (b"]", b"}"):
            depth -= 1


def loads_json(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    check_json_depth(data, limit)
    return json.loads(data)
