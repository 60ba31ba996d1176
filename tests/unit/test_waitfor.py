"""waitfor's parts in-process: target parsing, status ranges, SCRAM, and the
protocol parsers against tiny hand-written servers for answers the real peers
cannot be made to give cheaply here (each such fake says so)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from podkit.initkits.waitfor import REGISTRY, WaitFor, parse_statuses
from podkit.initkits.waitfor.base import NotReady, Probe, Settings, parse_target
from podkit.initkits.waitfor.net import describe
from podkit.initkits.waitfor.probe_postgres import _Scram

from podkit import UsageError
from podkit.runner import configure

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def parse(url: str) -> Probe:
    return parse_target(url, Settings())


def test_every_scheme_of_the_issue_is_registered() -> None:
    want = {"tcp", "http", "https", "dns", "file", "unix", "redis", "rediss"}
    want |= {"postgres", "postgresql", "mysql"}
    assert want <= set(REGISTRY)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("tcp://db:5432", "db", 5432),
        ("tcp://[::1]:5432", "::1", 5432),
        ("TCP://DB.example:1", "db.example", 1),
        ("http://web", "web", 80),
        ("https://[2001:db8::1]/x?y=1", "2001:db8::1", 443),
        ("redis://:pw@cache", "cache", 6379),
        ("postgresql://u@db/app", "db", 5432),
        ("mysql://db", "db", 3306),
    ],
)
def test_host_and_port(url: str, host: str, port: int) -> None:
    p = parse(url)
    assert (p.host, p.port) == (host, port)


def test_passwords_are_unquoted_and_redacted() -> None:
    p = parse("postgres://app:p%40ss%3Aw0rd@db:5432/app")
    assert p.user == "app" and p.password == "p@ss:w0rd"
    assert p.display == "postgres://app:***@db:5432/app"
    assert "p%40ss" not in p.display


def test_http_query_goes_to_the_request() -> None:
    p = parse("http://web:8080/health?full=1&x=y")
    assert getattr(p, "target", None) == "/health?full=1&x=y"


def test_postgres_database_defaults_to_the_user() -> None:
    p = parse("postgres://app@db")
    assert getattr(p, "database", None) == "app"


def test_parse_statuses() -> None:
    assert parse_statuses("200,204, 300-399") == [(200, 200), (204, 204), (300, 399)]
    for bad in ("2xx", "", "200-", "399-300", "99", "600", "200,,204"):
        with pytest.raises(UsageError, match="--http-status"):
            parse_statuses(bad)


def test_configure_collects_every_bad_target_in_one_line() -> None:
    with pytest.raises(UsageError) as info:
        configure(WaitFor, ["tcp://a", "nope://b:1", "tcp://ok:1"], env={})
    text = str(info.value)
    assert "'tcp://a': missing port" in text and "'nope://b:1': unknown scheme" in text
    assert "\n" not in text


def test_bool_flag_before_a_target_does_not_swallow_it() -> None:
    prog = configure(WaitFor, ["--any", "--insecure", "https://h", "tcp://h:1"], env={})
    assert isinstance(prog, WaitFor)
    assert prog.tls.insecure and prog.any and prog.targets == ["https://h", "tcp://h:1"]
    prog = configure(WaitFor, ["--invert", "false", "tcp://h:1", "--", "app", "--x"], env={})
    assert isinstance(prog, WaitFor)
    assert not prog.invert and prog.command == ["app", "--x"]


def test_targets_from_env() -> None:
    prog = configure(WaitFor, [], env={"PODKIT_TARGETS": "tcp://a:1,tcp://b:2"})
    assert isinstance(prog, WaitFor)
    assert [p.display for p in prog.probes] == ["tcp://a:1", "tcp://b:2"]


async def test_scram_rfc7677_vector() -> None:
    """The SCRAM-SHA-256 example exchange of RFC 7677, section 3."""
    s = _Scram("pencil")
    s.nonce = "rOprNGfwEbeRWgbNEkqO"
    s.first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = await s.client_final(server_first)
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    s.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(NotReady, match="signature"):
        s.verify_server(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(NotReady, match="malformed"):
        await s.client_final(b"r=someone-elses-nonce,s=W22Z,i=4096")


async def test_scram_iteration_bomb_is_refused_and_never_blocks_the_loop() -> None:
    """The server picks the PBKDF2 iteration count; 2**31 once froze waitfor
    (SIGTERM and --timeout included) for minutes in one attempt."""
    import time

    s = _Scram("pw")
    t0 = time.monotonic()
    with pytest.raises(NotReady, match="iteration count 2147483647"):
        await s.client_final(f"r={s.nonce}x,s=c2FsdA==,i=2147483647".encode())
    assert time.monotonic() - t0 < 1
    # An allowed but costly count runs in a thread: the loop keeps ticking.
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    await s.client_final(f"r={s.nonce}x,s=c2FsdA==,i=1000000".encode())
    ticker.cancel()
    assert ticks > 5, ticks


# -- protocol parsers against hand-written servers ---------------------------


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def check(url: str, handler: Handler) -> str | None:
    server, port = await serve(handler)
    try:
        probe = parse(url.replace("PORT", str(port)))
        await asyncio.wait_for(probe.check(), 5)
        return None
    except Exception as exc:
        return describe(exc)
    finally:
        server.close()


async def test_mysql_error_packet_too_many_connections() -> None:
    """MariaDB counts only logged-in sessions toward max_connections, so making
    a real one refuse a bare handshake takes a login; this fake sends the packet."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        payload = b"\xff" + struct.pack("<H", 1040) + b"#08004Too many connections"
        w.write(len(payload).to_bytes(3, "little") + b"\0" + payload)
        await w.drain()
        w.close()

    err = await check("mysql://127.0.0.1:PORT", handler)
    assert err == "too many connections: Too many connections (1040)"


