"""The HTTP sinks' policy over real HTTP (a local aiohttp server on loopback):
which statuses are retried, which are dead-lettered, and Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import io
import json
import random
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from podkit.sinks import NdjsonBatch, open_sink
from tests.helpers import wait_until_async
from tests.peers.aioapp import AppServer, app_of

Judge = Callable[[web.Request, bytes], tuple[int, dict[str, str], str]]


class Server:
    """Answers from `script` (status, headers) in order, else from `judge`, else 200."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.bodies: list[bytes] = []
        self.accepted: list[bytes] = []  # the bodies answered 2xx
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
        if 200 <= status < 300:
            self.accepted.append(body)
        return web.Response(status=status, headers=headers, text=text)


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, str]]:
    srv = Server()
    async with AppServer(app_of(srv.handle, "POST")) as site:
        yield srv, site.url


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
    sink = open_sink(url, retry_max_backoff=0.5)
    await sink.start()
    await sink.send(BATCH)
    await sink.close()
    # The backoff alone would wait at most 0.5 s: the server's wish wins.
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


# -- a refusal loses only what was refused (issue 13, class 6) ---------------------

POISON = 37


def hundred() -> NdjsonBatch:
    lines = [json.dumps({"message": f"m{i:03d}"}) for i in range(100)]
    lines[POISON] = json.dumps({"message": "poison"})
    return NdjsonBatch(("\n".join(lines) + "\n").encode(), 100, [f"id{i}" for i in range(100)])


def _refuse_poison(status: int) -> Judge:
    def judge(req: web.Request, body: bytes) -> tuple[int, dict[str, str], str]:
        return (status, {}, "no") if b"poison" in body else (200, {}, "{}")

    return judge


def _delivered(srv: Server) -> list[str]:
    """Messages in the requests that were answered 2xx, in order."""
    out: list[str] = []
    for body in srv.accepted:
        if body.startswith(b'{"streams"'):
            out += [v[1] for st in json.loads(body)["streams"] for v in st["values"]]
            continue
        docs = [json.loads(x) for x in body.splitlines()]
        out += [d["message"] for d in docs if "message" in d]
    return out


def _dead(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("scheme", "status"),
    [("", 400), ("", 413), ("", 422), ("loki+", 400), ("loki+", 413), ("elasticsearch+", 413)],
)
async def test_a_poison_record_alone_is_dead_lettered_its_99_neighbours_delivered(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path, scheme: str, status: int
) -> None:
    srv, url = server
    srv.judge = _refuse_poison(status)
    if scheme == "elasticsearch+":
        url += "/logs"
        ok = '{"took":1,"errors":false,"items":[]}'
        srv.judge = lambda req, body: (status, {}, "") if b"poison" in body else (200, {}, ok)
    events: list[tuple[str, int, str]] = []
    dead = tmp_path / "dead"
    sink = open_sink(scheme + url, dead_letter=str(dead), on_event=lambda k, n: None)
    sink.on_event = lambda k, n: events.append((k, n, sink.reason))
    await sink.start()
    await sink.send(hundred())
    await sink.close()
    want = [f"m{i:03d}" for i in range(100) if i != POISON]
    assert _delivered(srv) == want  # each once, in order
    [entry] = _dead(dead)
    assert entry["record"] == {"message": "poison"} and entry["status"] == status
    reason = "too_large" if status == 413 else "bad_request"
    assert entry["reason"] == reason
    assert sink.delivered == 99 and sink.dead_lettered == 1 and sleeps == []
    assert ("dead_letter", 1, reason) in events
    splits = [e for e in events if e[0] == "split"]
    assert splits and all(r == reason for _, _, r in splits)
    # Bisection: a handful of requests, not one per record.
    assert len(srv.bodies) <= 2 * 7 + 1


