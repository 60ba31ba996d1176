"""The output schema every parser fills: time, level, message, source, fields.

Helpers here are on the hot path of the slower formats (logfmt, json, regex),
so names and levels are memoised: a log stream repeats a handful of keys and
level words millions of times.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: Keys of the schema itself; a parsed field with one of these names is renamed.
RESERVED = frozenset(("time", "level", "message", "source", "parse_error", "truncated"))

LEVELS = ("debug", "info", "warning", "error", "critical")

_LEVEL_WORDS = {
    "debug": "debug",
    "dbg": "debug",
    "trace": "debug",
    "trc": "debug",
    "verbose": "debug",
    "fine": "debug",
    "finer": "debug",
    "finest": "debug",
    "d": "debug",
    "t": "debug",
    "v": "debug",
    "info": "info",
    "inf": "info",
    "information": "info",
    "informational": "info",
    "notice": "info",
    "i": "info",
    "n": "info",
    "config": "info",
    "warn": "warning",
    "warning": "warning",
    "wrn": "warning",
    "w": "warning",
    "error": "error",
    "err": "error",
    "erro": "error",
    "severe": "error",
    "e": "error",
    "fatal": "critical",
    "crit": "critical",
    "critical": "critical",
    "alert": "critical",
    "emerg": "critical",
    "emergency": "critical",
    "panic": "critical",
    "dpanic": "critical",
    "f": "critical",
    "c": "critical",
}

#: Syslog severity 0..7 (RFC 5424 section 6.2.1): emerg alert crit err warning notice info debug.
SYSLOG_SEVERITY = ("critical", "critical", "critical", "error", "warning", "info", "info", "debug")

_level_cache: dict[Any, str | None] = {}


def norm_level(value: Any) -> str | None:
    """A level word or number normalised to debug/info/warning/error/critical, or None.

    Numbers 0..7 are syslog severities; 10..60 are the bunyan/pino scale
    (10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal).
    """
    try:
        return _level_cache[value]
    except (KeyError, TypeError):
        pass
    out: str | None = None
    num: int | None = None
    if isinstance(value, bool):
        num = None
    elif isinstance(value, int):
        num = value
    elif isinstance(value, float) and value.is_integer():
        num = int(value)
    elif isinstance(value, str):
        word = value.strip().lower()
        out = _LEVEL_WORDS.get(word)
        if out is None and word.isdigit():
            num = int(word)
        elif out is None and len(word) > 1:
            # "ERROR:", "[warn]", "<info>" and the like.
            out = _LEVEL_WORDS.get(word.strip("[]<>():,. "))
    if num is not None:
        if 0 <= num <= 7:
            out = SYSLOG_SEVERITY[num]
        elif num >= 10:
            out = (
                "debug"
                if num < 30
                else "info"
                if num < 40
                else "warning"
                if num < 50
                else "error"
                if num < 60
                else "critical"
            )
    if isinstance(value, str | int) and len(_level_cache) < 1024:
        _level_cache[value] = out
    return out


_CAMEL1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_WORD = re.compile(r"[^0-9a-zA-Z]+")
_snake_cache: dict[str, str] = {}


def snake(name: str) -> str:
    """`userAgent`, `User-Agent`, `HTTPStatus`, `req.id` -> user_agent, http_status, req_id."""
    try:
        return _snake_cache[name]
    except KeyError:
        pass
    s = _CAMEL2.sub(r"\1_\2", _CAMEL1.sub(r"\1_\2", name))
    s = _NON_WORD.sub("_", s).strip("_").lower() or "field"
    if s[0].isdigit():
        s = "f_" + s
    if s in RESERVED:
        s = "field_" + s
    if len(_snake_cache) < 4096:
        _snake_cache[name] = s
    return s


_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})(\.[0-9]+)?([eE][+-]?[0-9]{1,3})?")


def number(text: str) -> Any:
    """The value as int or float when the text is exactly a number, else the text.

    Leading zeros ("007", a zip code) and huge integers stay text: converting
    them would change what the app wrote.
    """
    if not text or len(text) > 24:
        return text
    c = text[0]
    if c > "9" or (c < "0" and c != "-"):  # most values are words: one comparison
        return text
    m = _NUMBER.fullmatch(text)
    if m is None:
        return text
    if m.lastindex is None:
        return int(text)
    f = float(text)
    return f if math.isfinite(f) else text


def error_record(line: str, source: str, time_text: str) -> dict[str, Any]:
    """A line no parser understood: passed through whole, marked, never dropped."""
    return {
        "time": time_text,
        "level": "info",
        "message": line,
        "source": source,
        "parse_error": True,
    }
