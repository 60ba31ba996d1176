"""proxy endpoints: found in DNS (dnsmasq on loopback) and picked by P2C over peak-EWMA.

The upstreams are aiohttp servers on 127.0.0.2, .3, .4... sharing one port, as a
headless Service's pods share theirs; dnsmasq names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client as httpc
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from aiohttp import web

from tests.helpers import ProgramProcess, free_port, http, wait_until
from tests.peers.aioapp import AppServer, LoopThread
from tests.peers.dnsmasq import Dnsmasq


class Backends(LoopThread):
    """One aiohttp server per address, all on `port`, on a loop in a thread."""

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.by_ip: dict[str, AppServer] = {}
        self.hits: Counter[str] = Counter()
        self.delay: dict[str, float] = {}
        self.headers: dict[str, dict[str, str]] = {}
        self.health: dict[str, int] = {}
        self.health_delay: dict[str, float] = {}

    def app(self, ip: str) -> web.Application:
        async def ok(request: web.Request) -> web.Response:
            self.hits[ip] += 1
            self.headers[ip] = dict(request.headers)
            await asyncio.sleep(float(request.query.get("s", self.delay.get(ip, 0))))
            return web.Response(text=f"ok from {ip}\n")

        async def health(request: web.Request) -> web.Response:
            await asyncio.sleep(self.health_delay.get(ip, 0))
            return web.Response(status=self.health.get(ip, 200), text="health\n")

        app = web.Application()
        app.router.add_get("/ok", ok)
        app.router.add_get("/health", health)
        return app

    def start(self, ip: str) -> None:
        self.by_ip[ip] = self.serve(self.app(ip), self.port, host=ip, shutdown_timeout=0.5)

    def stop(self, ip: str) -> None:
        self.unserve(self.by_ip.pop(ip))


@pytest.fixture
def backends() -> Iterator[Backends]:
    b = Backends()
    yield b
    b.close()


def dnsmasq(
    tmp: Path, hosts: dict[str, list[str]], srv: Sequence[str] = (), ttl: int = 1
) -> Dnsmasq:
    """dnsmasq answering with a 1 s TTL unless told (a context manager: stopped after)."""
    return Dnsmasq(tmp, hosts, srv, ttl)


@contextlib.contextmanager
def proxy(tmp: Path, *args: str) -> Iterator[ProgramProcess]:
    port = free_port()
    p = ProgramProcess("proxy", ["--listen", f"127.0.0.1:{port}", *args], tmp=tmp)
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


def in_rotation(p: ProgramProcess) -> set[str]:
    code, _, body = p.get("/")
    assert code == 200
    ups = json.loads(body)["listeners"][0]["upstreams"]
    return {u["upstream"].split("//")[1].rsplit(":", 1)[0] for u in ups if not u["retired"]}


class Load:
    """Clients sending requests on keep-alive connections until stopped."""

    def __init__(self, port: int, clients: int, path: str = "/ok") -> None:
        self.port = port
        self.path = path
        self.stop_flag = threading.Event()
        self.results: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self) -> None:
        conn = httpc.HTTPConnection("127.0.0.1", self.port, timeout=10)
        deadline = time.monotonic() + 60  # bounded whatever happens
        while not self.stop_flag.is_set() and time.monotonic() < deadline:
            try:
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read().decode()
                with self.lock:
                    self.results.append((r.status, body))
            except (OSError, httpc.HTTPException) as exc:
                with self.lock:
                    self.errors.append(repr(exc))
                conn.close()
                conn = httpc.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()

    def count(self) -> int:
        with self.lock:
            return len(self.results)

    def finish(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(15)


def test_dns_endpoints_change_under_load_without_failures(
    backends: Backends, tmp_path: Path
) -> None:
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        backends.start(ip)
    with (
        dnsmasq(tmp_path, {"api.test": ["127.0.0.2", "127.0.0.3"]}) as dns,
        proxy(
            tmp_path,
            *("--upstream", f"dns+http://api.test:{backends.port}"),
            *("--dns-resolver", dns.addr, "--dns-refresh", "0.2s"),
            *("--access-log", "false"),
        ) as p,
    ):
        port = p.port  # type: ignore[attr-defined]
        assert in_rotation(p) == {"127.0.0.2", "127.0.0.3"}
        # the Host header is the Service's name, not the pod's address
        code, _, body = http(f"http://127.0.0.1:{port}/ok")
        assert code == 200
        who = body.decode().split()[-1]
        assert backends.headers[who]["Host"] == f"api.test:{backends.port}"
        # an app with HTTP_PROXY set names the Service in an absolute-form target
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(
                f"GET http://api.test:{backends.port}/ok HTTP/1.1\r\nHost: api.test\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            answer = b"".join(iter(lambda: c.recv(65536), b""))
        assert answer.startswith(b"HTTP/1.1 200") and b"ok from 127.0.0." in answer
        load = Load(port, clients=4)
        slow: list[int] = []
        try:
            wait_until(lambda: load.count() > 50, 10, what="load running")
            # a request in flight on .2 while .2 leaves DNS: it still finishes
            backends.delay["127.0.0.2"] = 0.0
            t = threading.Thread(
                target=lambda: slow.extend(
                    [http(f"http://127.0.0.1:{port}/ok?s=1.0")[0] for _ in range(3)]
                )
            )
            t.start()
            # scale out: .4 joins
            dns.set_hosts({"api.test": ["127.0.0.2", "127.0.0.3", "127.0.0.4"]})
            wait_until(lambda: backends.hits["127.0.0.4"] > 10, 10, what=".4 to take traffic")
            # scale in: .2 and .3 leave; then their servers go away
            dns.set_hosts({"api.test": ["127.0.0.4"]})
            wait_until(lambda: in_rotation(p) == {"127.0.0.4"}, 10, what=".2 .3 drained")
            t.join(10)
            before = load.count()
            hits2, hits3 = backends.hits["127.0.0.2"], backends.hits["127.0.0.3"]
            backends.stop("127.0.0.2")
            backends.stop("127.0.0.3")
            wait_until(lambda: load.count() > before + 100, 15, what="load after the change")
            # no new request went to the drained endpoints
            assert backends.hits["127.0.0.2"] == hits2 and backends.hits["127.0.0.3"] == hits3
            # and back: .2 returns (a new pod on an old address), warm
            backends.start("127.0.0.2")
            dns.set_hosts({"api.test": ["127.0.0.2", "127.0.0.4"]})
            wait_until(lambda: backends.hits["127.0.0.2"] > hits2 + 10, 10, what=".2 back")
        finally:
            load.finish()
        assert not load.errors, load.errors[:5]
        bad = [r for r in load.results if r[0] != 200]
        assert not bad, bad[:5]
        assert slow == [200, 200, 200]
        assert len(load.results) > 300
        served = Counter(body.split()[-1] for _, body in load.results)
        assert set(served) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        changes = [r for r in p.records() if r.get("message") == "endpoints updated"]
        assert len(changes) >= 3


def test_dnssrv_endpoints_and_ttl(backends: Backends, tmp_path: Path) -> None:
    backends.start("127.0.0.5")
    backends.start("127.0.0.6")
    with (
        dnsmasq(
            tmp_path,
            {"web.test": ["127.0.0.5"], "web2.test": ["127.0.0.6"]},
            srv=[
                f"_http._tcp.web.test,web.test,{backends.port},0,10",
                f"_http._tcp.web.test,web2.test,{backends.port},0,10",
                # a lower priority (higher number) is used only when the first is gone
                f"_http._tcp.web.test,backup.test,{backends.port},5,10",
            ],
            ttl=1,
        ) as dns,
        proxy(
            tmp_path,
            *("--upstream", "dnssrv+http://_http._tcp.web.test"),
            *("--dns-resolver", dns.addr, "--dns-min-ttl", "0.1s"),
            *("--access-log", "false", "--lb", "round-robin"),
        ) as p,
    ):
        port = p.port  # type: ignore[attr-defined]
        assert in_rotation(p) == {"127.0.0.5", "127.0.0.6"}
        got = Counter(http(f"http://127.0.0.1:{port}/ok")[2] for _ in range(10))
        assert got == {b"ok from 127.0.0.5\n": 5, b"ok from 127.0.0.6\n": 5}
        assert backends.headers["127.0.0.5"]["Host"] == f"web.test:{backends.port}"
        # the records' TTL (1 s) decides when it asks again: about once a second
        dns.set_hosts({"web.test": ["127.0.0.5"], "web2.test": ["127.0.0.5"]})
        t0 = time.monotonic()
        wait_until(lambda: in_rotation(p) == {"127.0.0.5"}, 10, what="SRV target re-resolved")
        assert time.monotonic() - t0 < 4


def test_dns_failure_keeps_endpoints(backends: Backends, tmp_path: Path) -> None:
    backends.start("127.0.0.7")
    with (
        dnsmasq(tmp_path, {"db.test": ["127.0.0.7"]}) as dns,
        proxy(
            tmp_path,
            *("--upstream", f"dns+http://db.test:{backends.port}"),
            *("--dns-resolver", dns.addr, "--dns-refresh", "0.1s"),
            *("--access-log", "false"),
        ) as p,
    ):
        port = p.port  # type: ignore[attr-defined]
        assert http(f"http://127.0.0.1:{port}/ok")[2] == b"ok from 127.0.0.7\n"
        dns.stop()  # the DNS server goes away: the endpoints found stay
        wait_until(
            lambda: any(
                r["message"] == "DNS lookup failed; keeping the endpoints found before"
                for r in p.records()
            ),
            10,
        )
        assert http(f"http://127.0.0.1:{port}/ok")[2] == b"ok from 127.0.0.7\n"
        assert in_rotation(p) == {"127.0.0.7"}


def test_p2c_ewma_sends_fewer_requests_to_a_slow_endpoint(
    backends: Backends, tmp_path: Path
) -> None:
    backends.start("127.0.0.8")
    backends.start("127.0.0.9")
    backends.delay["127.0.0.9"] = 0.05  # 50 ms against ~1 ms
    base = f"http://{{}}:{backends.port}"
    with proxy(
        tmp_path,
        *("--upstream", base.format("127.0.0.8"), "--upstream", base.format("127.0.0.9")),
        *("--access-log", "false"),  # p2c-ewma is the default
    ) as p:
        load = Load(p.port, clients=4)  # type: ignore[attr-defined]
        try:
            wait_until(lambda: load.count() >= 400, 30, what="400 requests")
        finally:
            load.finish()
        assert not load.errors
        served = Counter(body.split()[-1] for _, body in load.results)
        slow_share = served["127.0.0.9"] / sum(served.values())
        # round-robin would send it half; P2C over latency x outstanding far fewer
        assert slow_share < 0.2, served


def test_a_new_endpoint_takes_traffic_only_after_its_first_passing_health_check(
    backends: Backends, tmp_path: Path
) -> None:
    backends.start("127.0.0.10")
    backends.start("127.0.0.11")
    backends.health["127.0.0.11"] = 503  # starting up: not ready yet...
    backends.health_delay["127.0.0.11"] = 1.5  # ...and slow to say so
    with (
        dnsmasq(tmp_path, {"app.test": ["127.0.0.10"]}) as dns,
        proxy(
            tmp_path,
            *("--upstream", f"dns+http://app.test:{backends.port}"),
            *("--dns-resolver", dns.addr, "--dns-refresh", "0.1s"),
            *("--health-path", "/health", "--health-interval", "100ms"),
            *("--health-timeout", "3s"),
            *("--access-log", "false"),
        ) as p,
    ):
        port = p.port  # type: ignore[attr-defined]
        dns.set_hosts({"app.test": ["127.0.0.10", "127.0.0.11"]})
        wait_until(lambda: "127.0.0.11" in in_rotation(p), 10, what=".11 found")
        # while its first check is under way it is not ready: nothing goes to it
        for _ in range(30):
            assert http(f"http://127.0.0.1:{port}/ok")[2] == b"ok from 127.0.0.10\n"
        assert backends.hits["127.0.0.11"] == 0
        backends.health["127.0.0.11"] = 200
        backends.health_delay["127.0.0.11"] = 0
        wait_until(
            lambda: http(f"http://127.0.0.1:{port}/ok")[2] == b"ok from 127.0.0.11\n",
            10,
            what=".11 to take traffic once healthy",
        )


def test_tcp_mode_endpoints_from_dns(backends: Backends, tmp_path: Path) -> None:
    backends.start("127.0.0.12")
    backends.start("127.0.0.13")
    with dnsmasq(tmp_path, {"kv.test": ["127.0.0.12", "127.0.0.13"]}) as dns:
        port = free_port()
        p = ProgramProcess(
            "proxy",
            [
                *("--listen", f"tcp://127.0.0.1:{port}", "--lb", "round-robin"),
                *("--upstream", f"dns+tcp://kv.test:{backends.port}"),
                *("--dns-resolver", dns.addr, "--access-log", "false"),
            ],
            tmp=tmp_path,
        )
        with p:
            p.wait_ready()
            got = Counter(http(f"http://127.0.0.1:{port}/ok")[2] for _ in range(6))
            assert got == {b"ok from 127.0.0.12\n": 3, b"ok from 127.0.0.13\n": 3}
