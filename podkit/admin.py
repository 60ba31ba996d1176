"""The admin server every program gets: /healthz, /readyz, /metrics, /.

A small HTTP/1.1 server on asyncio streams rather than aiohttp's: its clients
are the kubelet's probes, Prometheus and the odd webhook, and importing
aiohttp's server costs an idle sidecar about 14 MB of RSS and 200 ms of
start-up, which every pod would pay. It keeps connections alive, bounds what a
client may send and how slowly, and never lets a handler's failure kill it.

Setup and teardown are explicit steps (start, stop), as in aiohttp's
web_runner, so the runner controls exactly when the port opens and closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .options import split_addr
from .secrets import scrub

if TYPE_CHECKING:
    from .http import ServerTLS
    from .program import Program

log = logging.getLogger("podkit.admin")

MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
#: A client gets this long to send a whole request head (also the keep-alive idle limit).
HEAD_TIMEOUT = 30.0
BODY_TIMEOUT = 30.0


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
        return json.loads(self.body or b"null")


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


class BadRequest(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def parse_head(head: bytes) -> tuple[Request, bool]:
    """The request and whether the connection may be kept alive after it."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
        raise BadRequest(400, "undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise BadRequest(400, "malformed header line")
        key = name.lower()
        if key in headers and key in ("content-length", "host", "transfer-encoding"):
            raise BadRequest(400, f"duplicate {name}")
        headers[key] = value.strip()
    conn = headers.get("connection", "").lower()
    keep = "close" not in conn if version == "HTTP/1.1" else "keep-alive" in conn
    return Request(method, target, headers), keep


class AdminServer:
    """The admin server; with `routes` (instead of the admin routes) and `tls`,
    the same HTTP/1.1 server for a program's own endpoint (the injector's webhook)."""

    def __init__(
        self,
        program: Program,
        addr: str,
        *,
        routes: dict[tuple[str, str], Handler] | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        self.program = program
        self.addr = addr
        self.tls = tls
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
            ("GET", "/metrics"): self.metrics,
            ("GET", "/"): self.index,
        }
        for method, path, handler in program._routes:
            self._routes[(method.upper(), path)] = handler
        if routes is not None:
            self._routes = dict(routes)

    async def start(self) -> None:
        host, port = split_addr(self.addr)
        self._server = await asyncio.start_server(
            self._connection,
            host,
            port,
            limit=MAX_HEAD,
            reuse_address=True,
            ssl=self.tls.context if self.tls is not None else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.debug("admin server listening", extra={"addr": f"{host}:{self.port}"})

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while self._server is not None:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
                except asyncio.LimitOverrunError:
                    await self._reply(writer, Response.text("header too large\n", 431), True)
                    return
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                try:
                    request, keep = parse_head(head[:-4])
                    request.body = await self._body(reader, request)
                except BadRequest as exc:
                    await self._reply(writer, Response.text(f"{exc}\n", exc.status), True)
                    return
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                response = await self._dispatch(request)
                keep = keep and self._server is not None
                await self._reply(writer, response, not keep, request.method == "HEAD")
                if not keep:
                    return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _body(self, reader: asyncio.StreamReader, request: Request) -> bytes:
        if "transfer-encoding" in request.headers:
            raise BadRequest(411, "send a Content-Length")
        length = request.headers.get("content-length", "0")
        if not length.isdigit():
            raise BadRequest(400, "malformed Content-Length")
        if int(length) > MAX_BODY:
            raise BadRequest(413, "body too large")
        if not int(length):
            return b""
        return await asyncio.wait_for(reader.readexactly(int(length)), BODY_TIMEOUT)

    async def _dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        path = request.path
        handler = self._routes.get((method, path))
        if handler is None:
            allowed = sorted(m for (m, p) in self._routes if p == path)
            if allowed:
                return Response(405, b"method not allowed\n", headers={"Allow": ", ".join(allowed)})
            return Response.text("not found\n", 404)
        try:
            return await handler(request)
        except Exception:
            log.exception("admin handler failed", extra={"path": path})
            return Response.text("internal error\n", 500)

    @staticmethod
    async def _reply(
        writer: asyncio.StreamWriter, response: Response, close: bool, head_only: bool = False
    ) -> None:
        try:
            writer.write(response.encode(head_only=head_only, close=close))
            await writer.drain()
        except ConnectionError:
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
