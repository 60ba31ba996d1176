"""Tests that kill mutants of the sink modules besides the delivery policy.

Each asserts on what a sink delivers (the exact bytes or records) or on what
a file holds afterwards: a silent bug in these modules loses or duplicates
log records. In-process only (mutmut cannot see a subprocess), fast, on
tmp_path.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from podkit.options import UsageError
from podkit.sinks import NdjsonBatch, RecordBatch, SinkClosed, as_batch, open_sink
from podkit.sinks import _appendfile as appendfile_mod
from podkit.sinks._appendfile import _AppendFile, _DiskError, _last_newline_end
from podkit.sinks._batch import Batch, _halves, _subset, record_time_ns

# --- _batch -----------------------------------------------------------------


def test_the_abstract_batch_says_what_is_missing() -> None:
    b = Batch()
    for call in (lambda: len(b), b.ndjson, b.records):
        with pytest.raises(NotImplementedError):
            call()
    assert b.ids is None


def test_a_record_batch_encodes_compact_utf8_ndjson_once() -> None:
    recs: list[dict[str, Any]] = [{"msg": "é ✓", "n": 1}, {"a": [1, 2], "b": None}]
    b = RecordBatch(recs)
    body = b.ndjson()
    assert body == '{"msg":"é ✓","n":1}\n{"a":[1,2],"b":null}\n'.encode()
    assert b.ndjson() is body  # encoded once, kept
    assert len(b) == 2
    assert b.records() is recs
    assert b.lines() == [b'{"msg":"\xc3\xa9 \xe2\x9c\x93","n":1}', b'{"a":[1,2],"b":null}']
    assert b.ids is None


def test_a_lone_surrogate_is_passed_through_not_an_error() -> None:
    # surrogateescape'd bytes read from a log: kept, not a crash of the sink.
    b = RecordBatch([{"m": "\udcff"}])
    assert b.ndjson() == b'{"m":"\xed\xb3\xbf"}\n'


def test_an_empty_batch_is_empty_bytes_and_no_lines() -> None:
    b = RecordBatch([])
    assert b.ndjson() == b""
    assert b.ndjson() == b""
    assert b.lines() == []
    assert len(b) == 0
    n = NdjsonBatch(b"", 0)
    assert n.records() == []
    assert n.lines() == []


def test_an_ndjson_batch_parses_its_records_with_or_without_the_last_newline() -> None:
    b = NdjsonBatch(b'{"a":1}\n{"b":"x\\ny"}\n', 2, ["i1", "i2"])
    assert b.records() == [{"a": 1}, {"b": "x\ny"}]
    assert b.ids == ["i1", "i2"]
    assert len(b) == 2
    assert b.ndjson() == b'{"a":1}\n{"b":"x\\ny"}\n'
    assert NdjsonBatch(b'{"a":1}\n{"b":2}', 2).records() == [{"a": 1}, {"b": 2}]
    assert NdjsonBatch(b'{"a":1}', 1).records() == [{"a": 1}]
    assert NdjsonBatch(b"{}\n", 1).ids is None


def test_an_ndjson_batch_needs_one_id_per_record() -> None:
    with pytest.raises(ValueError, match="one id per record"):
        NdjsonBatch(b"{}\n{}\n", 2, ["only-one"])
    assert NdjsonBatch(b"{}\n{}\n", 2, ["a", "b"]).ids == ["a", "b"]


def test_as_batch_keeps_a_batch_and_copies_a_list() -> None:
    b = NdjsonBatch(b"{}\n", 1)
    assert as_batch(b) is b
    recs: list[dict[str, Any]] = [{"a": 1}]
    got = as_batch(recs)
    recs.append({"b": 2})  # the caller reusing its list does not change the batch
    assert got.records() == [{"a": 1}]
    assert got.ndjson() == b'{"a":1}\n'


def test_halves_cut_a_batch_in_two_with_their_ids() -> None:
    body = b"".join(b'{"i":%d}\n' % i for i in range(5))
    b = NdjsonBatch(body, 5, [f"id{i}" for i in range(5)])
    first, second = _halves(b)
    assert first.ndjson() == b'{"i":0}\n{"i":1}\n'
    assert second.ndjson() == b'{"i":2}\n{"i":3}\n{"i":4}\n'
    assert (len(first), len(second)) == (2, 3)
    assert first.ids == ["id0", "id1"]
    assert second.ids == ["id2", "id3", "id4"]
    one, rest = _halves(RecordBatch([{"x": 1}, {"y": 2}]))
    assert one.records() == [{"x": 1}] and rest.records() == [{"y": 2}]
    assert one.ids is None and rest.ids is None


def test_a_subset_picks_the_lines_asked_for() -> None:
    b = NdjsonBatch(b"{}\n[1]\n[2]\n", 3, ["a", "b", "c"])
    s = _subset(b, [2, 0])
    assert s.ndjson() == b"[2]\n{}\n"
    assert len(s) == 2
    assert s.ids == ["c", "a"]
    empty = _subset(b, [])
    assert empty.ndjson() == b"" and len(empty) == 0 and empty.ids == []


def test_record_time_ns_parses_rfc3339_utc() -> None:
    cache: dict[str, int] = {}
    base = 1_700_000_000 * 1_000_000_000  # 2023-11-14T22:13:20Z
    assert record_time_ns("2023-11-14T22:13:20Z", cache) == base
    assert record_time_ns("2023-11-14T22:13:20.5Z", cache) == base + 500_000_000
    assert record_time_ns("2023-11-14T22:13:20.123456789Z", cache) == base + 123_456_789
    assert record_time_ns("2023-11-14T22:13:20.1234567891Z", cache) == base + 123_456_789
    assert record_time_ns("2023-11-14T22:13:20.000001", cache) == base + 1_000
    assert cache["2023-11-14T22:13:20.5Z"] == base + 500_000_000
    assert record_time_ns(12, cache) == 12
    assert record_time_ns(12.9, cache) == 12
    assert record_time_ns(True, cache) == 1


def test_record_time_ns_uses_the_cache_and_now_for_what_it_cannot_read() -> None:
    cache = {"2023-11-14T22:13:20Z": 42}
    assert record_time_ns("2023-11-14T22:13:20Z", cache) == 42
    cache["zero"] = 0
    assert record_time_ns("zero", cache) == 0  # a cached 0 is a hit, not a miss
    before = time.time_ns()
    got = record_time_ns("not a time", cache)
    after = time.time_ns()
    assert before <= got <= after
    assert cache["not a time"] == got
    assert record_time_ns("not a time", cache) == got
    for value in (None, ["x"], {"a": 1}):
        before = time.time_ns()
        assert before <= record_time_ns(value, cache) <= time.time_ns()
    assert set(cache) == {"2023-11-14T22:13:20Z", "zero", "not a time"}


# --- _appendfile ------------------------------------------------------------


def test_append_creates_the_file_and_appends_whole_records(tmp_path: Path) -> None:
    p = tmp_path / "out.ndjson"
    old = os.umask(0o022)
    try:
        f = _AppendFile(str(p))
        f.append(b'{"a":1}\n')
        f.append(b'{"b":2}\n')
    finally:
        os.umask(old)
    assert p.read_bytes() == b'{"a":1}\n{"b":2}\n'
    assert p.stat().st_mode & 0o777 == 0o644
    f.close()
    f.close()  # twice is harmless
    assert f._fd is None


def test_an_existing_file_is_appended_to_not_overwritten(tmp_path: Path) -> None:
    p = tmp_path / "out"
    p.write_bytes(b"old\n")
    f = _AppendFile(str(p))
    f.open()
    f.append(b"new\n")
    f.close()
    assert p.read_bytes() == b"old\nnew\n"


def test_a_torn_last_record_is_cut_before_the_next_write(tmp_path: Path) -> None:
    p = tmp_path / "out"
    p.write_bytes(b'{"a":1}\n{"b":')
    f = _AppendFile(str(p))
    f.open()
    assert p.read_bytes() == b'{"a":1}\n{"b":'  # cut on the write, not the open
    f.append(b'{"c":3}\n')
    assert p.read_bytes() == b'{"a":1}\n{"c":3}\n'
    f.append(b'{"d":4}\n')
    assert p.read_bytes() == b'{"a":1}\n{"c":3}\n{"d":4}\n'
    f.close()


def test_a_file_without_any_newline_is_cut_to_nothing(tmp_path: Path) -> None:
    p = tmp_path / "out"
    p.write_bytes(b'{"torn":')
    f = _AppendFile(str(p))
    f.append(b"x\n")
    f.close()
    assert p.read_bytes() == b"x\n"


def test_a_whole_file_is_not_cut(tmp_path: Path) -> None:
    p = tmp_path / "out"
    p.write_bytes(b"a\nb\n")
    f = _AppendFile(str(p))
    f.open()
    assert f._cut is None
    f.append(b"c\n")
    f.close()
    assert p.read_bytes() == b"a\nb\nc\n"


def test_the_last_newline_is_found_across_blocks(tmp_path: Path) -> None:
    p = tmp_path / "big"
    data = b"x" * 10 + b"\n" + b"y" * 200_000
    p.write_bytes(data)
    assert _last_newline_end(str(p), len(data)) == 11
    p.write_bytes(b"z" * 70_000)
    assert _last_newline_end(str(p), 70_000) == 0
    data = b"a" * 65_536 + b"\n" + b"b" * 65_535
    p.write_bytes(data)
    assert _last_newline_end(str(p), len(data)) == 65_537
    data = b"\n" + b"b" * 65_536
    p.write_bytes(data)
    assert _last_newline_end(str(p), len(data)) == 1
    # `size` bounds the search: bytes past it are not looked at
    p.write_bytes(b"a\nbc\nd")
    assert _last_newline_end(str(p), 3) == 2
    assert _last_newline_end(str(p), 0) == 0


def test_the_file_is_reopened_after_a_rotation_or_removal(tmp_path: Path) -> None:
    p = tmp_path / "out"
    f = _AppendFile(str(p))
    f.append(b"1\n")
    p.rename(tmp_path / "out.1")
    f.append(b"2\n")
    assert p.read_bytes() == b"2\n"
    assert (tmp_path / "out.1").read_bytes() == b"1\n"
    p.unlink()
    f.append(b"3\n")
    assert p.read_bytes() == b"3\n"
    f.append(b"4\n")
    assert p.read_bytes() == b"3\n4\n"
    f.close()


def test_a_reopened_file_with_a_torn_record_is_cut(tmp_path: Path) -> None:
    p = tmp_path / "out"
    f = _AppendFile(str(p))
    f.append(b"1\n")
    p.rename(tmp_path / "out.1")
    p.write_bytes(b"ok\ntorn")
    f.append(b"2\n")
    f.close()
    assert p.read_bytes() == b"ok\n2\n"


def test_a_failed_write_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "out"
    f = _AppendFile(str(p))
    f.append(b"first\n")
    real_write = os.write
    calls = []

    def short_then_full(fd: int, data: Any) -> int:
        calls.append(bytes(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:3]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(appendfile_mod.os, "write", short_then_full)
    with pytest.raises(_DiskError) as info:
        f.append(b"second\n")
    assert info.value.errno == errno.ENOSPC
    assert str(p) in str(info.value) and "No space left on device" in str(info.value)
    assert calls == [b"second\n", b"ond\n"]  # the short write was continued
    assert p.read_bytes() == b"first\n"
    monkeypatch.setattr(appendfile_mod.os, "write", real_write)
    f.append(b"third\n")
    f.close()
    assert p.read_bytes() == b"first\nthird\n"


def test_short_writes_are_continued_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "out"
    f = _AppendFile(str(p))
    real_write = os.write
    monkeypatch.setattr(appendfile_mod.os, "write", lambda fd, d: real_write(fd, bytes(d[:2])))
    f.append(b"abcdefg\n")
    f.close()
    assert p.read_bytes() == b"abcdefg\n"


def test_a_cut_that_fails_is_made_before_the_next_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "out"
    f = _AppendFile(str(p))
    f.append(b"first\n")
    real_write, real_truncate = os.write, os.ftruncate

    def torn(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[:2]))
        raise OSError(errno.EIO, "Input/output error")

    def cannot(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "no")

    monkeypatch.setattr(appendfile_mod.os, "write", torn)
    monkeypatch.setattr(appendfile_mod.os, "ftruncate", cannot)
    with pytest.raises(_DiskError):
        f.append(b"second\n")
    assert p.read_bytes() == b"first\nse"
    assert f._cut == 6
    monkeypatch.setattr(appendfile_mod.os, "write", real_write)
    monkeypatch.setattr(appendfile_mod.os, "ftruncate", real_truncate)
    f.append(b"third\n")
    assert f._cut is None
    f.append(b"fourth\n")
    f.close()
    assert p.read_bytes() == b"first\nthird\nfourth\n"


def test_an_oserror_without_strerror_still_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "out"
    f = _AppendFile(str(p))

    def boom(fd: int, data: Any) -> int:
        raise OSError("plain")

    monkeypatch.setattr(appendfile_mod.os, "write", boom)
    with pytest.raises(_DiskError) as info:
        f.append(b"x\n")
    assert info.value.errno is None
    assert info.value.strerror == f"{p}: plain"
    f.close()


def test_fsync_is_called_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    monkeypatch.setattr(appendfile_mod.os, "fsync", synced.append)
    f = _AppendFile(str(tmp_path / "a"))
    f.append(b"x\n")
    f.close()
    assert synced == []
    g = _AppendFile(str(tmp_path / "b"), fsync=True)
    g.append(b"x\n")
    assert len(synced) == 1
    g.close()


def test_a_non_regular_file_is_never_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cuts: list[tuple[int, int]] = []
    monkeypatch.setattr(appendfile_mod.os, "ftruncate", lambda fd, n: cuts.append((fd, n)))
    f = _AppendFile(os.devnull)
    f.append(b"x\n")

    def boom(fd: int, data: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(appendfile_mod.os, "write", boom)
    with pytest.raises(_DiskError):
        f.append(b"y\n")
    assert cuts == []
    assert f._cut is None
    f.close()


# --- _local -----------------------------------------------------------------


async def test_the_file_sink_appends_ndjson(tmp_path: Path) -> None:
    p = tmp_path / "logs.ndjson"
    sink = open_sink(f"file://{p}")
    await sink.start()
    await sink.send([{"a": 1}, {"b": "é"}])
    await sink.send(NdjsonBatch(b'{"c":3}\n', 1))
    await sink.close()
    assert p.read_bytes() == '{"a":1}\n{"b":"é"}\n{"c":3}\n'.encode()


async def test_the_file_sink_accepts_localhost_and_refuses_other_hosts(tmp_path: Path) -> None:
    p = tmp_path / "x"
    sink = open_sink(f"file://localhost{p}")
    assert sink.path == str(p)  # type: ignore[attr-defined]
    await sink.close()
    with pytest.raises(UsageError, match="use file:///absolute/path"):
        open_sink(f"file://otherhost{p}")
    for url in ("file://", f"file://{tmp_path}/"):
        with pytest.raises(UsageError, match="a file path is required"):
            open_sink(url)


async def test_the_file_sink_fsync_option(tmp_path: Path) -> None:
    a = open_sink(f"file://{tmp_path}/a")
    b = open_sink(f"file://{tmp_path}/b", fsync=True)
    assert a.fsync is False and a._file.fsync is False  # type: ignore[attr-defined]
    assert b.fsync is True and b._file.fsync is True  # type: ignore[attr-defined]
    await a.close()
    await b.close()


async def test_the_file_sink_starts_when_its_directory_is_missing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "later" / "out"
    sink = open_sink(f"file://{p}")
    with caplog.at_level("WARNING", logger="podkit.sinks"):
        await sink.start()
    assert any(r.getMessage() == "cannot open sink file yet" for r in caplog.records)
    rec = next(r for r in caplog.records if r.getMessage() == "cannot open sink file yet")
    assert rec.path == str(p)  # type: ignore[attr-defined]
    (tmp_path / "later").mkdir()
    await sink.send([{"a": 1}])
    await sink.close()
    assert p.read_bytes() == b'{"a":1}\n'


async def test_the_file_sink_writes_concurrent_sends_in_call_order(tmp_path: Path) -> None:
    p = tmp_path / "o"
    sink = open_sink(f"file://{p}")
    await asyncio.wait_for(asyncio.gather(*(sink.send([{"i": i}]) for i in range(20))), timeout=10)
    await sink.close()
    assert [json.loads(x)["i"] for x in p.read_bytes().splitlines()] == list(range(20))


async def test_the_stdout_sink_writes_to_its_stream() -> None:
    out = io.BytesIO()
    sink = open_sink("stdout:", stream=out)
    await asyncio.wait_for(sink.send([{"a": 1}, {"b": 2}]), timeout=10)
    assert out.getvalue() == b'{"a":1}\n{"b":2}\n'
    await sink.close()


async def test_the_stdout_sink_defaults_to_standard_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.BytesIO()

    class Std:
        buffer = out

    monkeypatch.setattr(sys, "stdout", Std)
    sink = open_sink("stdout:")
    await asyncio.wait_for(sink.send([{"a": 1}]), timeout=10)
    assert out.getvalue() == b'{"a":1}\n'


class _Flushless(io.BytesIO):
    """A stream that keeps what is flushed apart from what is only written."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = b""

    def flush(self) -> None:
        self.flushed = self.getvalue()


