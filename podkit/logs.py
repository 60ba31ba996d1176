"""Logging: one JSON object per line on stderr, or plain text for humans.

Every record carries `time` (RFC 3339, UTC), `level`, `program`, `message`
and whatever context fields the caller passed in `extra`. Known secret values
are scrubbed from every record before it is written, as a second line of
defence behind code that never logs them in the first place.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

from .secrets import scrub

# Attributes of a LogRecord that are not user context.
_RESERVED = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


def rfc3339(ts: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds, for log records."""
    if ts is None:
        ts = time.time()
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def rfc3339_ns(ns: int | None = None) -> str:
    """RFC 3339 UTC with nanoseconds, for data records (time.time_ns())."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and k[0] != "_"}


class _ProgramFilter(logging.Filter):
    def __init__(self, program: str) -> None:
        super().__init__()
        self.program = program

    def filter(self, record: logging.LogRecord) -> bool:
        record.program = self.program
        return True


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(JsonFormatter):
        def add_fields(
            self,
            log_record: dict[str, Any],
            record: logging.LogRecord,
            message_dict: dict[str, Any],
        ) -> None:
            log_record["time"] = rfc3339(record.created)
            log_record["level"] = record.levelname.lower()
            log_record["program"] = getattr(record, "program", "podkit")
            log_record["message"] = record.getMessage()
            for key, value in _context(record).items():
                if key != "program":
                    log_record[key] = value
            if record.exc_info:
                log_record["exc_info"] = self.formatException(record.exc_info)
            elif record.exc_text:
                log_record["exc_info"] = record.exc_text

        def format(self, record: logging.LogRecord) -> str:
            return scrub(super().format(record))

    return Formatter(json_ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={v}" for k, v in _context(record).items() if k != "program")
        line = (
            f"{rfc3339(record.created)} {record.levelname.lower():7} "
            f"{getattr(record, 'program', 'podkit')}: {record.getMessage()}"
        )
        if ctx:
            line += "  " + ctx
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line)


def setup_logging(program: str, fmt: str = "json", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_json_formatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ProgramFilter(program))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries chatter at INFO about things our own records already say.
    for noisy in ("aiohttp.access", "git", "watchdog", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def where(exc: BaseException) -> str:
    """The file and line an exception was raised at: what a throttled record of an
    unforeseen failure says instead of a traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


#: Keys a RateLimited keeps at most. Callers key on error texts, which often
#: hold something new each time (a port, a resourceVersion, a script's
#: output): without a bound a sidecar failing for weeks keeps every text.
RATE_LIMITED_MAX_KEYS = 1000


class RateLimited:
    """Log the same repeated condition at most once per `interval` seconds.

    The first occurrence is logged at once; later ones within the interval are
    counted and the count rides on the next record (`repeated`).

    A key whose interval is over and that has nothing suppressed is the same
    as one never seen: such keys are dropped once per interval. Keys holding a
    count are kept for their next record, up to RATE_LIMITED_MAX_KEYS (the
    least recently seen go first).
    """

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # least recently seen first
        self._swept = time.monotonic()
        self._lock = threading.Lock()

    def log(self, key: str, level: int, msg: str, **fields: Any) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._swept >= self.interval:
                self._sweep(now)
            # Popped and put back: the dict's order is then that of the last use.
            last, suppressed = self._last.pop(key, (-1e18, 0))
            if now - last < self.interval:
                self._last[key] = (last, suppressed + 1)
                return False
            self._last[key] = (now, 0)
            if len(self._last) > RATE_LIMITED_MAX_KEYS:
                del self._last[next(iter(self._last))]
        if suppressed:
            fields["repeated"] = suppressed
        self.logger.log(level, msg, extra=fields)
        return True

    def _sweep(self, now: float) -> None:
        """Drop the keys that would log at once and carry no count: dropping them
        changes nothing."""
        self._swept = now
        stale = [k for k, (t, n) in self._last.items() if not n and now - t >= self.interval]
        for k in stale:
            del self._last[k]

    def clear(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)