async def test_elasticsearch_item_refusals_dead_letter_only_those_items(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path
) -> None:
    srv, url = server

    def judge(req: web.Request, body: bytes) -> tuple[int, dict[str, str], str]:
        docs = body.splitlines()[1::2]
        items = [
            {"create": {"status": 400, "error": {"type": "mapper_parsing_exception"}}}
            if b"poison" in d
            else {"create": {"status": 201}}
            for d in docs
        ]
        return 200, {}, json.dumps({"took": 1, "errors": True, "items": items})

    srv.judge = judge
    dead = tmp_path / "dead"
    sink = open_sink("elasticsearch+" + url + "/logs", dead_letter=str(dead))
    await sink.start()
    await sink.send(hundred())
    await sink.close()
    assert len(srv.bodies) == 1 and sink.delivered == 99
    [entry] = _dead(dead)
    assert entry["record"] == {"message": "poison"} and "mapper_parsing" in entry["error"]


async def test_a_single_record_too_large_goes_to_the_dead_letter_file(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path
) -> None:
    srv, url = server
    srv.judge = lambda req, body: (413, {}, "") if len(body) > 100 else (200, {}, "ok")
    big = {"message": "x" * 200}
    sink = open_sink(url, dead_letter=str(tmp_path / "dead"))
    await sink.start()
    await sink.send([{"message": "a"}, big, {"message": "b"}])
    await sink.close()
    assert _delivered(srv) == ["a", "b"]
    [entry] = _dead(tmp_path / "dead")
    assert entry["record"] == big and entry["status"] == 413 and entry["reason"] == "too_large"


@pytest.mark.parametrize("scheme", ["", "loki+", "elasticsearch+"])
async def test_max_body_bytes_is_a_hard_cap_on_every_body(
    server: tuple[Server, str], sleeps: list[float], scheme: str
) -> None:
    srv, url = server
    if scheme == "elasticsearch+":
        url += "/logs"
        srv.judge = lambda req, body: (200, {}, '{"took":1,"errors":false,"items":[]}')
    cap = 600
    recs = [{"message": "y" * (i * 7 % 90), "labels": {"i": str(i)}} for i in range(60)]
    recs[20] = {"message": "z" * 1000}  # larger than the cap on its own
    sink = open_sink(scheme + url, max_body_bytes=cap, compress="gzip")
    await sink.start()
    await sink.send(recs)
    await sink.close()
    assert _delivered(srv) == [r["message"] for r in recs]
    for body in srv.bodies:  # aiohttp inflated them: sizes before compression
        assert len(body) <= cap or b"z" * 1000 in body, len(body)
    [alone] = [b for b in srv.bodies if b"z" * 1000 in b]
    assert _delivered_count(alone) == 1
    assert sink.splits > 0


def _delivered_count(body: bytes) -> int:
    if body.startswith(b'{"streams"'):
        return sum(len(st["values"]) for st in json.loads(body)["streams"])
    return sum(1 for x in body.splitlines() if b'"message"' in x)


# -- retry timing, asserted on the delays asked for ----------------------------------


