"""The HTTP family's shared client (session, TLS, headers, compression, auth) and
the plain NDJSON-over-HTTP sink."""

from __future__ import annotations

import base64
import gzip
import ssl
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_plus, urlsplit

from ..http import AuthOptions, TLSClientOptions, client_session, parse_headers, ssl_context
from ..options import UsageError
from ..secrets import credential_params, register_secret, scrub
from ._base import (
    _SPLIT_STATUSES,
    Outcome,
    Retry,
    Sink,
    _describe,
    _retryable_status,
    parse_retry_after,
    register_sink,
)
from ._batch import Batch

_G = TypeVar("_G", AuthOptions, TLSClientOptions)

#: Values of `--compress` (zstd needs the optional `zstandard` package).
COMPRESSIONS = ("none", "gzip", "zstd")


#: The sink's parameters named as logship's flags (`username`, not the group's
#: `basic_auth_user`): the names under which logship includes the core groups,
#: so its flags, env variables, config keys and messages stay as they were.
AUTH_NAMES = {"basic_auth_user": "username", "basic_auth_password_file": "password_file"}
TLS_NAMES = {"cert_file": "client_cert_file", "key_file": "client_key_file"}


def _header_file_items(items: list[str] | tuple[str, ...] | dict[str, str]) -> list[str]:
    """`NAME=FILE` items, or a mapping of them (a library caller's `{name: file}`)."""
    if isinstance(items, dict):
        return [f"{k}={v}" for k, v in items.items()]
    return list(items)


