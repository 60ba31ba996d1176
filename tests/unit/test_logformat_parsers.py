"""Every format's table of tricky lines, and the nginx fast path held to the dict path."""
# ruff: noqa: E501  (tables of real log lines read best unwrapped)

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from podkit.adapters.logformat import Converter

from podkit.logparse.parsers import REGISTRY, create
from podkit.logparse.parsers.access import unescape
from podkit.logparse.timeparse import Clock, parse_timezone

YEAR = time.gmtime().tm_year
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"


def parse(fmt: str, line: str, tz: str = "UTC", time_format: str | None = None) -> Any:
    return create(fmt, Clock(parse_timezone(tz), time_format)).parse(line, "src")


def subset(rec: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    assert rec is not None, "did not parse"
    for key, value in expected.items():
        if value is None and key == "time":
            assert rec["time"] is None, f"time should be left to the adapter in {rec}"
        elif value is None:
            assert key not in rec, f"{key} should be absent in {rec}"
        else:
            assert rec.get(key) == value, f"{key}: {rec.get(key)!r} != {value!r} in {rec}"


def test_schema_key_order() -> None:
    rec = parse(
        "nginx", f'1.2.3.4 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "{UA}"'
    )
    assert list(rec)[:4] == ["time", "level", "message", "source"]


NGINX = [
    # IPv6 client, `-` for user/referer
    (
        f'::1 - - [26/Nov/2026:06:40:01 +0000] "GET /index.html HTTP/1.1" 200 17 "-" "{UA}"',
        {"time": "2026-11-26T06:40:01Z", "level": "info", "remote_addr": "::1", "method": "GET",
         "path": "/index.html", "protocol": "HTTP/1.1", "status": 200, "body_bytes_sent": 17,
         "http_referer": None, "remote_user": None, "http_user_agent": UA,
         "message": "GET /index.html HTTP/1.1"},
    ),
    # zone conversion, 5xx -> error, user present, full IPv6
    (
        '2001:db8::7 - alice [10/Oct/2000:13:55:36 -0700] "POST /a HTTP/2.0" 502 0 "https://r/" "c"',
        {"time": "2000-10-10T20:55:36Z", "level": "error", "remote_user": "alice",
         "remote_addr": "2001:db8::7", "http_referer": "https://r/", "body_bytes_sent": 0},
    ),
    # nginx escapes a quote as \x22 and non-ASCII bytes as \xHH (here UTF-8 for é)
    (
        r'10.0.0.1 - - [01/Jan/2024:00:00:00 +0530] "GET /q?a=\x22b\x22&n=\xC3\xA9 HTTP/1.1" 404 9 "-" "x\x22y"',
        {"time": "2023-12-31T18:30:00Z", "level": "warning", "path": '/q?a="b"&n=é',
         "http_user_agent": 'x"y'},
    ),
    # bytes that are not UTF-8 stay visible as \xHH
    (
        r'10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET /\xFF HTTP/1.1" 400 0 "-" "-"',
        {"path": "/\\xff", "http_user_agent": None, "level": "warning"},
    ),
    # a TLS handshake sent to the plain port: no method/path, request kept as message
    (
        r'127.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "\x16\x03\x01\x00\xF1\x01" 400 157 "-" "-"',
        {"status": 400, "method": None, "message": "\x16\x03\x01\x00\\xf1\x01"},
    ),
    # the nginx sample config's "main" format: x_forwarded_for after the agent
    (
        '10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "ua" "203.0.113.9, ::1"',
        {"http_x_forwarded_for": "203.0.113.9, ::1"},
    ),
    # Apache common: ident, `-` for bytes, no referer/agent
    (
        '192.0.2.1 ident frank [10/Oct/2000:13:55:36 +0000] "GET /apache_pb.gif HTTP/1.0" 304 -',
        {"ident": "ident", "remote_user": "frank", "body_bytes_sent": None, "status": 304},
    ),
    # Apache escapes quotes as \" and backslashes as \\
    (
        r'192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "GET /x HTTP/1.0" 200 3 "-" "say \"hi\" \\o/"',
        {"http_user_agent": 'say "hi" \\o/'},
    ),
    # CR of a CRLF file is not part of the last field
    (
        '192.0.2.1 - - [10/Oct/2000:13:55:36 +0000] "GET /x HTTP/1.0" 200 3 "-" "ua"\r',
        {"http_user_agent": "ua"},
    ),
    # nginx's error log, with the request context nginx appends
    (
        '2026/11/26 06:40:01 [error] 123#123: *5 open() "/srv/missing" failed (2: No such file '
        'or directory), client: ::1, server: localhost, request: "GET /missing HTTP/1.1", '
        'host: "[::1]:8080"',
        {"time": "2026-11-26T06:40:01Z", "level": "error", "pid": 123, "tid": 123,
         "connection": 5, "client": "::1", "server": "localhost",
         "request": "GET /missing HTTP/1.1", "host": "[::1]:8080",
         "message": 'open() "/srv/missing" failed (2: No such file or directory)'},
    ),
    # error log without zone: --timezone is not UTC here (see the tz test); notice -> info
    (
        '2026/11/26 06:40:01 [notice] 7#7: using the "epoll" event method',
        {"level": "info", "message": 'using the "epoll" event method', "connection": None},
    ),
    ('2026/11/26 06:40:01 [crit] 7#7: *1 SSL_do_handshake() failed, client: 10.0.0.1, server: 0.0.0.0:443',
     {"level": "critical", "client": "10.0.0.1"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), NGINX)
def test_nginx_tricky_lines(line: str, expected: dict[str, Any]) -> None:
    subset(parse("nginx", line), expected)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "hello world",
        '::1 - - [26/Nov/2026:06:40:01 +0000] "GET / HTTP/1.1" 2000 17 "-" "-"',
        '::1 - - [26/Nov/2026:06:40:01 +0000] "GET / HTTP/1.1 200 17',
        "2026/11/26 06:40:01 [error] no pid here",
    ],
)
def test_nginx_rejects(line: str) -> None:
    assert parse("nginx", line) is None


