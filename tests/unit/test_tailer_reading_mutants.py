"""podkit.tailer.reading under mutation testing (docs/testing.md, issue 25).

What a reading bug does: a line lost, repeated, cut or joined wrongly, or a
chunk whose byte span is off (the checkpoint then resumes in the wrong place).
The reader is driven here one round at a time on the test's own thread
(`_discover`, `_read_round`, `_flush_due` called directly, the queue emptied
as `chunks()` would), so each test sees exactly one interleaving of writes
and reads, without timing. The asserted spans are checked against the file's
own bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from podkit.tailer import Chunk, Tailer
from podkit.tailer.files import FINGERPRINT_BYTES, _File
from tests.unit.test_tailer import cfg, write


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


def tailer(tmp_path: Path, **kw: Any) -> Tailer:
    """A tailer that has discovered its files and not read yet (no task, no watcher)."""
    t = Tailer(cfg(tmp_path, **kw))
    t._discover(initial=True)
    return t


def taken(t: Tailer) -> list[Chunk]:
    """What the queue holds, taken as chunks() takes it."""
    out = []
    while not t._queue.empty():
        c = t._queue.get_nowait()
        assert c is not None
        t._queued -= c.nbytes
        out.append(c)
    return out


def read(t: Tailer) -> list[Chunk]:
    t._read_round(time.monotonic())
    return taken(t)


def only(t: Tailer) -> _File:
    assert len(t._files) == 1
    return t._files[0]


def texts(chunks: list[Chunk]) -> list[str]:
    return [x for c in chunks for x in c.texts]


def spans(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in chunks]


# -- lines, spans, counters -------------------------------------------------------


def test_lines_positions_and_counters(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\ntwo\nthree\n")
    t = tailer(tmp_path)
    f = only(t)
    got = read(t)
    assert texts(got) == ["one", "two", "three"]
    assert [(c.path, c.start, c.end, c.nbytes) for c in got] == [(str(logs / "a.log"), 0, 14, 14)]
    assert not got[0].truncated and got[0].read_time_ns > 0
    assert (f.read_pos, f.emit_pos, f.ack_pos, f.size) == (14, 14, 0, 14)
    assert (t.lines_read, t.bytes_read, t.truncated_lines) == (3, 14, 0)
    assert t._inflight == 14 and t._queued == 0
    assert list(f.outstanding) == got
    assert f.at_eof
    # A line without its newline is held, and its time kept.
    write(logs / "a.log", "fo")
    before = time.monotonic()
    assert read(t) == []
    assert (f.read_pos, f.emit_pos) == (16, 14)
    assert f.split.pending and before <= f.carry_since <= time.monotonic()
    write(logs / "a.log", "ur\nfive\n")
    got = read(t)
    assert texts(got) == ["four", "five"]
    assert spans(got) == [(14, 24)]
    assert (t.lines_read, t.bytes_read, t._inflight) == (5, 24, 24)
    t.ack(got[0])
    assert f.ack_pos == 0  # the first chunk is not acknowledged yet
    assert t._inflight == 14


def test_a_round_reads_a_fair_share_in_chunk_bytes_reads(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "aaa\n" * 5)
    write(logs / "b.log", "bbb\n" * 5)
    t = tailer(tmp_path, chunk_bytes=4, fair_share_bytes=8)
    a, b = t._files
    got = read(t)
    # 8 bytes of each (two reads of 4), then the next file's turn.
    assert (a.read_pos, b.read_pos) == (8, 8)
    assert texts(got) == ["aaa", "aaa", "bbb", "bbb"]
    assert not a.at_eof and not b.at_eof
    assert t._read_round(time.monotonic()) is True  # something read: progress
    got = read(t)
    assert (a.read_pos, b.read_pos) == (20, 20)
    assert a.at_eof and b.at_eof
    assert t.lines_read == 10
    assert read(t) == []
    assert t._read_round(time.monotonic()) is False  # nothing new: no progress


def test_a_short_read_ends_the_files_turn(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "x" * 5 + "\n")  # 6 bytes
    t = tailer(tmp_path, chunk_bytes=4, fair_share_bytes=100)
    f = only(t)
    reads: list[tuple[int, int]] = []
    real = f.read_at

    def counted(n: int, pos: int) -> bytes:
        reads.append((n, pos))
        return real(n, pos)

    f.read_at = counted  # type: ignore[method-assign]
    assert texts(read(t)) == ["xxxxx"]
    assert reads == [(4, 0), (4, 4)]  # the second read came back short: no third
    assert f.at_eof


def test_reading_pauses_when_the_consumer_is_behind(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "line\n" * 10)
    write(logs / "b.log", "line\n" * 10)
    t = tailer(tmp_path, chunk_bytes=5, max_queue_bytes=10)
    a, b = t._files
    assert t._read_round(time.monotonic()) is True
    # Two reads of 5 bytes fill the queue: nothing more, not even from b.
    assert (a.read_pos, b.read_pos) == (10, 0)
    assert t._full()
    assert t._read_round(time.monotonic()) is True  # full: "progressed", so no sleep
    assert (a.read_pos, b.read_pos) == (10, 0)
    taken(t)
    t._read_round(time.monotonic())
    assert (a.read_pos, b.read_pos) == (20, 0)


def test_unacknowledged_bytes_pause_reading(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "line\n" * 10)
    t = tailer(tmp_path, chunk_bytes=5, max_buffer_bytes=15)
    f = only(t)
    got = read(t)
    assert f.read_pos == 15 and t._inflight == 15
    assert read(t) == []
    for c in got:
        t.ack(c)
    assert f.ack_pos == 15
    read(t)
    assert f.read_pos == 30


def test_a_closed_file_or_one_waiting_for_its_predecessor_is_not_read(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "a\n")
    write(logs / "b.log", "b\n")
    t = tailer(tmp_path)
    a, b = t._files
    t._files = [b, a]  # b's turn comes first in a round
    b.after = a  # b continues a (a rotation): a first, to its end
    assert t._ready(a) and not t._ready(b)
    got = read(t)
    assert texts(got) == ["a"]  # b waits for the next round
    assert a.at_eof and t._ready(b)
    assert texts(read(t)) == ["b"]
    write(logs / "b.log", "b2\n")
    b.after = None
    b.twin = a  # a copy of a followed file is not read while that one is
    assert not t._ready(b)
    assert read(t) == []
    b.twin = None
    write(logs / "a.log", "a2\n")
    a.closed = True
    assert texts(read(t)) == ["b2"]
    a.closed = False
    b.after = a
    a.at_eof = False
    a.close()  # closed: its successor goes on
    assert t._ready(b)


# -- errors -----------------------------------------------------------------------


def test_a_read_error_is_counted_once_until_a_read_works(
    tmp_path: Path, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(logs / "a.log", "one\ntwo\n")
    t = tailer(tmp_path, chunk_bytes=4)
    f = only(t)
    real = f.read_at
    fail: dict[str, int | None] = {"at": 4}

    def flaky(n: int, pos: int) -> bytes:
        if fail["at"] is not None and pos >= fail["at"]:
            raise OSError(5, "Input/output error")
        return real(n, pos)

    f.read_at = flaky  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, "podkit.tailer")
    assert t._read_file(f, 100) is True  # 4 bytes came before the error
    assert texts(taken(t)) == ["one"]
    assert t.read_errors == 1 and f.read_failing
    assert t._read_file(f, 100) is False  # nothing came
    assert t.read_errors == 1  # the same failure, not counted again
    assert not f.at_eof  # an error is not the end of the file
    records = [r for r in caplog.records if r.getMessage() == "read failed"]
    assert [(r.path, r.error) for r in records] == [  # type: ignore[attr-defined]
        (str(logs / "a.log"), "[Errno 5] Input/output error")
    ]
    fail["at"] = None
    assert t._read_file(f, 100) is True
    assert texts(taken(t)) == ["two"]
    assert not f.read_failing
    fail["at"] = 8
    write(logs / "a.log", "three\n")
    t._read_file(f, 100)
    assert t.read_errors == 2  # failing again after a read worked: counted again


def test_a_file_that_cannot_be_looked_at_is_not_read(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\n")
    t = tailer(tmp_path)
    f = only(t)
    fd = f.fd
    f.fd = 10**6  # EBADF
    try:
        assert t._read_file(f, 100) is False
        assert f.read_pos == 0 and t.read_errors == 0
        assert t._at_end(f) is True  # nothing more can be read from it
    finally:
        f.fd = fd


# -- end of file, sizes, truncation ------------------------------------------------


def test_end_of_file_is_noted_once_with_its_time(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\n")
    t = tailer(tmp_path, chunk_bytes=2)
    f = only(t)
    assert not f.at_eof
    before = time.monotonic()
    read(t)
    assert f.at_eof and before <= f.eof_since <= time.monotonic()
    since = f.eof_since
    read(t)
    assert f.eof_since == since  # still at the end: when it got there stays
    write(logs / "a.log", "two\n")
    t._read_file(f, 2)  # half of it
    assert not f.at_eof
    t._read_file(f, 100)
    assert f.at_eof and f.eof_since > since


def test_size_follows_the_file_and_what_was_read(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\n")
    t = tailer(tmp_path)
    f = only(t)
    write(logs / "a.log", "two\n")  # after discovery's stat
    assert f.size == 4
    real = f.read_at

    def growing(n: int, pos: int) -> bytes:
        if pos == 0:
            write(logs / "a.log", "three\n")  # grows between fstat and read
        return real(n, pos)

    f.read_at = growing  # type: ignore[method-assign]
    assert texts(read(t)) == ["one", "two", "three"]
    assert f.read_pos == 14 and f.size == 14  # not the 8 the fstat said
    assert t.lag_bytes == 14


def test_truncation_is_seen_and_read_from_the_start(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "first line\nsecond line\n")
    t = tailer(tmp_path)
    f = only(t)
    read(t)
    os.truncate(logs / "a.log", 0)
    write(logs / "a.log", "new\n")  # shorter than what was read
    assert texts(read(t)) == ["new"]
    assert t.truncations == 1
    assert (f.read_pos, f.emit_pos) == (4, 4)
    assert read(t) == []
    assert t.truncations == 1


def test_truncated_and_regrown_past_the_offset_while_idle_at_the_end(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "first\n")
    t = tailer(tmp_path)
    f = only(t)
    read(t)
    assert f.at_eof
    with open(logs / "a.log", "r+b") as fh:  # same inode, other first bytes, longer
        fh.write(b"other first line\nand more\n")
    assert texts(read(t)) == ["other first line", "and more"]
    assert t.truncations == 1
    # Growth with the same first bytes is just growth.
    write(logs / "a.log", "appended\n")
    assert texts(read(t)) == ["appended"]
    assert t.truncations == 1


def test_growth_mid_file_is_not_checked_for_a_rewrite(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "first\nsecond\n")
    t = tailer(tmp_path, chunk_bytes=6, fair_share_bytes=6)
    f = only(t)
    assert texts(read(t)) == ["first"]
    assert not f.at_eof
    checked: list[bool] = []
    real = f.fingerprint_matches

    def spy() -> bool:
        checked.append(True)
        return real()

    f.fingerprint_matches = spy  # type: ignore[method-assign]
    write(logs / "a.log", "third\n")
    while not f.at_eof:
        read(t)
    assert checked == []  # not at the end: the fingerprint is not read again
    read(t)
    assert checked == []  # at the end, not grown: nor now
    write(logs / "a.log", "fourth\n")
    read(t)
    assert checked == [True]


def test_fingerprint_grows_with_a_short_file(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "short\n")
    t = tailer(tmp_path)
    f = only(t)
    read(t)
    assert f.fp_len == 6 and f.fp == hashlib.sha1(b"short\n").digest()
    write(logs / "a.log", "x" * 300 + "\n")
    read(t)
    head = (logs / "a.log").read_bytes()[:FINGERPRINT_BYTES]
    assert f.fp_len == FINGERPRINT_BYTES and f.fp == hashlib.sha1(head).digest()


def test_the_tail_is_the_last_bytes_read(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "ab\n")
    t = tailer(tmp_path, chunk_bytes=100)
    f = only(t)
    read(t)
    assert f.tail == b"ab\n"
    write(logs / "a.log", "c" * 300 + "\n")  # a read longer than TAIL_BYTES
    read(t)
    assert f.tail == (logs / "a.log").read_bytes()[-256:]
    write(logs / "a.log", "dd\n")  # a short read after it: the tail slides
    read(t)
    assert f.tail == (logs / "a.log").read_bytes()[-256:]
    write(logs / "b.log", "x" * 256)  # exactly TAIL_BYTES in one read
    t = tailer(tmp_path, chunk_bytes=1000)
    t._files[1].tail = b"old"
    read(t)
    assert t._files[1].tail == b"x" * 256


# -- held lines -------------------------------------------------------------------


def test_a_held_line_is_handed_on_after_the_timeout_at_the_end_only(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", "whole\npart")
    t = tailer(tmp_path, partial_flush_timeout=5.0, chunk_bytes=8, fair_share_bytes=8)
    f = only(t)
    assert texts(read(t)) == ["whole"]
    since = f.carry_since
    # More of the file unread: the held line is not the last one.
    t._flush_due(since + 100)
    assert taken(t) == []
    read(t)
    assert f.read_pos == 10
    f.carry_since = 1000.0  # when the held line was last grown
    t._flush_due(1004.99)
    assert taken(t) == []
    t._flush_due(1005.0)
    got = taken(t)
    assert texts(got) == ["part"] and spans(got) == [(6, 10)]
    assert f.partial_at == 10  # the checkpoint says: skip the newline that ends it
    assert not f.split.pending
    t._flush_due(1100.0)
    assert taken(t) == []  # handed on once
    write(logs / "a.log", "\nnext\n")
    got = read(t)
    assert texts(got) == ["next"] and spans(got) == [(10, 16)]


def test_a_held_over_long_line_is_handed_on_cut(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "ok\n" + "y" * 50)
    t = tailer(tmp_path, max_line_bytes=10, partial_flush_timeout=0.0)
    f = only(t)
    assert texts(read(t)) == ["ok"]
    t._flush_due(time.monotonic())
    got = taken(t)
    assert texts(got) == ["y" * 10]
    assert got[0].truncated == frozenset({0}) and got[0].lines[0].truncated
    assert spans(got) == [(3, 53)]
    assert f.partial_at == -1  # the rest of the line is still skipped, not a newline
    assert t.truncated_lines == 1
    write(logs / "a.log", "y" * 5 + "\nafter\n")
    got = read(t)
    assert texts(got) == ["after"] and spans(got) == [(53, 65)]
    assert t.truncated_lines == 1


def test_the_last_line_of_a_copy_goes_out_at_its_end(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\nlast")
    t = tailer(tmp_path, partial_flush_timeout=60)
    f = only(t)
    f.is_copy = True  # copytruncate's copy: nobody writes to it any more
    got = read(t)
    assert texts(got) == ["one", "last"]
    assert spans(got) == [(0, 4), (4, 8)]


def test_at_end_compares_with_the_size(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "one\n")
    t = tailer(tmp_path)
    f = only(t)
    assert not t._at_end(f)
    read(t)
    assert t._at_end(f)
    write(logs / "a.log", "x")
    assert not t._at_end(f)


# -- long lines, max_chunk_lines ---------------------------------------------------


def test_a_cut_line_and_split_chunks_keep_exact_spans(tmp_path: Path, logs: Path) -> None:
    raw = b"a\n" + b"z" * 30 + b"\nb\nc\nd\ne\n"
    write(logs / "a.log", raw)
    t = tailer(tmp_path, max_line_bytes=8, max_chunk_lines=2, chunk_bytes=12)
    got = read(t)
    assert texts(got) == ["a", "z" * 8, "b", "c", "d", "e"]
    # The first chunk after the cut takes the skipped bytes: spans stay contiguous.
    assert spans(got) == [(0, 2), (2, 35), (35, 39), (39, 41)]
    assert [c.truncated for c in got] == [frozenset(), frozenset({0}), frozenset(), frozenset()]
    assert sum(c.nbytes for c in got) == len(raw)
    assert t.truncated_lines == 1


@pytest.mark.parametrize("most", [0, 2, 3, 4])
def test_max_chunk_lines_splits_a_read_into_exact_spans(
    tmp_path: Path, logs: Path, most: int
) -> None:
    lines = [b"1", b"22", b"\xc3\xa9\xff", b"4444", b"", b"666666", b"7"]
    raw = b"".join(x + b"\n" for x in lines)
    write(logs / "a.log", raw)
    t = tailer(tmp_path, max_chunk_lines=most, identify=True)
    got = read(t)
    n = most or len(lines)
    assert [len(c) for c in got] == [min(n, len(lines) - i) for i in range(0, len(lines), n)]
    ends = [sum(len(x) + 1 for x in lines[: i + 1]) for i in range(len(lines))]
    assert [c.end for c in got] == [ends[min(i + n, len(lines)) - 1] for i in range(0, 7, n)]
    assert got[0].start == 0
    starts = [0, *ends[:-1]]
    assert [s for c in got for s in c.starts or []] == starts


def test_a_long_line_before_a_block_belongs_to_the_first_chunk(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", b"q" * 20)  # over-long, no newline yet: skipped as it comes
    t = tailer(tmp_path, max_line_bytes=5, max_chunk_lines=2, chunk_bytes=1000)
    assert read(t) == []
    write(logs / "a.log", b"qq\nb\nc\nd\ne\nf\n")
    got = read(t)
    assert texts(got) == ["qqqqq", "b", "c", "d", "e", "f"]
    assert spans(got) == [(0, 25), (25, 29), (29, 33)]
    assert got[0].truncated == frozenset({0})


# -- identify: where each line starts ---------------------------------------------


def test_identify_gives_the_files_identity_and_line_starts(tmp_path: Path, logs: Path) -> None:
    raw = b"one\n\xff\xfe bad\n" + "é".encode() * 3 + b"\n\n"
    write(logs / "a.log", raw)
    t = tailer(tmp_path, identify=True)
    f = only(t)
    (c,) = read(t)
    st = os.stat(logs / "a.log")
    assert c.file_key == (st.st_dev, st.st_ino) == f.key
    assert c.file_head == raw
    assert c.starts == [0, 4, 11, 18]
    t2 = tailer(tmp_path)
    (c2,) = read(t2)
    assert c2.file_key is None and c2.file_head == b"" and c2.starts is None


def test_identify_starts_of_cut_and_flushed_lines(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", b"x" * 20 + b"\nab\npart")
    t = tailer(tmp_path, identify=True, max_line_bytes=10, partial_flush_timeout=0.0)
    (c,) = read(t)
    assert c.texts == ["x" * 10, "ab"] and c.starts == [0, 21]
    t._flush_due(time.monotonic())
    (c,) = taken(t)
    assert c.texts == ["part"] and c.starts == [24]
    write(logs / "a.log", b"\nnext\nmore\n")
    (c,) = read(t)
    # The span begins with the newline of the line flushed before: not a line.
    assert c.texts == ["next", "more"] and (c.start, c.end) == (28, 39)
    assert c.starts == [29, 34]


def test_identify_starts_when_the_file_changed_under_the_reader(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", b"one\ntwo\n")
    t = tailer(tmp_path, identify=True)
    f = only(t)
    assert t._starts(f, ["one", "two"], 0, 8, None) == [0, 4]
    assert t._starts(f, ["one"], 0, 8, None) is None  # not as many lines as texts
    assert t._starts(f, ["one", "two"], 0, 9, None) is None  # past the end: short read
    assert t._starts(f, ["x", "y"], 0, 8, [3, 5]) == [0, 3]  # sizes given: taken
    # Sizes that do not add up: split from the file's bytes instead.
    assert t._starts(f, ["x", "y"], 0, 8, [3, 4]) == [0, 4]
    assert t._starts(f, ["x"], 0, 8, [3, 5]) is None  # nor count
    assert t._starts(f, ["one", "two"], 2, 8, [4, 4]) == [2, 6]
    # A span starting with a newline that is a line of its own (an empty line).
    write(logs / "b.log", b"\nx\n")
    t = tailer(tmp_path, identify=True)
    g = t._files[1]
    assert t._starts(g, ["", "x"], 0, 3, None) == [0, 1]
    assert t._starts(g, ["x"], 0, 3, None) == [1]
    fd = g.fd
    g.fd = 10**6
    try:
        assert t._starts(g, ["", "x"], 0, 3, None) is None  # unreadable
    finally:
        g.fd = fd
    g.joiner = t._new_joiner() or object()  # type: ignore[assignment]
    assert t._starts(g, ["", "x"], 0, 3, None) is None  # records: sizes or nothing


# -- multiline --------------------------------------------------------------------


def test_joiner_takes_the_configured_limits(tmp_path: Path, logs: Path) -> None:
    t = tailer(
        tmp_path,
        multiline_start="^S",
        multiline_max_lines=7,
        multiline_timeout=9.5,
        max_line_bytes=123,
    )
    j = t._new_joiner()
    assert j is not None
    assert (j.start.pattern, j.max_lines, j.timeout, j.max_chars) == ("^S", 7, 9.5, 123)
    assert tailer(tmp_path)._new_joiner() is None


def test_multiline_records_with_their_spans_and_starts(tmp_path: Path, logs: Path) -> None:
    raw = b"S1\n c1\n c2\nS2\n" + b"d" * 30 + b"\nS3\n"
    write(logs / "a.log", raw)
    t = tailer(
        tmp_path,
        multiline_start="^S",
        multiline_timeout=60,
        max_line_bytes=10,
        identify=True,
        partial_flush_timeout=60,
    )
    f = only(t)
    got = read(t)
    assert texts(got) == ["S1\n c1\n c2", "S2\n" + "d" * 7]  # cut at max_line_bytes
    assert spans(got) == [(0, 45)]
    assert got[0].starts == [0, 11]
    assert got[0].truncated == frozenset({1})
    assert f.emit_pos == 45 and f.joiner is not None and f.joiner.pending_bytes == 3
    # A record held: checkpointed up to the end of the last one handed on.
    write(logs / "a.log", b" c3")  # and a partial line
    assert read(t) == []
    t._flush_partial(f, force=True)
    got = taken(t)
    assert texts(got) == ["S3\n c3"] and spans(got) == [(45, 51)]


def test_a_record_is_handed_on_when_due(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", b"S1\n c1\n")
    t = tailer(tmp_path, multiline_start="^S", multiline_timeout=2.0)
    f = only(t)
    assert read(t) == []
    assert f.joiner is not None
    f.joiner._last = 100.0  # the clock of the last line joined
    t._flush_due(101.9)
    assert taken(t) == []
    t._flush_due(102.0)
    got = taken(t)
    assert texts(got) == ["S1\n c1"] and spans(got) == [(0, 7)]


def test_multiline_with_max_chunk_lines(tmp_path: Path, logs: Path) -> None:
    raw = b"".join(b"S%d\n c\n" % i for i in range(5)) + b"S9\n"
    write(logs / "a.log", raw)
    t = tailer(
        tmp_path, multiline_start="^S", multiline_timeout=60, max_chunk_lines=2, identify=True
    )
    got = read(t)
    assert [c.texts for c in got] == [["S0\n c", "S1\n c"], ["S2\n c", "S3\n c"], ["S4\n c"]]
    assert spans(got) == [(0, 12), (12, 24), (24, 30)]
    assert [c.starts for c in got] == [[0, 6], [12, 18], [24]]
    # A cut record with max_chunk_lines keeps its flag in its chunk.
    write(logs / "b.log", b"S0\nS1\nS2" + b"w" * 20 + b"\nS3\n")
    t = tailer(
        tmp_path,
        paths=[str(logs / "b.log")],
        multiline_start="^S",
        multiline_timeout=60,
        max_chunk_lines=2,
        max_line_bytes=6,
    )
    got = read(t)
    assert [c.texts for c in got] == [["S0", "S1"], ["S2wwww"]]
    assert [c.truncated for c in got] == [frozenset(), frozenset({0})]
    assert spans(got) == [(0, 6), (6, 29)]


def test_a_partial_line_joins_the_held_record_when_flushed(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", b"S1\n c1\n c2")
    t = tailer(tmp_path, multiline_start="^S", multiline_timeout=60, partial_flush_timeout=0)
    f = only(t)
    assert read(t) == []
    t._flush_partial(f)  # the line goes to the joiner; the record is not due
    assert taken(t) == []
    assert f.joiner is not None and f.joiner.pending_bytes == 10
    t._flush_partial(f, force=True, line=False)
    got = taken(t)
    assert texts(got) == ["S1\n c1\n c2"] and spans(got) == [(0, 10)]


# -- compressed -------------------------------------------------------------------


def test_a_compressed_file_is_read_to_its_end(tmp_path: Path, logs: Path) -> None:
    raw = b"".join(b"line %d\n" % i for i in range(50)) + b"last"
    (logs / "a.log").write_bytes(gzip.compress(raw))
    t = tailer(tmp_path, chunk_bytes=100, fair_share_bytes=200, partial_flush_timeout=0)
    f = only(t)
    assert f.compressed == "gzip"
    size = f.size
    got = read(t)
    assert not f.at_eof  # the compressed size says nothing: read until nothing comes
    while not f.at_eof:
        got += read(t)
    assert f.read_pos == len(raw)
    assert f.size == len(raw)  # at least what was read (not the compressed size)
    assert size < len(raw)
    t._flush_due(time.monotonic())
    got += taken(t)
    assert texts(got) == [f"line {i}" for i in range(50)] + ["last"]
    assert sum(c.nbytes for c in got) == len(raw)
    assert t._at_end(f)


def test_cut_lines_inside_split_chunks_are_flagged_in_their_own_chunk(
    tmp_path: Path, logs: Path
) -> None:
    lines = [b"a", b"b", b"c" * 20, b"d", b"e" * 20, b"f"]
    write(logs / "a.log", b"".join(x + b"\n" for x in lines))
    t = tailer(tmp_path, max_line_bytes=5, max_chunk_lines=2)
    got = read(t)
    assert [c.texts for c in got] == [["a", "b"], ["c" * 5, "d"], ["e" * 5, "f"]]
    assert [c.truncated for c in got] == [frozenset(), frozenset({0}), frozenset({0})]
    assert spans(got) == [(0, 4), (4, 27), (27, 50)]
    assert t.truncated_lines == 2


def test_a_cut_line_ending_in_a_later_read_keeps_its_record_span(
    tmp_path: Path, logs: Path
) -> None:
    raw = b"S1\n" + b"S" + b"x" * 20 + b"\n" + b"S3\nS4\n"
    write(logs / "a.log", raw)
    t = tailer(
        tmp_path,
        multiline_start="^S",
        multiline_timeout=60,
        max_line_bytes=5,
        chunk_bytes=8,
        identify=True,
    )
    f = only(t)
    got = read(t)
    assert texts(got) == ["S1", "Sxxxx", "S3"]
    assert [c.texts[i] for c in got for i in c.truncated] == ["Sxxxx"]
    assert [s for c in got for s in c.starts or [-1] * len(c)] == [0, 3, 25]
    assert got[0].start == 0 and got[-1].end == 28
    assert [c.start for c in got[1:]] == [c.end for c in got[:-1]]
    assert f.emit_pos == 28 and f.joiner is not None and f.joiner.pending_bytes == 3


def test_a_due_record_goes_out_and_a_held_line_that_is_not_due_stays(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", b"S1\n c1\n c2-part")
    t = tailer(tmp_path, multiline_start="^S", multiline_timeout=2.0, partial_flush_timeout=5.0)
    f = only(t)
    assert read(t) == []
    assert f.joiner is not None
    f.joiner._last = 100.0
    f.carry_since = 99.0  # held 3.0 s at 102.0: not due
    t._flush_due(102.0)
    got = taken(t)
    assert texts(got) == ["S1\n c1"] and spans(got) == [(0, 7)]
    assert f.split.pending  # the line stays held: more of it may come
    write(logs / "a.log", b"\n")
    got = read(t)
    assert got == []  # " c2-part" is a continuation: held by the joiner now
    t._flush_partial(f, force=True)
    assert texts(taken(t)) == [" c2-part"]


def test_a_held_over_long_line_flushed_into_a_record_keeps_its_cut(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", b"S1\nS" + b"y" * 20)
    t = tailer(
        tmp_path,
        multiline_start="^S",
        multiline_timeout=60,
        max_line_bytes=5,
        partial_flush_timeout=0,
    )
    f = only(t)
    assert read(t) == []
    t._flush_due(time.monotonic())  # the line is due, the record not
    got = taken(t)
    assert texts(got) == ["S1"] and got[0].truncated == frozenset()
    t._flush_partial(f, force=True, line=False)
    got = taken(t)
    assert texts(got) == ["Syyyy"] and got[0].truncated == frozenset({0})
    assert spans(got) == [(3, 24)]


def test_a_forced_flush_hands_on_the_completed_record_and_the_held_one(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "a.log", b"S1\n " + b"c" * 20 + b"\nS2p")
    t = tailer(tmp_path, multiline_start="^S", multiline_timeout=60, max_line_bytes=5)
    f = only(t)
    assert read(t) == []  # S1 and its (cut) continuation held, S2p held
    t._flush_partial(f, force=True)
    (c,) = taken(t)
    assert c.texts == ["S1\n c", "S2p"]  # cut at max_line_bytes characters
    assert c.truncated == frozenset({0})
    assert (c.start, c.end) == (0, 28)
    assert f.emit_pos == 28 and f.joiner is not None and not f.joiner.pending


def test_a_truncated_file_waits_for_its_copy(tmp_path: Path, logs: Path) -> None:
    old = b"".join(b"old line %02d with enough bytes to identify it\n" % i for i in range(10))
    write(logs / "a.log", old[:100])
    t = tailer(tmp_path, chunk_bytes=1 << 20)
    f = only(t)
    first = texts(read(t))
    write(logs / "a.log", old[100:])
    (logs / "a.log.1").write_bytes(old)  # copytruncate's copy, then the truncation
    os.truncate(logs / "a.log", 0)
    write(logs / "a.log", "new\n")
    # The copy goes first: nothing read from a.log this time, but a turn was taken.
    assert t._read_file(f, 1 << 20) is True
    assert taken(t) == [] and t.truncations == 1
    rest = texts(read(t))
    assert first + rest == [x.decode() for x in old.splitlines()] + ["new"]


def test_one_byte_read_is_progress(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "x")
    t = tailer(tmp_path, chunk_bytes=1)
    f = only(t)
    assert t._read_file(f, 100) is True
    assert f.read_pos == 1
    write(logs / "a.log", "\ny")
    real = f.read_at

    def fails_after_one(n: int, pos: int) -> bytes:
        if pos >= 2:
            raise OSError(5, "Input/output error")
        return real(n, pos)

    f.read_at = fails_after_one  # type: ignore[method-assign]
    assert t._read_file(f, 100) is True  # one byte came before the error
    assert texts(taken(t)) == ["x"]


def test_the_last_record_of_a_copy_goes_out_at_its_end(tmp_path: Path, logs: Path) -> None:
    write(logs / "a.log", "S1\n c1\nS2\n c2\n")
    t = tailer(tmp_path, multiline_start="^S", multiline_timeout=60)
    f = only(t)
    f.is_copy = True  # nobody writes to it any more: the held record is complete
    got = read(t)
    assert texts(got) == ["S1\n c1", "S2\n c2"]
    assert sum(c.nbytes for c in got) == 14
