"""What every listener shares: its upstreams, health checks, TLS and clock."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from podkit.aio import wait_for
from podkit.fsutil import file_sig
from podkit.http import ssl_context
from podkit.logs import RateLimited, where

from . import http1
from .discovery import Discovery, Endpoint, make_resolver
from .settings import Settings as Settings  # re-exported: upstream.py names it from here
from .tls_in import TlsServer
from .upstream import Balancer, Target, Upstream

log = logging.getLogger("podkit.proxy")


def _service_name(target: Target) -> str:
    """The name a dns+/dnssrv+ target's endpoints are known by (Host header, TLS name):
    `_http._tcp.api.ns.svc` -> `api.ns.svc`."""
    labels = target.host.rstrip(".").split(".")
    if target.discover == "dnssrv":
        while labels and labels[0].startswith("_"):
            labels.pop(0)
    return ".".join(labels)


class Clock:
    """A coarse clock the sweepers advance: cheap to read on every chunk."""

    now = 0.0


clock = Clock()


class BaseListener:
    kind = "http"

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.loop = asyncio.get_running_loop()
        # Durations (access log, histograms) by the monotonic clock itself: uvloop's
        # loop.time() counts whole milliseconds, as of the loop turn's start, so a
        # request served within one turn took "0.000000" s. Deadlines keep the loop's.
        self.time = time.monotonic
        self.upstreams = [Upstream(t, s, self) for t in s.targets if not t.discover]
        self.balancer = Balancer(self.upstreams, s.lb)
        # dns+/dnssrv+ targets: their endpoints, as DNS last named them
        self.found: dict[int, dict[Endpoint, Upstream]] = {}
        self.discoveries: list[Discovery] = []
        discovered = [t for t in s.targets if t.discover]
        if discovered:
            resolver = make_resolver(s)
            for t in discovered:
                self.found[id(t)] = {}
                d = Discovery(t, s, resolver, self.set_endpoints)
                self.discoveries.append(d)
        self.health_tasks: dict[Upstream, asyncio.Task[None]] = {}
        self.tls_in = TlsServer(s) if s.tls_enabled else None
        self.scheme = b"https" if self.tls_in is not None else b"http"
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
        # set by the program to its record_error before start()
        self.on_error: Callable[[str, str], None] = lambda reason, message: None

    def report(self, reason: str, message: str) -> None:
        """A failure the program shows on `/` as its newest error (the caller logs it)."""
        self.on_error(reason, message)

    def warn(self, msg: str, extra: dict[str, Any]) -> None:
        """A warning about a condition that may repeat for every request: rate-limited."""
        key = msg + str(extra.get("upstream", ""))
        self.errors.log(key, logging.WARNING, msg, **extra)

    # -- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        if self.needs_tls or self.s.upstream_tls.ca_file or self.s.upstream_tls.cert_file:
            self.ssl_ctx = self._make_ssl()
            self._tls_sig = self._tls_files_sig()
        self.refresh_suffixes()
        # The first answer is waited for, so the proxy is ready with its endpoints (a
        # failed lookup is logged and retried: requests get 503 until one succeeds).
        delays = [await d.once() for d in self.discoveries]
        self.server = await self.loop.create_server(
            self.protocol_factory(),
            self.s.host,
            self.s.port,
            backlog=1024,
            reuse_address=True,
            reuse_port=self.s.reuse_port or None,
            ssl=self.tls_in.outer if self.tls_in is not None else None,
            # a client that never finishes its handshake is cut like one that never
            # finishes its head (asyncio's own default would hold it for 60 s)
            ssl_handshake_timeout=self.s.header_timeout if self.tls_in is not None else None,
        )
        self.tasks.append(self.loop.create_task(self._sweeper()))
        self.tasks.append(self.loop.create_task(self._maintenance()))
        for d, delay in zip(self.discoveries, delays, strict=True):
            self.tasks.append(self.loop.create_task(d.run(delay)))
        if self.wants_health_checks():
            for u in self.upstreams:
                self._watch(u)

    def _watch(self, u: Upstream) -> None:
        self.health_tasks[u] = self.loop.create_task(self._health_loop(u))

    # -- endpoints found in DNS ----------------------------------------------------

    async def set_endpoints(self, target: Target, endpoints: list[Endpoint]) -> None:
        """Put `endpoints` in rotation for `target`: new ones once warm, gone ones drained
        (their in-flight requests finish; their connections close instead of pooling)."""
        have = self.found[id(target)]
        name = _service_name(target)
        added: list[Upstream] = []
        for e in endpoints:
            if e not in have:
                host = f"[{e.host}]" if ":" in e.host else e.host
                t = Target(
                    f"{target.scheme}://{host}:{e.port}",
                    target.scheme,
                    e.host,
                    e.port,
                    e.weight,
                    name=name,
                )
                added.append(Upstream(t, self.s, self))
        if added:
            await self._warm(added)
        gone = [u for e, u in have.items() if e not in endpoints]
        keep = {e: u for e, u in have.items() if e in endpoints}
        for u in added:
            keep[Endpoint(u.host, u.port, u.weight)] = u
        self.found[id(target)] = keep
        for u in gone:
            u.retire()
            task = self.health_tasks.pop(u, None)
            if task is not None:
                task.cancel()
        static = [u for u in self.upstreams if not u.target.name]
        self.upstreams = static + [u for m in self.found.values() for u in m.values()]
        self.balancer.set(self.upstreams)
        try:
            self.refresh_suffixes()
        except (OSError, ValueError) as exc:
            self.warn("cannot refresh request headers", extra={"error": str(exc)})
        if gone or added:
            log.info(
                "endpoints updated",
                extra={
                    "listen": self.s.listen,
                    "added": [u.label for u in added],
                    "draining": [u.label for u in gone],
                },
            )

    async def _warm(self, added: list[Upstream]) -> None:
        """New endpoints take traffic only once ready: with --health-path after their
        first passing check, otherwise with one connection already open (HTTP) or one
        probe connection made (TCP). One that is not ready in time joins anyway, and the
        ordinary connect failure, retry and ejection rules deal with it."""
        if self.wants_health_checks() and self.s.health_path is not None:
            for u in added:
                u.healthy = False
                u.health_error = "not checked yet"
                self._watch(u)
            return

        async def one(u: Upstream) -> None:
            try:
                c = await u.connect(self.ssl_ctx)
            except Exception as exc:
                self.warn(
                    "new endpoint not reachable yet", extra={"upstream": u.label, "error": str(exc)}
                )
                return
            if self.kind == "http":
                u.release(c, self.loop.time())
            else:
                c.close()

        await asyncio.gather(*(one(u) for u in added))
        if self.wants_health_checks():
            for u in added:
                self._watch(u)

    def protocol_factory(self) -> Any:
        raise NotImplementedError

    @property
    def bound_port(self) -> int:
        # Any: typeshed says a tuple, uvloop's is a list, and compiled code checks
        server: Any = self.server
        if server is None or not server.sockets:
            return self.s.port
        return int(server.sockets[0].getsockname()[1])

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
        for t in self.health_tasks.values():
            t.cancel()
        self.tasks += self.health_tasks.values()
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
            except Exception as failed:  # not `exc`: see test_proxy_compiled_names.py
                self.loop_failed("sweeper failed", failed)

    def sweep(self, now: float) -> None:
        pass

    maintenance_every = 1.0  # seconds between maintain() calls

    async def _maintenance(self) -> None:
        while True:
            await asyncio.sleep(self.maintenance_every)
            try:
                self.maintain()
            except Exception as failed:
                self.loop_failed("maintenance failed", failed)

    def loop_failed(self, msg: str, failed: Exception) -> None:
        """A background loop's turn failed; the loop goes on. A fault that is there
        on every turn (the sweeper's may come 100 times a second) would write a
        traceback each time: like serve()'s catch-all, one record per interval for
        each kind and place, with the count of those held back (`repeated`)."""
        kind, place = type(failed).__name__, where(failed)
        self.errors.log(
            f"{msg} {kind} {place}",
            logging.ERROR,
            msg,
            error=f"{kind}: {failed}"[:300],
            where=place,
        )

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
        if self.tls_in is not None:
            err = self.tls_in.reload()
            if err is not None:
                self.warn(
                    "cannot load the listener's TLS files; keeping the old ones",
                    extra={"error": err},
                )

    def client_identity(self, transport: Any) -> bytes | None:
        """The header line naming the client's verified certificate (b"" without mTLS);
        None when the allow-lists refuse it: then it has been answered and is closing."""
        if self.tls_in is None:
            return b""
        identity = self.tls_in.identity(transport)
        if identity is None:
            cert = transport.get_extra_info("peercert") or {}
            self.warn(
                "client certificate not allowed; closing",
                extra={
                    "listen": self.s.listen,
                    "subject": str(cert.get("subject", "")),
                    "san": str(cert.get("subjectAltName", "")),
                },
            )
            if self.kind == "http":
                transport.write(
                    http1.local_reply(403, "client-not-allowed", "client certificate not allowed")
                )
            transport.close()
        return identity

    def _tls_files_sig(self) -> tuple[Any, ...]:
        # the CA too (the core's cert_signature() covers the client pair only),
        # and a file missing mid-swap is a change, not an error
        tls = self.s.upstream_tls
        return (file_sig(tls.ca_file), file_sig(tls.cert_file), file_sig(tls.key_file))

    def _make_ssl(self) -> ssl.SSLContext:
        # a new context each time (the group's ssl_context() keeps its first)
        tls = self.s.upstream_tls
        return ssl_context(tls.ca_file, tls.insecure, tls.cert_file, tls.key_file)

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
            kw["server_hostname"] = self.s.sni or u.target.server_name
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
