"""Fidelity: what the app wrote comes out unchanged (digits, spaces, types, years).

Each row names its source: the RFC section, the daemon that writes such
lines, or the parser test of Vector's VRL (`vrl/src/stdlib/parse_*.rs`) or
Fluentd whose expectation it re-states.
"""
# ruff: noqa: E501  (tables of real log lines read best unwrapped)

from __future__ import annotations

import calendar
import json
from typing import Any

import pytest
from podkit.adapters.logformat import Converter

from podkit.logparse.parsers import create
from podkit.logparse.timeparse import Clock, parse_timezone


def parse(fmt: str, line: str, tz: str = "UTC", time_format: str | None = None) -> Any:
    return create(fmt, Clock(parse_timezone(tz), time_format)).parse(line, "src")


def subset(rec: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert rec is not None, "did not parse"
    for key, value in expected.items():
        if value is None:
            assert key not in rec, f"{key} should be absent in {rec}"
        else:
            assert rec.get(key) == value, f"{key}: {rec.get(key)!r} != {value!r} in {rec}"
            assert type(rec.get(key)) is type(value), f"{key}: type of {rec.get(key)!r}"


def convert(fmt: str, lines: list[str], read_ns: int = 0, tz: str = "UTC") -> list[dict[str, Any]]:
    conv = Converter(create(fmt, Clock(parse_timezone(tz))), fmt)
    body = conv.convert(lines, "src", read_ns or 1_700_000_000 * 10**9).body
    return [json.loads(x) for x in body.decode().splitlines()]


def ns(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) * 10**9


# -- fractional seconds: digits as written, never binary-float noise ----------


@pytest.mark.parametrize(
    ("time_format", "text", "expected"),
    [
        # Python logging's default asctime: `%Y-%m-%d %H:%M:%S,%f` with milliseconds
        ("%Y-%m-%d %H:%M:%S,%f", "2024-01-02 03:04:05,390", "2024-01-02T03:04:05.390Z"),
        ("%Y-%m-%d %H:%M:%S.%f", "2024-01-02 03:04:05.000100", "2024-01-02T03:04:05.000100Z"),
        # nanoseconds (Go's RFC3339Nano without zone): strptime stops at six digits
        ("%Y-%m-%d %H:%M:%S.%f", "2024-01-02 03:04:05.123456789", "2024-01-02T03:04:05.123456789Z"),
        ("%d/%m/%Y %H:%M:%S", "02/01/2024 03:04:05", "2024-01-02T03:04:05Z"),
    ],
)
def test_time_format_fraction_kept_as_written(time_format: str, text: str, expected: str) -> None:
    assert Clock(time_format=time_format).custom(text) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # JSON float epoch (python-json-logger `created`, zap's default `ts`)
        ('{"ts":1580306777.04728,"msg":"x"}', "2020-01-29T14:06:17.04728Z"),
        ('{"ts":1580306777.1,"msg":"x"}', "2020-01-29T14:06:17.1Z"),
        ('{"ts":1.58030677704728e9,"msg":"x"}', "2020-01-29T14:06:17.04728Z"),
        ('{"ts":"1580306777.047280","msg":"x"}', "2020-01-29T14:06:17.047280Z"),
        ('{"ts":1580306777047,"msg":"x"}', "2020-01-29T14:06:17.047Z"),
        ('{"time":"2024-01-02T03:04:05,390+00:00","msg":"x"}', "2024-01-02T03:04:05.390Z"),
    ],
)
def test_epoch_and_iso_digits_as_written(line: str, expected: str) -> None:
    assert convert("json", [line])[0]["time"] == expected


def test_logfmt_float_epoch_exact() -> None:
    subset(parse("logfmt", "ts=1580306777.04728 msg=x"), {"time": "2020-01-29T14:06:17.04728Z"})


# -- RFC 5424: MSG as written; malformed SD is a parse error ------------------

