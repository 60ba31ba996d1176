"""Upstreams: address, keep-alive pool, limits, outlier ejection, health, and balancing.

This module knows nothing of listeners: what it needs from one (a few settings and a
rate-limited warning) is stated as the two Protocols below, so `listener` imports
`upstream` and never the other way round.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import ssl
import time
import zlib
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from podkit import UsageError
from podkit.aio import wait_for

from .http1 import Conn, DeadlineExceeded, HeadCache

log = logging.getLogger("podkit.proxy")

# The histogram's buckets, in seconds (Prometheus' defaults, finer at the low end).
# Annotated as a tuple of any length: a fixed-length tuple is one mypyc unboxes, so
# each bisect_left(BUCKETS, ...) built a new tuple of 14 new floats (3,000
# instructions a request, valgrind).
BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# Peak-EWMA (Linkerd's balancer, Envoy's least-request with P2C): the latency estimate
# jumps straight up to a slower sample (a peak is believed at once), moves a tenth of
# the way down with each faster one, and decays with this time constant while the
# upstream gets nothing, so an endpoint that was slow a minute ago is tried again.
EWMA_DECAY: Final = 10.0
EWMA_WEIGHT: Final = 0.1
# An endpoint that has not answered yet (new, or back from ejection or a failed health
# check) is assumed as fast as the one it is compared with: a guess lower than the
# truth would send it every request at once, a higher one none at all.
UNMEASURED: Final = -1.0


class UpstreamSettings(Protocol):
    """The settings an upstream reads (a listener's Settings has them all)."""

    connect_timeout: float
    max_connections: int
    max_pending: int
    eject_after: int
    eject_time: float
    max_eject_time: float
    sni: str | None


class Owner(Protocol):
    """The listener an upstream belongs to, as far as the upstream is concerned."""

    def warn(self, msg: str, extra: dict[str, Any]) -> None: ...

    def report(self, reason: str, message: str) -> None: ...


class Overflow(Exception):
    """A per-upstream limit was reached; `why` goes into the x-podkit-proxy header."""

    def __init__(self, why: str, message: str) -> None:
        super().__init__(message)
        self.why = why


class ConnectFailure(Exception):
    pass


@dataclass
class Target:
    url: str
    scheme: str  # http https tcp tcps
    host: str
    port: int
    weight: int
    # "dns" (A/AAAA) or "dnssrv" (SRV): `host` is a name whose records are the endpoints
    discover: str | None = None
    # the name an endpoint found by DNS was found under: its Host header and TLS name
    name: str | None = None

    @property
    def tls(self) -> bool:
        return self.scheme in ("https", "tcps")

    @property
    def server_name(self) -> str:
        return self.name or self.host

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


DISCOVERY = ("dns", "dnssrv")


def parse_target(text: str, where: str, tcp: bool) -> Target:
    """`http://host:port;weight=3` -> Target; raises UsageError naming `where`.

    `dns+http://name:port` and `dnssrv+http://_port._proto.name` name endpoints to be
    found in DNS (see discovery.py); the Target then stands for all of them."""
    url, *params = [p.strip() for p in str(text).split(";")]
    weight = 1
    for p in params:
        key, _, value = p.partition("=")
        if key != "weight" or not value.isdigit() or not 1 <= int(value) <= 1000:
            raise UsageError(f"{where}: bad parameter {p!r} in {text!r} (weight=1..1000)")
        weight = int(value)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r}: {exc}") from None
    allowed = ("tcp", "tcps") if tcp else ("http", "https")
    discover, _, scheme = parts.scheme.rpartition("+")
    if discover and discover not in DISCOVERY:
        scheme = parts.scheme  # refused below
    if scheme not in allowed or not parts.hostname:
        raise UsageError(
            f"{where}: {text!r} must be {' or '.join(s + '://HOST:PORT' for s in allowed)}"
            f" (or dns+{allowed[0]}://NAME:PORT, dnssrv+{allowed[0]}://_PORT._PROTO.NAME)"
        )
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise UsageError(f"{where}: {text!r}: no path, query or credentials in an upstream URL")
    if discover == "dnssrv":
        if port is not None:
            raise UsageError(f"{where}: {text!r}: the SRV records give the port; drop ':{port}'")
        return Target(url, scheme, parts.hostname, 0, weight, discover="dnssrv")
    if port is None:
        if scheme in ("tcp", "tcps"):
            raise UsageError(f"{where}: {text!r} needs a port")
        port = 443 if scheme == "https" else 80
    return Target(url, scheme, parts.hostname, port, weight, discover=discover or None)


