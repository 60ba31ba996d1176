"""tcp://host:port: ready when a connection is accepted."""

from __future__ import annotations

import asyncio

from .base import Probe, register
from .net import resolve


@register
class TCPProbe(Probe):
    schemes = ("tcp",)

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _fam, ip in await resolve(self.host, self.port):
            try:
                transport, _ = await loop.create_connection(asyncio.Protocol, ip, self.port)
            except OSError as exc:
                last = exc
                continue
            transport.close()
            return
        assert last is not None
        raise last
