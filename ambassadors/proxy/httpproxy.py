"""HTTP mode: one coroutine per client connection, bodies pumped outside it.

Longer than the 600 lines a module should have, for one reason: ClientConn's
fast path (served from the sockets' callbacks) and its coroutine path share
per-connection state and hand requests to each other mid-flight (one
`Exchange` per request carries what both need, to its access-log line), and
reading both in one place is what keeps them behaving the same. What is not
that moved out: the retry decision (retries.py), credentials (credentials.py,
oauth2.py), settings (settings.py), the access log's batching (accesslog.py),
head parsing and its caches (http1.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from bisect import bisect_left
from typing import Any, Final, NamedTuple

from podkit.aio import spawn
from podkit.httpclient import HTTPClientError, host_header, read_head
from podkit.logs import where
from podkit.retry import Backoff

from .accesslog import ACCESS_LOG as ACCESS_LOG  # tcp.py imports it from here
from .accesslog import json_str, seconds_txt
from .credentials import Injector
from .http1 import (
    BODY_CHUNKED,
    BODY_EOF,
    BODY_NONE,
    FLOOD,
    MAX_INTERIM,
    ChunkedFramer,
    ClientGone,
    Conn,
    Cork,
    DeadlineExceeded,
    EofFramer,
    LengthFramer,
    ProtocolError,
    Pump,
    Request,
    RequestCache,
    RequestRules,
    Response,
    UpstreamGone,
    local_reply,
    parse_request,
    parse_response,
    splice,
)
from .listener import BaseListener, clock
from .retries import should_retry
from .settings import Settings
from .tls_in import XFCC
from .upstream import BUCKETS, ConnectFailure, Overflow, Upstream

log = logging.getLogger("podkit.proxy")

IDLE: Final = 0
HEAD: Final = 1
BUSY: Final = 2
TUNNEL: Final = 3
IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"))  # TRACE: refused
MAX_RESPONSE_HEAD: Final = 64 * 1024
# Methods whose response may echo the request, credentials included (RFC 9110 9.3.8;
# TRACK is IIS's TRACE). Refused whatever their case, as some servers ignore it: 405,
# as nginx answers TRACE.
ECHO_METHODS: Final = frozenset((b"TRACE", b"TRACK"))


class ClientBodyError(Exception):
    """The client's request body was malformed or too large while it streamed."""

    def __init__(self, err: ProtocolError) -> None:
        super().__init__(err.reason)
        self.err = err


class OwnedPump(Pump):
    """A pump that tells the client connection it serves when it ends."""

    __slots__ = ("owner",)

    def __init__(self, src: Conn, dst: Conn, framer: Any, owner: ClientConn) -> None:
        super().__init__(src, dst, framer, clock.now)
        self.owner = owner

    def feed(self, data: bytes) -> None:
        self.last = clock.now
        Pump.feed(self, data)

    def fail(self, exc: BaseException) -> None:
        first = not self.done.done()
        Pump.fail(self, exc)
        if first:
            self.owner.pump_failed(self, exc)

    def finish(self) -> None:
        first = not self.done.done()
        Pump.finish(self)
        if first:
            self.owner.pump_finished(self)


class DechunkPump(OwnedPump):
    """A chunked response for an HTTP/1.0 client, which cannot parse chunked: pass on
    only the chunk data; the end of the connection marks the end of the body."""

    __slots__ = ()

    def feed(self, data: bytes) -> None:
        self.last = clock.now
        if self.done.done():
            self.src.buf += data
            return
        framer = self.framer
        assert isinstance(framer, ChunkedFramer)
        out: list[bytes] = []
        framer.out = out
        try:
            n = framer.feed(data)
        except ProtocolError as exc:
            self.fail(exc)
            return
        finally:
            framer.out = None
        dst = self.dst
        if out:
            if dst.closed:
                self.fail(UpstreamGone("destination closed"))
                return
            payload = b"".join(out)
            dst.transport.write(payload)
            self.nbytes += len(payload)
        if framer.done:
            self.finish()
            if n < len(data):
                self.src.buf += data[n:]
                self.src.wake()


# The end of a response head for the client, by [HTTP minor version][keep-alive]: an
# HTTP/1.0 client keeps the connection only when told, an HTTP/1.1 one unless told.
_TAILS: Final[tuple[tuple[bytes, ...], ...]] = (  # any length: kept one object (see BUCKETS)
    (b"\r\nConnection: close\r\n\r\n", b"\r\nConnection: keep-alive\r\n\r\n"),
    (b"\r\nConnection: close\r\n\r\n", b"\r\n\r\n"),
)
_HOST_LINE: Final = re.compile(rb"\r\nhost:[^\r]*", re.I)
# a client that sent this waits for the upstream's 100 before its body: never buffered
_EXPECT: Final = re.compile(rb"\r\nexpect:[ \t]*100-continue", re.I)
_FRAMING: Final = re.compile(rb"\r\n(?:content-length|transfer-encoding):[^\r]*", re.I)


def fast_request(req: Request) -> bool:
    """A head the fast path may serve: no body, no upgrade, an origin-form target, and
    none of the methods the slow path refuses."""
    return not (
        req.body_len
        or req.chunked
        or req.upgrade is not None
        or req.target[0] != 47
        or req.method == b"CONNECT"
        or req.method.upper() in ECHO_METHODS
    )


# A line's fields from the upstream to the first duration's value, for an answer
# the proxy made itself (Upstream.log_upstream otherwise).
_NO_UPSTREAM: Final = ', "upstream": null, "duration_seconds": '


