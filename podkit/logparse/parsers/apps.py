"""Formats of particular programs: the Linux auth log, Go's log/slog, Python's logging.

auth: /var/log/auth.log (or secure) as rsyslog writes it: a syslog line
whose message is sshd's, sudo's or su's, read into `user`, `source_ip`,
`source_port`, `auth_method`, `result` (success/failure) and `event`. sshd
run with `-e` writes the same messages without the syslog header: they parse too.

slog: Go's log/slog TextHandler (`time=... level=INFO msg=... k=v`): logfmt
with slog's levels (`INFO+2`, `DEBUG-4`: the offset counts, as slog does)
and its `source=file.go:12` (AddSource) kept as `caller`.

python: the layouts of Python's logging: `basicConfig()`'s default
`%(levelname)s:%(name)s:%(message)s`, the HOWTO's `%(asctime)s - %(name)s -
%(levelname)s - %(message)s`, and `%(asctime)s %(levelname)s %(name)s: %(message)s`.
"""

from __future__ import annotations

import re
from typing import Any

from ..schema import norm_level, number
from .base import Parser, register
from .common import fill, parse_pairs
from .syslog import Syslog

# -- auth log ----------------------------------------------------------------------

_SSHD = [
    (
        re.compile(
            r"(?P<event>Accepted|Failed) (?P<auth_method>[\w-]+) for "
            r"(?P<invalid>invalid user )?(?P<user>.*?) from (?P<source_ip>\S+) "
            r"port (?P<source_port>\d+)(?: (?P<protocol>\w+))?(?:: (?P<detail>.*))?"
        ),
        None,
    ),
    (
        re.compile(
            r"Invalid user (?P<user>.*?) from (?P<source_ip>\S+)(?: port (?P<source_port>\d+))?"
        ),
        ("invalid_user", "failure"),
    ),
    (
        re.compile(
            r"(?P<event>Connection closed|Disconnected) (?:by|from) "
            r"(?:(?P<phase>authenticating|invalid) user (?P<user>\S+) |user (?P<user2>\S+) )?"
            r"(?P<source_ip>\S+) port (?P<source_port>\d+)(?P<preauth> \[preauth\])?"
        ),
        None,
    ),
    (
        re.compile(
            r"Received disconnect from (?P<source_ip>\S+) port (?P<source_port>\d+):(?P<code>\d+): "
            r"(?P<detail>.*?)(?P<preauth> \[preauth\])?"
        ),
        ("disconnect", None),
    ),
    (
        re.compile(
            r"pam_unix\((?P<service>[\w-]+):session\): session (?P<state>opened|closed) for "
            r"user (?P<user>[^\s(]+)(?:\(uid=\d+\))?(?: by (?P<by>\S*))?"
        ),
        ("session", "success"),
    ),
    (
        re.compile(r"pam_unix\((?P<service>[\w-]+):auth\): authentication failure;(?P<kv>.*)"),
        ("authentication_failure", "failure"),
    ),
    (
        re.compile(
            r"(?P<event>Successful su|FAILED SU|FAILED su) for (?P<run_as>\S+) by (?P<user>\S+)"
        ),
        None,
    ),
]
#: sudo: `alice : [reason ; ]TTY=pts/0 ; PWD=/home/alice ; USER=root ; [GROUP=g ; ]COMMAND=...`
_SUDO = re.compile(
    r"\s*(?P<user>\S+) : (?:(?P<reason>(?!TTY=|PWD=)[^;]*?) ; )?"
    r"(?:TTY=(?P<tty>\S+) ; )?PWD=(?P<pwd>.*?) ; "
    r"USER=(?P<run_as>\S+) ;(?: GROUP=(?P<group>\S+) ;)?(?: ENV=.*? ;)? COMMAND=(?P<command>.*)"
)


