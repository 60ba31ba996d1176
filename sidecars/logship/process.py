"""Processing on the way, before batching: drop, keep, redact, sample, route.

Each is applied to the line (the record's `message`) in this order: `--drop`
(a line matching any is dropped), `--keep` (with any given, a line matching
none is dropped), the sink's `match` (routing by field), `--sample` (1 line
in N of each matching file), then `--redact` (matches replaced by `***`).
Every line dropped and every replacement is counted by the caller.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable
from typing import Any

from podkit import UsageError


def _finite(text: str) -> float | str:
    f = float(text)
    return f if math.isfinite(f) else text


# Python's decoder takes NaN and Infinity and turns 1e999 into inf, which the
# encoder writes back as bare NaN/Infinity: no JSON, and a strict receiver
# refuses the whole batch. Such values are kept as the text the app wrote.
_loads = json.JSONDecoder(parse_float=_finite, parse_constant=str).decode


def app_object(text: str) -> dict[str, Any] | None:
    """A line the app wrote, as a JSON object; None when it is none.

    The app chooses the bytes: nesting deeper than the decoder recurses
    raises RecursionError, not ValueError, and is no object either.
    """
    try:
        obj = _loads(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


MASK = "***"


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cards(m: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", m.group(0))
    return MASK if 13 <= len(digits) <= 19 and _luhn(digits) else m.group(0)


#: Built-in redaction patterns, chosen with `--redact NAME`.
BUILTIN: dict[str, tuple[str, Callable[[re.Match[str]], str] | str]] = {
    # The token after "Bearer " (the word itself stays, so the line still reads).
    "bearer": (r"(?i)(?<=bearer )[A-Za-z0-9\-._~+/]+=*", MASK),
    # AWS access key ids (long-term AKIA, temporary ASIA).
    "aws-access-key": (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", MASK),
    "email": (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", MASK),
    # 13 to 19 digits, spaces or dashes between, that pass the Luhn check.
    "card": (r"\b\d(?:[ -]?\d){12,18}\b", _cards),
}


def _compile(flag: str, pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{flag}: invalid regex {pattern!r}: {exc}") from None


def _any(flag: str, patterns: list[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    for p in patterns:
        _compile(flag, p)
    return re.compile("|".join(f"(?:{p})" for p in patterns))


class Processor:
    """The processing of one sink's lines. `apply()` returns the indices kept."""

    def __init__(
        self,
        *,
        drop: list[str] = (),  # type: ignore[assignment]
        keep: list[str] = (),  # type: ignore[assignment]
        redact: list[str] = (),  # type: ignore[assignment]
        sample: list[str] = (),  # type: ignore[assignment]
        match: dict[str, str] | None = None,
        parse_json: bool = False,
        labels: dict[str, Any] | None = None,
    ) -> None:
        self.drop = _any("--drop", list(drop))
        self.keep = _any("--keep", list(keep))
        self.redact: list[tuple[str, re.Pattern[str], Any]] = []
        for item in redact:
            name, sep, pattern = item.partition("=")
            name = name.strip()
            if not sep:
                if name not in BUILTIN:
                    known = ", ".join(BUILTIN)
                    raise UsageError(
                        f"--redact: {item!r} is neither NAME=REGEX nor a built-in ({known})"
                    )
                pattern, repl = BUILTIN[name]
                self.redact.append((name, re.compile(pattern), repl))
            else:
                if not name:
                    raise UsageError(f"--redact: expected NAME=REGEX, got {item!r}")
                self.redact.append((name, _compile("--redact", pattern), MASK))
        self.sample: list[tuple[str, int]] = []
        for item in sample:
            glob, sep, n = item.rpartition("=")
            try:
                every = int(n)
            except ValueError:
                every = 0
            if every < 1:
                raise UsageError(f"--sample: expected N or GLOB=N with N >= 1, got {item!r}")
            self.sample.append((glob if sep else "*", every))
        self.match = [(k, _compile(f"match {k}", v)) for k, v in (match or {}).items()]
        self.parse_json = parse_json
        self.labels = labels or {}
        self._sample_for: dict[str, int] = {}  # path -> N (0: not sampled)
        self._seen: dict[str, int] = {}  # path -> lines seen by the sampler
        self.active = bool(self.drop or self.keep or self.redact or self.sample or self.match)

    def _every(self, path: str) -> int:
        n = self._sample_for.get(path)
        if n is None:
            n = 0
            for glob, every in self.sample:
                if glob == "*" or fnmatch.fnmatchcase(path, glob):
                    n = every
                    break
            if len(self._sample_for) > 10000:
                self._sample_for.clear()
            self._sample_for[path] = n
        return n

    def _field(self, text: str, path: str, key: str, obj: dict[str, Any] | None) -> Any:
        if key == "message":
            return text
        if key == "file":
            return path
        if key.startswith("labels."):
            return self.labels.get(key[7:])
        if obj is not None:
            return obj.get(key)
        return None

    def _matches(self, text: str, path: str) -> bool:
        obj = None
        if self.parse_json and text.startswith("{"):
            obj = app_object(text)
        for key, rx in self.match:
            v = self._field(text, path, key, obj)
            if v is None or not rx.search(v if isinstance(v, str) else json.dumps(v)):
                return False
        return True

    def apply(
        self, texts: list[str], path: str, count: Callable[[str, int], None]
    ) -> list[int] | None:
        """Redact `texts` in place; the indices of the lines kept (None: all).

        `count(what, n)` is told `drop`, `keep`, `route`, `sample` (lines
        dropped for that reason) and `redact:<name>` (replacements made).
        """
        if not self.active:
            return None
        kept: list[int] = []
        dropped = {"drop": 0, "keep": 0, "route": 0, "sample": 0}
        every = self._every(path) if self.sample else 0
        for i, text in enumerate(texts):
            if self.drop is not None and self.drop.search(text):
                dropped["drop"] += 1
                continue
            if self.keep is not None and not self.keep.search(text):
                dropped["keep"] += 1
                continue
            if self.match and not self._matches(text, path):
                dropped["route"] += 1
                continue
            if every > 1:
                seen = self._seen.get(path, 0)
                self._seen[path] = seen + 1
                if seen % every:
                    dropped["sample"] += 1
                    continue
            for name, rx, repl in self.redact:
                if callable(repl):  # a check on each match (Luhn): count what it replaced
                    n = sum(1 for m in rx.finditer(text) if repl(m) != m.group(0))
                    if n:
                        text = rx.sub(repl, text)
                else:
                    text, n = rx.subn(repl, text)
                if n:
                    count("redact:" + name, n)
            texts[i] = text
            kept.append(i)
        for what, n in dropped.items():
            if n:
                count(what, n)
        if len(self._seen) > 10000:
            self._seen.clear()
        return kept if len(kept) != len(texts) else None
