"""Sources: small components chosen by their config `type` (the Vector model).

A source reads its config block in __init__ (raising UsageError that names
the offending key), then start()/stop() around the program's run. It writes
adapted series into the shared Store and reports its own podkit_metrics_*
figures through `own(emit)` at scrape time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from podkit import UsageError
from podkit.units import parse_duration, parse_size

from .store import Store

Emit = Callable[[str, str, str, Sequence[str], Sequence[str], float], None]


class Cfg:
    """A config mapping with typed getters whose errors name the exact key."""

    def __init__(self, data: Any, where: str, base_dir: str | None = None) -> None:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a mapping, got {type(data).__name__}")
        self.data = data
        self.where = where
        self.base_dir = base_dir

    def err(self, key: str, msg: str) -> UsageError:
        return UsageError(f"{self.where}.{key}: {msg}")

    def check_keys(self, allowed: Sequence[str]) -> None:
        for k in self.data:
            if k not in allowed:
                raise UsageError(
                    f"{self.where}.{k}: unknown key {k!r} (known: {', '.join(sorted(allowed))})"
                )

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def get(self, key: str, default: Any = None) -> Any:
        v = self.data.get(key)
        return default if v is None else v

    def text(self, key: str, default: str | None = None, required: bool = False) -> Any:
        v = self.data.get(key)
        if v is None:
            if required:
                raise self.err(key, "required")
            return default
        if isinstance(v, dict | list):
            raise self.err(key, "expected a string")
        return str(v)

    def path(self, key: str, default: str | None = None, required: bool = False) -> Any:
        """A file path; relative ones are relative to the config file's directory."""
        v = self.text(key, default, required)
        if v and self.base_dir and not os.path.isabs(v):
            v = os.path.join(self.base_dir, v)
        return v

    def number(self, key: str, default: float | None = None, required: bool = False) -> Any:
        v = self.data.get(key)
        if v is None:
            if required:
                raise self.err(key, "required")
            return default
        if isinstance(v, bool):
            raise self.err(key, "expected a number")
        try:
            return float(v)
        except (TypeError, ValueError):
            raise self.err(key, f"expected a number, got {v!r}") from None

    def duration(self, key: str, default: Any = None) -> Any:
        v = self.data.get(key)
        if v is None:
            return default if default is None else parse_duration(default)
        try:
            return parse_duration(v)
        except ValueError as exc:
            raise self.err(key, str(exc)) from None

    def size(self, key: str, default: Any) -> int:
        v = self.data.get(key, default)
        try:
            return parse_size(v)
        except ValueError as exc:
            raise self.err(key, str(exc)) from None

    def flag(self, key: str, default: bool = False) -> bool:
        v = self.data.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(key, "expected true or false")
        return v

    def list(self, key: str, required: bool = False) -> list[Any]:
        v = self.data.get(key)
        if v is None:
            if required:
                raise self.err(key, "required")
            return []
        if not isinstance(v, list):
            raise self.err(key, "expected a list")
        return v

    def mapping(self, key: str) -> dict[Any, Any]:
        v = self.data.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.err(key, "expected a mapping")
        return v

    def sub(self, key: str, value: Any) -> Cfg:
        return Cfg(value, f"{self.where}.{key}", self.base_dir)


class Source:
    """Base of every source. Subclasses set `type` and register themselves."""

    type: ClassVar[str] = ""

    def __init__(self, cfg: Cfg, store: Store, log: logging.Logger) -> None:
        self.cfg = cfg
        self.store = store
        self.log = log
        self.name: str = cfg.text("name") or ""
        #: Where a failure goes to be shown on `/` (the program's record_error,
        #: set when the program starts the source): (reason, message).
        self.on_error: Callable[[str, str], None] = lambda reason, message: None

    async def start(self) -> None:
        """Open sockets, files, sessions. A failure here exits 1."""

    async def stop(self) -> None:
        """Drain and release what start() opened."""

    async def refresh(self) -> None:
        """Called before each /metrics render (for on-scrape fetching)."""

    def own(self, emit: Emit) -> None:
        """Emit this source's podkit_metrics_* samples."""

    def status(self) -> dict[str, Any]:
        return {"type": self.type, "name": self.name}

    def health(self) -> str | None:
        return None


SOURCES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    SOURCES[cls.type] = cls
    return cls


def build(raw: Any, where: str, store: Store, log: logging.Logger, base_dir: str | None) -> Source:
    cfg = Cfg(raw, where, base_dir)
    kind = cfg.text("type", required=True)
    cls = SOURCES.get(kind)
    if cls is None:
        raise UsageError(
            f"{where}.type: unknown source type {kind!r} (known: {', '.join(SOURCES)})"
        )
    return cls(cfg, store, log)