async def test_the_stdout_sink_flushes_each_batch() -> None:
    out = _Flushless()
    sink = open_sink("stdout:", stream=out)
    await asyncio.wait_for(sink.send([{"a": 1}]), timeout=10)
    assert out.flushed == b'{"a":1}\n'


class _Closed(io.BytesIO):
    def write(self, data: Any) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


async def test_a_closed_pipe_closes_the_stdout_sink() -> None:
    sink = open_sink("stdout:", stream=_Closed())
    with pytest.raises(SinkClosed, match="stdout: the reader closed the pipe"):
        await asyncio.wait_for(sink.send([{"a": 1}]), timeout=10)


async def test_a_closed_standard_output_is_pointed_at_devnull(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fd 1 stands in for by a file of ours: dup2 onto it, as the sink would onto fd 1.
    target = tmp_path / "fd"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)

    class Std:
        buffer = _Closed()

        def fileno(self) -> int:
            return fd

    monkeypatch.setattr(sys, "stdout", Std())
    sink = open_sink("stdout:")
    try:
        with pytest.raises(SinkClosed):
            await asyncio.wait_for(sink.send([{"a": 1}]), timeout=10)
        os.write(fd, b"after")
        assert target.read_bytes() == b""  # fd now writes to /dev/null
        assert os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    finally:
        os.close(fd)
