"""Pieces shared by the key=value formats (logfmt, klog's structured tail, json)."""

from __future__ import annotations

import json
import re
from typing import Any

from ..schema import norm_level, number, snake

#: Field names that carry the schema's own values, in order of preference.
TIME_KEYS = ("time", "timestamp", "ts", "@timestamp", "t", "datetime", "date", "asctime")
LEVEL_KEYS = ("level", "lvl", "severity", "loglevel", "log_level", "levelname", "severity_text")
MESSAGE_KEYS = ("message", "msg", "@message", "log", "text", "event")

# One pair, and a whole line of pairs separated by whitespace. Possessive
# quantifiers (Python 3.11) keep a failing line linear: no backtracking into
# keys or bare values.
_PAIR_TEXT = r'[^\s="]++(?:=(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^\s"]*+))?+'
_LINE = re.compile(r"\s*+(?:" + _PAIR_TEXT + r"(?:\s++" + _PAIR_TEXT + r")*+)?+\s*+")
_PAIRS = re.compile(r'([^\s="]++)(?:(=)(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^\s"]*+)))?+')
_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{3})")


def unquote(text: str) -> str:
    """A Go-quoted string's body (strconv.Quote, as logfmt and klog write them)."""
    if "\\" not in text:
        return text
    try:
        out: str = json.loads('"' + _GO_ESCAPE.sub(_json_escape, text) + '"')
        return out
    except ValueError:
        return text.replace('\\"', '"').replace("\\\\", "\\")


def _json_escape(m: re.Match[str]) -> str:
    esc = m.group(1)
    code = int(esc[1:], 16) if esc[0] == "x" else int(esc, 8)
    return f"\\u{code:04x}"


def parse_pairs(text: str, pos: int = 0) -> list[tuple[str, Any]] | None:
    """logfmt `k=v k="quoted v" flag` -> [(key, value)]; None unless it all parses.

    Values are numbers when they look like one (quoted values too: logfmt
    writers quote by content, not by type); a bare key is a flag (True).
    Prose that merely contains an `=` is not logfmt: more bare words than
    pairs, or no pair at all, is a parse failure.
    """
    if _LINE.fullmatch(text, pos) is None:
        return None
    out: list[tuple[str, Any]] = []
    flags = 0
    for key, eq, quoted, bare in _PAIRS.findall(text, pos):
        if not eq:
            flags += 1
            out.append((key, True))
        elif quoted:
            out.append((key, number(unquote(quoted))))
        else:
            out.append((key, number(bare) if bare else ""))
    if flags * 2 > len(out) or len(out) == flags:
        return None
    return out


def fill(rec: dict[str, Any], pairs: Any, clock: Any, take_schema: bool = True) -> dict[str, Any]:
    """Add parsed (key, value) pairs to a record: schema keys mapped, the rest snake_cased.

    The first usable time/level/message key wins; a later duplicate stays a field.
    """
    have_level = have_message = not take_schema
    have_time = not take_schema or rec["time"] is not None
    for key, value in pairs:
        if not (have_time and have_level and have_message):
            low = key.lower()
            if not have_time and low in TIME_KEYS:
                t = clock.any(value)
                if t is not None:
                    rec["time"] = t
                    have_time = True
                    continue
            if not have_level and low in LEVEL_KEYS:
                lvl = norm_level(value)
                if lvl is not None:
                    rec["level"] = lvl
                    have_level = True
                    continue
            if not have_message and low in MESSAGE_KEYS:
                rec["message"] = value if isinstance(value, str) else json.dumps(value)
                have_message = True
                continue
        name = snake(key)
        if name in rec:  # a repeated key: keep both, the later one numbered
            i = 2
            while f"{name}_{i}" in rec:
                i += 1
            name = f"{name}_{i}"
        rec[name] = value
    return rec
