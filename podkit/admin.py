"""The admin server every program gets: /healthz, /readyz, /metrics, /.

A small HTTP/1.1 server on asyncio rather than aiohttp's: its clients are the
kubelet's probes, Prometheus and the odd webhook, and importing aiohttp's
server costs an idle sidecar about 14 MB of RSS and 200 ms of start-up, which
every pod would pay. It keeps connections alive, bounds what a client may send
and how slowly, and never lets a handler's failure kill it.

Whoever can reach the port must not be able to starve the program, so:

- it accepts connections itself, one at a time, and holds at most
  `--admin-max-connections` plus `PROBE_HEADROOM` of them (also while a TLS
  handshake runs), never more than half the file descriptors that were free at
  start, so a flood cannot take the descriptors the program needs for its own
  files;
- past that, a new connection closes the one that has waited longest on its
  client (idle keep-alive, slow head, slow handshake), as nginx reuses idle
  keep-alive connections when it runs out; connections past the cap serve only
  /healthz and /readyz, so the kubelet's probes answer during a flood;
- a body is read only up to what the route takes (none for the built-in
  routes), Content-Length is ASCII digits only, and heads are held to
  `podkit._http1`'s grammar and limits.

TLS (`--admin-tls-cert-file`/`--admin-tls-key-file`, re-read when the files
change, as cert-manager rotates them) and basic/bearer auth
(`--admin-auth-file`, re-read on change) are optional; the probes may be left
open for the kubelet (`--admin-auth-exempt-probes`).

Setup and teardown are explicit steps (start, stop), as in aiohttp's
web_runner, so the runner controls exactly when the port opens and closes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ._http1 import ParseError, loads_json, parse_content_length, parse_request_head
from .options import UsageError, split_addr
from .secrets import scrub

if TYPE_CHECKING:
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
#: Connections kept beyond --admin-max-connections for the kubelet's probes.
PROBE_HEADROOM = 8
#: What a connection past the cap may ask for; it gets one answer, then is closed.
PROBES = frozenset({"/healthz", "/readyz"})
#: The kernel's queue of connections not yet accepted (they hold no descriptor of ours).
BACKLOG = 128


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


def _file_sig(*paths: str) -> tuple[tuple[int, int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class Reloading:
    """Something built from files and rebuilt when they change (one stat per file per use).

    A rebuild that fails keeps what was built before and logs once per change:
    a certificate half-written by a rotation must not take the server down.
    """

    what = "file"

    def __init__(self, *paths: str) -> None:
        self.paths = paths
        self._sig = _file_sig(*paths)
        self._failed: object = None
        self.load()

    def load(self) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        try:
            sig = _file_sig(*self.paths)
        except OSError:
            sig = None  # mid-rotation: keep what we have
        if sig is None or sig == self._sig or sig == self._failed:
            return
        try:
            self.load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._failed = sig
            log.warning(
                f"cannot reload admin {self.what}; keeping the previous one",
                extra={"files": list(self.paths), "error": str(exc)},
            )
            return
        self._sig = sig
        log.info(f"admin {self.what} reloaded", extra={"files": list(self.paths)})


class TLSFiles(Reloading):
    """The server certificate and key; a new context is built on change, then used."""

    what = "TLS certificate"

    def load(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(self.paths[0], self.paths[1])
        self.context = ctx


class AuthFile(Reloading):
    """Credentials from --admin-auth-file (YAML), stored as SHA-256 hashes only.

    ```yaml
    basic_auth_users:              # as exporter-toolkit's web config, but sha256:
      prometheus: sha256:<hex of sha256(password)>
    bearer_tokens:
      - sha256:<hex of sha256(token)>
    ```

    bcrypt (exporter-toolkit's choice) is refused on purpose: at its usual cost
    one check takes ~50 ms of CPU on the event loop, so anyone who can reach the
    port could stall the program with wrong passwords, and it would add a
    compiled dependency to every image. Machine credentials are random, where a
    slow hash adds nothing: use 32 random bytes (`openssl rand -hex 32`).
    """

    what = "auth file"

    def load(self) -> None:
        import yaml

        path = self.paths[0]
        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: not YAML: {exc}") from None
        if not isinstance(data, dict) or set(data) - {"basic_auth_users", "bearer_tokens"}:
            raise ValueError(f"{path}: expected a mapping with basic_auth_users and bearer_tokens")
        users = data.get("basic_auth_users") or {}
        tokens = data.get("bearer_tokens") or []
        if not isinstance(users, dict) or not isinstance(tokens, list):
            raise ValueError(f"{path}: basic_auth_users is a mapping, bearer_tokens a list")
        self.users = {
            str(u): _hash_of(h, f"{path}: basic_auth_users.{u}") for u, h in users.items()
        }
        self.tokens = [_hash_of(h, f"{path}: bearer_tokens[{i}]") for i, h in enumerate(tokens)]
        if not self.users and not self.tokens:
            raise ValueError(f"{path}: no basic_auth_users and no bearer_tokens")

    def challenge(self) -> str:
        schemes = (["Basic"] if self.users else []) + (["Bearer"] if self.tokens else [])
        return ", ".join(f'{s} realm="podkit"' for s in schemes)

    def allows(self, authorization: str | None) -> bool:
        scheme, _, cred = (authorization or "").strip().partition(" ")
        cred = cred.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and self.tokens:
            digest = hashlib.sha256(cred.encode("utf-8", "replace")).digest()
            ok = False
            for t in self.tokens:  # no early exit: the time taken says nothing
                ok |= hmac.compare_digest(digest, t)
            return ok
        if scheme == "basic" and self.users:
            try:
                user, sep, password = base64.b64decode(cred, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            digest = hashlib.sha256(password.encode()).digest()
            expected = self.users.get(user, b"\0" * 32)
            return hmac.compare_digest(digest, expected) and bool(sep) and user in self.users
        return False


def _hash_of(value: Any, where: str) -> bytes:
    text = str(value).strip()
    algo, _, hexdigest = text.partition(":")
    if text.startswith("$2"):
        raise ValueError(f"{where}: bcrypt hashes are not supported; use sha256:<hex>")
    if algo != "sha256" or len(hexdigest) != 64:
        raise ValueError(f"{where}: expected sha256:<64 hex digits>")
    try:
        return bytes.fromhex(hexdigest)
    except ValueError:
        raise ValueError(f"{where}: expected sha256:<64 hex digits>") from None


def check_admin_settings(program: Program) -> None:
    """Refuse bad admin options at start (exit 2), naming the flag."""
    cert, key = setting(program, "admin_tls_cert_file"), setting(program, "admin_tls_key_file")
    if bool(cert) != bool(key):
        raise UsageError("--admin-tls-cert-file and --admin-tls-key-file go together")
    if setting(program, "admin_max_connections") < 1:
        raise UsageError("--admin-max-connections: must be at least 1")
    try:
        if cert:
            TLSFiles(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--admin-tls-cert-file {cert}: {exc}") from None
    auth = setting(program, "admin_auth_file")
    try:
        if auth:
            AuthFile(auth)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--admin-auth-file: {exc}") from None


def fd_budget(wanted: int) -> int:
    """How many admin connections fit in half the descriptors free now.

    The other half stays for the program's own files, sockets and checkpoints.
    """
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return wanted
        in_use = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError):
        return wanted
    return max(1, min(wanted, (soft - in_use) // 2 - PROBE_HEADROOM))


class _Conn:
    """One accepted connection: its task, and since when it waits on its client."""

    __slots__ = ("probe_only", "task", "transport", "waiting_since")

    def __init__(self, probe_only: bool) -> None:
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.waiting_since: float | None = time.monotonic()
        self.probe_only = probe_only

    def abort(self) -> None:
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()  # frees the descriptor now, unlike close()
        if self.task is not None:
            self.task.cancel()


class AdminServer:
    def __init__(self, program: Program, addr: str) -> None:
        self.program = program
        self.addr = addr
        self.port: int | None = None
        self.max_connections: int = setting(program, "admin_max_connections")
        cert = setting(program, "admin_tls_cert_file")
        key = setting(program, "admin_tls_key_file")
        auth = setting(program, "admin_auth_file")
        self.tls = TLSFiles(cert, key) if cert and key else None
        self.auth = AuthFile(auth) if auth else None
        self.exempt_probes: bool = setting(program, "admin_auth_exempt_probes")
        #: Connections closed to make room, and refused outright (nothing could be closed).
        self.evicted = 0
        self.refused = 0
        self._socks: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._conns: dict[_Conn, None] = {}
        self._open = False
        self._last_refusal_log = 0.0
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/healthz"): Route(self.healthz),
            ("GET", "/readyz"): Route(self.readyz),
            ("GET", "/metrics"): Route(self.metrics),
            ("GET", "/"): Route(self.index),
        }
        for method, path, handler, max_body, auth_on in program._routes:
            limit = MAX_BODY if max_body is None else max_body
            self._routes[(method.upper(), path)] = Route(handler, limit, auth_on)

    async def start(self) -> None:
        host, port = split_addr(self.addr)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                self._socks.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and self.port:  # one port for every address of a name
                    sockaddr = (sockaddr[0], self.port, *sockaddr[2:])
                sock.bind(sockaddr)
                sock.listen(BACKLOG)
                sock.setblocking(False)
                self.port = self.port or sock.getsockname()[1]
        except OSError:
            self._close_sockets()
            raise
        budget = fd_budget(self.max_connections)
        if budget < self.max_connections:
            log.warning(
                "admin connections capped to keep file descriptors for the program",
                extra={"admin_max_connections": self.max_connections, "cap": budget},
            )
            self.max_connections = budget
        self._open = True
        self._accepting = [asyncio.create_task(self._accept(s)) for s in self._socks]
        log.debug("admin server listening", extra={"addr": f"{host}:{self.port}"})

    def _close_sockets(self) -> None:
        for s in self._socks:
            s.close()
        self._socks = []

    async def stop(self) -> None:
        if not self._open:
            return
        self._open = False
        for t in self._accepting:
            t.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        self._close_sockets()
        conns = list(self._conns)
        for c in conns:
            c.abort()
        await asyncio.gather(*(c.task for c in conns if c.task), return_exceptions=True)

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- admission -------------------------------------------------------------------

    async def _accept(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(lsock)
                sock.setblocking(False)
            except OSError as exc:  # EMFILE and friends: the program's own trouble, wait
                self._log_refusal("admin server cannot accept", exc)
                await asyncio.sleep(0.1)
                continue
            if len(self._conns) >= self.max_connections + PROBE_HEADROOM and not self._evict():
                self.refused += 1
                self._log_refusal("admin connection refused: all busy", None)
                sock.close()
                continue
            conn = _Conn(probe_only=len(self._conns) >= self.max_connections)
            self._conns[conn] = None
            conn.task = asyncio.create_task(self._serve(conn, sock))

    def _evict(self) -> bool:
        """Close the connection that has waited longest on its client; False if none waits."""
        waiting = [c for c in self._conns if c.waiting_since is not None]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: c.waiting_since or 0.0)
        self._conns.pop(victim, None)
        victim.abort()
        self.evicted += 1
        self._log_refusal("admin connections at their cap; closing the longest idle", None)
        return True

    def _log_refusal(self, message: str, exc: OSError | None) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log >= 60:  # a flood is one line a minute
            self._last_refusal_log = now
            extra: dict[str, Any] = {
                "max_connections": self.max_connections,
                "evicted": self.evicted,
                "refused": self.refused,
            }
            if exc is not None:
                extra["error"] = str(exc)
            log.warning(message, extra=extra)

    # -- one connection --------------------------------------------------------------

    async def _serve(self, conn: _Conn, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            tls = None
            if self.tls is not None:
                self.tls.refresh()
                tls = self.tls.context
            try:
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    sock,
                    ssl=tls,
                    ssl_handshake_timeout=HEAD_TIMEOUT if tls else None,
                )
            except (OSError, ssl.SSLError, TimeoutError):
                sock.close()
                return
            conn.transport = transport
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._requests(conn, reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.pop(conn, None)
            if writer is not None:
                writer.transport.abort()
            elif conn.transport is None:
                sock.close()

    async def _requests(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while self._open:
            conn.waiting_since = time.monotonic()
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
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
            response = self._refuse(conn, request, writer)
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

    def _refuse(
        self, conn: _Conn, request: Request, writer: asyncio.StreamWriter
    ) -> Response | None:
        """The answer that ends a request before its body is read, if it ends there."""
        probe = request.path in PROBES
        if conn.probe_only and not probe:
            return Response.text("admin server busy\n", 503)
        route, answer = self._route(request)
        if route is None:
            return answer
        if self.auth is not None and route.auth and not (probe and self.exempt_probes):
            self.auth.refresh()
            if not self.auth.allows(request.headers.get("authorization")):
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
        body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
        return body if limit else b""  # drained: the route takes no body

    async def _dispatch(self, request: Request) -> Response:
        route, answer = self._route(request)
        if route is None:
            assert answer is not None
            return answer
        try:
            return await route.handler(request)
        except Exception:
            log.exception("admin handler failed", extra={"path": request.path})
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
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass

    # -- the built-in endpoints ------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        reason = self.program.health()
        if reason:
            return Response.text(f"unhealthy: {reason}\n", 503)
        return Response.text("ok\n")

    async def readyz(self, request: Request) -> Response:
        if self.program.ready and not self.program.stopping:
            return Response.text("ready\n")
        return Response.text("not ready\n", 503)

    async def metrics(self, request: Request) -> Response:
        # A failing refresh is the program's business; it must never turn the
        # scrape into a 500 (the program's own metrics say what went wrong).
        try:
            await self.program.before_metrics()
        except Exception:
            log.exception("refreshing metrics before a scrape failed")
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
        }
        data.update(p.status())
        return Response.json(data)


def _declares_body(request: Request) -> bool:
    cl = request.headers.get("content-length", "0")
    return "transfer-encoding" in request.headers or cl not in ("", "0")