async def test_garbage_servers_are_named_as_such() -> None:
    async def http_like(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await w.drain()
        w.close()

    err = await check("postgres://u@127.0.0.1:PORT/db?sslmode=disable", http_like)
    assert err is not None and "not a PostgreSQL server" in err
    err = await check("postgres://u@127.0.0.1:PORT/db", http_like)
    assert err is not None and "not a PostgreSQL server" in err
    err = await check("redis://127.0.0.1:PORT", http_like)
    assert err is not None and "not a Redis server" in err
    err = await check("mysql://127.0.0.1:PORT", http_like)
    assert err is not None and "not a MySQL server" in err


async def test_http_chunked_body_and_interim_response() -> None:
    """nginx's `return` always sends Content-Length; this fake sends 100 + chunks."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"5\r\nhello\r\n7;ext=1\r\n world!\r\n0\r\n\r\n")
        await w.drain()
        w.close()

    settings = Settings()
    import re

    settings.http.body_regex = re.compile("hello world")
    server, port = await serve(handler)
    try:
        probe = parse_target(f"http://127.0.0.1:{port}/", settings)
        await asyncio.wait_for(probe.check(), 5)
        settings.http.body_regex = re.compile("goodbye")
        with pytest.raises(NotReady, match="body does not match"):
            await asyncio.wait_for(probe.check(), 5)
    finally:
        server.close()


async def test_every_attempt_resolves_the_name_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not exist yet (NXDOMAIN) is retried, not fatal."""
    server, port = await serve(lambda r, w: _close(w))
    real = socket.getaddrinfo
    calls: list[str] = []

    def fake(host: str, *args: Any, **kw: Any) -> Any:
        calls.append(host)
        if len(calls) == 1:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real("127.0.0.1", *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    try:
        probe = parse(f"tcp://db.not-yet:{port}")
        with pytest.raises(NotReady, match=r"cannot resolve db\.not-yet"):
            await probe.check()
        await probe.check()
        assert calls == ["db.not-yet", "db.not-yet"]
    finally:
        server.close()


async def _close(w: asyncio.StreamWriter) -> None:
    w.close()


def test_describe_is_short_and_stable() -> None:
    assert describe(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert describe(NotReady("x")) == "x"
    assert describe(asyncio.IncompleteReadError(b"", 4)) == "connection closed by the server"
    assert describe(OSError(113, "No route to host")) == "no route to host"


# -- torture: hostile peers --------------------------------------------------


async def _flood(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Answers with an endless line: no CRLF, no length, nothing to stop at."""
    try:
        chunk = b"A" * 65536
        for _ in range(64):  # 4 MiB at most, far past every cap
            w.write(chunk)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()


async def _silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:PORT/",
        "redis://127.0.0.1:PORT",
        "postgres://u@127.0.0.1:PORT/db?sslmode=disable",
        "mysql://127.0.0.1:PORT",
    ],
)
async def test_flooding_peer_is_refused_not_buffered(url: str) -> None:
    err = await check(url, _flood)
    assert err is not None
    assert any(w in err for w in ("too long", "too large", "not a", "closed", "reset")), err


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:PORT/",
        "https://127.0.0.1:PORT/",
        "redis://127.0.0.1:PORT",
        "postgres://u@127.0.0.1:PORT/db",
        "mysql://127.0.0.1:PORT",
    ],
)
async def test_silent_peer_costs_one_attempt_timeout(url: str) -> None:
    server, port = await serve(_silent)
    try:
        probe = parse(url.replace("PORT", str(port)))
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await probe.check()
        assert asyncio.get_running_loop().time() - t0 < 2
    finally:
        server.close()


async def test_http_body_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from podkit.initkits.waitfor import net, probe_http

    monkeypatch.setattr(probe_http, "MAX_MESSAGE", 4096)
    assert net.MAX_MESSAGE == 1 << 20

    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\n\r\n")
        try:
            for _ in range(1000):
                w.write(b"x" * 1024)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        w.close()

    settings = Settings()
    settings.http.body_regex = re.compile("y")
    server, port = await serve(endless)
    try:
        probe = parse_target(f"http://127.0.0.1:{port}/", settings)
        with pytest.raises(NotReady, match="body does not match"):
            await asyncio.wait_for(probe.check(), 5)
    finally:
        server.close()


async def test_credentials_do_not_follow_a_redirect_elsewhere() -> None:
    """A fake pair of servers: nginx cannot show us what headers arrived."""
    heads: list[bytes] = []

    async def other(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        heads.append(await r.readuntil(b"\r\n\r\n"))
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        w.close()

    other_srv, other_port = await serve(other)

    async def first(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        heads.append(head)
        to = "/ok" if b"GET /start" in head else f"http://127.0.0.1:{other_port}/x"
        w.write(f"HTTP/1.1 302 Found\r\nLocation: {to}\r\n\r\n".encode())
        await w.drain()
        w.close()

    settings = Settings()
    settings.http.follow_redirects = True
    settings.http.request_headers = [("Authorization", "Bearer tok"), ("X-Trace", "1")]
    first_srv, port = await serve(first)
    try:
        probe = parse_target(f"http://u:pw@127.0.0.1:{port}/start", settings)
        await asyncio.wait_for(probe.check(), 5)
    finally:
        first_srv.close()
        other_srv.close()
    start, same, elsewhere = heads
    assert b"Bearer tok" in start and b"Bearer tok" in same  # same origin keeps it
    assert b"Authorization" not in elsewhere and b"X-Trace: 1" in elsewhere


async def test_hostile_chunk_size_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk announced as a terabyte is read only up to the body cap."""
    import re

    from podkit.initkits.waitfor import probe_http

    monkeypatch.setattr(probe_http, "MAX_MESSAGE", 4096)
    sent = 0

    async def huge_chunk(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal sent
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\n")
        try:
            for _ in range(200):
                w.write(b"x" * 65536)
                await w.drain()
                sent += 65536
        except (ConnectionError, OSError):
            pass
        w.close()

    settings = Settings()
    settings.http.body_regex = re.compile("y")
    server, port = await serve(huge_chunk)
    try:
        probe = parse_target(f"http://127.0.0.1:{port}/", settings)
        with pytest.raises(NotReady, match="body does not match"):
            await asyncio.wait_for(probe.check(), 5)
    finally:
        server.close()
    assert sent < 200 * 65536  # we hung up early instead of buffering it all


async def test_hung_stat_is_not_retried_in_a_new_thread_each_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hung NFS mount: attempts time out, but only one stat() thread hangs."""
    import os
    import threading

    release = threading.Event()
    calls = 0

    def hung_stat(path: str) -> os.stat_result:
        nonlocal calls
        calls += 1
        release.wait(10)
        raise FileNotFoundError(path)

    probe = parse("file:///nfs/ready")
    monkeypatch.setattr(os, "stat", hung_stat)
    for _ in range(5):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(probe.check(), 0.05)
    assert calls == 1
    release.set()
    with pytest.raises(NotReady, match="no such file"):
        await asyncio.wait_for(probe.check(), 5)
    monkeypatch.undo()
    with pytest.raises(NotReady, match="no such file"):  # a fresh stat() after that one ended
        await asyncio.wait_for(probe.check(), 5)


async def test_blocking_call_is_abandoned_on_cancel() -> None:
    """A hung resolver or stat() must not delay an exit: its thread is a daemon."""
    import subprocess
    import sys
    import time

    from podkit.initkits.waitfor.net import blocking

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(blocking(time.sleep, 30), 0.05)
    code = (
        "import asyncio, time\n"
        "from podkit.initkits.waitfor.net import blocking\n"
        "async def main():\n"
        "    try:\n"
        "        await asyncio.wait_for(blocking(time.sleep, 30), 0.05)\n"
        "    except TimeoutError:\n"
        "        pass\n"
        "asyncio.run(main())\n"
    )
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20)
    assert time.monotonic() - t0 < 10  # not the 30 s the thread still sleeps
