"""The admin server every program gets: /healthz, /readyz, /metrics, /.

Setup and teardown are explicit steps (start, stop), as in aiohttp's
web_runner, so the runner controls exactly when the port opens and closes.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .secrets import scrub

if TYPE_CHECKING:
    from .program import Program

log = logging.getLogger("podkit.admin")


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _json(data: Any, status: int = 200) -> web.Response:
    text = scrub(json.dumps(data, indent=2, default=str, sort_keys=False))
    return web.Response(text=text + "\n", status=status, content_type="application/json")


class AdminServer:
    def __init__(self, program: Program, addr: str) -> None:
        self.program = program
        self.addr = addr
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/", self.index)
        for method, path, handler in self.program._routes:
            app.router.add_route(method, path, handler)
        return app

    async def start(self) -> None:
        host, port = split_addr(self.addr)
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.debug("admin server listening", extra={"addr": f"{host}:{self.port}"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def healthz(self, request: web.Request) -> web.Response:
        reason = self.program.health()
        if reason:
            return web.Response(text=f"unhealthy: {reason}\n", status=503)
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        if self.program.ready and not self.program.stopping:
            return web.Response(text="ready\n")
        return web.Response(text="not ready\n", status=503)

    async def metrics(self, request: web.Request) -> web.Response:
        # A failing refresh is the program's business; it must never turn the
        # scrape into a 500 (the program's own metrics say what went wrong).
        try:
            await self.program.before_metrics()
        except Exception:
            log.exception("refreshing metrics before a scrape failed")
        body, ctype = self.program.metrics.render(request.headers.get("Accept"))
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = ctype
        return resp

    async def index(self, request: web.Request) -> web.Response:
        p = self.program
        data = {
            "program": p.name,
            "ready": p.ready,
            "healthy": p.health() is None,
            "stopping": p.stopping,
            "uptime_seconds": round(time.time() - p.started_at, 3),
        }
        data.update(p.status())
        return _json(data)
