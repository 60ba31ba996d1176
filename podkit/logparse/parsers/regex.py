"""regex:PATTERN: the user's own format, as a Python regular expression.

Named groups become fields (snake_case, numbers as numbers, unmatched groups
left out); groups named `time`, `level` and `message` (also `msg`, `severity`,
`timestamp`, ...) map onto the schema. Without a message group the whole line
is the message. The PCRE/Oniguruma spelling `(?<name>...)` used by Fluent Bit
and grok is accepted too. The pattern is searched, not anchored: add `^`/`$`.
"""

from __future__ import annotations

import re
from typing import Any

from ..schema import number
from .base import Parser, register
from .common import LEVEL_KEYS, MESSAGE_KEYS, TIME_KEYS, fill

_PCRE_GROUP = re.compile(r"(?<!\\)\(\?<(?![=!])")


@register
class Regex(Parser):
    names = ("regex",)
    takes_argument = True

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        pattern = _PCRE_GROUP.sub("(?P<", argument or "")
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"regex:{argument}: {exc}") from None
        if not self.regex.groupindex:
            raise ValueError(f"regex:{argument}: no named group (?P<name>...)")
        self.names_ = list(self.regex.groupindex)
        schema = {*TIME_KEYS, *LEVEL_KEYS, *MESSAGE_KEYS}
        self.has_message = any(n.lower() in MESSAGE_KEYS for n in self.names_)
        self.schema_groups = any(n.lower() in schema for n in self.names_)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        m = self.regex.search(line)
        if m is None:
            return None
        rec: dict[str, Any] = {"time": None, "level": "info", "message": line, "source": source}
        pairs = [(k, number(v)) for k, v in m.groupdict().items() if v is not None]
        return fill(rec, pairs, self.clock, take_schema=self.schema_groups)
