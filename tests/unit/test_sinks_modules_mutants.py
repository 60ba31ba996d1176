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
    with pytest.raises(ValueError, match=r"^one id per record$"):
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
    # an offset after the seconds is not read (podkit writes UTC only)
    assert record_time_ns("2023-11-14T22:13:20+00:00", cache) == base


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
    # only a trailing Z is taken off: a fraction with another letter is unreadable
    before = time.time_ns()
    assert before <= record_time_ns("2023-11-14T22:13:20.5X", cache) <= time.time_ns()


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


def test_a_torn_record_found_is_logged_with_its_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = tmp_path / "out"
    p.write_bytes(b"ok\ntorn")
    with caplog.at_level("WARNING", logger="podkit.sinks"):
        _AppendFile(str(p)).open()
        _AppendFile(str(tmp_path / "whole")).open()
    (rec,) = caplog.records
    assert rec.getMessage() == "file ended in a torn record; cutting it off"
    assert rec.path == str(p)  # type: ignore[attr-defined]
    assert rec.bytes == 4  # type: ignore[attr-defined]


def test_a_reopen_that_fails_is_tried_again(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    p = d / "out"
    f = _AppendFile(str(p))
    f.append(b"1\n")
    p.unlink()
    d.rmdir()
    for _ in range(2):
        with pytest.raises(_DiskError) as info:
            f.append(b"2\n")
        assert info.value.errno == errno.ENOENT
    d.mkdir()
    f.append(b"3\n")
    f.close()
    assert p.read_bytes() == b"3\n"


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
    # a newline written after `size` (the file grew meanwhile) is not counted,
    # in a block that does not start at 0 either
    data = b"a\n" + b"b" * 70_000 + b"\n" * 8
    p.write_bytes(data)
    assert _last_newline_end(str(p), 70_002) == 2


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
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)  # a real descriptor, the file's
        synced.append(fd)

    monkeypatch.setattr(appendfile_mod.os, "fsync", fsync)
    f = _AppendFile(str(tmp_path / "a"))
    f.append(b"x\n")
    f.close()
    assert synced == []
    g = _AppendFile(str(tmp_path / "b"), fsync=True)
    g.append(b"x\n")
    assert len(synced) == 1
    assert os.path.samestat(os.fstat(synced[0]), os.stat(tmp_path / "b"))
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
    assert "No such file or directory" in rec.error  # type: ignore[attr-defined]
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
    with pytest.raises(SinkClosed, match=r"^stdout: the reader closed the pipe$"):
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


# --- the HTTP family: a fake `_post` answers, the bodies are decoded --------


