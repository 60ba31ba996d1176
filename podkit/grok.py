"""Grok: named regular expressions composed into one compiled regex.

The pattern language of Logstash's grok filter, which log tooling has shared
for a decade: `%{SYNTAX}` inserts a named pattern, `%{SYNTAX:field}` captures
what it matched as `field`, `%{SYNTAX:field:int}` (or `:float`) converts the
capture; a bare `(?<field>...)` captures too. The core library (`IP`,
`NUMBER`, `TIMESTAMP_ISO8601`, `COMBINEDAPACHELOG`, `SYSLOGLINE`, ...) ships
as the data file `podkit/grok-patterns`; users add theirs in the same
`NAME regex` syntax.

An expression is expanded once, recursively, into a single Python regex (no
per-line pattern lookups), so matching a line is one `re` call plus one dict:

    g = compile_grok("%{IP:client} %{WORD:method} %{NUMBER:bytes:int}")
    g.match("10.0.0.1 GET 512")  # {"client": "10.0.0.1", "method": "GET", "bytes": 512}

Shared by the logformat adapter (`--format grok:...`) and the metrics
adapter's log source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "Capture",
    "Grok",
    "GrokError",
    "base_patterns",
    "compile_grok",
    "load_patterns",
    "parse_patterns",
]

#: `%{SYNTAX}`, `%{SYNTAX:semantic}`, `%{SYNTAX:semantic:type}`.
_REF = re.compile(r"%\{(\w+)(?::([^:}]+))?(?::(\w+))?\}")
#: Oniguruma's named group `(?<name>`, not a lookbehind `(?<=` / `(?<!`.
_ONIG_GROUP = re.compile(r"(?<!\\)\(\?<(?![=!])([^>]+)>")
#: POSIX bracket classes (`[[:alnum:]]`), which Python's `re` lacks.
_POSIX = {
    "[:alnum:]": "a-zA-Z0-9",
    "[:alpha:]": "a-zA-Z",
    "[:digit:]": "0-9",
    "[:xdigit:]": "0-9A-Fa-f",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
    "[:space:]": r"\s",
    "[:blank:]": r" \t",
    "[:punct:]": r"!-/:-@\[-`{-~",
    "[:word:]": r"\w",
}
_TYPES = {"int": int, "float": float}
#: Expansion deeper than this is a cycle (`A %{B}`, `B %{A}`) or a mistake.
_MAX_DEPTH = 64


class GrokError(ValueError):
    """An expression or pattern file that cannot be compiled; the message says why."""


@dataclass(frozen=True)
class Capture:
    """One named capture: its regex group, the field it fills, where it came from."""

    group: str  # the group's name in the compiled regex (g0, g1, ...)
    name: str  # the field name as the user wrote it (`clientip`, `[http][verb]`)
    pattern: str  # the pattern that matched it (`HTTPDATE`), "" for a bare (?<name>...)
    type: str | None  # "int", "float", or None: the text as matched


def parse_patterns(text: str, origin: str = "patterns") -> dict[str, str]:
    """`NAME regex` lines (blank lines and `#` comments skipped) -> {NAME: regex}."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, body = line.partition(" ")
        body = body.strip()
        if not re.fullmatch(r"\w+", name) or not body:
            raise GrokError(f"{origin}:{n}: expected `NAME regex`, got {raw!r}")
        out[name] = body
    return out


def load_patterns(path: str | Path) -> dict[str, str]:
    """A patterns file (the Logstash `patterns_dir` syntax) -> {NAME: regex}."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GrokError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_patterns(text, str(path))


@lru_cache(maxsize=1)
def base_patterns() -> dict[str, str]:
    """The core library shipped with podkit (`podkit/grok-patterns`)."""
    text = resources.files("podkit").joinpath("grok-patterns").read_text(encoding="utf-8")
    return parse_patterns(text, "podkit/grok-patterns")


class Grok:
    """A compiled grok expression: one regex, its captures and their conversions."""

    def __init__(self, expression: str, patterns: dict[str, str] | None = None) -> None:
        self.expression = expression
        library = base_patterns()
        if patterns:
            library = {**library, **patterns}
        self._library = library
        self._captures: list[Capture] = []
        source = self._expand(expression, 0, ())
        try:
            self.regex: re.Pattern[str] = re.compile(source)
        except re.error as exc:
            raise GrokError(f"{expression!r}: {exc}") from None
        self.source = source
        self.captures: tuple[Capture, ...] = tuple(self._captures)
        # Fields in first-capture order; a name captured twice (alternatives)
        # takes whichever group matched.
        groups: dict[str, list[Capture]] = {}
        for c in self.captures:
            groups.setdefault(c.name, []).append(c)
        #: (field name, its captures) in the order the fields are written.
        self.fields_by_name: tuple[tuple[str, tuple[Capture, ...]], ...] = tuple(
            (name, tuple(cs)) for name, cs in groups.items()
        )
        self._fields = self.fields_by_name
        self._simple = all(len(cs) == 1 and cs[0].type is None for _, cs in self._fields)

    def _new_group(self, name: str, pattern: str, type_: str | None) -> str:
        if type_ is not None and type_ not in _TYPES:
            raise GrokError(f"%{{{pattern}:{name}:{type_}}}: type must be int or float")
        group = f"g{len(self._captures)}"
        self._captures.append(Capture(group, name, pattern, type_))
        return group

    def _expand(self, text: str, depth: int, stack: tuple[str, ...]) -> str:
        if depth > _MAX_DEPTH:
            raise GrokError(f"patterns nest too deep: {' -> '.join(stack[-8:])}")
        for posix, spelled in _POSIX.items():
            text = text.replace(posix, spelled)
        text = _ONIG_GROUP.sub(lambda m: f"(?P<{self._new_group(m.group(1), '', None)}>", text)

        def ref(m: re.Match[str]) -> str:
            name, semantic, type_ = m.groups()
            body = self._library.get(name)
            if body is None:
                raise GrokError(f"%{{{name}}}: no such pattern")
            if name in stack:
                raise GrokError(f"pattern {name} refers to itself: {' -> '.join((*stack, name))}")
            # The group is numbered before the body expands: fields come out
            # in the order they are written, outer before inner.
            group = self._new_group(semantic, name, type_) if semantic else None
            inner = self._expand(body, depth + 1, (*stack, name))
            return f"(?P<{group}>{inner})" if group else f"(?:{inner})"

        return _REF.sub(ref, text)

    def match(self, text: str, pos: int = 0) -> dict[str, Any] | None:
        """The captures of the first match (searched, as Logstash does), or None."""
        m = self.regex.search(text, pos)
        if m is None:
            return None
        return self.fields(m)

    def fields(self, m: re.Match[str]) -> dict[str, Any]:
        """A match's captures by field name: unmatched groups left out, types converted."""
        if self._simple:
            d = m.groupdict()
            return {c.name: d[c.group] for _, (c,) in self._fields if d[c.group] is not None}
        out: dict[str, Any] = {}
        for name, cs in self._fields:
            for c in cs:
                value = m.group(c.group)
                if value is None:
                    continue
                if c.type is not None:
                    try:
                        out[name] = _TYPES[c.type](value)
                    except ValueError:
                        out[name] = value  # never lose what was matched
                else:
                    out[name] = value
                break
        return out


def compile_grok(expression: str, patterns: dict[str, str] | None = None) -> Grok:
    """Compile a grok expression with the core library plus `patterns` (which win)."""
    return Grok(expression, patterns)