class _Ceiling(random.Random):
    """Full jitter that always picks the ceiling: delays become exact."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_retry_after_is_capped_and_backoff_resets_after_a_success(
    server: tuple[Server, str],
) -> None:
    srv, url = server
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)

    sink = open_sink(url, retry_max_backoff=1.0, sleep=sleep, rng=_Ceiling())
    await sink.start()
    day = email.utils.format_datetime(datetime.now(UTC) + timedelta(days=1), usegmt=True)
    srv.script = [
        (503, {"Retry-After": "86400"}),  # a day: cut to retry_after_max (5 min)
        (503, {"Retry-After": day}),  # an HTTP date a day ahead: the same
        (503, {}),
        (503, {}),
        (503, {}),
        (200, {}),
    ]
    await sink.send(BATCH)
    assert delays == [300.0, 300.0, 0.4, 0.8, 1.0]
    # After a success the backoff starts again from its initial delay.
    delays.clear()
    srv.script = [(503, {}), (503, {}), (200, {})]
    await sink.send(BATCH)
    await sink.close()
    assert delays == [0.1, 0.2]
    assert sink.delivered == 4


async def test_retry_after_max_is_settable(server: tuple[Server, str]) -> None:
    srv, url = server
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)

    sink = open_sink(url, retry_max_backoff=1.0, retry_after_max=20.0, sleep=sleep)
    await sink.start()
    srv.script = [(429, {"Retry-After": "86400"}), (429, {"Retry-After": "5"})]
    await sink.send(BATCH)
    await sink.close()
    assert delays == [20.0, 5.0]


# -- failure paths the docs promise (issue 25) ----------------------------------------


async def test_a_dead_letter_file_that_cannot_be_written_holds_the_batch(
    server: tuple[Server, str], tmp_path: Path
) -> None:
    """send() does not return (so nothing is acknowledged) until the refused
    record is written; then the file holds it, once and whole."""
    srv, url = server
    srv.judge = _refuse_poison(400)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # so blocker/dead is ENOTDIR (root ignores permissions)
    dead = blocker / "dead"
    reasons: list[str] = []
    fixed = asyncio.Event()

    async def sleep(d: float) -> None:
        if len(reasons) >= 3 and not fixed.is_set():
            blocker.unlink()
            blocker.mkdir()
            fixed.set()
        await asyncio.sleep(0)

    sink = open_sink(url, dead_letter=str(dead), sleep=sleep)
    sink.on_event = lambda k, n: reasons.append(sink.reason) if k == "retry" else None
    await sink.start()
    task = asyncio.create_task(sink.send([{"message": "ok"}, {"message": "poison"}]))
    await asyncio.wait_for(fixed.wait(), 10)
    await asyncio.wait_for(task, 10)
    await sink.close()
    assert set(reasons) == {"dead_letter_write"} and len(reasons) >= 3
    assert sink.last_error is None and sink.delivered == 1 and sink.dead_lettered == 1
    assert [e["record"] for e in _dead(dead)] == [{"message": "poison"}]


async def test_a_dead_letter_file_never_written_keeps_send_from_returning(
    server: tuple[Server, str], tmp_path: Path
) -> None:
    srv, url = server
    srv.judge = _refuse_poison(400)
    (tmp_path / "f").write_text("")

    async def sleep(d: float) -> None:
        await asyncio.sleep(0)

    sink = open_sink(url, dead_letter=str(tmp_path / "f" / "dead"), sleep=sleep)
    await sink.start()
    task = asyncio.create_task(sink.send([{"message": "poison"}]))
    await wait_until_async(lambda: sink.retries >= 5 or task.done(), what="5 retries")
    assert not task.done() and "cannot write dead-letter file" in (sink.last_error or "")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await sink.close()
    assert sink.dead_lettered == 0


@pytest.mark.parametrize(
    "answer",
    [
        "<html>bad gateway</html>",  # not JSON
        "[1, 2]",  # not an object
        '{"took": 1}',  # no errors flag
        '{"errors": true, "items": [1]}',  # items do not match the request
        '{"errors": true, "items": [{"create": {"status": "x"}}, {"create": {}}]}',
        "[" * 100_000,  # deep enough to exhaust the recursion limit
    ],
)
async def test_a_malformed_elasticsearch_bulk_response_is_retried_not_fatal(
    server: tuple[Server, str], sleeps: list[float], tmp_path: Path, answer: str
) -> None:
    srv, url = server
    answers = [answer]

    def judge(req: web.Request, body: bytes) -> tuple[int, dict[str, str], str]:
        if answers:
            return 200, {}, answers.pop()
        return 200, {}, '{"took":1,"errors":false,"items":[]}'

    srv.judge = judge
    dead = tmp_path / "dead"
    sink = open_sink("elasticsearch+" + url + "/logs", dead_letter=str(dead))
    await sink.start()
    await sink.send(NdjsonBatch(b'{"m":1}\n{"m":2}\n', 2, ["a", "b"]))
    await sink.close()
    assert len(srv.bodies) == 2 and len(sleeps) == 1
    # Sent again whole, with the same ids: what was stored answers 409.
    assert srv.bodies[1] == srv.bodies[0]
    assert sink.delivered == 2 and sink.dead_lettered == 0 and not dead.exists()


async def test_an_unreadable_token_file_is_retried_until_it_appears(
    server: tuple[Server, str], tmp_path: Path
) -> None:
    srv, url = server
    token = tmp_path / "token"
    reasons: list[str] = []

    async def sleep(d: float) -> None:
        if len(reasons) == 3:
            token.write_text("t0ken\n")
        await asyncio.sleep(0)

    sink = open_sink(url, bearer_token_file=str(token), sleep=sleep)
    sink.on_event = lambda k, n: reasons.append(sink.reason) if k == "retry" else None
    await sink.start()
    await asyncio.wait_for(sink.send(BATCH), 10)
    await sink.close()
    assert reasons == ["token"] * 3
    assert len(srv.bodies) == 1 and srv.headers[0]["Authorization"] == "Bearer t0ken"
    assert sink.delivered == 2


# -- files: whole records only (issue 13, class 5) ------------------------------------


def test_a_torn_last_record_is_cut_off_when_the_file_is_opened(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    out.write_bytes(b'{"m":1}\n{"m":2}\n{"m":3, "tor')  # a kill during a write

    async def go() -> None:
        sink = open_sink(f"file://{out}")
        await sink.start()
        await sink.send([{"m": 3}])
        await sink.close()

    asyncio.run(go())
    assert out.read_bytes() == b'{"m":1}\n{"m":2}\n{"m":3}\n'


_FSIZE_CHILD = """
import asyncio, json, resource, sys
from podkit.sinks import open_sink

