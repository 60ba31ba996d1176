"""What every probe shares: the parsed target, the probe registry, and errors.

A probe module registers one `Probe` subclass per family of URL schemes with
`@register`. Parsing happens once, before any waiting (a malformed target is a
usage error, exit 2); `check()` runs once per attempt and either returns (the
target is ready) or raises (`NotReady` with the reason, or an OSError).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from podkit import SecretFile, redact_url, register_secret
from podkit.checks import JSONCondition
from podkit.http import TLSClientOptions


class NotReady(Exception):
    """The target answered, but not with what counts as ready; the message says why."""


@dataclass
class HTTPSettings:
    """The --http-* options, shared by every http(s) target of one run."""

    statuses: list[tuple[int, int]] = field(default_factory=lambda: [(200, 399)])
    body_regex: re.Pattern[str] | None = None
    headers: list[tuple[str, re.Pattern[str] | None]] = field(default_factory=list)
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    method: str = "GET"
    follow_redirects: bool = False
    json: list[JSONCondition] = field(default_factory=list)

    @property
    def needs_body(self) -> bool:
        return self.body_regex is not None or bool(self.json)

    def status_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.statuses)

    def status_text(self) -> str:
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.statuses)


@dataclass
class Settings:
    """Run-wide settings a probe may need."""

    http: HTTPSettings = field(default_factory=HTTPSettings)
    #: whom every TLS probe trusts, and the client certificate it presents
    #: (every option at its default, as the group declares it: the system's CAs)
    tls: TLSClientOptions = field(default_factory=TLSClientOptions.of)
    #: the Kubernetes API for k8s:// targets (default: the in-cluster one)
    k8s_api: str | None = None
    k8s_token_file: str | None = None

    def ssl_context(self, verify: bool = True, check_hostname: bool = True) -> ssl.SSLContext:
        """A client TLS context, built once (loading CAs costs a few ms).

        `check_hostname=False` verifies the chain but not the name (libpq's
        verify-ca, MySQL's verify_ca); the client certificate is in every one.
        """
        return self.tls.ssl_context(verify, check_hostname)


class Probe:
    """One target: its URL, parsed and validated, and how to check it."""

    #: URL schemes this probe handles.
    schemes: ClassVar[tuple[str, ...]] = ()
    #: Port used when the URL has none; None makes the port mandatory.
    default_ports: ClassVar[dict[str, int]] = {}
    #: Whether the URL names a network host (tcp, http, ...) or a local path (file, unix).
    network: ClassVar[bool] = True
    #: Query parameters this scheme understands; any other one is a usage error.
    query_keys: ClassVar[frozenset[str]] = frozenset()
    #: Whether a path after host:port means something for this scheme.
    allows_path: ClassVar[bool] = False

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        self.url = url
        self.display = redact_url(url)
        self.scheme = parts.scheme.lower()
        self.settings = settings
        self.host = ""
        self.port = 0
        self.path = unquote(parts.path)
        self.user = unquote(parts.username) if parts.username is not None else None
        self._password = unquote(parts.password) if parts.password is not None else None
        if self._password:
            register_secret(self._password)
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for key in self.query:
            if key not in self.query_keys:
                known = ", ".join(sorted(self.query_keys)) or "none"
                raise ValueError(f"unknown query parameter {key!r} (known: {known})")
        self._password_file: SecretFile | None = None
        if "password_file" in self.query:
            if self._password is not None:
                raise ValueError("give the password in the URL or password_file, not both")
            if not self.query["password_file"]:
                raise ValueError("password_file needs a path")
            self._password_file = SecretFile(self.query["password_file"])
        if self.network:
            self._parse_host_port(parts)
        elif parts.netloc not in ("", "localhost"):
            raise ValueError(f"expected {self.scheme}:///absolute/path (three slashes)")
        elif not self.path.startswith("/"):
            raise ValueError(f"expected {self.scheme}:///absolute/path")
        if self.network and not self.allows_path and parts.path not in ("", "/"):
            raise ValueError(f"unexpected path {parts.path!r}")
        if parts.fragment:
            raise ValueError("unexpected #fragment")

    def _parse_host_port(self, parts: SplitResult) -> None:
        hostport = parts.netloc.rpartition("@")[2]
        if hostport.count(":") > 1 and not hostport.startswith("["):
            raise ValueError("IPv6 addresses go in brackets, e.g. tcp://[::1]:5432")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("invalid port") from None
        host = parts.hostname or ""
        if not host:
            raise ValueError("missing host")
        if any(c.isspace() for c in host) or "/" in host:
            raise ValueError(f"invalid host {host!r}")
        if port is None:
            port = self.default_ports.get(self.scheme)
            if port is None:
                raise ValueError(f"missing port (e.g. {self.scheme}://{host}:5432)")
        elif not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        self.host, self.port = host, port

    @property
    def password(self) -> str | None:
        """The password from the URL, or the current content of password_file (rotation)."""
        if self._password_file is not None:
            try:
                return self._password_file.value()
            except OSError as exc:
                raise NotReady(f"cannot read password_file: {exc.strerror or exc}") from None
        return self._password

    async def check(self) -> None:
        raise NotImplementedError


REGISTRY: dict[str, type[Probe]] = {}

P = TypeVar("P", bound=type[Probe])


def register(cls: P) -> P:
    for scheme in cls.schemes:
        REGISTRY[scheme] = cls
    return cls


def parse_target(text: str, settings: Settings) -> Probe:
    """The probe for one target URL; ValueError naming the problem if it is malformed."""
    if not text or any(c.isspace() for c in text):
        raise ValueError("not a URL")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"malformed URL: {exc}") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in text:
        raise ValueError("not a URL (expected SCHEME://..., e.g. tcp://db:5432)")
    cls = REGISTRY.get(scheme)
    if cls is None:
        raise ValueError(f"unknown scheme {scheme!r} (known: {', '.join(sorted(REGISTRY))})")
    return cls(text, parts, settings)


def flag(value: str) -> bool:
    """A query flag such as ?nonempty=1."""
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")
