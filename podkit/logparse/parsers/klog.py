"""klog: the format of Kubernetes components (kubelet, apiserver, controllers).

`Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg`, L one of I W E F (info,
warning, error, fatal -> critical). Structured klog (`InfoS`/`ErrorS`) writes
the message Go-quoted followed by key="value" pairs, which become fields:
`I0102 15:04:05.123456   1234 kubelet.go:42] "Pod started" pod="ns/web" restarts=2`.
The header has no year and no zone: the current year (previous one for a
December line read in January) and --timezone apply.
See https://github.com/kubernetes/klog and the Kubernetes structured logging KEP-1602.
"""

from __future__ import annotations

import re
from typing import Any

from .base import Parser, register
from .common import fill, parse_pairs, unquote

_HEADER = re.compile(
    r"([IWEF])(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? +(\d+) ([^:\]\s]+):(\d+)\] ?(.*)",
    re.S,
)
_QUOTED = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"')
_LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "critical"}


@register
class Klog(Parser):
    names = ("klog",)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        m = _HEADER.fullmatch(line)
        if m is None:
            if not line[:1].isspace():
                return None
            m = _HEADER.fullmatch(line.lstrip())  # indented (Vector's parse_klog takes it)
            if m is None:
                return None
        lvl, mo, d, h, mi, s, frac, thread, file, lineno, msg = m.groups()
        month, day = int(mo), int(d)
        try:
            year = self.clock.guess_year(month, day)
            t = self.clock.wall(year, month, day, int(h), int(mi), int(s), frac or "")
        except (ValueError, OverflowError):
            return None
        pairs = None
        if msg[:1] == '"':
            q = _QUOTED.match(msg)
            if q is not None:
                pairs = parse_pairs(msg, q.end(), bare_bools=True) if q.end() < len(msg) else []
                if pairs is not None:
                    msg = unquote(q.group(1))
        rec: dict[str, Any] = {
            "time": t,
            "level": _LEVELS[lvl],
            "message": msg,
            "source": source,
            "thread_id": int(thread),
            "file": file,
            "line": int(lineno),
        }
        if pairs:
            fill(rec, pairs, self.clock, take_schema=False)
        return rec