class _Posts:
    """Stands in for `_HTTPSink._post`: records each request, answers from a script."""

    def __init__(self, *answers: tuple[int, dict[str, str], bytes]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bytes, str, dict[str, str] | None]] = []

    async def __call__(
        self, url: str, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        self.calls.append((url, body, content_type, extra))
        return self.answers.pop(0)


def _es(**options: Any) -> Any:
    return open_sink("elasticsearch+http://127.0.0.1:9/logs", **options)


def test_the_elasticsearch_target_is_the_index_bulk_api() -> None:
    assert _es().target == "http://127.0.0.1:9/logs/_bulk"
    assert _es().index == "logs"
    s = open_sink("elasticsearch+https://es:9200/logs/?pipeline=p#frag")
    assert s.target == "https://es:9200/logs/_bulk?pipeline=p"  # type: ignore[attr-defined]
    for url in (
        "elasticsearch+http://es:9200",
        "elasticsearch+http://es:9200/",
        "elasticsearch+http://es/a/b",
    ):
        with pytest.raises(UsageError, match="name the index"):
            open_sink(url)
    assert type(s).wants_ids is True


def test_the_bulk_body_names_each_records_id() -> None:
    ids = ["a" * 40, "b" * 40]
    b = NdjsonBatch(b'{"m":1}\n{"m":"x"}\n', 2, ids)
    body = _es().encode(b)
    assert body == (
        b'{"create":{"_id":"' + b"a" * 40 + b'"}}\n{"m":1}\n'
        b'{"create":{"_id":"' + b"b" * 40 + b'"}}\n{"m":"x"}\n'
    )
    # the per-record overhead a producer counts is what the body adds
    assert len(body) - len(b.ndjson()) == 2 * type(_es()).record_overhead
    odd = _es().encode(NdjsonBatch(b"{}\n", 1, ['q"\\']))
    assert odd == b'{"create":{"_id":"q\\"\\\\"}}\n{}\n'


def test_the_bulk_body_without_ids_lets_elasticsearch_pick_them() -> None:
    b = NdjsonBatch(b'{"m":1}\n{"m":2}\n{"m":3}\n', 3)
    assert _es().encode(b) == (
        b'{"create":{}}\n{"m":1}\n{"create":{}}\n{"m":2}\n{"create":{}}\n{"m":3}\n'
    )
    assert _es().encode(RecordBatch([{"a": 1}])) == b'{"create":{}}\n{"a":1}\n'
    assert _es().encode(RecordBatch([])) == b""
    assert _es().encode(NdjsonBatch(b"", 0, [])) == b""


async def _es_answer(body: bytes | str, n: int = 1, status: int = 200) -> Any:
    s = _es()
    raw = body.encode() if isinstance(body, str) else body
    s._post = _Posts((status, {}, raw))
    batch = NdjsonBatch(b"{}\n" * n, n, [f"{i:040d}" for i in range(n)])
    out = await s._attempt(batch)
    url, sent, ctype, extra = s._post.calls[0]
    assert url == "http://127.0.0.1:9/logs/_bulk"
    assert sent == s.encode(batch)
    assert ctype == "application/x-ndjson"
    assert extra is None
    return out


async def test_a_bulk_response_without_errors_delivers_everything() -> None:
    out = await _es_answer('{"errors":false,"items":[]}', n=2)
    assert out == type(out)()
    out = await _es_answer('{"errors":false}', n=1, status=201)
    assert out.retry == [] and out.rejected == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("<html>proxy</html>", "HTTP 200 with a body that is not JSON"),
        ("[" * 100_000, "HTTP 200 with a body that is not JSON"),
        ('{"errors":false', "HTTP 200 with a body that is not JSON"),
        ('[{"errors":false}]', "bulk response is not a JSON object with an `errors` flag"),
        ("{}", "bulk response is not a JSON object with an `errors` flag"),
        ('{"errors":"false"}', "bulk response is not a JSON object with an `errors` flag"),
        ('{"errors":0}', "bulk response is not a JSON object with an `errors` flag"),
        ('{"errors":true}', "bulk response items do not match the request"),
        ('{"errors":true,"items":{}}', "bulk response items do not match the request"),
        ('{"errors":true,"items":[{}, {}]}', "bulk response items do not match the request"),
        ('{"errors":true,"items":[]}', "bulk response items do not match the request"),
    ],
)
async def test_a_malformed_bulk_response_sends_the_batch_again(body: str, why: str) -> None:
    from podkit.sinks import Retry

    with pytest.raises(Retry) as info:
        await _es_answer(body, n=1)
    assert info.value.reason == why
    assert info.value.kind == "response"
    assert info.value.retry_after is None


