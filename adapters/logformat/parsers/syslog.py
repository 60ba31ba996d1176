"""syslog: RFC 5424 and RFC 3164 (BSD), told apart per line.

RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD-ID k="v"...] MSG`, as
rsyslog's RSYSLOG_SyslogProtocol23Format writes it. RFC 3164:
`<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`; files written by syslog daemons
drop the `<PRI>` (RSYSLOG_TraditionalFileFormat) or carry an RFC 3339
timestamp in its place (RSYSLOG_FileFormat, RSYSLOG_ForwardFormat): all of
these parse. The level comes from the severity (PRI mod 8: 0-2 critical,
3 error, 4 warning, 5-6 info, 7 debug); without a PRI it is `info`. A BSD
timestamp has neither year nor zone: the year is the current one (the
previous one for a December line read in January) and --timezone applies.
"""

from __future__ import annotations

import re
from typing import Any

from ..schema import SYSLOG_SEVERITY, number
from . import Parser, register

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip

_SDQ = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_RFC5424 = re.compile(
    r"(?:<(\d{1,3})>)?(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) "
    r"(-|(?:\[(?:[^\"\]]|" + _SDQ + r")*\])+)(?: (.*))?",
    re.S,
)
_RFC3164 = re.compile(
    r"(?:<(\d{1,3})>)?"
    r"(?:([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?|(\d{4}-\d\d-\d\dT\S+))"
    r" (\S+) (?:([^\s:\[]+)(?:\[([^\]]*)\])?: ?)?(.*)",
    re.S,
)
_SD_ELEMENT = re.compile(r"\[([^\s\]=]+)((?:\s+[^\s=\]]+=" + _SDQ + r")*)\s*\]")
_SD_PARAM = re.compile(r'([^\s=\]]+)="([^"\\]*(?:\\.[^"\\]*)*)"')
_SD_ESCAPE = re.compile(r'\\(["\\\]])')


def structured_data(text: str) -> dict[str, dict[str, Any]]:
    """`[id k="v"][id2 a="b"]` -> {"id": {"k": "v"}, "id2": {"a": "b"}} (names as written)."""
    out: dict[str, dict[str, Any]] = {}
    for m in _SD_ELEMENT.finditer(text):
        params: dict[str, Any] = out.setdefault(m.group(1), {})
        for p in _SD_PARAM.finditer(m.group(2)):
            value = p.group(2)
            if "\\" in value:
                value = _SD_ESCAPE.sub(r"\1", value)
            params[p.group(1)] = number(value)
    return out


@register
class Syslog(Parser):
    names = ("syslog",)

    def _pri(self, rec: dict[str, Any], pri: str | None) -> None:
        if pri is None:
            return
        n = int(pri)
        if n > 191:
            return
        rec["level"] = SYSLOG_SEVERITY[n & 7]
        rec["facility"] = FACILITIES[n >> 3]
        rec["severity"] = n & 7

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        if line[:1] == "<" or line[:2] == "1 ":
            m = _RFC5424.fullmatch(line)
            if m is not None:
                rec = self._rfc5424(m, source)
                if rec is not None:
                    return rec
        m = _RFC3164.fullmatch(line)
        return self._rfc3164(m, source) if m is not None else None

    def _rfc5424(self, m: re.Match[str], source: str) -> dict[str, Any] | None:
        pri, version, ts, host, app, procid, msgid, sd, msg = m.groups()
        if ts == "-":
            t = None
        else:
            t = self.clock.iso(ts)
            if t is None:
                return None
        if msg:
            # rsyslog keeps the space a BSD message had after its tag; RFC 5424
            # puts a BOM before UTF-8 text. Neither is part of the message.
            msg = msg.lstrip(" ")
            if msg[:1] == "\ufeff":
                msg = msg[1:]
        rec: dict[str, Any] = {"time": t, "level": "info", "message": msg or "", "source": source}
        self._pri(rec, pri)
        rec["syslog_version"] = int(version)
        if host != "-":
            rec["hostname"] = host
        if app != "-":
            rec["app_name"] = app
        if procid != "-":
            rec["proc_id"] = number(procid)
        if msgid != "-":
            rec["msg_id"] = msgid
        if sd != "-":
            rec["structured_data"] = structured_data(sd)
        return rec

    def _rfc3164(self, m: re.Match[str], source: str) -> dict[str, Any] | None:
        pri, mon, day, h, mi, s, frac, iso, host, tag, pid, msg = m.groups()
        if iso is not None:
            t = self.clock.iso(iso)
            if t is None:
                return None
        else:
            from ..timeparse import MONTHS

            month = MONTHS.get(mon)
            if month is None:
                return None
            try:
                t = self.clock.wall(
                    self.clock.guess_year(month),
                    month,
                    int(day),
                    int(h),
                    int(mi),
                    int(s),
                    frac or "",
                )
            except (ValueError, OverflowError):
                return None
        if host[-1] == ":" or "[" in host:
            # No hostname (a message as an app hands it to /dev/log): the
            # "host" is really the tag, and what followed is the message.
            name, _, rest = host.rstrip(":").partition("[")
            tag, pid = name, (rest.rstrip("]") or None)
            msg = m.string[m.end(9) :].lstrip(" ")
            host = ""
        rec: dict[str, Any] = {"time": t, "level": "info", "message": msg, "source": source}
        self._pri(rec, pri)
        if host:
            rec["hostname"] = host
        if tag is not None:
            rec["app_name"] = tag
            if pid is not None:
                rec["proc_id"] = number(pid)
        return rec