def test_nginx_very_long_line() -> None:
    path = "/" + "a" * 200_000
    rec = parse(
        "nginx", f'::1 - - [26/Nov/2026:06:40:01 +0000] "GET {path} HTTP/1.1" 414 0 "-" "-"'
    )
    subset(rec, {"path": path, "status": 414})


def test_nginx_unparseable_time_falls_back_to_read_time() -> None:
    rec = parse("nginx", '::1 - - [yesterday] "GET / HTTP/1.1" 200 1 "-" "-"')
    subset(rec, {"time": None, "status": 200})
    rec = parse("nginx", '::1 - - [26/Nov/2026:06:40:01] "GET / HTTP/1.1" 200 1', tz="+01:00")
    subset(rec, {"time": "2026-11-26T05:40:01Z"})


@pytest.mark.parametrize(("line", "expected"), NGINX)
def test_fast_path_equals_dict_path(line: str, expected: dict[str, Any]) -> None:
    """encode_line() must write exactly what json-encoding parse()'s dict writes."""
    parser = create("nginx", Clock())
    rec = parser.parse(line.rstrip("\r"), "/logs/a.log")
    fast = parser.encode_line(line.rstrip("\r"), json.dumps("/logs/a.log"))
    if fast is not None:
        assert rec is not None
        assert json.loads(fast) == rec
        assert list(json.loads(fast)) == list(rec)


def test_unescape() -> None:
    assert unescape(r"a\x22b") == 'a"b'
    assert unescape(r"\"q\" \\") == '"q" \\'
    assert unescape(r"\xE2\x82\xAC") == "€"
    assert unescape(r"\xFFok") == "\\xffok"
    assert unescape("plain") == "plain"


