"""podkit.multiline.Joiner and the stdout/file sinks the tailer's consumers use."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from podkit.multiline import Joiner
from podkit.options import UsageError
from podkit.sinks import NdjsonBatch, open_sink, parse_retry_after


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
