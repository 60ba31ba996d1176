"""kubefiles' API client keeps bounded memory against an API server that misbehaves.

A watch is read as JSON lines of a (usually chunked) body: a peer that sends
megabytes without a newline, or announces a chunk of terabytes, must end the
watch as a counted failure, never grow a buffer without limit. A list that
follows `continue` tokens must end too, and hold a bounded total. The raw
server here writes exact bytes (the fake API in tests/peers/kubeapi.py
speaks only well-formed HTTP); the well-formed pagination is checked against
that fake.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from podkit.sidecars.kubefiles import KubeFiles
from podkit.sidecars.kubefiles import kubeapi as kmod
from podkit.sidecars.kubefiles.kubeapi import (
    HEAD_LIMIT,
    MAX_LINE,
    APIError,
    Credentials,
    Gone,
    KubeAPI,
    _event,
)

from podkit.runner import configure
from tests.peers.kubeapi import FakeKubeAPI, kubeapi  # noqa: F401

Reply = Callable[[asyncio.StreamWriter, int], Awaitable[None]]

CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)
PLAIN_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"


class RawServer:
    """One request per connection; `reply(writer, n)` writes the n-th answer's bytes."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.targets: list[str] = []
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def api(self) -> KubeAPI:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return KubeAPI(Credentials(server=f"http://127.0.0.1:{port}"), request_timeout=5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            self.targets.append(head.split(b" ", 2)[1].decode())
            await self.reply(writer, len(self.targets))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client gave up on us: what these tests want
        finally:
            writer.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def events(api: KubeAPI, idle: float = 5.0) -> list[tuple[str, dict[str, Any]]]:
    out = []
    gen = api.watch("configmap", "default", "a=1", "7", 60, idle)
    try:
        async with asyncio.timeout(20):
            async for ev in gen:
                out.append(ev)
    finally:
        await gen.aclose()
    return out


def ev_line(name: str, size: int | None = None) -> bytes:
    """An ADDED event; with `size`, padded (in its data) to exactly that many bytes."""
    doc = {"type": "ADDED", "object": {"metadata": {"name": name}, "data": {"k": ""}}}
    line = json.dumps(doc, separators=(",", ":")).encode()
    if size is not None:
        doc["object"]["data"] = {"k": "x" * (size - len(line))}  # type: ignore[index]
        line = json.dumps(doc, separators=(",", ":")).encode()
        assert len(line) == size
    return line


# --- the watch's event line -------------------------------------------------------


async def _endless(writer: asyncio.StreamWriter, head: bytes, prefix: bytes) -> None:
    """Megabytes without a newline: 3 x MAX_LINE, or until the client leaves."""
    writer.write(head + prefix)
    block = b"a" * (64 << 10)
    for _ in range(3 * MAX_LINE // len(block)):
        writer.write(block)
        await writer.drain()


@pytest.mark.parametrize("framing", ["chunk of 4 GiB", "chunk of 2^64", "not chunked"])
async def test_a_line_without_end_is_a_failed_watch_in_bounded_memory(framing: str) -> None:
    prefix = {"chunk of 4 GiB": b"ffffffff\r\n", "chunk of 2^64": b"f" * 16 + b"\r\n"}

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        head = PLAIN_HEAD if framing == "not chunked" else CHUNKED_HEAD
        await _endless(w, head, prefix.get(framing, b""))

    async with RawServer(reply) as srv:
        tracemalloc.start()
        try:
            with pytest.raises(APIError, match=f"an event line over {MAX_LINE} bytes") as err:
                await events(srv.api)
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert err.value.status == 0
    # Before the bound on a chunk read, the whole announced chunk was awaited
    # in one readexactly(): 12 MiB held, then the idle timeout.
    assert peak < MAX_LINE + (2 << 20), peak


@pytest.mark.parametrize("chunked", [True, False])
async def test_a_line_of_max_line_bytes_passes_one_byte_more_fails(chunked: bool) -> None:
    ok, over = ev_line("ok", MAX_LINE), ev_line("over", MAX_LINE + 1)

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        body = ok + b"\n" + over + b"\n" + ev_line("never") + b"\n"
        if chunked:
            w.write(CHUNKED_HEAD)
            for i in range(0, len(body), 1 << 20):  # chunks of 1 MiB, across the lines
                w.write(chunk(body[i : i + (1 << 20)]))
            w.write(b"0\r\n\r\n")
        else:
            w.write(PLAIN_HEAD + body)
        await w.drain()

    got: list[str] = []
    async with RawServer(reply) as srv:
        gen = srv.api.watch("configmap", "default", "a=1", "7", 60, 5.0)
        with pytest.raises(APIError, match=f"an event line over {MAX_LINE} bytes") as err:
            async with asyncio.timeout(20):
                async for _kind, obj in gen:
                    got.append(obj["metadata"]["name"])
        await gen.aclose()
    assert got == ["ok"] and err.value.status == 0


async def test_lines_split_anywhere_by_chunks_come_out_whole_and_in_order() -> None:
    names = [f"cm{i}" for i in range(40)]
    body = b"".join(ev_line(n) + (b"\n\n" if i % 7 == 0 else b"\n") for i, n in enumerate(names))

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(CHUNKED_HEAD)
        i, size = 0, 1
        while i < len(body):  # chunk sizes 1..1000, so lines split at every kind of place
            w.write(chunk(body[i : i + size]))
            i += size
            size = size * 7 % 1001 or 1
        w.write(b"0\r\n\r\n")
        await w.drain()

    async with RawServer(reply) as srv:
        got = await events(srv.api)
    assert [(k, o["metadata"]["name"]) for k, o in got] == [("ADDED", n) for n in names]


async def test_many_lines_in_one_chunk_and_a_torn_last_line_at_the_end() -> None:
    body = b"".join(ev_line(f"n{i}") + b"\n" for i in range(500)) + ev_line("torn")[:20]

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(CHUNKED_HEAD + chunk(body) + b"0\r\n\r\n")
        await w.drain()

    async with RawServer(reply) as srv:
        got = await events(srv.api)
    assert [o["metadata"]["name"] for _k, o in got] == [f"n{i}" for i in range(500)]


@pytest.mark.parametrize(
    "size_line",
    [b"-1", b"0x10", b"1_0", b"zz", b"", b" ", b" 1", b"1" * 17, b"1" * (2 * HEAD_LIMIT)],
)
async def test_a_malformed_chunk_size_is_a_failed_watch(size_line: bytes) -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(CHUNKED_HEAD + chunk(ev_line("first") + b"\n") + size_line + b"\r\nxx\r\n")
        await w.drain()

    got: list[str] = []
    async with RawServer(reply) as srv:
        gen = srv.api.watch("configmap", "default", "a=1", "7", 60, 5.0)
        with pytest.raises(APIError) as err:
            async with asyncio.timeout(10):
                async for _kind, obj in gen:
                    got.append(obj["metadata"]["name"])
        await gen.aclose()
    assert got == ["first"] and err.value.status == 0
    assert str(err.value).startswith("watch configmaps in namespace default: ")


async def test_chunk_data_not_followed_by_crlf_is_a_failed_watch() -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        data = ev_line("a") + b"\n"
        w.write(CHUNKED_HEAD + b"%x\r\n" % len(data) + data + b"XX" + chunk(ev_line("b") + b"\n"))
        await w.drain()

    async with RawServer(reply) as srv:
        with pytest.raises(APIError, match="malformed chunked body"):
            await events(srv.api)


async def test_a_chunk_extension_is_ignored() -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        data = ev_line("a") + b"\n"
        w.write(CHUNKED_HEAD + b"%x;name=value\r\n" % len(data) + data + b"\r\n0\r\n\r\n")
        await w.drain()

    async with RawServer(reply) as srv:
        got = await events(srv.api)
    assert [o["metadata"]["name"] for _k, o in got] == ["a"]


# --- the list's pagination --------------------------------------------------------


def page(items: int, cont: str | None, pad: int = 0) -> bytes:
    meta: dict[str, Any] = {"resourceVersion": "42"}
    if cont is not None:
        meta["continue"] = cont
    objs = [{"metadata": {"name": f"o{i}"}, "data": {"p": "x" * pad}} for i in range(items)]
    return json.dumps({"kind": "ConfigMapList", "metadata": meta, "items": objs}).encode()


def answer(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


def continues(srv: RawServer) -> list[str | None]:
    from urllib.parse import parse_qs, urlsplit

    return [parse_qs(urlsplit(t).query).get("continue", [None])[0] for t in srv.targets]


async def test_a_continue_token_repeated_for_ever_ends_the_list() -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(answer(page(1, "same")))

    async with RawServer(reply) as srv:
        with pytest.raises(APIError, match="the server repeated a continue token") as err:
            async with asyncio.timeout(10):
                await srv.api.list("configmap", "default", "a=1")
    assert err.value.status == 0
    assert continues(srv) == [None, "same"]


async def test_continue_tokens_in_a_cycle_end_the_list() -> None:
    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        w.write(answer(page(1, "AB"[n % 2])))

    async with RawServer(reply) as srv:
        with pytest.raises(APIError, match="the server repeated a continue token"):
            async with asyncio.timeout(10):
                await srv.api.list("configmap", "default", "a=1")
    assert continues(srv) == [None, "B", "A"]


async def test_fresh_continue_tokens_without_end_stop_at_max_list_pages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert kmod.MAX_LIST_PAGES == 10_000
    monkeypatch.setattr(kmod, "MAX_LIST_PAGES", 5)

    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        w.write(answer(page(0, f"t{n}")))

    async with RawServer(reply) as srv:
        with pytest.raises(
            APIError, match=r"^list configmaps in namespace default: more than 5 pages$"
        ) as err:
            async with asyncio.timeout(10):
                await srv.api.list("configmap", "default", "a=1")
    assert continues(srv) == [None, "t1", "t2", "t3", "t4"] and err.value.status == 0


async def test_the_last_allowed_page_may_end_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kmod, "MAX_LIST_PAGES", 3)

    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        w.write(answer(page(2, f"t{n}" if n < 3 else None)))

    async with RawServer(reply) as srv:
        items, rv = await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert len(items) == 6 and rv == "42"


async def test_the_pages_together_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every page under MAX_PAGE, but all of them over MAX_LIST: refused, not accumulated."""
    assert kmod.MAX_LIST == kmod.MAX_PAGE == 256 << 20
    one = len(page(1, "t9", pad=1000))
    monkeypatch.setattr(kmod, "MAX_PAGE", 2 * one)
    monkeypatch.setattr(kmod, "MAX_LIST", 3 * one)

    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        w.write(answer(page(1, f"t{n}", pad=1000)))

    async with RawServer(reply) as srv:
        with pytest.raises(APIError, match=f"pages over {3 * one} bytes in all$") as err:
            await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert err.value.status == 0
    assert len(srv.targets) == 4  # three pages fit exactly; the fourth does not

    # Exactly MAX_LIST in all is allowed.
    async def last(w: asyncio.StreamWriter, n: int) -> None:
        w.write(answer(page(1, f"t{n}" if n < 3 else "", pad=1000)))

    monkeypatch.setattr(kmod, "MAX_LIST", 3 * one - 2)  # the final page has a shorter token
    async with RawServer(last) as srv:
        items, _rv = await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert len(items) == 3


async def test_one_page_over_max_page_is_named_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    big = page(3, None)
    monkeypatch.setattr(kmod, "MAX_PAGE", len(big) - 1)

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(answer(big))

    async with RawServer(reply) as srv:
        with pytest.raises(APIError, match=f"a page over {len(big) - 1} bytes$") as err:
            await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert err.value.status == 0
    monkeypatch.setattr(kmod, "MAX_PAGE", len(big))
    async with RawServer(reply) as srv:
        items, _rv = await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert len(items) == 3


async def test_the_fake_apis_pages_are_all_followed(kubeapi: FakeKubeAPI) -> None:  # noqa: F811
    for i in range(7):
        kubeapi.apply("configmap", "default", f"cm{i}", {"k": str(i)}, {"a": "1"})
    kubeapi.apply("configmap", "default", "other", {"k": "x"}, {"a": "2"})
    api = KubeAPI(Credentials(server=kubeapi.url, token="token-1"))
    items, rv = await asyncio.wait_for(api.list("configmap", "default", "a=1", page=2), 10)
    assert sorted(o["metadata"]["name"] for o in items) == [f"cm{i}" for i in range(7)]
    assert rv == str(kubeapi.rv)
    assert [v for v, _p in kubeapi.requests] == ["list"] * 4


# --- the program: a line over the bound is a counted, backed-off relist -----------


@pytest.fixture
async def program(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    made: list[Any] = []

    async def make(server: str) -> Any:
        (tmp_path / "token").write_text("t")
        (tmp_path / "namespace").write_text("default")
        args = ["--server", server, "--service-account-dir", str(tmp_path)]
        args += ["--label", "a=1", "--folder", str(tmp_path / "out")]
        p: Any = configure(KubeFiles, args, {})
        await p.setup()
        made.append(p)
        return p

    yield make
    for p in made:
        await p.cleanup()


async def test_an_endless_line_fails_the_watch_counted_with_backoff_and_relists(
    program: Callable[[str], Any],
) -> None:
    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        if "watch=1" in srv.targets[n - 1]:
            await _endless(w, CHUNKED_HEAD, b"ffffffff\r\n")
        else:
            w.write(answer(page(1, None)))

    async with RawServer(reply) as srv:
        port = srv.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        p = await program(f"http://127.0.0.1:{port}")
        delays: list[float] = []

        async def sleep(d: float) -> bool:
            delays.append(d)
            if len(delays) == 3:
                p.request_stop()
            return len(delays) >= 3

        p.sleep = sleep
        async with asyncio.timeout(30):
            await p._follow(p.scopes[0])
    scope = p.scopes[0]
    verbs = ["watch" if "watch=1" in t else "list" for t in srv.targets]
    assert verbs == ["list", "watch"] * 3
    # The third backoff sleep was cut short by the stop: _follow returned there.
    assert scope.lists == 3 and scope.watch_restarts == 2
    assert f"an event line over {MAX_LINE} bytes" in (scope.last_error or "")
    assert p.m_restarts.labels("error")._value.get() == 2
    assert p.m_errors.labels("0")._value.get() == 3
    assert all(d > 0 for d in delays) and len(delays) == 3


# --- a peer's number as a metric label ----------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (503, 503),
        (100, 100),
        (599, 599),
        (99, 0),
        (600, 0),
        (12345, 0),
        (-500, 0),
        (10**30, 0),
        ("x", 0),
        ([1], 0),
        (None, 0),
    ],
)
def test_an_error_events_code_is_an_http_status_or_0(code: Any, status: int) -> None:
    """The status labels api_errors_total: a peer's every number must not be a new series."""
    line = json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": code}}).encode()
    with pytest.raises(APIError) as err:
        _event(line, "configmaps")
    assert err.value.status == status


async def test_error_events_with_ever_new_codes_keep_api_errors_total_small(
    program: Callable[[str], Any],
) -> None:
    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        if "watch=1" in srv.targets[n - 1]:
            ev = {"type": "ERROR", "object": {"kind": "Status", "code": 1000 + n}}
            w.write(CHUNKED_HEAD + chunk(json.dumps(ev).encode() + b"\n") + b"0\r\n\r\n")
        else:
            w.write(answer(page(0, None)))

    async with RawServer(reply) as srv:
        port = srv.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        p = await program(f"http://127.0.0.1:{port}")
        sleeps = 0

        async def sleep(d: float) -> bool:
            nonlocal sleeps
            sleeps += 1
            if sleeps == 20:
                p.request_stop()
            return sleeps >= 20

        p.sleep = sleep
        async with asyncio.timeout(30):
            await p._follow(p.scopes[0])
    codes = {
        s.labels["code"] for m in p.m_errors.collect() for s in m.samples if "code" in s.labels
    }
    assert codes == {"0"}
    assert p.m_errors.labels("0")._value.get() == 20


# --- what is asked, and every way an answer can fail -------------------------------


def _query(target: str) -> dict[str, list[str]]:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(target).query)


async def test_the_watch_and_list_requests_ask_for_what_the_api_documents() -> None:
    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            w.write(answer(page(0, None)))
        else:
            w.write(CHUNKED_HEAD + b"0\r\n\r\n")

    async with RawServer(reply) as srv:
        api = srv.api
        port = srv.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await asyncio.wait_for(api.list("configmap", "team-a", "app in (x,y)"), 10)
        assert await events(api) == []
    (list_t, watch_t) = srv.targets
    assert list_t.split("?")[0] == "/api/v1/namespaces/team-a/configmaps"
    assert _query(list_t) == {"labelSelector": ["app in (x,y)"], "limit": ["500"]}
    assert watch_t.split("?")[0] == "/api/v1/namespaces/default/configmaps"
    assert _query(watch_t) == {
        "watch": ["1"],
        "labelSelector": ["a=1"],
        "resourceVersion": ["7"],
        "allowWatchBookmarks": ["true"],
        "timeoutSeconds": ["60"],
    }
    head = srv.heads[1].decode("latin-1").split("\r\n")
    assert head[0].startswith("GET /api/v1/") and head[0].endswith(" HTTP/1.1")
    assert f"Host: 127.0.0.1:{port}" in head and "Connection: close" in head
    assert "Accept: application/json" in head


async def test_an_event_is_handed_on_when_its_line_ends_not_when_more_bytes_come() -> None:
    """A chunk that starts with a keep-alive newline: the event after it must not wait."""
    got_it = asyncio.Event()

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(CHUNKED_HEAD + chunk(b"\n" + ev_line("a") + b"\n"))
        await w.drain()
        await asyncio.wait_for(got_it.wait(), 10)
        w.write(b"0\r\n\r\n")

    async with RawServer(reply) as srv:
        gen = srv.api.watch("configmap", "default", "a=1", "7", 60, 3.0)
        names = []
        async with asyncio.timeout(10):
            async for _kind, obj in gen:
                names.append(obj["metadata"]["name"])
                got_it.set()
        await gen.aclose()
    assert names == ["a"]


async def test_a_long_line_and_a_short_one_ending_in_the_same_read() -> None:
    """Both are under MAX_LINE: the bound is per line, not per buffer position."""
    long_line, short = ev_line("long", 3 * (1 << 20) + 10), ev_line("short")

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        # One chunk: read 64 KiB at a time from its start, so the long line's
        # newline and the short line both fall in the read at 3 MiB.
        w.write(CHUNKED_HEAD + chunk(long_line + b"\n" + short + b"\n") + b"0\r\n\r\n")
        await w.drain()

    async with RawServer(reply) as srv:
        got = await events(srv.api)
    assert [o["metadata"]["name"] for _k, o in got] == ["long", "short"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json", "malformed event: Expecting value"),
        (b'{"type": "ADDED"}', "malformed event: 'object'"),
        (b'{"type": "ADDED", "object": []}', "malformed event: object is not a mapping"),
        (b'{"type": "ERROR", "object": {"code": 500, "message": "etcd down"}}', "etcd down"),
    ],
)
async def test_a_malformed_or_error_event_fails_the_watch_naming_it(
    line: bytes, message: str
) -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(CHUNKED_HEAD + chunk(line + b"\n") + b"0\r\n\r\n")

    async with RawServer(reply) as srv:
        with pytest.raises(APIError) as err:
            await events(srv.api)
    assert str(err.value).startswith(f"watch configmaps in namespace default: {message}")
    assert err.value.status == (500 if b"ERROR" in line else 0)


