"""The per-record hot loop: text records in, one NDJSON batch out.

Kept apart from the program so the benchmark and the unit tests drive
exactly the code the adapter runs.
"""

from __future__ import annotations

import codecs
import json
import json.encoder
from typing import Any

from podkit import rfc3339_ns
from podkit.logparse.parsers import Parser
from podkit.logparse.schema import error_record
from podkit.sinks import NdjsonBatch
from podkit.stacktrace import parse_trace

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_enc = json.encoder.encode_basestring


def _escape_surrogates(exc: UnicodeError) -> tuple[str, int]:
    """A lone surrogate (from a `\\ud800` escape in the app's JSON) cannot be UTF-8.

    It can only sit inside a JSON string of the output, so it is written
    back as the escape it came from: the output stays valid UTF-8 and the
    value survives. (Encoding with surrogatepass would emit invalid UTF-8.)
    """
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(f"\\u{ord(c):04x}" for c in bad), exc.end


codecs.register_error("podkit-json-escape", _escape_surrogates)


class Converter:
    """Text records in, one NDJSON batch out: the per-record hot loop.

    Kept apart from the program so the benchmark and the unit tests drive
    exactly the code the adapter runs. A parser with `encode_line()` (nginx,
    Apache) writes its JSON text straight from the regex match; every other
    record goes through `parse()`'s dict and one shared JSON encoder.
    """

    def __init__(self, parser: Parser, fmt: str, trace_mode: str | None = None) -> None:
        self.parser = parser
        self.format = fmt
        #: --multiline MODE: a joined record's continuation lines become `error`.
        self.trace_mode = trace_mode
        self.records = 0
        self.parse_errors = 0
        self._encode_line = getattr(parser, "encode_line", None)
        self._source = ("", '""')

    def convert(
        self,
        texts: list[str],
        source: str,
        read_time_ns: int,
        truncated: frozenset[int] | set[int] | list[int] = frozenset(),
    ) -> NdjsonBatch:
        if self._source[0] != source:
            self._source = (source, _enc(source))
        source_json = self._source[1]
        # Year-less timestamps are placed next to when their lines were read.
        self.parser.clock.read_ns = read_time_ns
        fast = self._encode_line
        slow = self._record
        read_time = rfc3339_ns(read_time_ns)
        out: list[str] = []
        append = out.append
        errors = 0
        if fast is not None and not truncated:
            for text in texts:
                line = None
                if "\n" not in text and text[-1:] != "\r":
                    try:
                        line = fast(text, source_json)
                    except Exception:
                        line = None
                if line is None:
                    rec, bad = slow(text, source, read_time)
                    errors += bad
                    line = _dumps(rec)
                append(line)
        else:
            for i, text in enumerate(texts):
                rec, bad = slow(text, source, read_time)
                errors += bad
                if truncated and i in truncated:
                    rec["truncated"] = True
                append(_dumps(rec))
        self.records += len(out)
        self.parse_errors += errors
        body = ("\n".join(out) + "\n").encode("utf-8", "podkit-json-escape") if out else b""
        return NdjsonBatch(body, len(out))

    def _record(self, text: str, source: str, read_time: str) -> tuple[dict[str, Any], int]:
        """One record as a dict, and 1 when it did not parse."""
        if text[-1:] == "\r":  # CRLF line endings
            text = text[:-1]
        rest = None
        whole = self.parser.whole_record
        if "\n" in text and not whole:
            # A joined multiline record: its first line carries the format,
            # the continuation lines (a stack trace) extend the message.
            text, rest = text.split("\n", 1)
        try:
            rec = self.parser.parse(text, source)
            if rec is None and whole and "\n" in text:
                text, rest = text.split("\n", 1)
                rec = self.parser.parse(text, source)
        except Exception:  # a parser bug must cost one line, never the stream
            rec = None
        if rec is None:
            whole_text = text if rest is None else f"{text}\n{rest}"
            if self.trace_mode is not None and rest is not None:
                # A trace on its own (a Go panic, an uncaught exception on stderr).
                error = parse_trace(whole_text, self.trace_mode)
                if error is not None:
                    return {
                        "time": read_time,
                        "level": "error",
                        "message": text,
                        "source": source,
                        "error": error,
                    }, 0
            return error_record(whole_text, source, read_time), 1
        if rec["time"] is None:
            rec["time"] = read_time
        if rest is not None:
            error = parse_trace(rest, self.trace_mode) if self.trace_mode is not None else None
            if error is None:
                rec["message"] = f"{rec['message']}\n{rest}"
            else:
                # The trace as a structure; its text is kept whole beside it.
                error["trace"] = rest
                if "error" in rec:  # the app's own field keeps its value under another name
                    rec["field_error"] = rec.pop("error")
                rec["error"] = error
        return rec, 0
