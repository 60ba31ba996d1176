"""The proxy's Upgrade tunnel when either side hangs up at the worst moment, on raw sockets.

Under uvloop, writing to a transport whose connection_lost has run raises
RuntimeError (asyncio's only warns). A client that sent an `Upgrade:` request and
reset its connection just as the upstream's `101 Switching Protocols` arrived had
its connection_lost run between the 101 being read and tunnel() writing it on:
the write raised out of tunnel(), serve()'s catch-all logged "request handling
failed" for it, and the request had no access line. The client leaving ends the
tunnel like any other end of it: the upstream connection is closed and the
request gets its line (101: the upstream switched; nothing reached the client).

The timing is randomised over many tries (the race needs the client's reset and
the upstream's 101 to arrive together), so each check is: no error record, at most
one access line per request and one for every 101 the proxy counted, no socket
left open in the proxy, and the proxy still tunnels afterwards. The mirror cases
(the client or the upstream resetting in the middle of the tunnel) are exact.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import ProgramProcess, free_port, wait_until
from tests.integration.proxy_sockets import SocketUpstream, client, recv_head

SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
TRIES = 200

Plan = Callable[[socket.socket, bytes], None]


def upgrade(path: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    ).encode()


def reset(s: socket.socket) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a client that crashed or was killed."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def drain(c: socket.socket) -> None:
    """Read until the other side is gone (the proxy closing this end of the tunnel)."""
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass


class Switching(SocketUpstream):
    """Runs, for each request, the plan the test registered for its path: when the
    request head has arrived, `arrived[path]` is set and the plan gets the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: dict[bytes, Plan] = {}
        self.arrived: dict[bytes, threading.Event] = {}

    def expect(self, path: str, plan: Plan) -> threading.Event:
        ev = threading.Event()
        with self.lock:
            self.plans[path.encode()] = plan
            self.arrived[path.encode()] = ev
        return ev

    def serve(self, c: socket.socket, n: int) -> None:
        c.settimeout(10)
        got = recv_head(c, b"")
        if got is None:
            return  # the proxy gave up on this connection before the head was sent
        head, rest = got
        path = head.split(b" ")[1]
        with self.lock:
            plan = self.plans[path]
            ev = self.arrived[path]
        ev.set()
        plan(c, rest)


def echo_plan(c: socket.socket, rest: bytes) -> None:
    c.sendall(SWITCH + rest)
    while data := c.recv(65536):
        c.sendall(data)


@pytest.fixture(scope="module")
def up() -> Iterator[Switching]:
    u = Switching()
    yield u
    u.close()


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def px(
    request: pytest.FixtureRequest, up: Switching, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProgramProcess]:
    """The proxy under each event loop (uvloop is its default; asyncio's transports
    forgive a write after the end, uvloop's raise)."""
    port = free_port()
    p = ProgramProcess(
        "proxy",
        # a short --idle-timeout: an upstream connection made for a client that left
        # before its request was sent is pooled, and must be gone for the fd count
        [
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            up.url,
            "--retries",
            "0",
            "--idle-timeout",
            "2s",
        ],
        tmp=tmp_path_factory.mktemp("px"),
        env={"PODKIT_EVENT_LOOP": request.param},
    )
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


_serial = iter(range(1_000_000))


def new_path(kind: str) -> str:
    return f"/ws/{kind}/{next(_serial)}"


def tunnel_works(p: ProgramProcess, up: Switching) -> None:
    """One whole exchange: the upgrade answered, bytes echoed both ways."""
    path = new_path("ok")
    up.expect(path, echo_plan)
    with client(p) as s:
        s.sendall(upgrade(path))
        got = b""
        while not got.endswith(b"\r\n\r\n"):
            data = s.recv(65536)
            assert data, got
            got += data
        assert got.startswith(b"HTTP/1.1 101 "), got
        s.sendall(b"ping")
        echoed = b""
        while len(echoed) < 4:
            data = s.recv(65536)
            assert data, echoed
            echoed += data
        assert echoed == b"ping"


def fds(p: ProgramProcess) -> int:
    return len(os.listdir(f"/proc/{p.pid}/fd"))


def logged(p: ProgramProcess, kind: str, n: int) -> list[dict[str, Any]]:
    """The access lines of the `kind` tries, once there are `n` (the log is batched)."""
    wait_until(lambda: len(lines(p, kind)) >= n, 5, what=f"{n} access lines for {kind}")
    return lines(p, kind)


