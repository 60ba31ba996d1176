"""Parsing of the human units used by every flag: durations and sizes."""

from __future__ import annotations

import re

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_duration(text: str | float | int) -> float:
    """Seconds from `250ms`, `10s`, `5m`, `1h30m`, or a bare number of seconds.

    Go's forms (the ones kubernetes/git-sync and friends accept) are what users
    already type, so they are accepted as they are.
    """
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        # A config file can hold a list or mapping where a duration belongs.
        raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 10s, 5m, 1h)")
    if isinstance(text, str):
        try:
            value = float(text.strip())
        except ValueError:
            return _go_duration(text)
    else:
        value = float(text)
    if value != value:  # NaN passes every `< 0` check, then poisons every comparison
        raise ValueError(f"not a duration: {text!r}")
    if value < 0:
        raise ValueError(f"negative duration: {text!r}")
    return value


def _go_duration(text: str) -> float:
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 10s, 5m, 1h)")
    return total


def parse_size(text: str | int) -> int:
    """Bytes from `512KiB`, `1MiB`, `10MB`, or a bare number of bytes."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text!r}")
        return text
    if not isinstance(text, str):
        raise ValueError(f"not a size: {text!r} (use e.g. 512KiB, 1MiB, 10MB)")
    m = _SIZE.fullmatch(text.strip().lower())
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 512KiB, 1MiB, 10MB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds % 3600 == 0 and seconds:
        return f"{seconds / 3600:g}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"
