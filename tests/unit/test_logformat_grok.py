"""grok (podkit.grok and `--format grok:`) and fallback chains (`--format a,b,c`).

Expected fields restate Logstash's documented behaviour: captures are text
unless typed `:int`/`:float`, QS keeps its quotes, unmatched optional
captures are absent (logstash-patterns-core spec/patterns/*_spec.rb).
"""
# ruff: noqa: E501  (tables of real log lines read best unwrapped)

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from podkit.adapters.logformat import Converter

from podkit.grok import GrokError, base_patterns, compile_grok, load_patterns, parse_patterns
from podkit.logparse.parsers import Settings, create, split_chain
from podkit.logparse.timeparse import Clock

YEAR = time.gmtime().tm_year
# The Apache/Logstash documentation's combined-log line
COMBINED = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'


def test_core_library_has_the_base_set() -> None:
    lib = base_patterns()
    for name in ("COMBINEDAPACHELOG", "COMMONAPACHELOG", "SYSLOGLINE", "SYSLOGBASE", "TIMESTAMP_ISO8601",
                 "IP", "IPV4", "IPV6", "NUMBER", "INT", "WORD", "DATA", "GREEDYDATA", "NOTSPACE",
                 "QUOTEDSTRING", "HTTPDATE", "LOGLEVEL", "URI", "UUID", "MAC", "PATH", "HOSTNAME",
                 "HTTPD_ERRORLOG", "SYSLOG5424LINE"):  # fmt: skip
        assert name in lib
    # every pattern of the library compiles in Python's re
    for name in lib:
        compile_grok(f"%{{{name}:x}}")


def test_combined_apache_log_fields_as_logstash_writes_them() -> None:
    assert compile_grok("%{COMBINEDAPACHELOG}").match(COMBINED) == {
        "clientip": "127.0.0.1", "ident": "-", "auth": "frank",
        "timestamp": "10/Oct/2000:13:55:36 -0700", "verb": "GET", "request": "/apache_pb.gif",
        "httpversion": "1.0", "response": "200", "bytes": "2326",
        "referrer": '"http://www.example.com/start.html"', "agent": '"Mozilla/4.08 [en] (Win98; I ;Nav)"',
    }  # fmt: skip


@pytest.mark.parametrize(
    ("expression", "text", "expected"),
    [
        ("%{NUMBER:n:int} %{NUMBER:f:float} %{NUMBER:s}", "42 2.5 7", {"n": 42, "f": 2.5, "s": "7"}),
        # a typed capture that does not convert keeps its text
        ("%{NOTSPACE:n:int}", "x1", {"n": "x1"}),
        # Oniguruma named group, POSIX class, nested captures in order
        (r"(?<user>[[:alpha:]]+)@%{IPORHOST:host}", "bob@10.1.2.3", {"user": "bob", "host": "10.1.2.3"}),
        ("%{SYSLOGBASE} %{GREEDYDATA:message}", "Oct 11 22:14:15 mymachine su[42]: 'su root' failed",
         {"timestamp": "Oct 11 22:14:15", "logsource": "mymachine", "program": "su", "pid": "42",
          "message": "'su root' failed"}),
        # an optional capture that did not match is absent
        ("%{WORD:a}(?: %{INT:b})?", "word", {"a": "word"}),
        # ECS-style nested names are kept as written
        ("%{IP:[source][ip]}", "::1", {"[source][ip]": "::1"}),
        # searched, not anchored, as Logstash does
        ("%{INT:n}", "abc 12 def", {"n": "12"}),
    ],
)  # fmt: skip
def test_grok_expressions(expression: str, text: str, expected: dict[str, Any]) -> None:
    assert compile_grok(expression).match(text) == expected


def test_grok_errors_and_custom_patterns(tmp_path: Path) -> None:
    with pytest.raises(GrokError, match="no such pattern"):
        compile_grok("%{NOPE}")
    with pytest.raises(GrokError, match="refers to itself"):
        compile_grok("%{A}", {"A": "x%{B}", "B": "%{A}"})
    with pytest.raises(GrokError, match="expected `NAME regex`"):
        parse_patterns("JUSTANAME\n")
    f = tmp_path / "extra"
    f.write_text("# mine\n\nQUEUE q-[0-9]+\nJOB %{QUEUE:queue} %{WORD:state}\nIP override\n")
    pats = load_patterns(f)
    assert pats["QUEUE"] == "q-[0-9]+" and pats["IP"] == "override"
    g = compile_grok("%{JOB}", pats)
    assert g.match("job q-7 done") == {"queue": "q-7", "state": "done"}
    # the user's patterns win over the core library
    assert compile_grok("%{IP:x}", pats).match("override") == {"x": "override"}
    with pytest.raises(GrokError):
        load_patterns(tmp_path / "missing")


def parse(spec: str, line: str, settings: Settings | None = None, tz: str = "UTC") -> Any:
    from podkit.logparse.timeparse import parse_timezone

    return create(spec, Clock(parse_timezone(tz)), settings).parse(line, "src")


