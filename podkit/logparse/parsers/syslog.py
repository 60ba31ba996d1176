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
from ..timeparse import MONTHS
from .base import Parser, register

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
    r" (.*)",
    re.S,
)
#: One SD-ELEMENT (RFC 5424 section 6.3): `[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]`.
#: Vector's tolerant reading of a space after `=` is kept (its parse_syslog test
#: `eventSource= "Application"`); anything else malformed is not structured data.
_SD_ELEMENT = re.compile(r'\[([^\s\]="]+)((?:\s+[^\s=\]"]+= ?' + _SDQ + r")*)\s*\]")
_SD_PARAM = re.compile(r'([^\s=\]"]+)= ?"([^"\\]*(?:\\.[^"\\]*)*)"')
_SD_ESCAPE = re.compile(r'\\(["\\\]])')
#: A BSD HOSTNAME as rsyslog's pmrfc3164 accepts it (letters, digits, `.`, `_`, `-`;
#: `:` for IPv6 literals), followed by the space that ends it.
_HOST = re.compile(r"[0-9A-Za-z._:%-]+(?= )")


def structured_data(text: str) -> dict[str, dict[str, Any]] | None:
    """`[id k="v"][id2 a="b"]` -> {"id": {"k": "v"}, "id2": {"a": "b"}} (names as written).

    None when the text is not a run of well-formed elements: a malformed
    element must fail the line (parse_error), never vanish as `{}`.
    """
    out: dict[str, dict[str, Any]] = {}
    pos = 0
    while pos < len(text):
        m = _SD_ELEMENT.match(text, pos)
        if m is None:
            return None
        params: dict[str, Any] = out.setdefault(m.group(1), {})
        for p in _SD_PARAM.finditer(m.group(2)):
            value = p.group(2)
            if "\\" in value:
                value = _SD_ESCAPE.sub(r"\1", value)
            params[p.group(1)] = number(value)
        pos = m.end()
    return out


def split_tag(text: str) -> tuple[str | None, str | None, str]:
    """`TAG[PID]: MSG` -> (app name, pid, message), the way rsyslog's pmrfc3164 reads it.

    The TAG runs to the first `:` (part of the tag) or space (part of the
    message), so `launchd[1] (com.apple.xpc...): text` is app `launchd`, pid
    1, and a tag without colon (`apache_error [Tue Jun ...] ...`) is a tag.
    The one space that separates tag and message is not part of the message.
    """
    end = len(text)
    colon = text.find(":")
    space = text.find(" ")
    if 0 <= colon < end and (space < 0 or colon < space):
        tag, msg = text[:colon], text[colon + 1 :]
    elif space >= 0:
        tag, msg = text[:space], text[space:]
    else:
        return None, None, text
    if msg[:1] == " ":
        msg = msg[1:]
    name, bracket, rest = tag.partition("[")
    pid = rest[:-1] if bracket and rest.endswith("]") else None
    if bracket and pid is None:
        name = tag  # `a[b` is a name, not a name with a pid
    if not name or name == "-":
        return None, pid, msg
    return name, pid, msg


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
        if msg and msg[0] == "\ufeff":
            # RFC 5424 section 6.4: a BOM announces UTF-8 text; it is not text.
            # Everything else after the header's one separating space is the
            # message, leading spaces included (rsyslog keeps the space a BSD
            # message had after its tag, and so does its %jsonmesg%).
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
            data = structured_data(sd)
            if data is None:
                return None
            rec["structured_data"] = data
        return rec

    def _rfc3164(self, m: re.Match[str], source: str) -> dict[str, Any] | None:
        pri, mon, day, h, mi, s, frac, iso, rest = m.groups()
        if iso is not None:
            t = self.clock.iso(iso)
            if t is None:
                return None
        else:
            month = MONTHS.get(mon)
            if month is None:
                return None
            try:
                t = self.clock.wall(
                    self.clock.guess_year(month, int(day)),
                    month,
                    int(day),
                    int(h),
                    int(mi),
                    int(s),
                    frac or "",
                )
            except (ValueError, OverflowError):
                return None
        # A HOSTNAME ends at a space; a first word ending in `:` or holding a
        # `[` is a TAG (a message as an app hands it to /dev/log has no host).
        host = _HOST.match(rest)
        if host is not None and host.group()[-1] != ":":
            rest = rest[host.end() + 1 :]
        else:
            host = None
        app, pid, msg = split_tag(rest)
        rec: dict[str, Any] = {"time": t, "level": "info", "message": msg, "source": source}
        self._pri(rec, pri)
        if host is not None:
            rec["hostname"] = host.group()
        if app is not None:
            rec["app_name"] = app
        if pid is not None:
            rec["proc_id"] = number(pid)
        return rec
