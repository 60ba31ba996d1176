"""proxy against real upstreams on loopback: nginx, aiohttp servers that misbehave on
demand, a TLS server demanding a client certificate, and redis-server in TCP mode."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import (
    ProgramProcess,
    free_port,
    http,
    need,
    rss_bytes,
    run_program,
    wait_until,
)
from tests.peers.aioapp import LoopThread
from tests.peers.nginx import start_nginx
from tests.peers.tls import TLSFiles, make_ca

# -- aiohttp upstreams that fail, reset, stall or answer slowly on demand ----------


class Chaos:
    """One aiohttp upstream server; its behaviour is switched by the test."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.hits = 0
        self.flaky_left = 0
        self.health_status = 200
        self.last_headers: dict[str, str] = {}
        self.slow503_hits = 0
        self.slow503_all = asyncio.Event()  # the first 8 /slow503 requests are in

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/ok", self.ok)
        app.router.add_get("/headers", self.headers)
        app.router.add_route("*", "/status/{code}", self.status)
        app.router.add_route("*", "/flaky", self.flaky)
        app.router.add_get("/reset", self.reset)
        app.router.add_get("/stall", self.stall)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/slow503", self.slow503)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ws", self.ws)
        app.router.add_post("/upload", self.upload)
        return app

    async def ok(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(text=f"ok from {self.name}\n")

    async def headers(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.last_headers = dict(request.headers)
        return web.json_response({k: v for k, v in request.headers.items()})

    async def status(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=int(request.match_info["code"]), text=f"{self.name}\n")

    async def flaky(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.flaky_left > 0:
            self.flaky_left -= 1
            return web.Response(status=503, text="flaky\n")
        return web.Response(text=f"ok from {self.name}\n")

    async def reset(self, request: web.Request) -> web.Response:
        self.hits += 1
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(0.1)
        return web.Response(text="unreachable")

    async def stall(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def slow(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(float(request.query.get("s", "1")))
        return web.Response(text=f"slow from {self.name}\n")

    async def slow503(self, request: web.Request) -> web.Response:
        self.hits += 1
        # The first 8 are answered together, once all are in (the retry budget is
        # about retries in flight at once); every answer is slow, retries too.
        self.slow503_hits += 1
        if self.slow503_hits == 8:
            self.slow503_all.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.slow503_all.wait(), 10)
        await asyncio.sleep(0.3)
        return web.Response(status=503, text="busy\n")

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=self.health_status, text="health\n")

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{self.name} echo: {msg.data}")
        return ws

    async def upload(self, request: web.Request) -> web.Response:
        n = 0
        async for chunk in request.content.iter_any():
            n += len(chunk)
        return web.Response(text=f"{n}\n")


class ChaosFarm(LoopThread):
    """Upstream servers on one event loop in a background thread."""

    def start(self, chaos: Chaos, ssl_ctx: ssl.SSLContext | None = None) -> Chaos:
        self.serve(chaos.app(), chaos.port, ssl_context=ssl_ctx, shutdown_timeout=0.5)
        return chaos


@pytest.fixture(scope="module")
def farm() -> Iterator[ChaosFarm]:
    f = ChaosFarm()
    yield f
    f.close()


@contextlib.contextmanager
def proxy(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[ProgramProcess]:
    """The proxy on a free port (as `.port`), ready; stopped afterwards."""
    port = free_port()
    p = ProgramProcess("proxy", ["--listen", f"127.0.0.1:{port}", *args], tmp=tmp, env=env)
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


def purl(p: ProgramProcess, path: str = "/") -> str:
    return f"http://127.0.0.1:{p.port}{path}"  # type: ignore[attr-defined]


def raw(port: int, data: bytes, timeout: float = 5.0, half_close: bool = False) -> bytes:
    """Send raw bytes and read until the server closes (or the timeout passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except TimeoutError:
            pass
        return out


def status(p: ProgramProcess) -> dict[str, Any]:
    code, _, body = p.get("/")
    assert code == 200
    return json.loads(body)  # type: ignore[no-any-return]


def upstreams(p: ProgramProcess) -> dict[str, dict[str, Any]]:
    return {u["upstream"]: u for u in status(p)["listeners"][0]["upstreams"]}


# -- nginx as the real upstream ------------------------------------------------------


NGINX_ECHO = r"""
location /echo {
    return 200 "host=$host xff=$http_x_forwarded_for xfp=$http_x_forwarded_proto \
rid=$http_x_request_id auth=$http_authorization team=$http_x_team \
keepalive=$http_keep_alive\n";
}
location /big { alias BIGFILE; }
location /sink { client_max_body_size 0; return 200 "sunk\n"; }
"""


@pytest.fixture(scope="module")
def nginx_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("nginx")
    big = tmp / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB, sparse: nginx reads zeros for free
    srv = start_nginx(tmp, server_extra=NGINX_ECHO.replace("BIGFILE", str(big)))
    yield srv
    srv.stop()


def test_nginx_get_headers_and_access_log(nginx_up: Any, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token-1\n")
    with proxy(
        tmp_path,
        "--upstream",
        nginx_up.url,
        "--bearer-token-file",
        str(token),
        "--set-header",
        "X-Team: blue",
    ) as p:
        code, headers, body = http(purl(p, "/"))
        assert code == 200 and body == b"hello from nginx\n"
        assert headers["Server"].startswith("nginx")
        code, _, body = http(
            purl(p, "/echo"),
            headers={
                "X-Forwarded-For": "10.0.0.1",
                "Authorization": "Bearer app-must-not-win",
                "Keep-Alive": "timeout=5",
            },
        )
        text = body.decode()
        assert code == 200
        assert "host=127.0.0.1 " in text  # Host is the upstream's
        assert "xff=10.0.0.1, 127.0.0.1 " in text
        assert "xfp=http " in text
        assert "auth=Bearer s3cret-token-1 " in text
        assert "team=blue " in text
        assert "keepalive=\n" in text  # hop-by-hop header removed
        rid = text.split("rid=")[1].split()[0]
        assert rid
        code, _, body = http(purl(p, "/echo"), headers={"X-Request-Id": "mine-42"})
        assert "rid=mine-42 " in body.decode()
        # the token file is re-read when it changes (as Kubernetes rotates secrets)
        token.write_text("s3cret-token-2\n")
        wait_until(
            lambda: b"auth=Bearer s3cret-token-2 " in http(purl(p, "/echo"))[2], 5, what="new token"
        )
        # a token with a control character would make every request malformed: kept old
        token.write_text("s3cret-token-3\x0bX-Evil: 1\n")
        wait_until(
            lambda: any(
                r["message"] == "cannot use the bearer token file; keeping the old token"
                for r in p.records()
            ),
            5,
        )
        assert b"auth=Bearer s3cret-token-2 " in http(purl(p, "/echo"))[2]
        token.write_text("s3cret-token-2\n")
        code, _, _ = http(purl(p, "/missing"))
        assert code == 404
        r = wait_until(
            lambda: next(
                (
                    r
                    for r in p.records()
                    if r.get("message") == "request" and r["path"] == "/missing"
                ),
                None,
            ),
            5,
        )
        assert r["status"] == 404 and r["method"] == "GET"
        assert r["upstream"] == f"http://127.0.0.1:{nginx_up.port}"
        assert r["request_id"] and r["retries"] == 0 and r["bytes_out"] > 0
        assert r["duration_seconds"] >= r["upstream_seconds"] >= 0
        assert "s3cret-token" not in p.stderr()
        code, _, metrics = p.get("/metrics")
        assert b'podkit_proxy_requests_total{code="404",upstream="http://127.0.0.1:' in metrics


def test_keepalive_pipelining_post_and_preserve_host(nginx_up: Any, tmp_path: Path) -> None:
    with proxy(
        tmp_path, "--upstream", nginx_up.url, "--preserve-host", "--access-log", "false"
    ) as p:
        port = p.port  # type: ignore[attr-defined]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            # three pipelined requests on one connection, one with a body
            s.sendall(
                b"GET /echo HTTP/1.1\r\nHost: app.example\r\n\r\n"
                b"POST /sink HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /status HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"
            )
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        assert out.count(b"HTTP/1.1 200 OK") == 3
        assert b"host=app.example " in out
        assert b"sunk\n" in out and out.endswith(b"ok\n")
        # chunked request body, HTTP/1.0 client
        out = raw(
            port,
            b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
        )
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"sunk\n")
        # a client that half-closes after its request still gets the answer
        for _ in range(2):  # the second one takes the pooled-connection path
            out = raw(port, b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", half_close=True)
            assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok\n")
        out = raw(port, b"GET /status HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out
        assert [r for r in p.records() if r["message"] == "request"] == []


def test_health_checks_under_preserve_host_name_the_upstream(nginx_up: Any, tmp_path: Path) -> None:
    """--preserve-host passes the client's Host, but a health check has no client:
    it names the upstream (it sent no Host at all, nginx answered 400, and the only
    upstream was marked unhealthy, so every request got 503)."""
    before = nginx_up.access_log.read_text().count("podkit-proxy health check")
    with proxy(
        tmp_path,
        "--upstream",
        nginx_up.url,
        "--preserve-host",
        "--health-path",
        "/status",
        "--health-interval",
        "200ms",
        "--access-log",
        "false",
    ) as p:

        def probes() -> list[str]:
            lines = nginx_up.access_log.read_text().splitlines()
            return [ln for ln in lines if "podkit-proxy health check" in ln][before:]

        wait_until(lambda: len(probes()) >= 2, 10, what="two health checks in nginx's log")
        assert all('"GET /status HTTP/1.1" 200 ' in ln for ln in probes()), probes()
        assert all(u["healthy"] for u in upstreams(p).values())
        out = raw(p.port, b"GET /echo HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n")  # type: ignore[attr-defined]
        assert out.startswith(b"HTTP/1.1 200") and b"host=app.example " in out


def test_hardening_raw_sockets(nginx_up: Any, tmp_path: Path) -> None:
    with proxy(
        tmp_path,
        "--upstream",
        nginx_up.url,
        "--header-timeout",
        "1s",
        "--idle-timeout",
        "1s",
        "--max-header-bytes",
        "2KiB",
        "--max-body-bytes",
        "1KiB",
    ) as p:
        port = p.port  # type: ignore[attr-defined]

        def first_line(data: bytes) -> bytes:
            return raw(port, data).split(b"\r\n", 1)[0]

        smuggle = (
            b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nG"
        )
        assert first_line(smuggle) == b"HTTP/1.1 400 Bad Request"
        assert first_line(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n") == (
            b"HTTP/1.1 400 Bad Request"
        )
        assert (
            first_line(
                b"POST /sink HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab"
            )
            == b"HTTP/1.1 400 Bad Request"
        )
        assert first_line(b"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n") == (
            b"HTTP/1.1 400 Bad Request"
        )
        big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n"
        out = raw(port, big)
        assert out.startswith(b"HTTP/1.1 431 ")
        assert b"x-podkit-proxy: bad-request" in out
        foreign = raw(port, b"GET http://evil.example/ HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        assert foreign.startswith(b"HTTP/1.1 403 ") and b"x-podkit-proxy: foreign-host" in foreign
        own = raw(
            port,
            f"GET http://127.0.0.1:{nginx_up.port}/status HTTP/1.1\r\n".encode()
            + b"Host: y\r\nConnection: close\r\n\r\n",
        )
        assert own.startswith(b"HTTP/1.1 200") and own.endswith(b"ok\n")
        connect = raw(port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert connect.startswith(b"HTTP/1.1 405 ")
        too_big = raw(port, b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        assert too_big.startswith(b"HTTP/1.1 413 ")
        # a keep-alive connection idle for --idle-timeout is closed
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            first = s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            t_idle = time.monotonic()
            assert s.recv(65536) == b""
            assert 0.5 < time.monotonic() - t_idle < 5
        # slow headers: one byte now and then is cut off after --header-timeout
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")
            closed = False
            out = b""
            for _ in range(40):
                try:
                    s.sendall(b"X")
                except OSError:
                    closed = True
                    break
                s.settimeout(0.2)
                try:
                    chunk = s.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                    break
                out += chunk
                if not chunk:
                    closed = True
                    break
            assert closed or out.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - t0 < 6
        # still serving well-behaved clients
        assert http(purl(p, "/status"))[0] == 200

        # Every refused request has its access line, the unparsable ones too (with
        # an empty method and no path), and none is a traceback.
        def refused() -> list[dict[str, Any]]:
            return [r for r in p.records() if r["message"] == "request" and "proxy_reason" in r]

        wait_until(lambda: len(refused()) >= 8, 5, what="the refused requests' access lines")
        bad = [r for r in refused() if r["proxy_reason"] == "bad-request"]
        assert len(bad) >= 5 and {r["status"] for r in bad} >= {400, 431}
        assert {(r["method"], r["path"]) for r in bad if r["status"] == 431} == {("", None)}
        assert {r["proxy_reason"] for r in refused()} >= {"foreign-host", "connect-refused"}
        assert not [r for r in p.records() if r["level"] == "error"], p.stderr()


# -- retries, ejection, health, timeouts, limits, balancing --------------------------


def test_retries_resets_and_idempotency(farm: ChaosFarm, tmp_path: Path) -> None:
    a = farm.start(Chaos("a"))
    with proxy(
        tmp_path, "--upstream", a.url, "--eject-after", "100", "--max-body-bytes", "1KiB"
    ) as p:
        # a chunked body that grows past --max-body-bytes is cut off with 413
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
        out = raw(
            p.port,  # type: ignore[attr-defined]
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 2,
        )
        assert out.startswith(b"HTTP/1.1 413 ")
        out = raw(
            p.port,  # type: ignore[attr-defined]
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + chunk + b"0\r\n\r\n",
        )
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"1024\n")
        a.flaky_left = 2
        code, _, body = http(purl(p, "/flaky"))
        assert code == 200 and body == b"ok from a\n"
        a.flaky_left = 1
        code, headers, body = http(purl(p, "/flaky"), method="POST", data=b"x")
        assert code == 503  # POST is not retried after it was sent
        a.flaky_left = 5
        code, _, _ = http(purl(p, "/flaky"))
        assert code == 503  # two retries, then the upstream's answer
        code, headers, body = http(purl(p, "/reset"))
        assert code == 502 and headers["x-podkit-proxy"] == "reset"
        wait_until(lambda: [r for r in p.records() if r.get("path") == "/reset"], 5)
        rec = next(r for r in p.records() if r.get("path") == "/reset")
        assert rec["retries"] == 2
        dead = f"http://127.0.0.1:{free_port()}"
    # the retry budget: 8 requests fail at once, at most 3 retries may be in flight
    c = farm.start(Chaos("c"))
    with proxy(
        tmp_path,
        "--upstream",
        c.url,
        "--eject-after",
        "100",
        "--retry-budget",
        "0%",
        "--access-log",
        "false",
    ) as p:
        codes: list[int] = []
        threads = [
            threading.Thread(target=lambda: codes.append(http(purl(p, "/slow503"), timeout=10)[0]))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [503] * 8
        assert 3 <= upstreams(p)[c.url]["retries"] <= 8  # without a budget: 16
        assert c.hits == 8 + upstreams(p)[c.url]["retries"]
    b = farm.start(Chaos("b"))
    with proxy(tmp_path, "--upstream", dead, "--upstream", b.url, "--eject-after", "100") as p:
        for _ in range(4):
            code, _, body = http(purl(p, "/ok"), method="POST", data=b"y")
            assert (
                code == 200 and body == b"ok from b\n"
            )  # connect failures are retried for POST too


def test_ejection_grows_and_health_checks(farm: ChaosFarm, tmp_path: Path) -> None:
    a = farm.start(Chaos("a"))
    b = farm.start(Chaos("b"))
    with proxy(
        tmp_path,
        "--upstream",
        a.url,
        "--upstream",
        b.url,
        "--eject-after",
        "2",
        "--eject-time",
        "1s",
        "--retries",
        "0",
        # a's turns must come: p2c-ewma over two upstreams always compares both, and
        # once a has answered slower than b (a busy machine) b would win every pick
        "--lb",
        "round-robin",
    ) as p:
        # a fails every request; after 2 failures it is ejected and b takes everything
        for _ in range(6):
            http(purl(p, "/status/500"))
        ups = upstreams(p)
        assert ups[f"http://127.0.0.1:{a.port}"]["ejected"] is True
        assert ups[f"http://127.0.0.1:{a.port}"]["ejections"] == 1
        assert 0 < ups[f"http://127.0.0.1:{a.port}"]["ejected_for_seconds"] <= 1
        wait_until(lambda: not upstreams(p)[f"http://127.0.0.1:{a.port}"]["ejected"], 3)

        def ejected_again() -> bool:
            # The balancer reads a clock refreshed once a second, so a's first turn may
            # come a little after `/` says its ejection ended: keep a's turns coming.
            http(purl(p, "/status/500"))
            return bool(upstreams(p)[f"http://127.0.0.1:{a.port}"]["ejections"] >= 2)

        wait_until(ejected_again, 5, what="a ejected a second time")
        up_a = upstreams(p)[f"http://127.0.0.1:{a.port}"]
        assert up_a["ejected_for_seconds"] > 1.0  # the second ejection lasts twice as long
        _, _, metrics = p.get("/metrics")
        assert (
            f'podkit_proxy_ejections_total{{upstream="http://127.0.0.1:{a.port}"}}'.encode()
            in metrics
        )
    # active health checks: an unhealthy upstream is taken out, and brought back
    a.health_status = 500
    with proxy(
        tmp_path,
        "--upstream",
        a.url,
        "--upstream",
        b.url,
        "--health-path",
        "/health",
        "--health-interval",
        "200ms",
        "--lb",
        "round-robin",  # the assertions below count on each upstream's turn
    ) as p:
        key = f"http://127.0.0.1:{a.port}"
        wait_until(lambda: upstreams(p)[key]["healthy"] is False, 5)
        assert {http(purl(p, "/ok"))[2] for _ in range(6)} == {b"ok from b\n"}
        _, _, metrics = p.get("/metrics")
        assert f'podkit_proxy_upstream_healthy{{upstream="{key}"}} 0.0'.encode() in metrics
        a.health_status = 200
        wait_until(lambda: upstreams(p)[key]["healthy"] is True, 5)
        # Back in the rotation (within the balancer's one-second clock): both answer.
        seen: set[bytes] = set()
        wait_until(lambda: seen.add(http(purl(p, "/ok"))[2]) or len(seen) == 2, 5)
        assert seen == {b"ok from a\n", b"ok from b\n"}
        b.health_status = 503
        a.health_status = 503
        wait_until(lambda: not any(u["healthy"] for u in upstreams(p).values()), 5)
        code, headers, body = http(purl(p, "/ok"))
        assert code == 503 and headers["x-podkit-proxy"] == "no-healthy-upstream"
        assert body.count(b"\n") == 1
        a.health_status = b.health_status = 200


def test_a_down_upstream_is_the_programs_error(farm: ChaosFarm, tmp_path: Path) -> None:
    """Issue 23: `/` names the upstream that cannot be reached, then its ejection."""
    b = farm.start(Chaos("b"))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with proxy(tmp_path, "--upstream", dead, "--upstream", b.url, "--eject-after", "2") as p:
        assert "error" not in status(p) or status(p)["error"] is None
        for _ in range(6):  # connect failures are retried on b: every request succeeds
            assert http(purl(p, "/ok"))[2] == b"ok from b\n"
        err = status(p)["error"]
        assert err["reason"] == "upstream"
        assert dead in err["message"] and "ejected" in err["message"]
        assert err["time"].endswith("Z")


def test_timeouts_and_limits(farm: ChaosFarm, tmp_path: Path) -> None:
    a = farm.start(Chaos("a"))
    with proxy(
        tmp_path,
        "--upstream",
        a.url,
        "--try-timeout",
        "300ms",
        "--timeout",
        "2s",
        "--max-requests",
        "1",
        "--eject-after",
        "100",
    ) as p:
        t0 = time.monotonic()
        code, headers, _ = http(purl(p, "/stall"), timeout=10)
        took = time.monotonic() - t0
        assert code == 504 and headers["x-podkit-proxy"] == "timeout"
        assert 0.8 < took < 2.5  # three tries of 300ms plus backoff
        # one request in flight per upstream: a second one at the same time is refused
        results: list[int] = []
        t = threading.Thread(target=lambda: results.append(http(purl(p, "/slow?s=0.25"))[0]))
        t.start()
        wait_until(lambda: upstreams(p)[a.url]["active_requests"] == 1, 5)
        code, headers, _ = http(purl(p, "/ok"))
        t.join()
        assert results == [200]
        assert code == 503 and headers["x-podkit-proxy"] == "overflow"
    # one connection per upstream and nobody may wait for it: the second request is refused
    with proxy(tmp_path, "--upstream", a.url, "--max-connections", "1", "--max-pending", "0") as p:
        results = []
        t = threading.Thread(target=lambda: results.append(http(purl(p, "/slow?s=0.5"))[0]))
        t.start()
        wait_until(lambda: upstreams(p)[a.url]["active_requests"] == 1, 5)
        code, headers, body = http(purl(p, "/ok"))
        t.join()
        assert results == [200]
        assert code == 503 and headers["x-podkit-proxy"] == "overflow" and b"max-pending" in body
        assert http(purl(p, "/ok"))[0] == 200


def test_balancing_policies(farm: ChaosFarm, tmp_path: Path) -> None:
    a = farm.start(Chaos("a"))
    b = farm.start(Chaos("b"))
    with proxy(
        tmp_path,
        "--upstream",
        f"{a.url};weight=3",
        "--upstream",
        b.url,
        "--lb",
        "weighted",
        "--access-log",
        "false",
    ) as p:
        got = [http(purl(p, "/ok"))[2] for _ in range(40)]
        assert got.count(b"ok from a\n") == 30 and got.count(b"ok from b\n") == 10
    with proxy(
        tmp_path,
        *("--upstream", a.url, "--upstream", b.url, "--lb", "round-robin"),
        *("--access-log", "false"),
    ) as p:
        # strict alternation: the fast path once picked an upstream, found no idle
        # connection to it and let the slow path pick again, so round-robin advanced
        # twice per request and the upstream without a pooled connection never got one
        got = [http(purl(p, "/ok"))[2] for _ in range(20)]
        assert got.count(b"ok from a\n") == 10 and got.count(b"ok from b\n") == 10, got
    with proxy(
        tmp_path,
        "--upstream",
        a.url,
        "--upstream",
        b.url,
        "--lb",
        "hash-header:X-User",
        "--access-log",
        "false",
    ) as p:
        for user in ("alice", "bob", "carol", "dave"):
            seen = {http(purl(p, "/ok"), headers={"X-User": user})[2] for _ in range(5)}
            assert len(seen) == 1
    with proxy(
        tmp_path,
        "--upstream",
        a.url,
        "--upstream",
        b.url,
        "--lb",
        "least-request",
        "--access-log",
        "false",
    ) as p:
        t = threading.Thread(target=lambda: http(purl(p, "/slow?s=1")))
        t.start()
        wait_until(lambda: sum(u["active_requests"] for u in upstreams(p).values()) == 1, 5)
        busy = next(u for u, v in upstreams(p).items() if v["active_requests"] == 1)
        other = {a.url: b"ok from b\n", b.url: b"ok from a\n"}[busy]
        assert {http(purl(p, "/ok"))[2] for _ in range(4)} == {other}
        t.join()


# -- TLS with a client certificate, reloaded when the files change --------------------


def test_tls_upstream_client_cert_reload_and_sni(
    farm: ChaosFarm, tls_files: TLSFiles, tmp_path: Path
) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls_files.ca))
    server_ctx.load_cert_chain(str(tls_files.server_cert), str(tls_files.server_key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    s = farm.start(Chaos("tls"), ssl_ctx=server_ctx)
    other = make_ca(tmp_path / "other")  # a client cert the server does not trust
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_bytes(other.client_cert.read_bytes())
    key.write_bytes(other.client_key.read_bytes())
    with proxy(
        tmp_path,
        "--upstream",
        f"https://127.0.0.1:{s.port}",
        "--ca-file",
        str(tls_files.ca),
        "--cert-file",
        str(cert),
        "--key-file",
        str(key),
        "--sni",
        "localhost",
        "--retries",
        "0",
        "--eject-after",
        "100",
    ) as p:
        code, _, _ = http(purl(p, "/ok"))
        assert code == 502
        # rotate in the trusted certificate: the proxy reloads it without a restart
        key.write_bytes(tls_files.client_key.read_bytes())
        cert.write_bytes(tls_files.client_cert.read_bytes())
        wait_until(lambda: http(purl(p, "/ok"))[0] == 200, 10, 0.2, what="reloaded client cert")
        assert http(purl(p, "/ok"))[2] == b"ok from tls\n"
        wait_until(lambda: any(r["message"] == "client TLS files reloaded" for r in p.records()), 5)
    # TCP mode with TLS to the upstream: tcps://, same client certificate
    tport = free_port()
    with ProgramProcess(
        "proxy",
        [
            "--listen",
            f"tcp://127.0.0.1:{tport}",
            "--upstream",
            f"tcps://127.0.0.1:{s.port}",
            "--ca-file",
            str(tls_files.ca),
            "--cert-file",
            str(tls_files.client_cert),
            "--key-file",
            str(tls_files.client_key),
            "--sni",
            "localhost",
        ],
        tmp=tmp_path,
    ) as p:
        p.wait_ready()
        out = raw(tport, b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok from tls\n")


# -- WebSocket passthrough ---------------------------------------------------------


def test_websocket_passthrough(farm: ChaosFarm, tmp_path: Path) -> None:
    a = farm.start(Chaos("a"))
    with proxy(tmp_path, "--upstream", a.url) as p:

        async def talk() -> list[str]:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(purl(p, "/ws")) as ws,
            ):
                out = []
                for word in ("one", "two"):
                    await ws.send_str(word)
                    msg = await ws.receive(timeout=5)
                    out.append(msg.data)
                return out

        assert asyncio.run(talk()) == ["a echo: one", "a echo: two"]


# -- streaming: 1 GiB each way in constant memory ------------------------------------


def test_streaming_1gib_each_way_constant_memory(nginx_up: Any, tmp_path: Path) -> None:
    curl = need("curl")
    with proxy(tmp_path, "--upstream", nginx_up.url, "--access-log", "false") as p:
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes(p.pid))
                time.sleep(0.05)

        t = threading.Thread(target=sample)
        t.start()
        t0 = time.monotonic()
        try:
            down = subprocess.run(
                [curl, "-sS", "-o", "/dev/null", "-w", "%{size_download}", purl(p, "/big")],
                capture_output=True,
                timeout=60,
                check=True,
            )
            t1 = time.monotonic()
            up = subprocess.run(
                [
                    curl,
                    "-sS",
                    "-o",
                    "-",
                    "-H",
                    "Expect:",
                    "-X",
                    "POST",
                    "-T",
                    str(nginx_up.root.parent.parent / "big.bin"),
                    purl(p, "/sink"),
                ],
                capture_output=True,
                timeout=60,
                check=True,
            )
            t2 = time.monotonic()
        finally:
            done.set()
            t.join()
        assert down.stdout == str(1 << 30).encode()
        assert up.stdout == b"sunk\n"
        print(f"1 GiB down {t1 - t0:.1f}s, up {t2 - t1:.1f}s, peak RSS {peak[0] / 2**20:.1f} MiB")
        assert peak[0] < 100 * 2**20


# -- TCP mode with redis-server, failover when one is killed -------------------------


def redis_ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
        out = b""
        while out.count(b"\r\n") < 3:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


def test_tcp_mode_redis_failover(redis_factory: Any, tmp_path: Path) -> None:
    r1 = redis_factory()
    r2 = redis_factory()
    port = free_port()
    p = ProgramProcess(
        "proxy",
        [
            "--listen",
            f"tcp://127.0.0.1:{port}",
            "--upstream",
            f"tcp://127.0.0.1:{r1.port}",
            "--upstream",
            f"tcp://127.0.0.1:{r2.port}",
            "--health-interval",
            "200ms",
        ],
        tmp=tmp_path,
    )
    with p:
        p.wait_ready()
        for _ in range(4):
            assert redis_ping(port) == b"+OK\r\n$1\r\nv\r\n"
        # half-close: the request still gets its answer after the client shut down writing
        out = raw(port, b"*1\r\n$4\r\nPING\r\n", half_close=True)
        assert out == b"+PONG\r\n"
        r1.proc.kill()
        r1.proc.wait()
        for _ in range(6):  # failover: every new connection lands on the survivor
            assert redis_ping(port) == b"+OK\r\n$1\r\nv\r\n"
        wait_until(lambda: upstreams(p)[f"tcp://127.0.0.1:{r1.port}"]["healthy"] is False, 5)
        _, _, metrics = p.get("/metrics")
        assert b'podkit_proxy_tcp_bytes_total{direction="to_upstream"}' in metrics
        assert (
            f'podkit_proxy_tcp_connections_total{{upstream="tcp://127.0.0.1:{r2.port}"}}'.encode()
            in metrics
        )
        assert any(r["message"] == "connection" for r in p.records())


# -- config with several listeners, metrics, shutdown ----------------------------------


def test_config_listeners_metrics_and_drain(
    farm: ChaosFarm, redis_server: Any, tmp_path: Path, promtool: Any
) -> None:
    a = farm.start(Chaos("a"))
    http_port, tcp_port = free_port(), free_port()
    cfg = tmp_path / "proxy.yaml"
    cfg.write_text(
        f"""
retries: 1
access-log: false
listeners:
  - listen: 127.0.0.1:{http_port}
    upstream: {a.url}
    timeout: 5s
  - listen: tcp://127.0.0.1:{tcp_port}
    upstream: [tcp://127.0.0.1:{redis_server.port}]
"""
    )
    with ProgramProcess("proxy", ["--config", str(cfg)], tmp=tmp_path) as p:
        p.wait_ready()
        assert http(f"http://127.0.0.1:{http_port}/ok")[2] == b"ok from a\n"
        assert redis_ping(tcp_port) == b"+OK\r\n$1\r\nv\r\n"
        st = status(p)
        assert [lst["mode"] for lst in st["listeners"]] == ["http", "tcp"]
        _, _, metrics = p.get("/metrics")
        promtool(metrics)
        # SIGTERM while a request is in flight: it completes, then exit 0
        results: list[tuple[int, bytes]] = []
        t = threading.Thread(
            target=lambda: results.append(http(f"http://127.0.0.1:{http_port}/slow?s=1")[::2])
        )
        t.start()
        wait_until(lambda: status(p)["active_requests"] == 1, 5)
        p.signal(signal.SIGTERM)
        t.join()
        assert results == [(200, b"slow from a\n")]
        assert p.wait(10) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - listen: 127.0.0.1:1\n    upstream: http://x:1\n    bogus: 1\n")
    res = run_program("proxy", ["--config", str(bad), "--admin-addr", "off"])
    assert res.returncode == 2 and b"bogus" in res.stderr
    res = run_program("proxy", ["--upstream", "ftp://x", "--admin-addr", "off"])
    assert res.returncode == 2 and b"--upstream" in res.stderr
    res = run_program(
        "proxy", ["--upstream", "http://x:1", "--lb", "random", "--admin-addr", "off"]
    )
    assert res.returncode == 2 and b"--lb" in res.stderr


def test_workers_share_the_port(nginx_up: Any, tmp_path: Path) -> None:
    with proxy(
        tmp_path, "--upstream", nginx_up.url, "--workers", "2", "--access-log", "false"
    ) as p:
        wait_until(lambda: any(r["message"] == "workers started" for r in p.records()), 5)
        # the worker really listens (it once died of a usage error, unnoticed, when
        # --admin-addr came as two tokens, as ProgramProcess passes it)
        wait_until(lambda: sum(r["message"] == "listening" for r in p.records()) == 2, 10)
        for _ in range(20):
            assert http(purl(p, "/status"))[0] == 200
        pids = next(r for r in p.records() if r["message"] == "workers started")["pids"]
        assert all(open(f"/proc/{pid}/stat").read().split()[2] != "Z" for pid in pids)
        assert not [r for r in p.records() if r["level"] == "error"]
        assert status(p)["scope"].startswith("process ")
    assert p.proc is not None and p.proc.returncode == 0
    for pid in pids:
        assert (
            not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        )


def test_status_says_whether_the_request_path_runs_compiled(nginx_up: Any, tmp_path: Path) -> None:
    """`make test-compiled` runs these tests against the mypyc build of the request
    path: the proxies they start must run it too (PYTHONPATH), not the source."""
    with proxy(tmp_path, "--upstream", nginx_up.url, "--access-log", "false") as p:
        assert status(p)["compiled"] is bool(os.environ.get("PODKIT_COMPILED"))
        code, _, body = http(purl(p, "/status"))
        assert code == 200 and body == b"ok\n"
