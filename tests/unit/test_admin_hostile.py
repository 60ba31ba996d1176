"""The admin server against what an attacker sends, over raw loopback sockets.

Each test would pass a client library's checks only by accident, so requests
are written byte for byte; the server runs in-process so its connection count
and this process's descriptors can be read directly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import inspect
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podkit import Sidecar, _http1
from podkit import admin as admin_mod
from podkit.admin import AdminServer, Request, Response, check_admin_settings, parse_head
from podkit.options import UsageError
from podkit.runner import configure, run


class Prog(Sidecar):
    name = "hostile"

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.posted: list[bytes] = []
        self.add_route("GET", "/slow", self.slow)
        self.add_route("POST", "/sync", self.sync)
        self.set_ready()

    async def slow(self, request: Request) -> Response:
        await self.release.wait()
        return Response.text("done\n")

    async def sync(self, request: Request) -> Response:
        self.posted.append(request.body)
        return Response.text("queued\n", 202)


Start = Callable[..., Awaitable[tuple[AdminServer, Prog]]]


@contextlib.asynccontextmanager
async def servers() -> AsyncIterator[Start]:
    started: list[tuple[AdminServer, Prog]] = []

    async def make(**opts: Any) -> tuple[AdminServer, Prog]:
        prog = Prog()
        for k, v in opts.items():
            setattr(prog, k, v)
        srv = AdminServer(prog, "127.0.0.1:0")
        await srv.start()
        started.append((srv, prog))
        return srv, prog

    try:
        yield make
    finally:
        for srv, prog in started:
            prog.release.set()
            await srv.stop()


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    async with servers() as make:
        yield make


async def exchange(
    port: int, data: bytes, ctx: ssl.SSLContext | None = None, timeout: float = 5
) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout`, which fails the test)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(-1), timeout)
    finally:
        writer.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def poll(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- class 8: the server cannot be used to starve the program --------------------------


async def test_connection_flood_is_capped_and_healthz_still_answers(start: Start) -> None:
    srv, _ = await start(admin_max_connections=8)
    assert srv.port
    before = open_fds()
    flood = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(150)]
    try:
        # The server's own descriptors stay within cap + headroom (plus a
        # few being closed); the 150 on the client side are this test's.
        cap = 8 + admin_mod.PROBE_HEADROOM
        await poll(lambda: open_fds() - before <= 150 + cap + 2)
        out = await exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n", timeout=3)
        assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"ok\n")
        out = await exchange(srv.port, b"GET /readyz HTTP/1.1\r\nHost: k\r\n\r\n", timeout=3)
        assert out.startswith(b"HTTP/1.1 200")
        assert open_fds() - before <= 150 + cap + 2
    finally:
        for _, w in flood:
            w.close()


async def test_probes_answer_when_every_slot_runs_a_handler(start: Start) -> None:
    srv, prog = await start(admin_max_connections=4)
    assert srv.port
    busy = []
    for _ in range(4):
        r, w = await asyncio.open_connection("127.0.0.1", srv.port)
        w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.append((r, w))
    await poll(lambda: srv.connections == 4)
    # Past the cap a connection gets the probes only, then is closed.
    out = await exchange(srv.port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n", timeout=3)
    assert out.startswith(b"HTTP/1.1 200") and b"Connection: close" in out
    out = await exchange(srv.port, b"GET /metrics HTTP/1.1\r\nHost: k\r\n\r\n", timeout=3)
    assert out.startswith(b"HTTP/1.1 503")
    prog.release.set()
    for r, w in busy:
        assert (await r.readuntil(b"done\n")).startswith(b"HTTP/1.1 200")
        w.close()


async def test_tls_handshakes_in_progress_count_against_the_cap(
    start: Start, tmp_path: Path
) -> None:
    cert, key, _ = make_cert(tmp_path, "a")
    srv, _ = await start(admin_max_connections=4, admin_tls_cert_file=cert, admin_tls_key_file=key)
    assert srv.port
    stalled = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(40)]
    try:
        await poll(lambda: srv.connections <= 4 + admin_mod.PROBE_HEADROOM)
        out = await exchange(srv.port, b"GET /healthz HTTP/1.1\r\n\r\n", client_ctx(cert), 3)
        assert out.startswith(b"HTTP/1.1 200")
    finally:
        for _, w in stalled:
            w.close()


async def test_body_on_a_route_that_takes_none_is_refused_unread(start: Start) -> None:
    srv, _ = await start()
    assert srv.port
    # Only the head is sent: a server that waits for the 100 kB never answers.
    out = await exchange(
        srv.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", timeout=3
    )
    assert out.startswith(b"HTTP/1.1 413") and b"Connection: close" in out
    # A small one is read and dropped, and the connection stays usable.
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(
        b"GET /healthz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /readyz HTTP/1.1\r\n\r\n"
    )
    assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 3)).startswith(b"HTTP/1.1 200")
    assert (await asyncio.wait_for(reader.readuntil(b"ready\n"), 3)).startswith(b"HTTP/1.1 200")
    writer.close()
    # An unknown route is answered without reading, then the connection closes.
    out = await exchange(
        srv.port, b"POST /nope HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", timeout=3
    )
    assert out.startswith(b"HTTP/1.1 404") and b"Connection: close" in out


@pytest.mark.parametrize(
    "value",
    ["١٢".encode(), b"+5", b"\xb2", b"\xb9\xb2", b"5_0", b"0x5", b"9" * 5000, b"5, 5", b"-0"],
)
async def test_content_length_is_ascii_digits_only(start: Start, value: bytes) -> None:
    srv, prog = await start()
    assert srv.port
    out = await exchange(
        srv.port,
        b"POST /sync HTTP/1.1\r\nContent-Length: " + value + b"\r\n\r\n" + b"x" * 60,
        timeout=3,
    )
    assert out.startswith(b"HTTP/1.1 400"), out[:60]
    assert prog.posted == []


@pytest.mark.parametrize("value", ["١٢", "+5", "²", "5_0", " 5", "0x5", "9" * 5000, ""])
def test_parse_content_length_refuses_what_int_accepts(value: str) -> None:
    with pytest.raises(ValueError):
        _http1.parse_content_length(value)
    assert _http1.parse_content_length("0012") == 12


def test_json_bodies_are_depth_capped() -> None:
    deep = b"[" * 100 + b"]" * 100
    with pytest.raises(ValueError, match="nested deeper"):
        Request("POST", "/", {}, deep).json()
    ok = b'{"a": "[[[[' + b"[" * 100 + b'", "b": [[1]]}'  # brackets inside strings do not count
    assert Request("POST", "/", {}, ok).json()["b"] == [[1]]


# -- the parser against an independent one (h11) ------------------------------------

TOKEN = st.text(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=8,
)
NASTY = st.sampled_from(
    ["", " ", "\t", "\x00", "\x01", "\x7f", "\xff", ":", "\r", "\n", "  ", "/", "é"]
)
WORD = st.one_of(TOKEN, NASTY, st.text(min_size=0, max_size=6))


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    """Mostly valid request heads, with hostile pieces mixed in."""
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "HEAD"]), WORD))
    target = draw(st.one_of(st.sampled_from(["/", "/healthz", "/a?b=c", "*"]), WORD))
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.x", "http/1.1", "HTTP/1.1 "])
    )
    sep1 = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    lines = [f"{method}{sep1}{target} {version}", "Host: example"]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.one_of(TOKEN, WORD))
        value = draw(st.one_of(TOKEN, WORD, st.text(max_size=10)))
        colon = draw(st.sampled_from([":", ": ", " : ", ":\t", ""]))
        lead = draw(st.sampled_from(["", "", "", " "]))
        lines.append(f"{lead}{name}{colon}{value}")
    head = "\r\n".join(lines).encode("utf-8")
    # One head as the server's readuntil(CRLF CRLF) cuts it: no blank line inside or at its end.
    head = head.replace(b"\r\n\r\n", b"\r\nX: y\r\n")
    while head.endswith(b"\r\n"):
        head = head[:-2]
    return head


def h11_parse(head: bytes) -> h11.Request | None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + b"\r\n\r\n")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    return event if isinstance(event, h11.Request) else None


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(request_heads())
def test_request_heads_agree_with_h11(head: bytes) -> None:
    """What podkit accepts, h11 accepts and reads the same; what it refuses past
    h11, it refuses on purpose: obs-fold (RFC 9112 §5.2 lets a server reject
    it), a bare LF as a line end (RFC 9112 §2.2 only allows a recipient to take
    it), duplicate framing or Host fields, and versions other than 1.x."""
    theirs = h11_parse(head)
    try:
        ours, _ = parse_head(head)
    except admin_mod.BadRequest as exc:
        if theirs is not None:
            names = [n for n, _ in theirs.headers]
            dup = any(
                names.count(n) > 1 for n in (b"content-length", b"transfer-encoding", b"host")
            )
            folded = any(line[:1] in (b" ", b"\t") for line in head.split(b"\r\n")[1:])
            bare_lf = b"\n" in head.replace(b"\r\n", b"")  # h11 takes LF alone as a line end
            assert exc.status == 505 or dup or folded or bare_lf, (head, exc)
        return
    assert theirs is not None, head
    assert ours.method.encode("latin-1") == theirs.method
    assert ours.target.encode("latin-1") == theirs.target
    expected: dict[bytes, bytes] = {}
    for name, value in theirs.headers:
        expected[name] = value
    assert {k.encode("latin-1"): v.encode("latin-1") for k, v in ours.headers.items()} == expected


# -- TLS and auth from files ---------------------------------------------------------


def make_cert(tmp: Path, tag: str) -> tuple[str, str, bytes]:
    """A self-signed certificate for 127.0.0.1: (cert path, key path, DER)."""
    openssl = shutil.which("openssl")
    assert openssl, "openssl (Debian package) is needed to make test certificates"
    cert, key = tmp / f"{tag}.crt", tmp / f"{tag}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={tag}",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key), ssl.PEM_cert_to_DER_cert(cert.read_text())


def client_ctx(cafile: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


async def peer_cert(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return bytes(der)


async def test_tls_serves_and_picks_up_a_rotated_certificate(start: Start, tmp_path: Path) -> None:
    a_cert, a_key, a_der = make_cert(tmp_path, "a")
    b_cert, b_key, b_der = make_cert(tmp_path, "b")
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(a_cert, live / "tls.crt")
    shutil.copy(a_key, live / "tls.key")
    srv, _ = await start(
        admin_tls_cert_file=str(live / "tls.crt"), admin_tls_key_file=str(live / "tls.key")
    )
    assert srv.port
    out = await exchange(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n", client_ctx(a_cert))
    assert out.startswith(b"HTTP/1.1 200")
    assert await peer_cert(srv.port) == a_der
    # Plain HTTP on the TLS port gets nothing, and the server goes on.
    assert await exchange(srv.port, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
    # cert-manager replaces both files; a half-done rotation keeps the old pair.
    shutil.copy(b_cert, live / "tls.crt")
    assert await peer_cert(srv.port) == a_der
    shutil.copy(b_key, live / "tls.key")
    assert await peer_cert(srv.port) == b_der
    out = await exchange(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n", client_ctx(b_cert))
    assert out.startswith(b"HTTP/1.1 200")


def make_client_cert(tmp: Path, tag: str) -> tuple[str, str, str]:
    """A CA and a client certificate it signed: (CA path, cert path, key path)."""
    openssl = shutil.which("openssl")
    assert openssl
    ca_crt, ca_key = tmp / f"{tag}-ca.crt", tmp / f"{tag}-ca.key"
    crt, key, csr = tmp / f"{tag}.crt", tmp / f"{tag}.key", tmp / f"{tag}.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run([openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_crt, "-days", "1",
         "-subj", f"/CN={tag} CA"])  # fmt: skip
    run([openssl, "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={tag}"])
    run([openssl, "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
         "-CAcreateserial", "-out", crt, "-days", "1"])  # fmt: skip
    return str(ca_crt), str(crt), str(key)


async def test_client_certificates_from_a_ca_file(start: Start, tmp_path: Path) -> None:
    cert, key, _ = make_cert(tmp_path, "srv")
    ca, client_crt, client_key = make_client_cert(tmp_path, "scraper")
    _, other_crt, other_key = make_client_cert(tmp_path, "stranger")
    srv, _ = await start(
        admin_tls_cert_file=cert, admin_tls_key_file=key, admin_tls_client_ca_file=ca
    )
    assert srv.port
    anon = client_ctx(cert)
    known = client_ctx(cert)
    known.load_cert_chain(client_crt, client_key)
    stranger = client_ctx(cert)
    stranger.load_cert_chain(other_crt, other_key)
    get = b"GET /metrics HTTP/1.0\r\n\r\n"
    assert (await exchange(srv.port, get, anon)).startswith(b"HTTP/1.1 403")
    assert (await exchange(srv.port, get, known)).startswith(b"HTTP/1.1 200")
    try:  # refused in the handshake (with TLS 1.3 the client learns it on its first read)
        out = await exchange(srv.port, get, stranger)
    except (ssl.SSLError, ConnectionError):
        out = b""
    assert out == b""
    # The kubelet sends no certificate: the probes stay open unless told otherwise.
    out = await exchange(srv.port, b"GET /healthz HTTP/1.0\r\n\r\n", anon)
    assert out.startswith(b"HTTP/1.1 200")


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def basic(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


async def test_basic_and_bearer_auth_from_a_file(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = tmp_path / "auth.yaml"
    users = f"basic_auth_users:\n  prom: {sha('s3cret-pass')}\n"
    auth.write_text(users + f"bearer_tokens:\n  - {sha('tok-123456')}\n")
    srv, prog = await start(admin_auth_file=str(auth))
    assert srv.port

    async def get(path: str, extra: bytes = b"", method: bytes = b"GET") -> bytes:
        assert srv.port
        return await exchange(
            srv.port,
            method + b" " + path.encode() + b" HTTP/1.1\r\n" + extra + b"Connection: close\r\n\r\n",
        )

    out = await get("/metrics")
    assert (
        out.startswith(b"HTTP/1.1 401") and b'WWW-Authenticate: Basic realm="podkit", Bearer' in out
    )
    assert (await get("/metrics", basic("prom", "wrong"))).startswith(b"HTTP/1.1 401")
    assert (await get("/metrics", basic("nobody", "s3cret-pass"))).startswith(b"HTTP/1.1 401")
    assert (await get("/metrics", b"Authorization: Basic !!!\r\n")).startswith(b"HTTP/1.1 401")
    assert (await get("/metrics", basic("prom", "s3cret-pass"))).startswith(b"HTTP/1.1 200")
    assert (await get("/", b"Authorization: Bearer tok-123456\r\n")).startswith(b"HTTP/1.1 200")
    assert (await get("/", b"Authorization: Bearer tok-1234567\r\n")).startswith(b"HTTP/1.1 401")
    # The probes stay open for the kubelet by default.
    assert (await get("/healthz")).startswith(b"HTTP/1.1 200")
    assert (await get("/readyz")).startswith(b"HTTP/1.1 200")
    # An unauthenticated body is never read.
    out = await get("/sync", b"Content-Length: 5\r\n", b"POST")
    assert out.startswith(b"HTTP/1.1 401") and prog.posted == []
    # Rotation: the new file applies at once; a broken one keeps the last good one.
    auth.write_text(f"bearer_tokens:\n  - {sha('tok-rotated')}\n")
    assert (await get("/", b"Authorization: Bearer tok-rotated\r\n")).startswith(b"HTTP/1.1 200")
    assert (await get("/", b"Authorization: Bearer tok-123456\r\n")).startswith(b"HTTP/1.1 401")
    auth.write_text("bearer_tokens: [oops\n")
    assert (await get("/", b"Authorization: Bearer tok-rotated\r\n")).startswith(b"HTTP/1.1 200")
    logged = caplog.text
    for secret in ("s3cret-pass", "tok-123456", "tok-rotated", sha("tok-rotated")):
        assert secret not in logged


async def test_probes_need_credentials_when_not_exempt(start: Start, tmp_path: Path) -> None:
    auth = tmp_path / "auth.yaml"
    auth.write_text(f"bearer_tokens: ['{sha('tok-123456')}']\n")
    srv, _ = await start(admin_auth_file=str(auth), admin_auth_exempt_probes=False)
    assert srv.port
    out = await exchange(srv.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 401") and b'WWW-Authenticate: Bearer realm="podkit"' in out


@pytest.mark.parametrize(
    ("args", "content", "needle"),
    [
        (["--admin-tls-cert-file", "/nonexistent.crt"], None, "go together"),
        (
            ["--admin-tls-cert-file", "/no.crt", "--admin-tls-key-file", "/no.key"],
            None,
            "--admin-tls-cert-file",
        ),
        (
            ["--admin-max-connections", "0"],
            None,
            "--admin-max-connections: 0 is below the minimum 1",
        ),
        (["--admin-tls-client-ca-file", "/ca.crt"], None, "needs --admin-tls-cert-file"),
        (
            [],
            "basic_auth_users:\n  u: $2y$10$abcdefghijklmnopqrstuv\n",
            "bcrypt hashes are not supported",
        ),
        ([], "basic_auth_users:\n  u: plain\n", "sha256:<64 hex digits>"),
        ([], "bearer_tokens: []\n", "no basic_auth_users"),
        ([], "users: {}\n", "expected a mapping"),
    ],
)
def test_bad_admin_settings_are_usage_errors(
    tmp_path: Path, args: list[str], content: str | None, needle: str
) -> None:
    if content is not None:
        (tmp_path / "auth.yaml").write_text(content)
        args = [*args, "--admin-auth-file", str(tmp_path / "auth.yaml")]
    with pytest.raises(UsageError, match=needle.replace("$", r"\$")):
        check_admin_settings(configure(Prog, ["--admin-addr", "127.0.0.1:0", *args], env={}))
    assert run(Prog, ["--admin-addr", "127.0.0.1:0", *args], env={}) == 2


# -- the same on uvloop, which the runner picks when installed -------------------------


@pytest.mark.parametrize(
    "case",
    [
        test_connection_flood_is_capped_and_healthz_still_answers,
        test_probes_answer_when_every_slot_runs_a_handler,
        test_tls_handshakes_in_progress_count_against_the_cap,
        test_body_on_a_route_that_takes_none_is_refused_unread,
        test_tls_serves_and_picks_up_a_rotated_certificate,
        test_client_certificates_from_a_ca_file,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
def test_on_uvloop(case: Callable[..., Awaitable[None]], tmp_path: Path) -> None:
    """uvloop accepts, hands over sockets, runs TLS and aborts in its own code."""
    import uvloop

    async def main() -> None:
        async with servers() as make:
            wanted = inspect.signature(case).parameters
            await case(start=make, **({"tmp_path": tmp_path} if "tmp_path" in wanted else {}))

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