class Exchange:
    """One request, from its head to its access-log line: what the fast path sets up,
    what the coroutine's tries share (`begin`), and what the log line reports."""

    __slots__ = (
        "body",
        "cred_gen",
        "deadline",
        "head_out",
        "idempotent",
        "interim",
        "made_id",
        "replayed",
        "req",
        "retries",
        "rid",
        "sent",
        "stream",
        "t0",
        "tried",
        "uc",
        "up",
    )

    def __init__(
        self, req: Request | None, t0: float, rid: bytes | None, head_out: bytes, made_id: bool
    ) -> None:
        self.req = req  # None: refused before its head could be parsed
        self.t0 = t0
        self.rid = rid
        self.made_id = made_id  # the id is the proxy's: hex, nothing to escape in the log
        self.head_out = head_out  # the head for the upstream, minus the per-upstream lines
        self.sent = 0  # request bytes passed on to the upstream that answered
        self.up: Upstream | None = None  # the upstream of the latest try
        self.uc: Any = None  # the fast path's upstream connection
        self.cred_gen = 0  # the credentials' generation its latest try was sent with
        self.interim = 0  # 1xx responses passed on so far (fast path)
        self.retries = 0

    def begin(self, body: bytes, stream: bool) -> Exchange:
        """What only the coroutine's tries need (the fast path never retries)."""
        self.sent = 0
        self.body = body  # the whole body when it was buffered (replayable), else b""
        self.stream = stream  # the body is pumped from the client while the try runs
        self.deadline = 0.0  # set by forward(): t0 + --timeout
        req = self.req
        self.idempotent = req is not None and req.method in IDEMPOTENT
        self.tried: list[Upstream] = []
        self.replayed = False  # replayed once already with renewed credentials
        return self


class Retry(NamedTuple):
    """Hand-over from the fast path: its try failed (or got a 401) before any byte
    reached the client; the coroutine decides what next."""

    x: Exchange
    kind: str
    message: str


class Relay(NamedTuple):
    """Hand-over from the fast path: the response head is in, its body still to come."""

    x: Exchange
    resp: Response
    t_head: float


class HttpListener(BaseListener):
    kind = "http"

    def __init__(self, s: Settings) -> None:
        super().__init__(s)
        self.creds = (
            Injector(s, self.refresh_suffixes, self.report) if s.any_credentials() else None
        )
        # requests go by the fast path unless credentials are missing or made per request
        self.fast_ok = self.creds is None
        self.renewals: set[asyncio.Task[None]] = set()
        drop = [n.encode().lower() for n, _ in s.set_headers]
        drop.append(XFCC)  # only the proxy says who the client is (tls_in.py)
        if self.creds is not None:
            drop += self.creds.drop
        self.rules = RequestRules(drop, s.hash_header, s.preserve_host, s.max_headers)
        self.active = 0
        self.retrying = 0
        self.local_requests = 0
        self.id_prefix = os.urandom(6).hex().encode() + b"-"
        self.id_counter = 0
        self.authorities: set[bytes] = set()
        for t in s.targets:  # as configured: a dns+ target by its name
            host = f"[{t.host}]" if ":" in t.host else t.host
            self.authorities.add(f"{host}:{t.port}".lower().encode())
            if t.port == (443 if t.tls else 80):
                self.authorities.add(host.lower().encode())
        self.tunnels = 0
        self.head_cache = RequestCache(self.rules, fast_request)  # parsed heads (fast path)
        self.cork = Cork(self.loop)
        # What the fast path reads of the settings on every request, as this compiled
        # class's own fields: Settings is an interpreted dataclass, and each read of
        # one of its fields is a dictionary lookup (~180 instructions).
        self.max_header_bytes = s.max_header_bytes
        self.max_requests = s.max_requests
        self.access_log = s.access_log
        self.preserve_host = s.preserve_host
        self.fast_timeout = min(s.timeout, s.try_timeout) if s.try_timeout else s.timeout

    def protocol_factory(self) -> Any:
        return lambda: ClientConn(self)

    async def start(self) -> None:
        if self.creds is not None:
            self.creds.load()  # a usage error at start, naming the flag and file
        await super().start()
        if self.creds is not None:
            await self.creds.start()

    async def close(self) -> None:
        if self.creds is not None:
            await self.creds.close()
        for t in list(self.renewals):
            t.cancel()
        await super().close()

    def maintain(self) -> None:
        super().maintain()
        if self.creds is not None:
            self.creds.tick()

    def refresh_suffixes(self) -> None:
        """Precompute the header lines added to every upstream request (called again
        whenever a credential changes)."""
        extra = b"".join(f"{n}: {v}\r\n".encode() for n, v in self.s.set_headers)
        creds = self.creds
        if creds is not None:
            extra += creds.lines
            self.fast_ok = creds.blocked is None and creds.per_request is None
        for u in self.upstreams:
            t = u.target
            scheme = "https" if t.tls else "http"
            u.host_line = f"Host: {host_header(t.server_name, t.port, scheme)}\r\n".encode()
            u.suffix = extra if self.s.preserve_host else u.host_line + extra

    def next_id(self) -> bytes:
        self.id_counter += 1
        return self.id_prefix + b"%x" % self.id_counter

    def origin_form(self, target: bytes) -> tuple[bytes, bytes] | None:
        """(path, authority) of an absolute-form target naming a configured upstream."""
        low = target[:8].lower()
        if low.startswith(b"http://"):
            rest = target[7:]
        elif low.startswith(b"https://"):
            rest = target[8:]
        else:
            return None
        end = len(rest)
        for sep in (b"/", b"?"):
            i = rest.find(sep)
            if 0 <= i < end:
                end = i
        authority = rest[:end].lower()
        if authority.find(b"@") >= 0 or authority not in self.authorities:
            return None
        path = rest[end:]
        if not path.startswith(b"/"):
            path = b"/" + path
        return path, authority

    def busy(self) -> int:
        return sum(1 for c in self.conns if c.state != IDLE)

    def stop_accepting(self) -> None:
        super().stop_accepting()
        for c in list(self.conns):
            if c.state == IDLE:
                c.close()

    def sweep(self, now: float) -> None:
        s = self.s
        idle_timeout = s.idle_timeout
        for c in list(self.conns):
            st = c.state
            if st == IDLE:
                if now - c.mark > idle_timeout or self.draining:
                    c.close()
            elif st == HEAD:
                if now - c.mark > s.header_timeout:
                    c.cut_slow_client()
            elif st == TUNNEL:
                a, b = c.req_pump, c.resp_pump
                if a is not None and b is not None and now - max(a.last, b.last) > idle_timeout:
                    a.fail(DeadlineExceeded("idle tunnel"))
                    b.fail(DeadlineExceeded("idle tunnel"))
            else:
                if c.fast is not None and now >= c.wait_deadline:
                    c.fast_fail("timeout", "")
                    continue
                wf = c.wait_fut
                if (
                    wf is not None
                    and c.wait_deadline
                    and now >= c.wait_deadline
                    and not wf.done()
                    and not c.uploading
                ):
                    wf.set_exception(DeadlineExceeded("timeout"))
                for p in (c.req_pump, c.resp_pump):
                    if p is not None and not p.done.done() and now - p.last > idle_timeout:
                        p.fail(DeadlineExceeded("idle timeout while streaming"))

    def observe_local(self, code: int, seconds: float) -> None:
        self.local_requests += 1
        self.local_codes[code] = self.local_codes.get(code, 0) + 1
        self.local_sum += seconds
        self.local_buckets[bisect_left(BUCKETS, seconds)] += 1

    async def check(self, u: Upstream) -> tuple[bool, str]:
        # The probe is a request like the app's: the upstream's Host even under
        # --preserve-host (there is no client Host to keep, and an HTTP/1.1 request
        # without one is a 400), and the credentials, a per-request JWT included, so
        # a health path behind auth does not mark every upstream unhealthy.
        lines = u.host_line + u.suffix if self.s.preserve_host else u.suffix
        creds = self.creds
        if creds is not None and creds.per_request is not None:
            try:
                lines += creds.per_request()
            except (OSError, ValueError) as exc:
                return False, f"health check: no credentials: {exc}"
        reader, writer = await self._open(u)
        try:
            path = self.s.health_path or "/"
            writer.write(
                f"GET {path} HTTP/1.1\r\nUser-Agent: podkit-proxy health check\r\n"
                "Connection: close\r\n".encode()
                + lines
                + b"\r\n"
            )
            code, _ = await read_head(reader)
        except HTTPClientError as exc:
            return False, f"health check: {exc}"
        finally:
            writer.close()
        if 200 <= code < 300:
            return True, ""
        return False, f"health check answered {code}"