RFC5424 = [
    # RFC 5424 section 6: MSG follows the header's single SP; more spaces are MSG
    ("<14>1 2024-01-01T00:00:00Z h app - - -   indented text", {"message": "  indented text"}),
    # what rsyslog writes (RSYSLOG_SyslogProtocol23Format) for a BSD message: the
    # space after the tag's colon is part of %msg% and of its %jsonmesg%
    ("<34>1 2024-01-01T00:00:00Z h su 42 - -  'su root' failed", {"message": " 'su root' failed"}),
    # section 6.4: the BOM is not text
    ("<14>1 2024-01-01T00:00:00Z h app - - - \ufeffbom", {"message": "bom"}),
    # VRL parse_syslog test `valid`: a space after `=` read tolerantly
    ('<13>1 2020-03-13T20:45:38.119Z dynamicwireless.name non 2426 ID931 [exampleSDID@32473 iut="3" eventSource= "Application" eventID="1011"] Try to override the THX port',
     {"time": "2020-03-13T20:45:38.119Z", "app_name": "non", "proc_id": 2426, "msg_id": "ID931",
      "structured_data": {"exampleSDID@32473": {"iut": 3, "eventSource": "Application", "eventID": 1011}},
      "message": "Try to override the THX port"}),
    # VRL parse_syslog tests `empty_sd_element`, `non_empty_sd_element`, `empty_sd_value`
    ("<13>1 2019-02-13T19:48:34+00:00 74794bfb6795 root 8449 - [empty] qwerty",
     {"structured_data": {"empty": {}}, "message": "qwerty"}),
    ('<13>1 2019-02-13T19:48:34+00:00 74794bfb6795 root 8449 - [non_empty x=""][empty] qwerty',
     {"structured_data": {"non_empty": {"x": ""}, "empty": {}}}),
    # VRL `escapes_in_structured_data_bracket`
    ('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 key="hello [bye\\]"] An application event log entry...',
     {"structured_data": {"exampleSDID@32473": {"key": "hello [bye]"}}}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), RFC5424)
def test_rfc5424_as_written(line: str, expected: dict[str, Any]) -> None:
    subset(parse("syslog", line), expected)


@pytest.mark.parametrize(
    "line",
    [
        # RFC 5424 section 6.3.3: PARAM-VALUE is quoted; a bare value is malformed
        "<13>1 2019-02-13T19:48:34+00:00 h root 8449 - [id x=1] qwerty",
        # a parameter without a value
        "<13>1 2019-02-13T19:48:34+00:00 h root 8449 - [id flag] qwerty",
        # an unterminated element
        '<13>1 2019-02-13T19:48:34+00:00 h root 8449 - [id x="1" qwerty',
    ],
)
def test_rfc5424_malformed_structured_data_is_a_parse_error(line: str) -> None:
    assert parse("syslog", line) is None
    (rec,) = convert("syslog", [line])
    assert rec["parse_error"] is True and rec["message"] == line and "structured_data" not in rec


# -- RFC 3164 tags as daemons write them; app name and pid as rsyslog reads them

