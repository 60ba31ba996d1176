"""podkit.multiline.Joiner and the stdout/file sinks the tailer's consumers use."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from podkit.multiline import Joiner
from podkit.options import UsageError
from podkit.sinks import (
    Batch,
    NdjsonBatch,
    Outcome,
    RecordBatch,
    Retry,
    Sink,
    open_sink,
    parse_retry_after,
)


def test_joiner_groups_by_start_and_counts_bytes() -> None:
    j = Joiner(r"^\S", max_lines=10, timeout=1)
    lines = ["A", " a1", " a2", "B", " b1"]
    sizes = [len(s) + 1 for s in lines]
    out, trunc, consumed = j.feed(lines, sizes, now=0)
    assert out == ["A\n a1\n a2"] and trunc == [] and consumed == 10
    assert j.pending_bytes == 6 and not j.due(0.5) and j.due(1.0)
    out, _, consumed = j.flush()
    assert out == ["B\n b1"] and consumed == 6 and j.pending_bytes == 0


def test_joiner_max_lines_and_max_chars() -> None:
    j = Joiner(r"^S", max_lines=3, timeout=1, max_chars=10)
    out, trunc, consumed = j.feed(["S", "1", "2", "3", "4"], [2] * 5)
    assert out == ["S\n1\n2"]
    j2 = Joiner(r"^S", max_lines=100, max_chars=10)
    j2.feed(["S123456789", "overflow"], [11, 9])
    out, trunc, consumed = j2.flush()
    assert out == ["S123456789"] and trunc == [0] and consumed == 20


def test_joiner_orphan_continuations_form_a_record() -> None:
    j = Joiner(r"^S")
    out, _, _ = j.feed([" orphan", " more", "S"], [8, 6, 2])
    assert out == [" orphan\n more"]


def test_stdout_sink_writes_ndjson() -> None:
    buf = io.BytesIO()
    sink = open_sink("stdout://", stream=buf)

    async def go() -> None:
        await sink.start()
        await sink.send([{"message": "é", "n": 1}, {"message": "two"}])
        await sink.close()

    import asyncio

    asyncio.run(go())
    lines = buf.getvalue().decode().splitlines()
    assert [json.loads(x) for x in lines] == [{"message": "é", "n": 1}, {"message": "two"}]


async def test_file_sink_appends_and_reopens(tmp_path: Path) -> None:
    out = tmp_path / "out.ndjson"
    sink = open_sink(f"file://{out}")
    await sink.start()
    await sink.send([{"a": 1}])
    out.rename(tmp_path / "rotated.ndjson")  # someone rotated it
    await sink.send(NdjsonBatch(b'{"b":2}\n', 1))
    await sink.close()
    assert json.loads((tmp_path / "rotated.ndjson").read_text()) == {"a": 1}
    assert json.loads(out.read_text()) == {"b": 2}
    assert sink.delivered == 2


def test_unknown_scheme_and_bad_file_url() -> None:
    with pytest.raises(UsageError, match=r"--sink.*unsupported scheme 'ftp'"):
        open_sink("ftp://x")
    with pytest.raises(UsageError, match="--sink"):
        open_sink("file://host/x")
    with pytest.raises(UsageError, match="unsupported option"):
        open_sink("stdout://", bogus=1)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


class _Scripted(Sink):
    """A sink whose attempts follow a script, to test the shared delivery policy."""

    schemes = ()

    def __init__(self, script: list[object], **kw: object) -> None:
        super().__init__("scripted://x", **kw)  # type: ignore[arg-type]
        self.script = script
        self.seen: list[list[str]] = []

    async def _attempt(self, batch: Batch) -> Outcome:
        self.seen.append([r["m"] for r in batch.records()])
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, Outcome)
        return step


async def test_policy_retries_honours_retry_after_and_dead_letters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []

    async def fake_sleep(d: float) -> None:
        delays.append(d)

    monkeypatch.setattr("podkit.sinks.asyncio.sleep", fake_sleep)
    events: list[tuple[str, int]] = []
    dead = tmp_path / "dead.ndjson"
    sink = _Scripted(
        [
            ConnectionRefusedError("refused"),
            Retry("HTTP 503", retry_after=7.0),
            Outcome(retry=[2], rejected=[(1, 400, "bad doc")], retry_reason="item 429"),
            Outcome(),
        ],
        dead_letter=str(dead),
        retry_max_backoff=2.0,
        on_event=lambda k, n: events.append((k, n)),
    )
    await sink.send([{"m": "a"}, {"m": "b"}, {"m": "c"}])
    # Whole batch twice, then only the item to retry; "b" went to the dead-letter file.
    assert sink.seen == [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["c"]]
    assert len(delays) == 3 and delays[0] <= 0.1 and delays[1] == 7.0 and delays[2] <= 0.4
    entry = json.loads(dead.read_text())
    assert entry["status"] == 400 and entry["record"] == {"m": "b"}
    assert sink.delivered == 2 and sink.dead_lettered == 1 and sink.retries == 3
    assert ("dead_letter", 1) in events and events.count(("retry", 1)) == 3


def test_elasticsearch_body_interleaves_create_actions() -> None:
    sink = open_sink("elasticsearch+http://127.0.0.1:9200/logs")
    body = sink.encode(NdjsonBatch(b'{"a":1}\n{"b":"x\\ny"}\n', 2))  # type: ignore[attr-defined]
    assert body == b'{"create":{}}\n{"a":1}\n{"create":{}}\n{"b":"x\\ny"}\n'
    assert sink.target == "http://127.0.0.1:9200/logs/_bulk"  # type: ignore[attr-defined]


def test_loki_body_groups_streams_with_ns_strings() -> None:
    sink = open_sink("loki+http://127.0.0.1:3100", tenant="t")
    recs = [
        {"time": "2026-11-26T06:00:00.000000001Z", "message": "m1", "file": "/a", "labels": {}},
        {"time": "2026-11-26T06:00:00.5Z", "message": "m2", "file": "/b", "labels": {"x": "1"}},
    ]
    body = json.loads(sink.encode(RecordBatch(recs)))  # type: ignore[attr-defined]
    assert body == {
        "streams": [
            {"stream": {"filename": "/a"}, "values": [["1795672800000000001", "m1"]]},
            {"stream": {"filename": "/b", "x": "1"}, "values": [["1795672800500000000", "m2"]]},
        ]
    }
    assert sink.target == "http://127.0.0.1:3100/loki/api/v1/push"  # type: ignore[attr-defined]