def _register_url_credentials(url: str) -> None:
    """aiohttp sends a URL's user:password@ as basic auth: the password (as written and
    decoded) and the header value it makes are scrubbed, as a --password-file's are;
    and so is a credential in the query (`?dd-api-key=`), which aiohttp's errors quote
    with the URL."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return
    for _, value in credential_params(parts.query):
        register_secret(value)
        register_secret(unquote_plus(value))
    if not password:
        return
    user, plain = unquote(parts.username or ""), unquote(password)
    register_secret(password)
    register_secret(plain)
    try:  # aiohttp's BasicAuth encodes latin-1
        register_secret(base64.b64encode(f"{user}:{plain}".encode("latin-1")).decode())
    except UnicodeEncodeError:
        pass


class _HTTPSink(Sink):
    """Shared by the HTTP, Loki, Elasticsearch and OTLP sinks: session, TLS,
    headers, compression and auth.

    Credentials and TLS are the core's option groups (`podkit.http`:
    `AuthOptions`, `TLSClientOptions`): a program that includes them passes
    them as `auth=` and `tls=`; otherwise they are built from the sink's
    parameters (`username`, `password_file`, `bearer_token_file`,
    `header_files`, `ca_file`, `client_cert_file`, `client_key_file`,
    `insecure`) and checked by the same rules as every program's flags. Every credential
    comes from a file re-read when it changes (a rotated Secret): the bearer
    token, the basic-auth password, `header_files` values and the client
    certificate (a new session is made when its files change). The values
    are registered as secrets, so they never reach a log line.
    """

    content_type = "application/x-ndjson"

    def _configure(self, **options: Any) -> None:
        headers = options.pop("headers", None) or {}
        if isinstance(headers, list | tuple):
            headers = parse_headers(headers)
        self.headers: dict[str, str] = dict(headers)
        auth = AuthOptions.of(
            AUTH_NAMES,
            bearer_token_file=options.pop("bearer_token_file", None) or None,
            basic_auth_user=options.pop("username", None) or None,
            basic_auth_password_file=options.pop("password_file", None) or None,
            header_file=_header_file_items(options.pop("header_files", None) or []),
        )
        tls = TLSClientOptions.of(
            TLS_NAMES,
            ca_file=options.pop("ca_file", None) or None,
            cert_file=options.pop("client_cert_file", None) or None,
            key_file=options.pop("client_key_file", None) or None,
            insecure=bool(options.pop("insecure", False)),
        )
        # A program that includes the groups hands them over whole (`auth=self.auth`),
        # its own flags named in every message; or it gives their parts, as above.
        self.auth: AuthOptions = self._group("auth", options, auth, AuthOptions)
        self.tls: TLSClientOptions = self._group("tls", options, tls, TLSClientOptions)
        self.compress: str | None = options.pop("compress", None) or None
        if self.compress not in (None, *COMPRESSIONS):
            raise UsageError(
                f"--compress: {self.compress!r} is not one of {', '.join(COMPRESSIONS)}"
            )
        if self.compress == "none":
            self.compress = None
        self._zstd: Any = None
        if self.compress == "zstd":
            try:
                import zstandard
            except ImportError:
                raise UsageError(
                    "--compress zstd: the zstandard package is not installed "
                    "(pip install zstandard, or use --compress gzip)"
                ) from None
            self._zstd = zstandard.ZstdCompressor(level=1)
        self.timeout = float(options.pop("timeout", 30.0))
        self._cert_sig: tuple[Any, ...] | None = None
        self._session: Any = None
        scheme, _, rest = self.url.partition("://")
        base = scheme.split("+", 1)[-1]
        if base not in ("http", "https"):
            raise UsageError(f"--sink {self.safe_url}: expected http or https after '+'")
        self.target = f"{base}://{rest}"
        _register_url_credentials(self.target)
        if self.tls.cert_file and base != "https":
            raise UsageError(f"--client-cert-file: only for https sinks, not {self.safe_url}")
        self._configure_target(options)
        super()._configure(**options)

    def _group(self, key: str, options: dict[str, Any], parts: _G, cls: type[_G]) -> _G:
        """`options[key]` when the caller gave the whole group, else `parts`."""
        given = options.pop(key, None)
        if given is None:
            return parts
        if not isinstance(given, cls):
            raise TypeError(f"{key}=: expected {cls.__name__}, got {type(given).__name__}")
        if parts != cls.of(parts._renamed):  # some part was given too
            raise UsageError(f"--sink {self.safe_url}: give {key}= or its parts, not both")
        return given

    def _configure_target(self, options: dict[str, Any]) -> None:
        pass

    async def start(self) -> None:
        ctx = None
        if self.target.startswith("https://"):
            self._cert_sig = self.tls.cert_signature()
            # Not the group's cached context: a rotated certificate needs a new one.
            t = self.tls
            ctx = ssl_context(t.ca_file, t.insecure, t.cert_file, t.key_file)
        self._session = client_session(
            self.timeout, connect_timeout=min(10.0, self.timeout), ssl_ctx=ctx, limit=4
        )

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(
        self, url: str, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is not None and self.tls.cert_file:
            try:
                renewed = self.tls.cert_signature() != self._cert_sig
            except OSError as exc:
                raise Retry(
                    f"cannot read client certificate: {exc.strerror or exc}", kind="token"
                ) from None
            if renewed:  # a rotated certificate: the next connections present it
                await self._session.close()
                self._session = None
        if self._session is None:
            try:
                await self.start()
            except (OSError, ssl.SSLError) as exc:
                raise Retry(
                    f"cannot load client certificate: {_describe(exc)}", kind="token"
                ) from None
        headers = {"Content-Type": content_type, **self.headers, **(extra or {})}
        try:
            # Read from the files now (each costs one stat when unchanged).
            headers.update(self.auth.headers())
        except UsageError as exc:  # names the flag and the file
            raise Retry(f"cannot read credential file: {exc}", kind="token") from None
        if self.compress == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        elif self._zstd is not None:
            body = self._zstd.compress(body)
            headers["Content-Encoding"] = "zstd"
        async with self._session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            return resp.status, dict(resp.headers), data

    def _whole(self, batch: Batch, status: int, headers: dict[str, str], body: bytes) -> Outcome:
        """The verdict on a whole request from its status code."""
        if 200 <= status < 300:
            return Outcome()
        # scrubbed before it is cut: a credential the answer quotes across the cut
        # would leave its first part, which no registered value matches
        text = scrub(body[:4096].decode("utf-8", "replace"))[:300].strip()
        reason = f"HTTP {status}" + (f": {text}" if text else "")
        if _retryable_status(status):
            kind = f"http_{status}" if status < 500 else "http_5xx"
            raise Retry(reason, parse_retry_after(headers.get("Retry-After")), kind)
        if status in _SPLIT_STATUSES:
            return Outcome(refused=(status, reason))
        # 401, 403, 404...: every record would be refused alike; nothing to isolate.
        return Outcome([], [(i, status, reason) for i in range(len(batch))])


@register_sink
class HTTPSink(_HTTPSink):
    """NDJSON batches POSTed to any HTTP endpoint."""

    schemes = ("http", "https")

    async def _attempt(self, batch: Batch) -> Outcome:
        status, headers, body = await self._post(self.target, self._body(batch), self.content_type)
        return self._whole(batch, status, headers, body)
