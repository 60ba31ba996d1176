"""Timestamps in, RFC 3339 UTC out: the `time` field of every record.

Parsers hand over what the record carries (an ISO 8601 string, an nginx
`10/Oct/2000:13:55:36 -0700`, a syslog `Oct 11 22:14:15` without year or zone,
epoch numbers, or text in the user's `--time-format`). Output is always
`YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the fraction's digits kept as written (up to
nanoseconds), so ordering and precision survive the trip.

Consecutive records nearly always share their second, so every path caches the
last whole-second conversion and re-attaches the fraction: the zone arithmetic
runs about once per second of log, not once per line.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any

MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}

_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*(Z|z|UTC|[+-]\d\d(?::?\d\d)?)?"
)
#: A fraction of a second inside a --time-format text: after `.` or `,`, after seconds.
_FRACTION = re.compile(r"(:\d\d)[.,](\d{1,9})(?!\d)")
#: How far ahead of its reading a year-less timestamp may be before it is taken for last year's.
_AHEAD_DAYS = 31
#: How close to a reading at the end of December a January timestamp must be to be next year's.
_WRAP_DAYS = 2
_BSD = re.compile(r"([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")
_CTIME = re.compile(
    r"[A-Z][a-z]{2} ([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? (\d{4})"
)
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)?")


def parse_timezone(text: str) -> tzinfo:
    """`UTC`, `local`, a fixed offset `+02:00`, or an IANA name such as `Europe/Berlin`."""
    s = text.strip()
    if s.upper() in ("UTC", "Z", "GMT", ""):
        return UTC
    if s.lower() == "local":
        off = datetime.now().astimezone().utcoffset() or timedelta(0)
        zone = datetime.now().astimezone().tzinfo
        return zone if zone is not None else timezone(off)
    m = _OFFSET.fullmatch(s)
    if m:
        sign, hh, mm = m.groups()
        delta = timedelta(hours=int(hh), minutes=int(mm or 0))
        return timezone(-delta if sign == "-" else delta)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {text!r}") from exc


def _offset_seconds(text: str) -> int:
    if text in ("Z", "z", "UTC"):
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:4] or 0) * 60)


def format_epoch(secs: int, frac: str = "") -> str:
    """RFC 3339 UTC; ValueError outside the years 1..9999 (RFC 3339 has four digits)."""
    t = time.gmtime(secs)
    if not 1 <= t.tm_year <= 9999:
        raise ValueError(f"year {t.tm_year} out of range")
    # Not strftime: glibc's %Y does not pad a year below 1000 to four digits.
    out = (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )
    return f"{out}.{frac[:9]}Z" if frac else out + "Z"


class Clock:
    """Timestamp conversion for one adapter: its `--timezone` and `--time-format`."""

    def __init__(self, tz: tzinfo = UTC, time_format: str | None = None) -> None:
        self.tz = tz
        self.time_format = time_format or None
        # A zone with a fixed offset needs no datetime per conversion.
        fixed = tz.utcoffset(None) if not hasattr(tz, "key") else None
        self._fixed: int | None = int(fixed.total_seconds()) if fixed is not None else None
        self._cache: dict[Any, str] = {}
        #: When the records being converted were read (ns since the epoch); the
        #: converter sets it per batch. Year-less timestamps are placed next to it.
        self.read_ns: int | None = None
        self._read_date: tuple[int, date] = (-1, date(1970, 1, 1))

    def _remember(self, key: Any, value: str) -> str:
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = value
        return value

    def local_epoch(self, y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
        """Seconds since the epoch of a wall-clock time in --timezone."""
        if self._fixed is not None:
            return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) - self._fixed
        return int(datetime(y, mo, d, h, mi, s, tzinfo=self.tz).timestamp())

    def wall(self, y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str = "") -> str:
        """A wall-clock time in --timezone (records that carry no zone)."""
        key = (y, mo, d, h, mi, s)
        base = self._cache.get(key)
        if base is None:
            # A date that does not exist (Feb 30, hour 25) is refused, never
            # rolled over into another one; 60 is a leap second.
            datetime(y, mo, d, h, mi, min(s, 59))
            base = self._remember(key, format_epoch(self.local_epoch(y, mo, d, h, mi, s))[:-1])
        return f"{base}.{frac[:9]}Z" if frac else base + "Z"

    def read_date(self) -> date:
        """The reading time's date on the wall clock of --timezone."""
        now = self.read_ns / 1e9 if self.read_ns is not None else time.time()
        key = int(now // 900)  # zones change date on the quarter hour at most
        cached = self._read_date
        if cached[0] == key:
            return cached[1]
        if self._fixed is not None:
            t = time.gmtime(now + self._fixed)
            today = date(t.tm_year, t.tm_mon, t.tm_mday)
        else:
            today = datetime.fromtimestamp(now, self.tz).date()
        self._read_date = (key, today)
        return today

    def guess_year(self, month: int, day: int = 1) -> int:
        """Syslog and klog omit the year: the one that puts the line next to its reading.

        As rsyslog and Vector do, the line is compared with when it was read
        (its date on the wall clock of --timezone), not with the year alone:
        the reading year, unless the line would then be more than a month
        ahead of its reading (a December line read in January: last year), or
        the next year puts it at most two days ahead (a January line read on
        New Year's Eve, written by a clock or in a zone already there).
        """
        today = self.read_date()
        year = today.year
        try:
            ahead = (date(year, month, min(day, 28 if month == 2 else day)) - today).days
        except ValueError:
            return year
        if ahead > _AHEAD_DAYS:
            return year - 1
        if ahead + 365 <= _WRAP_DAYS:
            return year + 1
        return year

    def httpdate(self, ts: str) -> str | None:
        """nginx/Apache `%t`: `10/Oct/2000:13:55:36 -0700` -> `2000-10-10T20:55:36Z`."""
        try:
            wall = (
                int(ts[7:11]),
                MONTHS[ts[3:6]],
                int(ts[0:2]),
                int(ts[12:14]),
                int(ts[15:17]),
                int(ts[18:20]),
            )
            zone = ts[21:]
            if zone:
                datetime(*wall[:5], min(wall[5], 59))  # refuses 31/Feb rather than rolling over
                return format_epoch(calendar.timegm((*wall, 0, 0, 0)) - _offset_seconds(zone))
            return self.wall(*wall)  # a custom log_format without the zone: --timezone
        except (KeyError, ValueError, IndexError, OverflowError):
            return self.custom(ts) if self.time_format else None

    def bsd(self, text: str) -> str | None:
        """A BSD syslog time `Oct 11 22:14:15[.frac]`: no year (guessed), no zone (--timezone)."""
        m = _BSD.fullmatch(text)
        if m is None:
            return None
        mon, d, h, mi, s, frac = m.groups()
        month = MONTHS.get(mon)
        if month is None:
            return None
        try:
            day = int(d)
            year = self.guess_year(month, day)
            return self.wall(year, month, day, int(h), int(mi), int(s), frac or "")
        except (ValueError, OverflowError):
            return None

    def ctime(self, text: str) -> str | None:
        """C's ctime layout, Apache's error log: `Wed Oct 11 14:32:52[.frac] 2000` (--timezone)."""
        m = _CTIME.fullmatch(text)
        if m is None:
            return None
        mon, d, h, mi, s, frac, y = m.groups()
        month = MONTHS.get(mon)
        if month is None:
            return None
        try:
            return self.wall(int(y), month, int(d), int(h), int(mi), int(s), frac or "")
        except (ValueError, OverflowError):
            return None

    def iso(self, text: str) -> str | None:
        """RFC 3339 / ISO 8601, with or without zone and fraction."""
        m = _ISO.fullmatch(text)
        if m is None:
            return None
        y, mo, d, h, mi, s, frac, zone = m.groups()
        key = (y, mo, d, h, mi, s, zone)
        base = self._cache.get(key)
        if base is None:
            try:
                yi, moi, di, hi, mii, si = int(y), int(mo), int(d), int(h), int(mi), int(s)
                if zone is None:
                    secs = self.local_epoch(yi, moi, di, hi, mii, si)
                else:
                    secs = calendar.timegm((yi, moi, di, hi, mii, si, 0, 0, 0)) - _offset_seconds(
                        zone
                    )
                datetime(yi, moi, di, hi, mii, min(si, 59))  # rejects month 13, day 32, ...
                text = format_epoch(secs)  # rejects 9999-12-31T23:59:59-01:00
            except (ValueError, OverflowError, OSError):
                return None
            base = self._remember(key, text[:-1])
        return f"{base}.{frac[:9]}Z" if frac else base + "Z"

    def epoch(self, value: float | int | str) -> str | None:
        """Unix time in seconds, milliseconds, microseconds or nanoseconds (by magnitude)."""
        if isinstance(value, bool):
            return None
        if isinstance(value, float):
            # The shortest text that reads back as this float is what the app
            # wrote (JSON `1580306777.04728`); `%.9f` would add binary noise.
            if not math.isfinite(value):
                return None
            text = repr(value)
            if "e" in text or "E" in text:
                text = format(Decimal(text), "f")
        else:
            text = str(value).strip()
        whole, _, fdigits = text.partition(".")
        # ASCII digits after at most one sign: str.isdigit() also takes "²", which
        # int() refuses, and lstrip("-") took "--1".
        digits_only = whole.removeprefix("-")
        if not (digits_only.isascii() and digits_only.isdigit()) or (
            fdigits and not (fdigits.isascii() and fdigits.isdigit())
        ):
            return None
        n = int(whole)
        mag = abs(n)
        # Below 1e11 seconds reaches the year 5138; larger numbers are finer units.
        digits = 0 if mag < 10**11 else 3 if mag < 10**14 else 6 if mag < 10**17 else 9
        secs, sub = divmod(n, 10**digits) if digits else (n, 0)
        # Digits the unit implies (milliseconds...) are trimmed of zeros; digits
        # the app wrote after a point are kept as written.
        frac = (f"{sub:0{digits}d}" if digits else "") + fdigits
        frac = frac[:9] if fdigits else frac.rstrip("0")
        try:
            return format_epoch(secs, frac)
        except (ValueError, OverflowError, OSError):
            return None

    def custom(self, text: str) -> str | None:
        """--time-format: strptime directives, or unix / unix_ms / unix_us / unix_ns."""
        fmt = self.time_format
        assert fmt is not None
        if fmt.startswith("unix"):
            return self.epoch(text)
        base = self._cache.get(("c", text))
        if base is not None:
            return base
        frac = ""
        parse_text = text.strip()
        if "%f" in fmt:
            # strptime turns `,390` into 390000 microseconds and stops at six
            # digits: take the digits as written, cut to six only for strptime.
            m = _FRACTION.search(parse_text)
            if m is not None:
                frac = m.group(2)
                if len(frac) > 6:
                    parse_text = parse_text[: m.start(2) + 6] + parse_text[m.end(2) :]
        try:
            dt = datetime.strptime(parse_text, fmt)
        except ValueError:
            return None
        if "%Y" not in fmt and "%y" not in fmt and "%G" not in fmt:
            dt = dt.replace(year=self.guess_year(dt.month, dt.day))
        if dt.tzinfo is None:
            secs = self.local_epoch(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
        else:
            secs = int(dt.replace(microsecond=0).timestamp())
        if not frac or int(frac[:6].ljust(6, "0")) != dt.microsecond:
            frac = f"{dt.microsecond:06d}".rstrip("0") if dt.microsecond else ""
        try:
            return self._remember(("c", text), format_epoch(secs, frac))
        except (ValueError, OverflowError, OSError):
            return None

    def any(self, value: Any) -> str | None:
        """The time of a field whose shape is not fixed (json, logfmt, regex groups)."""
        if self.time_format:
            # A time that looked like a number (20240102) was converted: the
            # format still describes its digits.
            return self.custom(value if isinstance(value, str) else str(value))
        if isinstance(value, int | float):
            return self.epoch(value)
        if not isinstance(value, str):
            return None
        out = self.iso(value)
        if out is None and value[:1].isdigit() and value.replace(".", "", 1).isdigit():
            out = self.epoch(value)
        return out