async def test_each_bulk_item_is_delivered_retried_or_refused() -> None:
    long_error = {"type": "es_rejected", "reason": "r" * 300}
    items = [
        {"create": {"status": 201}},
        {"create": {"status": 409, "error": {"type": "version_conflict"}}},
        {"create": {"status": 200}},
        {"create": {"status": 299}},
        {"create": {"status": 400, "error": {"type": "mapper_parsing"}}},
        {"create": {"status": 300}},
        {"create": {"status": 199}},
        {"create": {"status": 404}},
        {"create": {"status": 408}},
        {"create": {}},
        {},
        "not an object",
        {"create": {"status": True}},
        {"create": {"status": "201"}},
        {"create": "not an object"},
        {"index": {"status": 500}},
        {"create": {"status": 429, "error": long_error}},
    ]
    out = await _es_answer(json.dumps({"errors": True, "items": items}), n=len(items))
    assert out.retry == [8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert out.rejected == [
        (4, 400, '{"type":"mapper_parsing"}'),
        (5, 300, "status 300"),
        (6, 199, "status 199"),
        (7, 404, "status 404"),
    ]
    assert (
        out.retry_reason
        == "bulk item status 429: " + json.dumps(long_error, separators=(",", ":"))[:200]
    )
    assert out.retry_kind == "item"
    assert out.refused is None


async def test_the_reason_of_a_retried_item_is_its_status() -> None:
    out = await _es_answer('{"errors":true,"items":[{"create":{"status":503}}]}')
    assert out.retry == [0]
    assert out.retry_reason == "bulk item status 503: status 503"
    out = await _es_answer('{"errors":true,"items":[{"create":{"status":false}}]}')
    assert out.retry_reason == "bulk item status 0: status 0"


async def test_a_failed_bulk_request_is_judged_whole() -> None:
    from podkit.sinks import Retry

    with pytest.raises(Retry) as info:
        await _es_answer("busy", status=503)
    assert info.value.reason == "HTTP 503: busy" and info.value.kind == "http_5xx"
    out = await _es_answer("no", n=2, status=403)
    assert out.rejected == [(0, 403, "HTTP 403: no"), (1, 403, "HTTP 403: no")]
    out = await _es_answer("moved", n=1, status=301)
    assert out.rejected == [(0, 301, "HTTP 301: moved")]
    out = await _es_answer("", n=1, status=413)
    assert out.refused == (413, "HTTP 413")


# --- Loki --------------------------------------------------------------------


def test_record_field_reaches_into_objects() -> None:
    from podkit.sinks import record_field

    rec = {"a.b": 1, "labels": {"app": "web", "x": {"y": 2}}, "s": "str"}
    assert record_field(rec, "a.b") == 1
    assert record_field(rec, "labels.app") == "web"
    assert record_field(rec, "labels.x.y") == 2
    assert record_field(rec, "labels.nope") is None
    assert record_field(rec, "s.t") is None
    assert record_field(rec, "labels") == rec["labels"]
    assert record_field({"f": 0}, "f") == 0


def test_loki_label_names() -> None:
    from podkit.sinks import loki_label_name

    assert loki_label_name("labels.app") == "app"
    assert loki_label_name("a.b.c-d") == "c_d"
    assert loki_label_name("9lives") == "_9lives"
    assert loki_label_name("x.") == "_"
    assert loki_label_name("Ok_1") == "Ok_1"
    assert loki_label_name("é") == "_"


def _loki(**options: Any) -> Any:
    return open_sink("loki+http://127.0.0.1:9", **options)


def test_the_loki_target_and_options() -> None:
    s = _loki()
    assert s.target == "http://127.0.0.1:9/loki/api/v1/push"
    assert s.tenant is None and s.max_streams == 1000
    assert s.static_labels == {} and s.label_keys == [] and s.metadata_keys == []
    assert open_sink("loki+https://l/").target == "https://l/loki/api/v1/push"  # type: ignore[attr-defined]
    assert open_sink("loki+http://l/p/push?x=1").target == "http://l/p/push?x=1"  # type: ignore[attr-defined]
    assert _loki(tenant="").tenant is None
    assert _loki(max_streams="1").max_streams == 1
    for bad in (0, -1):
        with pytest.raises(UsageError, match="--loki-max-streams: must be positive"):
            _loki(max_streams=bad)
    assert type(s).content_type == "application/json"


def test_the_loki_push_body() -> None:
    s = _loki(labels={"job": "j"})
    recs: list[dict[str, Any]] = [
        {"time": "2023-11-14T22:13:20Z", "message": "plain", "file": "/l/a.log", "truncated": True},
        {
            "time": "2023-11-14T22:13:20.5Z",
            "message": "parsed",
            "level": "warn",
            "file": "/l/a.log",
            "labels": {"app": "web", "n": 1},
            "pod_labels": {"x": "y"},
            "pod_annotations": {"z": "w"},
        },
        {"time": 7, "message": 5, "labels": "not a dict"},
        {"time": 8, "message": "again", "file": "/l/a.log", "truncated": True},
    ]
    payload = json.loads(s.encode(RecordBatch(recs)))
    assert payload == {
        "streams": [
            {
                "stream": {"filename": "/l/a.log", "job": "j"},
                "values": [
                    ["1700000000000000000", "plain"],
                    ["8", "again"],
                ],
            },
            {
                "stream": {"app": "web", "filename": "/l/a.log", "job": "j", "n": "1"},
                "values": [
                    [
                        "1700000000500000000",
                        '{"message":"parsed","level":"warn","file":"/l/a.log"}',
                    ]
                ],
            },
            {"stream": {"job": "j"}, "values": [["7", '{"message":5}']]},
        ]
    }
    assert s.static_labels == {"job": "j"}  # not changed by a record's labels
    raw = _loki().encode(RecordBatch([{"time": 1, "message": "é \udcff"}]))
    assert raw == '{"streams":[{"stream":{},"values":[["1","é '.encode() + b'\xed\xb3\xbf"]]}]}'


def test_loki_labels_and_metadata_from_fields() -> None:
    events: list[tuple[str, int]] = []
    s = _loki(
        label_keys=["level", "labels.app"],
        metadata_keys=["trace", "user.id"],
        on_event=lambda k, n: events.append((k, n)),
    )
    recs: list[dict[str, Any]] = [
        {"time": 1, "message": "m", "level": "info", "trace": "t1", "user": {"id": 3}},
        {"time": 2, "message": "m", "labels": {"app": "web"}},
        {"time": 3, "message": "m"},
    ]
    payload = json.loads(s.encode(RecordBatch(recs)))
    assert payload["streams"] == [
        {
            "stream": {"level": "info"},
            "values": [
                [
                    "1",
                    '{"message":"m","level":"info","trace":"t1","user":{"id":3}}',
                    {"trace": "t1", "id": "3"},
                ]
            ],
        },
        {"stream": {"app": "web"}, "values": [["2", "m"]]},
        {"stream": {}, "values": [["3", "m"]]},
    ]
    assert events == []
    assert s.status()["streams"] == 2 and s.status()["label_overflow"] == 0


def test_loki_streams_past_the_limit_lose_their_field_labels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[tuple[str, int, str]] = []
    s = _loki(label_keys=["level"], max_streams=2)
    s.on_event = lambda k, n: events.append((k, n, s.reason))
    recs = [{"time": i, "message": "m", "level": lvl, "req": "r"} for i, lvl in enumerate("abcac")]
    with caplog.at_level("ERROR", logger="podkit.sinks"):
        payload = json.loads(s.encode(RecordBatch(recs)))
    streams = {json.dumps(x["stream"], sort_keys=True): x["values"] for x in payload["streams"]}
    assert streams['{"level": "a"}'] == [
        ["0", '{"message":"m","level":"a","req":"r"}'],
        ["3", '{"message":"m","level":"a","req":"r"}'],
    ]
    assert streams['{"level": "b"}'] == [["1", '{"message":"m","level":"b","req":"r"}']]
    assert streams["{}"] == [
        ["2", '{"message":"m","level":"c","req":"r"}', {"level": "c"}],
        ["4", '{"message":"m","level":"c","req":"r"}', {"level": "c"}],
    ]
    assert s.label_overflow == 2
    assert events == [("loki_label_overflow", 1, "max_streams")] * 2
    assert s.status()["streams"] == 2 and s.status()["label_overflow"] == 2
    (log_rec,) = [r for r in caplog.records if r.name == "podkit.sinks"]
    assert log_rec.getMessage() == (
        "too many Loki streams; sending records without their field labels"
    )
    assert log_rec.sink == s.safe_url  # type: ignore[attr-defined]
    assert log_rec.max_streams == 2  # type: ignore[attr-defined]
    assert log_rec.labels == ["level"]  # type: ignore[attr-defined]
    assert "streams" not in _loki().status() and "label_overflow" not in _loki().status()


def test_the_loki_time_cache_is_bounded() -> None:
    s = _loki()
    s._tcache = {str(i): i for i in range(9_999)}
    s.encode(RecordBatch([{"time": "2023-11-14T22:13:20Z", "message": "m"}]))
    assert len(s._tcache) == 10_000  # at the bound: kept
    s.encode(RecordBatch([{"time": "2023-11-14T22:13:21Z", "message": "m"}]))
    assert s._tcache == {}


async def test_the_loki_tenant_header() -> None:
    s = _loki(tenant="team-a")
    s._post = _Posts((204, {}, b""))
    b = RecordBatch([{"time": 1, "message": "m"}])
    assert await s._attempt(b) == type(await _es_answer('{"errors":false}'))()
    assert s._post.calls == [
        (
            "http://127.0.0.1:9/loki/api/v1/push",
            s.encode(b),
            "application/json",
            {"X-Scope-OrgID": "team-a"},
        )
    ]
    t = _loki()
    t._post = _Posts((500, {}, b"down"))
    from podkit.sinks import Retry

    with pytest.raises(Retry, match="HTTP 500: down"):
        await t._attempt(b)
    assert t._post.calls[0][3] is None


# --- OTLP ----------------------------------------------------------------------


def test_the_otlp_target_and_format() -> None:
    s = open_sink("otlp+http://c:4318")
    assert s.target == "http://c:4318/v1/logs"  # type: ignore[attr-defined]
    assert s.format == "protobuf" and s.content_type == "application/x-protobuf"  # type: ignore[attr-defined]
    assert s.resource == {}  # type: ignore[attr-defined]
    j = open_sink("otlp+https://c/x/logs?q=1", otlp_format="json", resource={"k": "v"})
    assert j.target == "https://c/x/logs?q=1"  # type: ignore[attr-defined]
    assert j.format == "json" and j.content_type == "application/json"  # type: ignore[attr-defined]
    assert j.resource == {"k": "v"}  # type: ignore[attr-defined]
    assert open_sink("otlp+http://c/").target == "http://c/v1/logs"  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="'xml' is not one of protobuf, json"):
        open_sink("otlp+http://c", otlp_format="xml")


