"""An aiohttp app served on loopback, for tests: in the test's own loop or from a thread.

Many tests stand up an HTTP peer (a sink, a token endpoint, a fake API, an
upstream) as an `aiohttp.web.Application`. Each used to repeat the runner
set-up, the site on 127.0.0.1, the port, the TLS context and the clean-up,
and the integration tests (whose program under test is a subprocess, so the
test itself stays synchronous) repeated on top of that the event loop in a
thread, the coroutine calls into it and its shutdown. They are here once:

- `AppServer`: one app on one address, in the running loop (`async with`);
  `shut()`/`open()` close and reopen the listening socket on the same port
  (connections refused meanwhile) without dropping the app.
- `LoopThread`: an event loop in a daemon thread; `call(coro)` runs a
  coroutine on it, `serve(app)` starts an `AppServer` there, `close()` cleans
  every server up, cancels what is left, stops the loop and joins the thread
  within a deadline.
- `ThreadedApp`: a `LoopThread` serving one app, with `.port` and `.url`.

Every site binds 127.0.0.1 (or the host given) with `access_log=None`: the
test output stays readable and no test reads aiohttp's access log.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LOOPBACK = "127.0.0.1"


def app_of(handler: Handler, method: str = "*", path: str = "/{tail:.*}") -> web.Application:
    """An application answering `method` on `path` (by default: anything) with `handler`.

    GET answers HEAD too, as `router.add_get` does."""
    app = web.Application()
    if method == "GET":
        app.router.add_get(path, handler)
    else:
        app.router.add_route(method, path, handler)
    return app


class AppServer:
    """`app` served on host:port (port 0: a free one, fixed once bound) in the running loop.

    Extra keywords go to `web.AppRunner` (shutdown_timeout, handle_signals, ...).
    """

    def __init__(
        self,
        app: web.Application | Handler,
        port: int = 0,
        *,
        host: str = LOOPBACK,
        ssl_context: ssl.SSLContext | None = None,
        reuse_address: bool | None = None,
        **runner_kwargs: Any,
    ) -> None:
        self.app = app if isinstance(app, web.Application) else app_of(app)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.reuse_address = reuse_address
        self.runner_kwargs: dict[str, Any] = {"access_log": None, **runner_kwargs}
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def start(self) -> AppServer:
        self.runner = web.AppRunner(self.app, **self.runner_kwargs)
        await self.runner.setup()
        await self.open()
        return self

    async def open(self) -> None:
        """Listen (again, on the same port after the first time); no-op while listening."""
        assert self.runner is not None, "start() first"
        if self.site is None:
            site = web.TCPSite(
                self.runner,
                self.host,
                self.port,
                ssl_context=self.ssl_context,
                reuse_address=self.reuse_address,
            )
            await site.start()
            self.site = site
            if self.port == 0:  # this runner's only site: its first address
                self.port = int(self.runner.addresses[0][1])

    async def shut(self) -> None:
        """Close the listening socket: connections are refused until open()."""
        if self.site is not None:
            site, self.site = self.site, None
            await site.stop()

    async def close(self) -> None:
        self.site = None
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def __aenter__(self) -> AppServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class LoopThread:
    """An event loop running in a daemon thread of its own, and the servers on it."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout  # for each call() and for close()
        self.loop = asyncio.new_event_loop()
        self.servers: list[AppServer] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and return its result (from the caller's thread)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(self.timeout if timeout is None else timeout)

    def serve(self, app: web.Application | Handler, port: int = 0, **kwargs: Any) -> AppServer:
        """Start an AppServer (same arguments) on this loop; close() cleans it up."""
        server = self.call(AppServer(app, port, **kwargs).start())
        self.servers.append(server)
        return server

    def unserve(self, server: AppServer) -> None:
        self.servers.remove(server)
        self.call(server.close())

    def close(self) -> None:
        """Clean every server up, cancel the tasks left, stop the loop, join the thread."""
        if not self.thread.is_alive():
            return

        async def down() -> None:
            for server in self.servers:
                await server.close()
            self.servers.clear()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.call(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(self.timeout)
            assert not self.thread.is_alive(), f"loop thread still running after {self.timeout}s"
            self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedApp(LoopThread):
    """`app` served from a loop thread of its own (arguments as AppServer's)."""

    def __init__(self, app: web.Application | Handler, port: int = 0, **kwargs: Any) -> None:
        super().__init__()
        try:
            self.server = self.serve(app, port, **kwargs)
        except BaseException:
            self.close()
            raise

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ThreadedApp:
        return self
