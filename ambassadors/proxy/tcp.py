"""TCP mode: per-connection balancing and failover, raw bytes both ways with half-close."""

from __future__ import annotations

import logging
from typing import Any

from podkit.aio import spawn

from .http1 import Conn, EofFramer, Pump, splice
from .httpproxy import ACCESS_LOG
from .listener import BaseListener, Settings, clock
from .upstream import ConnectFailure, Upstream

log = logging.getLogger("podkit.proxy")


class TcpPump(Pump):
    __slots__ = ("counter", "lst")

    def __init__(self, src: Conn, dst: Conn, lst: TcpListener, counter: str) -> None:
        super().__init__(src, dst, EofFramer(), clock.now)
        self.lst = lst
        self.counter = counter

    def feed(self, data: bytes) -> None:
        self.last = clock.now
        Pump.feed(self, data)

    def account(self, n: int) -> None:
        self.lst.bytes[self.counter] += n


class TcpListener(BaseListener):
    kind = "tcp"

    def __init__(self, s: Settings) -> None:
        super().__init__(s)
        self.bytes = {"to_upstream": 0, "to_client": 0}
        self.refused = 0

    def protocol_factory(self) -> Any:
        return lambda: TcpClient(self)

    def wants_health_checks(self) -> bool:
        return True  # every TCP upstream is probed by connecting

    async def check(self, u: Upstream) -> tuple[bool, str]:
        _reader, writer = await self._open(u)
        writer.close()
        return True, ""

    def sweep(self, now: float) -> None:
        limit = self.s.idle_timeout
        for c in list(self.conns):
            a, b = c.pumps
            if a is not None and b is not None and now - max(a.last, b.last) > limit:
                c.idle_out()


class TcpClient(Conn):
    def __init__(self, lst: TcpListener) -> None:
        super().__init__()
        self.lst = lst
        self.pumps: tuple[TcpPump | None, TcpPump | None] = (None, None)
        self.upstream_conn: Conn | None = None
        self.flood_limit = 256 * 1024
        self.client = "?"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # Read now: uvloop's transport looks it up on the socket, gone once closed.
        self.client = str((transport.get_extra_info("peername") or ["?"])[0])
        if self.lst.client_identity(transport) is None:
            return  # refused by the mTLS allow-lists: closing
        self.lst.conns.add(self)
        spawn(self.run(), self.lst.loop)  # held until it ends: the loop's hold is weak

    def connection_lost(self, exc: Exception | None) -> None:
        Conn.connection_lost(self, exc)
        self.lst.conns.discard(self)

    def idle_out(self) -> None:
        for p in self.pumps:
            if p is not None:
                p.fail(TimeoutError("idle timeout"))

    async def run(self) -> None:
        lst = self.lst
        s = lst.s
        loop = lst.loop
        t0 = loop.time()
        tried: list[Upstream] = []
        uc: Conn | None = None
        up: Upstream | None = None
        while uc is None and not self.closed:
            up = lst.balancer.pick(lst.now, s.max_connections, None, tried)
            if up is None or up in tried:
                lst.refused += 1
                lst.warn(
                    "no upstream for a TCP connection; closing it",
                    extra={"listen": s.listen, "tried": [u.label for u in tried]},
                )
                self.close()
                self.access(tried[-1] if tried else None, t0, 0, 0, "no upstream")
                return
            tried.append(up)
            try:
                uc = await up.connect(lst.ssl_ctx)
            except ConnectFailure as exc:
                up.failure(lst.now, "connect-failure", str(exc))
                lst.warn(
                    "cannot connect to upstream", extra={"upstream": up.label, "error": str(exc)}
                )
        assert up is not None
        if uc is None or self.closed:
            # The client hung up while the upstream was being connected: still one
            # access line, or a connect-and-reset flood would leave no trace at all.
            if uc is not None:
                uc.close()
            self.access(up, t0, 0, 0, "client closed")
            return
        up.success()
        up.tcp_connections += 1
        up.active += 1
        self.upstream_conn = uc
        a = TcpPump(self, uc, lst, "to_upstream")
        b = TcpPump(uc, self, lst, "to_client")
        self.pumps = (a, b)
        a.start()
        b.start()
        reason = "closed"
        try:
            err = await splice(a, b)
            if err is not None:
                reason = str(err) or type(err).__name__
        except OSError as gone:  # not `exc`: see test_proxy_compiled_names.py
            # Passing a half-close on to a client that has just gone (asyncio's
            # write_eof: ENOTCONN). The client chose when to hang up: this is how
            # the connection ended, not a failure of the proxy's.
            reason = str(gone) or type(gone).__name__
        finally:
            up.active -= 1
            self.pumps = (None, None)
            uc.close()
            self.close()
        self.access(up, t0, a.nbytes, b.nbytes, reason)

    def access(self, up: Upstream | None, t0: float, nin: int, nout: int, reason: str) -> None:
        lst = self.lst
        if lst.s.access_log:
            ACCESS_LOG.write(
                {
                    "message": "connection",
                    "listen": lst.s.listen,
                    "upstream": up.label if up is not None else None,
                    "client": self.client,
                    "duration_seconds": round(lst.loop.time() - t0, 6),
                    "bytes_in": nin,
                    "bytes_out": nout,
                    "end": reason,
                }
            )
