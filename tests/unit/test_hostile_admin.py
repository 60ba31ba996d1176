"""The admin server never answers a client's bytes with a traceback, nor with silence.

Raw loopback sockets write what a client library would refuse to send. Each
test asserts what the client gets back, and that no error record and no
asyncio "exception was never retrieved" report came of it: before the fixes a
request target urlsplit cannot split, or a non-ASCII Basic credential, ended
the connection's task with an exception (no answer, and one unthrottled
traceback per request, so any client could flood the log).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from podkit import Sidecar
from podkit import _admin_listener as listener_mod
from podkit.admin import AdminServer, Request, Response
from podkit.logs import RateLimited
from tests.unit.test_admin_hostile import exchange


class Prog(Sidecar):
    name = "hostile-tb"

    def __init__(self) -> None:
        super().__init__()
        self.add_route("GET", "/boom", self.boom)
        self.set_ready()

    async def boom(self, request: Request) -> Response:
        raise ValueError(f"handler bug on {request.target}")


class Harness:
    """One server, and what went wrong while it ran (error records, asyncio reports)."""

    def __init__(self, srv: AdminServer, caplog: pytest.LogCaptureFixture) -> None:
        self.srv = srv
        self.caplog = caplog
        self.reports: list[dict[str, Any]] = []

    @property
    def port(self) -> int:
        assert self.srv.port
        return self.srv.port

    def failures(self) -> list[str]:
        gc.collect()  # a task that ended with an exception reports it when collected
        records = [
            f"{r.name}: {r.getMessage()}"
            for r in self.caplog.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]
        return records + [str(c.get("message")) for c in self.reports]


@pytest.fixture
async def harness(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Callable[..., Any]]:
    loop = asyncio.get_running_loop()
    started: list[AdminServer] = []
    # A fresh limiter: another test's record must not hide (or be) this one's.
    old_failures = getattr(listener_mod, "FAILURES", None)
    if old_failures is not None:
        monkey = pytest.MonkeyPatch()
        monkey.setattr(listener_mod, "FAILURES", RateLimited(listener_mod.log, 60.0))
    caplog.set_level(logging.WARNING)

    async def make(**opts: Any) -> Harness:
        prog = Prog()
        for k, v in opts.items():
            setattr(prog, k, v)
        srv = AdminServer(prog, "127.0.0.1:0")
        await srv.start()
        started.append(srv)
        h = Harness(srv, caplog)
        loop.set_exception_handler(lambda _loop, ctx: h.reports.append(ctx))
        return h

    try:
        yield make
    finally:
        for srv in started:
            await srv.stop()
        loop.set_exception_handler(None)
        if old_failures is not None:
            monkey.undo()


@pytest.mark.parametrize(
    "target",
    [b"//[x/", b"http://[::1/healthz", b"//[x]/", b"http://[zz]:1/", b"/healthz?//[x"],
)
async def test_a_target_urlsplit_refuses_is_a_400(harness: Any, target: bytes) -> None:
    h = await harness()
    for _ in range(3):  # a repeated request adds no record either
        out = await exchange(h.port, b"GET " + target + b" HTTP/1.1\r\nConnection: close\r\n\r\n")
        if target.startswith(b"/healthz?"):
            assert out.startswith(b"HTTP/1.1 200"), out[:80]  # the query is not split here
            continue
        assert out.startswith(b"HTTP/1.1 400"), out[:80]
        assert b"Connection: close" in out
    assert h.failures() == []
    # and the server still serves
    assert (await exchange(h.port, b"GET /healthz HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "authorization",
    [
        b"Basic \xe9\xe9\xe9\xe9",  # latin-1 text: b64decode refuses non-ASCII with ValueError
        b"Basic \xff",
        b"Basic dT\xa0p4",
        b"Bearer \xe9",
        b"Basic !!!!",
        b"Basic /w==",  # decodes to a byte that is no UTF-8
    ],
)
async def test_a_malformed_credential_is_a_401(
    harness: Any, tmp_path: Path, authorization: bytes
) -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    auth = tmp_path / "auth.yaml"
    auth.write_text(
        f"basic_auth_users: {{u: 'sha256:{digest}'}}\nbearer_tokens: ['sha256:{digest}']\n"
    )
    h = await harness(admin_auth_file=str(auth))
    for _ in range(3):
        out = await exchange(
            h.port, b"GET /metrics HTTP/1.0\r\nAuthorization: " + authorization + b"\r\n\r\n"
        )
        assert out.startswith(b"HTTP/1.1 401"), out[:80]
    assert h.srv.auth_failures == 3  # each refusal is counted
    assert [r for r in h.failures() if "refused" not in r] == []
    ok = await exchange(h.port, b"GET /metrics HTTP/1.0\r\nAuthorization: Basic dTp4\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200"), ok[:80]


async def test_a_failing_handler_is_a_500_and_one_record_per_minute(harness: Any) -> None:
    h = await harness()
    for i in range(20):
        out = await exchange(h.port, f"GET /boom?{i} HTTP/1.0\r\n\r\n".encode())
        assert out.startswith(b"HTTP/1.1 500"), out[:80]
    records = [r for r in h.caplog.records if r.getMessage() == "admin handler failed"]
    assert len(records) == 1, [r.__dict__ for r in records]
    assert records[0].__dict__["error"].startswith("ValueError: handler bug")
    raise_line = inspect.getsourcelines(Prog.boom)[1] + 1  # the handler's `raise`
    assert records[0].__dict__["where"] == f"{__file__}:{raise_line}"
    assert h.reports == []


async def test_an_unforeseen_failure_ends_one_connection_with_one_record(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a request breaks that no check foresaw (here: a bug planted in the
    routing), the connection ends and the record is throttled, not asyncio's
    traceback for every connection."""
    h = await harness()

    def broken(conn: Any, request: Request) -> Response | None:
        raise IndexError("planted")

    monkeypatch.setattr(h.srv, "_refuse", broken)
    for _ in range(20):
        assert await exchange(h.port, b"GET / HTTP/1.0\r\n\r\n") == b""
    failed = [r for r in h.caplog.records if r.getMessage() == "admin connection failed"]
    assert len(failed) == 1
    assert failed[0].__dict__["error"] == "IndexError: planted"
    gc.collect()
    assert h.reports == []
    assert h.srv.connections == 0


async def test_a_failing_refresh_before_a_scrape_is_one_record_a_minute(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await harness()

    async def broken() -> None:
        raise KeyError("refresh bug")

    monkeypatch.setattr(h.srv.program, "before_metrics", broken)
    for _ in range(20):
        out = await exchange(h.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200"), out[:80]  # the scrape still gets its metrics
        assert b"podkit_build_info" in out
    failed = [r for r in h.caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failed] == ["refreshing metrics before a scrape failed"]
    assert all(r.exc_info is None for r in h.caplog.records)