@pytest.mark.parametrize(
    "obj",
    [
        {"code": 410},
        {"reason": "Expired"},
        {"reason": "Gone", "message": "too old resource version: 1 (5)"},
    ],
)
def test_an_error_event_for_an_expired_version_is_gone(obj: dict[str, Any]) -> None:
    line = json.dumps({"type": "ERROR", "object": {"kind": "Status", **obj}}).encode()
    with pytest.raises(Gone) as err:
        _event(line, "configmaps")
    assert err.value.status == 410
    assert str(err.value) == "watch configmaps: " + obj.get("message", "410 Gone")


@pytest.mark.parametrize(
    ("status", "verb", "message"),
    [
        (403, "watch", "forbidden: the service account needs RBAC verb 'watch' on "),
        (403, "list", "forbidden: the service account needs RBAC verb 'list' on "),
        (500, "watch", "watch configmaps in namespace default: HTTP 500 boom"),
        (500, "list", "list configmaps in namespace default: HTTP 500 boom"),
    ],
)
async def test_an_error_answer_is_an_api_error_with_its_status(
    status: int, verb: str, message: str
) -> None:
    body = json.dumps({"kind": "Status", "code": status, "message": "boom"}).encode()

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(
            b"HTTP/1.1 %d Oops\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (status, len(body), body)
        )

    async with RawServer(reply) as srv:
        with pytest.raises(APIError) as err:
            if verb == "watch":
                await events(srv.api)
            else:
                await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert err.value.status == status
    assert str(err.value).startswith(message)
    if status == 403:
        assert str(err.value).endswith("configmaps in namespace default (boom)")


