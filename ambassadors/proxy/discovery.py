"""DNS discovery: a headless Service's records as upstream endpoints, kept current.

`dns+http://name:port` stands for every A and AAAA record of `name`;
`dnssrv+http://_port._proto.name` for every target of the SRV records of that name
(the lowest priority present, each target's weight kept). The name is resolved again
when its records' TTL runs out, clamped to --dns-min-ttl..--dns-max-ttl, or every
--dns-refresh when that is set. A failed lookup keeps the endpoints last found: a DNS
server that is down for a moment must not empty the pool.

getaddrinfo() does not tell the TTL, so this is a small DNS client of its own over
UDP (TCP when the answer is truncated), RFC 1035, with the resolver and the search
list from /etc/resolv.conf as a pod has them (Kubernetes writes ndots:5 there).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from podkit import OptionGroup, UsageError, option
from podkit.aio import wait_for

from .upstream import Target

log = logging.getLogger("podkit.proxy")

A, AAAA, CNAME, SRV = 1, 28, 5, 33
NOERROR, NXDOMAIN = 0, 3
QUERY_TIMEOUT = 2.0  # per try; two tries per question
MAX_CNAMES = 8


class DnsOptions(OptionGroup):
    """How dns+ and dnssrv+ upstreams are resolved."""

    dns_resolver: str | None = option(
        None,
        help="DNS server for dns+/dnssrv+ upstreams, HOST[:PORT] (default: from /etc/resolv.conf)",
    )
    dns_min_ttl: float = option(
        "1s", kind="duration", min=0.05, help="re-resolve no sooner than this, whatever the TTL"
    )
    dns_max_ttl: float = option(
        "60s", kind="duration", min=0.05, help="re-resolve at least this often, whatever the TTL"
    )
    dns_refresh: float | None = option(
        None,
        kind="duration",
        min=0.05,
        help="re-resolve at this fixed interval instead of on the records' TTL",
    )

    def check(self) -> None:
        self.check_dns()

    def check_dns(self) -> None:
        """(Named apart from check() so a class mixing several groups can call each.)"""
        if self.dns_max_ttl < self.dns_min_ttl:
            raise UsageError(f"{self.flag('dns_max_ttl')}: must not be below --dns-min-ttl")
        if self.dns_resolver:
            parse_server(self.dns_resolver, self.flag("dns_resolver"))


class DnsError(Exception):
    pass


@dataclass(frozen=True)
class Endpoint:
    host: str  # an IP address
    port: int
    weight: int = 1


def parse_server(text: str, where: str) -> tuple[str, int]:
    """HOST, [HOST]:PORT or HOST:PORT -> (host, port)."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise UsageError(f"{where}: {text!r}: expected [HOST]:PORT")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        if not p.isdigit():
            raise UsageError(f"{where}: {text!r}: expected HOST:PORT")
        port = int(p)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"{where}: {text!r}: the resolver must be an IP address") from None
    if not 0 < port < 65536:
        raise UsageError(f"{where}: {text!r}: bad port")
    return host, port


@dataclass
class ResolvConf:
    servers: list[tuple[str, int]]
    search: list[str]
    ndots: int = 1

    @classmethod
    def read(cls, path: str = "/etc/resolv.conf") -> ResolvConf:
        servers: list[tuple[str, int]] = []
        search: list[str] = []
        ndots = 1
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        for line in lines:
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                try:
                    servers.append(parse_server(words[1], path))
                except UsageError:
                    pass
            elif words[0] in ("search", "domain"):
                search = words[1:]
            elif words[0] == "options":
                for w in words[1:]:
                    if w.startswith("ndots:") and w[6:].isdigit():
                        ndots = min(int(w[6:]), 15)
        return cls(servers or [("127.0.0.1", 53)], search, ndots)

    def candidates(self, name: str) -> list[str]:
        """The names to try for `name`, in resolv.conf(5)'s order."""
        if name.endswith("."):
            return [name[:-1]]
        with_search = [f"{name}.{d.strip('.')}" for d in self.search]
        if name.count(".") >= self.ndots:
            return [name, *with_search]
        return [*with_search, name]


