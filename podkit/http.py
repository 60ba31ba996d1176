"""HTTP setup shared by every program: client TLS, headers, tokens; a server's
TLS context that follows its certificate files."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .options import UsageError
from .secrets import SecretFile

if TYPE_CHECKING:
    import aiohttp


def ssl_context(
    ca_file: str | None = None,
    insecure: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client TLS context: system CAs or `ca_file`, optional client certificate."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def parse_header(text: str, flag: str = "--header") -> tuple[str, str]:
    """`Name: value` -> (name, value); raises UsageError naming the flag."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
        raise UsageError(f"{flag}: expected 'Name: value', got {text!r}")
    return name, value.strip()


def parse_headers(items: Iterable[str], flag: str = "--header") -> dict[str, str]:
    return dict(parse_header(h, flag) for h in items)


class BearerToken:
    """`Authorization: Bearer <token>` from a file re-read when it changes."""

    def __init__(self, path: str) -> None:
        self.file = SecretFile(path)

    def header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.file.value()}"}


def client_session(
    timeout: float | None = None,
    *,
    connect_timeout: float | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    limit: int = 100,
) -> aiohttp.ClientSession:
    """An aiohttp session with podkit's defaults (no env proxies, no cookie jar)."""
    import aiohttp

    from . import __version__

    connector = aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx is not None else True, limit=limit)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
        headers={"User-Agent": f"podkit/{__version__}", **(headers or {})},
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )
