"""Join continuation lines into one record (stack traces, pretty-printed dumps).

A line matching the start regex (searched, so anchor it with `^` yourself)
begins a new record; every other line continues the record before it. A
record is complete when the next start line arrives, when it holds
`max_lines` lines, or when no line joined it for `timeout` seconds.

The joiner counts the bytes of the lines it still holds, so a tailer can
checkpoint only up to the end of the last record it handed on: a restart
never splits a half-emitted record.
"""

from __future__ import annotations

import re
import time

from .options import OptionGroup, option


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"invalid regex: {exc}") from None
    return text


class MultilineOptions(OptionGroup):
    """How continuation lines are joined (`--multiline-start`, `--multiline-max-lines`,
    `--multiline-timeout` with `include(prefix="multiline-")`); a program with
    its own start patterns (logformat's stack-trace modes) passes one to `joiner()`."""

    about = "a record"

    start: str | None = option(
        None,
        metavar="REGEX",
        validator=_regex,
        help="a line matching REGEX starts {about}; others continue it",
    )
    max_lines: int = option(500, min=1, help="most lines joined into {about}")
    timeout: float = option(
        "3s",
        kind="duration",
        min=0.0,
        help="{about} waiting this long for a continuation is emitted",
    )

    def joiner(self, start: str | None = None, max_chars: int = 256 * 1024) -> Joiner | None:
        """A Joiner for `start` (default: --multiline-start); None without one."""
        pattern = start or self.start
        return Joiner(pattern, self.max_lines, self.timeout, max_chars) if pattern else None


class Joiner:
    def __init__(
        self,
        start: str | re.Pattern[str],
        max_lines: int = 500,
        timeout: float = 3.0,
        max_chars: int = 256 * 1024,
    ) -> None:
        self.start = re.compile(start) if isinstance(start, str) else start
        self.max_lines = max(1, max_lines)
        self.timeout = timeout
        self.max_chars = max_chars
        self._lines: list[str] = []
        self._count = 0  # lines held, including ones cut off by max_chars
        self._chars = 0
        self._truncated = False
        self._bytes = 0
        self._last = 0.0
        #: Bytes spanned by each record the last feed()/flush() returned.
        self.last_sizes: list[int] = []

    @property
    def pending_bytes(self) -> int:
        """Bytes (newlines included) of the lines held for an unfinished record."""
        return self._bytes

    @property
    def pending(self) -> bool:
        return self._count > 0

    def due(self, now: float | None = None) -> bool:
        """True when the held record has waited `timeout` for a continuation."""
        if not self._count:
            return False
        return (time.monotonic() if now is None else now) - self._last >= self.timeout

    def feed(
        self,
        texts: list[str],
        sizes: list[int],
        truncated: set[int] | None = None,
        now: float | None = None,
    ) -> tuple[list[str], list[int], int]:
        """Add lines; return (complete records, indices of truncated ones, bytes they span).

        `sizes[i]` is line i's length in the file including its newline.
        """
        out: list[str] = []
        out_trunc: list[int] = []
        consumed = 0
        self.last_sizes = []
        search = self.start.search
        for i, text in enumerate(texts):
            if self._count and (search(text) is not None or self._count >= self.max_lines):
                consumed += self._emit(out, out_trunc)
            self._add(text, sizes[i], truncated is not None and i in truncated)
        self._last = time.monotonic() if now is None else now
        if self._count >= self.max_lines:
            consumed += self._emit(out, out_trunc)
        return out, out_trunc, consumed

    def flush(self) -> tuple[list[str], list[int], int]:
        """Hand on the held record now (timeout, end of file, shutdown)."""
        out: list[str] = []
        out_trunc: list[int] = []
        self.last_sizes = []
        consumed = self._emit(out, out_trunc) if self._count else 0
        return out, out_trunc, consumed

    def reset(self) -> None:
        """Forget what is held (the file it came from was truncated and restarts)."""
        self._lines = []
        self._count = 0
        self._chars = 0
        self._bytes = 0
        self._truncated = False

    def _add(self, text: str, size: int, truncated: bool) -> None:
        self._bytes += size
        self._count += 1
        self._truncated = self._truncated or truncated
        room = self.max_chars - self._chars - (1 if self._lines else 0)
        if room <= 0:
            self._truncated = True
            return
        if len(text) > room:
            text = text[:room]
            self._truncated = True
        self._chars += len(text) + (1 if self._lines else 0)
        self._lines.append(text)

    def _emit(self, out: list[str], out_trunc: list[int]) -> int:
        if self._truncated:
            out_trunc.append(len(out))
        out.append("\n".join(self._lines))
        consumed = self._bytes
        self.last_sizes.append(consumed)
        self.reset()
        return consumed
