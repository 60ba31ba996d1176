"""mongodb://host:port[?primary=1]: a MongoDB server that answers the `hello` command.

Ready when `{hello: 1}` (OP_MSG, MongoDB 3.6+) answers `ok: 1`; with
`?primary=1`, only when the server is a writable primary (a secondary, or a
replica-set member still electing, is not ready). No driver: one OP_MSG with
a small BSON document, written and read by hand. (Tested against a
protocol-level fake server: no MongoDB installs here.)
"""

from __future__ import annotations

import os
import struct
from typing import Any
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, flag, register
from .net import MAX_MESSAGE, close, open_stream

OP_MSG = 2013


def bson_encode(doc: dict[str, Any]) -> bytes:
    """The few BSON types a command needs: int32, string, bool."""
    out = b""
    for key, value in doc.items():
        name = key.encode() + b"\0"
        if isinstance(value, bool):
            out += b"\x08" + name + (b"\x01" if value else b"\x00")
        elif isinstance(value, int):
            out += b"\x10" + name + struct.pack("<i", value)
        else:
            raw = str(value).encode() + b"\0"
            out += b"\x02" + name + struct.pack("<i", len(raw)) + raw
    return struct.pack("<i", len(out) + 5) + out + b"\0"


_FIXED = {0x01: 8, 0x07: 12, 0x09: 8, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x0A: 0, 0x08: 1}


def bson_decode(data: bytes) -> dict[str, Any]:
    """The top-level fields a readiness check reads; nested documents are skipped over."""
    (size,) = struct.unpack_from("<i", data, 0)
    out: dict[str, Any] = {}
    pos, end = 4, min(size, len(data)) - 1
    while pos < end:
        kind = data[pos]
        name_end = data.index(b"\0", pos + 1)
        name = data[pos + 1 : name_end].decode("utf-8", "replace")
        pos = name_end + 1
        if kind == 0x01:
            out[name] = struct.unpack_from("<d", data, pos)[0]
        elif kind == 0x08:
            out[name] = data[pos] == 1
        elif kind == 0x10:
            out[name] = struct.unpack_from("<i", data, pos)[0]
        elif kind == 0x12:
            out[name] = struct.unpack_from("<q", data, pos)[0]
        if kind in _FIXED:
            pos += _FIXED[kind]
        elif kind in (0x02, 0x0D, 0x0E):  # string, code, symbol
            (n,) = struct.unpack_from("<i", data, pos)
            if kind == 0x02:
                out[name] = data[pos + 4 : pos + 3 + n].decode("utf-8", "replace")
            pos += 4 + n
        elif kind in (0x03, 0x04):  # document, array
            (n,) = struct.unpack_from("<i", data, pos)
            pos += n
        elif kind == 0x05:  # binary
            (n,) = struct.unpack_from("<i", data, pos)
            pos += 5 + n
        else:
            break  # a type we do not need: the fields so far are enough
    return out


@register
class MongoDBProbe(Probe):
    schemes = ("mongodb",)
    default_ports = {"mongodb": 27017}
    allows_path = True
    query_keys = frozenset({"primary"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        self.primary = flag(self.query.get("primary", "0"))

    async def check(self) -> None:
        reader, writer = await open_stream(self.host, self.port)
        try:
            request_id = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
            body = struct.pack("<I", 0) + b"\x00" + bson_encode({"hello": 1, "$db": "admin"})
            writer.write(struct.pack("<iiii", 16 + len(body), request_id, 0, OP_MSG) + body)
            await writer.drain()
            head = await reader.readexactly(16)
            length, _rid, response_to, opcode = struct.unpack("<iiii", head)
            if not 21 <= length <= MAX_MESSAGE or response_to != request_id:
                raise NotReady(f"not a MongoDB server (answered {head[:8]!r})")
            payload = await reader.readexactly(length - 16)
        finally:
            await close(writer)
        if opcode != OP_MSG or payload[4] != 0:
            raise NotReady(f"unexpected reply (opcode {opcode}); MongoDB 3.6 or later is needed")
        try:
            reply = bson_decode(payload[5:])
        except (struct.error, ValueError, IndexError):
            raise NotReady("malformed BSON reply") from None
        if reply.get("ok") != 1:
            raise NotReady(f"hello failed: {reply.get('errmsg', 'ok is not 1')}")
        if self.primary and not (reply.get("isWritablePrimary") or reply.get("ismaster")):
            role = "a secondary" if reply.get("secondary") else "not a writable primary"
            raise NotReady(f"the server is {role} ({reply.get('setName', 'no replica set')})")
