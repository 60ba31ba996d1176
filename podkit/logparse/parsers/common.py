"""Pieces shared by the key=value formats (logfmt, klog's structured tail, json)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..schema import norm_level, number, snake

#: Field names that carry the schema's own values, in order of preference.
TIME_KEYS = ("time", "timestamp", "ts", "@timestamp", "t", "datetime", "date", "asctime")
LEVEL_KEYS = ("level", "lvl", "severity", "loglevel", "log_level", "levelname", "severity_text")
MESSAGE_KEYS = ("message", "msg", "@message", "log", "text", "event")

# A key, then an optional `=`; a quoted value (Go strconv.Quote); a bare value.
# Possessive quantifiers (Python 3.11) keep a failing line linear.
_KEY = re.compile(r'\s*+([^\s="]++)(=?+)')
_QUOTED_VALUE = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"')
_BARE = re.compile(r'[^\s"]*+')
_SPACE = re.compile(r"\s*+")
# The common case, a line without JSON values, in two regex calls: the whole
# line checked once, then every pair found.
_PAIR_TEXT = r'[^\s="]++(?:=(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"|[^\s"]*+))?+'
_LINE = re.compile(r"\s*+(?:" + _PAIR_TEXT + r"(?:\s++" + _PAIR_TEXT + r")*+)?+\s*+")
_PAIRS = re.compile(r'([^\s="]++)(?:(=)(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|([^\s"]*+)))?+')
_GO_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{3})")
# Strict JSON out: NaN/Infinity/1e999 stay the text the app wrote.
_json_value = json.JSONDecoder(
    parse_constant=str, parse_float=lambda t: f if math.isfinite(f := float(t)) else t
).raw_decode
_BOOLS = {"true": True, "false": False}


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


def parse_pairs(text: str, pos: int = 0, bare_bools: bool = False) -> list[tuple[str, Any]] | None:
    """logfmt `k=v k="quoted v" j=["a","b"] flag` -> [(key, value)]; None unless it all parses.

    Types follow what the writer wrote (klog quotes by type, and so do slog
    and logfmt writers for anything with a space or a quote): a quoted value
    stays a string (`span="1112131415161718"`), an unquoted number is a
    number, an unquoted JSON array or object (klog's `KObjSlice`, `pods=["a"]`)
    is that JSON, a bare key is a flag (True). With `bare_bools` (klog, which
    quotes every string), unquoted `true`/`false` are booleans.
    Prose that merely contains an `=` is not logfmt: more bare words than
    pairs, or no pair at all, is a parse failure.
    """
    if "=[" not in text and "={" not in text:
        return _plain_pairs(text, pos, bare_bools)
    return _scan_pairs(text, pos, bare_bools)


def _scan_pairs(text: str, pos: int, bare_bools: bool) -> list[tuple[str, Any]] | None:
    """parse_pairs() one pair at a time, for lines that may hold JSON values."""
    out: list[tuple[str, Any]] = []
    flags = 0
    end = len(text)
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            break
        m = _KEY.match(text, pos)
        if m is None:
            return None
        key = m.group(1)
        pos = m.end()
        value: Any
        if not m.group(2):
            flags += 1
            value = True
        else:
            c = text[pos : pos + 1]
            value = None
            if c == '"':
                q = _QUOTED_VALUE.match(text, pos)
                if q is None:
                    return None
                value, pos = unquote(q.group(1)), q.end()
            elif c == "[" or c == "{":
                try:
                    value, j = _json_value(text, pos)
                except (ValueError, RecursionError):  # nested past the limit: kept as text
                    value = None
                else:
                    if j < end and not text[j].isspace():
                        value = None
                    else:
                        pos = j
            if value is None:
                b = _BARE.match(text, pos)
                assert b is not None  # matches the empty string
                word = b.group()
                pos = b.end()
                value = number(word) if word else ""
                if bare_bools and word in _BOOLS:
                    value = _BOOLS[word]
        if pos < end and not text[pos].isspace():
            return None
        out.append((key, value))
    if flags * 2 > len(out) or len(out) == flags:
        return None
    return out


def _plain_pairs(text: str, pos: int, bare_bools: bool) -> list[tuple[str, Any]] | None:
    """parse_pairs() for a line with no JSON value: the same result, several times faster."""
    if _LINE.fullmatch(text, pos) is None:
        return None
    out: list[tuple[str, Any]] = []
    flags = 0
    for key, eq, quoted, bare in _PAIRS.findall(text, pos):
        if not eq:
            flags += 1
            out.append((key, True))
        elif quoted:  # (`k=""` and `k=` are both the empty string)
            out.append((key, unquote(quoted)))
        elif bare:
            out.append((key, _BOOLS[bare] if bare_bools and bare in _BOOLS else number(bare)))
        else:
            out.append((key, ""))
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