def test_the_otlp_body_carries_each_records_time() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    s = open_sink("otlp+http://c", resource={"k8s.pod.name": "p"})
    body = s.encode(
        RecordBatch(
            [
                {"time": "2023-11-14T22:13:20.5Z", "message": "one"},
                {"time": 42, "message": "two"},
            ]
        )
    )
    req = ExportLogsServiceRequest.FromString(body)
    (rl,) = req.resource_logs
    assert [(a.key, a.value.string_value) for a in rl.resource.attributes] == [
        ("k8s.pod.name", "p")
    ]
    recs = [r for sl in rl.scope_logs for r in sl.log_records]
    assert [r.body.string_value for r in recs] == ["one", "two"]
    assert [r.time_unix_nano for r in recs] == [1_700_000_000_500_000_000, 42]
    j = open_sink("otlp+http://c", otlp_format="json")
    doc = json.loads(j.encode(RecordBatch([{"time": 5, "message": "m"}])))
    (rec,) = doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert rec["body"] == {"stringValue": "m"} and rec["timeUnixNano"] == "5"


def test_the_otlp_time_cache_is_bounded() -> None:
    s = open_sink("otlp+http://c")
    s._tcache = {str(i): i for i in range(9_999)}  # type: ignore[attr-defined]
    s.encode(RecordBatch([{"time": "2023-11-14T22:13:20Z", "message": "m"}]))
    assert len(s._tcache) == 10_000  # type: ignore[attr-defined]
    s.encode(RecordBatch([{"time": "2023-11-14T22:13:21Z", "message": "m"}]))
    assert s._tcache == {}  # type: ignore[attr-defined]


