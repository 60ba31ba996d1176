"""Fallback chains: `--format nginx,json,logfmt` tries each format in order per line.

A container that mixes formats (an access log and the app's JSON on one
stream) is parsed whole; the field `format` names the one that matched. A
line none of them reads is a parse error, passed through as always.
"""

from __future__ import annotations

from json.encoder import encode_basestring as _enc
from typing import Any

from ..timeparse import Clock
from .base import Parser


class Chain(Parser):
    """Not registered: create() builds one for a --format with commas."""

    def __init__(self, clock: Clock, parsers: list[tuple[str, Parser]]) -> None:
        super().__init__(clock)
        self.parsers = parsers
        self.whole_record = any(p.whole_record for _, p in parsers)  # type: ignore[misc]
        first_name, first = parsers[0]
        fast = getattr(first, "encode_line", None)
        if fast is not None:
            self._fast = fast
            self._fast_tail = f',"format":{_enc(first_name)}}}'
            self.encode_line = self._encode_first

    def _encode_first(self, line: str, source_json: str) -> str | None:
        """The first format's JSON fast path (nginx), tagged; None hands over to parse()."""
        out: str | None = self._fast(line, source_json)
        return None if out is None else out[:-1] + self._fast_tail

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        for name, parser in self.parsers:
            try:
                rec = parser.parse(line, source)
            except Exception:  # one format's bug must not stop the others from trying
                rec = None
            if rec is not None:
                if "format" in rec:  # the app's own field keeps its value under another name
                    rec["field_format"] = rec.pop("format")
                rec["format"] = name
                return rec
        return None
