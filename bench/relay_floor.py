"""The floor of a Python proxy: bytes relayed with no HTTP at all (issue 18).

`python bench/relay_floor.py LISTEN_PORT UPSTREAM_PORT` accepts connections
and opens one upstream connection for each, then copies bytes both ways as
they arrive: no parsing, no head rewriting, no pool, no log, no metrics. It
runs on the same event loop the proxy runs on (uvloop when installed, as the
`proxy` extra installs it).

It is not a proxy anyone should use; it measures what CPython and the loop
cost per request before podkit's proxy does any work of its own, so that
bench_proxy.py can say how much of the gap to HAProxy is podkit's and how
much is the runtime's. Under wrk with keep-alive, one client connection maps
to one nginx connection, so the relay's system calls per request are the
same four as HAProxy's (two reads, two writes).
"""

from __future__ import annotations

import asyncio
import sys


class _Side(asyncio.Protocol):
    """One socket of a relayed pair: what it reads is written to its peer."""

    def __init__(self) -> None:
        self.peer: asyncio.Transport | None = None
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.write(data)
        else:  # the upstream is still connecting
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.peer.close()


class _Client(_Side):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream_transport, upstream = await loop.create_connection(_Side, "127.0.0.1", UPSTREAM)
        upstream.peer = self.transport
        self.peer = upstream_transport  # type: ignore[assignment]
        for data in self.pending:
            upstream_transport.write(data)
        self.pending.clear()


UPSTREAM = 0


async def main(listen: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Client, "127.0.0.1", listen, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    UPSTREAM = int(sys.argv[2])
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(int(sys.argv[1])))
    else:
        uvloop.run(main(int(sys.argv[1])))
