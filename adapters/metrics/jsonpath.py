"""The JSONPath subset the json source understands.

`$` root, `@` the current item, `.key`, `['key']`, `[n]` (negative from the
end), `[*]` / `.*`, `[?(@.k == "v")]` (==, !=, <, <=, >, >=, or bare `@.k`
for "exists"), and `..key` recursive descent. Evaluation is iterative, so a
hostile, deeply nested document cannot blow the stack, and it reports keys a
path expected but did not find, so the source can count them.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from typing import Any

Step = tuple[Any, ...]

_NAME = re.compile(r"[^.\[\]\s]+")
_FILTER = re.compile(
    r"\[\?\(\s*(@[^=!<>\s)]*)\s*(?:(==|!=|<=|>=|<|>)\s*(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^)\s]+))?\s*\)\]"
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class PathError(ValueError):
    pass


class Match:
    """One node a path reached: its value, the container holding it and its key."""

    __slots__ = ("key", "parent", "up", "value")

    def __init__(self, value: Any, parent: Any, key: Any, up: Match | None = None) -> None:
        self.value = value
        self.parent = parent
        self.key = key
        #: The match this one was reached from (None at the start); a link
        #: rather than a path tuple, so deep documents stay linear.
        self.up = up

    @property
    def path(self) -> tuple[Any, ...]:
        """The concrete keys from where the search started down to this node."""
        keys = []
        m: Match | None = self
        while m is not None and m.up is not None:
            keys.append(m.key)
            m = m.up
        return tuple(reversed(keys))


def _literal(text: str) -> Any:
    if text[0] in "\"'":
        if text[0] == "'":
            return text[1:-1]
        return json.loads(text)
    if text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text]
    try:
        return float(text)
    except ValueError:
        raise PathError(f"bad filter value {text!r}") from None


class JSONPath:
    def __init__(self, text: str) -> None:
        self.text = text
        self.relative, self.steps = self._parse(text.strip())

    def __repr__(self) -> str:
        return f"JSONPath({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JSONPath) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def shared_prefix(self, other: JSONPath) -> int:
        """How many leading steps both paths share, stopping at `..` (which
        reaches nodes at varying depths, so it cannot anchor a correlation)."""
        k = 0
        for a, b in zip(self.steps, other.steps, strict=False):
            if a != b or a[0] == "desc":
                break
            k += 1
        return k

    def has_wildcard(self, upto: int) -> bool:
        return any(s[0] in ("wild", "filter") for s in self.steps[:upto])

    @staticmethod
    def _parse(text: str) -> tuple[bool, list[Step]]:
        if not text or text[0] not in "$@":
            raise PathError(f"{text!r}: a path starts with $ (or @ for the current item)")
        relative = text[0] == "@"
        i, steps = 1, []
        n = len(text)
        while i < n:
            desc = False
            if text.startswith("..", i):
                desc, i = True, i + 2
                if i < n and text[i] == "[":
                    step, i = JSONPath._bracket(text, i)
                else:
                    step, i = JSONPath._dotted(text, i)
            elif text[i] == ".":
                step, i = JSONPath._dotted(text, i + 1)
            elif text[i] == "[":
                step, i = JSONPath._bracket(text, i)
            else:
                raise PathError(f"{text!r}: unexpected {text[i]!r} at {i}")
            steps.append(("desc", step) if desc else step)
        return relative, steps

    @staticmethod
    def _dotted(text: str, i: int) -> tuple[Step, int]:
        if i < len(text) and text[i] == "*":
            return ("wild",), i + 1
        m = _NAME.match(text, i)
        if not m:
            raise PathError(f"{text!r}: expected a key at {i}")
        return ("key", m.group()), m.end()

    @staticmethod
    def _bracket(text: str, i: int) -> tuple[Step, int]:
        if text.startswith("[?", i):
            m = _FILTER.match(text, i)
            if not m:
                raise PathError(f"{text!r}: bad filter at {i}")
            sub = JSONPath(m.group(1))
            op = m.group(2)
            value = _literal(m.group(3)) if op else None
            return ("filter", sub, op, value), m.end()
        end = text.find("]", i)
        if end < 0:
            raise PathError(f"{text!r}: unclosed [")
        inner = text[i + 1 : end].strip()
        if inner == "*":
            return ("wild",), end + 1
        if inner[:1] in ("'", '"'):
            # A quoted key may contain "]"; find its closing quote instead.
            q = inner[0]
            close = text.find(q + "]", i + 2)
            if close < 0:
                raise PathError(f"{text!r}: unclosed quoted key")
            return ("key", text[i + 2 : close]), close + 2
        try:
            return ("index", int(inner)), end + 1
        except ValueError:
            raise PathError(f"{text!r}: bad index {inner!r}") from None

    def find(self, root: Any, missing: list[str] | None = None, start: int = 0) -> list[Match]:
        """Every match, in document order. Keys expected on an object but absent
        are appended to `missing` (when given). `start` skips leading steps
        (root is then the node those steps led to)."""
        current = [Match(root, None, None)]
        for step in self.steps[start:]:
            nxt: list[Match] = []
            for m in current:
                if step[0] == "desc":
                    for node in _descend(m):
                        _apply(step[1], node, nxt, None)
                else:
                    _apply(step, m, nxt, missing)
            current = nxt
            if not current:
                break
        return current

    def first(self, root: Any) -> Any:
        found = self.find(root)
        return found[0].value if found else _ABSENT


_ABSENT: Any = object()


def absent(value: Any) -> bool:
    return value is _ABSENT


def _descend(m: Match) -> list[Match]:
    """The node and everything below it, iteratively (no recursion limit)."""
    out: list[Match] = []
    stack = [m]
    while stack:
        cur = stack.pop()
        out.append(cur)
        v = cur.value
        if isinstance(v, dict):
            stack.extend(Match(c, v, k, cur) for k, c in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend(Match(c, v, k, cur) for k, c in reversed(list(enumerate(v))))
    return out


def node_at(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for k in path:
        node = node[k]
    return node


def _apply(step: Step, m: Match, out: list[Match], missing: list[str] | None) -> None:
    v = m.value
    kind = step[0]
    if kind == "key":
        key = step[1]
        if isinstance(v, dict):
            if key in v:
                out.append(Match(v[key], v, key, m))
            elif missing is not None:
                missing.append(key)
        elif isinstance(v, list) and key.lstrip("-").isdigit():
            _apply(("index", int(key)), m, out, missing)
    elif kind == "index":
        if isinstance(v, list):
            idx = step[1]
            if -len(v) <= idx < len(v):
                out.append(Match(v[idx], v, idx % len(v), m))
    elif kind == "wild":
        if isinstance(v, dict):
            out.extend(Match(c, v, k, m) for k, c in v.items())
        elif isinstance(v, list):
            out.extend(Match(c, v, k, m) for k, c in enumerate(v))
    elif kind == "filter":
        sub: JSONPath = step[1]
        op, want = step[2], step[3]
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, c in items:
            got = sub.first(c)
            if absent(got):
                continue
            if op is None:
                out.append(Match(c, v, k, m))
                continue
            if isinstance(want, float) and isinstance(got, str):
                try:
                    got = float(got)
                except ValueError:
                    continue
            try:
                if _OPS[op](got, want):
                    out.append(Match(c, v, k, m))
            except TypeError:
                continue
