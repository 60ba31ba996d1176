"""http:// and https://: ready when the response matches the --http-* conditions.

A small HTTP/1.1 client of its own rather than aiohttp: one request per
attempt needs none of a pooled client's machinery, and importing aiohttp would
cost waitfor about 10 MB and 150 ms of start-up.
"""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import SplitResult, urljoin, urlsplit

from podkit import __version__

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, close, open_stream

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
#: Not sent on after a redirect to another scheme, host or port (as curl since
#: CVE-2018-1000007): a redirect must not hand the token to whoever it points at.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@register
class HTTPProbe(Probe):
    schemes = ("http", "https")
    default_ports = {"http": 80, "https": 443}
    allows_path = True

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        # Query strings belong to the request, not to us: keep them out of the base parser.
        super().__init__(url, parts._replace(query=""), settings)
        self.target = _request_target(parts)
        self.auth = None
        if self.user is not None:
            creds = f"{self.user}:{self.password or ''}".encode()
            self.auth = "Basic " + base64.b64encode(creds).decode()

    async def check(self) -> None:
        scheme, host, port, target = self.scheme, self.host, self.port, self.target
        opts = self.settings.http
        for _hop in range(MAX_REDIRECTS + 1):
            status, headers, body = await self._request(scheme, host, port, target)
            location = _first(headers, "location")
            if opts.follow_redirects and status in REDIRECTS and location:
                base = f"{scheme}://{_hostport(host, port, scheme)}{target}"
                nxt = urlsplit(urljoin(base, location))
                if nxt.scheme not in ("http", "https") or not nxt.hostname:
                    raise NotReady(f"HTTP {status} redirect to unsupported {location!r}")
                scheme, host = nxt.scheme, nxt.hostname
                port = nxt.port or self.default_ports[scheme]
                target = _request_target(nxt)
                continue
            break
        else:
            raise NotReady(f"more than {MAX_REDIRECTS} redirects")
        if not opts.status_ok(status):
            raise NotReady(f"HTTP {status} (want {opts.status_text()})")
        for name, pattern in opts.headers:
            values = headers.get(name.lower())
            if values is None:
                raise NotReady(f"HTTP {status} without header {name}")
            if pattern is not None and not any(pattern.search(v) for v in values):
                raise NotReady(f"HTTP {status}: header {name} does not match {pattern.pattern!r}")
        if opts.body_regex is not None and not opts.body_regex.search(
            body.decode("utf-8", "replace")
        ):
            raise NotReady(f"HTTP {status}: body does not match {opts.body_regex.pattern!r}")

    async def _request(
        self, scheme: str, host: str, port: int, target: str
    ) -> tuple[int, dict[str, list[str]], bytes]:
        opts = self.settings.http
        tls = self.settings.ssl_context() if scheme == "https" else None
        reader, writer = await open_stream(host, port, tls=tls)
        try:
            lines = [
                f"{opts.method} {target} HTTP/1.1",
                f"Host: {_hostport(host, port, scheme)}",
                f"User-Agent: podkit-waitfor/{__version__}",
                "Accept: */*",
                "Connection: close",
            ]
            same_origin = (scheme, host, port) == (self.scheme, self.host, self.port)
            given = {name.lower() for name, _ in opts.request_headers}
            if self.auth and "authorization" not in given and same_origin:
                lines.append(f"Authorization: {self.auth}")
            lines += [
                f"{name}: {value}"
                for name, value in opts.request_headers
                if same_origin or name.lower() not in CREDENTIAL_HEADERS
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            while True:
                status, headers = await _read_head(reader)
                # Interim answers (100 Continue, 103 Early Hints) precede the real one.
                if not 100 <= status < 200 or status == 101:
                    break
            body = b""
            if opts.body_regex is not None and opts.method != "HEAD":
                body = await _read_body(reader, status, headers)
            return status, headers, body
        finally:
            await close(writer)


def _request_target(parts: SplitResult) -> str:
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def _hostport(host: str, port: int, scheme: str) -> str:
    h = f"[{host}]" if ":" in host else host
    return h if port == {"http": 80, "https": 443}[scheme] else f"{h}:{port}"


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, list[str]]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise NotReady(f"not an HTTP response: {lines[0][:60]!r}")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return int(parts[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: dict[str, list[str]]
) -> bytes:
    if status in (204, 304):
        return b""
    if "chunked" in (_first(headers, "transfer-encoding") or "").lower():
        body = bytearray()
        while len(body) < MAX_MESSAGE:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise NotReady("malformed chunked body") from None
            if size == 0:
                break
            if size > MAX_MESSAGE - len(body):
                # readexactly() buffers all it waits for: a hostile chunk size
                # must not decide how much memory one attempt takes.
                body += await reader.readexactly(MAX_MESSAGE - len(body))
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return bytes(body[:MAX_MESSAGE])
    length = _first(headers, "content-length")
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), MAX_MESSAGE))
    body = bytearray()
    while len(body) < MAX_MESSAGE:
        chunk = await reader.read(MAX_MESSAGE - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
