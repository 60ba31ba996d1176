"""unix:///path.sock: ready when the unix socket accepts a connection."""

from __future__ import annotations

import asyncio

from .base import Probe, register


@register
class UnixProbe(Probe):
    schemes = ("unix",)
    network = False

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, self.path)
        transport.close()