async def test_a_410_at_watch_open_is_gone() -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n")

    async with RawServer(reply) as srv:
        with pytest.raises(Gone):
            await events(srv.api)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "malformed JSON: "),
        (b"[]", "not a list of objects"),
        (b'{"items": {"a": 1}, "metadata": {}}', "not a list of objects"),
        (b'{"items": [], "metadata": [1]}', "not a list of objects"),
    ],
)
async def test_a_list_answer_that_is_not_a_list_fails_naming_it(body: bytes, message: str) -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(answer(body))

    async with RawServer(reply) as srv:
        with pytest.raises(APIError) as err:
            await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert err.value.status == 0
    assert str(err.value).startswith(f"list configmaps in namespace default: {message}")


async def test_a_list_without_version_or_items_and_a_page_over_1_mib() -> None:
    big = page(3, None, pad=600_000)  # over fetch's default max_body of 1 MiB
    bare = b'{"metadata": {}, "items": null}'

    async def reply(w: asyncio.StreamWriter, n: int) -> None:
        w.write(answer(big if n == 1 else bare))

    async with RawServer(reply) as srv:
        items, rv = await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
        assert len(items) == 3 and rv == "42"
        assert await asyncio.wait_for(srv.api.list("configmap", None, "a=1"), 10) == ([], "")
    assert srv.targets[1].split("?")[0] == "/api/v1/configmaps"