def lines(p: ProgramProcess, kind: str) -> list[dict[str, Any]]:
    prefix = f"/ws/{kind}/"
    return [
        r
        for r in p.records()
        if r.get("message") == "request" and str(r.get("path", "")).startswith(prefix)
    ]


def errors(p: ProgramProcess, since: int) -> list[str]:
    """Error records (and tracebacks) after the first `since` records, each as its
    message, error and place."""
    return [
        f"{r['message']}: {r.get('error')} at {r.get('where')} {r.get('exc_info', '')}"
        for r in p.records()[since:]
        if r["level"] in ("error", "critical") or "exc_info" in r
    ]


def switched(p: ProgramProcess) -> float:
    """How many 101s the proxy counted (tunnel() counts each as it starts)."""
    return p.metric("podkit_proxy_requests_total", missing=0.0, code="101")


def settle(p: ProgramProcess, baseline: int) -> None:
    """Every connection of the tries closed in the proxy (no fd leaked; a pooled one
    within --idle-timeout and the next maintenance turn)."""
    wait_until(lambda: fds(p) <= baseline, 10, what=f"the proxy back to {baseline} fds")


def test_reset_as_the_101_arrives_ends_the_tunnel_cleanly(
    px: ProgramProcess, up: Switching
) -> None:
    p = px
    tunnel_works(p, up)
    baseline = fds(p)
    since = len(p.records())
    before = switched(p)
    seed = int.from_bytes(os.urandom(4), "big")
    rnd = random.Random(seed)
    paths = []
    for _ in range(TRIES):
        path = new_path("race")
        paths.append(path)
        answer_after = rnd.uniform(0, 0.002)

        def plan(c: socket.socket, rest: bytes, wait: float = answer_after) -> None:
            time.sleep(wait)  # the upstream's think time, randomised: not synchronisation
            c.sendall(SWITCH)
            drain(c)

        arrived = up.expect(path, plan)
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)  # type: ignore[attr-defined]
        s.sendall(upgrade(path))
        # Mostly once the upstream has the request (the 101 is on its way), sometimes
        # before: both orders of the reset and the 101 at the proxy.
        if rnd.random() < 0.85:
            assert arrived.wait(5), f"request {path} never reached the upstream (seed {seed})"
        time.sleep(rnd.uniform(0, 0.002))
        reset(s)
    settle(p, baseline)
    # every request the proxy counted as switched has its line (the rest ended while
    # the upstream was still being waited for, as any request whose client left)
    counted = int(switched(p) - before)
    got = logged(p, "race", counted)
    assert errors(p, since) == [], seed
    by_path = [r["path"] for r in got]
    assert len(by_path) == len(set(by_path)), f"a request logged twice (seed {seed})"
    assert set(by_path) <= set(paths)
    assert {r["status"] for r in got} <= {101}, got[:2]
    assert len(got) == counted, seed
    tunnel_works(p, up)
    assert errors(p, since) == []


def test_client_reset_mid_tunnel_while_the_upstream_writes(
    px: ProgramProcess, up: Switching
) -> None:
    p = px
    tunnel_works(p, up)
    baseline = fds(p)
    since = len(p.records())
    ended: list[str] = []

    def flood(c: socket.socket, rest: bytes) -> None:
        c.sendall(SWITCH)
        try:
            while True:
                c.sendall(b"x" * 16384)
        except OSError:
            ended.append("sent until the proxy closed")

    rnd = random.Random()
    paths = []
    for _ in range(TRIES // 3):
        path = new_path("flood")
        paths.append(path)
        up.expect(path, flood)
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)  # type: ignore[attr-defined]
        s.sendall(upgrade(path))
        want = rnd.randrange(1, 200_000)
        got = 0
        while got < want:
            data = s.recv(65536)
            assert data, "the tunnel ended before the client reset it"
            got += len(data)
        reset(s)
    wait_until(lambda: len(ended) == len(paths), 10, what="every upstream flood cut off")
    settle(p, baseline)
    got_lines = logged(p, "flood", len(paths))
    assert errors(p, since) == []
    assert sorted(r["path"] for r in got_lines) == sorted(paths)
    assert {r["status"] for r in got_lines} == {101}
    tunnel_works(p, up)


