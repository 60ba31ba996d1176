"""grpc:// and grpcs://: the standard gRPC health check (grpc.health.v1), ready when SERVING.

`grpc://host:port[?service=NAME]`: one `grpc.health.v1.Health/Check` call
with the service name (empty: the server as a whole); ready when the answer
says SERVING. NOT_SERVING, SERVICE_UNKNOWN and UNKNOWN are reported as such.

No gRPC library: the call is a few HTTP/2 frames written by hand (the client
preface, SETTINGS, one HEADERS block of literal, non-Huffman HPACK fields,
one DATA frame with the 5-byte gRPC prefix and a one-field protobuf), and the
answer is read the same way: the status is a varint in the DATA frame. The
response headers are not decoded (that needs HPACK's Huffman table), so an
answer without a health message (an unknown service, or no health service:
grpc-status in trailers only) is reported as that. grpcio would cost waitfor
16 MB of peak RSS (40.2 MB instead of 24.0 MB after the imports) and about
290 ms of start-up for this one call (measured on the 2-core CI machine; see
docs/waitfor.md).
"""

from __future__ import annotations

import asyncio
import struct
from urllib.parse import SplitResult

from podkit import __version__

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, close, open_stream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PATH = "/grpc.health.v1.Health/Check"
STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
H2_ERRORS = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    2: "INTERNAL_ERROR",
    7: "REFUSED_STREAM",
    8: "CANCEL",
    11: "ENHANCE_YOUR_CALM",
    13: "HTTP_1_1_REQUIRED",
}


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix; `first` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_str(text: str) -> bytes:
    raw = text.encode()
    return _hpack_int(len(raw), 7, 0) + raw  # H bit 0: no Huffman


def _literal(name_index: int, value: str) -> bytes:
    """Literal header field without indexing, name from the static table (§6.2.2)."""
    return _hpack_int(name_index, 4, 0x00) + _hpack_str(value)


def _literal_new(name: str, value: str) -> bytes:
    return b"\x00" + _hpack_str(name) + _hpack_str(value)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + struct.pack("!I", stream) + payload
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data):
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            break
    raise NotReady("malformed health response (protobuf)")


def health_status(message: bytes) -> int:
    """The `status` field (1, an enum) of a HealthCheckResponse; 0 (UNKNOWN) when absent."""
    pos = 0
    status = 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
            if field == 1:
                status = value
        elif wire == 2:
            size, pos = _varint(message, pos)
            pos += size
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise NotReady("malformed health response (protobuf)")
    return status


@register
class GRPCProbe(Probe):
    schemes = ("grpc", "grpcs")
    default_ports = {"grpcs": 443}
    query_keys = frozenset({"service"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        self.service = self.query.get("service", "")

    def request(self) -> bytes:
        authority = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        block = (
            b"\x83"  # :method POST (static index 3)
            + (b"\x87" if self.scheme == "grpcs" else b"\x86")  # :scheme https / http
            + _literal(4, PATH)  # :path
            + _literal(1, authority)  # :authority
            + _literal(31, "application/grpc")  # content-type
            + _literal_new("te", "trailers")
            + _literal(58, f"podkit-waitfor/{__version__}")  # user-agent
        )
        service = self.service.encode()
        body = (b"\x0a" + _pb_varint(len(service)) + service) if service else b""
        message = b"\x00" + struct.pack("!I", len(body)) + body
        return (
            PREFACE
            + _frame(SETTINGS, 0, 0, struct.pack("!HI", 2, 0))  # ENABLE_PUSH 0
            + _frame(HEADERS, END_HEADERS, 1, block)
            + _frame(DATA, END_STREAM, 1, message)
        )

    async def check(self) -> None:
        tls = None
        if self.scheme == "grpcs":
            from podkit.http import ssl_context

            # Its own context, not the shared one: ALPN h2 is for gRPC only.
            t = self.settings.tls
            tls = ssl_context(t.ca_file, t.insecure, t.cert_file, t.key_file)
            tls.set_alpn_protocols(["h2"])
        reader, writer = await open_stream(self.host, self.port, tls=tls)
        try:
            writer.write(self.request())
            await writer.drain()
            status = await self._answer(reader, writer)
        finally:
            await close(writer)
        if status != 1:
            name = STATUSES.get(status, str(status))
            what = f" for {self.service!r}" if self.service else ""
            # proto3 leaves a zero status out: an error answer with an empty
            # message (grpcio's NOT_FOUND for an unregistered service) reads the same.
            hint = " (or a service the server does not know)" if status == 0 else ""
            raise NotReady(f"health status {name}{what}{hint}")

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        data = b""
        while True:
            head = await reader.readexactly(9)
            if head.startswith(b"HTTP/"):
                raise NotReady("not a gRPC server (it answered HTTP/1)")
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            (stream,) = struct.unpack("!I", head[5:9])
            stream &= 0x7FFFFFFF
            if length > MAX_MESSAGE:
                raise NotReady(f"not a gRPC server (frame of {length} bytes)")
            payload = await reader.readexactly(length)
            if kind == SETTINGS and not flags & ACK:
                writer.write(_frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                writer.write(_frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                code = struct.unpack("!I", payload[4:8])[0] if len(payload) >= 8 else 0
                raise NotReady(f"the server refused the call (GOAWAY {H2_ERRORS.get(code, code)})")
            elif kind == RST_STREAM and stream == 1:
                code = struct.unpack("!I", payload[:4])[0] if len(payload) >= 4 else 0
                raise NotReady(f"the server reset the call ({H2_ERRORS.get(code, code)})")
            elif kind == DATA and stream == 1:
                data += _unpad(payload, flags)
                if len(data) >= 5:
                    size = struct.unpack("!I", data[1:5])[0]
                    if data[0] != 0:
                        raise NotReady("compressed health response; not supported")
                    if len(data) >= 5 + size:
                        return health_status(data[5 : 5 + size])
            elif kind == HEADERS and stream == 1 and flags & END_STREAM:
                raise NotReady(
                    "no health status in the answer (grpc-status in trailers only: "
                    "is grpc.health.v1 served, and the service registered?)"
                )
            await writer.drain()


def _unpad(payload: bytes, flags: int) -> bytes:
    if flags & 0x8:  # PADDED
        pad = payload[0]
        return payload[1 : len(payload) - pad]
    return payload


def _pb_varint(value: int) -> bytes:
    """A protobuf varint (the length of the service name)."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
