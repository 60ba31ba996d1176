"""logfmt: `time=... level=info msg="hello world" status=200 duration_ms=12.5`.

The format of Heroku, logrus's text formatter, go-kit/log and log/slog's
TextHandler (https://brandur.org/logfmt). `time`/`ts`, `level`/`lvl` and
`msg`/`message` map onto the schema; without a `msg` the whole line is the
message, so nothing the app wrote is lost.
"""

from __future__ import annotations

from typing import Any

from .base import Parser, register
from .common import fill, parse_pairs


@register
class Logfmt(Parser):
    names = ("logfmt",)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        pairs = parse_pairs(line)
        if pairs is None:
            return None
        rec: dict[str, Any] = {"time": None, "level": "info", "message": line, "source": source}
        return fill(rec, pairs, self.clock)
