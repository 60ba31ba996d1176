"""Delimited formats: CEF, key_value (configurable separators), csv:COLUMNS.

CEF (ArcSight Common Event Format, "Implementing ArcSight CEF" rev. 25):
`CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`,
`\\|` and `\\\\` escaped in the header, `\\=`, `\\\\`, `\\n`, `\\r` in extension
values, which run to the next ` key=`. A syslog header before `CEF:` (how
devices send it) is kept as `syslog_header`.

key_value: `k1=v1 k2="v 2"` with --kv-field-delimiter between pairs (default:
any whitespace) and --kv-value-delimiter between key and value (default `=`),
as Vector's parse_key_value; a lone key is a flag (true).

csv:COLUMNS: `--format csv:time,level,message,user` names the columns
(--csv-delimiter, default `,`); RFC 4180 quoting (a `""` inside quotes is one `"`).

Values follow the fidelity rule of logfmt: quoted stays text, an unquoted
number is a number.
"""

from __future__ import annotations

import re
from typing import Any

from ..schema import number
from .base import Parser, register
from .common import fill

_CEF_HEAD = re.compile(r"CEF:(\d+)\|((?:[^|\\]|\\.)*\|){6}")
_CEF_FIELD = re.compile(r"((?:[^|\\]|\\.)*)\|")
_CEF_HEADER_ESCAPE = re.compile(r"\\([|\\])")
_CEF_KEY = re.compile(r"(?:^|(?<=\s))([\w.\[\]-]+)=")
_CEF_VALUE_ESCAPE = re.compile(r"\\([=\\nr|])")
_CEF_UNESCAPE = {"=": "=", "\\": "\\", "n": "\n", "r": "\r", "|": "|"}
_CEF_HEADER_KEYS = (
    "device_vendor",
    "device_product",
    "device_version",
    "device_event_class_id",
    "",  # Name: the record's message
    "severity",
)
#: CEF severity: 0-3 Low, 4-6 Medium, 7-8 High, 9-10 Very-High.
_CEF_WORDS = {"low": "info", "medium": "warning", "high": "error", "very-high": "critical"}


def _cef_level(severity: str) -> str:
    if severity.isdigit():
        n = int(severity)
        return "info" if n <= 3 else "warning" if n <= 6 else "error" if n <= 8 else "critical"
    return _CEF_WORDS.get(severity.lower(), "info")


@register
class Cef(Parser):
    names = ("cef",)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        at = line.find("CEF:")
        if at < 0:
            return None
        m = _CEF_HEAD.match(line, at)
        if m is None:
            return None
        header = [
            _CEF_HEADER_ESCAPE.sub(r"\1", f.group(1))
            for f in _CEF_FIELD.finditer(line, m.end(1) + 1, m.end())
        ]
        rec: dict[str, Any] = {
            "time": None,
            "level": _cef_level(header[5].strip()),
            "message": header[4],
            "source": source,
        }
        if at:
            rec["syslog_header"] = line[:at].rstrip()
        rec["cef_version"] = int(m.group(1))
        for key, value in zip(_CEF_HEADER_KEYS, header, strict=True):
            if key:
                rec[key] = value
        ext = line[m.end() :]
        keys = list(_CEF_KEY.finditer(ext))
        pairs: list[tuple[str, Any]] = []
        for i, k in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(ext)
            value = ext[k.end() : end].rstrip(" ") if i + 1 < len(keys) else ext[k.end() : end]
            if "\\" in value:
                value = _CEF_VALUE_ESCAPE.sub(lambda e: _CEF_UNESCAPE[e.group(1)], value)
            pairs.append((k.group(1), number(value) if value else ""))
        if keys and ext[: keys[0].start()].strip():
            return None  # text before the first key: not an extension
        # `rt` (receipt time, epoch ms) or `end` carry the event's time.
        for key in ("rt", "end", "start"):
            found = next((v for k, v in pairs if k == key), None)
            if found is not None:
                t = self.clock.any(found)
                if t is not None:
                    rec["time"] = t
                    break
        return fill(rec, pairs, self.clock, take_schema=False)