RFC3164 = [
    # macOS launchd: `name[pid]` followed by a space, the colon comes later
    ("Oct 30 10:00:00 mbp launchd[1] (com.apple.xpc.launchd.domain.pid.mdmclient.1234): Service exited with abnormal code: 1",
     {"hostname": "mbp", "app_name": "launchd", "proc_id": 1,
      "message": "(com.apple.xpc.launchd.domain.pid.mdmclient.1234): Service exited with abnormal code: 1"}),
    # macOS sandboxd
    ("Oct 30 10:00:00 mbp sandboxd[129] ([31211]): mdworker(31211) deny file-read-data /Users",
     {"app_name": "sandboxd", "proc_id": 129, "message": "([31211]): mdworker(31211) deny file-read-data /Users"}),
    # VRL parse_syslog test `non_structured_data_in_message`: a tag without colon
    ("<131>Jun 8 11:54:08 master apache_error [Tue Jun 08 11:54:08.929301 2021] [php7:emerg] [pid 1374899] [client 95.223.77.60:41888] rest of message",
     {"hostname": "master", "app_name": "apache_error", "level": "error", "facility": "local0",
      "message": "[Tue Jun 08 11:54:08.929301 2021] [php7:emerg] [pid 1374899] [client 95.223.77.60:41888] rest of message"}),
    # VRL `haproxy` and `missing_pri`: no hostname (as handed to /dev/log)
    ("<133>Jun 13 16:33:35 haproxy[73411]: Proxy sticky-servers started.",
     {"hostname": None, "app_name": "haproxy", "proc_id": 73411, "message": "Proxy sticky-servers started."}),
    ("Jun 13 16:33:35 haproxy[73411]: I am missing a pri.",
     {"app_name": "haproxy", "proc_id": 73411, "message": "I am missing a pri."}),
    # rsyslog TraditionalFileFormat of an RFC 5424 message: tag rebuilt as APP[PROCID]:
    ("Oct 11 22:14:15 mymachine.example.com evntslog[8710]: An application event log entry...",
     {"app_name": "evntslog", "proc_id": 8710}),
    # rsyslog writes `-` for an RFC 5424 message without APP-NAME
    ("Oct 11 22:14:15 host - hello", {"app_name": None, "message": "hello"}),
    # a non-numeric PROCID (RFC 5424 allows any PRINTUSASCII) survives as text
    ("Oct 11 22:14:15 host worker[main-1]: x", {"app_name": "worker", "proc_id": "main-1", "message": "x"}),
    # the message keeps its own inner spacing; only the tag's separator goes
    ("Oct 11 22:14:15 host app:   three spaces", {"message": "  three spaces"}),
    ("Oct 11 22:14:15 host app:", {"app_name": "app", "message": ""}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), RFC3164)
def test_rfc3164_tags_as_daemons_write_them(line: str, expected: dict[str, Any]) -> None:
    subset(parse("syslog", line), expected)


# -- klog and logfmt: types as the writer wrote them ----------------------------

