"""Conditions on what a peer answers: a JSONPath comparison, a Prometheus sample comparison.

`$.status == "UP"`, `$.data.reloadConfigSuccess == true`, `$.items[0].ready`
(a bare path: present and truthy); `prometheus_config_last_reload_successful
== 1`, `up{job="api"} >= 1`. The path language is the small common subset
of JSONPath that such checks use: `$`, `.name`, `["name"]`, `[index]`. The
reloader's `--verify-json`/`--verify-metric` and waitfor's `--http-json`
share it.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._http1 import loads_json

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_OP_RE = re.compile(r"\s*(==|!=|<=|>=|<|>)\s*")
_STEP = re.compile(r"""\.([A-Za-z_][\w-]*)|\[(-?\d+)\]|\[\s*(?:"([^"]*)"|'([^']*)')\s*\]""")
_SAMPLE_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')

#: A sample value is at most this deep in a JSON document we look at.
_MISSING = object()


class ConditionError(ValueError):
    """The condition text cannot be parsed (a usage error)."""


def _split(text: str) -> tuple[str, str | None, str | None]:
    """`LEFT OP RIGHT` or a bare `LEFT`; the operator outside any quotes, brackets or braces."""
    quote = ""
    depth = 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch in "=!<>" and depth <= 0:
            m = _OP_RE.match(text, i)
            if m is None:
                raise ConditionError(f"{text!r}: unknown operator at {text[i:]!r}")
            return text[:i].strip(), m.group(1), text[m.end() :].strip()
    return text.strip(), None, None


def _literal(text: str) -> Any:
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1]
    try:
        return json.loads(text)
    except ValueError:
        raise ConditionError(f"{text!r}: not a JSON value (quote strings)") from None


def parse_path(path: str) -> list[str | int]:
    if not path.startswith("$"):
        raise ConditionError(f"{path!r}: a JSONPath starts with $")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ConditionError(f"{path!r}: cannot parse at {path[pos:]!r}")
        name, index, dq, sq = m.groups()
        steps.append(int(index) if index is not None else (name or dq or sq or ""))
        pos = m.end()
    return steps


def lookup(doc: Any, steps: list[str | int]) -> Any:
    """The value at `steps`, or _MISSING."""
    for step in steps:
        if isinstance(step, int):
            if not (isinstance(doc, list) and -len(doc) <= step < len(doc)):
                return _MISSING
        elif not (isinstance(doc, dict) and step in doc):
            return _MISSING
        doc = doc[step]
    return doc


def _compare(op: str | None, actual: Any, want: Any) -> bool:
    if op is None:
        return actual is not _MISSING and bool(actual)
    if actual is _MISSING:
        return op == "!="
    if op in ("==", "!="):
        return _OPS[op](actual, want)
    if isinstance(actual, bool) or isinstance(want, bool):
        return False
    if isinstance(actual, (int, float)) and isinstance(want, (int, float)):
        return _OPS[op](actual, want)
    if isinstance(actual, str) and isinstance(want, str):
        return _OPS[op](actual, want)
    return False


@dataclass(frozen=True)
class JSONCondition:
    """`$.path OP literal`, or a bare `$.path` (present and truthy)."""

    text: str
    steps: list[str | int]
    op: str | None
    want: Any

    @classmethod
    def parse(cls, text: str) -> JSONCondition:
        left, op, right = _split(text.strip())
        steps = parse_path(left)
        want = _literal(right) if right is not None else None
        if op is not None and not right:
            raise ConditionError(f"{text!r}: nothing after {op}")
        return cls(text.strip(), steps, op, want)

    def test(self, doc: Any) -> tuple[bool, Any]:
        """(holds, the value found or None)."""
        actual = lookup(doc, self.steps)
        return _compare(self.op, actual, self.want), None if actual is _MISSING else actual


def load_json(body: bytes) -> Any:
    """json.loads with a depth cap: a hostile peer cannot make the parser recurse deep."""
    return loads_json(body)


@dataclass(frozen=True)
class Sample:
    """`name{label="v",...}` of the Prometheus text format."""

    name: str
    labels: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Sample:
        text = text.strip()
        m = _SAMPLE_NAME.match(text)
        if m is None:
            raise ConditionError(f"{text!r}: not a metric name")
        labels: dict[str, str] = {}
        rest = text[m.end() :].strip()
        if rest:
            if not (rest.startswith("{") and rest.endswith("}")):
                raise ConditionError(f"{text!r}: labels go in {{...}}")
            body, pos = rest[1:-1], 0
            while pos < len(body.rstrip()):
                lm = _LABEL.match(body, pos)
                if lm is None:
                    raise ConditionError(f"{text!r}: cannot parse the labels")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
        return cls(m.group(0), labels)

    def find(self, exposition: str) -> float | None:
        """The value of the first sample with this name and (at least) these labels."""
        for line in exposition.splitlines():
            if not line.startswith(self.name) or line.startswith("#"):
                continue
            rest = line[len(self.name) :]
            if rest[:1] not in ("{", " ", "\t"):
                continue  # a longer name with this prefix
            labels: dict[str, str] = {}
            if rest.startswith("{"):
                end = rest.rfind("}")
                if end < 0:
                    continue
                for lm in _LABEL.finditer(rest[1:end]):
                    labels[lm.group(1)] = _unescape(lm.group(2))
                rest = rest[end + 1 :]
            if any(labels.get(k) != v for k, v in self.labels.items()):
                continue
            fields = rest.split()
            if not fields:
                continue
            try:
                return float(fields[0])
            except ValueError:
                continue
        return None


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


@dataclass(frozen=True)
class MetricCondition:
    """`name{labels} OP number`, or a bare `name{labels}` (present and not 0)."""

    text: str
    sample: Sample
    op: str | None
    want: float

    @classmethod
    def parse(cls, text: str) -> MetricCondition:
        left, op, right = _split(text.strip())
        sample = Sample.parse(left)
        want = 0.0
        if op is not None:
            try:
                want = float(right or "")
            except ValueError:
                raise ConditionError(f"{text!r}: compare with a number") from None
        return cls(text.strip(), sample, op, want)

    def test(self, exposition: str) -> tuple[bool, float | None]:
        actual = self.sample.find(exposition)
        if actual is None or math.isnan(actual):
            return False, actual
        if self.op is None:
            return actual != 0, actual
        return _OPS[self.op](actual, self.want), actual


def as_time(value: Any) -> float | None:
    """A number, or an RFC 3339 string (Prometheus' `lastConfigTime`), as Unix seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        # Go writes nanoseconds; fromisoformat takes at most microseconds.
        text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return None
    return None
