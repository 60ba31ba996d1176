"""http:// and https://: ready when the response matches the --http-* conditions.

One request per attempt over our own connection (resolved in a daemon thread,
every address tried), read with podkit.httpclient's head and body readers
rather than aiohttp: a pooled client's machinery is not needed, and importing
aiohttp would cost waitfor about 10 MB and 150 ms of start-up.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import SplitResult, urljoin, urlsplit

from podkit import __version__, register_secret, scrub
from podkit.checks import load_json
from podkit.httpclient import host_header, read_body_of, read_final_head

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
            encoded = base64.b64encode(creds).decode()
            register_secret(encoded)  # as secret as the password it encodes
            self.auth = "Basic " + encoded

    async def check(self) -> None:
        scheme, host, port, target = self.scheme, self.host, self.port, self.target
        opts = self.settings.http
        for _hop in range(MAX_REDIRECTS + 1):
            status, headers, body = await self._request(scheme, host, port, target)
            location = _first(headers, "location")
            if opts.follow_redirects and status in REDIRECTS and location:
                base = f"{scheme}://{host_header(host, port, scheme)}{target}"
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
        if opts.json:
            try:
                doc = load_json(body)
            except ValueError as exc:
                raise NotReady(f"HTTP {status}: body is not JSON ({exc})") from None
            for cond in opts.json:
                holds, actual = cond.test(doc)
                if not holds:
                    # scrubbed before it is cut: a key quoted across the cut would
                    # leave its first part, which no registered value matches
                    found = scrub(json.dumps(actual))[:80] if actual is not None else "nothing"
                    raise NotReady(f"HTTP {status}: {cond.text} does not hold (found {found})")

    async def _request(
        self, scheme: str, host: str, port: int, target: str
    ) -> tuple[int, dict[str, list[str]], bytes]:
        opts = self.settings.http
        tls = self.settings.ssl_context() if scheme == "https" else None
        reader, writer = await open_stream(host, port, tls=tls)
        try:
            lines = [
                f"{opts.method} {target} HTTP/1.1",
                f"Host: {host_header(host, port, scheme)}",
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
            # Interim answers (100 Continue, 103 Early Hints) precede the real
            # one, at most a few: a server sending them forever is an error.
            status, headers = await read_final_head(reader)
            body = b""
            if opts.needs_body and opts.method != "HEAD":
                body = await read_body_of(reader, status, headers, MAX_MESSAGE)
            return status, headers, body
        finally:
            await close(writer)


def _request_target(parts: SplitResult) -> str:
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None