LOGFMT = [
    ('time=2024-01-02T03:04:05.123+01:00 level=warn msg="hello \\"q\\"" status=200 dur=1.5',
     {"time": "2024-01-02T02:04:05.123Z", "level": "warning", "message": 'hello "q"',
      "status": 200, "dur": 1.5}),
    # logrus text formatter, documented sample (github.com/sirupsen/logrus README)
    ('time="2015-03-26T01:27:38-04:00" level=debug msg="Started observing beach" animal=walrus number=8',
     {"time": "2015-03-26T05:27:38Z", "level": "debug", "message": "Started observing beach",
      "animal": "walrus", "number": 8}),
    # Heroku router sample (https://brandur.org/logfmt): no msg, keys with dots
    ('at=info method=GET path=/ host=myapp.herokuapp.com fwd="204.204.204.204" dyno=web.1 '
     'connect=1ms service=18ms status=200 bytes=13',
     {"level": "info", "at": "info", "connect": "1ms", "status": 200, "bytes": 13,
      "fwd": "204.204.204.204"}),
    # slog TextHandler: time without zone -> --timezone; IPv6 bare value; flag; empty value
    ('time=2024-01-02T03:04:05 level=ERROR msg=failed client=::1 retry empty= userID=7 zip=007',
     {"time": "2024-01-02T03:04:05Z", "level": "error", "client": "::1", "retry": True,
      "empty": "", "user_id": 7, "zip": "007"}),
    # escapes of Go's strconv.Quote, non-ASCII text
    ('msg="line1\\nline2 \\u00e9 \\x41" note="naïve ünïcode"',
     {"message": "line1\nline2 é A", "note": "naïve ünïcode"}),
    # a `-` is just a value; repeated keys are kept
    ("msg=x user=- a=1 a=2", {"user": "-", "a": 1, "a_2": 2}),
    # fields colliding with the schema keep their value under another name
    ("msg=x source=db", {"source": "src", "field_source": "db"}),
    ("level=9000 msg=x", {"level": "critical"}),
    ("level=bogus msg=x", {"level": "info", "field_level": "bogus"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), LOGFMT)
def test_logfmt_tricky_lines(line: str, expected: dict[str, Any]) -> None:
    subset(parse("logfmt", line), expected)


@pytest.mark.parametrize(
    "line",
    ["just some prose", 'msg="unterminated', "a b c d=1", "", "  "],
)
def test_logfmt_rejects(line: str) -> None:
    assert parse("logfmt", line) is None


def test_logfmt_long_and_non_utf8() -> None:
    v = "x" * 300_000
    subset(parse("logfmt", f'msg="{v}" n=1'), {"message": v, "n": 1})
    subset(parse("logfmt", "msg=caf\ufffd n=2"), {"message": "caf\ufffd", "n": 2})


SYSLOG = [
    # RFC 5424 section 6.5 examples
    ('<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 '
     'iut="3" eventSource="Application" eventID="1011"] \ufeffAn application event log entry...',
     {"time": "2003-10-11T22:14:15.003Z", "level": "info", "facility": "local4", "severity": 5,
      "hostname": "mymachine.example.com", "app_name": "evntslog", "proc_id": None,
      "msg_id": "ID47", "message": "An application event log entry...",
      "structured_data": {"exampleSDID@32473": {"iut": 3, "eventSource": "Application",
                                                 "eventID": 1011}}}),
    ("<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
     {"level": "critical", "facility": "auth", "message": "'su root' failed"}),
    ('<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It\'s time',
     {"time": "2003-08-24T12:14:15.000003Z", "proc_id": 8710, "hostname": "192.0.2.1"}),
    # escaped quote and bracket inside SD values; two elements; no message; IPv6 host
    ('<11>1 2024-01-01T00:00:00+02:00 ::1 app 1 - [a@1 q="say \\"hi\\"" b="x\\]y"][b@2 n="5"]',
     {"time": "2023-12-31T22:00:00Z", "level": "error", "hostname": "::1", "message": "",
      "structured_data": {"a@1": {"q": 'say "hi"', "b": "x]y"}, "b@2": {"n": 5}}}),
    ("<14>1 - - - - - - hello", {"time": None, "hostname": None, "message": "hello"}),
    # RFC 3164 section 5.4 examples
    ("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
     {"time": f"{YEAR if time.gmtime().tm_mon >= 9 else YEAR - 1}-10-11T22:14:15Z",
      "level": "critical", "facility": "auth", "hostname": "mymachine", "app_name": "su",
      "message": "'su root' failed for lonvick on /dev/pts/8"}),
    # RFC 3164 calls this one tagless, but rsyslog's pmrfc3164 (a tag ends at
    # `:` or a space) and Fluentd (support_colonless_ident, the default) read
    # the first word as the tag: so does logformat, to agree with the daemon.
    ("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!",
     {"hostname": "10.0.0.99", "app_name": "Use", "message": "the BFG!", "level": "info"}),
    # rsyslog TraditionalFileFormat (no PRI), ForwardFormat (PRI + RFC 3339), FileFormat
    ("Nov 26 06:40:01 host myapp[1234]: hello [x] world: y",
     {"hostname": "host", "app_name": "myapp", "proc_id": 1234, "message": "hello [x] world: y",
      "severity": None}),
    ("<190>2026-11-26T06:40:01.123456+00:00 host app: text",
     {"time": "2026-11-26T06:40:01.123456Z", "level": "info", "facility": "local7",
      "app_name": "app"}),
    ("2026-11-26T06:40:01.123456+01:00 host kernel: [  1.0] usb 1-1: new device",
     {"time": "2026-11-26T05:40:01.123456Z", "app_name": "kernel"}),
    ("<999>Nov 26 06:40:01 host app: bad pri", {"level": "info", "facility": None}),
    # as an app hands it to /dev/log: no hostname
    ("<13>Nov 26 06:40:01 myapp[77]: user: x", {"hostname": None, "app_name": "myapp", "proc_id": 77, "message": "user: x"}),
    ("<13>Nov 26 06:40:01 cron: job done", {"hostname": None, "app_name": "cron", "message": "job done"}),
    ("Nov 26 06:40:01 host app: caf\ufffd \x01", {"message": "caf\ufffd \x01"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), SYSLOG)
def test_syslog_tricky_lines(line: str, expected: dict[str, Any]) -> None:
    subset(parse("syslog", line), expected)


@pytest.mark.parametrize(
    "line", ["", "hello world", "<13>", "Foo 26 06:40:01 host app: x", "<13>1 notatime h a p m - x"]
)
def test_syslog_rejects(line: str) -> None:
    assert parse("syslog", line) is None


def test_syslog_bsd_time_uses_timezone() -> None:
    rec = parse("syslog", "Jan  2 03:04:05 h a: x", tz="Europe/Berlin")
    assert rec["time"] == f"{YEAR}-01-02T02:04:05Z"


KLOG = [
    # structured klog (KEP-1602 sample)
    ('I1025 00:15:15.525108       1 controller_utils.go:116] "Pod status updated" '
     'pod="kube-system/kubedns" status="ready"',
     {"level": "info", "message": "Pod status updated", "pod": "kube-system/kubedns",
      "status": "ready", "thread_id": 1, "file": "controller_utils.go", "line": 116}),
    # unstructured, with quotes inside the text
    ('E1126 06:40:01.123456    1234 reflector.go:138] failed to list *v1.Pod: "forbidden"',
     {"level": "error", "message": 'failed to list *v1.Pod: "forbidden"', "thread_id": 1234}),
    ('W0102 15:04:05.000001 77 main.go:9] "Slow \\"sync\\"" durationMs=1500 podUID="a-b" err=null',
     {"level": "warning", "message": 'Slow "sync"', "duration_ms": 1500, "pod_uid": "a-b",
      "err": "null"}),
    ("F0102 15:04:05.5 77 main.go:9] boom", {"level": "critical", "message": "boom"}),
    # a quoted message followed by something that is not key=value stays whole
    ('I0102 15:04:05.000000 1 a.go:1] "quoted" and then prose', {"message": '"quoted" and then prose'}),
    ("I0102 15:04:05.000000 1 a.go:1] caf\ufffd", {"message": "caf\ufffd"}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), KLOG)
def test_klog_tricky_lines(line: str, expected: dict[str, Any]) -> None:
    subset(parse("klog", line), expected)


def test_klog_time_has_no_zone() -> None:
    rec = parse("klog", "I0702 15:04:05.123456 1 a.go:1] x", tz="+02:00")
    year = YEAR if time.gmtime().tm_mon >= 6 else YEAR - 1
    assert rec["time"] == f"{year}-07-02T13:04:05.123456Z"


@pytest.mark.parametrize("line", ["", "X0102 15:04:05.0 1 a.go:1] x", "I0102 15:04:05.0 a.go:1] x"])
def test_klog_rejects(line: str) -> None:
    assert parse("klog", line) is None


JSON = [
    ('{"ts":1700000000.5,"level":50,"msg":"boom","reqId":3,"source":"db"}',
     {"time": "2023-11-14T22:13:20.5Z", "level": "error", "message": "boom", "req_id": 3,
      "field_source": "db"}),
    # Elastic Common Schema-ish, nested kept, escaped quotes, unicode
    ('{"@timestamp":"2024-01-02T03:04:05.678+01:00","log.level":"WARN","message":"say \\"hi\\" é",'
     '"http":{"status":404},"client.ip":"::1"}',
     {"time": "2024-01-02T02:04:05.678Z", "message": 'say "hi" é', "http": {"status": 404},
      "client_ip": "::1", "log_level": "WARN"}),
    # python-json-logger style, time without zone -> --timezone; epoch ms
    ('{"asctime":"2024-01-02 03:04:05,123","levelname":"ERROR","message":"x"}',
     {"time": "2024-01-02T03:04:05.123Z", "level": "error"}),
    ('{"time":1700000000123,"severity":"notice","msg":"n"}',
     {"time": "2023-11-14T22:13:20.123Z", "level": "info"}),
    ('{"msg":"no time","level":"-"}', {"time": None, "level": "info", "field_level": "-"}),
    ('  {"msg":"leading space"}', {"message": "leading space"}),
    ('{"message":{"nested":true}}', {"message": '{"nested": true}'}),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), JSON)
def test_json_tricky_lines(line: str, expected: dict[str, Any]) -> None:
    subset(parse("json", line), expected)


@pytest.mark.parametrize("line", ["", "[1,2]", '"str"', "{broken", "plain text", "42"])
def test_json_rejects(line: str) -> None:
    assert parse("json", line) is None


def test_regex_named_groups() -> None:
    fmt = r"regex:^(?<time>\S+ \S+) \[(?P<level>\w+)\] (?P<userId>\d+)? ?(?P<message>.*)$"
    rec = parse(fmt, '2024-01-02 03:04:05 [WARN] 42 disk "almost" full', tz="-05:00")
    subset(rec, {"time": "2024-01-02T08:04:05Z", "level": "warning", "user_id": 42,
                 "message": 'disk "almost" full'})  # fmt: skip
    rec = parse(fmt, "2024-01-02 03:04:05 [INFO] ok")
    subset(rec, {"user_id": None, "message": "ok"})
    assert parse(fmt, "nope") is None


def test_regex_time_format_and_no_message_group() -> None:
    rec = parse(
        r"regex:^(?P<time>\d+/\d+/\d+ \d+:\d+:\d+) (?P<code>\d+)",
        "02/01/2024 03:04:05 200 rest",
        time_format="%d/%m/%Y %H:%M:%S",
    )
    subset(rec, {"time": "2024-01-02T03:04:05Z", "code": 200,
                 "message": "02/01/2024 03:04:05 200 rest"})  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("nope", "unknown format"),
        ("regex", "needs an argument"),
        ("regex:(unclosed", r"missing \)"),
        ("regex:no groups", "no named group"),
        ("nginx:x", "takes no argument"),
    ],
)
def test_create_errors(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        create(spec, Clock())


def test_registry_has_every_format() -> None:
    assert {"nginx", "apache-combined", "apache-common", "logfmt", "syslog", "klog", "json",
            "regex"} <= set(REGISTRY)  # fmt: skip


def test_converter_errors_multiline_truncation() -> None:
    conv = Converter(create("nginx", Clock()), "nginx")
    ok = '::1 - - [26/Nov/2026:06:40:01 +0000] "GET / HTTP/1.1" 200 1 "-" "-"'
    batch = conv.convert([ok, "garbage", ok + "\r"], "/l/a.log", 1_700_000_000_000_000_000)
    recs = batch.records()
    assert [r.get("parse_error", False) for r in recs] == [False, True, False]
    assert recs[1] == {"time": "2023-11-14T22:13:20.000000000Z", "level": "info",
                       "message": "garbage", "source": "/l/a.log", "parse_error": True}  # fmt: skip
    assert (conv.records, conv.parse_errors) == (3, 1)
    batch = conv.convert([ok, ok], "/l/a.log", 0, frozenset({1}))
    assert [r.get("truncated") for r in batch.records()] == [None, True]

    py = Converter(create(r"regex:^(?P<time>\S+) (?P<level>\w+) (?P<message>.*)", Clock()), "regex")
    trace = '2024-01-02T03:04:05Z ERROR boom\nTraceback (most recent call last):\n  File "x"'
    rec = py.convert([trace], "stdin", 0).records()[0]
    assert rec["message"] == 'boom\nTraceback (most recent call last):\n  File "x"'
    assert rec["level"] == "error"

    js = Converter(create("json", Clock()), "json")
    rec = js.convert(['{\n  "msg": "pretty",\n  "n": 1\n}'], "stdin", 0).records()[0]
    assert (rec["message"], rec["n"]) == ("pretty", 1)


LONG = "v" * 200_000


@pytest.mark.parametrize(
    ("fmt", "line", "field", "ip_key"),
    [
        ("syslog", f"<14>1 2024-01-01T00:00:00Z ::1 app - - - {LONG}", "message", "hostname"),
        ("syslog", f"<14>Jan  1 00:00:00 2001:db8::1 app[1]: {LONG}", "message", "hostname"),
        (
            "klog",
            f'I0101 00:00:00.000000 1 a.go:1] "long" podIP="fd00::7" blob="{LONG}"',
            "blob",
            "pod_ip",
        ),
        ("json", f'{{"msg":"{LONG}","client":"2001:db8::1"}}', "message", "client"),
        ("logfmt", f"msg={LONG} client=::1", "message", "client"),
        ("regex:^(?P<client>\\S+) (?P<message>.*)", f"2001:db8::1 {LONG}", "message", "client"),
        (
            "apache-common",
            f'::1 - - [01/Jan/2024:00:00:00 +0000] "GET /{LONG} HTTP/1.0" 200 -',
            "path",
            "remote_addr",
        ),
    ],
)
def test_very_long_lines_and_ipv6_in_every_format(
    fmt: str, line: str, field: str, ip_key: str
) -> None:
    rec = parse(fmt, line)
    assert rec is not None
    assert LONG in rec[field]
    assert ":" in rec[ip_key]


@pytest.mark.parametrize(
    ("fmt", "line", "expected"),
    [
        # `-` means "no value" in syslog's NILVALUE and access logs, a plain value elsewhere
        ("syslog", "<14>1 - - - - - -", {"time": None, "message": "", "app_name": None}),
        ("klog", 'I0101 00:00:00.000000 1 a.go:1] "x" user="-"', {"user": "-"}),
        ("json", '{"msg":"-","user":"-"}', {"message": "-", "user": "-"}),
        ("regex:^(?P<user>\\S+) (?P<message>.*)", "- hello", {"user": "-", "message": "hello"}),
        # quotes and escaped quotes inside fields
        ("json", r'{"msg":"say \"hi\"","q":"\\\""}', {"message": 'say "hi"', "q": '\\"'}),
        ('regex:^(?P<message>".*")$', '"quoted \\" inside"', {"message": '"quoted \\" inside"'}),
        # timestamps with and without zones
        ("json", '{"time":"2024-01-02T03:04:05","msg":"x"}', {"time": "2024-01-02T03:04:05Z"}),
        (
            "json",
            '{"time":"2024-01-02T03:04:05-01:00","msg":"x"}',
            {"time": "2024-01-02T04:04:05Z"},
        ),
        (
            "regex:^(?P<time>\\S+) (?P<message>.*)",
            "2024-01-02T03:04:05.5+00:00 x",
            {"time": "2024-01-02T03:04:05.5Z"},
        ),
        # non-UTF-8 input arrives as U+FFFD (the reader's rule) and parses on
        ("json", '{"msg":"caf\ufffd"}', {"message": "caf\ufffd"}),
        ("regex:^(?P<message>.*)$", "caf\ufffd", {"message": "caf\ufffd"}),
    ],
)
def test_more_tricky_lines(fmt: str, line: str, expected: dict[str, Any]) -> None:
    subset(parse(fmt, line), expected)


def test_output_is_strict_json_in_valid_utf8() -> None:
    """What the app's JSON may hold but strict JSON and UTF-8 may not: NaN, Infinity,
    1e999 (a float overflowing to inf), lone surrogate escapes, years past 9999."""
    import json

    conv = Converter(create("json", Clock()), "json")
    lines = [
        '{"msg":"a\\ud800b","n":1e999,"x":NaN,"y":[-Infinity]}',
        '{"msg":"pair \\ud83d\\ude00 ok"}',
        '{"time":"9999-12-31T23:59:59-01:00","msg":"late"}',
    ]
    body = conv.convert(lines, "stdin", 0).ndjson()
    text = body.decode("utf-8")  # strict: raises on the bytes surrogatepass would write

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the output")

    recs = [json.loads(line, parse_constant=no_constants) for line in text.splitlines()]
    assert recs[0]["message"] == "a\ud800b"  # the escape is written back, value intact
    assert (recs[0]["n"], recs[0]["x"], recs[0]["y"]) == ("1e999", "NaN", ["-Infinity"])
    assert recs[1]["message"] == "pair \U0001f600 ok"
    assert recs[2]["time"].startswith("1970-") and recs[2]["field_time"].startswith("9999-")
    assert conv.parse_errors == 0


def test_nginx_error_log_context_is_linear_on_hostile_lines() -> None:
    """The request in nginx's error log is the client's own text. Lines crafted to
    make a backtracking regex try every split (seconds for 7 KB before) parse at
    once, lose nothing (an unparseable context stays in the message), and a
    request that quotes the context's own markers is still split right."""
    import time

    head = "2024/05/01 10:00:00 [error] 12#12: *3 "
    hostile = [
        head + ', client: 1, server: a, request: "x' * 7000,
        head + 'm, client: 1, server: a, request: "' + '", upstream: "", host: "' * 3000 + "x",
    ]
    for line in hostile:
        t = time.perf_counter()
        rec = parse("nginx", line)
        assert time.perf_counter() - t < 1.0  # generous: it takes about a millisecond
        assert rec is not None and rec["message"] == line[len(head) :]
    line = (
        head + "upstream timed out (110: Connection timed out), client: 10.0.0.1, server: "
        'example.com, request: "GET /a?x=", host: "y HTTP/1.1", upstream: '
        '"http://127.0.0.1:8080/a", host: "example.com", referrer: "https://r/"'
    )
    rec = parse("nginx", line)
    assert rec is not None
    assert list(rec)[-6:] == ["client", "server", "request", "upstream", "host", "referrer"]
    assert rec["request"] == 'GET /a?x=", host: "y HTTP/1.1'  # nginx does not escape it
    assert rec["message"] == "upstream timed out (110: Connection timed out)"
    assert (rec["host"], rec["referrer"]) == ("example.com", "https://r/")