# -- the wire format (RFC 1035 section 4) -----------------------------------------------


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    out = [struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)]  # RD set
    for label in name.strip(".").split("."):
        try:
            raw = label.encode("idna") if not label.isascii() else label.encode()
        except UnicodeError:  # an SRV target from an answer, with bytes read as U+FFFD
            raise DnsError(f"bad name {name!r}") from None
        if not 0 < len(raw) < 64:
            raise DnsError(f"bad name {name!r}")
        out.append(bytes([len(raw)]) + raw)
    out.append(b"\x00" + struct.pack("!HH", qtype, 1))
    return b"".join(out)


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed name at `pos`; returns it and the offset after it."""
    labels: list[str] = []
    end = -1
    jumps = 0
    while True:
        if pos >= len(msg):
            raise DnsError("truncated name")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("truncated pointer")
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 64:
                raise DnsError("compression loop")
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            continue
        if n == 0:
            return ".".join(labels).lower(), (end if end >= 0 else pos + 1)
        labels.append(msg[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


@dataclass
class Record:
    name: str
    rtype: int
    ttl: int
    data: str | tuple[int, int, int, str]  # address or name; SRV: priority, weight, port, target


@dataclass
class Reply:
    rcode: int
    truncated: bool
    records: list[Record]  # answer and additional sections


def decode_reply(msg: bytes, qid: int) -> Reply:
    if len(msg) < 12:
        raise DnsError("short reply")
    rid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", msg[:12])
    if rid != qid or not flags & 0x8000:
        raise DnsError("reply does not match the query")
    pos = 12
    for _ in range(qd):
        _, pos = _read_name(msg, pos)
        pos += 4
    records: list[Record] = []
    for i in range(an + ns + ar):
        name, pos = _read_name(msg, pos)
        if pos + 10 > len(msg):
            raise DnsError("truncated record")
        rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", msg[pos : pos + 10])
        pos += 10
        rdata = msg[pos : pos + rdlen]
        if len(rdata) != rdlen:
            raise DnsError("truncated record data")
        data: str | tuple[int, int, int, str] | None = None
        if an <= i < an + ns:
            pass  # authority: not needed
        elif rtype == A and rdlen == 4:
            data = str(ipaddress.IPv4Address(rdata))
        elif rtype == AAAA and rdlen == 16:
            data = str(ipaddress.IPv6Address(rdata))
        elif rtype == CNAME:
            data = _read_name(msg, pos)[0]
        elif rtype == SRV and rdlen >= 7:
            prio, weight, port = struct.unpack("!HHH", rdata[:6])
            data = (prio, weight, port, _read_name(msg, pos + 6)[0])
        pos += rdlen
        if data is not None:
            records.append(Record(name, rtype, min(ttl, 0x7FFFFFFF), data))
    return Reply(flags & 0x000F, bool(flags & 0x0200), records)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies.put_nowait(data)


class Resolver:
    """Asks one DNS server (the first in resolv.conf, or --dns-resolver)."""

    def __init__(self, server: tuple[str, int], conf: ResolvConf) -> None:
        self.server = server
        self.conf = conf

    async def _exchange(self, name: str, qtype: int) -> Reply:
        qid = int.from_bytes(os.urandom(2), "big")
        query = encode_query(qid, name, qtype)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Udp, remote_addr=self.server)
        try:
            for _ in range(2):
                transport.sendto(query)
                try:
                    while True:  # a reply to another (earlier) query is skipped
                        data = await wait_for(proto.replies.get(), QUERY_TIMEOUT)
                        try:
                            reply = decode_reply(data, qid)
                        except DnsError:
                            continue
                        break
                except TimeoutError:
                    continue
                if reply.truncated:
                    return await self._exchange_tcp(query, qid)
                return reply
        finally:
            transport.close()
        raise DnsError(f"no answer from {self.server[0]}:{self.server[1]}")

    async def _exchange_tcp(self, query: bytes, qid: int) -> Reply:
        reader, writer = await wait_for(asyncio.open_connection(*self.server), QUERY_TIMEOUT)
        try:
            writer.write(struct.pack("!H", len(query)) + query)
            n = struct.unpack("!H", await wait_for(reader.readexactly(2), QUERY_TIMEOUT))[0]
            return decode_reply(await wait_for(reader.readexactly(n), QUERY_TIMEOUT), qid)
        except asyncio.IncompleteReadError:  # an EOFError, neither OSError nor DnsError
            raise DnsError("TCP answer cut short") from None
        finally:
            writer.close()

    async def lookup(self, name: str, qtype: int) -> tuple[list[Record], int | None]:
        """The records of `qtype` for `name` (CNAMEs followed) and the least TTL on the
        way; tries the search list. ([], None) when no candidate name has any."""
        for cand in self.conf.candidates(name):
            reply = await self._exchange(cand, qtype)
            if reply.rcode not in (NOERROR, NXDOMAIN):
                raise DnsError(f"{cand}: DNS error code {reply.rcode}")
            want = cand.lower()
            ttl: int | None = None
            for _ in range(MAX_CNAMES):
                found = [r for r in reply.records if r.name == want and r.rtype == qtype]
                if found:
                    least = min(r.ttl for r in found)
                    return found, least if ttl is None else min(ttl, least)
                alias = next(
                    (r for r in reply.records if r.name == want and r.rtype == CNAME), None
                )
                if alias is None:
                    break
                ttl = alias.ttl if ttl is None else min(ttl, alias.ttl)
                want = str(alias.data)
            if reply.rcode == NOERROR:
                return [], None  # the name exists, without such records: the search ends
        return [], None

    async def addresses(self, name: str) -> tuple[list[str], int | None]:
        (v4, t4), (v6, t6) = await asyncio.gather(self.lookup(name, A), self.lookup(name, AAAA))
        ttls = [t for t in (t4, t6) if t is not None]
        return [str(r.data) for r in v4 + v6], (min(ttls) if ttls else None)

    async def endpoints(self, target: Target) -> tuple[list[Endpoint], int | None]:
        """The endpoints a dns+ or dnssrv+ target stands for now, and their least TTL."""
        try:
            ipaddress.ip_address(target.host)
            return [Endpoint(target.host, target.port, target.weight)], None
        except ValueError:
            pass
        if target.discover == "dnssrv":
            srv, ttl = await self.lookup(target.host, SRV)
            if not srv:
                return [], None
            rows = [r.data for r in srv if isinstance(r.data, tuple)]
            best = min(row[0] for row in rows)
            out: list[Endpoint] = []
            ttls = [ttl] if ttl is not None else []
            for prio, weight, port, host in rows:
                if prio != best or host in ("", "."):
                    continue
                addrs, t = await self.addresses(host + ".")
                if t is not None:
                    ttls.append(t)
                out += [Endpoint(a, port, max(1, min(1000, weight))) for a in addrs]
            return sorted(set(out), key=_order), (min(ttls) if ttls else None)
        addrs, ttl = await self.addresses(target.host)
        eps = {Endpoint(a, target.port, target.weight) for a in addrs}
        return sorted(eps, key=_order), ttl


def _order(e: Endpoint) -> tuple[str, int]:
    return (e.host, e.port)


def make_resolver(opts: DnsOptions) -> Resolver:
    conf = ResolvConf.read()
    if opts.dns_resolver:
        server = parse_server(opts.dns_resolver, "--dns-resolver")
    else:
        server = conf.servers[0]
    return Resolver(server, conf)


class Discovery:
    """Keeps one dns+/dnssrv+ target's endpoints current through `apply`."""

    def __init__(
        self,
        target: Target,
        opts: DnsOptions,
        resolver: Resolver,
        apply: Callable[[Target, list[Endpoint]], Awaitable[None]],
    ) -> None:
        self.target = target
        self.opts = opts
        self.resolver = resolver
        self.apply = apply
        self.endpoints: list[Endpoint] | None = None  # None: never resolved yet
        self.failures = 0
        self.lookups = 0

    def next_delay(self, ttl: int | None) -> float:
        o = self.opts
        if o.dns_refresh:
            return float(o.dns_refresh)
        if ttl is None:
            return float(o.dns_min_ttl)
        return min(max(float(ttl), o.dns_min_ttl), o.dns_max_ttl)

    async def once(self) -> float:
        """Resolve and apply; the seconds until the next time."""
        self.lookups += 1
        try:
            eps, ttl = await self.resolver.endpoints(self.target)
        except (OSError, DnsError, TimeoutError) as exc:
            self.failures += 1
            log.warning(
                "DNS lookup failed; keeping the endpoints found before",
                extra={"upstream": self.target.url, "error": str(exc) or type(exc).__name__},
            )
            return float(self.opts.dns_refresh or self.opts.dns_min_ttl)
        if eps != self.endpoints:
            log.info(
                "DNS endpoints changed",
                extra={
                    "upstream": self.target.url,
                    "endpoints": [f"{e.host}:{e.port}" for e in eps],
                    "ttl": ttl,
                },
            )
            self.endpoints = eps
            await self.apply(self.target, eps)
        return self.next_delay(ttl)

    async def run(self, first_delay: float) -> None:
        delay = first_delay
        while True:
            await asyncio.sleep(delay)
            delay = await self.once()
