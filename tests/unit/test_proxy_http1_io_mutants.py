"""The proxy's connection I/O (`Conn`, `Pump`, `splice`, `Cork` in
ambassadors/proxy/http1.py) under mutation testing (docs/testing.md, issue 25).

The integration tier drives these from outside (the proxy as a subprocess),
where mutmut cannot see. Here the protocol objects are driven in-process: with a
recording transport where what matters is what they tell the transport (write,
pause, close, half-close), and over real sockets on 127.0.0.1 where what matters
is what the peer receives (bytes in order, back-pressure, a half-close, a reset).
Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from podkit.ambassadors.proxy.http1 import (
    FLOOD,
    PEER,
    ChunkedFramer,
    Conn,
    Cork,
    DeadlineExceeded,
    EofFramer,
    LengthFramer,
    ProtocolError,
    Pump,
    RequestCache,
    RequestRules,
    UpstreamGone,
    splice,
)
from podkit.ambassadors.proxy.httpproxy import fast_request

DEADLINE = 5.0


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


class Transport:
    """What a Conn asks of its transport, recorded. pause/resume_reading are
    idempotent, as asyncio's are."""

    def __init__(self, sock: Any = None, can_eof: bool = True) -> None:
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.eof_written = 0
        self.reading = True
        self.sock = sock
        self.can_eof = can_eof

    @property
    def out(self) -> bytes:
        return b"".join(self.writes)

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.write(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def can_write_eof(self) -> bool:
        return self.can_eof

    def write_eof(self) -> None:
        self.eof_written += 1

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return self.sock if key == "socket" else default


def conn(**kw: Any) -> tuple[Conn, Transport]:
    t = Transport(**kw)
    c = Conn()
    c.connection_made(t)  # type: ignore[arg-type]
    return c, t


async def turn() -> None:
    """Let the loop run the callbacks already scheduled (one turn)."""
    await asyncio.sleep(0)


def waiting(task: asyncio.Future[Any]) -> bool:
    """True while the task runs. A task that ended is asked for its outcome, so a
    failure says what it returned or raised (and no exception is left unretrieved)."""
    if not task.done():
        return True
    outcome = "cancelled" if task.cancelled() else repr(task.exception() or task.result())
    raise AssertionError(f"ended early: {outcome}")


async def until(cond: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not cond():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


# -- the fast path's request cache ------------------------------------------------------


def test_a_cached_head_is_the_same_parse_and_costs_its_budget_once() -> None:
    cache = RequestCache(RequestRules([], None, False), fast_request)
    head = b"GET / HTTP/1.1\r\nHost: a"
    first = cache.find(head)
    assert first is not None and first[1] is None
    used = cache.used
    assert used > 0
    again = cache.find(head)
    assert again is not None and again[0] is first[0], "served from the cache"
    assert cache.used == used and len(cache) == 1
    # heads differing only in their id: one parse, one entry, charged once
    a = cache.find(head + b"\r\nX-Request-Id: 1")
    b = cache.find(head + b"\r\nX-Request-Id: 2")
    assert a is not None and b is not None
    assert a[0] is first[0] and b[0] is first[0] and (a[1], b[1]) == (b"1", b"2")
    assert cache.used == used and len(cache) == 1
    other = RequestCache(RequestRules([], None, False), fast_request)
    c = other.find(head + b"\r\nX-Request-Id: 1")  # cold: parsed without the id line
    d = other.find(head + b"\r\nX-Request-Id: 2")
    assert c is not None and d is not None and c[0] is d[0] and d[1] == b"2"
    assert len(other) == 1 and other.used == used


def test_an_id_line_anywhere_in_the_head_is_taken_out_whole() -> None:
    cache = RequestCache(RequestRules([], None, False), fast_request)
    found = cache.find(b"GET / HTTP/1.1\r\nx-request-id: XidX \r\nHost: a\r\nAccept: */*")
    assert found is not None
    req, rid = found
    assert rid == b"XidX" and req.request_id is None
    assert req.kept == b"\r\nAccept: */*" and req.host == b"a"


def test_an_id_line_at_the_header_limit_is_still_taken_out() -> None:
    cache = RequestCache(RequestRules([], None, False, max_headers=2), fast_request)
    found = cache.find(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: 7")  # 2 lines: allowed
    assert found is not None
    assert found[1] == b"7" and found[0].request_id is None


def test_a_protocol_error_says_its_reason() -> None:
    exc = ProtocolError(413, "request body over --max-body-bytes")
    assert (exc.status, exc.reason) == (413, "request body over --max-body-bytes")
    assert str(exc) == "request body over --max-body-bytes"  # what the logs show


# -- Cork --------------------------------------------------------------------------


def test_cork_holds_writes_to_the_end_of_the_turn_and_keeps_their_order() -> None:
    async def main() -> None:
        cork = Cork(asyncio.get_running_loop())
        a, b = Transport(), Transport()
        cork.write(a, (b"GET /1 ", b"HTTP/1.1\r\n\r\n"))
        cork.write(b, (b"to b",))
        cork.write(a, (b"GET /2 HTTP/1.1\r\n\r\n",))
        assert a.writes == [] and b.writes == [], "nothing before the loop's turn ends"
        await turn()
        assert a.writes == [b"GET /1 HTTP/1.1\r\n\r\n", b"GET /2 HTTP/1.1\r\n\r\n"]
        assert b.writes == [b"to b"]
        # a later turn's writes are held and flushed again
        cork.write(b, (b"again",))
        assert b.writes == [b"to b"]
        await turn()
        assert b.writes == [b"to b", b"again"]
        await turn()
        assert b.writes == [b"to b", b"again"], "written once"

    run(main())


def test_cork_flush_sends_held_writes_now_and_skips_a_closed_transport() -> None:
    async def main() -> None:
        cork = Cork(asyncio.get_running_loop())
        live, gone = Transport(), Transport()
        cork.write(live, (b"response",))
        cork.write(gone, (b"lost",))
        gone.close()  # closed before the turn ended: its write is dropped, not raised
        cork.flush()  # what a connection does before it closes
        assert live.writes == [b"response"] and gone.writes == []
        live.close()
        await turn()  # the scheduled flush finds nothing held: no write after close
        assert live.writes == [b"response"]

    run(main())


# -- Conn: reading -------------------------------------------------------------------


def test_bytes_are_buffered_and_wake_the_reader() -> None:
    async def main() -> None:
        c, _ = conn()
        fut = asyncio.get_running_loop().create_future()
        c.waiter = fut
        c.data_received(b"GET / HT")
        assert fut.done() and fut.result() is None and c.waiter is None
        c.data_received(b"TP/1.1\r\n")  # no waiter now: only buffered
        assert bytes(c.buf) == b"GET / HTTP/1.1\r\n"

    run(main())


def test_a_reader_woken_already_is_not_woken_again() -> None:
    async def main() -> None:
        c, _ = conn()
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()  # the reader gave up (a deadline): a late byte must not raise
        c.waiter = fut
        c.data_received(b"x")
        assert c.waiter is None and bytes(c.buf) == b"x"
        fut2 = asyncio.get_running_loop().create_future()
        fut2.cancel()
        c.waiter = fut2
        c.wake(UpstreamGone("gone"))
        assert c.waiter is None

    run(main())


def test_input_piling_up_past_the_flood_limit_pauses_reading() -> None:
    c, t = conn()
    c.flood_limit = 10
    c.data_received(b"x" * 10)
    assert t.reading and not c.paused, "at the limit: still reading"
    c.data_received(b"y")
    assert not t.reading and c.paused == FLOOD


def test_the_default_flood_limit_is_one_mebibyte() -> None:
    c, t = conn()
    c.data_received(b"x" * (1 << 20))
    assert t.reading
    c.data_received(b"x")
    assert not t.reading


def test_a_fresh_connection_is_reusable_and_each_sign_of_use_makes_it_not() -> None:
    c, _ = conn()
    assert c.reusable() and not c.closed and not c.eof and not c.paused
    for spoil in (
        lambda c: c.buf.extend(b"H"),  # an unsolicited byte
        lambda c: setattr(c, "eof", True),
        lambda c: setattr(c, "closed", True),
        lambda c: c.pause(PEER),  # held back by paused reading
    ):
        c, _ = conn()
        spoil(c)
        assert not c.reusable()


def test_eof_keeps_the_write_side_open_and_ends_the_read() -> None:
    async def main() -> None:
        c, t = conn()
        c.data_received(b"GET / HTTP/1.1\r\n\r\n")
        task = asyncio.ensure_future(c.read_head(1000))
        assert await task == b"GET / HTTP/1.1"
        task = asyncio.ensure_future(c.read_head(1000))
        await turn()
        assert waiting(task)
        assert c.eof_received() is True  # half-close: we may still answer
        assert await task is None and c.eof and not c.closed and not t.closing

    run(main())


def test_eof_over_tls_does_not_ask_to_keep_the_write_side() -> None:
    """asyncio closes a TLS transport at EOF whatever the protocol says, and logs a
    warning for every connection whose protocol returned True."""
    c, t = conn()
    t.get_extra_info = lambda key, default=None: object() if key == "sslcontext" else default  # type: ignore[method-assign]
    assert c.eof_received() is False and c.eof


def test_connection_lost_fails_the_reader_and_both_pumps() -> None:
    async def main() -> None:
        src, _ = conn()
        mid, _ = conn()
        dst, _ = conn()
        into = Pump(src, mid, LengthFramer(10), 0.0).start()  # src -> mid
        out = Pump(mid, dst, LengthFramer(10), 0.0).start()  # mid -> dst
        assert mid.sink is out and mid.feeder is into
        task = asyncio.ensure_future(dst.read_head(1000))
        await turn()
        mid.connection_lost(None)
        assert mid.closed and mid.eof
        for p in (into, out):
            err = p.done.result()
            assert isinstance(err, UpstreamGone)
        assert str(out.done.result()) == "connection lost"
        assert str(into.done.result()) == "destination connection lost"
        dst.connection_lost(OSError("reset"))
        with pytest.raises(UpstreamGone) as gone:
            await task
        assert str(gone.value) == "connection lost"

    run(main())


def test_a_reader_waiting_on_part_of_a_head_is_told_the_connection_was_lost() -> None:
    """Not "closed inside a message head": that is a peer's clean end (the
    upstream's reason reaches the client's reply and the log)."""

    async def main() -> None:
        c, _ = conn()
        c.data_received(b"HTTP/1.1 200")
        task = asyncio.ensure_future(c.read_head(100))
        await turn()
        c.connection_lost(ConnectionResetError())
        with pytest.raises(UpstreamGone) as gone:
            await task
        assert str(gone.value) == "connection lost"

    run(main())


def test_pause_reasons_add_up_and_reading_resumes_when_none_is_left() -> None:
    c, t = conn()
    c.resume(PEER)  # not paused: nothing to resume
    assert t.reading and c.paused == 0
    c.pause(PEER)
    assert not t.reading and c.paused == PEER
    c.pause(FLOOD)
    assert c.paused == PEER | FLOOD
    c.resume(PEER)
    assert not t.reading and c.paused == FLOOD, "still paused for the other reason"
    c.resume(PEER)
    assert c.paused == FLOOD
    c.resume(FLOOD)
    assert t.reading and c.paused == 0


def test_a_closed_connection_is_not_paused_or_resumed_on_its_transport() -> None:
    class Strict(Transport):
        def pause_reading(self) -> None:
            raise AssertionError("paused a closed transport")

        resume_reading = pause_reading

    c = Conn()
    t = Strict()
    c.connection_made(t)  # type: ignore[arg-type]
    c.closed = True
    c.pause(PEER)
    assert c.paused == PEER
    c.resume(PEER)
    assert c.paused == 0


def test_close_and_abort() -> None:
    c, t = conn()
    c.close()
    assert c.closed and t.closing and not t.aborted
    c2 = Conn()
    c2.close()  # never connected: nothing to close
    c2.abort()
    assert not c2.closed
    c3, t3 = conn()
    c3.abort()
    assert c3.closed and t3.aborted


def test_close_twice_closes_the_transport_once() -> None:
    closes: list[int] = []

    class Counting(Transport):
        def close(self) -> None:
            closes.append(1)
            super().close()

    c = Conn()
    c.connection_made(Counting())  # type: ignore[arg-type]
    c.close()
    c.close()
    assert closes == [1]


def test_reset_sets_a_zero_linger_then_aborts() -> None:
    calls: list[tuple[int, int, bytes]] = []

    class Sock:
        def setsockopt(self, level: int, opt: int, value: bytes) -> None:
            calls.append((level, opt, value))

    c, t = conn(sock=Sock())
    c.reset()
    assert calls == [(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")]
    assert t.aborted and c.closed
    # already closed: no linger change, the abort is harmless
    calls.clear()
    c.reset()
    assert calls == []


def test_reset_aborts_even_when_the_socket_option_cannot_be_set() -> None:
    class Sock:
        def setsockopt(self, *a: Any) -> None:
            raise OSError("not a socket any more")

    c, t = conn(sock=Sock())
    c.reset()
    assert t.aborted and c.closed
    c2, t2 = conn()  # a transport without a socket (a test's, or a pipe)
    c2.reset()
    assert t2.aborted


async def tcp_pair(factory: Callable[[], Conn] = Conn) -> tuple[Conn, Conn]:
    """Two Conns at the ends of one TCP connection on 127.0.0.1: (client, server)."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[Conn] = loop.create_future()

    def make() -> Conn:
        c = factory()
        if not accepted.done():
            accepted.set_result(c)
        return c

    server = await loop.create_server(make, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await loop.create_connection(Conn, "127.0.0.1", port)
    srv = await asyncio.wait_for(accepted, DEADLINE)
    server.close()
    return client, srv


async def read_to_eof(c: Conn) -> bytes:
    loop = asyncio.get_running_loop()
    while not c.eof:
        fut: asyncio.Future[None] = loop.create_future()
        c.waiter = fut
        await asyncio.wait_for(fut, DEADLINE)
    data = bytes(c.buf)
    c.buf.clear()
    return data


class Recorder(asyncio.Protocol):
    """The far end of a connection, as a plain protocol: what it received and how
    the connection ended for it."""

    def __init__(self) -> None:
        self.data = b""
        self.seen: list[str] = []

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.seen.append("eof")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.seen.append(type(exc).__name__)


def test_reset_reaches_the_peer_as_a_reset_not_an_end() -> None:
    """A client reading a body until the connection's end must not take a cut
    response for a complete one: it sees a reset, not an end of stream."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[Conn] = loop.create_future()

        def make() -> Conn:
            c = Conn()
            accepted.set_result(c)
            return c

        server = await loop.create_server(make, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, client = await loop.create_connection(Recorder, "127.0.0.1", port)
        srv = await asyncio.wait_for(accepted, DEADLINE)
        server.close()
        srv.transport.write(b"partial body")
        await until(lambda: client.data == b"partial body", "the bytes")
        srv.reset()
        assert srv.closed
        await until(lambda: bool(client.seen), "the connection's end")
        assert client.seen == ["ConnectionResetError"]

    run(main())


# -- Conn.read_head -------------------------------------------------------------------


def test_pipelined_heads_are_read_one_at_a_time_in_order() -> None:
    async def main() -> None:
        c, _ = conn()
        c.data_received(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HT")
        assert await c.read_head(100) == b"GET /1 HTTP/1.1"
        assert await c.read_head(100) == b"GET /2 HTTP/1.1"
        task = asyncio.ensure_future(c.read_head(100))
        await turn()
        assert waiting(task)
        c.data_received(b"TP/1.1\r\n\r\n")
        assert await task == b"GET /3 HTTP/1.1"
        assert c.buf == b""

    run(main())


def test_a_head_dripping_in_byte_by_byte_is_found() -> None:
    async def main() -> None:
        for head in (b"GET / HTTP/1.1\r\nHost: a", b""):
            c, _ = conn()
            task = asyncio.ensure_future(c.read_head(100))
            for byte in head + b"\r\n\r\nNEXT":
                await turn()
                assert byte in b"NEXT" or waiting(task)
                c.data_received(bytes([byte]))
            assert await task == head
            assert c.buf == b"NEXT"

    run(main())


def test_a_head_over_the_limit_is_refused_and_one_at_it_is_read() -> None:
    too_big = "request headers over --max-header-bytes"  # what the client is told

    async def main() -> None:
        c, _ = conn()
        c.data_received(b"a" * 10 + b"\r\n\r\n")
        assert await c.read_head(10) == b"a" * 10
        c.data_received(b"a" * 11 + b"\r\n\r\n")
        with pytest.raises(ProtocolError) as exc:
            await c.read_head(10)
        assert (exc.value.status, exc.value.reason) == (431, too_big)
        # no end in sight: refused as soon as the head cannot end within the limit
        # (the buffer may hold a head at the limit and three bytes of its end)
        c2, _ = conn()
        c2.data_received(b"a" * 13)
        task = asyncio.ensure_future(c2.read_head(10))
        await turn()
        assert waiting(task)
        c2.data_received(b"a")
        with pytest.raises(ProtocolError) as exc:
            await task
        assert (exc.value.status, exc.value.reason) == (431, too_big)

    run(main())


@pytest.mark.parametrize("split", [1, 2, 3])
def test_a_head_at_the_limit_is_read_however_its_end_is_split(split: int) -> None:
    """Whether a head fits --max-header-bytes must not depend on where TCP cut
    the stream: a head at the limit with its blank line split across reads is
    read, as it is when it arrives whole."""

    async def main() -> None:
        c, _ = conn()
        end = b"\r\n\r\n"
        c.data_received(b"a" * 10 + end[:split])
        task = asyncio.ensure_future(c.read_head(10))
        await turn()
        assert waiting(task)
        c.data_received(end[split:])
        assert await task == b"a" * 10

    run(main())


def test_an_empty_head_already_buffered_is_returned_empty() -> None:
    """A bare CRLF CRLF is an empty head (the caller refuses it as a malformed
    request line), not a head ended by a bare LF."""

    async def main() -> None:
        c, _ = conn()
        c.data_received(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")
        assert await c.read_head(100) == b""
        assert await c.read_head(100) == b"GET / HTTP/1.1"

    run(main())


@pytest.mark.parametrize("ending", [b"\n\n", b"\n\r\n", b"\r\n\n"])
def test_a_head_ended_by_a_bare_lf_is_refused_at_once(ending: bytes) -> None:
    async def main() -> None:
        c, _ = conn()
        task = asyncio.ensure_future(c.read_head(100))
        await turn()
        c.data_received(b"GET / HTTP/1.1\r\nHost: a")
        await turn()
        assert waiting(task)
        for byte in ending:
            c.data_received(bytes([byte]))
            await turn()
        with pytest.raises(ProtocolError) as exc:
            await task
        assert (exc.value.status, exc.value.reason) == (400, "bare LF in a message head")

    run(main())


@pytest.mark.parametrize("start", [b"\n\n", b"\n\r\n", b"\r\n\n"])
def test_bare_lf_line_ends_at_the_very_start_are_refused_at_once(start: bytes) -> None:
    async def main() -> None:
        c, _ = conn()
        c.data_received(start)
        with pytest.raises(ProtocolError) as exc:
            await c.read_head(100)
        assert (exc.value.status, exc.value.reason) == (400, "bare LF in a message head")

    run(main())


def test_eof_inside_a_head_is_an_error_and_after_whitespace_a_clean_end() -> None:
    async def main() -> None:
        c, _ = conn()
        c.data_received(b"GET / HT")
        c.eof_received()
        with pytest.raises(UpstreamGone) as gone:
            await c.read_head(100)
        assert str(gone.value) == "connection closed inside a message head"
        c2, _ = conn()
        c2.data_received(b"\r\n")  # a stray CRLF between messages is no head
        c2.eof_received()
        assert await c2.read_head(100) is None
        c3, _ = conn()
        c3.connection_lost(None)
        with pytest.raises(UpstreamGone) as gone:
            await c3.read_head(100)
        assert str(gone.value) == "connection lost"

    run(main())


def test_reading_a_head_resumes_reading_paused_by_a_flood() -> None:
    async def main() -> None:
        c, t = conn()
        c.flood_limit = 8
        c.data_received(b"GET / HTTP/1.1\r\n\r\n")
        assert not t.reading and c.paused == FLOOD
        assert await c.read_head(100) == b"GET / HTTP/1.1"
        assert t.reading and c.paused == 0
        # paused with no complete head: resumed before waiting for the rest
        c2, t2 = conn()
        c2.flood_limit = 4
        c2.data_received(b"GET / HTTP")
        assert not t2.reading
        task = asyncio.ensure_future(c2.read_head(100))
        await turn()
        assert t2.reading and c2.paused == 0 and waiting(task)
        c2.pause(PEER)
        c2.data_received(b"/1.1\r\n\r\n")
        assert await task == b"GET / HTTP/1.1"
        assert c2.paused == PEER, "only the flood's pause is lifted"
        task.cancel()

    run(main())


def test_read_head_returns_at_once_when_work_was_handed_over() -> None:
    async def main() -> None:
        c, _ = conn()
        c.data_received(b"GET / HTTP/1.1\r\n\r\n")
        c.handover = object()
        assert await c.read_head(100) == b""
        assert c.buf == b"GET / HTTP/1.1\r\n\r\n", "left for whoever took over"

    run(main())


def test_the_owner_sees_the_wait_and_can_end_it_on_a_deadline() -> None:
    async def main() -> None:
        up, _ = conn()
        owner = Conn()
        task = asyncio.ensure_future(up.read_head(100, owner))
        await turn()
        assert owner.wait_fut is up.waiter and owner.wait_fut is not None
        owner.wait_fut.set_exception(DeadlineExceeded())  # the sweeper
        with pytest.raises(DeadlineExceeded):
            await task
        assert owner.wait_fut is None
        task = asyncio.ensure_future(up.read_head(100, owner))
        await turn()
        up.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
        assert await task == b"HTTP/1.1 200 OK" and owner.wait_fut is None

    run(main())


# -- Pump ----------------------------------------------------------------------------


def test_a_pump_passes_its_body_and_leaves_the_next_message_buffered() -> None:
    """Pipelining: the body and the next head arrive in one read; the body goes
    on, the head stays for the next read_head, which is woken."""

    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        src.data_received(b"hel")
        p = Pump(src, dst, LengthFramer(5), 1.5)
        assert p.nbytes == 0 and p.last == 1.5
        p.start()
        assert dt.writes == [b"hel"] and src.buf == b"" and src.sink is p and dst.feeder is p
        fut = asyncio.get_running_loop().create_future()
        src.waiter = fut
        src.data_received(b"loGET /2 HTTP/1.1\r\n\r\n")
        assert dt.writes == [b"hel", b"lo"] and p.nbytes == 5
        assert p.done.done() and p.done.result() is None
        assert src.sink is None and dst.feeder is None
        assert bytes(src.buf) == b"GET /2 HTTP/1.1\r\n\r\n" and fut.done()
        src.data_received(b"GET /3")  # after the pump: buffered, not written
        assert dt.writes == [b"hel", b"lo"]
        assert await src.read_head(100) == b"GET /2 HTTP/1.1"

    run(main())


def test_a_pump_whose_body_is_all_buffered_ends_in_start() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        src.data_received(b"abcGET /next")
        p = Pump(src, dst, LengthFramer(3), 0.0).start()
        assert p.done.result() is None and dt.out == b"abc" and p.nbytes == 3
        assert src.buf == b"GET /next" and src.sink is None
        # no body at all: done without reading anything
        q = Pump(src, dst, LengthFramer(0), 0.0).start()
        assert q.done.result() is None and dt.out == b"abc" and q.nbytes == 0
        assert src.buf == b"GET /next" and src.sink is None and dst.feeder is None

    run(main())


def test_bytes_fed_after_the_pump_ended_go_back_to_the_buffer() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        p = Pump(src, dst, LengthFramer(2), 0.0).start()
        p.feed(b"ab")
        p.feed(b"cd")  # a stale reference fed after the end
        assert dt.out == b"ab" and src.buf == b"cd" and p.nbytes == 2
        p.feed(b"\r\n\r\n")  # appended to what is there, in order
        assert src.buf == b"cd\r\n\r\n"
        assert await src.read_head(100) == b"cd"

    run(main())


def test_a_chunked_body_split_anywhere_is_passed_whole_and_then_stops() -> None:
    async def main() -> None:
        body = b"3\r\nabc\r\n0\r\n\r\n"
        for cut in range(1, len(body)):
            src, _ = conn()
            dst, dt = conn()
            p = Pump(src, dst, ChunkedFramer(), 0.0).start()
            src.data_received(body[:cut])
            assert not p.done.done()
            src.data_received(body[cut:] + b"NEXT")
            assert p.done.result() is None
            assert dt.out == body and p.nbytes == len(body) and src.buf == b"NEXT"

    run(main())


def test_a_malformed_body_fails_the_pump_with_the_parse_error() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        p = Pump(src, dst, ChunkedFramer(), 0.0).start()
        src.data_received(b"zz\r\n")
        err = p.done.result()
        assert isinstance(err, ProtocolError) and err.status == 400
        assert dt.writes == [] and src.sink is None and dst.feeder is None

    run(main())


def test_eof_in_the_middle_of_a_body_fails_the_pump() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        p = Pump(src, dst, LengthFramer(10), 0.0).start()
        src.data_received(b"12345")
        src.eof_received()
        err = p.done.result()
        assert isinstance(err, UpstreamGone)
        assert str(err) == "connection closed before the body ended"
        assert dt.out == b"12345" and p.nbytes == 5
        # the end was there before the pump started: failed at once
        src2, _ = conn()
        src2.data_received(b"123")
        src2.eof_received()
        q = Pump(src2, dst, LengthFramer(10), 0.0).start()
        assert isinstance(q.done.result(), UpstreamGone)
        # and a connection already lost
        src3, _ = conn()
        src3.connection_lost(None)
        r = Pump(src3, dst, LengthFramer(10), 0.0).start()
        assert str(r.done.result()) == "connection lost"

    run(main())


def test_eof_ends_a_body_delimited_by_the_connection_end() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        p = Pump(src, dst, EofFramer(), 0.0).start()
        src.data_received(b"all ")
        src.data_received(b"of it")
        assert not p.done.done()
        src.eof_received()
        assert p.done.result() is None and dt.out == b"all of it" and p.nbytes == 9
        # already at its end when the pump starts
        src2, _ = conn()
        src2.data_received(b"tail")
        src2.eof_received()
        q = Pump(src2, dst, EofFramer(), 0.0).start()
        assert q.done.result() is None and q.nbytes == 4

    run(main())


def test_a_pump_into_a_closed_connection_fails_without_writing() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, dt = conn()
        p = Pump(src, dst, LengthFramer(10), 0.0).start()
        dst.closed = True
        src.data_received(b"abc")
        err = p.done.result()
        assert isinstance(err, UpstreamGone) and str(err) == "destination closed"
        assert dt.writes == [] and p.nbytes == 0

    run(main())


def test_a_full_destination_pauses_the_source_until_it_drains() -> None:
    async def main() -> None:
        src, st = conn()
        dst, _ = conn()
        p = Pump(src, dst, LengthFramer(100), 0.0).start()
        dst.pause_writing()
        assert dst.write_paused and not st.reading and src.paused == PEER
        dst.resume_writing()
        assert not dst.write_paused and st.reading and src.paused == 0
        dst.pause_writing()
        p.feed(b"x" * 100)  # the body ends while paused: reading resumes for the next head
        assert p.done.result() is None and st.reading and src.paused == 0
        # a destination already full when the pump starts
        src2, st2 = conn()
        Pump(src2, dst, LengthFramer(1), 0.0).start()
        assert not st2.reading and src2.paused == PEER
        # with no pump writing into it, a full connection pauses nobody
        lone, _ = conn()
        lone.pause_writing()
        lone.resume_writing()
        assert not lone.write_paused

    run(main())


def test_a_pump_started_on_a_flooded_source_resumes_it() -> None:
    async def main() -> None:
        src, st = conn()
        dst, dt = conn()
        src.flood_limit = 2
        src.data_received(b"abcd")
        assert not st.reading
        p = Pump(src, dst, LengthFramer(10), 0.0).start()
        assert st.reading and src.paused == 0 and dt.out == b"abcd" and p.nbytes == 4

    run(main())


def test_a_pump_detaches_only_itself() -> None:
    async def main() -> None:
        src, _ = conn()
        dst, _ = conn()
        old = Pump(src, dst, LengthFramer(1), 0.0).start()
        new = Pump(src, dst, LengthFramer(1), 0.0).start()
        old.fail(UpstreamGone("late"))
        assert src.sink is new and dst.feeder is new, "a newer pump stays attached"
        new.finish()
        new.fail(UpstreamGone("after the end"))  # the first result stands
        assert new.done.result() is None

    run(main())


def test_tcp_mode_counts_each_byte_passed() -> None:
    """`account` is TCP mode's byte counter (tcp.py's pump): told each count the
    pump passes on, not the bytes it leaves for the next message."""
    from podkit.ambassadors.proxy.settings import Settings
    from podkit.ambassadors.proxy.tcp import TcpListener, TcpPump

    async def main() -> None:
        values = {**Settings().values(), "upstream": ["tcp://127.0.0.1:9"]}
        lst = TcpListener(Settings.build({**values, "listen": "tcp://127.0.0.1:0"}, ""))
        src, _ = conn()
        dst, dt = conn()
        p = TcpPump(src, dst, lst, "to_upstream")
        p.framer = LengthFramer(5)  # a body's length, to see what is not counted
        p.start()
        src.data_received(b"abc")
        src.data_received(b"defgh")
        assert lst.bytes == {"to_upstream": 5, "to_client": 0}
        assert p.nbytes == 5 and dt.out == b"abcde" and src.buf == b"fgh"

    run(main())


# -- splice --------------------------------------------------------------------------


def test_splice_passes_each_half_close_on_and_returns_none_when_both_end() -> None:
    async def main() -> None:
        x, xt = conn()
        y, yt = conn()
        a = Pump(x, y, EofFramer(), 0.0).start()
        b = Pump(y, x, EofFramer(), 0.0).start()
        task = asyncio.ensure_future(splice(a, b))
        x.data_received(b"request")
        x.eof_received()
        await until(lambda: yt.eof_written == 1, "the half-close passed to y")
        assert xt.eof_written == 0 and waiting(task)
        y.data_received(b"reply")
        y.eof_received()
        assert await task is None
        assert xt.eof_written == 1 and yt.eof_written == 1
        assert (a.nbytes, b.nbytes) == (7, 5) and yt.out == b"request" and xt.out == b"reply"

    run(main())


def test_splice_over_tls_does_not_half_close_and_skips_a_closed_side() -> None:
    async def main() -> None:
        x, xt = conn(can_eof=False)
        y, yt = conn(can_eof=False)
        a = Pump(x, y, EofFramer(), 0.0).start()
        b = Pump(y, x, EofFramer(), 0.0).start()
        task = asyncio.ensure_future(splice(a, b))
        x.eof_received()
        y.eof_received()
        assert await task is None and xt.eof_written == yt.eof_written == 0
        # the destination closed already: no write_eof on it
        p, pt = conn()
        q, qt = conn()
        a = Pump(p, q, EofFramer(), 0.0).start()
        b = Pump(q, p, EofFramer(), 0.0).start()
        task = asyncio.ensure_future(splice(a, b))
        q.closed = True
        p.eof_received()
        await turn()
        assert qt.eof_written == 0
        b.finish()
        assert await task is None and pt.eof_written == 1

    run(main())


def test_splice_returns_the_first_error() -> None:
    async def main() -> None:
        x, _ = conn()
        y, _ = conn()
        a = Pump(x, y, EofFramer(), 0.0).start()
        b = Pump(y, x, EofFramer(), 0.0).start()
        task = asyncio.ensure_future(splice(a, b))
        x.eof_received()
        await turn()
        boom = UpstreamGone("reset")
        b.fail(boom)
        assert await task is boom

    run(main())


def test_splice_returns_a_half_close_refused_by_a_peer_just_gone() -> None:
    """asyncio's write_eof() (a shutdown()) to a peer whose reset the loop has not
    seen yet raises ENOTCONN: that is how the splice ended, returned like any other
    end, not raised out of it (an Upgrade tunnel has no handler for it)."""

    class Gone(Transport):
        def write_eof(self) -> None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")

    async def main() -> None:
        x, _ = conn()
        y = Conn()
        y.connection_made(Gone())  # type: ignore[arg-type]
        a = Pump(x, y, EofFramer(), 0.0).start()
        b = Pump(y, x, EofFramer(), 0.0).start()
        task = asyncio.ensure_future(splice(a, b))
        x.eof_received()  # x's half-close, to be passed on to y
        err = await task
        assert isinstance(err, OSError) and err.errno == errno.ENOTCONN

    run(main())


# -- over real sockets -------------------------------------------------------------


async def relay() -> tuple[Conn, Conn, Conn, Conn, Pump, Pump, asyncio.Future[Any]]:
    """app <-TCP-> (pa | pb) <-TCP-> up, with pa and pb spliced (TCP mode)."""
    app, pa = await tcp_pair()
    pb, up = await tcp_pair()
    a = Pump(pa, pb, EofFramer(), 0.0).start()
    b = Pump(pb, pa, EofFramer(), 0.0).start()
    return app, pa, pb, up, a, b, asyncio.ensure_future(splice(a, b))


def test_a_spliced_connection_carries_both_ways_through_half_closes() -> None:
    """The app sends its request and shuts its write side; the reply still comes
    back, then the upstream's end reaches the app: byte counts are exact."""

    async def main() -> None:
        app, pa, pb, up, a, b, task = await relay()
        request = bytes(range(256)) * 1000
        app.transport.write(request)
        app.transport.write_eof()
        assert await read_to_eof(up) == request
        up.transport.write(b"reply")
        up.transport.write_eof()
        assert await read_to_eof(app) == b"reply"
        assert await asyncio.wait_for(task, DEADLINE) is None
        assert (a.nbytes, b.nbytes) == (len(request), 5)
        for c in (app, pa, pb, up):
            c.close()

    run(main())


def test_back_pressure_pauses_the_sender_and_loses_nothing() -> None:
    """An upstream that stops reading: the proxy stops reading from the app
    instead of buffering; when it reads again, every byte arrives in order."""

    async def main() -> None:
        app, pa, pb, up, a, _, task = await relay()
        for c in (pb, up):
            sock = c.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        pb.transport.set_write_buffer_limits(high=16384)
        up.flood_limit = 1 << 30  # the test's own end keeps everything it reads
        up.transport.pause_reading()
        payload = bytes(range(251)) * 8000  # 2 MB: far more than the shrunk socket buffers hold
        app.transport.write(payload)
        await until(lambda: bool(pa.paused & PEER), "the proxy to stop reading from the app")
        assert pb.write_paused
        held = pb.transport.get_write_buffer_size()
        assert held < 1 << 20, f"{held} bytes buffered in the proxy while paused"
        up.transport.resume_reading()
        app.transport.write_eof()
        assert await read_to_eof(up) == payload
        assert not pa.paused and a.nbytes == len(payload)
        up.transport.write_eof()
        assert await asyncio.wait_for(task, DEADLINE) is None
        for c in (app, pa, pb, up):
            c.close()

    run(main())


def test_a_connection_lost_mid_splice_is_the_error_returned() -> None:
    async def main() -> None:
        app, pa, pb, up, _, _, task = await relay()
        app.transport.write(b"x")
        await until(lambda: bytes(up.buf) == b"x", "the byte")
        up.reset()  # a reset, not a close: a close is a half-close, passed on
        err = await asyncio.wait_for(task, DEADLINE)
        assert isinstance(err, UpstreamGone)
        for c in (app, pa, pb):
            c.close()

    run(main())


def test_a_pipelined_request_body_then_head_over_a_socket() -> None:
    """A request with a body and the next head in one segment: the body reaches
    the upstream and nothing more; the next head is read in order."""

    async def main() -> None:
        app, pa = await tcp_pair()
        pb, up = await tcp_pair()
        app.transport.write(
            b"POST /1 HTTP/1.1\r\nContent-Length: 4\r\n\r\nbodyGET /2 HTTP/1.1\r\n\r\n"
        )
        assert await pa.read_head(1000) == b"POST /1 HTTP/1.1\r\nContent-Length: 4"
        p = Pump(pa, pb, LengthFramer(4), 0.0).start()
        assert await asyncio.wait_for(p.done, DEADLINE) is None
        assert await pa.read_head(1000) == b"GET /2 HTTP/1.1"
        await until(lambda: bytes(up.buf) == b"body", "the body upstream")
        pb.close()
        assert await read_to_eof(up) == b"body"
        for c in (app, pa):
            c.close()

    run(main())