GROK = [
    ("grok:%{COMBINEDAPACHELOG}", COMBINED,
     {"time": "2000-10-10T20:55:36Z", "level": "info", "message": COMBINED, "clientip": "127.0.0.1",
      "auth": "frank", "response": "200", "bytes": "2326", "verb": "GET"}),
    # typed captures, level and message mapped onto the schema
    ("grok:%{TIMESTAMP_ISO8601:timestamp} %{LOGLEVEL:level} \\[%{DATA:thread}\\] %{GREEDYDATA:message} took=%{NUMBER:took_ms:float}",
     "2024-01-02T03:04:05.390+01:00 WARN [main] slow query took=12.5",
     {"time": "2024-01-02T02:04:05.390Z", "level": "warning", "message": "slow query", "thread": "main", "took_ms": 12.5}),
    # SYSLOGLINE: a year-less BSD time, placed by the reading time's year
    ("grok:%{SYSLOGLINE}", "Jan  2 03:04:05 host app[7]: hi",
     {"message": "hi", "logsource": "host", "program": "app", "pid": "7"}),
    # Apache 2.4 error log through the library's HTTPD_ERRORLOG (ctime date, no zone)
    ("grok:%{HTTPD_ERRORLOG}", "[Wed Oct 11 14:32:52.123456 2000] [core:error] [pid 35708:tid 4328636416] [client 72.15.99.187:50000] AH00037: File does not exist: /x",
     {"time": "2000-10-11T14:32:52.123456Z", "level": "error", "message": "File does not exist: /x",
      "module": "core", "pid": "35708", "clientport": "50000", "errorcode": "AH00037"}),
    # a time grok captured but cannot read: the read time stands in, the text stays
    ("grok:%{WORD:timestamp} %{GREEDYDATA:message}", "yesterday x", {"time": None, "field_timestamp": None, "timestamp": "yesterday"}),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "line", "expected"), GROK)
def test_grok_format(spec: str, line: str, expected: dict[str, Any]) -> None:
    rec = parse(spec, line)
    assert rec is not None
    for k, v in expected.items():
        if v is None and k == "time":
            assert rec["time"] is None
        elif v is None:
            assert k not in rec
        else:
            assert rec[k] == v, (k, rec)
    assert list(rec)[:4] == ["time", "level", "message", "source"]


def test_grok_syslogline_year() -> None:
    rec = parse("grok:%{SYSLOGLINE}", "Jan  2 03:04:05 host app[7]: hi")
    assert rec["time"].endswith("-01-02T03:04:05Z")


def test_grok_patterns_setting() -> None:
    s = Settings(grok_patterns={"JOB": r"job-%{INT:job:int}"})
    assert parse("grok:%{JOB} %{GREEDYDATA:message}", "job-7 ran", s)["job"] == 7


@pytest.mark.parametrize(
    "line",
    [COMBINED, COMBINED.replace("127.0.0.1", "2001:db8::1"), COMBINED.replace("frank", "-").replace("2326", "-"),
     COMBINED.replace("Mozilla", 'Moz \\"q\\" é'), "not a log line"],
)  # fmt: skip
def test_grok_fast_path_equals_dict_path(line: str) -> None:
    for spec in ("grok:%{COMBINEDAPACHELOG}", "grok:%{COMMONAPACHELOG} %{QS:referrer} %{QS:agent}",
                 "grok:^%{IPORHOST:client} %{NOTSPACE:ident} %{NOTSPACE:user} \\[%{DATA:ts_text}\\]"):  # fmt: skip
        conv = Converter(create(spec, Clock()), spec)
        fast = conv.convert([line], "s", 1).body.decode()
        slow = json.dumps(conv._record(line, "s", "1970-01-01T00:00:00.000000001Z")[0],
                          ensure_ascii=False, separators=(",", ":")) + "\n"  # fmt: skip
        assert json.loads(fast) == json.loads(slow)
        assert fast == slow


# -- fallback chains -------------------------------------------------------------


def test_split_chain() -> None:
    assert split_chain("nginx,json,logfmt") == ["nginx", "json", "logfmt"]
    assert split_chain("json,grok:%{INT:a},%{INT:b}") == ["json", "grok:%{INT:a},%{INT:b}"]
    assert split_chain("regex:(?P<a>x{1,2})") == ["regex:(?P<a>x{1,2})"]
    assert split_chain("nginx,") == ["nginx", ""]


def test_chain_says_which_format_matched() -> None:
    spec = "nginx,json,logfmt"
    conv = Converter(create(spec, Clock()), spec)
    lines = [
        '10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "ua"',
        '{"msg":"from json","format":"app-own","n":1}',
        "level=warn msg=kv n=2",
        "plain prose",
        r'10.0.0.1 - - [01/Jan/2024:00:00:00 +0000] "GET /\x22 HTTP/1.1" 200 1 "-" "ua"',
    ]
    recs = [json.loads(x) for x in conv.convert(lines, "s", 1).body.decode().splitlines()]
    assert [r.get("format") for r in recs] == ["nginx", "json", "logfmt", None, "nginx"]
    assert recs[0]["status"] == 200 and recs[0]["time"] == "2024-01-01T00:00:00Z"
    assert recs[1]["message"] == "from json" and recs[1]["field_format"] == "app-own"
    assert recs[2]["level"] == "warning" and recs[2]["n"] == 2
    assert recs[3]["parse_error"] is True and recs[3]["message"] == "plain prose"
    assert recs[4]["path"] == '/"'
    assert conv.parse_errors == 1


def test_chain_keeps_pretty_json_whole() -> None:
    spec = "logfmt,json"
    conv = Converter(create(spec, Clock()), spec)
    (rec,) = [
        json.loads(x)
        for x in conv.convert(['{\n "msg": "multi",\n "a": 1\n}'], "s", 1)
        .body.decode()
        .splitlines()
    ]
    assert rec["format"] == "json" and rec["a"] == 1
