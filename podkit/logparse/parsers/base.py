"""The parser base, its settings and the registry of formats by name.

Apart from the package so that a format module imports this, never the
package that imports every format module (no import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..timeparse import Clock


@dataclass
class Settings:
    """Options some formats take besides their argument (flags of the adapter)."""

    #: --grok-patterns-file: extra `NAME regex` patterns, winning over the core library.
    grok_patterns: dict[str, str] = field(default_factory=dict)
    #: --kv-field-delimiter: between pairs of key_value; " " means any run of whitespace.
    kv_field_delimiter: str = " "
    #: --kv-value-delimiter: between a key and its value in key_value.
    kv_value_delimiter: str = "="
    #: --csv-delimiter: between the columns of csv.
    csv_delimiter: str = ","


class Parser:
    """Base of every format parser."""

    #: The --format names this parser answers to (the first is its canonical name).
    names: ClassVar[tuple[str, ...]] = ()
    #: True when the format takes an argument: `regex:PATTERN`.
    takes_argument: ClassVar[bool] = False
    #: How --help and errors name the argument.
    argument_name: ClassVar[str] = "PATTERN"
    #: True when a multiline record should be parsed whole (pretty-printed JSON);
    #: otherwise only its first line is parsed and the rest joins the message.
    whole_record: ClassVar[bool] = False

    def __init__(
        self, clock: Clock, argument: str | None = None, settings: Settings | None = None
    ) -> None:
        self.clock = clock
        self.argument = argument
        self.settings = settings or Settings()

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
    return sorted(
        n + (f":{REGISTRY[n].argument_name}" if REGISTRY[n].takes_argument else "")
        for n in REGISTRY
    )
