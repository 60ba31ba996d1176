"""Properties of the tailer's line splitting and checkpointing (hypothesis; issue 13).

However a writer's bytes are cut into writes and reads, the lines are the
same; and a restart from any checkpoint the tailer writes loses no line and
repeats none. The tailer is driven synchronously here (its reader's own steps:
read, split, flush, ack, checkpoint, open with a saved entry), so that hundreds
of cases run in a second.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from podkit.tailer import Chunk, Tailer, TailerConfig, _File, checkpoint_entry_error, decode_cut

# Tokens that make lines interesting: multi-byte UTF-8, invalid bytes, empty lines.
TOKENS = [b"a", b"b", b" ", b"\xc3\xa9", b"\xe2\x82\xac", b"\xff", b"\n", b"\n"]
contents = st.lists(st.sampled_from(TOKENS), max_size=400).map(b"".join)
# ASCII: a line handed on before its newline (a writer idle mid-line for
# partial_flush_timeout) may also have stopped inside a character, which then
# reads as U+FFFD on both sides of the cut; that is not what this property is about.
ascii_contents = st.lists(st.sampled_from([b"a", b"bc", b"\n"]), max_size=300).map(b"".join)
SETTINGS = settings(max_examples=80, deadline=None)


def pieces_of(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def expected_lines(data: bytes, limit: int) -> list[str]:
    lines = data.split(b"\n")
    last = lines.pop()
    if last:
        lines.append(last)  # handed on at the end (drain, timeout)
    return [
        decode_cut(x[:limit]) if len(x) > limit else x.decode("utf-8", "replace") for x in lines
    ]


class Reader:
    """One tailer following one file, stepped by hand."""

    def __init__(self, path: Path, saved: dict[str, Any] | None = None, **kw: Any) -> None:
        self.path = path
        self.t = Tailer(TailerConfig(paths=[str(path)], partial_flush_timeout=1e9, **kw))
        if saved is not None:
            self.t._saved[(saved["dev"], saved["ino"])] = saved
        f = self.t._open(str(path), False, self.t._base_for(str(path)))
        assert f is not None
        self.f: _File = f

    def read(self) -> None:
        self.t._read_file(self.f, 1 << 40)

    def flush(self) -> None:
        self.t._flush_partial(self.f, force=True)

    def chunks(self) -> list[Chunk]:
        out = []
        while not self.t._queue.empty():
            c = self.t._queue.get_nowait()
            assert c is not None
            out.append(c)
        return out

    def checkpoint(self) -> dict[str, Any]:
        """The entry as it goes through checkpoints.json."""
        self.f.update_fingerprint()
        entry: dict[str, Any] = json.loads(json.dumps(self.f.checkpoint()))
        assert checkpoint_entry_error(entry) is None
        return entry

    def close(self) -> None:
        self.f.close()


@contextmanager
def log_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "app.log"
        p.write_bytes(b"")
        yield p


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


@SETTINGS
@given(
    data=contents,
    cuts=st.lists(st.integers(0, 10_000), max_size=30),
    chunk_bytes=st.sampled_from([1, 3, 16, 4096]),
    limit=st.sampled_from([4, 16, 1024]),
)
def test_any_cutting_of_writes_and_reads_gives_the_same_lines(
    data: bytes, cuts: list[int], chunk_bytes: int, limit: int
) -> None:
    with log_file() as path:
        r = Reader(path, chunk_bytes=chunk_bytes, max_line_bytes=limit)
        for piece in pieces_of(data, cuts):
            append(path, piece)
            r.read()
        r.flush()
        chunks = r.chunks()
        r.close()
    texts = [t for c in chunks for t in c.texts]
    assert texts == expected_lines(data, limit)
    # Chunks tile the file: each starts where the one before ended.
    pos = 0
    for c in chunks:
        assert c.start == pos
        pos = c.end
    assert pos == len(data)
    cut = [i for c in chunks for i in range(len(c)) if i in c.truncated]
    assert len(cut) == sum(len(x) > limit for x in data.split(b"\n"))


@SETTINGS
@given(
    data=ascii_contents,
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    flush_after=st.lists(st.booleans(), max_size=20),
    acked=st.integers(0, 1000),
    chunk_bytes=st.sampled_from([2, 7, 4096]),
)
def test_restart_at_any_checkpoint_loses_no_line_and_repeats_none(
    data: bytes, cuts: list[int], flush_after: list[bool], acked: int, chunk_bytes: int
) -> None:
    """The consumer acknowledged some chunks, then the program died; the file
    kept growing. What was acknowledged before plus what is read after the
    restart is exactly the file, even where a last line went out before its
    newline (a partial flush) and its newline came later."""
    pieces = pieces_of(data, cuts)
    with log_file() as path:
        r = Reader(path, chunk_bytes=chunk_bytes)
        for i, piece in enumerate(pieces):
            append(path, piece)
            r.read()
            if i < len(flush_after) and flush_after[i]:
                r.flush()  # partial_flush_timeout passed: the held line goes out
        chunks = r.chunks()
        k = acked % (len(chunks) + 1)
        for c in chunks[:k]:
            r.t.ack(c)
        saved = r.checkpoint()
        r.close()
        before = [t for c in chunks[:k] for t in c.texts]
        append(path, b"after\n")
        r2 = Reader(path, saved=saved, chunk_bytes=chunk_bytes)
        r2.read()
        r2.flush()
        after = [t for c in r2.chunks() for t in c.texts]
        r2.close()
    got = before + after
    want = (data + b"after\n").decode()
    # No byte lost or repeated; lines only ever split where a partial flush cut them.
    assert "".join(got) == want.replace("\n", "")
    assert len(got) >= want.count("\n")
    assert saved["offset"] == (chunks[k - 1].end if k else 0)


@SETTINGS
@given(
    lines=st.lists(
        st.tuples(st.booleans(), st.text(alphabet="xy é", max_size=8)), min_size=1, max_size=40
    ),
    cuts=st.lists(st.integers(0, 10_000), max_size=20),
    chunk_bytes=st.sampled_from([1, 5, 4096]),
)
def test_multiline_records_do_not_depend_on_how_writes_are_cut(
    lines: list[tuple[bool, str]], cuts: list[int], chunk_bytes: int
) -> None:
    texts = [("S" if start else "-") + body for start, body in lines]
    data = "".join(t + "\n" for t in texts).encode()
    want: list[list[str]] = []
    for t in texts:
        if t.startswith("S") or not want:
            want.append([t])
        else:
            want[-1].append(t)
    with log_file() as path:
        r = Reader(path, chunk_bytes=chunk_bytes, multiline_start="^S")
        r.f.joiner = r.t._new_joiner()
        for piece in pieces_of(data, cuts):
            append(path, piece)
            r.read()
        r.flush()
        chunks = r.chunks()
        r.close()
    assert [t for c in chunks for t in c.texts] == ["\n".join(x) for x in want]
    assert sum(c.nbytes for c in chunks) == len(data)


def test_property_helpers_agree_with_the_tailer_on_a_known_case() -> None:
    """A fixed example, so that a broken helper cannot make the properties vacuous."""
    assert expected_lines(b"ab\n\xffc\nlong-line\ntail", 4) == ["ab", "\ufffdc", "long", "tail"]
    assert pieces_of(b"abc", [1, 1, 5]) == [b"a", b"bc"]