out, limit = sys.argv[1], int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
recs = [{"m": f"record-{i:04d}-" + "p" * 40} for i in range(200)]
delays = []

async def sleep(d):
    delays.append(d)
    if len(delays) == 3:
        # Space freed: the soft limit raised, as an operator would grow the volume.
        print(open(out, "rb").read().endswith(b"\\n"), flush=True)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

async def main():
    sink = open_sink("file://" + out, sleep=sleep)
    sink.on_event = lambda k, n: print(k, sink.reason, flush=True) if k == "retry" else None
    await sink.start()
    for i in range(0, 200, 20):
        await sink.send(recs[i : i + 20])
    await sink.close()

asyncio.run(main())
"""


def test_rlimit_fsize_mid_record_leaves_no_torn_record(tmp_path: Path) -> None:
    """EFBIG after a short write up to RLIMIT_FSIZE: cut back, retried, each record once."""
    out = tmp_path / "out.ndjson"
    limit = 5000  # not a record boundary: the write that crosses it is short
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(out), str(limit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout.splitlines()
    assert said == ["retry disk"] * 3 + ["True"], said  # whole records while stuck
    got = [json.loads(x)["m"] for x in out.read_text().splitlines()]
    assert got == [f"record-{i:04d}-" + "p" * 40 for i in range(200)]


async def test_stdout_is_written_off_the_event_loop() -> None:
    threads: list[str] = []

    class Stream(io.BytesIO):
        def write(self, b: Any) -> int:
            threads.append(threading.current_thread().name)
            return super().write(b)

    stream = Stream()
    sink = open_sink("stdout://", stream=stream)
    await sink.send([{"m": 1}])
    assert stream.getvalue() == b'{"m":1}\n'
    assert threads and threads[0] != threading.main_thread().name


# -- logship's batcher cuts by the measured size -------------------------------------


@pytest.mark.parametrize(
    ("lines", "room", "over", "want"),
    [
        (10, 100, 0, (12, 3)),  # all of it fits
        (2, 100, 0, (8, 2)),  # the line limit binds
        (10, 9, 0, (8, 2)),  # cut at the last newline that fits
        (10, 3, 0, (0, 0)),  # not one record fits
        (10, 12, 1, (8, 2)),  # the per-record overhead counts: 3 records would be 15
        (10, 15, 1, (12, 3)),
        (0, 100, 0, (0, 0)),
    ],
)
def test_batches_are_cut_at_record_boundaries_by_measured_size(
    lines: int, room: int, over: int, want: tuple[int, int]
) -> None:
    from podkit.sidecars.logship import _cut

    data = b"aaa\nbbb\nccc\n"
    assert _cut(data, 0, lines, room, over) == want
    assert _cut(data, 4, 10, 4, 0) == (8, 1)  # from a position inside