def _unquote(text: str) -> str:
    """The escapes a key_value writer adds inside double quotes: `\\"`, `\\\\`, `\\n`."""
    if "\\" not in text:
        return text
    return re.sub(r'\\(["\\n])', lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


@register
class KeyValue(Parser):
    names = ("key_value", "kv")

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        fd = self.settings.kv_field_delimiter
        vd = self.settings.kv_value_delimiter
        if not vd:
            raise ValueError("key_value: --kv-value-delimiter must not be empty")
        self.whitespace = fd.strip() == ""
        sep = r"\s+" if self.whitespace else r"\s*" + re.escape(fd) + r"\s*"
        stop = r"\s" if self.whitespace else re.escape(fd)
        # Possessive: a hostile line costs linear time, never a backtracking storm.
        key = rf"[^\s\"'{re.escape(vd)}{'' if self.whitespace else re.escape(fd)}]++"
        value = rf"\"((?:[^\"\\]|\\.)*+)\"|'([^']*+)'|((?:(?!{stop}).)*+)"
        # A key may be quoted too (`"key=with=special"=value`, Vector's parse_key_value).
        key = rf"\"((?:[^\"\\]|\\.)*+)\"|'([^']*+)'|({key})"
        # Spaces around the value delimiter are allowed unless spaces delimit
        # the pairs (`ook= onk=ponk` is ook="" and onk="ponk").
        around = "" if self.whitespace else r"\s*"
        self.pair = re.compile(
            rf"(?:{key})(?:{around}{re.escape(vd)}{around}(?:{value}))?(?=\s*(?:{sep}|$))"
        )
        self.sep = re.compile(sep)

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        text = line.strip()
        pos, end = 0, len(text)
        pairs: list[tuple[str, Any]] = []
        flags = 0
        while pos < end:
            m = self.pair.match(text, pos)
            if m is None:
                return None
            kdq, ksq, kbare, dq, sq, bare = m.groups()
            key = kbare if kbare is not None else ksq if ksq is not None else _unquote(kdq)
            if dq is None and sq is None and bare is None:
                flags += 1
                pairs.append((key, True))
            elif dq is not None:
                pairs.append((key, _unquote(dq)))
            elif sq is not None:
                pairs.append((key, sq))
            else:
                pairs.append((key, number(bare.strip())))
            pos = m.end()
            s = self.sep.match(text, pos)
            if s is not None:
                pos = s.end()
        if not pairs or flags * 2 > len(pairs):
            return None
        rec: dict[str, Any] = {"time": None, "level": "info", "message": line, "source": source}
        return fill(rec, pairs, self.clock)


@register
class Csv(Parser):
    names = ("csv",)
    takes_argument = True
    argument_name = "COLUMN,COLUMN,..."

    def __init__(self, clock: Any, argument: str | None = None, settings: Any = None) -> None:
        super().__init__(clock, argument, settings)
        self.columns = [c.strip() for c in (argument or "").split(",")]
        if not all(self.columns):
            raise ValueError(f"csv:{argument}: name every column (csv:time,level,message)")
        d = re.escape(self.settings.csv_delimiter or ",")
        self.field = re.compile(rf'"((?:[^"]|"")*+)"(?={d}|$)|([^"{d}]*+)(?={d}|$)')
        self.delim = self.settings.csv_delimiter or ","

    def parse(self, line: str, source: str) -> dict[str, Any] | None:
        values: list[Any] = []
        pos = 0
        while True:
            m = self.field.match(line, pos)
            if m is None:
                return None
            quoted, bare = m.groups()
            values.append(quoted.replace('""', '"') if quoted is not None else number(bare))
            pos = m.end()
            if pos >= len(line):
                break
            pos += len(self.delim)
        if len(values) > len(self.columns):
            # More columns than names: the extras are kept, numbered.
            extra = range(len(self.columns), len(values))
            names = self.columns + [f"column_{i + 1}" for i in extra]
        else:
            names = self.columns
        if len(values) < len(self.columns) and len(self.columns) > 1 and len(values) == 1:
            return None  # one field where several were named: not this CSV
        rec: dict[str, Any] = {"time": None, "level": "info", "message": line, "source": source}
        return fill(rec, zip(names, values, strict=False), self.clock)