async def test_an_otlp_partial_success_is_logged_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = open_sink("otlp+http://c", otlp_format="json")
    body = b'{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"' + b"e" * 400 + b'"}}'
    s._post = _Posts((200, {}, body), (299, {}, b"{}"), (400, {}, b"bad"))  # type: ignore[method-assign]
    b = RecordBatch([{"time": 1, "message": "m"}, {"time": 2, "message": "n"}])
    with caplog.at_level("WARNING", logger="podkit.sinks"):
        out = await s._attempt(b)
    assert out.retry == [] and out.rejected == [] and out.refused is None
    (rec,) = [r for r in caplog.records if r.getMessage() == "collector rejected some log records"]
    assert rec.rejected == 2 and rec.error == "e" * 300  # type: ignore[attr-defined]
    assert rec.levelname == "WARNING"
    assert rec.sink == "otlp+http://c"  # type: ignore[attr-defined]
    calls = s._post.calls  # type: ignore[attr-defined]
    assert calls[0][0] == "http://c/v1/logs" and calls[0][2] == "application/json"
    assert calls[0][1] == s.encode(b)
    caplog.clear()
    with caplog.at_level("WARNING", logger="podkit.sinks"):
        out = await s._attempt(b)
    assert out.rejected == [] and not caplog.records
    out = await s._attempt(b)
    assert out.refused == (400, "HTTP 400: bad")


# --- the HTTP sink: a local server on loopback --------------------------------


class _Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        self.requests.append((request.path_qs, dict(request.headers), await request.read()))
        status, headers, body = self.answer
        return web.Response(status=status, headers=headers, body=body)


@pytest.fixture
async def http_server() -> Any:
    from tests.peers.aioapp import AppServer, app_of

    srv = _Server()
    async with AppServer(app_of(srv.handle, "POST")) as site:
        yield srv, f"127.0.0.1:{site.port}"


async def test_the_http_sink_posts_ndjson_with_its_headers(http_server: Any) -> None:
    srv, hostport = http_server
    s = open_sink(f"http://{hostport}/in?x=1", headers={"X-A": "1"}, timeout=5)
    await s.start()
    try:
        await asyncio.wait_for(s.send([{"a": 1}, {"b": 2}]), timeout=10)
    finally:
        await s.close()
    assert s._session is None  # type: ignore[attr-defined]
    ((path, headers, body),) = srv.requests
    assert path == "/in?x=1"
    assert body == b'{"a":1}\n{"b":2}\n'
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers["X-A"] == "1"
    assert "Content-Encoding" not in headers


async def test_the_http_sink_starts_its_session_on_the_first_send(http_server: Any) -> None:
    srv, hostport = http_server
    s = open_sink(f"http://{hostport}/", headers=["X-B: two"])
    try:
        await asyncio.wait_for(s.send([{"a": 1}]), timeout=10)
    finally:
        await s.close()
    assert srv.requests[0][1]["X-B"] == "two"
    assert s.timeout == 30.0  # type: ignore[attr-defined]


