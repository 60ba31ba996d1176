"""The proxy's DNS discovery against answers a DNS server chooses, over real sockets.

A DNS answer is peer-controlled: whatever it holds, a lookup either succeeds
or counts as a failed lookup that keeps the endpoints found before. Before the
fixes, an SRV target with a label that is no ASCII (the reader keeps it with
U+FFFD) made the next query's IDNA encoding raise UnicodeError, and a TCP
fallback whose server closed early raised IncompleteReadError: neither is an
OSError or DnsError, so Discovery.once() raised. At start that failed the
proxy; in the refresh task it ended discovery for good, silently.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from podkit.ambassadors.proxy.discovery import (
    SRV,
    A,
    Discovery,
    DnsOptions,
    Endpoint,
    ResolvConf,
    Resolver,
)
from podkit.ambassadors.proxy.upstream import Target, parse_target

from tests.unit.test_proxy_discovery import name, rr  # the wire helpers, shared


def question(query: bytes) -> tuple[int, bytes, int]:
    """The id, the raw question (name, type, class) and the type of a query."""
    qid = struct.unpack("!H", query[:2])[0]
    end = query.index(b"\0", 12) + 5
    return qid, query[12:end], struct.unpack("!H", query[end - 4 : end - 2])[0]


Answer = Callable[[int], tuple[list[bytes], int]]  # qtype -> (answers, flags)


class FakeDns(asyncio.DatagramProtocol):
    """Answers each query with what `answer` gives for its type; counts the queries."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.queries: list[int] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        qid, q, qtype = question(data)
        self.queries.append(qtype)
        answers, flags = self.answer(qtype)
        head = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0)
        self.transport.sendto(head + q + b"".join(answers), addr)


@pytest.fixture
async def dns() -> AsyncIterator[Callable[[Answer], Any]]:
    transports: list[Any] = []

    async def make(answer: Answer) -> tuple[FakeDns, int]:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: FakeDns(answer), local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
        return proto, transport.get_extra_info("sockname")[1]

    yield make
    for t in transports:
        t.close()


def discovery(url: str, port: int) -> tuple[Discovery, list[list[Endpoint]]]:
    target: Target = parse_target(url, "--upstream", False)
    opts = DnsOptions(dns_resolver=None, dns_min_ttl=2.0, dns_max_ttl=30.0, dns_refresh=None)
    applied: list[list[Endpoint]] = []

    async def apply(t: Target, eps: list[Endpoint]) -> None:
        applied.append(eps)

    resolver = Resolver(("127.0.0.1", port), ResolvConf([("127.0.0.1", port)], [], 1))
    return Discovery(target, opts, resolver, apply), applied


async def once(d: Discovery) -> float:
    return await asyncio.wait_for(d.once(), 10)


@pytest.mark.parametrize(
    "label",
    [b"\xff", b"ok\x80ok", b"\xc3\xa9", b"a" * 10 + b"\xfe"],
)
async def test_an_srv_target_with_a_label_that_is_no_ascii_is_a_failed_lookup(
    dns: Any, label: bytes
) -> None:
    good = struct.pack("!HHH", 0, 1, 8080) + name("web.example")
    bad = struct.pack("!HHH", 0, 1, 8080) + bytes([len(label)]) + label + name("example")
    state = {"srv": [rr(SRV, 30, good)]}

    def answer(qtype: int) -> tuple[list[bytes], int]:
        if qtype == SRV:
            return state["srv"], 0x8180
        if qtype == A:
            return [rr(A, 30, bytes([10, 0, 0, 7]))], 0x8180
        return [], 0x8180

    _, port = await dns(answer)
    d, applied = discovery("dnssrv+http://_http._tcp.api.example.", port)
    assert await once(d) == 30.0
    assert applied == [[Endpoint("10.0.0.7", 8080)]]

    state["srv"] = [rr(SRV, 30, bad)]
    assert await once(d) == 2.0  # a failed lookup: ask again soon ...
    assert d.failures == 1
    assert d.endpoints == [Endpoint("10.0.0.7", 8080)]  # ... keeping what was found
    assert len(applied) == 1

    state["srv"] = [rr(SRV, 30, good)]  # and discovery goes on
    assert await once(d) == 30.0
    assert d.failures == 1


async def test_a_truncated_answer_whose_tcp_server_hangs_up_is_a_failed_lookup(dns: Any) -> None:
    """TC set over UDP sends the query again over TCP; a server that accepts and
    closes (or sends a length and less than that) fails the lookup."""
    served: list[int] = []

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(1)
        if len(served) % 2 == 0:
            writer.write(b"\x01\x00" + b"\x00" * 10)  # 256 bytes announced, 10 sent
        writer.close()

    server = await asyncio.start_server(tcp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: FakeDns(lambda qtype: ([], 0x8380)),  # TC and RD/RA: "ask over TCP"
        local_addr=("127.0.0.1", port),
    )
    try:
        d, applied = discovery("dns+http://api.example.:80", port)
        for n in (1, 2):
            assert await once(d) == 2.0
            assert d.failures == n
        assert served and applied == []
    finally:
        transport.close()
        server.close()
        await server.wait_closed()
