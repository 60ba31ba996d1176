"""dns://name: ready when the name resolves (and, if asked, to what is expected).

`?type=` A, AAAA, CNAME, SRV, TXT (default: any address); `?expect=V1,V2`:
every value must be in the answer (addresses compared as addresses, names
without case or trailing dot, SRV as `target:port` or `target`, TXT as its
joined strings); `?nameserver=IP[:PORT]` asks that server instead of the
system resolver.

A and AAAA without a nameserver go through the system resolver (/etc/hosts,
search domains, the cluster DNS), which is how the app will resolve the name.
Everything else is one DNS query by hand (UDP, TCP when the answer is
truncated) to the nameserver, by default the first one in /etc/resolv.conf;
no search domains are applied there, so give the full name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, register
from .net import resolve

FAMILIES = {"A": socket.AF_INET, "AAAA": socket.AF_INET6}
TYPES = {"A": 1, "AAAA": 28, "CNAME": 5, "SRV": 33, "TXT": 16}
RCODES = {
    1: "the nameserver could not parse the question (FORMERR)",
    2: "the nameserver failed (SERVFAIL)",
    3: "no such name (NXDOMAIN)",
    4: "the nameserver does not do this (NOTIMP)",
    5: "the nameserver refused (REFUSED)",
}
MAX_POINTERS = 32


@register
class DNSProbe(Probe):
    schemes = ("dns",)
    default_ports = {"dns": 0}
    query_keys = frozenset({"type", "expect", "nameserver"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        rtype = self.query.get("type", "").upper()
        if rtype and rtype not in TYPES:
            raise ValueError(f"type must be one of {', '.join(TYPES)}, not {rtype!r}")
        if parts.port is not None:
            raise ValueError("a dns:// target takes no port")
        self.rtype = rtype
        self.family = FAMILIES.get(rtype, socket.AF_UNSPEC)
        self.expect = [
            _normalize(rtype, v) for v in self.query.get("expect", "").split(",") if v.strip()
        ]
        self.nameserver: tuple[str, int] | None = None
        if "nameserver" in self.query:
            self.nameserver = _parse_server(self.query["nameserver"])

    async def check(self) -> None:
        if self.nameserver is None and self.rtype in ("", "A", "AAAA"):
            # Through the system resolver, which is how the app will resolve the name too.
            found = {_normalize("A", ip) for _fam, ip in await resolve(self.host, 0, self.family)}
        else:
            server = self.nameserver or _system_nameserver()
            qtype = TYPES[self.rtype or "A"]
            found = set(await query(server, self.host, qtype))
            if not found:
                raise NotReady(f"no {self.rtype or 'A'} record for {self.host}")
            if self.rtype == "SRV":  # `target` matches as well as `target:port`
                found |= {v.rsplit(":", 1)[0] for v in found}
        missing = [v for v in self.expect if v not in found]
        if missing:
            shown = ", ".join(sorted(found)[:5])
            raise NotReady(f"{self.host} resolves to {shown}, not yet to {', '.join(missing)}")


def _parse_server(text: str) -> tuple[str, int]:
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:]) if rest[1:].isdigit() else -1
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p) if p.isdigit() else -1
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver must be an IP address[:port], not {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"nameserver port out of range in {text!r}")
    return host, port


def _system_nameserver() -> tuple[str, int]:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == "nameserver":
                    return fields[1].split("%")[0], 53
    except OSError:
        pass
    raise NotReady("no nameserver in /etc/resolv.conf; give ?nameserver=IP")


def _normalize(rtype: str, value: str) -> str:
    v = value.strip()
    if rtype in ("", "A", "AAAA"):
        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"expect: {v!r} is not an IP address") from None
    if rtype in ("CNAME", "SRV"):
        return v.lower().rstrip(".") if ":" not in v else v.lower().replace(".:", ":")
    return v


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise NotReady(f"not a DNS name: {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """A possibly compressed name at `pos`; (name, position after it in place)."""
    labels: list[str] = []
    end = -1
    for _ in range(MAX_POINTERS):
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | msg[pos + 1]
            continue
        if length == 0:
            return ".".join(labels).lower(), end if end >= 0 else pos + 1
        labels.append(msg[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    raise NotReady("malformed DNS answer (compression loop)")


def parse_answer(msg: bytes, ident: int, qtype: int) -> list[str]:
    """The values of the answer records of `qtype` in a DNS response."""
    try:
        rid, flags, qd, an, _ns, _ar = struct.unpack("!6H", msg[:12])
        if rid != ident or not flags & 0x8000:
            raise NotReady("a DNS answer to another question")
        rcode = flags & 0xF
        if rcode:
            raise NotReady(RCODES.get(rcode, f"DNS error (rcode {rcode})"))
        pos = 12
        for _ in range(qd):
            _, pos = _read_name(msg, pos)
            pos += 4
        out: list[str] = []
        for _ in range(an):
            _, pos = _read_name(msg, pos)
            rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[pos : pos + 10])
            pos += 10
            rdata = msg[pos : pos + rdlen]
            if rtype == qtype:
                out.append(_rdata(msg, pos, rtype, rdata))
            pos += rdlen
        return out
    except (struct.error, IndexError, ValueError):
        raise NotReady("malformed DNS answer") from None


def _rdata(msg: bytes, pos: int, rtype: int, rdata: bytes) -> str:
    if rtype in (1, 28):
        return str(ipaddress.ip_address(rdata))
    if rtype == 5:
        return _read_name(msg, pos)[0]
    if rtype == 33:
        _prio, _weight, port = struct.unpack("!HHH", rdata[:6])
        return f"{_read_name(msg, pos + 6)[0]}:{port}"
    # TXT: length-prefixed strings, joined
    parts, i = [], 0
    while i < len(rdata):
        parts.append(rdata[i + 1 : i + 1 + rdata[i]].decode("utf-8", "replace"))
        i += 1 + rdata[i]
    return "".join(parts)


async def query(server: tuple[str, int], name: str, qtype: int) -> list[str]:
    """One question to `server` over UDP (TCP if the answer is truncated)."""
    ident = int.from_bytes(os.urandom(2), "big")
    packet = struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + _encode_name(name)
    packet += struct.pack("!HH", qtype, 1)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    answer: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            if not answer.done() and data[:2] == packet[:2]:
                answer.set_result(data)

        def error_received(self, exc: Exception) -> None:
            if not answer.done():
                answer.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=server, family=family)
    try:
        transport.sendto(packet)
        msg = await answer
    finally:
        transport.close()
    if struct.unpack("!H", msg[2:4])[0] & 0x0200:  # TC: truncated, ask again over TCP
        reader, writer = await asyncio.open_connection(server[0], server[1])
        try:
            writer.write(struct.pack("!H", len(packet)) + packet)
            await writer.drain()
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            msg = await reader.readexactly(length)
        finally:
            writer.close()
    return parse_answer(msg, ident, qtype)
