"""nginx and Apache access logs (combined, common), and nginx's error log.

nginx `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
$body_bytes_sent "$http_referer" "$http_user_agent"`, optionally followed by
`"$http_x_forwarded_for"` (the `main` format of nginx's sample config).
Apache's `%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"` is the same
shape, so all three formats share one compiled regex and one schema (nginx's
variable names). `-` means "no value" in these formats: such fields are left out.

nginx escapes `"`, `\\` and bytes outside printable ASCII as `\\xHH`; Apache
uses `\\"` and `\\\\`. Both are undone, and the bytes decoded as UTF-8 (bytes
that are not UTF-8 stay visible as `\\xHH`).

The nginx format also reads nginx's error log (`2024/05/01 10:00:00 [error]
12#12: *3 message, client: ..., server: ..., request: "..."`), so one adapter
can follow both files.
"""

from __future__ import annotations

import re
from json.encoder import encode_basestring as _enc
from typing import Any

from ..schema import number
from .base import Parser, register

_Q = r'"([^"\\]*(?:\\.[^"\\]*)*)"'  # a quoted field, escapes allowed (unrolled loop: fast)
_ACCESS = re.compile(
    r"(\S+) (\S+) (\S+) \[([^\]]*)\] " + _Q + r" (\d{3}|-) (\d+|-)"
    r"(?: " + _Q + " " + _Q + "(?: " + _Q + r")?)?\s*"
)
# The same shape for lines without a backslash (nearly all): no escape
# alternation, several times faster, and equivalent when there is no `\\`.
_ACCESS_PLAIN = re.compile(
    r'(\S+) (\S+) (\S+) \[([^\]]*)\] "([^"]*)" (\d{3}|-) (\d+|-)'
    r'(?: "([^"]*)" "([^"]*)"(?: "([^"]*)")?)?\s*'
)
_ERROR_HEAD = re.compile(
    r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[(\w+)\] (\d+)#(\d+): (?:\*(\d+) )?"
)
_CLIENT = re.compile(r", client: (\S*), server: ([^,]*)")
#: The context nginx appends after `server:`, each entry optional, in this order.
_CONTEXT_KEYS = ("request", "subrequest", "upstream", "host", "referrer")
#: `, client: ` positions tried at most, leftmost first. The request (the
#: client's own bytes) may hold that text too; a bound keeps a hostile line linear.
_CONTEXT_TRIES = 4
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.S)
_SIMPLE_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r"}


def unescape(text: str) -> str:
    """Undo nginx (`\\xHH`) and Apache (`\\"`, `\\\\`, `\\n`) escaping."""
    if "\\" not in text:
        return text
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8", "surrogateescape")
        esc = m.group(1)
        if len(esc) == 3 and esc[0] == "x":
            out.append(int(esc[1:], 16))
        else:
            out += _SIMPLE_ESCAPES.get(esc) or esc.encode("utf-8", "surrogateescape")
        pos = m.end()
    out += text[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "backslashreplace")


def _status_level(status: int) -> str:
    return "error" if status >= 500 else "warning" if status >= 400 else "info"


_ERROR_LEVELS = {
    "debug": "debug",
    "info": "info",
    "notice": "info",
    "warn": "warning",
    "error": "error",
    "crit": "critical",
    "alert": "critical",
    "emerg": "critical",
}


