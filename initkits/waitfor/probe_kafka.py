"""kafka://host:port[?topic=NAME]: a Kafka broker that answers ApiVersions and Metadata.

Ready when the broker answers ApiVersions (v0) without error and Metadata
(v0) lists at least one broker; with `?topic=NAME`, when the topic exists and
every partition has a leader (a topic still being created, or whose leader
is being elected, is not ready). No client library: two requests of the
Kafka protocol, written and read by hand. (Tested against a protocol-level
fake broker: no Kafka installs here.)
"""

from __future__ import annotations

import asyncio
import os
import struct
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, register
from .net import MAX_MESSAGE, close, open_stream

API_VERSIONS, METADATA = 18, 3
CLIENT_ID = b"podkit-waitfor"
ERRORS = {
    3: "no such topic (UNKNOWN_TOPIC_OR_PARTITION)",
    5: "no leader yet (LEADER_NOT_AVAILABLE)",
    6: "not the leader (NOT_LEADER_OR_FOLLOWER)",
    14: "the broker is loading (COORDINATOR_LOAD_IN_PROGRESS)",
    29: "not authorized to describe the topic (TOPIC_AUTHORIZATION_FAILED)",
    35: "unsupported version (UNSUPPORTED_VERSION)",
}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str:
        n = self.take("!h")
        if n < 0:
            return ""
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")


def _error(code: int) -> str:
    return ERRORS.get(code, f"Kafka error {code}")


@register
class KafkaProbe(Probe):
    schemes = ("kafka",)
    default_ports = {"kafka": 9092}
    query_keys = frozenset({"topic"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        self.topic = self.query.get("topic")
        if self.topic == "":
            raise ValueError("topic= needs a topic name")

    async def check(self) -> None:
        reader, writer = await open_stream(self.host, self.port)
        try:
            r = await _call(reader, writer, API_VERSIONS, b"")
            code = r.take("!h")
            if code:
                raise NotReady(f"ApiVersions: {_error(code)}")
            topics = b"\0\0\0\0"  # v0: an empty array asks for every topic
            if self.topic is not None:
                name = self.topic.encode()
                topics = struct.pack("!ih", 1, len(name)) + name
            r = await _call(reader, writer, METADATA, topics)
            brokers = r.take("!i")
            for _ in range(max(0, brokers)):
                r.take("!i")
                r.string()
                r.take("!i")
            if brokers <= 0:
                raise NotReady("the broker knows no brokers yet")
            if self.topic is not None:
                self._check_topic(r)
        except struct.error:
            raise NotReady("not a Kafka broker (malformed answer)") from None
        finally:
            await close(writer)

    def _check_topic(self, r: _Reader) -> None:
        for _ in range(r.take("!i")):
            code = r.take("!h")
            name = r.string()
            partitions = r.take("!i")
            leaderless = 0
            for _ in range(partitions):
                r.take("!h")  # partition error
                r.take("!i")  # partition id
                if r.take("!i") < 0:  # leader
                    leaderless += 1
                for _array in ("replicas", "in-sync replicas"):
                    count = r.take("!i")
                    r.pos += 4 * max(0, count)
            if name != self.topic:
                continue
            if code:
                raise NotReady(f"topic {name!r}: {_error(code)}")
            if partitions == 0:
                raise NotReady(f"topic {name!r} has no partitions yet")
            if leaderless:
                raise NotReady(f"topic {name!r}: {leaderless} partition(s) without a leader")
            return
        raise NotReady(f"topic {self.topic!r} not in the metadata")


async def _call(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, api: int, body: bytes
) -> _Reader:
    """One request (v0 header); the response body after its correlation id."""
    correlation = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    head = struct.pack("!hhih", api, 0, correlation, len(CLIENT_ID)) + CLIENT_ID
    msg = head + body
    writer.write(struct.pack("!i", len(msg)) + msg)
    await writer.drain()
    (size,) = struct.unpack("!i", await reader.readexactly(4))
    if not 4 <= size <= MAX_MESSAGE:
        raise NotReady(f"not a Kafka broker (answer of {size} bytes)")
    data = await reader.readexactly(size)
    if struct.unpack("!i", data[:4])[0] != correlation:
        raise NotReady("not a Kafka broker (wrong correlation id)")
    r = _Reader(data)
    r.pos = 4
    return r