async def test_a_list_that_cannot_be_fetched_is_status_0() -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")  # then closed

    async with RawServer(reply) as srv:
        with pytest.raises(APIError) as err:
            await asyncio.wait_for(srv.api.list("configmap", "default", "a=1"), 10)
    assert err.value.status == 0
    assert str(err.value).startswith("list configmaps in namespace default: IncompleteReadError")


async def test_a_watch_that_cannot_connect_is_status_0() -> None:
    srv = RawServer(lambda w, n: asyncio.sleep(0))
    async with srv:
        api = srv.api
    # The server is closed now: connection refused.
    with pytest.raises(APIError) as err:
        await events(api)
    assert err.value.status == 0
    assert str(err.value).startswith(
        "watch configmaps in namespace default: ConnectionRefusedError"
    )


# --- the chunked reader alone -------------------------------------------------------


def _reader(data: bytes) -> asyncio.StreamReader:
    r = asyncio.StreamReader()
    r.feed_data(data)
    r.feed_eof()
    return r


async def test_the_chunked_reader_reads_pieces_and_stays_ended() -> None:
    c = kmod._Chunked(_reader(b"5\r\nhello\r\n2\r\n!!\r\n0\r\n\r\n"))
    assert [await c.read(3) for _ in range(6)] == [b"hel", b"lo", b"!!", b"", b"", b""]