def test_upstream_reset_mid_tunnel_while_the_client_writes(
    px: ProgramProcess, up: Switching
) -> None:
    p = px
    tunnel_works(p, up)
    baseline = fds(p)
    since = len(p.records())
    rnd = random.Random()
    paths = []
    for _ in range(TRIES // 3):
        path = new_path("sink")
        paths.append(path)
        cut_at = rnd.randrange(1, 200_000)

        def sink(c: socket.socket, rest: bytes, cut_at: int = cut_at) -> None:
            c.sendall(SWITCH)
            n = len(rest)
            while n < cut_at:
                data = c.recv(65536)
                if not data:
                    return
                n += len(data)
            reset(c)

        up.expect(path, sink)
        with client(p) as s:
            s.sendall(upgrade(path))
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                data = s.recv(1)
                assert data, head
                head += data
            assert head.startswith(b"HTTP/1.1 101 ")
            # write until the proxy passes the upstream's end on (within the deadline)
            deadline = time.monotonic() + 10
            cut = False
            while time.monotonic() < deadline:
                try:
                    s.sendall(b"y" * 16384)
                except (ConnectionResetError, BrokenPipeError):  # not a timeout: the end
                    cut = True
                    break
            assert cut, "the client could write on after the upstream reset the tunnel"
    settle(p, baseline)
    got_lines = logged(p, "sink", len(paths))
    assert errors(p, since) == []
    assert sorted(r["path"] for r in got_lines) == sorted(paths)
    tunnel_works(p, up)


def test_upstream_half_close_as_the_client_resets(px: ProgramProcess, up: Switching) -> None:
    """The upstream ends its side (a FIN, passed on as a half-close) as the client
    resets: asyncio's write_eof() to a client that has just gone raises ENOTCONN."""
    p = px
    tunnel_works(p, up)
    baseline = fds(p)
    since = len(p.records())
    before = switched(p)
    seed = int.from_bytes(os.urandom(4), "big")
    rnd = random.Random(seed)
    paths = []
    for _ in range(TRIES):
        path = new_path("fin")
        paths.append(path)
        wait = rnd.uniform(0, 0.002)

        def fin(c: socket.socket, rest: bytes, wait: float = wait) -> None:
            c.sendall(SWITCH + b"bye")
            time.sleep(wait)  # randomised timing, not synchronisation
            c.shutdown(socket.SHUT_WR)
            drain(c)

        arrived = up.expect(path, fin)
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)  # type: ignore[attr-defined]
        s.sendall(upgrade(path))
        assert arrived.wait(5), f"request {path} never reached the upstream (seed {seed})"
        time.sleep(rnd.uniform(0, 0.002))
        reset(s)
    settle(p, baseline)
    counted = int(switched(p) - before)
    got = logged(p, "fin", counted)
    assert errors(p, since) == [], seed
    assert len({r["path"] for r in got}) == len(got) == counted <= len(paths)
    tunnel_works(p, up)


def test_reset_as_a_slow_path_response_arrives(px: ProgramProcess, up: Switching) -> None:
    """The same race on an ordinary response: a request with a body goes by the
    coroutine (relay()), which wrote the response head to a client already gone
    (under uvloop: RuntimeError, an error record, no access line)."""
    p = px
    baseline = fds(p)
    since = len(p.records())
    seed = int.from_bytes(os.urandom(4), "big")
    rnd = random.Random(seed)
    answered = 0
    for _ in range(TRIES):
        path = new_path("post")
        answer_after = rnd.uniform(0, 0.002)

        def plan(c: socket.socket, rest: bytes, wait: float = answer_after) -> None:
            time.sleep(wait)  # the upstream's think time, randomised: not synchronisation
            # Connection: close: this upstream serves one request a connection
            c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            drain(c)

        arrived = up.expect(path, plan)
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)  # type: ignore[attr-defined]
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi".encode())
        if arrived.wait(5):
            answered += 1
        time.sleep(rnd.uniform(0, 0.002))
        reset(s)
    assert answered == TRIES, seed
    settle(p, baseline)
    # every request that reached the upstream and got its answer has one line
    wait_until(
        lambda: p.metric("podkit_proxy_requests_total", missing=0.0, code="200") >= 1,
        5,
        what="a 200 counted",
    )
    got = lines(p, "post")
    by_path = [r["path"] for r in got]
    assert len(by_path) == len(set(by_path)), f"a request logged twice (seed {seed})"
    assert {r["status"] for r in got} <= {200}, got[:2]
    assert errors(p, since) == [], seed
    tunnel_works(p, up)
    assert errors(p, since) == []
