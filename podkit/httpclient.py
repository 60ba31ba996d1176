"""A one-shot HTTP/1.1 client on asyncio streams, for webhooks and probes.

One request per connection (`Connection: close`), bounded in time and size,
and in count: at most MAX_INTERIM 1xx answers, MAX_HEADERS header fields and
MAX_CHUNKS chunks, numbers in ASCII digits only (`podkit._http1`).
Programs that call out now and then (a reload webhook, a sync hook) use this
rather than an aiohttp session: importing aiohttp's client costs a sidecar
about 14 MB of RSS for machinery (pools, cookies, redirects) a webhook does
not need. Programs with a hot outbound path (logship's sinks) keep aiohttp.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from . import __version__
from ._http1 import MAX_HEADERS, MAX_INTERIM, STATUS_LINE, parse_chunk_size, parse_content_length

MAX_HEAD = 64 * 1024
#: Chunks read from one chunked body: each costs a few awaits, so a body of
#: one-byte chunks is cut off long before it could hold the loop for long.
MAX_CHUNKS = 16 * 1024


class HTTPClientError(Exception):
    """The peer did not speak HTTP as expected (the message says how)."""


@dataclass
class Result:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def host_header(host: str, port: int, scheme: str) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port == {"http": 80, "https": 443}.get(scheme) else f"{h}:{port}"


_BREAKS = re.compile(r"[\r\n\0]")


async def fetch(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
    ssl_ctx: ssl.SSLContext | None = None,
    max_body: int = 1 << 20,
    read_body: bool = True,
) -> Result:
    """Send one request and read the answer; raises OSError, TimeoutError or HTTPClientError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HTTPClientError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
    for name, value in (headers or {}).items():
        # Values come from files (tokens, header files): a CR or LF would end the
        # line and start one of the file's choosing, for every caller at once.
        if _BREAKS.search(name) or _BREAKS.search(value):
            raise HTTPClientError(f"header {name.splitlines()[0]!r}: a CR, LF or NUL in it")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    tls: ssl.SSLContext | None = None
    if parts.scheme == "https":
        tls = ssl_ctx or ssl.create_default_context()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            parts.hostname, port, ssl=tls, limit=MAX_HEAD
        )
        try:
            lines = [
                f"{method} {target} HTTP/1.1",
                f"Host: {host_header(parts.hostname, port, parts.scheme)}",
                f"User-Agent: podkit/{__version__}",
                "Connection: close",
            ]
            given = {k.lower() for k in headers or {}}
            sends_body = body is not None or method in ("POST", "PUT", "PATCH")
            if sends_body and "content-length" not in given:
                lines.append(f"Content-Length: {len(body or b'')}")
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
            await writer.drain()
            status, resp_headers = await read_final_head(reader)
            data = b""
            if read_body and method != "HEAD":
                data = await read_body_of(reader, status, resp_headers, max_body)
            return Result(status, resp_headers, data)
        finally:
            writer.close()


async def read_final_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, list[str]]]:
    """The final response's head, after at most MAX_INTERIM interim (1xx) ones."""
    for _ in range(MAX_INTERIM + 1):
        status, headers = await read_head(reader)
        # Interim answers (100 Continue, 103 Early Hints) precede the real one.
        if not 100 <= status < 200 or status == 101:
            return status, headers
    raise HTTPClientError(f"more than {MAX_INTERIM} interim (1xx) responses")


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, list[str]]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HTTPClientError("response head too large") from None
    except asyncio.IncompleteReadError as exc:
        raise HTTPClientError(
            "connection closed before a response" if not exc.partial else "truncated response"
        ) from None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    m = STATUS_LINE.fullmatch(lines[0])
    if m is None:
        raise HTTPClientError(f"not an HTTP response: {lines[0][:60]!r}")
    if len(lines) - 1 > MAX_HEADERS:
        raise HTTPClientError(f"more than {MAX_HEADERS} header fields")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        # Lenient on purpose (probes and webhooks meet odd servers): a line
        # without a colon is skipped; framing values are checked where used.
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(m.group(3)), headers


async def read_body_of(
    reader: asyncio.StreamReader, status: int, headers: dict[str, list[str]], limit: int
) -> bytes:
    """The body, at most `limit` bytes of it (the rest is left unread)."""
    if status in (204, 304):
        return b""
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if "chunked" in te:
        body = bytearray()
        for _ in range(MAX_CHUNKS):
            if len(body) >= limit:
                break
            try:
                size = parse_chunk_size(await reader.readuntil(b"\r\n"))
            except asyncio.LimitOverrunError:
                raise HTTPClientError("chunk-size line too long") from None
            except ValueError:
                raise HTTPClientError("malformed chunked body") from None
            if size == 0:
                break
            body += await reader.readexactly(min(size, limit - len(body) + 1))
            if len(body) <= limit:
                await reader.readexactly(2)
        else:
            raise HTTPClientError(f"more than {MAX_CHUNKS} chunks")
        return bytes(body[:limit])
    length = headers.get("content-length", [None])[0]
    if length is not None:
        try:
            size = parse_content_length(length)
        except ValueError as exc:
            raise HTTPClientError(str(exc)) from None
        return await reader.readexactly(min(size, limit))
    body = bytearray()
    while len(body) < limit:
        chunk = await reader.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