@register
class AccessLog(Parser):
    """nginx combined (+ error log), Apache combined and common."""

    names = ("nginx", "apache-combined", "apache-common")

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        self._last_ts = ""
        self._last_time: str | None = None
        self._plain = _ACCESS_PLAIN.fullmatch

    def _time(self, ts: str) -> str | None:
        """`10/Oct/2000:13:55:36 -0700` -> `2000-10-10T20:55:36Z` (one slice per field)."""
        if ts == self._last_ts:
            return self._last_time
        out = self.clock.httpdate(ts)
        self._last_ts, self._last_time = ts, out
        return out

    def encode_line(self, line: str, source_json: str) -> str | None:
        """The record as its JSON text, straight from the match: the hot path.

        Equivalent to json-encoding parse()'s dict (a unit test holds them to
        that); None hands the line to parse() (escapes, error log, no match).
        """
        if "\\" in line:
            return None
        m = self._plain(line)
        if m is None:
            return None
        addr, ident, user, ts, request, status, size, referer, agent, xff = m.groups()
        t = self._time(ts)
        if t is None:
            return None
        code = int(status) if status != "-" else 0
        level = "error" if code >= 500 else "warning" if code >= 400 else "info"
        out = (
            f'{{"time":"{t}","level":"{level}","message":{_enc(request)},'
            f'"source":{source_json},"remote_addr":{_enc(addr)}'
        )
        if ident != "-":
            out += f',"ident":{_enc(ident)}'
        if user != "-":
            out += f',"remote_user":{_enc(user)}'
        parts = request.split(" ")
        if len(parts) == 3:
            out += f',"method":{_enc(parts[0])},"path":{_enc(parts[1])},"protocol":{_enc(parts[2])}'
        elif len(parts) == 2 and parts[0].isupper():
            out += f',"method":{_enc(parts[0])},"path":{_enc(parts[1])}'
        if code:
            out += f',"status":{code}'
        if size != "-":
            out += f',"body_bytes_sent":{int(size)}'
        if referer is not None:
            if referer != "-" and referer:
                out += f',"http_referer":{_enc(referer)}'
            if agent != "-" and agent:
                out += f',"http_user_agent":{_enc(agent)}'
            if xff is not None and xff != "-" and xff:
                out += f',"http_x_forwarded_for":{_enc(xff)}'
        return out + "}"

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        m = _ACCESS.fullmatch(line) if "\\" in line else self._plain(line)
        if m is None:
            return self._error_log(line, source)
        addr, ident, user, ts, request, status, size, referer, agent, xff = m.groups()
        if "\\" in request:
            request = unescape(request)
        code = int(status) if status != "-" else 0
        rec: dict[str, Any] = {
            "time": self._time(ts),
            "level": _status_level(code),
            "message": request,
            "source": source,
            "remote_addr": addr,
        }
        if ident != "-":
            rec["ident"] = ident
        if user != "-":
            rec["remote_user"] = unescape(user)
        parts = request.split(" ")
        if len(parts) == 3:
            rec["method"], rec["path"], rec["protocol"] = parts
        elif len(parts) == 2 and parts[0].isupper():  # HTTP/0.9: "GET /"
            rec["method"], rec["path"] = parts
        if code:
            rec["status"] = code
        if size != "-":
            rec["body_bytes_sent"] = int(size)
        if referer is not None:
            if referer != "-" and referer:
                rec["http_referer"] = unescape(referer) if "\\" in referer else referer
            if agent != "-" and agent:
                rec["http_user_agent"] = unescape(agent) if "\\" in agent else agent
            if xff is not None and xff != "-" and xff:
                rec["http_x_forwarded_for"] = unescape(xff)
        return rec

    def _error_log(self, line: str, source: str) -> dict[str, Any] | None:
        """nginx's error log: a fixed head, the message, then the request context.

        Parsed without a backtracking regex over the whole line: the old one
        (lazy groups for message and context) took seconds on a 7 KB line
        crafted into a request URL, blocking the event loop.
        """
        m = _ERROR_HEAD.match(line)
        if m is None:
            return None
        y, mo, d, h, mi, s, level, pid, tid, conn = m.groups()
        msg = line[m.end() :]
        context: dict[str, str] | None = None
        at = msg.find(", client: ")
        for _ in range(_CONTEXT_TRIES):
            if at < 0:
                break
            c = _CLIENT.match(msg, at)
            if c is not None:
                context = _context(msg[c.end() :])
                if context is not None:
                    context = {"client": c.group(1), "server": c.group(2).strip(), **context}
                    msg = msg[:at]
                    break
            at = msg.find(", client: ", at + 1)
        rec: dict[str, Any] = {
            "time": self.clock.wall(int(y), int(mo), int(d), int(h), int(mi), int(s)),
            "level": _ERROR_LEVELS.get(level, "info"),
            "message": msg,
            "source": source,
            "pid": int(pid),
            "tid": int(tid),
        }
        if conn is not None:
            rec["connection"] = int(conn)
        if context is not None:
            if not context["server"]:
                del context["server"]
            rec.update(context)
        return rec


def _context(rest: str) -> dict[str, str] | None:
    """`, request: "...", host: "..."` -> fields, or None unless all of `rest` is that.

    Right to left, each step taking the rightmost marker of a key that may
    still come (nginx's order), so the work is a few `rfind`s whatever the line.
    """
    out: dict[str, str] = {}
    keys: tuple[str, ...] = _CONTEXT_KEYS
    while rest:
        if rest[-1] != '"':
            return None
        best, best_key = -1, ""
        for key in keys:
            i = rest.rfind(f', {key}: "', 0, len(rest) - 1)
            if i > best:
                best, best_key = i, key
        if best < 0:
            return None
        out[best_key] = rest[best + len(best_key) + 5 : -1]
        rest = rest[:best]
        keys = keys[: keys.index(best_key)]
    return {k: out[k] for k in _CONTEXT_KEYS if k in out}


# -- Apache error log ------------------------------------------------------------

