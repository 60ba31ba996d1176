"""Bytes to lines, without I/O: one implementation for files (podkit.tailer)
and streams (logformat --stdin).

The rules, stated once:

* A line ends at `\\n`; the bytes after the last newline of what was fed are
  held (`carry`) until their newline comes, or until the owner hands them on
  early (`flush()`: a file idle with a last line without newline, the end of
  a pipe). The newline that then arrives ends that line, not an empty one.
* A line longer than `limit` bytes is cut to its first `limit` bytes (a
  multi-byte character split by the cut is dropped) and marked truncated; the
  rest is skipped up to its newline without being buffered, so memory stays
  at `limit` whatever the line's length.
* Invalid UTF-8 becomes U+FFFD.

The common case costs one decode and one split per block, whatever its number
of lines: per-line Python work happens only for over-long lines.
"""

from __future__ import annotations


class Split:
    """What one `feed()` completed.

    `texts` are the lines, `trunc` the indices of cut ones. `end` is the index
    in the fed data just after the last newline consumed (-1: none), so the
    bytes `data[:end]` are done with. `lead` texts (0 or 1: the cut start of an
    over-long line that ended here) come before the lines of the block, whose
    byte lengths `lengths()` tells (newlines excluded).
    """

    __slots__ = ("_block", "_exact", "_parts", "end", "held", "lead", "texts", "trunc")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.trunc: list[int] = []
        self.end = -1
        self.lead = 0
        #: A partial line was started or grown (its owner may time it out).
        self.held = False
        self._parts: list[str] = []
        self._block = b""
        self._exact = False

    def lengths(self) -> list[int]:
        """Byte lengths of the block's lines (texts[lead:]), without their newlines."""
        if self._exact:  # one byte per character: str lengths are byte lengths
            return list(map(len, self._parts))
        return list(map(len, self._block.split(b"\n"))) if self.texts[self.lead :] else []


class LineSplitter:
    """Complete lines out of bytes fed in any pieces (see the module docstring)."""

    __slots__ = ("carry", "flushed", "head", "limit", "skipping")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.carry = b""  # the start of an unfinished line
        self.head: bytes | None = None  # first `limit` bytes of an over-long line
        self.skipping = False  # discarding the rest of an over-long line
        self.flushed = False  # a held line went out before its newline came

    @property
    def pending(self) -> bool:
        """A line (or the cut start of one) is held."""
        return bool(self.carry) or self.head is not None

    def feed(self, data: bytes) -> Split:
        r = Split()
        skip = 0  # bytes of `data` before the part still to split
        if self.flushed:
            self.flushed = False
            if data[:1] == b"\n" and not self.skipping:
                # The newline that ends the line already handed on: not an empty line.
                skip = 1
        limit = self.limit
        if self.skipping:
            i = data.find(b"\n")  # (skip is 0 here: no newline is dropped while skipping)
            if i < 0:
                return r  # still inside the over-long line: discard without buffering
            if self.head is not None:
                r.trunc.append(0)
                r.texts.append(decode_cut(self.head))
                r.lead = 1
                self.head = None
            self.skipping = False
            skip = r.end = i + 1
        carry = len(self.carry)
        if skip or carry:
            data = self.carry + data[skip:]
            self.carry = b""
        cut = data.rfind(b"\n")
        if cut >= 0:
            block = memoryview(data)[:cut]  # no copy of the (1 MiB) block
            rest = data[cut + 1 :]
            r.end = skip + cut + 1 - carry
            text = str(block, "utf-8", "replace")
            parts = text.split("\n")
            # Equal lengths mean one byte per character, so str lengths are byte lengths.
            exact = len(text) == len(block)
            if len(block) > limit:
                if exact:
                    too_long = max(map(len, parts)) > limit
                else:
                    too_long = max(map(len, data[:cut].split(b"\n"))) > limit
                if too_long:
                    exact = False
                    parts, cut_idx = cut_long(data[:cut], limit)
                    r.trunc.extend(r.lead + i for i in cut_idx)
            if r.texts:
                r.texts.extend(parts)
            else:
                r.texts = parts
            r._parts, r._exact = parts, exact
            if not exact:
                r._block = data[:cut]
        else:
            rest = data
        # Started or grown by this feed (not merely still there).
        r.held = len(rest) > (0 if cut >= 0 else carry)
        if len(rest) > limit:
            self.head = rest[:limit]
            self.skipping = True
            rest = b""
        self.carry = rest
        return r

    def flush(self) -> tuple[str, bool] | None:
        """Hand on the held line now, before its newline: (text, truncated), or None.

        The cut start of an over-long line goes out and the rest of that line
        is still skipped; a plain partial line goes out and the newline that
        ends it later is not taken for an empty line.
        """
        if self.head is not None:
            text = decode_cut(self.head)
            self.head = None
            return text, True
        if self.carry:
            text = self.carry.decode("utf-8", "replace")
            self.carry = b""
            self.flushed = True
            return text, False
        return None

    def finish(self) -> tuple[list[str], list[int]]:
        """End of input: a last line without newline is still a line."""
        held = self.flush()
        if held is None:
            return [], []
        return [held[0]], [0] if held[1] else []


def decode_cut(raw: bytes) -> str:
    """Decode a cut-off line, dropping a multi-byte character split by the cut."""
    end = len(raw)
    back = 0
    while back < 3 and end - back > 0 and (raw[end - back - 1] & 0xC0) == 0x80:
        back += 1
    if end - back > 0:
        lead = raw[end - back - 1]
        need = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if lead >= 0xF0 else 1
        if back + 1 < need:
            raw = raw[: end - back - 1]
    return raw.decode("utf-8", "replace")


def cut_long(block: bytes, limit: int) -> tuple[list[str], list[int]]:
    """The slow path: split a block that holds over-long lines, cutting each."""
    texts: list[str] = []
    cut: list[int] = []
    for i, raw in enumerate(block.split(b"\n")):
        if len(raw) > limit:
            cut.append(i)
            texts.append(decode_cut(raw[:limit]))
        else:
            texts.append(raw.decode("utf-8", "replace"))
    return texts, cut