class _FakeSession:
    """Records what `_post` hands the client session (aiohttp's server would decode it)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, data: bytes, headers: dict[str, str]) -> Any:
        self.posts.append((url, data, headers))

        class _Resp:
            status = 202
            headers = {"X-R": "1"}

            async def read(self) -> bytes:
                return b"ok"

            async def __aenter__(self) -> Any:
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

        return _Resp()

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("how", ["gzip", "zstd", "none"])
async def test_a_compressed_body_says_so(how: str) -> None:
    import gzip

    import zstandard

    s: Any = open_sink("http://h/p", compress=how, headers={"X-H": "v"})
    s._session = fake = _FakeSession()
    got = await s._post("http://h/p", b"plain body", "text/x", {"X-E": "e"})
    assert got == (202, {"X-R": "1"}, b"ok")
    ((url, body, headers),) = fake.posts
    assert url == "http://h/p"
    want = {"Content-Type": "text/x", "X-H": "v", "X-E": "e"}
    if how == "gzip":
        assert gzip.decompress(body) == b"plain body"
        assert headers == {**want, "Content-Encoding": "gzip"}
    elif how == "zstd":
        assert zstandard.ZstdDecompressor().decompress(body) == b"plain body"
        assert headers == {**want, "Content-Encoding": "zstd"}
    else:
        assert body == b"plain body"
        assert headers == want


async def test_extra_headers_win_over_the_configured_ones() -> None:
    s: Any = open_sink("http://h/p", headers={"Content-Type": "a/b", "X-H": "v"})
    s._session = fake = _FakeSession()
    await s._post("http://h/p", b"x", "text/x", {"X-H": "w"})
    assert fake.posts[0][2] == {"Content-Type": "a/b", "X-H": "w"}


async def test_bearer_token_from_a_file_and_a_missing_one_retried(
    http_server: Any, tmp_path: Path
) -> None:
    from podkit.sinks import Retry

    srv, hostport = http_server
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    s = open_sink(f"http://{hostport}/", bearer_token_file=str(tok))
    try:
        await asyncio.wait_for(s.send([{"a": 1}]), timeout=10)
        assert srv.requests[0][1]["Authorization"] == "Bearer s3cret"
        tok.unlink()
        with pytest.raises(Retry) as info:
            await asyncio.wait_for(s._attempt(RecordBatch([{"a": 2}])), timeout=10)  # type: ignore[attr-defined]
        assert info.value.kind == "token"
        assert info.value.reason.startswith("cannot read credential file: ")
    finally:
        await s.close()
    assert len(srv.requests) == 1


def test_http_sink_options_are_checked(tmp_path: Path) -> None:
    assert open_sink("http://h/", compress="none").compress is None  # type: ignore[attr-defined]
    assert open_sink("http://h/").compress is None  # type: ignore[attr-defined]
    assert open_sink("http://h/", compress="gzip").compress == "gzip"  # type: ignore[attr-defined]
    assert open_sink("http://h/", timeout="2.5").timeout == 2.5  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="--compress: 'br' is not one of none, gzip, zstd"):
        open_sink("http://h/", compress="br")
    from podkit.sinks import LokiSink

    with pytest.raises(UsageError, match="expected http or https after"):
        LokiSink("loki+ftp://h/")
    with pytest.raises(UsageError, match="--client-cert-file: only for https sinks"):
        open_sink(
            "http://h/", client_cert_file=str(tmp_path / "c"), client_key_file=str(tmp_path / "k")
        )
    with pytest.raises(UsageError, match="unsupported option"):
        open_sink("http://h/", colour="blue")
    assert open_sink("https://h/x").target == "https://h/x"  # type: ignore[attr-defined]
    assert open_sink("loki+https://h/x").target == "https://h/x"  # type: ignore[attr-defined]


def test_auth_and_tls_groups_given_whole_or_in_parts(tmp_path: Path) -> None:
    from podkit.http import AuthOptions, TLSClientOptions
    from podkit.sinks import AUTH_NAMES, TLS_NAMES

    tok = tmp_path / "t"
    tok.write_text("x")
    auth = AuthOptions.of(AUTH_NAMES, bearer_token_file=str(tok))
    tls = TLSClientOptions.of(TLS_NAMES, insecure=True)
    s = open_sink("https://h/", auth=auth, tls=tls)
    assert s.auth is auth and s.tls is tls  # type: ignore[attr-defined]
    p = open_sink("https://h/", bearer_token_file=str(tok), insecure=True)
    assert p.auth.bearer_token_file == str(tok)  # type: ignore[attr-defined]
    assert p.tls.insecure is True  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="auth=: expected AuthOptions, got dict"):
        open_sink("https://h/", auth={})
    with pytest.raises(TypeError, match="tls=: expected TLSClientOptions, got AuthOptions"):
        open_sink("https://h/", tls=auth)
    with pytest.raises(UsageError, match="give auth= or its parts, not both"):
        open_sink("https://h/", auth=auth, bearer_token_file=str(tok))
    with pytest.raises(UsageError, match="give tls= or its parts, not both"):
        open_sink("https://h/", tls=tls, insecure=True)
    h = open_sink("http://h/", header_files={"X-K": str(tok)})
    assert h.auth.headers() == {"X-K": "x"}  # type: ignore[attr-defined]


def test_a_whole_response_is_judged_by_its_status() -> None:
    from podkit.sinks import Retry

    s: Any = open_sink("http://h/")
    b = RecordBatch([{"a": 1}, {"b": 2}])
    assert s._whole(b, 200, {}, b"x") == type(s._whole(b, 299, {}, b""))()
    assert s._whole(b, 299, {}, b"").rejected == []
    for status, kind in (
        (408, "http_408"),
        (429, "http_429"),
        (500, "http_5xx"),
        (503, "http_5xx"),
    ):
        with pytest.raises(Retry) as info:
            s._whole(b, status, {"Retry-After": "7"}, b"  busy \n")
        assert info.value.kind == kind
        assert info.value.reason == f"HTTP {status}: busy"
        assert info.value.retry_after == 7.0
    with pytest.raises(Retry) as info:
        s._whole(b, 502, {}, b"")
    assert info.value.reason == "HTTP 502" and info.value.retry_after is None
    for status in (400, 413, 422):
        out = s._whole(b, status, {}, b"no" * 200)
        assert out.refused == (status, f"HTTP {status}: " + "no" * 150)
        assert out.retry == [] and out.rejected == []
    out = s._whole(b, 401, {}, b"\xff")
    assert out.rejected == [(0, 401, "HTTP 401: \ufffd"), (1, 401, "HTTP 401: \ufffd")]
    assert out.refused is None
    assert s._whole(b, 199, {}, b"").rejected == [(0, 199, "HTTP 199"), (1, 199, "HTTP 199")]


# --- survivors of the first measured run of the HTTP family ---------------------


def test_the_credential_and_tls_parts_reach_their_groups(tmp_path: Path) -> None:
    pw, ca, cert, key = (tmp_path / n for n in ("pw", "ca", "cert", "key"))
    for f in (pw, ca, cert, key):
        f.write_text("x")
    s: Any = open_sink(
        "https://h/",
        username="u",
        password_file=str(pw),
        ca_file=str(ca),
        client_cert_file=str(cert),
        client_key_file=str(key),
    )
    assert (s.auth.basic_auth_user, s.auth.basic_auth_password_file) == ("u", str(pw))
    assert (s.tls.ca_file, s.tls.cert_file, s.tls.key_file) == (str(ca), str(cert), str(key))
    assert s.tls.insecure is False
    # the messages name the sink's parameters, not the groups' flags
    with pytest.raises(UsageError) as info:
        open_sink("https://h/", username="u")
    assert "password" in str(info.value) and "basic-auth" not in str(info.value)
    with pytest.raises(UsageError) as info:
        open_sink("https://h/", client_key_file=str(key))
    assert "client-cert-file" in str(info.value) and "--cert-file" not in str(info.value)


def test_only_the_sink_scheme_prefix_is_taken_off() -> None:
    from podkit.sinks import LokiSink

    assert open_sink("http://h/?next=http://x").target == "http://h/?next=http://x"  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="expected http or https after"):
        LokiSink("loki+x+http://h/")


class _Recorder:
    def __init__(self) -> None:
        self.ssl: list[tuple[Any, ...]] = []
        self.sessions: list[tuple[Any, ...]] = []
        self.closed = 0

    def ssl_context(self, *args: Any) -> Any:
        self.ssl.append(args)
        return ("ctx", len(self.ssl))

    def client_session(self, timeout: float, **kw: Any) -> Any:
        outer = self

        class _S(_FakeSession):
            async def close(self) -> None:
                outer.closed += 1

        self.sessions.append((timeout, kw))
        return _S()


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> _Recorder:
    from podkit.sinks import _http

    r = _Recorder()
    monkeypatch.setattr(_http, "ssl_context", r.ssl_context)
    monkeypatch.setattr(_http, "client_session", r.client_session)
    return r


async def test_start_builds_the_tls_context_and_session(rec: _Recorder, tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "c", tmp_path / "k", tmp_path / "ca"
    for f in (cert, key, ca):
        f.write_text("x")
    s: Any = open_sink(
        "https://h/",
        ca_file=str(ca),
        client_cert_file=str(cert),
        client_key_file=str(key),
        insecure=True,
        timeout=5,
    )
    await s.start()
    assert rec.ssl == [(str(ca), True, str(cert), str(key))]
    assert rec.sessions == [(5.0, {"connect_timeout": 5.0, "ssl_ctx": ("ctx", 1), "limit": 4})]
    assert s._cert_sig == s.tls.cert_signature() and len(s._cert_sig) == 2
    p: Any = open_sink("http://h/", timeout=60)
    await p.start()
    assert len(rec.ssl) == 1  # no TLS context for plain http
    assert rec.sessions[1] == (60.0, {"connect_timeout": 10.0, "ssl_ctx": None, "limit": 4})
    assert p._cert_sig is None


async def test_a_rotated_client_certificate_makes_a_new_session(
    rec: _Recorder, tmp_path: Path
) -> None:
    from podkit.sinks import Retry

    cert, key = tmp_path / "c", tmp_path / "k"
    cert.write_text("one")
    key.write_text("k")
    s: Any = open_sink("https://h/", client_cert_file=str(cert), client_key_file=str(key))
    await s._post("https://h/", b"x", "t")  # no session yet: started, nothing to compare
    assert len(rec.sessions) == 1 and rec.closed == 0
    await s._post("https://h/", b"x", "t")
    assert len(rec.sessions) == 1 and rec.closed == 0  # unchanged: the same session
    cert.write_text("two, longer")
    await s._post("https://h/", b"x", "t")
    assert len(rec.sessions) == 2 and rec.closed == 1
    cert.unlink()
    with pytest.raises(Retry) as info:
        await s._post("https://h/", b"x", "t")
    assert info.value.reason == "cannot read client certificate: No such file or directory"
    assert info.value.kind == "token"


async def test_a_client_certificate_that_cannot_be_loaded_is_retried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from podkit.sinks import Retry, _http

    def bad(*args: Any) -> Any:
        raise OSError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(_http, "ssl_context", bad)
    cert, key = tmp_path / "c", tmp_path / "k"
    cert.write_text("one")
    key.write_text("k")
    s: Any = open_sink("https://h/", client_cert_file=str(cert), client_key_file=str(key))
    with pytest.raises(Retry) as info:
        await s._post("https://h/", b"x", "t")
    assert info.value.reason.startswith("cannot load client certificate: ")
    assert "No such file or directory" in info.value.reason
    assert info.value.kind == "token"


def test_a_missing_zstandard_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(UsageError) as info:
        open_sink("http://h/", compress="zstd")
    assert str(info.value) == (
        "--compress zstd: the zstandard package is not installed "
        "(pip install zstandard, or use --compress gzip)"
    )


def test_a_missing_otlp_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "podkit.sinks_otlp", None)
    import podkit

    monkeypatch.delattr(podkit, "sinks_otlp", raising=False)
    with pytest.raises(UsageError) as info:
        open_sink("otlp+http://c")
    assert str(info.value).startswith(
        "--sink otlp+http://c: OTLP needs the opentelemetry-proto package "
        "(pip install 'podkit[logship]'): "
    )


async def test_a_300_is_not_a_success_for_any_http_sink() -> None:
    s: Any = open_sink("http://h/")
    b = RecordBatch([{"a": 1}])
    assert s._whole(b, 300, {}, b"").rejected == [(0, 300, "HTTP 300")]
    out = await _es_answer('{"errors":false}', n=1, status=300)
    assert out.rejected == [(0, 300, 'HTTP 300: {"errors":false}')]
    o: Any = open_sink("otlp+http://c", otlp_format="json")
    o._post = _Posts((300, {}, b"{}"), (503, {"Retry-After": "9"}, b""))
    assert (await o._attempt(b)).rejected == [(0, 300, "HTTP 300: {}")]
    from podkit.sinks import Retry

    with pytest.raises(Retry) as info:
        await o._attempt(b)
    assert info.value.retry_after == 9.0


async def test_loki_refusals_name_each_record() -> None:
    s: Any = _loki()
    s._post = _Posts((403, {}, b"no"))
    out = await s._attempt(RecordBatch([{"time": 1, "message": "a"}, {"time": 2, "message": "b"}]))
    assert out.rejected == [(0, 403, "HTTP 403: no"), (1, 403, "HTTP 403: no")]
    with pytest.raises(UsageError, match=r"^--loki-max-streams: must be positive$"):
        _loki(max_streams=0)


def test_a_record_with_every_standard_field_is_still_a_plain_line() -> None:
    rec = {
        "time": 1,
        "message": "m",
        "file": "/f",
        "labels": {},
        "truncated": True,
        "pod_labels": {},
        "pod_annotations": {},
    }
    payload = json.loads(_loki().encode(RecordBatch([rec])))
    assert payload["streams"][0]["values"] == [["1", "m"]]


def test_an_index_name_is_kept_whole() -> None:
    assert open_sink("elasticsearch+http://h/XlogsX").target == "http://h/XlogsX/_bulk"  # type: ignore[attr-defined]


def test_a_batch_with_fewer_ids_than_lines_is_not_sent_short() -> None:
    with pytest.raises(ValueError):
        _es().encode(NdjsonBatch(b"{}\n{}\n", 1, ["a"]))
