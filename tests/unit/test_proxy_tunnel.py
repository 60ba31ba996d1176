"""The proxy's Upgrade tunnel (`ClientConn.tunnel` in ambassadors/proxy/httpproxy.py),
driven in-process with transports that behave like uvloop's.

uvloop's transport raises RuntimeError on a write once its connection_lost has run
(asyncio's only warns). A client that resets just as the upstream's 101 arrives has
its connection_lost run between the 101 being read and the tunnel writing it on.
tests/integration/test_proxy_upgrade_faults.py makes that race over real sockets
many times; here it is made to happen in one loop turn, every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from podkit.ambassadors.proxy.httpproxy import ACCESS_LOG, ClientConn, HttpListener
from podkit.ambassadors.proxy.listener import clock
from podkit.ambassadors.proxy.settings import Settings
from podkit.ambassadors.proxy.upstream import UpstreamConn

from tests.helpers import wait_until_async

DEADLINE = 5.0
UPGRADE = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"


class UvTransport:
    """Records writes; like uvloop's, raises on a write once the connection is lost."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.lost = False
        self.eofs = 0

    @property
    def out(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes) -> None:
        if self.lost:
            raise RuntimeError("unable to perform operation; the handler is closed")
        if not self.closing:  # uvloop drops a write to a closing transport
            self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def write_eof(self) -> None:
        if self.lost:
            raise RuntimeError("unable to perform operation; the handler is closed")
        self.eofs += 1

    def can_write_eof(self) -> bool:
        return True

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5555) if key == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading


class Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Rig:
    """A listener with one pooled upstream connection and one client connection
    whose coroutine runs (connection_made started it)."""

    def __init__(self, lst: HttpListener | None = None) -> None:
        """A new listener, or another client connection on `lst`."""
        if lst is None:
            values = {
                **Settings().values(),
                "upstream": ["http://127.0.0.1:9"],
                "listen": "127.0.0.1:0",
            }
            lst = HttpListener(Settings.build(values, ""))
            lst.refresh_suffixes()
        self.lst = lst
        self.up = up = lst.upstreams[0]
        self.uc = UpstreamConn(up)
        self.ut = UvTransport()
        self.uc.connection_made(self.ut)
        up.nconns += 1
        up.release(self.uc, 0.0)
        before = asyncio.all_tasks()
        self.cc = ClientConn(lst)
        self.ct = UvTransport()
        self.cc.connection_made(self.ct)
        (self.task,) = asyncio.all_tasks() - before  # its serve()

    async def upgraded_request_sent(self) -> None:
        self.cc.data_received(UPGRADE)
        await wait_until_async(
            lambda: self.ut.out.startswith(b"GET /ws "), what="the request upstream", interval=0
        )

    def client_reset(self) -> None:
        self.ct.lost = True  # uvloop closes the handle as connection_lost runs
        self.cc.connection_lost(ConnectionResetError(104, "Connection reset by peer"))

    async def ended(self) -> None:
        await wait_until_async(self.task.done, what="the connection's coroutine to end", interval=0)
        assert self.task.exception() is None


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Run `main`; the access lines it wrote and the proxy's warnings and errors."""
    ACCESS_LOG.flush()  # a batch left by an earlier test is not this one's
    handler = Errors()
    log = logging.getLogger("podkit.proxy")
    log.addHandler(handler)
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out):
            asyncio.run(asyncio.wait_for(main(), DEADLINE))
            ACCESS_LOG.flush()
    finally:
        log.removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    return [r for r in lines if r.get("message") == "request"], [
        r.getMessage() for r in handler.records
    ]


def test_a_client_reset_as_the_101_arrives_ends_the_exchange_with_its_line() -> None:
    """Before the fix the 101's write raised out of tunnel(): serve()'s catch-all
    logged "request handling failed", the request had no line, and the upstream
    connection stayed open until the upstream closed it."""

    async def main() -> None:
        r = Rig()
        await r.upgraded_request_sent()
        # one loop turn: the 101 is read (the coroutine's wait is over) and the
        # client's reset is delivered before the coroutine resumes
        r.uc.data_received(SWITCH)
        r.client_reset()
        await r.ended()
        assert r.ct.writes == []  # nothing for a client that is gone
        assert r.ut.closing, "the upstream side of the tunnel is closed"
        assert r.lst.tunnels == 0 and r.lst.active == 0 and r.up.active == 0
        assert r.up.idle == []  # an upgraded connection never goes back to the pool
        assert r.up.codes == {101: 1}  # the upstream switched: counted as such

    lines, logged = run(main)
    assert logged == []
    assert [(r["path"], r["status"], r["bytes_out"]) for r in lines] == [("/ws", 101, 0)]
    assert 0 <= lines[0]["duration_seconds"] < DEADLINE
    assert lines[0]["upstream_seconds"] == 0


