"""How the admin server takes connections: at most a cap of them, within the descriptors free.

It accepts connections itself, one at a time, and holds at most its cap plus
`PROBE_HEADROOM` (also while a TLS handshake runs), never more than half the
file descriptors that were free at start: a flood must not take the
descriptors the program needs for its own files. Past that, a new connection
closes the one that has waited longest on its client (idle keep-alive, slow
head, slow handshake), as nginx reuses idle keep-alive connections when it
runs out; connections past the cap are marked `probe_only`.

`Listener` knows nothing of HTTP: `podkit.admin.AdminServer` adds the requests.
Kept apart from it because every line compiled at start is resident memory of
an idle sidecar (PYTHONDONTWRITEBYTECODE images compile from source).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from .logs import RateLimited, where
from .options import split_addr

if TYPE_CHECKING:
    from ._admin_auth import TLSFiles

log = logging.getLogger("podkit.admin")

#: Connections kept beyond the cap for the kubelet's probes.
PROBE_HEADROOM = 8
#: The kernel's queue of connections not yet accepted (they hold no descriptor of ours).
BACKLOG = 128


#: Failures no request should cause, logged at most once a minute per kind.
FAILURES = RateLimited(log, 60.0)


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


class Listener:
    """Accept, admit or evict, hand over; subclasses implement `_requests`."""

    tls: TLSFiles | None = None
    #: The most a StreamReader buffers before a separator (the longest head).
    stream_limit = 64 * 1024

    def __init__(self, addr: str, max_connections: int) -> None:
        self.addr = addr
        self.port: int | None = None
        self.max_connections = max_connections
        #: Connections closed to make room, and refused outright (nothing could be closed).
        self.evicted = 0
        self.refused = 0
        self._socks: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._conns: dict[_Conn, None] = {}
        self._open = False
        self._last_refusal_log = -60.0

    def handshake_timeout(self) -> float:
        return 30.0

    async def _requests(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        host, port = split_addr(self.addr)
        loop = asyncio.get_running_loop()
        try:
            # A numeric address needs no resolver: bytes and AI_NUMERICHOST keep
            # the idna codec (unicodedata, ~0.6 MB) and the resolver thread out.
            infos = socket.getaddrinfo(
                host.encode("ascii"),
                port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST,
            )
        except (socket.gaierror, UnicodeEncodeError):
            infos = await loop.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
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
                await asyncio.sleep(0)
                continue
            conn = _Conn(probe_only=len(self._conns) >= self.max_connections)
            self._conns[conn] = None
            conn.task = asyncio.create_task(self._serve(conn, sock))
            # sock_accept returns without yielding while the backlog has more:
            # yield, so an evicted connection's descriptor is closed before the
            # next is taken, and the program runs between accepts of a flood.
            await asyncio.sleep(0)

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
            reader = asyncio.StreamReader(limit=self.stream_limit, loop=loop)
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
                    ssl_handshake_timeout=self.handshake_timeout() if tls else None,
                )
            except (OSError, ssl.SSLError, TimeoutError):
                sock.close()
                return
            conn.transport = transport
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._requests(conn, reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            # A request this server failed to foresee: the client chose the
            # bytes and may send them again, so one record a minute per kind,
            # not asyncio's traceback per connection.
            FAILURES.log(
                type(exc).__name__,
                logging.ERROR,
                "admin connection failed",
                error=f"{type(exc).__name__}: {exc}"[:300],
                where=where(exc),
            )
        finally:
            self._conns.pop(conn, None)
            if writer is not None:
                writer.transport.abort()
            elif conn.transport is None:
                sock.close()
