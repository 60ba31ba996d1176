"""The HTTP sinks' policy over real HTTP (a local aiohttp server on loopback):
which statuses are retried, which are dead-lettered, and Retry-After."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from podkit.sinks import NdjsonBatch, open_sink


Judge = Callable[[web.Request, bytes], tuple[int, dict[str, str], str]]


class Server:
    """Answers from `script` (status, headers) in order, else from `judge`, else 200."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.judge: Judge | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.script:
            status, headers = self.script.pop(0)
            text = "{}"
        elif self.judge is not None:
            status, headers, text = self.judge(request, body)
        else:
            status, headers, text = 200, {}, "{}"
        return web.Response(status=status, headers=headers, text=text)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    app = web.Application()
    app.router.add_post("/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield srv, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    monkeypatch.setattr("podkit.sinks.asyncio.sleep", fake_sleep)
    return delays


BATCH = NdjsonBatch(b'{"message":"a"}\n{"message":"b"}\n', 2)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried_until_accepted(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path, status: int
) -> None:
    srv, url = server
    srv.script = [(status, {}), (status, {}), (200, {})]
    sink = open_sink(url, dead_letter=str(tmp_path / "dead"), retry_max_backoff=1.0)
    await sink.start()
    await sink.send(BATCH)
    await sink.close()
    assert len(srv.bodies) == 3 and len(sleeps) == 2
    assert sink.delivered == 2 and sink.dead_lettered == 0
    assert not (tmp_path / "dead").exists()


@pytest.mark.parametrize("status", [401, 403, 404, 405])
async def test_4xx_that_no_record_causes_dead_letters_the_batch_once(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path, status: int
) -> None:
    srv, url = server
    srv.script = [(status, {})]
    sink = open_sink(url, dead_letter=str(tmp_path / "dead"))
    await sink.start()
    await sink.send(BATCH)
    await sink.close()
    assert len(srv.bodies) == 1 and sleeps == []
    entries = [json.loads(x) for x in (tmp_path / "dead").read_text().splitlines()]
    assert [(e["status"], e["reason"], e["record"]["message"]) for e in entries] == [
        (status, "refused", "a"),
        (status, "refused", "b"),
    ]


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_content_refusal_splits_the_batch_and_retries_the_halves(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path, status: int
) -> None:
    srv, url = server
    srv.script = [(status, {})]  # then 200
    sink = open_sink(url, dead_letter=str(tmp_path / "dead"))
    await sink.start()
    await sink.send(BATCH)
    await sink.close()
    assert srv.bodies == [BATCH.ndjson(), b'{"message":"a"}\n', b'{"message":"b"}\n']
    assert sleeps == [] and sink.delivered == 2 and not (tmp_path / "dead").exists()


async def test_retry_after_is_honoured_over_the_backoff(
    server: tuple[Server, str], sleeps: list[float]
) -> None:
    srv, url = server
    srv.script = [(503, {"Retry-After": "7"}), (429, {"Retry-After": "3"}), (200, {})]
    sink = open_sink(url, retry_max_backoff=10.0)
    await sink.start()
    await sink.send(BATCH)
    await sink.close()
    # The backoff alone would wait at most 0.1 s, then 0.2 s: the server's wish wins.
    assert sleeps == [7.0, 3.0]


async def test_elasticsearch_actions_name_the_ids(server: tuple[Server, str]) -> None:
    srv, url = server
    sink = open_sink("elasticsearch+" + url + "/logs")
    await sink.start()
    srv.judge = lambda req, body: (200, {}, '{"took":1,"errors":false,"items":[]}')
    await sink.send(NdjsonBatch(b'{"m":1}\n{"m":2}\n', 2, ["id-1", 'id"2']))
    await sink.close()
    lines = srv.bodies[0].split(b"\n")
    assert [json.loads(x) for x in lines[:-1]] == [
        {"create": {"_id": "id-1"}},
        {"m": 1},
        {"create": {"_id": 'id"2'}},
        {"m": 2},
    ]
    assert lines[-1] == b""
