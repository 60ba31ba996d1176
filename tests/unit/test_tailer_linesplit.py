"""podkit.linesplit: the one I/O-free line splitter of the tailer and logformat --stdin."""

from __future__ import annotations

import itertools
import random

from podkit.linesplit import LineSplitter


def run(data: bytes, limit: int, pieces: list[int]) -> tuple[list[str], list[str], int]:
    """Feed `data` cut at `pieces`; (lines, truncated lines, bytes consumed)."""
    s = LineSplitter(limit)
    texts: list[str] = []
    cut: list[str] = []
    done = 0
    bounds = [0, *sorted(pieces), len(data)]
    for a, b in itertools.pairwise(bounds):
        r = s.feed(data[a:b])
        texts += r.texts
        cut += [r.texts[i] for i in r.trunc]
        if r.end >= 0:
            done = a + r.end
            assert data[done - 1 : done] == b"\n"  # consumed up to a newline
        assert len(s.carry) <= limit and (s.head is None or len(s.head) == limit)
    return texts, cut, done


def test_any_cut_of_the_input_gives_the_same_lines() -> None:
    rnd = random.Random(7)
    lines = [b"short", b"", "h\u00e9llo w\u00f6rld".encode(), b"x" * 40, b"\xff\xfe bad", b"y" * 9]
    data = b"\n".join(rnd.choice(lines) for _ in range(200)) + b"\n"
    whole = run(data, 20, [])
    assert whole[2] == len(data)
    for _ in range(200):
        pieces = rnd.sample(range(1, len(data)), rnd.randint(1, 30))
        assert run(data, 20, pieces) == whole


def test_over_long_line_is_cut_and_its_rest_skipped_unbuffered() -> None:
    s = LineSplitter(10)
    assert s.feed(b"0123456789abc").texts == []
    assert s.head == b"0123456789" and s.carry == b"" and s.skipping
    for _ in range(100):
        assert s.feed(b"z" * 1000).texts == []  # memory stays at the limit
        assert s.head == b"0123456789" and s.carry == b""
    r = s.feed(b"zz\nnext\n")
    assert r.texts == ["0123456789", "next"] and r.trunc == [0] and r.lead == 1
    assert r.end == 8 and r.lengths() == [4]


def test_cut_drops_a_character_split_by_the_limit() -> None:
    r = LineSplitter(4).feed("ab\u00e9\u00e9\n".encode())  # a b é(2) é(2): cut inside the 2nd é
    assert r.texts == ["ab\u00e9"] and r.trunc == [0]


def test_flushed_partial_line_and_its_late_newline() -> None:
    s = LineSplitter(100)
    assert s.feed(b"partial").texts == [] and s.pending
    assert s.flush() == ("partial", False)
    r = s.feed(b"\nnext\n")
    assert r.texts == ["next"]  # the newline ended the line handed on, no empty line
    assert r.end == 6
    assert s.feed(b"\n").texts == [""]  # an empty line now is one


def test_flushed_head_keeps_skipping_the_rest() -> None:
    s = LineSplitter(3)
    s.feed(b"abcdef")
    assert s.flush() == ("abc", True)
    r = s.feed(b"gh\nok\n")
    assert r.texts == ["ok"] and r.trunc == [] and r.lead == 0


def test_finish_hands_on_the_last_line_without_newline() -> None:
    s = LineSplitter(100)
    s.feed(b"a\nlast")
    assert s.finish() == (["last"], [])
    assert s.finish() == ([], [])
    s = LineSplitter(2)
    s.feed(b"long")
    assert s.finish() == (["lo"], [0])


def test_invalid_utf8_is_replaced_and_lengths_stay_bytes() -> None:
    r = LineSplitter(100).feed(b"\xff\xfeab\nc\n")
    assert r.texts == ["\ufffd\ufffdab", "c"]
    assert r.lengths() == [4, 1]
