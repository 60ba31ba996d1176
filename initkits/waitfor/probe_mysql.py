"""mysql://[user[:password]@]host:port: ready when the server sends its handshake.

A MySQL or MariaDB server greets every new connection with an initial
handshake packet (protocol version 10), or with an error packet when it cannot
take the connection (too many connections, host blocked, still starting).
The user and password are accepted for URL compatibility but not checked:
logging in would need mysql_native_password or caching_sha2_password over TLS.
"""

from __future__ import annotations

import struct

from .base import NotReady, Probe, register
from .net import close, open_stream


@register
class MySQLProbe(Probe):
    schemes = ("mysql", "mariadb")
    default_ports = {"mysql": 3306, "mariadb": 3306}
    allows_path = True

    async def check(self) -> None:
        reader, writer = await open_stream(self.host, self.port)
        try:
            head = await reader.readexactly(4)
            length = int.from_bytes(head[:3], "little")
            if not 1 <= length <= 64 * 1024:
                raise NotReady(f"not a MySQL server (answered {head!r})")
            payload = await reader.readexactly(length)
        finally:
            await close(writer)
        if payload[0] == 0xFF:
            raise NotReady(_error_text(payload))
        if payload[0] != 10:
            raise NotReady(f"unexpected handshake protocol {payload[0]} (want 10)")


def _error_text(payload: bytes) -> str:
    (code,) = struct.unpack("<H", payload[1:3]) if len(payload) >= 3 else (0,)
    text = payload[3:]
    if text[:1] == b"#":  # '#' + 5-character SQLSTATE, when present
        text = text[6:]
    message = text.decode("utf-8", "replace")
    if code == 1040:
        return f"too many connections: {message} (1040)"
    return f"server error {code}: {message}"
