"""dns://name (`?type=A` or `?type=AAAA`): ready when the name resolves."""

from __future__ import annotations

import socket
from urllib.parse import SplitResult

from .base import Probe, Settings, register
from .net import resolve

FAMILIES = {"A": socket.AF_INET, "AAAA": socket.AF_INET6}


@register
class DNSProbe(Probe):
    schemes = ("dns",)
    default_ports = {"dns": 0}
    query_keys = frozenset({"type"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        rtype = self.query.get("type", "")
        if rtype and rtype.upper() not in FAMILIES:
            raise ValueError(f"type must be A or AAAA, not {rtype!r}")
        if parts.port is not None:
            raise ValueError("a dns:// target takes no port")
        self.family = FAMILIES.get(rtype.upper(), socket.AF_UNSPEC)

    async def check(self) -> None:
        # Through the system resolver (/etc/hosts, search domains, the cluster DNS),
        # which is how the app will resolve the name too.
        await resolve(self.host, 0, self.family)