@pytest.mark.parametrize("data", [b"zz\r\n", b"2\r\nabXY0\r\n\r\n"])
async def test_the_chunked_reader_names_a_malformed_body(data: bytes) -> None:
    from podkit.httpclient import HTTPClientError

    c = kmod._Chunked(_reader(data))
    with pytest.raises(HTTPClientError, match=r"^malformed chunked body$"):
        for _ in range(3):
            await c.read(10)


@pytest.mark.parametrize("before_head", [True, False])
async def test_a_server_that_stalls_is_an_idle_timeout(before_head: bool) -> None:
    """Not even a head (or, after it, not a byte): TimeoutError, which kubefiles relists on."""
    release = asyncio.Event()

    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        if not before_head:
            w.write(CHUNKED_HEAD)
        await asyncio.wait_for(release.wait(), 10)

    async with RawServer(reply) as srv:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            # The outer deadline, if reached, is a TimeoutError raised past
            # pytest.raises (it cancels inside it): the test fails.
            async with asyncio.timeout(5):
                with pytest.raises(TimeoutError):
                    await events(srv.api, idle=0.3)
        finally:
            release.set()
        assert loop.time() - start < 3


async def test_a_body_cut_mid_chunk_names_the_failure() -> None:
    async def reply(w: asyncio.StreamWriter, _n: int) -> None:
        w.write(CHUNKED_HEAD + b"10\r\nabc")  # then closed

    async with RawServer(reply) as srv:
        with pytest.raises(APIError) as err:
            await events(srv.api)
    assert err.value.status == 0
    assert str(err.value).startswith("watch configmaps in namespace default: IncompleteReadError: ")
