"""grok:EXPRESSION: Logstash's grok patterns (`%{COMBINEDAPACHELOG}`, `%{SYSLOGLINE}`, ...).

The expression is compiled once by podkit.grok (core library plus
--grok-patterns-file) into one regex, searched in each line as Logstash does.
Captures become fields as grok types them: text, unless the expression says
`%{NUMBER:bytes:int}` or `:float`. A capture named like a time (`timestamp`,
`time`, `@timestamp`, `timestamp8601`, ...) becomes `time`, read by the
pattern it matched (`HTTPDATE`, `SYSLOGTIMESTAMP`, `HTTPDERROR_DATE`,
`TIMESTAMP_ISO8601`, or --time-format); `loglevel`/`level`/... becomes
`level`; `message`/`msg` becomes `message`, else the whole line is the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from json.encoder import encode_basestring as _enc
from typing import Any

from podkit import rfc3339_ns
from podkit.grok import GrokError, compile_grok

from ..schema import norm_level, snake
from ..timeparse import Clock
from .base import Parser, register
from .common import LEVEL_KEYS, MESSAGE_KEYS, TIME_KEYS


def _time_reader(clock: Clock, pattern: str) -> Callable[[str], str | None]:
    """How to read a time captured by `pattern`."""
    if clock.time_format:
        return clock.custom
    readers: dict[str, Callable[[str], str | None]] = {
        "HTTPDATE": clock.httpdate,
        "SYSLOGTIMESTAMP": clock.bsd,
        "HTTPDERROR_DATE": clock.ctime,
        "TIMESTAMP_ISO8601": clock.iso,
    }
    return readers.get(pattern, clock.any)


def _last_value_cache(read: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """Consecutive lines nearly always share their timestamp text: convert it once."""
    last: list[Any] = [None, None]

    def cached(text: str) -> str | None:
        if text != last[0]:
            last[0], last[1] = text, read(text)
        out: str | None = last[1]
        return out

    return cached


def _is_time_name(name: str) -> bool:
    low = name.lower()
    return low in TIME_KEYS or low.startswith("timestamp")


@register
class Grok(Parser):
    names = ("grok",)
    takes_argument = True
    argument_name = "EXPRESSION"

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        try:
            self.grok = compile_grok(argument or "", self.settings.grok_patterns or None)
        except GrokError as exc:
            raise ValueError(f"grok: {exc}") from None
        if not self.grok.captures:
            raise ValueError(f"grok:{argument}: no named capture (%{{PATTERN:field}})")
        self._search = self.grok.regex.search
        # Per field, decided once: its role in the schema and its output key.
        self._plan: list[tuple[str, tuple[Any, ...], str, str, Any]] = []
        taken: set[str] = set()
        for name, caps in self.grok.fields_by_name:
            low = name.lower()
            role = "field"
            readers = None
            if "time" not in taken and _is_time_name(name):
                role = "time"
                readers = {c.group: _time_reader(self.clock, c.pattern) for c in caps}
            elif "level" not in taken and low in LEVEL_KEYS:
                role = "level"
            elif "message" not in taken and low in MESSAGE_KEYS:
                role = "message"
            taken.add(role)
            self._plan.append((name, caps, snake(name), role, readers))
        self._fields = self.grok.fields
        self._fast_plan = self._compile_fast_plan()
        self._has_time = any(role == "time" for _, _, _, role, _ in self._plan)
        self._read: tuple[int | None, str | None] = (None, None)

    def _compile_fast_plan(self) -> list[tuple[int, str, str, str | None, Any]] | None:
        """(group index, JSON key text, role, type, reader) per field, for encode_line().

        Only when every field has one capture (no alternatives to choose between).
        """
        index = self.grok.regex.groupindex
        plan = []
        for _name, caps, key, role, readers in self._plan:
            if len(caps) != 1:
                return None
            c = caps[0]
            reader = _last_value_cache(readers[c.group]) if readers else None
            plan.append((index[c.group] - 1, f',"{key}":', role, c.type, reader))
        return plan

    def encode_line(self, line: str, source_json: str) -> str | None:
        """The record as its JSON text, straight from the match: the hot path.

        Equivalent to json-encoding parse()'s dict (a unit test holds them to
        that); None hands the line to parse().
        """
        plan = self._fast_plan
        if plan is None:
            return None
        m = self._search(line)
        if m is None:
            return None
        groups = m.groups()
        t: str | None = None
        level = "info"
        message: str | None = None
        out = []
        for i, key, role, type_, reader in plan:
            value = groups[i]
            if value is None:
                continue
            if role == "field":
                if type_ is None:
                    out.append(key + _enc(value))
                    continue
                try:
                    num = int(value) if type_ == "int" else float(value)
                except ValueError:
                    return None
                if isinstance(num, float) and not math.isfinite(num):
                    return None
                out.append(key + repr(num))
            elif role == "time":
                t = reader(value)
                if t is None:
                    return None
            elif role == "level":
                lvl = norm_level(value)
                if lvl is None:
                    return None
                level = lvl
            else:
                message = value
        if t is None:
            if self._has_time:
                return None  # a time capture that did not match: the slow path decides
            # No time in the expression: the read time, which the converter set.
            read_ns = self.clock.read_ns
            if read_ns != self._read[0]:
                self._read = (read_ns, rfc3339_ns(read_ns) if read_ns is not None else None)
            t = self._read[1]
            if t is None:
                return None
        msg = _enc(line if message is None else message)
        return (
            f'{{"time":"{t}","level":"{level}","message":{msg},'
            f'"source":{source_json}{"".join(out)}}}'
        )

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        m = self._search(line)
        if m is None:
            return None
        values = self._fields(m)
        rec: dict[str, Any] = {"time": None, "level": "info", "message": line, "source": source}
        fields: list[tuple[str, Any]] = []
        for written, caps, key, role, readers in self._plan:
            if written not in values:
                continue
            value = values[written]
            if role == "field":
                fields.append((key, value))
            elif role == "time":
                group = next(c.group for c in caps if m.group(c.group) is not None)
                t = readers[group](value) if isinstance(value, str) else self.clock.any(value)
                if t is None:  # unreadable: the read time stands in, the text stays a field
                    fields.append((key, value))
                else:
                    rec["time"] = t
            elif role == "level":
                lvl = norm_level(value)
                if lvl is None:
                    fields.append((key, value))
                else:
                    rec["level"] = lvl
            else:
                rec["message"] = value
        for key, value in fields:
            rec[key] = value  # snake() already renamed schema keys (field_time, ...)
        return rec
