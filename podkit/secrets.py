"""Secrets come from files, are re-read when the file changes, and never leak.

Kubernetes rotates a mounted Secret by swapping a `..data` symlink, so a file
is re-read whenever what `stat` (following links) says about it changes.
Every value read is registered with :func:`scrub`, which the log formatters
apply to every record they write.
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import urlsplit, urlunsplit

from podkit.fsutil import file_sig

_known: set[str] = set()
_known_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None

REDACTED = "***"


def register_secret(value: str) -> None:
    """Make `value` disappear from every log record from now on."""
    global _pattern
    value = value.strip()
    if len(value) < 4:  # scrubbing "a" would mangle every log line
        return
    with _known_lock:
        if value in _known:
            return
        _known.add(value)
        alts = sorted(_known, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in alts))


def scrub(text: str) -> str:
    pattern = _pattern
    if pattern is None:
        return text
    return pattern.sub(REDACTED, text)


def redact_url(url: str) -> str:
    """The URL with its password (and any token-like query value) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class SecretFile:
    """A secret read from a file, re-read when the file changes.

    `value()` is cheap enough to call per use: it costs one stat().
    """

    def __init__(self, path: str | os.PathLike[str], *, strip: bool = True) -> None:
        self.path = os.fspath(path)
        self.strip = strip
        self._sig: tuple[int, int, int, int] | None = None
        self._value = ""

    def value(self) -> str:
        st = os.stat(self.path)
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if sig != self._sig:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
            self._value = text.strip() if self.strip else text
            self._sig = sig
            register_secret(self._value)
        return self._value

    def changed(self) -> bool:
        """True when the file differs from what value() last returned."""
        return file_sig(self.path) != self._sig

    def __repr__(self) -> str:
        return f"SecretFile({self.path!r})"
