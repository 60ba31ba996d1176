"""json: one JSON object per line, re-keyed to the schema.

The first of `time`/`timestamp`/`ts`/`@timestamp`/... becomes `time` (RFC 3339
text, or epoch seconds/ms/us/ns by magnitude), the first of `level`/`lvl`/
`severity`/`levelname`/... becomes `level` (words and numbers normalised:
syslog 0-7, bunyan/pino 10-60), the first of `message`/`msg`/... becomes
`message`; the other top-level keys become snake_case fields, values as the
app typed them (nested objects kept as they are). A line that is not a JSON
object is a parse error.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .base import Parser, register
from .common import fill


@register
class Json(Parser):
    names = ("json",)
    whole_record = True  # pretty-printed JSON spans lines: parse a joined record whole

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        # Output must stay strict JSON: Python's decoder takes NaN/Infinity and
        # turns 1e999 into inf, which would be written back as bare NaN/Infinity.
        # Such values are kept as the text the app wrote.
        self._loads = json.JSONDecoder(parse_float=_finite, parse_constant=str).decode

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        if line[:1] != "{":
            line = line.strip()
            if line[:1] != "{":
                return None
        try:
            obj = self._loads(line)
        except (ValueError, RecursionError):  # the app chose the nesting: a parse error
            return None
        if not isinstance(obj, dict):
            return None
        rec: dict[str, Any] = {"time": None, "level": "info", "message": "", "source": source}
        return fill(rec, obj.items(), self.clock)


def _finite(text: str) -> float | str:
    f = float(text)
    return f if math.isfinite(f) else text