class Upstream:
    """One upstream server with its connection pool and health state."""

    def __init__(self, target: Target, settings: UpstreamSettings, listener: Owner) -> None:
        self.target = target
        self.label = target.label
        # the access line's fields from the upstream to its first duration's value
        self.log_upstream = f', "upstream": "{self.label}", "duration_seconds": '
        self.host = target.host
        self.port = target.port
        self.weight = target.weight
        self.s = settings
        self.listener = listener
        self.idle: list[Conn] = []
        self.nconns = 0
        self.active = 0
        self.pending: deque[asyncio.Future[Conn | None]] = deque()
        self.healthy = True
        self.health_error = ""
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.last_ejection_end = 0.0
        self.current_weight = 0  # smooth weighted round robin
        self.ewma = UNMEASURED  # peak-EWMA of request latency, seconds
        self.ewma_at = time.monotonic()
        # taken out of rotation (DNS no longer names it): in-flight requests finish,
        # no new ones come, and its connections close instead of going back to the pool
        self.retired = False
        self.hash_key = target.label.encode()
        # counters read by the metrics collector and the status page
        self.requests = 0
        self.failures = 0
        self.retries = 0
        self.ejections_total = 0
        self.codes: dict[int, int] = {}
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.duration_sum = 0.0
        self.tcp_connections = 0
        self.unsolicited = 0  # idle pooled connections closed because bytes arrived
        self.head_cache = HeadCache()  # parsed response heads (fast path)
        self.host_line = b""
        self.suffix = b""  # request header lines added for this upstream (Host, auth, ...)

    # -- state -------------------------------------------------------------------

    def available(self, now: float) -> bool:
        return self.healthy and self.ejected_until <= now and not self.retired

    def retire(self) -> None:
        self.retired = True
        self.close_idle()
        while self.pending:  # waiters go and connect elsewhere... or here, and finish
            self.wake_pending()

    def latency(self, now: float) -> float:
        """The latency estimate, decayed since the last sample (UNMEASURED if none)."""
        if self.ewma < 0:
            return UNMEASURED
        return max(self.ewma * math.exp((self.ewma_at - now) / EWMA_DECAY), 1e-6)

    def success(self) -> None:
        self.consecutive_failures = 0

    def failure(self, now: float, why: str, error: str = "") -> None:
        self.failures += 1
        self.consecutive_failures += 1
        s = self.s
        if why == "connect-failure" and self.listener is not None:
            self.listener.report("upstream", f"cannot connect to upstream {self.label}: {error}")
        if self.consecutive_failures >= s.eject_after and self.ejected_until <= now:
            if now - self.last_ejection_end > s.max_eject_time:
                self.ejections = 0  # it behaved for a long while: start over
            self.ejections += 1
            self.ejections_total += 1
            period = min(s.eject_time * self.ejections, s.max_eject_time)
            self.ejected_until = now + period
            self.last_ejection_end = self.ejected_until
            self.consecutive_failures = 0
            if self.listener is not None:
                self.listener.report(
                    "upstream",
                    f"upstream {self.label} ejected for {period:g}s after {s.eject_after} "
                    f"failures in a row (last: {why})",
                )
            log.warning(
                "upstream ejected",
                extra={
                    "upstream": self.label,
                    "reason": why,
                    "eject_seconds": period,
                    "ejections": self.ejections,
                },
            )
            self.close_idle()

    def uneject(self, why: str) -> None:
        if self.ejected_until:
            self.ejected_until = 0.0
            self.ewma = UNMEASURED
            log.info("upstream back in service", extra={"upstream": self.label, "reason": why})

    def set_health(self, ok: bool, error: str = "") -> None:
        if ok != self.healthy:
            if ok:
                self.ewma = UNMEASURED
                log.info("upstream healthy", extra={"upstream": self.label})
            else:
                log.warning("upstream unhealthy", extra={"upstream": self.label, "error": error})
                if self.listener is not None:
                    self.listener.report(
                        "upstream", f"upstream {self.label} failed its health check: {error}"
                    )
        self.healthy = ok
        self.health_error = error
        if ok:
            self.uneject("health check passed")
        else:
            self.close_idle()

    def observe(self, code: int, seconds: float, now: float | None = None) -> None:
        """Count one response; `now`: time.monotonic() at its end, when the caller has it."""
        if seconds >= self.ewma:  # UNMEASURED too
            self.ewma = seconds  # a peak is believed at once
        else:  # per sample here (cheap); latency() adds the decay over idle time
            self.ewma += (seconds - self.ewma) * EWMA_WEIGHT
        self.ewma_at = time.monotonic() if now is None else now
        self.requests += 1
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.duration_sum += seconds
        self.buckets[bisect_left(BUCKETS, seconds)] += 1

    # -- the pool ------------------------------------------------------------------

    def take_idle(self) -> Conn | None:
        """The most recently pooled connection that is still fit for a request."""
        idle = self.idle
        while idle:
            c = idle.pop()
            c.pooled = False
            if c.reusable():
                return c
            c.close()
        return None

    async def acquire(self, owner: Conn, ssl_ctx: ssl.SSLContext | None, now: float) -> Conn:
        """A connection to this upstream: an idle pooled one, or a new one within the limits."""
        while True:
            c = self.take_idle()
            if c is not None:
                return c
            if self.nconns < self.s.max_connections:
                return await self.connect(ssl_ctx)
            if len(self.pending) >= self.s.max_pending:
                raise Overflow("overflow", f"{self.label}: --max-pending reached")
            fut: asyncio.Future[Conn | None] = asyncio.get_running_loop().create_future()
            self.pending.append(fut)
            owner.wait_fut = fut
            try:
                got = await fut
            finally:
                owner.wait_fut = None
                if not fut.done() or fut.cancelled():
                    try:
                        self.pending.remove(fut)
                    except ValueError:
                        pass
            if got is None:
                return await self.connect(ssl_ctx)
            if got.reusable():
                return got
            # bytes (or the end) arrived while it was on its way to us: it is closed, and
            # its slot comes back through lost() -> wake_pending()
            got.close()

    async def connect(self, ssl_ctx: ssl.SSLContext | None) -> Conn:
        loop = asyncio.get_running_loop()
        self.nconns += 1
        try:
            kw: dict[str, Any] = {}
            if self.target.tls:
                kw["ssl"] = ssl_ctx
                kw["server_hostname"] = self.s.sni or self.target.server_name
            # Conn is a protocol by its methods, not an asyncio.Protocol subclass
            # (compiled, a class with a Python base keeps a __dict__ and slow
            # attributes); asyncio and uvloop call the methods by name.
            factory: Any = lambda: UpstreamConn(self)  # noqa: E731
            _, proto = await wait_for(
                loop.create_connection(factory, self.host, self.port, **kw),
                self.s.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError, DeadlineExceeded) as exc:
            self.nconns -= 1
            self.wake_pending()
            if isinstance(exc, TimeoutError):
                raise ConnectFailure(f"connect timeout after {self.s.connect_timeout}s") from None
            raise ConnectFailure(str(exc) or type(exc).__name__) from None
        conn: Conn = proto
        return conn

    def release(self, c: Conn, now: float) -> None:
        """Return a connection after a complete exchange; hand it to a waiter if any."""
        if self.retired or not c.reusable():
            c.close()
            return
        c.reused = True
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_result(c)
                return
        c.idle_since = now
        c.pooled = True
        self.idle.append(c)

    def unsolicited_bytes(self, c: Conn, n: int) -> None:
        """Bytes arrived on an idle pooled connection: no request is waiting for them (an
        unsolicited response, or the tail of a body longer than its Content-Length), and
        the next request on it would read them as its response. Close it."""
        self.unsolicited += 1
        c.pooled = False
        try:
            self.idle.remove(c)
        except ValueError:
            pass
        c.abort()
        self.listener.warn(
            "bytes arrived on an idle upstream connection; closed it",
            extra={"upstream": self.label, "bytes": n},
        )

    def discard(self, c: Conn) -> None:
        c.abort()

    def lost(self, c: Conn) -> None:
        self.nconns -= 1
        try:
            self.idle.remove(c)
        except ValueError:
            pass
        self.wake_pending()

    def wake_pending(self) -> None:
        while self.pending:
            fut = self.pending.popleft()
            if not fut.done():
                fut.set_result(None)  # go and connect yourself
                return

    def close_idle(self, older_than: float | None = None) -> None:
        keep = []
        for c in self.idle:
            if older_than is None or c.idle_since < older_than:
                c.pooled = False
                c.close()
            else:
                keep.append(c)
        self.idle = keep

    def status(self, now: float) -> dict[str, Any]:
        return {
            "upstream": self.label,
            "name": self.target.name,
            "weight": self.weight,
            "retired": self.retired,
            "latency_ewma_seconds": round(self.ewma, 6),
            "healthy": self.healthy,
            "health_error": self.health_error or None,
            "ejected": self.ejected_until > now,
            "ejected_for_seconds": round(max(0.0, self.ejected_until - now), 3),
            "ejections": self.ejections_total,
            "consecutive_failures": self.consecutive_failures,
            "active_requests": self.active,
            "connections": self.nconns,
            "idle_connections": len(self.idle),
            "pending": len(self.pending),
            "requests": self.requests,
            "failures": self.failures,
            "retries": self.retries,
            "tcp_connections": self.tcp_connections,
            "unsolicited_closed": self.unsolicited,
        }