#: 2.2: `[Wed Oct 11 14:32:52 2000] [error] [client 127.0.0.1] message`;
#: 2.4: `[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416]
#: [client 72.15.99.187:50000] AH00037: message, referer: http://...` (the default
#: ErrorLogFormat; https://httpd.apache.org/docs/2.4/mod/core.html#errorlogformat).
_APACHE_ERROR = re.compile(
    r"\[([A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)? \d{4})\] "
    r"\[(?:([\w.-]*):)?(\w+)\] "
    r"(?:\[pid (\d+)(?::tid (\d+))?\] )?"
    r"(?:(\S+\.c\(\d+\)): )?"  # %F: source file and line (LogLevel debug)
    r"(?:\((-?\d+)\)([^:]*): )?"  # %E: APR status code and its text
    r"(?:\[(?:client|remote) (\[[^\]]*\](?::\d+)?|[^\]]+)\] )?"
    r"(?:(AH\d{5}): )?"
    r"(.*)",
    re.S,
)
_APACHE_LEVELS = {**_ERROR_LEVELS, **{f"trace{i}": "debug" for i in range(1, 9)}}


def _host_port(text: str) -> tuple[str, int | None]:
    """`72.15.99.187:50000`, `[::1]:50000`, `::1` (2.2 has no port) -> (host, port)."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host.rstrip("]"), int(port) if port.isdigit() else None
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and (host.count(":") == 0 or host.endswith("]")):
        return host, int(port)
    return text, None


@register
class ApacheError(Parser):
    """Apache httpd's error log, 2.2 and 2.4 layouts (the default ErrorLogFormat)."""

    names = ("apache-error",)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        m = _APACHE_ERROR.fullmatch(line)
        if m is None:
            return None
        ts, module, level, pid, tid, srcfile, status, status_text, client, code, msg = m.groups()
        t = self.clock.ctime(ts)
        if t is None:
            return None
        lvl = _APACHE_LEVELS.get(level)
        if lvl is None:
            return None
        referer = None
        at = msg.rfind(", referer: ")
        if at >= 0 and " " not in msg[at + 11 :]:
            msg, referer = msg[:at], msg[at + 11 :]
        rec: dict[str, Any] = {"time": t, "level": lvl, "message": msg, "source": source}
        if module:
            rec["module"] = module
        rec["log_level"] = level
        if pid is not None:
            rec["pid"] = int(pid)
        if tid is not None:
            rec["tid"] = int(tid)
        if srcfile is not None:
            rec["src_file"] = srcfile
        if status is not None:
            rec["status_code"] = int(status)
            rec["status_text"] = status_text.strip()
        if client is not None:
            host, port = _host_port(client)
            rec["client"] = host
            if port is not None:
                rec["client_port"] = port
        if code is not None:
            rec["error_code"] = code
        if referer is not None:
            rec["referer"] = referer
        return rec


# -- ingress-nginx `upstreaminfo` --------------------------------------------------

#: ingress-nginx's default log-format-upstream: combined, then `$request_length
#: $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name]
#: $upstream_addr $upstream_response_length $upstream_response_time
#: $upstream_status $req_id`. The upstream variables are lists when nginx
#: tried several upstreams (`10.0.0.1:80, 10.0.0.2:80`; ` : ` after an
#: internal redirect): kept as written then, numbers when there was one.
_ITEM = r"[^\s,]+"
_LIST = rf"{_ITEM}(?:(?:, | : ){_ITEM})*"
_INGRESS_TAIL = re.compile(
    rf" (\d+) (\S+) \[([^\]]*)\] \[([^\]]*)\] ({_LIST}) ({_LIST}) ({_LIST}) ({_LIST}) (\S+)"
)
_INGRESS_SPLIT = re.compile(
    rf'(.*") (?=\d+ \S+ \[[^\]]*\] \[[^\]]*\] {_LIST} {_LIST} {_LIST} {_LIST} \S+$)'
)


@register
class Ingress(Parser):
    """ingress-nginx's access log (`upstreaminfo`, the controller's default)."""

    names = ("nginx-ingress",)

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        self._combined = AccessLog(clock)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        m = _INGRESS_SPLIT.match(line)
        if m is None:
            return None
        rec = self._combined.parse(m.group(1), source)
        t = _INGRESS_TAIL.fullmatch(line, m.end(1))
        if rec is None or t is None or "tid" in rec:
            return None
        req_len, req_time, upstream, alt, addr, resp_len, resp_time, up_status, req_id = t.groups()
        rec["request_length"] = int(req_len)
        rec["request_time"] = number(req_time)
        if upstream:
            rec["proxy_upstream_name"] = upstream
        if alt:
            rec["proxy_alternative_upstream_name"] = alt
        for key, value in (
            ("upstream_addr", addr),
            ("upstream_response_length", resp_len),
            ("upstream_response_time", resp_time),
            ("upstream_status", up_status),
        ):
            if value != "-":
                rec[key] = value if key == "upstream_addr" else number(value)
        rec["req_id"] = req_id
        return rec
