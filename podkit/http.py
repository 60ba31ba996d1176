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


class ServerTLS:
    """A server's TLS context whose certificate and key are re-read when their
    files change (cert-manager renews a Secret in place; the kubelet swaps the
    volume's files by symlink).

    Checked on every handshake, before the certificate is chosen (two stat()
    calls, through SNI's callback, which OpenSSL calls with or without a
    server name): the next connection after a renewal already gets the new
    certificate, with no restart and no polling. A pair that does not load
    (a key not yet written next to its new certificate) keeps the old one until
    the files change again.
    """

    def __init__(self, cert_file: str, key_file: str) -> None:
        import logging

        self.log = logging.getLogger("podkit.tls")
        self.files = (SecretFile(cert_file, strip=False), SecretFile(key_file, strip=False))
        self.current = self._load()  # OSError, ssl.SSLError: the caller's start-up fails
        self.context = self._load()
        self.context.sni_callback = self._choose

    def _load(self) -> ssl.SSLContext:
        for f in self.files:
            f.value()  # remember the files' state (and keep the key out of logs)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.files[0].path, self.files[1].path)
        return ctx

    def refresh(self) -> None:
        """Load the files again when either changed; keep the old pair on failure."""
        if not any(f.changed() for f in self.files):
            return
        try:
            self.current = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.log.warning(
                "cannot load the TLS certificate and key; keeping the old ones",
                extra={"cert_file": self.files[0].path, "error": str(exc)},
            )
            return
        self.log.info("TLS certificate reloaded", extra={"cert_file": self.files[0].path})

    def _choose(self, conn: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self.refresh()
        conn.context = self.current