def auth_fields(msg: str) -> dict[str, Any] | None:
    """The fields of one sshd/sudo/su/pam message, or None when it is none of them."""
    m = _SUDO.fullmatch(msg)
    if m is not None:
        out: dict[str, Any] = {"event": "sudo", "user": m["user"]}
        reason = m["reason"]
        out["result"] = "failure" if reason else "success"
        if reason:
            out["reason"] = reason
        for key in ("tty", "pwd", "run_as", "group", "command"):
            if m[key] is not None:
                out[key] = m[key]
        return out
    for regex, fixed in _SSHD:
        m = regex.fullmatch(msg)
        if m is None:
            continue
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        out = {}
        if fixed is not None:
            out["event"] = fixed[0]
            if fixed[1]:
                out["result"] = fixed[1]
        event = g.pop("event", None)
        if event is not None:
            low = event.lower()
            out["event"] = low.replace(" ", "_")
            if low in ("accepted", "successful su"):
                out["result"] = "success"
            elif low in ("failed", "failed su"):
                out["result"] = "failure"
        if g.pop("invalid", None):
            out["invalid_user"] = True
        if "user2" in g:
            g["user"] = g.pop("user2")
        kv = g.pop("kv", None)
        if kv is not None:  # pam's `logname= uid=1000 ... rhost=10.0.0.5  user=alice`
            for key, _, value in (p.partition("=") for p in kv.split()):
                if value and key in ("user", "rhost", "ruser", "tty", "uid"):
                    out["source_ip" if key == "rhost" else key] = number(value)
        if g.pop("preauth", None):
            out["preauth"] = True
        for key, value in g.items():
            out[key] = int(value) if key in ("source_port", "code") else value
        return out
    return None


@register
class AuthLog(Parser):
    names = ("auth",)

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        self._syslog = Syslog(clock)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        rec = self._syslog.parse(line, source)
        if rec is None:
            # sshd -e / sudo to stderr: the message alone, if it is one we know.
            fields = auth_fields(line)
            if fields is None:
                return None
            rec = {"time": None, "level": "info", "message": line, "source": source}
        else:
            fields = auth_fields(rec["message"])
        if fields is not None:
            if fields.get("result") == "failure" and rec["level"] == "info":
                rec["level"] = "warning"
            for key, value in fields.items():
                rec.setdefault(key, value)
        return rec


# -- Go log/slog -------------------------------------------------------------------

_SLOG_LEVEL = re.compile(r"(DEBUG|INFO|WARN|ERROR)([+-]\d+)?")
_SLOG_BASE = {"DEBUG": -4, "INFO": 0, "WARN": 4, "ERROR": 8}


def slog_level(text: str) -> str | None:
    """slog's `INFO+2`: the base level plus the offset, bucketed as slog's own levels."""
    m = _SLOG_LEVEL.fullmatch(text)
    if m is None:
        return None
    n = _SLOG_BASE[m.group(1)] + int(m.group(2) or 0)
    return "error" if n >= 8 else "warning" if n >= 4 else "info" if n >= 0 else "debug"


@register
class Slog(Parser):
    names = ("slog",)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        pairs = parse_pairs(line)
        if pairs is None:
            return None
        rec: dict[str, Any] = {"time": None, "level": "info", "message": line, "source": source}
        rest: list[tuple[str, Any]] = []
        seen = set()
        for key, value in pairs:
            if key == "level" and "level" not in seen and isinstance(value, str):
                lvl = slog_level(value)
                if lvl is not None:
                    rec["level"] = lvl
                    seen.add("level")
                    continue
            if key == "source" and "source" not in seen:  # AddSource: file:line
                rest.append(("caller", value))
                seen.add("source")
                continue
            rest.append((key, value))
        if "level" not in seen and not any(k == "msg" for k, _ in pairs):
            return None  # slog always writes level and msg
        return fill(rec, rest, self.clock)


# -- Python logging --------------------------------------------------------------

_PY_LEVEL = r"CRITICAL|FATAL|ERROR|WARNING|WARN|INFO|DEBUG|NOTSET|Level \d+"
_ASCTIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
_PYTHON = [
    re.compile(rf"(?P<level>{_PY_LEVEL}):(?P<logger>[^:]*):(?P<message>.*)", re.S),
    re.compile(
        rf"(?P<time>{_ASCTIME}) - (?P<logger>.*?) - (?P<level>{_PY_LEVEL}) - (?P<message>.*)", re.S
    ),
    re.compile(
        rf"(?P<time>{_ASCTIME}) (?P<level>{_PY_LEVEL}) (?P<logger>\S+): (?P<message>.*)", re.S
    ),
]


@register
class PythonLogging(Parser):
    names = ("python",)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        for regex in _PYTHON:
            m = regex.fullmatch(line)
            if m is None:
                continue
            g = m.groupdict()
            t = g.get("time")
            level = g["level"]
            rec: dict[str, Any] = {
                "time": self.clock.iso(t) if t else None,
                "level": norm_level(level) or ("debug" if level.startswith("Level") else "info"),
                "message": g["message"],
                "source": source,
                "logger": g["logger"],
            }
            return rec
        return None