def test_a_tunnel_passes_bytes_both_ways_until_the_client_resets() -> None:
    async def main() -> None:
        r = Rig()
        await r.upgraded_request_sent()
        r.uc.data_received(SWITCH + b"hello")
        await wait_until_async(
            lambda: r.ct.out.endswith(b"hello"),
            what="the upstream's bytes at the client",
            interval=0,
        )
        assert r.ct.out.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nUpgrade: websocket\r\n" in r.ct.out
        assert r.lst.tunnels == 1 and not r.task.done()
        r.cc.data_received(b"ping")
        assert r.ut.out.endswith(b"ping")
        r.client_reset()  # mid-tunnel: the end of it, not an error
        await r.ended()
        assert r.ut.closing and r.lst.tunnels == 0 and r.up.active == 0

    lines, logged = run(main)
    assert logged == []
    assert [(r["path"], r["status"]) for r in lines] == [("/ws", 101)]


def test_an_upstream_reset_mid_tunnel_closes_the_client() -> None:
    async def main() -> None:
        r = Rig()
        await r.upgraded_request_sent()
        r.uc.data_received(SWITCH)
        await wait_until_async(lambda: r.lst.tunnels == 1, what="the tunnel", interval=0)
        r.cc.data_received(b"a" * 1000)
        r.ut.lost = True
        r.uc.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        r.cc.data_received(b"b" * 1000)  # the client still writing: not passed on
        await r.ended()
        assert r.ct.closing and r.lst.tunnels == 0
        assert r.ut.out.endswith(b"a" * 1000)

    lines, logged = run(main)
    assert logged == []
    assert [(r["path"], r["status"]) for r in lines] == [("/ws", 101)]


def test_a_101_without_upgrade_is_refused_and_nothing_is_tunnelled() -> None:
    """A 101 that names no protocol switched to: the proxy cannot know what the
    bytes after it are, so it answers 502 itself and closes both sides."""

    async def main() -> None:
        r = Rig()
        await r.upgraded_request_sent()
        r.uc.data_received(b"HTTP/1.1 101 Switching Protocols\r\n\r\nraw")
        await r.ended()  # the connection ends here: no next request is read
        out = r.ct.out
        assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), out
        assert b"\r\nx-podkit-proxy: bad-response\r\n" in out
        assert b"\r\nConnection: close\r\n" in out
        assert out.endswith(b"\r\n\r\nunrequested 101 from upstream\n")
        assert r.ct.closing and r.ut.closing and r.lst.tunnels == 0
        assert r.up.codes == {502: 1} and r.up.idle == []

    lines, logged = run(main)
    assert logged == []
    assert [(r["path"], r["status"], r["proxy_reason"]) for r in lines] == [
        ("/ws", 502, "bad-response")
    ]


def test_a_tunnel_is_cut_by_the_sweep_once_idle_both_ways() -> None:
    """--idle-timeout counts from the last byte either way: a WebSocket whose
    server pushes and whose client never speaks is not idle."""

    async def main() -> None:
        r = Rig()
        await r.upgraded_request_sent()
        r.uc.data_received(SWITCH + b"hi")
        await wait_until_async(lambda: r.lst.tunnels == 1, what="the tunnel", interval=0)
        idle = r.lst.s.idle_timeout
        start = clock.now
        try:
            clock.now = start + idle + 5  # the client silent all along; then
            r.uc.data_received(b"push")  # the upstream sends
            r.lst.sweep(clock.now + 1)
            pumps = (r.cc.req_pump, r.cc.resp_pump)
            assert all(p is not None and not p.done.done() for p in pumps)
            for _ in range(5):
                await asyncio.sleep(0)
            assert not r.task.done() and r.ct.out.endswith(b"push")
            r.lst.sweep(clock.now + idle + 1)  # now silent both ways
            await r.ended()
        finally:
            clock.now = start
        assert r.ct.closing and r.ut.closing and r.lst.tunnels == 0

    lines, logged = run(main)
    assert logged == []
    assert [r["status"] for r in lines] == [101]


def test_tunnels_are_counted_while_open() -> None:
    async def main() -> None:
        one = Rig()
        await one.upgraded_request_sent()  # has taken the pool's one connection
        two = Rig(one.lst)
        await two.upgraded_request_sent()
        one.uc.data_received(SWITCH)
        two.uc.data_received(SWITCH)
        await wait_until_async(lambda: one.lst.tunnels == 2, what="two tunnels", interval=0)
        one.client_reset()
        await one.ended()
        assert one.lst.tunnels == 1
        two.client_reset()
        await two.ended()
        assert one.lst.tunnels == 0

    lines, logged = run(main)
    assert logged == [] and len(lines) == 2
