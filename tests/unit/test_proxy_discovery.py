"""The proxy's DNS client and refresh rules, without a network (the dnsmasq tests are in
tests/integration/test_proxy_endpoints.py)."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest
from podkit.ambassadors.proxy.discovery import (
    AAAA,
    CNAME,
    SRV,
    A,
    Discovery,
    DnsError,
    DnsOptions,
    Endpoint,
    Record,
    ResolvConf,
    decode_reply,
    encode_query,
    parse_server,
)
from podkit.ambassadors.proxy.upstream import Target, parse_target

from podkit import UsageError


def name(n: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"


def reply(qid: int, q: str, qtype: int, answers: list[bytes], flags: int = 0x8180) -> bytes:
    head = struct.pack("!HHHHHH", qid, flags, 1, len(answers), 0, 0)
    return head + name(q) + struct.pack("!HH", qtype, 1) + b"".join(answers)


def rr(rtype: int, ttl: int, rdata: bytes, owner: bytes = b"\xc0\x0c") -> bytes:
    return owner + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


def test_query_and_reply_round_trip_with_compression_cname_and_srv() -> None:
    q = encode_query(0x1234, "api.ns.svc", A)
    assert q[:2] == b"\x12\x34" and q.endswith(b"\x03svc\x00\x00\x01\x00\x01")
    msg = reply(
        0x1234,
        "api.ns.svc",
        A,
        [
            rr(CNAME, 30, name("real.ns.svc")),
            rr(A, 7, bytes([10, 1, 2, 3]), owner=name("real.ns.svc")),
            rr(AAAA, 9, bytes(15) + b"\x01", owner=name("real.ns.svc")),
            rr(SRV, 5, struct.pack("!HHH", 0, 3, 8080) + b"\xc0\x0c"),
        ],
    )
    r = decode_reply(msg, 0x1234)
    assert r.rcode == 0 and not r.truncated
    assert r.records == [
        Record("api.ns.svc", CNAME, 30, "real.ns.svc"),
        Record("real.ns.svc", A, 7, "10.1.2.3"),
        Record("real.ns.svc", AAAA, 9, "::1"),
        Record("api.ns.svc", SRV, 5, (0, 3, 8080, "api.ns.svc")),
    ]


@pytest.mark.parametrize(
    "msg",
    [
        b"\x12\x34",  # short
        reply(0x9999, "a.b", A, []),  # another query's id
        reply(0x1234, "a.b", A, [], flags=0x0100),  # a query, not a reply
        reply(0x1234, "a.b", A, [rr(A, 1, b"\x01\x02")])[:-1],  # truncated rdata
        reply(0x1234, "a.b", A, [rr(CNAME, 1, b"\xc0\x2d", owner=b"\xc0\x2d")]),  # pointer loop
    ],
)
def test_malformed_replies_are_refused(msg: bytes) -> None:
    with pytest.raises(DnsError):
        decode_reply(msg, 0x1234)


def test_resolv_conf_search_order_and_servers(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text(
        "# kubelet\nnameserver 10.96.0.10\nnameserver bogus\n"
        "search ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
    conf = ResolvConf.read(str(f))
    assert conf.servers == [("10.96.0.10", 53)] and conf.ndots == 5
    assert conf.candidates("api") == [
        "api.ns.svc.cluster.local",
        "api.svc.cluster.local",
        "api.cluster.local",
        "api",
    ]
    assert conf.candidates("api.other.svc.cluster.local.") == ["api.other.svc.cluster.local"]
    assert ResolvConf([], ["x"], 1).candidates("a.b")[0] == "a.b"  # enough dots: as is first
    assert ResolvConf.read(str(tmp_path / "missing")).servers == [("127.0.0.1", 53)]


def test_resolver_address_and_targets_are_checked() -> None:
    assert parse_server("127.0.0.1:5353", "--dns-resolver") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:53", "--dns-resolver") == ("::1", 53)
    assert parse_server("::1", "--dns-resolver") == ("::1", 53)
    for bad in ("dns.example:53", "127.0.0.1:x", "127.0.0.1:0"):
        with pytest.raises(UsageError, match="--dns-resolver"):
            parse_server(bad, "--dns-resolver")
    t = parse_target("dns+https://api.ns.svc:8443;weight=2", "--upstream", False)
    assert (t.discover, t.scheme, t.host, t.port, t.weight) == (
        "dns",
        "https",
        "api.ns.svc",
        8443,
        2,
    )
    t = parse_target("dnssrv+tcp://_redis._tcp.cache.ns.svc", "--upstream", True)
    assert (t.discover, t.scheme, t.port) == ("dnssrv", "tcp", 0)
    for bad in ("dnssrv+http://_h._tcp.x:80", "dnsx+http://a:1", "dns+tcp://a:1"):
        with pytest.raises(UsageError):
            parse_target(bad, "--upstream", False)


class FakeResolver:
    def __init__(self) -> None:
        self.answers: list[tuple[list[Endpoint], int | None] | Exception] = []

    async def endpoints(self, target: Target) -> tuple[list[Endpoint], int | None]:
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a


def test_refresh_follows_ttl_within_bounds_and_keeps_endpoints_on_failure() -> None:
    target = parse_target("dns+http://api:80", "--upstream", False)
    opts = DnsOptions(dns_resolver=None, dns_min_ttl=2.0, dns_max_ttl=30.0, dns_refresh=None)
    applied: list[list[Endpoint]] = []

    async def apply(t: Target, eps: list[Endpoint]) -> None:
        applied.append(eps)

    fake = FakeResolver()
    d = Discovery(target, opts, fake, apply)  # type: ignore[arg-type]
    e1, e2 = Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 80)
    fake.answers = [
        ([e1, e2], 10),  # TTL 10: ask again in 10 s
        ([e1, e2], 0),  # TTL 0: no sooner than --dns-min-ttl
        ([e1], 86400),  # a day: no later than --dns-max-ttl
        DnsError("no answer"),  # down: keep what we have, ask again soon
        ([], None),  # the name is gone (scaled to zero): no endpoints
    ]

    async def go() -> list[float]:
        return [await d.once() for _ in range(5)]

    assert asyncio.run(go()) == [10.0, 2.0, 30.0, 2.0, 2.0]
    assert applied == [[e1, e2], [e1], []]  # applied only when changed
    assert d.failures == 1
    fixed = DnsOptions(dns_resolver=None, dns_min_ttl=2.0, dns_max_ttl=30.0, dns_refresh=0.5)
    assert Discovery(target, fixed, fake, apply).next_delay(300) == 0.5  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="--dns-max-ttl"):
        DnsOptions(dns_resolver=None, dns_min_ttl=5.0, dns_max_ttl=1.0, dns_refresh=None).check()


def test_p2c_ewma_prefers_the_faster_and_the_less_loaded() -> None:
    from collections import Counter

    from podkit.ambassadors.proxy.upstream import UNMEASURED, Balancer, Upstream

    class S:
        connect_timeout, max_connections, max_pending = 1.0, 10, 10
        eject_after, eject_time, max_eject_time, sni = 5, 30.0, 300.0, None

    class Owner:
        def warn(self, msg: str, extra: dict[str, object]) -> None:
            pass

    ups = [
        Upstream(parse_target(f"http://10.0.0.{i}:80", "x", False), S(), Owner()) for i in (1, 2, 3)
    ]
    fast, slow, fresh = ups
    b = Balancer(ups, "p2c-ewma")
    for _ in range(5):
        fast.observe(200, 0.001)
        slow.observe(200, 0.050)
    assert fresh.ewma == UNMEASURED
    got = Counter(b.pick(0.0, 100, None, ()) for _ in range(3000))
    # the slow one loses every pair it is in; the unmeasured one is taken to be as
    # fast as its rival and, as loaded as it, is tried (it wins both its pairs)
    assert got[slow] == 0
    assert 800 < got[fast] < 1200 and 1800 < got[fresh] < 2200
    slow.observe(200, 0.001)  # one fast answer moves it a tenth of the way down
    assert 0.040 < slow.ewma < 0.050
    fast.active = 100  # busy: 100 requests in flight cost more than a slower idle one
    got = Counter(b.pick(0.0, 1000, None, ()) for _ in range(3000))
    assert got[fast] < 300


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--tls-key-file", "/k"], "--tls-cert-file"),
        (["--tls-cert-file", "/c"], "--tls-cert-file"),
        (["--tls-client-ca-file", "/ca"], "--tls-client-ca-file"),
        (["--tls-cert-file", "/c", "--tls-key-file", "/k", "--tls-allow-cn", "x"], "--tls-allow"),
        (["--dns-min-ttl", "5s", "--dns-max-ttl", "1s"], "--dns-max-ttl"),
        (["--dns-min-ttl", "0s"], "--dns-min-ttl"),
        (["--dns-resolver", "dns.example"], "--dns-resolver"),
    ],
)
def test_discovery_and_tls_in_flags_are_checked(argv: list[str], flag: str) -> None:
    from podkit.ambassadors.proxy import Proxy

    from podkit.runner import configure

    with pytest.raises(UsageError, match=flag):
        configure(Proxy, ["--upstream", "dns+http://api:80", *argv], {})


def test_listener_settings_carry_the_groups_and_the_default_policy() -> None:
    from podkit.ambassadors.proxy import Proxy

    from podkit.runner import configure

    p = configure(Proxy, ["--upstream", "dns+http://api:80", "--dns-refresh", "2s"], {})
    assert isinstance(p, Proxy)
    s = p.listener_settings[0]
    assert s.lb == "p2c-ewma"
    assert s.dns_refresh == 2.0 and s.dns_min_ttl == 1.0
    assert not s.tls_enabled