class ClientConn(Conn):
    """A connection from the app; `serve()` handles its requests one after another."""

    def __init__(self, lst: HttpListener) -> None:
        super().__init__()
        self.lst = lst
        self.state = IDLE
        self.mark = clock.now
        self.wait_fut: asyncio.Future[Any] | None = None
        self.wait_deadline = 0.0
        self.req_pump: OwnedPump | None = None
        self.resp_pump: OwnedPump | None = None
        self.uploading = False
        self.peer = b""
        self.xff_line = b""
        self.log_tail = ', "client": ""}\n'  # every access line's end: see connection_made
        self.fast: Exchange | None = None  # the request the fast path has in flight
        self.picked: Upstream | None = None  # the fast path's choice, for the slow path
        self.handover = None  # a Retry or a Relay (declared in Conn)
        # a body buffered for a replay after a 401 must fit, or reading would pause
        replay = lst.s.replay_max_body if lst.creds is not None else 0
        self.flood_limit = lst.s.max_header_bytes + 65536 + replay
        self.identity = b""  # X-Forwarded-Client-Cert line, with mTLS
        self.forwarded = b""  # see connection_made

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        identity = self.lst.client_identity(transport)
        if identity is None:
            return  # refused by the mTLS allow-lists: answered 403 and closing
        self.identity = identity
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b"unknown"
        self.xff_line = b"\r\nX-Forwarded-For: " + self.peer
        # the lines every request gets when the app sent no X-Forwarded-* of its own
        self.forwarded = self.xff_line + b"\r\nX-Forwarded-Proto: " + self.lst.scheme + identity
        self.log_tail = f', "client": "{self.peer.decode()}"}}\n'
        self.lst.conns.add(self)
        spawn(self.serve(), self.lst.loop)  # held until it ends: the loop's hold is weak

    def data_received(self, data: bytes) -> None:
        if self.state == IDLE:
            self.state = HEAD
            self.mark = clock.now
            if (
                data[-4:] == b"\r\n\r\n"
                and not self.buf
                and self.waiter is not None
                and self.try_fast(data)
            ):
                return
        elif self.fast is not None:
            # a pipelined request waits until the fast path is done with this one
            self.buf += data
            if len(self.buf) > self.flood_limit:
                self.pause(FLOOD)
            return
        Conn.data_received(self, data)

    def eof_received(self) -> bool:
        if self.fast is not None:
            self.eof = True  # answer the request in flight first; then close
            return True
        return Conn.eof_received(self)

    def connection_lost(self, exc: Exception | None) -> None:
        x = self.fast
        if x is not None:
            self.fast = None
            x.uc.owner = None
            x.uc.abort()
            if x.up is not None:
                x.up.active -= 1
            self.lst.active -= 1
        Conn.connection_lost(self, exc)
        self.lst.conns.discard(self)
        wf = self.wait_fut
        if wf is not None and not wf.done():
            wf.set_exception(ClientGone())

    def pump_failed(self, pump: OwnedPump, exc: BaseException) -> None:
        wf = self.wait_fut
        if pump is self.req_pump:
            self.uploading = False
            if wf is not None and not wf.done():
                if isinstance(exc, ProtocolError):
                    wf.set_exception(ClientBodyError(exc))
                elif self.closed or self.eof:
                    # The client ended its side in the middle of the body: the upstream
                    # would wait for the rest until the timeout, and count it a failure.
                    wf.set_exception(ClientGone())

    def pump_finished(self, pump: OwnedPump) -> None:
        if pump is self.req_pump and self.uploading:
            self.uploading = False
            # The response deadline counts from when the request was fully sent.
            s = self.lst.s
            self.wait_deadline = max(self.wait_deadline, clock.now + (s.try_timeout or s.timeout))

    def cut_slow_client(self) -> None:
        self.lst.warn(
            "client too slow sending headers; closing",
            extra={"client": self.peer.decode(), "header_timeout": self.lst.s.header_timeout},
        )
        if not self.closed:
            self.transport.write(
                local_reply(408, "header-timeout", "request headers not received in time")
            )
        self.close()

    def close(self) -> None:
        self.lst.cork.flush()  # a response held back goes out before the FIN
        Conn.close(self)

    def reply(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    # -- the fast path ----------------------------------------------------------------
    #
    # A request that arrives whole, without a body, for an upstream with an idle
    # pooled connection, is served from the two data_received callbacks: no task
    # switch, no future. Anything else (a body, a retry, a streamed response) is
    # handed to the connection's coroutine, which continues where this left off.

    def try_fast(self, data: bytes) -> bool:
        lst = self.lst
        head = data[:-4]
        cache = lst.head_cache
        # the common case first: this head was seen before (typed, or mypyc would treat
        # the cache's Any as an object and read every field by a dictionary lookup)
        req: Request | None = cache.get(head)
        given = None
        if req is None:
            # A cached head was parsed whole by this listener: within the size limit,
            # and one head (no empty line, which a second, pipelined one would add).
            # Only a new one is checked (find(), not `in`: see http1.SEARCH).
            if len(head) > lst.max_header_bytes or head.find(b"\r\n\r\n") >= 0:
                return False
            found = cache.find_new(head)
            if found is None:
                return False  # the coroutine parses it again and refuses it with the reason
            req, given = found
        if not lst.fast_ok:
            return False
        up = lst.balancer.pick(lst.now, lst.max_requests, req.hash_value, ())
        if up is None:
            return False
        uc = up.take_idle() if up.idle else None
        if uc is None:
            # The slow path serves this request on the upstream picked here: picking
            # again would advance round-robin twice, and an upstream without idle
            # connections (new, or back from ejection) would never be chosen.
            self.picked = up
            return False
        x = self.fast = self.exchange(req, lst.time(), 0, given)
        x.sent = len(x.head_out)
        x.up = up
        x.uc = uc
        creds = lst.creds
        if creds is not None:
            x.cred_gen = creds.generation
        self.state = BUSY
        lst.active += 1
        up.active += 1
        self.wait_deadline = x.t0 + lst.fast_timeout
        uc.owner = self
        if req.host is None and lst.preserve_host:
            lst.cork.write(uc.transport, (x.head_out, up.host_line, up.suffix, b"\r\n"))
        else:
            lst.cork.write(uc.transport, (x.head_out, up.suffix, b"\r\n"))
        return True

    def fast_response(self, uc: Conn, data: bytes) -> None:
        """The upstream sent bytes for a fast-path request."""
        ubuf = uc.buf
        if ubuf:
            # the rest of a head: look only at the new bytes for its end (a head
            # dripping in a byte at a time must not cost O(n^2))
            start = max(0, len(ubuf) - 3)
            ubuf += data
            if ubuf.find(b"\r\n\r\n", start) < 0:
                if len(ubuf) > MAX_RESPONSE_HEAD:
                    self.fast_fail("bad-response", "response head too large")
                return
            data = bytes(ubuf)
            ubuf.clear()
        x = self.fast
        assert x is not None and x.req is not None and x.up is not None
        req = x.req
        up = x.up
        lst = self.lst
        s = lst.s
        cache = up.head_cache if req.method != b"HEAD" else None
        while True:  # one pass per head: 1xx heads (at most MAX_INTERIM), then the final one
            i = data.find(b"\r\n\r\n")
            if i < 0:
                if len(data) > MAX_RESPONSE_HEAD:
                    self.fast_fail("bad-response", "response head too large")
                else:
                    uc.buf += data
                return
            key = data[:i]
            resp: Response | None = cache.get(key) if cache is not None else None
            if resp is None:
                try:
                    resp = parse_response(key, req.method == b"HEAD", s.max_headers)
                except ProtocolError as exc:
                    self.fast_fail("bad-response", exc.reason)
                    return
                if cache is not None:
                    cache.put(key, resp)
            rest = data[i + 4 :]
            if resp.status >= 200:
                break
            if resp.status == 101:
                self.fast_fail("bad-response", "unrequested 101 from upstream")
                return
            x.interim += 1
            if x.interim > MAX_INTERIM:
                self.fast_fail("bad-response", f"more than {MAX_INTERIM} 1xx responses")
                return
            if req.minor:  # RFC 9110 15.2: never forward a 1xx to an HTTP/1.0 client
                self.reply(resp.head + b"\r\n\r\n")
            if not rest:
                return
            data = rest
        status = resp.status
        if status >= 500:
            up.failure(lst.now, str(status))
            if status in s.retry_statuses and should_retry(
                s,
                str(status),
                idempotent=req.method in IDEMPOTENT,
                streamed=False,
                retries=0,
                retrying=lst.retrying,
                active=lst.active,
            ):
                self.fast_fail(str(status), f"{up.label} answered {status}", counted=True)
                return
        else:
            up.consecutive_failures = 0
            if status == 401 and lst.creds is not None:
                # the credentials were refused: renew them and replay (no body to keep)
                self.fast_fail("unauthorized", f"{up.label} answered 401", counted=True)
                return
        blen = resp.body
        if blen in (BODY_CHUNKED, BODY_EOF) or (blen > 0 and len(rest) < blen):
            # a body still to come: the coroutine pumps it
            uc.buf += rest
            self.fast = None
            uc.owner = None
            self.handover = Relay(x, resp, lst.time())
            self.wake()
            return
        keep = req.keep_alive and not lst.draining and not self.eof and not resp.close_client
        tail = _TAILS[req.minor][keep]
        out_head = resp.head + tail
        if blen > 0:
            lst.cork.write(self.transport, (out_head, rest if len(rest) == blen else rest[:blen]))
            leftover = len(rest) > blen
        else:
            blen = 0
            lst.cork.write(self.transport, (out_head,))
            leftover = bool(rest)
        self.fast = None
        uc.owner = None
        up.active -= 1
        lst.active -= 1
        if resp.keep_alive and not leftover:
            up.release(uc, lst.now)
        else:
            uc.close()
        now = lst.time()
        dt = now - x.t0
        up.observe(status, dt, now)
        if lst.access_log:
            self.access(x, now, status, dt, dt, len(out_head) + blen)
        if not keep:
            self.close()
            return
        self.mark = clock.now
        if self.buf:
            self.state = HEAD
            self.wake()  # the coroutine reads the pipelined request
        else:
            self.state = IDLE
            if self.paused:
                self.resume(FLOOD)

    def fast_fail(self, kind: str, message: str, counted: bool = False) -> None:
        """The fast path's try failed before anything reached the client: hand it over."""
        x = self.fast
        if x is None:
            return
        self.fast = None
        up, uc = x.up, x.uc
        assert up is not None
        uc.owner = None
        if kind == "reset" and uc.reused and not uc.buf:
            kind = "stale"  # a pooled connection the upstream closed as we wrote to it
        uc.abort()
        up.active -= 1
        if not counted and kind != "stale":
            up.failure(self.lst.now, kind)
        if kind in ("reset", "stale"):
            message = f"{up.label} closed the connection"
        elif kind == "timeout":
            message = f"{up.label} did not answer in time"
        self.handover = Retry(x, kind, message)
        self.wake()

    async def take_over(self, h: Retry | Relay) -> bool:
        x = h.x.begin(b"", False)
        if isinstance(h, Retry):
            return await self.forward(x, failed=h)
        up, uc = x.up, x.uc
        assert up is not None
        x.uc = None
        try:
            if self.closed:  # the client left between the hand-over and now
                uc.abort()
                return False
            return await self.relay(x, up, uc, h.resp, None, x.t0, h.t_head)
        finally:
            up.active -= 1
            self.lst.active -= 1

    # -- the request loop ------------------------------------------------------------

    async def serve(self) -> None:
        lst = self.lst
        limit = lst.s.max_header_bytes
        try:
            while not self.closed:
                if self.buf:
                    self.state = HEAD
                else:
                    if lst.draining:
                        break
                    self.state = IDLE
                self.mark = clock.now
                try:
                    head = await self.read_head(limit)
                except ProtocolError as exc:
                    self.refuse(exc.status, "bad-request", exc.reason, 0.0)
                    break
                except UpstreamGone:
                    break
                h = self.handover
                if h is not None:
                    self.handover = None
                    self.state = BUSY
                    if not await self.take_over(h):
                        break
                    continue
                if head is None:
                    break
                self.state = BUSY
                if not await self.handle(head):
                    break
        except Exception as unforeseen:  # not `exc`: see test_proxy_compiled_names.py
            # Not foreseen, and the client chose the bytes (or the moment it hung up):
            # one record per 10 s per kind and place (lst.errors), not a traceback per connection.
            kind, place = type(unforeseen).__name__, where(unforeseen)
            self.lst.errors.log(
                f"request handling failed {kind} {place}",
                logging.ERROR,
                "request handling failed",
                client=self.peer.decode(),
                error=f"{kind}: {unforeseen}"[:300],
                where=place,
            )
        finally:
            self.req_pump = self.resp_pump = None
            self.close()

    def refuse(
        self, status: int, why: str, message: str, t0: float, req: Request | None = None
    ) -> bool:
        """Answer locally and close the connection (the request stream is not trustworthy)."""
        self.reply(local_reply(status, why, message))
        lst = self.lst
        end = lst.time()
        dt = end - t0 if t0 else 0.0
        lst.observe_local(status, dt)
        if lst.s.access_log:
            self.access(Exchange(req, t0, None, b"", False), end, status, dt, 0.0, 0, why)
        return False

    def access(
        self,
        x: Exchange,
        end: float,
        status: int,
        took: float,
        upstream_took: float,
        bytes_out: int,
        why: str | None = None,
    ) -> None:
        """The request's access-log line: who and what from the exchange, the outcome
        from the arguments (`end`: lst.time() when it ended). Only a refused
        request's line has `why` (proxy_reason)."""
        # Formatted by hand: json.dumps of a dict per request costs more than the proxying.
        # Only the client-supplied strings need escaping; the rest is numbers and tokens.
        req = x.req
        head: str | None = '"method": "", "path": null'  # refused before it parsed
        if req is not None:
            head = req.log_head  # a cached head's fields are made once, not per request
            if head is None:
                method = req.method.decode("latin-1")
                head = req.log_head = f'"method": "{method}", "path": {json_str(req.target)}'
        up = x.up
        rid = x.rid
        # the id's field in three pieces of the line, so that it is not a string of its own
        if not rid:
            rid_open, rid_txt, rid_close = ', "request_id": null', "", ""
        elif x.made_id:  # made by the proxy: hex, nothing to escape
            rid_open, rid_txt, rid_close = ', "request_id": "', rid.decode(), '"'
        else:
            rid_open, rid_txt, rid_close = ', "request_id": ', json_str(rid), ""
        took_txt = seconds_txt(took)
        # the fast path's two times are one (formatting a time is a good part of a line)
        up_txt = took_txt if upstream_took == took else seconds_txt(upstream_took)
        retries = x.retries
        tail = self.log_tail if why is None else f', "proxy_reason": "{why}"{self.log_tail}'
        log = ACCESS_LOG
        # one string, the line's start and newline included: each piece is copied once
        log.append(
            f'{log.start_for(end)}{head}, "status": {status}'
            f'{up.log_upstream if up else _NO_UPSTREAM}{took_txt}, "upstream_seconds": {up_txt}, '
            f'"bytes_in": {x.sent if up else 0}, "bytes_out": {bytes_out}, '
            f'"retries": {"0" if retries == 0 else str(retries)}'
            f"{rid_open}{rid_txt}{rid_close}{tail}"
        )

    async def handle(self, head: bytes) -> bool:
        """Serve one request; False when the client connection must close."""
        lst = self.lst
        s = lst.s
        t0 = lst.time()
        picked, self.picked = self.picked, None  # only for the request it was made for
        try:
            req = parse_request(head, lst.rules)
        except ProtocolError as exc:
            lst.warn(
                "malformed request refused",
                extra={"client": self.peer.decode(), "reason": exc.reason},
            )
            return self.refuse(exc.status, "bad-request", exc.reason, t0)
        method = req.method
        if method == b"CONNECT":
            return self.refuse(405, "connect-refused", "CONNECT is not supported", t0, req)
        if method.upper() in ECHO_METHODS:
            # the response would echo the request, with the credentials the proxy adds
            return self.refuse(405, "trace-refused", f"{method.decode()} is not supported", t0, req)
        if req.target[0] != 47 and not (req.target == b"*" and method == b"OPTIONS"):
            origin = lst.origin_form(req.target)
            if origin is None:
                return self.refuse(
                    403,
                    "foreign-host",
                    "absolute-form target names no configured upstream",
                    t0,
                    req,
                )
            req.target, authority = origin  # req is this request's own parse: not cached
            if lst.s.preserve_host:
                # RFC 9112 3.2.2: the target's authority replaces any Host header field
                req.kept = _HOST_LINE.sub(b"", req.kept) + b"\r\nHost: " + authority
                req.host = authority
        n = req.body_len
        body = b""
        stream = req.chunked
        if n > 0:
            if s.max_body_bytes is not None and n > s.max_body_bytes:
                return self.refuse(
                    413, "body-too-large", "request body over --max-body-bytes", t0, req
                )
            buf = self.buf
            if (
                len(buf) < n
                and lst.creds is not None
                and n <= s.replay_max_body
                and not _EXPECT.search(req.kept)
            ):
                # buffered whole, so that it can be replayed after a 401
                self.wait_deadline = t0 + s.timeout
                if not await self.read_body(n):
                    if self.closed or self.eof:
                        return False
                    return self.refuse(
                        408, "body-timeout", "request body not received in time", t0, req
                    )
            if len(buf) >= n:
                if len(buf) == n:
                    body = bytes(buf)
                    buf.clear()
                else:
                    body = bytes(buf[:n])
                    del buf[:n]
            else:
                stream = True
        x = self.exchange(req, t0, n, None).begin(body, stream)
        self.picked = picked
        return await self.forward(x)

    async def read_body(self, n: int) -> bool:
        """Wait until `n` body bytes are buffered; False when the client left or was too
        slow (the sweeper fails the wait at `wait_deadline`)."""
        buf = self.buf
        loop = self.lst.loop
        while len(buf) < n:
            if self.eof or self.closed:
                return False
            fut: asyncio.Future[None] = loop.create_future()
            self.waiter = self.wait_fut = fut
            try:
                await fut
            except (DeadlineExceeded, ClientGone, UpstreamGone):
                return False
            finally:
                self.wait_fut = None
        return True

    def exchange(self, req: Request, t0: float, n: int, given: bytes | None) -> Exchange:
        """The request's exchange, with the head for the upstream (minus the per-upstream
        lines) and its request id: the client's, the one the head cache took out of its
        head (`given`: passed on after the kept lines), or one the proxy makes."""
        rid = req.request_id
        made = False
        own = rid is not None  # the app's id line is among the kept ones
        if rid is None:
            if given is not None:
                rid = given
            else:
                rid = self.lst.next_id()
                made = True
        line = req.line_out  # a cached head's request line and kept lines, joined once
        if line is None:
            line = req.line_out = req.method + b" " + req.target + b" HTTP/1.1" + req.kept
        if not (n or req.chunked) and req.upgrade is None and req.xff is None and req.xfp is None:
            # the fast path's usual request: one join, not a dozen concatenations
            if own:
                return Exchange(req, t0, rid, line + self.forwarded + b"\r\n", made)
            head = b"".join((line, b"\r\nX-Request-Id: ", rid, self.forwarded, b"\r\n"))
            return Exchange(req, t0, rid, head, made)
        extra = b"" if own else b"\r\nX-Request-Id: " + rid
        if n > 0:
            extra += b"\r\nContent-Length: %d" % n
        elif req.chunked:
            extra += b"\r\nTransfer-Encoding: chunked"
        if req.xff is None:
            extra += self.xff_line
        else:
            extra += b"\r\nX-Forwarded-For: " + req.xff + b", " + self.peer
        if req.xfp is None:
            extra += b"\r\nX-Forwarded-Proto: " + self.lst.scheme
        else:
            extra += b"\r\nX-Forwarded-Proto: " + req.xfp + b", " + self.lst.scheme
        extra += self.identity
        if req.upgrade is not None:
            extra += b"\r\nConnection: upgrade\r\nUpgrade: " + req.upgrade
        return Exchange(req, t0, rid, line + extra + b"\r\n", made)

    async def forward(self, x: Exchange, failed: Retry | None = None) -> bool:
        """Try upstreams until one answers or retrying is no longer allowed."""
        lst = self.lst
        s = lst.s
        loop = lst.loop
        if failed is None:
            lst.active += 1
        x.deadline = x.t0 + s.timeout
        backoff: Backoff | None = None
        result: bool | tuple[str, str]
        holding = False  # a retry slot of the budget, from the decision to the try's end
        stale_retried = False
        try:
            while True:
                if failed is not None:  # the fast path's try failed: continue from there
                    assert x.up is not None
                    x.tried.append(x.up)
                    result = (failed.kind, failed.message)
                    failed = None
                else:
                    try:
                        result = await self.try_one(x, holding)
                    finally:
                        if holding:
                            holding = False
                            lst.retrying -= 1
                if isinstance(result, bool):
                    return result
                kind, message = result
                if kind == "no-upstream":
                    why, msg = lst.balancer.why_none(lst.now)
                    return self.refuse_local(x, 503, why, msg, keep=not x.stream)
                if kind == "no-credentials":
                    return self.refuse_local(x, 503, "credentials-unavailable", message)
                up = x.tried[-1]
                # a failure that may be retried: nothing has reached the client yet
                if kind == "client-gone":
                    return False
                if kind == "unauthorized":
                    # The upstream refused the credentials: renew them (one renewal for
                    # every request refused alike) and replay once, free of --retries.
                    x.replayed = True
                    assert lst.creds is not None
                    await lst.creds.renew_after_401(x.cred_gen, x.deadline - loop.time())
                    if self.closed:
                        return False
                    x.tried.pop()
                    continue
                if kind == "stale":
                    # A keep-alive connection the upstream closed while idle, before any
                    # response byte: the upstream is fine and never saw the request, so
                    # (like Go's net/http) replay it once, free of --retries and the budget,
                    # when that is safe: an idempotent method whose body we still hold.
                    if not stale_retried and x.idempotent and not x.stream and not self.closed:
                        stale_retried = True
                        x.tried.pop()
                        continue
                    kind = "reset"
                if self.closed or not should_retry(
                    s,
                    kind,
                    idempotent=x.idempotent,
                    streamed=x.stream,
                    retries=x.retries,
                    retrying=lst.retrying,
                    active=lst.active,
                ):
                    status = 504 if kind == "timeout" else 502
                    if kind == "overflow":
                        status = 503
                    elif kind.isdigit():  # its response was dropped for a retry that then was not
                        status, kind = int(kind), "upstream-" + kind
                    return self.refuse_local(x, status, kind, message, up=up, keep=False)
                up.retries += 1
                x.retries += 1
                lst.retrying += 1
                holding = True
                if backoff is None:
                    backoff = Backoff(0.025, 0.25)
                delay = backoff.next()
                if loop.time() + delay >= x.deadline:
                    return self.refuse_local(
                        x, 504, "timeout", "no time left to retry", up=up, keep=False
                    )
                await asyncio.sleep(delay)
                if self.closed:
                    return False
        finally:
            lst.active -= 1
            if holding:
                lst.retrying -= 1

    async def try_one(self, x: Exchange, holding: bool) -> bool | tuple[str, str]:
        lst = self.lst
        s = lst.s
        creds = lst.creds
        if creds is not None and creds.blocked is not None:
            why = await creds.wait_usable(x.deadline - lst.loop.time())
            if why is not None:
                return "no-credentials", why
        up = self.picked
        if up is not None:
            self.picked = None
            if x.tried or not up.available(lst.now) or up.active >= s.max_requests:
                up = None
        if up is None:
            assert x.req is not None
            up = lst.balancer.pick(lst.now, s.max_requests, x.req.hash_value, x.tried)
        if up is None:
            return "no-upstream", ""
        x.tried.append(up)
        x.up = up
        up.active += 1
        try:
            return await self.attempt(x, up, holding)
        finally:
            up.active -= 1

    def refuse_local(
        self,
        x: Exchange,
        status: int,
        why: str,
        message: str,
        up: Upstream | None = None,
        keep: bool = True,
    ) -> bool:
        lst = self.lst
        req = x.req
        assert req is not None
        keep = keep and req.keep_alive and not lst.draining and not self.closed
        self.reply(local_reply(status, why, message, close=not keep))
        end = lst.time()
        dt = end - x.t0
        x.up = up
        if up is not None:
            up.observe(status, dt)
        else:
            lst.observe_local(status, dt)
        if lst.s.access_log:
            self.access(x, end, status, dt, 0.0, 0, why)
        return keep

    async def attempt(self, x: Exchange, up: Upstream, holding: bool) -> bool | tuple[str, str]:
        """One try: relays the response and returns keep-alive, or returns a failure.
        `holding`: this try is a retry and holds a slot of the retry budget."""
        lst = self.lst
        s = lst.s
        req = x.req
        assert req is not None
        creds = lst.creds
        minted = b""
        if creds is not None:
            x.cred_gen = creds.generation
            if creds.per_request is not None:
                try:
                    minted = creds.per_request()
                except (OSError, ValueError) as exc:
                    return "no-credentials", f"cannot sign a JWT: {exc}"
        t1 = lst.time()
        self.wait_deadline = min(x.deadline, t1 + s.try_timeout) if s.try_timeout else x.deadline
        try:
            uc = await up.acquire(self, lst.ssl_ctx, lst.now)
        except Overflow as exc:
            return "overflow", str(exc)
        except ConnectFailure as exc:
            up.failure(lst.now, "connect-failure", str(exc))
            lst.warn("cannot connect to upstream", extra={"upstream": up.label, "error": str(exc)})
            return "connect-failure", f"cannot connect to {up.label}: {exc}"
        except DeadlineExceeded:
            return "timeout", f"no connection to {up.label} in time"
        except ClientGone:
            return "client-gone", ""
        if self.closed:
            up.release(uc, lst.now)
            return "client-gone", ""
        uc.flood_limit = MAX_RESPONSE_HEAD + 65536
        tr = uc.transport
        suffix = (
            up.suffix if req.host is not None or not s.preserve_host else up.host_line + up.suffix
        )
        if minted:
            suffix += minted
        if x.body:
            tr.writelines((x.head_out, suffix, b"\r\n", x.body))
        else:
            tr.writelines((x.head_out, suffix, b"\r\n"))
        req_pump: OwnedPump | None = None
        if x.stream:
            framer: Any = (
                ChunkedFramer(s.max_body_bytes, lst.rules.no_trailer)
                if req.chunked
                else LengthFramer(req.body_len)
            )
            self.uploading = True
            req_pump = self.req_pump = OwnedPump(self, uc, framer, self)
            req_pump.start()
            err = req_pump.done.result() if req_pump.done.done() else None
            if isinstance(err, ProtocolError):  # the buffered part was already bad
                self.stop_upload(req_pump)
                uc.abort()
                why = "body-too-large" if err.status == 413 else "bad-request"
                self.refuse_local(x, err.status, why, err.reason, keep=False)
                return False
        got_1xx = 0
        try:
            while True:
                rhead = await uc.read_head(MAX_RESPONSE_HEAD, self)
                if rhead is None:
                    raise UpstreamGone("upstream closed before responding")
                resp = parse_response(rhead, req.method == b"HEAD", s.max_headers)
                if resp.status < 200 and resp.status != 101:
                    got_1xx += 1
                    if got_1xx > MAX_INTERIM:
                        raise ProtocolError(502, f"more than {MAX_INTERIM} 1xx responses")
                    if req.minor:  # 100 Continue and friends; HTTP/1.0 knows none
                        self.reply(resp.head + b"\r\n\r\n")
                    continue
                break
        except UpstreamGone as exc:
            self.stop_upload(req_pump)
            uc.abort()
            if uc.reused and not uc.buf and not got_1xx:
                return "stale", f"{up.label} closed the connection: {exc}"
            up.failure(lst.now, "reset")
            return "reset", f"{up.label} closed the connection: {exc}"
        except DeadlineExceeded:
            self.stop_upload(req_pump)
            uc.abort()
            up.failure(lst.now, "timeout")
            return "timeout", f"{up.label} did not answer in time"
        except ProtocolError as exc:
            self.stop_upload(req_pump)
            uc.abort()
            up.failure(lst.now, "bad-response")
            self.refuse_local(x, 502, "bad-response", exc.reason, up=up, keep=False)
            return False
        except ClientBodyError as exc:
            self.stop_upload(req_pump)
            uc.abort()
            why = "body-too-large" if exc.err.status == 413 else "bad-request"
            self.refuse_local(x, exc.err.status, why, exc.err.reason, keep=False)
            return False
        except ClientGone:
            self.stop_upload(req_pump)
            uc.abort()
            return "client-gone", ""
        status = resp.status
        if status >= 500:
            up.failure(lst.now, str(status))
            if (
                status in s.retry_statuses
                and req_pump is None
                and should_retry(
                    s,
                    str(status),
                    idempotent=x.idempotent,
                    streamed=x.stream,
                    retries=x.retries,
                    retrying=lst.retrying,
                    active=lst.active,
                    holding=holding,
                )
            ):
                uc.abort()
                return str(status), f"{up.label} answered {status}"
        else:
            up.success()
            if status == 401 and creds is not None:
                if req_pump is None and not x.replayed and len(x.body) <= s.replay_max_body:
                    uc.abort()  # its body is not wanted: the request goes again
                    return "unauthorized", f"{up.label} answered 401"
                self.renew_later(x.cred_gen)  # this 401 goes to the app; the next gets new
        t_head = lst.time()
        return await self.relay(x, up, uc, resp, req_pump, t1, t_head)

    def renew_later(self, generation: int) -> None:
        creds = self.lst.creds
        assert creds is not None
        task = self.lst.loop.create_task(creds.renew_after_401(generation, 60.0))
        self.lst.renewals.add(task)
        task.add_done_callback(self.lst.renewals.discard)

    async def relay(
        self,
        x: Exchange,
        up: Upstream,
        uc: Conn,
        resp: Response,
        req_pump: OwnedPump | None,
        t1: float,
        t_head: float,
    ) -> bool:
        """Pass the response (head already parsed) to the client; True to keep the connection."""
        lst = self.lst
        s = lst.s
        req = x.req
        assert req is not None
        status = resp.status
        if status == 101:
            return await self.tunnel(x, up, uc, resp)
        blen = resp.body
        dechunk = blen == BODY_CHUNKED and req.minor == 0
        keep = (
            req.keep_alive
            and not lst.draining
            and blen != BODY_EOF
            and not dechunk
            and not resp.close_client
        )
        tail = _TAILS[req.minor][keep]
        out_head = (_FRAMING.sub(b"", resp.head) if dechunk else resp.head) + tail
        sent = len(out_head)
        ok = True
        if self.closed:
            # The client hung up as the response arrived: its connection_lost ran
            # after the head was read, before this task resumed, and uvloop raises on
            # a write to that transport (asyncio only warns). Nothing is passed on;
            # the upstream's connection, its body unread, is not reused.
            ok = False
            sent = 0
        elif blen == BODY_NONE:
            self.transport.write(out_head)
        elif blen >= 0 and len(uc.buf) >= blen:
            ubuf = uc.buf
            if len(ubuf) == blen:
                data = bytes(ubuf)
                ubuf.clear()
            else:
                data = bytes(ubuf[:blen])
                del ubuf[:blen]
            self.transport.writelines((out_head, data))
            sent += blen
        else:
            self.transport.write(out_head)
            framer: Any
            if blen == BODY_CHUNKED:
                framer = ChunkedFramer()
            elif blen == BODY_EOF:
                framer = EofFramer()
            else:
                framer = LengthFramer(blen)
            self.state = BUSY
            p = self.resp_pump = (DechunkPump if dechunk else OwnedPump)(uc, self, framer, self)
            p.start()
            err = await p.done
            self.resp_pump = None
            sent += p.nbytes
            if err is not None:
                ok = False
                # Reset, not close: a response read until close would otherwise look
                # complete, and a reset is what tells any client the body was cut short.
                self.reset()
                lst.warn(
                    "response body interrupted",
                    extra={"upstream": up.label, "error": str(err) or type(err).__name__},
                )
        # the request body must have been forwarded completely to reuse either side
        if req_pump is not None:
            if ok and not req_pump.done.done() and not uc.closed:
                # The upstream answered before reading the whole body (nginx does that
                # with `return`): keep feeding it, as the client is still sending.
                await req_pump.done
            if not req_pump.done.done() or req_pump.done.result() is not None:
                ok = False
                self.stop_upload(req_pump)
            self.req_pump = None
        if ok and resp.keep_alive and not uc.buf and resp.body != BODY_EOF:
            up.release(uc, lst.now)
        else:
            uc.abort() if not ok else uc.close()
        if not ok:
            keep = False
        t_end = lst.time()
        dt = t_end - x.t0
        up.observe(status, dt, t_end)
        if s.access_log:
            sent_body = len(x.body) if x.body else (req_pump.nbytes if req_pump else 0)
            x.sent = len(x.head_out) + sent_body
            self.access(x, t_end, status, dt, t_head - t1, sent)
        return keep

    def stop_upload(self, pump: OwnedPump | None) -> None:
        if pump is not None:
            self.uploading = False
            if not pump.done.done():
                pump._detach()
                pump.done.set_result(UpstreamGone("upload abandoned"))
            self.req_pump = None

    async def tunnel(self, x: Exchange, up: Upstream, uc: Conn, resp: Response) -> bool:
        """After 101 Switching Protocols both sides speak their own protocol: pipe raw bytes."""
        lst = self.lst
        req = x.req
        assert req is not None
        if req.upgrade is None or resp.upgrade is None:
            uc.abort()
            self.refuse_local(
                x, 502, "bad-response", "unrequested 101 from upstream", up=up, keep=False
            )
            return False
        # The client may have hung up as the 101 arrived: its connection_lost ran
        # after the head was read, before this task resumed. uvloop raises on a
        # write to that transport (asyncio only warns), so it is not written to.
        if not self.closed:
            self.transport.write(
                resp.head + b"\r\nConnection: upgrade\r\nUpgrade: " + resp.upgrade + b"\r\n\r\n"
            )
        end = lst.time()
        dt = end - x.t0
        up.observe(101, dt)
        if lst.s.access_log:
            self.access(x, end, 101, dt, 0.0, 0)
        if self.closed:
            # A tunnel its client left at once: the upstream switched (101, as any
            # tunnel's line says), nothing more to pass on, its side closed now.
            uc.close()
            return False
        self.state = TUNNEL
        lst.tunnels += 1
        a = self.req_pump = OwnedPump(self, uc, EofFramer(), self)
        b = self.resp_pump = OwnedPump(uc, self, EofFramer(), self)
        a.start()
        b.start()
        try:
            await splice(a, b)
        finally:
            lst.tunnels -= 1
            self.req_pump = self.resp_pump = None
            uc.close()
        return False
