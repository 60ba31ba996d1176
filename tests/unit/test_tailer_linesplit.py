"""podkit.linesplit: the one I/O-free line splitter of the tailer and logformat --stdin."""

from __future__ import annotations

import itertools
import random

from podkit.linesplit import LineSplitter, cut_long, decode_cut


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


def test_decode_cut_at_every_byte_keeps_whole_characters_only() -> None:
    text = "a\u00e9b\u20acc\U0001f600d\u00e9\u20ac\U0001f600"  # 1, 2, 3 and 4-byte characters
    raw = text.encode()
    for n in range(len(raw) + 1):
        # Valid UTF-8 cut at n: exactly the characters that are whole.
        assert decode_cut(raw[:n]) == raw[:n].decode("utf-8", "ignore"), n


def test_decode_cut_replaces_what_is_invalid_before_the_cut() -> None:
    assert decode_cut(b"ab\x80") == "ab\ufffd"  # a stray continuation byte is no cut character
    assert decode_cut(b"\xff\xfeab") == "\ufffd\ufffdab"
    assert decode_cut(b"") == ""
    assert decode_cut(b"\xc3") == ""  # only the start of a character
    assert decode_cut(b"\xf0\x9f\x98") == ""


def test_cut_long_cuts_only_the_long_lines() -> None:
    texts, cut = cut_long(b"short\n" + b"x" * 12 + b"\n" + "\u00e9".encode() * 6, 10)
    assert texts == ["short", "x" * 10, "\u00e9" * 5] and cut == [1, 2]


def test_split_without_a_newline_consumes_nothing() -> None:
    s = LineSplitter(100)
    r = s.feed(b"no newline yet")
    assert (r.texts, r.trunc, r.end, r.lead, r.held) == ([], [], -1, 0, True)
    assert r.lengths() == []
    r = s.feed(b"")
    assert (r.texts, r.end, r.held) == ([], -1, False)
    r = s.feed(b" and now\n")
    assert r.texts == ["no newline yet and now"] and r.end == 9 and not r.held
    assert r.lengths() == [len("no newline yet and now")]


def test_lengths_are_bytes_for_multibyte_lines() -> None:
    r = LineSplitter(100).feed("\u00e9t\u00e9\nok\n\u20ac".encode())
    assert r.texts == ["\u00e9t\u00e9", "ok"] and r.lengths() == [5, 2] and r.held


def test_mutants_that_survived_once() -> None:
    """Each assertion pins a behaviour a surviving mutant changed (make mutate)."""
    s = LineSplitter(100)
    s.feed(b"\xff partial")
    assert s.flush() == ("\ufffd partial", False)  # invalid bytes replaced, never raised
    assert s.feed(b"rest\n").texts == ["rest"]  # no newline after the flush: nothing dropped
    r = LineSplitter(3).feed(b"abcdef\nxy\n")
    assert r.texts == ["abc", "xy"] and r.trunc == [0]
    assert r.lengths() == [6, 2]  # bytes of the file, not of the cut text
    # An over-long line with spaces, in a block that is not one byte a character.
    r = LineSplitter(10).feed("\u00e9 a line with spaces that is long\n".encode())
    assert r.texts == ["\u00e9 a line "] and r.trunc == [0]  # 10 bytes
    s = LineSplitter(100)
    s.feed(b"abcde")
    assert s.feed(b"x\nyz").held  # a new partial line after a newline
    assert LineSplitter(100).feed(b"a\nb").held  # even of one byte
    s = LineSplitter(4)
    assert s.feed(b"abcd").texts == [] and not s.skipping  # exactly the limit: not over
    r = s.feed(b"\n")
    assert r.texts == ["abcd"] and r.trunc == []
    assert decode_cut(b"a\xc0") == "a"  # 0xC0 starts a 2-byte sequence: cut, dropped
    assert decode_cut(b"a\xe0\xa0") == "a"  # 0xE0 starts a 3-byte one
    assert decode_cut(b"a\xdf") == "a"
    assert decode_cut(b"a\xef\xbf") == "a"


def test_a_fresh_splitter_keeps_a_leading_empty_line_and_skipping_is_no_growth() -> None:
    assert LineSplitter(10).feed(b"\nx\n").texts == ["", "x"]
    s = LineSplitter(3)
    assert s.feed(b"abcdef").held  # the cut start is held from here...
    assert not s.feed(b"ghij").held  # ...the skipped rest does not restart its clock
