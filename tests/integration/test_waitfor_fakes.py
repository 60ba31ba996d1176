"""waitfor's kafka:// and mongodb:// against protocol-level fakes.

No Kafka broker and no MongoDB server install here (neither is in Debian),
so each is a fake (tests/peers/fakes.py) speaking just the requests the
probe sends: ApiVersions and Metadata v0 for Kafka, OP_MSG `hello` for
MongoDB. The state a test changes (topics and their leaders, primary or
secondary) is what a real server would report.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from podkit.initkits.waitfor.probe_mongodb import bson_decode, bson_encode

from tests.helpers import ProgramProcess, run_program
from tests.peers.fakes import ThreadedServer


def waiting_for(args: list[str]) -> ProgramProcess:
    return ProgramProcess("waitfor", ["--max-interval", "200ms", *args], admin=False)


class FakeKafka:
    """ApiVersions v0 and Metadata v0 of one broker; `topics` maps a name to its leaders."""

    def __init__(self) -> None:
        self.topics: dict[str, list[int]] = {}
        self.requests: list[int] = []
        self.server = ThreadedServer(self.handle)
        self.port = self.server.port

    def _string(self, text: str) -> bytes:
        return struct.pack("!h", len(text)) + text.encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            (size,) = struct.unpack("!i", await reader.readexactly(4))
            req = await reader.readexactly(size)
            api, _version, correlation = struct.unpack("!hhi", req[:8])
            self.requests.append(api)
            (cid_len,) = struct.unpack("!h", req[8:10])
            body = req[10 + cid_len :]
            if api == 18:
                out = struct.pack("!hi", 0, 2) + struct.pack("!hhh", 3, 0, 12)
                out += struct.pack("!hhh", 18, 0, 3)
            elif api == 3:
                (count,) = struct.unpack("!i", body[:4])
                names = list(self.topics) if count == 0 else [body[6 : 6 + body[5]].decode()]
                out = struct.pack("!i", 1) + struct.pack("!i", 0) + self._string("127.0.0.1")
                out += struct.pack("!i", self.port) + struct.pack("!i", len(names))
                for name in names:
                    leaders = self.topics.get(name)
                    out += struct.pack("!h", 0 if leaders is not None else 3) + self._string(name)
                    out += struct.pack("!i", len(leaders or []))
                    for pid, leader in enumerate(leaders or []):
                        out += struct.pack("!hii", 0, pid, leader)
                        out += struct.pack("!ii", 1, 0) + struct.pack("!ii", 1, 0)
            else:
                return
            msg = struct.pack("!i", correlation) + out
            writer.write(struct.pack("!i", len(msg)) + msg)
            await writer.drain()


def test_kafka_waits_for_the_topic_and_its_leaders() -> None:
    fake = FakeKafka()
    try:
        res = run_program("waitfor", ["--timeout", "10s", f"kafka://127.0.0.1:{fake.port}"])
        assert res.returncode == 0, res.stderr
        assert fake.requests[:2] == [18, 3]
        with waiting_for([f"kafka://127.0.0.1:{fake.port}?topic=orders"]) as p:
            p.wait_log(
                "waiting", error="topic 'orders': no such topic (UNKNOWN_TOPIC_OR_PARTITION)"
            )
            fake.topics["orders"] = [0, -1, 0]
            p.wait_log("waiting", error="topic 'orders': 1 partition(s) without a leader")
            fake.topics["orders"] = [0, 0, 0]
            assert p.wait(30) == 0, p.stderr()
    finally:
        fake.server.close()


class FakeMongo:
    """OP_MSG `hello` answered with `reply` (a primary, a secondary, or a failure)."""

    def __init__(self) -> None:
        self.reply: dict[str, Any] = {"ok": 1, "isWritablePrimary": False, "secondary": True,
                                      "setName": "rs0"}  # fmt: skip
        self.commands: list[dict[str, Any]] = []
        self.server = ThreadedServer(self.handle)
        self.port = self.server.port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, request_id, _to, opcode = struct.unpack("<iiii", await reader.readexactly(16))
        body = await reader.readexactly(length - 16)
        assert opcode == 2013 and body[4] == 0
        self.commands.append(bson_decode(body[5:]))
        doc = bson_encode(self.reply)
        payload = struct.pack("<I", 0) + b"\x00" + doc
        writer.write(struct.pack("<iiii", 16 + len(payload), 7, request_id, 2013) + payload)
        await writer.drain()


def test_mongodb_hello_and_primary() -> None:
    fake = FakeMongo()
    try:
        res = run_program("waitfor", ["--timeout", "10s", f"mongodb://127.0.0.1:{fake.port}"])
        assert res.returncode == 0, res.stderr
        assert fake.commands[0] == {"hello": 1, "$db": "admin"}
        with waiting_for([f"mongodb://127.0.0.1:{fake.port}?primary=1"]) as p:
            p.wait_log("waiting", error="the server is a secondary (rs0)")
            fake.reply = {"ok": 1, "isWritablePrimary": True, "setName": "rs0"}
            assert p.wait(30) == 0, p.stderr()
        fake.reply = {"ok": 0, "errmsg": "node is recovering"}
        res = run_program("waitfor", ["--timeout", "1s", f"mongodb://127.0.0.1:{fake.port}"])
        assert res.returncode == 124 and b"hello failed: node is recovering" in res.stderr
    finally:
        fake.server.close()