KLOG = [
    # klog KObjSlice and a []string (k8s.io/klog/v2 text output, KEP-3077 examples)
    ('I0102 15:04:05.000000 1 a.go:1] "Pods synced" pods=["kube-system/kube-dns","default/web"] objs=[{"name":"web","namespace":"default"}]',
     {"pods": ["kube-system/kube-dns", "default/web"], "objs": [{"name": "web", "namespace": "default"}]}),
    # nested object
    ('I0102 15:04:05.000000 1 a.go:1] "cfg" config={"a":{"b":[1,2.5,null]},"c":true}',
     {"config": {"a": {"b": [1, 2.5, None]}, "c": True}}),
    # klog quotes by type: a quoted number is a string, an unquoted one a number
    ('I0102 15:04:05.000000 1 a.go:1] "trace" span="1112131415161718" count=3 ratio=0.25 ok=true',
     {"span": "1112131415161718", "count": 3, "ratio": 0.25, "ok": True}),
    # something that starts like JSON but is not stays the text written
    ('I0102 15:04:05.000000 1 a.go:1] "x" v=[unterminated w={x}', {"v": "[unterminated", "w": "{x}"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), KLOG)
def test_klog_values_typed_as_written(line: str, expected: dict[str, Any]) -> None:
    subset(parse("klog", line), expected)


LOGFMT = [
    # the same rule for logfmt: quoted stays a string
    ('msg=x code="200" n=200 id="007" f=1.5 s="1.5"', {"code": "200", "n": 200, "id": "007", "f": 1.5, "s": "1.5"}),
    ('msg=x tags=["a","b"] m={"k":1}', {"tags": ["a", "b"], "m": {"k": 1}}),
    # logfmt writers leave booleans bare but also words: they stay text
    ("msg=x ok=true", {"ok": "true"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), LOGFMT)
def test_logfmt_values_typed_as_written(line: str, expected: dict[str, Any]) -> None:
    subset(parse("logfmt", line), expected)


# -- year-less timestamps across New Year (compared with the reading time) ------


@pytest.mark.parametrize(
    ("line", "read", "tz", "expected"),
    [
        # a December line read in January is last year's (rsyslog, Vector)
        ("Dec 31 23:59:58 h app: x", ns(2027, 1, 1, 0, 0, 3), "UTC", "2026-12-31T23:59:58Z"),
        # a January line read on New Year's Eve by a reader whose clock lags
        ("Jan  1 00:00:01 h app: x", ns(2026, 12, 31, 23, 59, 59), "UTC", "2027-01-01T00:00:01Z"),
        # the zone's date counts: Berlin is in 2027 at 23:00:10 UTC on Dec 31
        (
            "Jan  1 00:00:05 h app: x",
            ns(2026, 12, 31, 23, 0, 10),
            "Europe/Berlin",
            "2026-12-31T23:00:05Z",
        ),
        # an old January line read in December is this year's
        ("Jan  2 03:04:05 h app: x", ns(2026, 12, 4), "UTC", "2026-01-02T03:04:05Z"),
        # a line months ahead of its reading is last year's
        ("Nov  2 03:04:05 h app: x", ns(2027, 3, 4), "UTC", "2026-11-02T03:04:05Z"),
        ("Mar  5 03:04:05 h app: x", ns(2027, 3, 4), "UTC", "2027-03-05T03:04:05Z"),
    ],
)
def test_year_guess_uses_the_reading_time(line: str, read: int, tz: str, expected: str) -> None:
    assert convert("syslog", [line], read, tz)[0]["time"] == expected


def test_klog_year_guess_uses_the_reading_time() -> None:
    line = "I1231 23:59:59.5 1 a.go:1] x"
    assert convert("klog", [line], ns(2027, 1, 1, 0, 0, 1))[0]["time"] == "2026-12-31T23:59:59.5Z"
    line = "I0101 00:00:00.25 1 a.go:1] x"
    assert convert("klog", [line], ns(2026, 12, 31, 23, 59))[0]["time"] == "2027-01-01T00:00:00.25Z"


@pytest.mark.parametrize(
    ("fmt", "line"),
    [
        # dates that do not exist are refused, never rolled over (VRL parse_klog
        # test `log_line_invalid_timestamp`: month 00)
        ("klog", "I0000 17:59:40.692994   28133 klog.go:70] hello from klog"),
        ("klog", "I0505 25:59:40.692994   28133 klog.go:70] hour 25"),
        ("syslog", "Feb 30 10:00:00 h app: no such day"),
        ("syslog", "Oct 32 10:00:00 h app: no such day"),
        ("nginx", '::1 - - [31/Feb/2026:06:40:01 +0000] "GET / HTTP/1.1" 200 1 "-" "-"'),
        ("nginx", "2026/02/30 06:40:01 [error] 1#1: no such day"),
    ],
)
def test_impossible_dates_are_not_rolled_over(fmt: str, line: str) -> None:
    rec = convert(fmt, [line])[0]
    assert rec.get("parse_error") or rec["time"].startswith("2023-11-14T22:13:20."), rec


def test_klog_indented_line() -> None:
    # VRL parse_klog test `log_line_valid_strip_whitespace`
    subset(parse("klog", "     I0505 17:59:40.692994   28133 klog.go:70] hello from klog"),
           {"message": "hello from klog", "thread_id": 28133, "line": 70})  # fmt: skip


def test_logfmt_fast_path_equals_the_scanner() -> None:
    """Lines without JSON values take two regex calls; the result is the scanner's."""
    import random

    from podkit.logparse.parsers import common

    rnd = random.Random(7)
    pieces = ["a", "=", '"', " ", "\\", "1", ".", "-", "x=1", 'k="v w"', "n=2.5", "ok=true",
              'q=""', "e=", "\t", "é", '\\"', "007"]  # fmt: skip
    for _ in range(5000):
        line = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 14)))
        for bools in (False, True):
            assert common._plain_pairs(line, 0, bools) == common._scan_pairs(line, 0, bools), line
