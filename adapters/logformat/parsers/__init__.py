"""Format parsers: small components registered by name, chosen with --format.

A parser turns one record's text into the output dict, keys in schema order
(time, level, message, source, then fields), or returns None when the text is
not in its format; the adapter then passes the line through with
`parse_error: true`. `time` may be None: the adapter fills in the read time.

Adding a format is one module here with a class carrying `@register`:

    @register
    class Mine(Parser):
        names = ("mine",)
        def parse(self, line, source): ...

Parsers are hot code: one compiled regex and one dict per line, no
per-line allocation that a cache can avoid (the nginx bar is 100,000 lines/s).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..timeparse import Clock


class Parser:
    """Base of every format parser."""

    #: The --format names this parser answers to (the first is its canonical name).
    names: ClassVar[tuple[str, ...]] = ()
    #: True when the format takes an argument: `regex:PATTERN`.
    takes_argument: ClassVar[bool] = False
    #: True when a multiline record should be parsed whole (pretty-printed JSON);
    #: otherwise only its first line is parsed and the rest joins the message.
    whole_record: ClassVar[bool] = False

    def __init__(self, clock: Clock, argument: str | None = None) -> None:
        self.clock = clock
        self.argument = argument

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        raise NotImplementedError


REGISTRY: dict[str, type[Parser]] = {}


def register(cls: type[Parser]) -> type[Parser]:
    for name in cls.names:
        if name in REGISTRY and REGISTRY[name] is not cls:
            raise ValueError(f"format {name!r} registered twice")
        REGISTRY[name] = cls
    return cls


def names() -> list[str]:
    return sorted(n + (":PATTERN" if REGISTRY[n].takes_argument else "") for n in REGISTRY)


def create(spec: str, clock: Clock) -> Parser:
    """The parser for a --format value. Raises ValueError with a one-line reason."""
    name, sep, argument = spec.partition(":")
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown format {spec!r}; known: {', '.join(names())}")
    if cls.takes_argument and not sep:
        raise ValueError(f"format {name!r} needs an argument: {name}:PATTERN")
    if not cls.takes_argument and sep:
        raise ValueError(f"format {name!r} takes no argument")
    return cls(clock, argument if sep else None)


# Importing the modules registers the built-in formats.
from . import access, jsonfmt, klog, logfmt, regex, syslog  # noqa: E402

__all__ = [
    "REGISTRY",
    "Parser",
    "access",
    "create",
    "jsonfmt",
    "klog",
    "logfmt",
    "names",
    "regex",
    "register",
    "syslog",
]
