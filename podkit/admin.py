"""The admin server every program gets: /healthz, /readyz, /metrics, /.

A small HTTP/1.1 server on asyncio rather than aiohttp's: its clients are the
kubelet's probes, Prometheus and the odd webhook, and importing aiohttp's
server costs an idle sidecar about 14 MB of RSS and 200 ms of start-up, which
every pod would pay. It keeps connections alive, bounds what a client may send
and how slowly, and never lets a handler's failure kill it.

Whoever can reach the port must not starve the program: `_admin_listener`
caps connections within the free descriptors and keeps headroom for the
probes (a connection past the cap gets /healthz and /readyz only); here a body
is read only up to what the route takes (none for the built-in routes), and
heads are held to `podkit._http1`'s grammar and limits. TLS and basic/bearer
auth from files, re-read on change, live in `_admin_auth`, imported only when
configured; the probes may be left open for the kubelet.

Setup and teardown are explicit steps (start, stop), as in aiohttp's
web_runner, so the runner controls exactly when the port opens and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ._admin_listener import FAILURES, Listener, _Conn
from ._admin_listener import PROBE_HEADROOM as PROBE_HEADROOM
from ._http1 import ParseError, loads_json, parse_content_length, parse_request_head
from .aio import wait_for
from .logs import rfc3339, where
from .options import UsageError
from .secrets import scrub

if TYPE_CHECKING:
    from ._admin_auth import AuthFile, TLSFiles
    from .program import Program

log = logging.getLogger("podkit.admin")

MAX_HEAD = 16 * 1024
#: What a program route takes unless it says otherwise (`add_route(max_body=...)`).
MAX_BODY = 1 << 20
#: A body sent to a route that takes none is read and dropped up to this size
#: (so the connection stays usable); a larger one is answered 413 unread.
DRAIN_MAX = 1024
#: A client gets this long to send a whole request head (also the keep-alive idle limit).
HEAD_TIMEOUT = 30.0
BODY_TIMEOUT = 30.0
#: A client that does not read its answer is dropped after this long.
WRITE_TIMEOUT = 30.0
#: What a connection past the cap may ask for; it gets one answer, then is closed.
PROBES = frozenset({"/healthz", "/readyz"})


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def json(self) -> Any:
        """The body as JSON; nesting deeper than `_http1.MAX_JSON_DEPTH` raises ValueError."""
        return loads_json(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, text.encode())

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Response:
        text = scrub(json.dumps(data, indent=2, default=str))
        return cls(status, (text + "\n").encode(), "application/json")

    def encode(self, *, head_only: bool, close: bool) -> bytes:
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Status"
        lines = [
            f"HTTP/1.1 {self.status} {reason}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
        ]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


Handler = Callable[[Request], Awaitable[Response]]

#: A refused request: `status` is the answer, the message its text.
BadRequest = ParseError


@dataclass
class Route:
    handler: Handler
    #: The largest body the route reads (0: none).
    max_body: int = 0
    #: Whether --admin-auth-file applies (False for a route that checks its own credentials).
    auth: bool = True


def parse_head(head: bytes) -> tuple[Request, bool]:
    """The request and whether the connection may be kept alive after it."""
    method, target, version, fields = parse_request_head(head)
    try:
        # Request.path and .query split the target again; a bracketed host that
        # is no IP address ("//[x]/") makes urlsplit raise: refuse it here.
        urlsplit(target)
    except ValueError:
        raise BadRequest(400, "malformed request target") from None
    headers: dict[str, str] = {}
    for key, value in fields:
        if key in headers and key in ("content-length", "host", "transfer-encoding"):
            raise BadRequest(400, f"duplicate {key}")
        headers[key] = value
    conn = headers.get("connection", "").lower()
    keep = "close" not in conn if version == "1.1" else "keep-alive" in conn
    return Request(method, target, headers), keep


def setting(program: Program, name: str) -> Any:
    """An admin option's value, or its declared default when the runner did not set it."""
    try:
        return getattr(program, name)
    except AttributeError:
        return getattr(type(program), name).default