class UpstreamConn(Conn):
    def __init__(self, upstream: Upstream) -> None:
        super().__init__()
        self.upstream = upstream
        self.owner: Any = None  # the client connection whose fast-path request this carries

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.fast_response(self, data)
        elif self.pooled:
            self.upstream.unsolicited_bytes(self, len(data))
        else:
            Conn.data_received(self, data)

    def eof_received(self) -> bool:
        keep = Conn.eof_received(self)
        if self.owner is not None:
            self.owner.fast_fail("reset", "")
        elif self.sink is None and self.feeder is None and self.waiter is None:
            self.close()  # an idle pooled connection the upstream closed
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.upstream.lost(self)
        if self.owner is not None:
            self.owner.fast_fail("reset", "")


class Balancer:
    """Chooses an upstream per request (or per TCP connection)."""

    def __init__(self, upstreams: list[Upstream], policy: str) -> None:
        self.policy = policy
        self.rr = 0
        self.set(upstreams)

    def set(self, upstreams: list[Upstream]) -> None:
        """The upstreams in rotation from now on (DNS discovery changes them)."""
        self.upstreams = upstreams
        self.single = upstreams[0] if len(upstreams) == 1 else None

    def pick(
        self,
        now: float,
        max_requests: int,
        hash_value: bytes | None,
        tried: Sequence[Upstream],
    ) -> Upstream | None:
        single = self.single
        if single is not None:
            if single.available(now) and single.active < max_requests:
                return single
            return None
        cands = [
            u
            for u in self.upstreams
            if u.available(now) and u.active < max_requests and u not in tried
        ]
        if not cands:
            # On a retry with every other upstream out, the one that failed may try again.
            cands = [u for u in self.upstreams if u.available(now) and u.active < max_requests]
            if not cands:
                return None
        if len(cands) == 1:
            return cands[0]
        policy = self.policy
        if policy == "p2c-ewma":
            # Two at random, the cheaper wins: as good as asking all of them, at O(1), and
            # never the herd that always-the-least-loaded makes of stale figures.
            n = len(cands)
            i = int(random.random() * n)
            j = int(random.random() * (n - 1))
            if j >= i:
                j += 1
            a, b = cands[i], cands[j]
            t = time.monotonic()
            la, lb = a.latency(t), b.latency(t)
            if lb < 0 <= la:
                a, b, la, lb = b, a, lb, la
            if la < 0:  # as fast as its rival: the less loaded wins, a tie it wins itself
                return a if a.active <= b.active else b
            return a if la * (a.active + 1) <= lb * (b.active + 1) else b
        if policy == "round-robin":
            self.rr += 1
            return cands[self.rr % len(cands)]
        if policy == "weighted":
            total = 0
            best = cands[0]
            for u in cands:
                u.current_weight += u.weight
                total += u.weight
                if u.current_weight > best.current_weight:
                    best = u
            best.current_weight -= total
            return best
        if policy == "least-request":
            self.rr += 1
            n = len(cands)
            best = cands[self.rr % n]
            for i in range(n):
                u = cands[(self.rr + i) % n]
                if u.active < best.active:
                    best = u
            return best
        # hash-header: rendezvous hashing, so ejecting one upstream moves only its keys
        if hash_value is None:
            self.rr += 1
            return cands[self.rr % len(cands)]
        return max(cands, key=lambda u: zlib.crc32(u.hash_key, zlib.crc32(hash_value)))

    def why_none(self, now: float) -> tuple[str, str]:
        if not self.upstreams:
            return "no-healthy-upstream", "no endpoints (DNS discovery has found none)"
        if any(u.available(now) for u in self.upstreams):
            return "overflow", "every upstream is at --max-requests"
        if all(not u.healthy for u in self.upstreams):
            return "no-healthy-upstream", "no healthy upstream (health checks failing)"
        return "no-healthy-upstream", "no healthy upstream (all ejected or unhealthy)"
