"""The access log: one JSON line per request, batched into one write per 20 ms.

Lines are formatted by hand on the hot path (the proxy's `ClientConn.access`,
with `start_for` and `append` here): json.dumps of a dict per request costs
more than the proxying. Only client-supplied strings need escaping
(`json_str`); the rest is numbers and tokens.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from select import PIPE_BUF
from typing import Any, Final

from podkit.secrets import scrub


def json_str(value: bytes) -> str:
    """A JSON string literal for client-supplied bytes; plain ASCII skips json.dumps."""
    if value.isascii():
        # printable ASCII but the two JSON escapes: four C calls, half a regex search
        text = value.decode("ascii")
        if text.isprintable() and '"' not in text and "\\" not in text:
            return '"' + text + '"'
    return json.dumps(value.decode("latin-1"))


def seconds_txt(took: float) -> str:
    """`took` (seconds, not negative) with six decimals, as f"{took:.6f}" writes it.

    By integer arithmetic: the float formatter (str.format's spec parsing and a
    correctly rounded decimal conversion) was a fifth of an access line's cost.
    The microseconds are rounded half up where .6f rounds the exact binary value,
    so a duration within a float's error of half a microsecond may end one digit
    apart; no other figure differs.
    """
    us = int(took * 1e6 + 0.5)
    if us < 1_000_000:  # most requests: "1000123" gives the six digits of "0.000123"
        return "0." + str(us + 1_000_000)[1:]
    digits = str(us)
    return digits[:-6] + "." + digits[-6:]


class AccessLog:
    """JSON access-log lines, batched into one write per event-loop turn."""

    def __init__(self, program: str = "proxy") -> None:
        # --workers share one stderr pipe: a write up to PIPE_BUF is never torn by
        # another process's, so lines go out in whole-line pieces that size
        self.shared = False
        self.lines: list[str] = []
        self.size = 0  # characters in `lines`: paths are the client's, up to 8 KiB each
        self.scheduled = False
        self.sec = -1
        self.prefix = ""
        self.ms = -1  # the millisecond `stamp` is for: many requests share one
        self.stamp = ""
        self.start = ""  # an access line's fields before the request's, for its millisecond:
        self.start_from = self.start_until = 0.0  # [from, until) in time.monotonic()
        self.offset = 0.0  # time.time() - time.monotonic(), as of the batch's first line
        self.program = program

    def time(self, now: float) -> str:
        ms = int(now * 1000)
        if ms == self.ms:
            return self.stamp
        sec, frac = divmod(ms, 1000)
        if sec != self.sec:
            self.sec = sec
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        self.ms = ms
        self.stamp = f"{self.prefix}.{frac:03d}Z"
        return self.stamp

    def write(self, record: dict[str, Any]) -> None:
        """A line from a dict (the TCP listener's, once a connection)."""
        now = time.time()
        rec = {
            "time": self.time(now),
            "level": "info",
            "program": self.program,
            "message": "request",
        }
        rec.update(record)
        self.append(json.dumps(rec, separators=(", ", ": ")) + "\n")

    def start_for(self, end: float) -> str:
        """A request line's fields before the request's own, for a request that
        ended at `end` (time.monotonic(), which the proxy times requests by)."""
        if self.start_from <= end < self.start_until and self.scheduled:
            return self.start  # the same millisecond: most lines under load
        if not self.scheduled:
            # The wall clock's offset is read once a batch (every 20 ms at most),
            # not once a line; a clock that steps shows within a batch.
            self.offset = time.time() - time.monotonic()
        now = end + self.offset
        ms = int(now * 1000)
        self.start_from = ms / 1000 - self.offset
        self.start_until = (ms + 1) / 1000 - self.offset
        self.start = (
            f'{{"time": "{self.time(now)}", "level": "info", "program": "{self.program}", '
            '"message": "request", '
        )
        return self.start

    def append(self, line: str) -> None:
        """A whole line (ending in a newline) for the next batch."""
        lines = self.lines
        lines.append(line)
        self.size += len(line)
        if not self.scheduled:
            # One write per 20 ms rather than per request: the lines are small and many.
            self.scheduled = True
            asyncio.get_running_loop().call_later(0.02, self.flush)
        elif len(lines) >= 2000 or self.size >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        self.scheduled = False
        lines = self.lines
        if not lines:
            return
        self.lines = []
        self.size = 0
        # Written in pieces of whole lines: --workers share one stderr pipe, and a
        # write up to PIPE_BUF is never torn by another process's. Alone, pieces of
        # 64 KiB: a batch joined whole (up to 1 MiB) was a fresh mapping each time,
        # and its page faults cost more than formatting the lines.
        try:
            for piece in whole_lines(lines, PIPE_BUF if self.shared else PIECE):
                sys.stderr.write(scrub(piece))
                sys.stderr.flush()  # each piece one write(2), never merged with the next
        except (OSError, ValueError):
            pass


PIECE: Final = 64 * 1024  # characters per write when no other process shares the pipe
ACCESS_LOG = AccessLog()


def whole_lines(lines: list[str], limit: int) -> Iterator[str]:
    """`lines` (each ending in a newline) joined in pieces of at most `limit`
    characters, unless one line alone is longer."""
    start = size = 0
    for i, line in enumerate(lines):
        if size + len(line) > limit and i > start:
            yield "".join(lines[start:i])
            start, size = i, 0
        size += len(line)
    if start < len(lines):
        yield "".join(lines[start:])
