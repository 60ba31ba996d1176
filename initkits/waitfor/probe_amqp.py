"""amqp:// and amqps://: AMQP 0-9-1 (RabbitMQ); ready when connection.open succeeds.

`amqp://[user[:password]@]host[:port][/vhost]` (vhost percent-encoded: `/`
is `%2F`, and an empty path is the default vhost `/`; user and password
default to guest/guest, as AMQP clients do). waitfor sends the protocol
header, answers connection.start with PLAIN credentials and connection.tune,
and is ready when connection.open of the vhost is answered with open-ok; then
it closes politely. A refused login (403 ACCESS_REFUSED), a missing vhost or
missing permissions (530 NOT_ALLOWED) and a broker still starting are each
reported as such.
"""

from __future__ import annotations

import asyncio
import struct
from urllib.parse import SplitResult, unquote

from podkit.aio import wait_for

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, close, open_stream

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
START, START_OK = (10, 10), (10, 11)
TUNE, TUNE_OK = (10, 30), (10, 31)
OPEN, OPEN_OK = (10, 40), (10, 41)
CLOSE, CLOSE_OK = (10, 50), (10, 51)
REPLY_CODES = {
    320: "the broker is shutting down (CONNECTION_FORCED)",
    403: "login refused: wrong user or password (ACCESS_REFUSED)",
    530: "not allowed (NOT_ALLOWED): no such vhost, or no permission on it",
    541: "broker error (INTERNAL_ERROR)",
}


def _shortstr(text: str) -> bytes:
    raw = text.encode()
    return bytes([len(raw)]) + raw


def _longstr(raw: bytes) -> bytes:
    return struct.pack("!I", len(raw)) + raw


def _table(items: dict[str, bytes]) -> bytes:
    """A field table from already-typed values (type octet + value)."""
    body = b"".join(_shortstr(k) + v for k, v in items.items())
    return struct.pack("!I", len(body)) + body


CLIENT_PROPERTIES = _table(
    {
        "product": b"S" + _longstr(b"podkit-waitfor"),
        # Ask for a connection.close with the reason on a failed login,
        # instead of a bare closed socket.
        "capabilities": b"F" + _table({"authentication_failure_close": b"t\x01"}),
    }
)


@register
class AMQPProbe(Probe):
    schemes = ("amqp", "amqps")
    default_ports = {"amqp": 5672, "amqps": 5671}
    allows_path = True
    query_keys = frozenset({"password_file"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        self.vhost = unquote(path) if path else "/"
        if "/" in path:
            raise ValueError("the vhost is one path segment; write / as %2F")

    async def check(self) -> None:
        tls = self.settings.ssl_context() if self.scheme == "amqps" else None
        reader, writer = await open_stream(self.host, self.port, tls=tls)
        try:
            writer.write(PROTOCOL_HEADER)
            await writer.drain()
            method, args = await _read_method(reader)
            if method != START:
                raise NotReady(f"expected connection.start, got method {method}")
            mechanisms = _start_mechanisms(args)
            if b"PLAIN" not in mechanisms.split():
                raise NotReady(f"the broker offers no PLAIN login ({mechanisms.decode()})")
            user = self.user if self.user is not None else "guest"
            password = self.password if self.user is not None else "guest"
            response = b"\0" + user.encode() + b"\0" + (password or "").encode()
            _send_method(
                writer,
                START_OK,
                CLIENT_PROPERTIES + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US"),
            )
            await writer.drain()
            method, args = await _read_method(reader)
            if method != TUNE:
                raise NotReady(f"expected connection.tune, got method {method}")
            channel_max, frame_max, _heartbeat = struct.unpack("!HIH", args[:8])
            # No heartbeats: the connection lives for one attempt.
            _send_method(writer, TUNE_OK, struct.pack("!HIH", channel_max, frame_max, 0))
            _send_method(writer, OPEN, _shortstr(self.vhost) + _shortstr("") + b"\0")
            await writer.drain()
            method, args = await _read_method(reader)
            if method != OPEN_OK:
                raise NotReady(f"expected connection.open-ok, got method {method}")
            _send_method(writer, CLOSE, struct.pack("!H", 200) + _shortstr("ready") + b"\0" * 4)
            await writer.drain()
            try:
                await wait_for(_read_method(reader), 0.5)  # close-ok
            except (TimeoutError, OSError, asyncio.IncompleteReadError, NotReady):
                pass
        except asyncio.IncompleteReadError:
            raise NotReady("the broker closed the connection (a refused login?)") from None
        finally:
            await close(writer)


def _send_method(writer: asyncio.StreamWriter, method: tuple[int, int], args: bytes) -> None:
    payload = struct.pack("!HH", *method) + args
    writer.write(struct.pack("!BHI", FRAME_METHOD, 0, len(payload)) + payload + bytes([FRAME_END]))


async def _read_method(reader: asyncio.StreamReader) -> tuple[tuple[int, int], bytes]:
    """The next method frame (heartbeats skipped); connection.close raises NotReady."""
    while True:
        head = await reader.readexactly(7)
        if head.startswith(b"AMQP"):
            rest = await reader.readexactly(1)
            version = ".".join(str(b) for b in (head + rest)[5:8])
            raise NotReady(f"the broker speaks AMQP {version}, not 0-9-1")
        kind, _channel, size = struct.unpack("!BHI", head)
        if size > MAX_MESSAGE:
            raise NotReady(f"not an AMQP broker (frame of {size} bytes)")
        payload = await reader.readexactly(size)
        if (await reader.readexactly(1))[0] != FRAME_END:
            raise NotReady("not an AMQP broker (bad frame end)")
        if kind == FRAME_HEARTBEAT:
            continue
        if kind != FRAME_METHOD or len(payload) < 4:
            raise NotReady(f"unexpected AMQP frame type {kind}")
        method = struct.unpack("!HH", payload[:4])
        if method == CLOSE:
            raise NotReady(_close_reason(payload[4:]))
        return (method[0], method[1]), payload[4:]


def _start_mechanisms(args: bytes) -> bytes:
    try:
        pos = 2  # version major, minor
        (table_len,) = struct.unpack("!I", args[pos : pos + 4])
        pos += 4 + table_len
        (mech_len,) = struct.unpack("!I", args[pos : pos + 4])
        return args[pos + 4 : pos + 4 + mech_len]
    except struct.error:
        raise NotReady("malformed connection.start") from None


def _close_reason(args: bytes) -> str:
    try:
        (code,) = struct.unpack("!H", args[:2])
        text = args[3 : 3 + args[2]].decode("utf-8", "replace")
    except (struct.error, IndexError):
        return "the broker closed the connection"
    plain = REPLY_CODES.get(code)
    return f"{plain}: {text}" if plain else f"connection.close {code}: {text}"
