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

from ..timeparse import Clock
from .base import REGISTRY, Parser, Settings, names, register


def split_chain(spec: str) -> list[str]:
    """`nginx,json,logfmt` -> its formats. A format with an argument (`grok:`,
    `regex:`, `csv:`) takes the rest of the text, commas included, so it comes last."""
    out: list[str] = []
    rest = spec
    while rest:
        name, sep, tail = rest.partition(",")
        head = name.partition(":")[0].strip()
        cls = REGISTRY.get(head)
        if ":" in name or (cls is not None and cls.takes_argument):
            out.append(rest.strip())
            break
        out.append(name.strip())
        rest = tail
        if sep and not rest.strip():
            out.append("")  # a trailing comma: an empty format, refused below
    return out


def create_one(spec: str, clock: Clock, settings: Settings | None = None) -> Parser:
    name, sep, argument = spec.partition(":")
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"unknown format {spec!r}; known: {', '.join(names())}")
    if cls.takes_argument and not sep:
        raise ValueError(f"format {name!r} needs an argument: {name}:{cls.argument_name}")
    if not cls.takes_argument and sep:
        raise ValueError(f"format {name!r} takes no argument")
    return cls(clock, argument if sep else None, settings)


def create(spec: str, clock: Clock, settings: Settings | None = None) -> Parser:
    """The parser for a --format value (one format, or a chain `a,b,c` tried in order).

    Raises ValueError with a one-line reason.
    """
    parts = split_chain(spec)
    if len(parts) == 1:
        return create_one(parts[0], clock, settings)
    from .chain import Chain

    return Chain(clock, [(p.partition(":")[0], create_one(p, clock, settings)) for p in parts])


# Importing the modules registers the built-in formats.
from . import access, apps, fields, grok, jsonfmt, klog, logfmt, regex, syslog  # noqa: E402

__all__ = [
    "REGISTRY",
    "Parser",
    "Settings",
    "access",
    "apps",
    "create",
    "create_one",
    "fields",
    "grok",
    "jsonfmt",
    "klog",
    "logfmt",
    "names",
    "regex",
    "register",
    "split_chain",
    "syslog",
]
