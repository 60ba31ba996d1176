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
from collections.abc import Hashable
from urllib.parse import urlsplit, urlunsplit

from podkit.fsutil import file_sig

_known_lock = threading.Lock()
_fixed: set[str] = set()  # registered once, for the process's life
# A value that is renewed (an OAuth2 token, a rotated file's content) registers under
# a slot, which keeps its latest two: the one in use and the one just replaced, which
# an error about a request in flight may still name. Without slots every renewal was
# kept, and a week of hourly tokens made every log line scan hundreds of them.
_slots: dict[Hashable, tuple[str, ...]] = {}
_values: tuple[str, ...] = ()  # what scrub() replaces, longest first
KEEP_PER_SLOT = 2

REDACTED = "***"


def register_secret(value: str, slot: Hashable | None = None) -> None:
    """Make `value` disappear from every log record from now on.

    With `slot` (any hashable that names where the value comes from: a file's
    path, a token's URL), a new value replaces the slot's older ones but the last.
    """
    global _values
    value = value.strip()
    if len(value) < 4:  # scrubbing "a" would mangle every log line
        return
    with _known_lock:
        if slot is None:
            if value in _fixed:
                return
            _fixed.add(value)
        else:
            held = _slots.get(slot, ())
            if held and held[0] == value:
                return
            _slots[slot] = (value, *(v for v in held if v != value))[:KEEP_PER_SLOT]
        known = _fixed.union(*_slots.values())
        # Longest first: a secret that begins with a shorter one is replaced whole
        # (equal lengths in text order: the sort is stable). Two sorts by C keys, not
        # one by a lambda: a per-request JWT registers on every request, and the
        # lambda's tuples were most of register_secret's 2.7 us with 12 values held.
        _values = tuple(sorted(sorted(known), key=len, reverse=True))


def scrub(text: str) -> str:
    # `in` is a C substring search (fast for a handful of values), and a value is
    # replaced only where it occurs. The regex alternation this replaced cost
    # 0.8-1 us per 330-character line from three values on; this loop costs
    # 25-260 ns for one to ten (bench/bench_scrub.py).
    for value in _values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


# A query parameter named like these (any case) carries a credential: `?dd-api-key=`,
# `?access_token=`, `?sig=` (Azure SAS), `?apikey=`. Not a bare `key`: waitfor's
# redis://...?key= names a Redis key, and the display is its metrics label.
_CREDENTIAL_PARAM = re.compile(
    r"token|secret|passw|pwd|signature|credential|(api|access|private|account)[-_]?key"
    r"|^(sig|auth|authorization)$",
    re.I,
)
_QUERY_ITEM = re.compile(r"(?:^|(?<=&))([^&=]*)=([^&]*)")


def _is_credential(name: str, value: str) -> bool:
    # `password_file=` names where the secret is, not the secret
    return bool(value and _CREDENTIAL_PARAM.search(name) and not name.lower().endswith("file"))


def credential_params(query: str) -> list[tuple[str, str]]:
    """(name, raw value) of each query parameter that carries a credential."""
    return [
        (m.group(1), m.group(2))
        for m in _QUERY_ITEM.finditer(query)
        if _is_credential(m.group(1), m.group(2))
    ]


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
    # the other query parameters stay as written, byte for byte
    query = _QUERY_ITEM.sub(
        lambda m: f"{m.group(1)}={REDACTED}" if _is_credential(m.group(1), m.group(2)) else m[0],
        parts.query,
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


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
            register_secret(self._value, slot=self.path)  # a rotated file replaces its value
        return self._value

    def changed(self) -> bool:
        """True when the file differs from what value() last returned."""
        return file_sig(self.path) != self._sig

    def __repr__(self) -> str:
        return f"SecretFile({self.path!r})"
