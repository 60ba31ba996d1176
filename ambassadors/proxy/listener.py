"""What every listener shares: its upstreams, health checks, TLS and clock."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from typing import Any

from podkit.aio import wait_for
from podkit.http import ssl_context
from podkit.logs import RateLimited

from . import http1
from .settings import Settings as Settings  # re-exported: upstream.py names it from here
from .upstream import Balancer, Upstream

log = logging.getLogger("podkit.proxy")


class Clock:
    """A coarse clock the sweepers advance: cheap to read on every chunk."""

    now = 0.0


clock = Clock()


def _file_sig(path: str | None) -> tuple[int, int, int] | None:
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class BaseListener:
    kind = "http"

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.loop = asyncio.get_running_loop()
        self.time = self.loop.time
        self.upstreams = [Upstream(t, s, self) for t in s.targets]
        self.balancer = Balancer(self.upstreams, s.lb)
        self.server: asyncio.Server | None = None
        self.conns: set[Any] = set()
        self.draining = False
        self.now = self.loop.time()
        clock.now = self.now
        self.ssl_ctx: ssl.SSLContext | None = None
        self._tls_sig: tuple[Any, ...] = ()
        self.tasks: list[asyncio.Task[Any]] = []
        self.errors = RateLimited(log, 10.0)
        self.needs_tls = any(t.tls for t in s.targets)
        self.local_codes: dict[int, int] = {}
        self.local_buckets = [0] * 15
        self.local_sum = 0.0
        # the smallest timeout decides how often the sweeper runs
        ticks = [1.0, s.header_timeout / 4, s.idle_timeout / 4]
        if s.try_timeout:
            ticks.append(s.try_timeout / 5)
        ticks.append(s.timeout / 10)
        self.tick = max(0.01, min(ticks))

    def warn(self, msg: str, extra: dict[str, Any]) -> None:
        """A warning about a condition that may repeat for every request: rate-limited."""
        key = msg + str(extra.get("upstream", ""))
        self.errors.log(key, logging.WARNING, msg, **extra)

    # -- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        if self.needs_tls or self.s.ca_file or self.s.cert_file:
            self.ssl_ctx = self._make_ssl()
            self._tls_sig = self._tls_files_sig()
        self.refresh_suffixes()
        self.server = await self.loop.create_server(
            self.protocol_factory(),
            self.s.host,
            self.s.port,
            backlog=1024,
            reuse_address=True,
            reuse_port=self.s.reuse_port or None,
        )
        self.tasks.append(self.loop.create_task(self._sweeper()))
        self.tasks.append(self.loop.create_task(self._maintenance()))
        if self.wants_health_checks():
            for u in self.upstreams:
                self.tasks.append(self.loop.create_task(self._health_loop(u)))

    def protocol_factory(self) -> Any:
        raise NotImplementedError

    @property
    def bound_port(self) -> int:
        if self.server is None or not self.server.sockets:
            return self.s.port
        return int(self.server.sockets[0].getsockname()[1])

    def stop_accepting(self) -> None:
        self.draining = True
        if self.server is not None:
            self.server.close()

    async def drain(self, deadline: float) -> int:
        """Wait for in-flight work to finish until `deadline`; return what was cut off."""
        while self.busy() and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        left = self.busy()
        for c in list(self.conns):
            c.abort()
        return left

    def busy(self) -> int:
        return len(self.conns)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        for u in self.upstreams:
            u.close_idle()

    # -- periodic work -------------------------------------------------------------

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.now = now = self.loop.time()
            clock.now = now
            try:
                self.sweep(now)
            except Exception:
                log.exception("sweeper failed")

    def sweep(self, now: float) -> None:
        pass

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.maintain()
            except Exception:
                log.exception("maintenance failed")

    def maintain(self) -> None:
        now = self.loop.time()
        for u in self.upstreams:
            if u.idle:
                u.close_idle(older_than=now - self.s.idle_timeout)
        if self.ssl_ctx is not None:
            sig = self._tls_files_sig()
            if sig != self._tls_sig:
                try:
                    ctx = self._make_ssl()
                except (OSError, ssl.SSLError, ValueError) as exc:
                    self.warn(
                        "cannot load the TLS files; keeping the old ones", extra={"error": str(exc)}
                    )
                else:
                    self.ssl_ctx = ctx
                    self._tls_sig = sig
                    log.info("client TLS files reloaded")
                    for u in self.upstreams:  # new connections use the new files
                        u.close_idle()

    def _tls_files_sig(self) -> tuple[Any, ...]:
        return (_file_sig(self.s.ca_file), _file_sig(self.s.cert_file), _file_sig(self.s.key_file))

    def _make_ssl(self) -> ssl.SSLContext:
        ctx = ssl_context(self.s.ca_file, cert_file=self.s.cert_file, key_file=self.s.key_file)
        return ctx

    def refresh_suffixes(self) -> None:
        """Precompute the header lines added to every upstream request."""

    # -- health checks -------------------------------------------------------------

    def wants_health_checks(self) -> bool:
        return self.s.health_path is not None

    async def _health_loop(self, u: Upstream) -> None:
        while True:
            try:
                ok, err = await wait_for(self.check(u), self.s.health_timeout)
            except TimeoutError:
                ok, err = False, f"health check timed out after {self.s.health_timeout}s"
            except (OSError, ssl.SSLError, http1.ProtocolError) as exc:
                ok, err = False, str(exc) or type(exc).__name__
            u.set_health(ok, err)
            await asyncio.sleep(self.s.health_interval)

    async def check(self, u: Upstream) -> tuple[bool, str]:
        raise NotImplementedError

    async def _open(self, u: Upstream) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kw: dict[str, Any] = {}
        if u.target.tls:
            kw["ssl"] = self.ssl_ctx
            kw["server_hostname"] = self.s.sni or u.host
        return await asyncio.open_connection(u.host, u.port, **kw)

    # -- status --------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = self.loop.time()
        return {
            "listen": self.s.listen,
            "mode": self.s.mode,
            "port": self.bound_port,
            "lb": self.s.lb
            if not self.s.hash_header
            else f"hash-header:{self.s.hash_header.decode()}",
            "connections": len(self.conns),
            "upstreams": [u.status(now) for u in self.upstreams],
        }