def check_admin_settings(program: Program) -> None:
    """Refuse bad admin options at start (exit 2), naming the flag."""
    cert, key = setting(program, "admin_tls_cert_file"), setting(program, "admin_tls_key_file")
    auth, ca = setting(program, "admin_auth_file"), setting(program, "admin_tls_client_ca_file")
    if bool(cert) != bool(key):
        raise UsageError("--admin-tls-cert-file and --admin-tls-key-file go together")
    if ca and not cert:
        raise UsageError("--admin-tls-client-ca-file needs --admin-tls-cert-file")
    if not cert and not auth:
        return  # _admin_auth imports hashlib: ~0.6 MB an idle sidecar need not pay
    from ._admin_auth import AuthFile, TLSFiles

    try:
        if cert:
            TLSFiles(cert, key, ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--admin-tls-cert-file {cert}: {exc}") from None
    try:
        if auth:
            AuthFile(auth)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--admin-auth-file: {exc}") from None


class AdminServer(Listener):
    stream_limit = MAX_HEAD

    def __init__(
        self,
        program: Program,
        addr: str,
        *,
        routes: dict[tuple[str, str], Handler] | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        """With `routes` (instead of the admin routes) and `tls`, the same
        HTTP/1.1 server serves a program's own endpoint (the injector's webhook)."""
        super().__init__(addr, setting(program, "admin_max_connections"))
        self.program = program
        self.tls: TLSFiles | None = tls
        self.auth: AuthFile | None = None
        self.exempt_probes: bool = setting(program, "admin_auth_exempt_probes")
        self.auth_failures = 0
        self._last_auth_log = -60.0
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): Route(self.healthz),
            ("GET", "/readyz"): Route(self.readyz),
            ("GET", "/metrics"): Route(self.metrics),
            ("GET", "/"): Route(self.index),
        }
        for method, path, handler, max_body, auth_on in program.routes:
            limit = MAX_BODY if max_body is None else max_body
            self._routes[(method.upper(), path)] = Route(handler, limit, auth_on)
        if routes is not None:
            self._routes = {
                (m.upper(), path): Route(h, MAX_BODY) for (m, path), h in routes.items()
            }

    async def start(self) -> None:
        """Read the TLS and credential files, then open the port (OSError if either fails)."""
        p = self.program
        cert, key = setting(p, "admin_tls_cert_file"), setting(p, "admin_tls_key_file")
        auth = setting(p, "admin_auth_file")
        if cert or auth:  # hashlib and yaml cost an idle sidecar RSS: only when used
            from ._admin_auth import AuthFile, TLSFiles

            try:
                ca = setting(p, "admin_tls_client_ca_file")
                self.tls = TLSFiles(cert, key, ca) if cert and key else None
                self.auth = AuthFile(auth) if auth else None
            except ValueError as exc:  # a file changed since check_admin_settings read it
                raise OSError(str(exc)) from None
        await super().start()

    def handshake_timeout(self) -> float:
        return HEAD_TIMEOUT

    async def _requests(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while self._open:
            conn.waiting_since = time.monotonic()
            try:
                head = await wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            except asyncio.LimitOverrunError:
                await self._reply(conn, writer, Response.text("header too large\n", 431), True)
                return
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
                return
            try:
                request, keep = parse_head(head[:-4])
            except BadRequest as exc:
                await self._reply(conn, writer, Response.text(f"{exc}\n", exc.status), True)
                return
            conn.waiting_since = None
            keep = keep and not conn.probe_only
            response = self._refuse(conn, request)
            body_ok = response is None
            if response is None:
                try:
                    request.body = await self._body(conn, reader, request)
                except BadRequest as exc:
                    response, body_ok = Response.text(f"{exc}\n", exc.status), False
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
                    return
            if response is None:
                conn.waiting_since = None
                response = await self._dispatch(request)
            # An unread body would be taken for the next request: close after the answer.
            keep = keep and self._open and (body_ok or not _declares_body(request))
            await self._reply(conn, writer, response, not keep, request.method == "HEAD")
            if not keep:
                return

    def _route(self, request: Request) -> tuple[Route | None, Response | None]:
        method = "GET" if request.method == "HEAD" else request.method
        path = request.path
        route = self._routes.get((method, path))
        if route is not None:
            return route, None
        allowed = sorted(m for (m, p) in self._routes if p == path)
        if allowed:
            return None, Response(
                405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)}
            )
        return None, Response.text("not found\n", 404)

    def _refuse(self, conn: _Conn, request: Request) -> Response | None:
        """The answer that ends a request before its body is read, if it ends there."""
        probe = request.path in PROBES
        if conn.probe_only and not probe:
            return Response.text("admin server busy\n", 503)
        route, answer = self._route(request)
        if route is None:
            return answer
        if not route.auth or (probe and self.exempt_probes):
            return None
        if self.tls is not None and self.tls.client_ca and not _peer_cert(conn):
            return Response.text("client certificate required\n", 403)
        if self.auth is not None:
            self.auth.refresh()
            if not self.auth.allows(request.headers.get("authorization")):
                self.auth_failures += 1
                now = time.monotonic()
                if now - self._last_auth_log >= 60:  # never the credentials, at most once a minute
                    self._last_auth_log = now
                    log.warning(
                        "admin request refused: no valid credentials",
                        extra={"path": request.path, "refused_total": self.auth_failures},
                    )
                return Response(
                    401,
                    b"unauthorized\n",
                    headers={"WWW-Authenticate": self.auth.challenge()},
                )
        return None

    async def _body(self, conn: _Conn, reader: asyncio.StreamReader, request: Request) -> bytes:
        if "transfer-encoding" in request.headers:
            raise BadRequest(411, "send a Content-Length")
        try:
            length = parse_content_length(request.headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest(400, "malformed Content-Length") from None
        if not length:
            return b""
        route, _ = self._route(request)
        limit = route.max_body if route is not None else 0
        if length > limit and not (limit == 0 and length <= DRAIN_MAX):
            raise BadRequest(413, "body too large")
        conn.waiting_since = time.monotonic()
        body = await wait_for(reader.readexactly(length), BODY_TIMEOUT)
        return body if limit else b""  # drained: the route takes no body

    async def _dispatch(self, request: Request) -> Response:
        route, answer = self._route(request)
        if route is None:
            assert answer is not None
            return answer
        try:
            return await route.handler(request)
        except Exception as exc:
            # A client can ask again and again for what fails: throttled, per route and kind.
            FAILURES.log(
                f"{request.path} {type(exc).__name__}",
                logging.ERROR,
                "admin handler failed",
                path=request.path,
                error=f"{type(exc).__name__}: {exc}"[:300],
                where=where(exc),
            )
            return Response.text("internal error\n", 500)

    @staticmethod
    async def _reply(
        conn: _Conn,
        writer: asyncio.StreamWriter,
        response: Response,
        close: bool,
        head_only: bool = False,
    ) -> None:
        conn.waiting_since = time.monotonic()  # a client that does not read may be evicted
        try:
            writer.write(response.encode(head_only=head_only, close=close))
            await wait_for(writer.drain(), WRITE_TIMEOUT)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass

    # -- the built-in endpoints ------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        reason = self.program.health()
        if _verbose(request):
            checks = {"program": reason, **self.program.checks()["health"]}
            return _verbose_answer("healthz", checks)
        if reason:
            return Response.text(f"unhealthy: {reason}\n", 503)
        return Response.text("ok\n")

    async def readyz(self, request: Request) -> Response:
        p = self.program
        if _verbose(request):
            checks = {**p.checks()["ready"], "not-stopping": "stopping" if p.stopping else None}
            return _verbose_answer("readyz", checks)
        if p.ready and not p.stopping:
            return Response.text("ready\n")
        return Response.text("not ready\n", 503)

    async def metrics(self, request: Request) -> Response:
        # A failing refresh is the program's business; it must never turn the
        # scrape into a 500 (the program's own metrics say what went wrong).
        try:
            await self.program.before_metrics()
        except Exception as exc:
            # Anyone who can scrape can repeat it: throttled like a handler's failure.
            FAILURES.log(
                f"before_metrics {type(exc).__name__}",
                logging.ERROR,
                "refreshing metrics before a scrape failed",
                error=f"{type(exc).__name__}: {exc}"[:300],
                where=where(exc),
            )
        body, ctype = self.program.metrics.render(request.headers.get("accept"))
        return Response(200, body, ctype)

    async def index(self, request: Request) -> Response:
        p = self.program
        data = {
            "program": p.name,
            "ready": p.ready,
            "healthy": p.health() is None,
            "stopping": p.stopping,
            "uptime_seconds": round(time.time() - p.started_at, 3),
            "started_at": rfc3339(p.started_at),
            "checks": p.checks(),
            # the newest failure's reason, message and time (record_error)
            "error": p.recorded_error,
        }
        data.update(p.status())
        return Response.json(data)


def _verbose(request: Request) -> bool:
    return "verbose" in urlsplit(request.target).query.split("&")


def _verbose_answer(what: str, checks: dict[str, str | None]) -> Response:
    """Kubernetes' `?verbose` layout: one `[+]name ok` / `[-]name failed: why`
    line per check, then the verdict; 503 when any check fails."""
    lines = [f"[+]{n} ok" if r is None else f"[-]{n} failed: {r}" for n, r in checks.items()]
    failed = any(r is not None for r in checks.values())
    lines.append(f"{what} check failed" if failed else f"{what} check passed")
    return Response.text("\n".join(lines) + "\n", 503 if failed else 200)


def _declares_body(request: Request) -> bool:
    cl = request.headers.get("content-length", "0")
    return "transfer-encoding" in request.headers or cl not in ("", "0")


def _peer_cert(conn: _Conn) -> bool:
    """Whether the client sent a certificate (TLS verified it against the client CA)."""
    return conn.transport is not None and bool(conn.transport.get_extra_info("peercert"))
