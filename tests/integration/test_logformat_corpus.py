"""Corpus tests: lines written here by real rsyslog, nginx and Apache, each checked
against an oracle the same daemon writes in JSON or one field per column.

- rsyslog: the same messages in its file formats and as `%jsonmesg%` (its own
  parse: programname, procid, hostname, msg, timereported, severity).
- nginx: `combined` next to a `log_format ... escape=json` of the same variables.
- Apache httpd (Debian's apache2): `combined` next to a tab-separated LogFormat
  of the same directives, and its 2.4 error log for the same requests.
"""
# ruff: noqa: E501  (real log lines read best unwrapped)

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from podkit.logparse.parsers.access import unescape
from tests.helpers import free_port, need, wait_port, wait_until
from tests.peers.nginx import start_nginx


def logformat(fmt: str, data: bytes, *extra: str) -> list[dict[str, Any]]:
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "logformat", "--stdin", "--admin-addr", "off",
         "--format", fmt, *extra],
        input=data, capture_output=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode()
    return [json.loads(line) for line in res.stdout.decode().splitlines()]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def raw_request(port: int, data: bytes, host: str = "127.0.0.1") -> None:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass


# -- rsyslog --------------------------------------------------------------------

RSYSLOG_MESSAGES = [
    # RFC 5424 section 6.5 example 3, with SD
    '<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry...',
    # RFC 5424 MSG with leading spaces
    "<14>1 2024-05-06T07:08:09.123456+02:00 web01 api 4242 REQ -   indented message",
    # RFC 3164 section 5.4 example 1
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    # macOS launchd and sandboxd: name[pid] and a space, the colon later
    "<13>Oct 30 10:00:00 mbp launchd[1] (com.apple.xpc.launchd.domain.pid.mdmclient.1234): Service exited with abnormal code: 1",
    "<13>Oct 30 10:00:01 mbp sandboxd[129] ([31211]): mdworker(31211) deny file-read-data /Users",
    # a tag without colon (VRL's parse_syslog test `non_structured_data_in_message`)
    "<131>Jun  8 11:54:08 master apache_error [Tue Jun 08 11:54:08.929301 2021] [php7:emerg] [pid 1374899] rest of message",
    # a non-numeric pid, and a kernel line
    "<14>Nov  2 03:04:05 host worker[main-1]: job done",
    "<6>Nov  2 03:04:05 host kernel: [  1.234567] usb 1-1: new high-speed USB device",
]
_TEMPLATES = {
    "rfc5424": "RSYSLOG_SyslogProtocol23Format",
    "traditional": "RSYSLOG_TraditionalFileFormat",
    "file": "RSYSLOG_FileFormat",
    "json": "oracle",
}


def run_rsyslog(tmp: Path, messages: list[str]) -> dict[str, bytes]:
    binary = need("rsyslogd", "/usr/sbin")
    root = tmp / "rsyslog"
    (root / "work").mkdir(parents=True)
    port = free_port("127.0.0.1", socket.SOCK_DGRAM)
    files = {name: root / f"{name}.log" for name in _TEMPLATES}
    actions = "\n".join(
        f'  action(type="omfile" file="{files[n]}" template="{t}")' for n, t in _TEMPLATES.items()
    )
    (root / "rsyslog.conf").write_text(
        f"""
global(workDirectory="{root / "work"}" maxMessageSize="64k")
module(load="imudp")
template(name="oracle" type="string" string="%jsonmesg%\\n")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="r")
ruleset(name="r") {{
{actions}
}}
"""
    )
    proc = subprocess.Popen(
        [binary, "-n", "-f", str(root / "rsyslog.conf"), "-i", str(root / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        marker = "<14>Nov  2 03:04:05 host probe: ready"

        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(marker.encode(), ("127.0.0.1", port))
            return files["json"].exists() and b"probe" in files["json"].read_bytes()

        wait_until(ready, 15, 0.1, what="rsyslog writing")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for m in messages:
                s.sendto(m.encode(), ("127.0.0.1", port))
        n = len(messages)

        def written() -> bool:
            return all(
                sum(b"probe" not in x for x in f.read_bytes().splitlines()) >= n
                for f in files.values()
            )

        wait_until(written, 15, 0.05, what="every message in every rsyslog file")
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        name: b"\n".join(x for x in f.read_bytes().splitlines() if b"probe" not in x) + b"\n"
        for name, f in files.items()
    }


def test_rsyslog_files_against_its_jsonmesg(tmp_path: Path) -> None:
    out = run_rsyslog(tmp_path, RSYSLOG_MESSAGES)
    oracle = [json.loads(x) for x in out["json"].decode().splitlines()]
    assert len(oracle) == len(RSYSLOG_MESSAGES)
    parsed = {name: logformat("syslog", out[name]) for name in ("rfc5424", "traditional", "file")}
    for name, recs in parsed.items():
        assert len(recs) == len(oracle), (name, recs)
        for rec, o in zip(recs, oracle, strict=True):
            where = (name, o["rawmsg"], rec)
            assert not rec.get("parse_error"), where
            # rsyslog's own reading of app name, pid and host
            app = o["app-name"] if name == "rfc5424" else o["programname"]
            assert rec.get("app_name") == (app if app not in ("", "-") else None), where
            pid = o["procid"]
            expected_pid = None if pid in ("", "-") else int(pid) if pid.isdigit() else pid
            assert rec.get("proc_id") == expected_pid, where
            assert rec.get("hostname") == o["hostname"], where
            # the message: as %msg% for RFC 5424 (leading spaces included); the
            # BSD layouts write the tag's one separating space, which is not text
            msg = o["msg"]
            if name != "rfc5424":
                msg = msg[1:] if msg.startswith(" ") else msg
            assert rec["message"] == msg, where
            reported = epoch(o["timereported"])
            if name == "traditional":  # the sender's wall clock, no year, no zone: as written
                assert rec["time"][5:19] == o["timereported"][5:19], where
            else:
                assert abs(epoch(rec["time"]) - reported) < 1e-6, where
            if name == "rfc5424":
                assert rec["severity"] == int(o["syslogseverity"]), where
        # the structured data element, as rsyslog passed it on
        assert parsed["rfc5424"][0]["structured_data"] == {
            "exampleSDID@32473": {"iut": 3, "eventSource": "Application", "eventID": 1011}
        }


# -- nginx ------------------------------------------------------------------------

NGINX_ORACLE = (
    'log_format oracle escape=json \'{"remote_addr":"$remote_addr","remote_user":"$remote_user",'
    '"time_local":"$time_local","request":"$request","status":"$status",'
    '"body_bytes_sent":"$body_bytes_sent","http_referer":"$http_referer",'
    '"http_user_agent":"$http_user_agent"}\';'
)


def test_nginx_combined_against_its_escape_json_log(tmp_path: Path) -> None:
    oracle_log = tmp_path / "oracle.log"
    srv = start_nginx(tmp_path, http_extra=f"{NGINX_ORACLE}\n    access_log {oracle_log} oracle;")
    try:
        requests = [
            b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b'GET /q?a="b"&c=\\d HTTP/1.1\r\nHost: x\r\nUser-Agent: ua "quoted" \\ slash\r\nReferer: https://r/"x"\r\nConnection: close\r\n\r\n',
            "GET /caf\u00e9 HTTP/1.1\r\nHost: x\r\nUser-Agent: na\u00efve\r\nConnection: close\r\n\r\n".encode(),
            b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nUser-Agent: \x01ctl\r\nConnection: close\r\n\r\n",
            b"GET /private HTTP/1.0\r\nAuthorization: Basic YWxpY2U6cHc=\r\n\r\n",  # alice:pw
            b"HEAD /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"\x16\x03\x01\x00\xf1\x01\x00\x00\xed\x03\x03",  # TLS sent to plain HTTP
        ]
        for r in requests:
            raw_request(srv.port, r)
        raw_request(srv.port, b"GET /v6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "::1")
        n = len(requests) + 1
        wait_until(lambda: len(oracle_log.read_bytes().splitlines()) >= n if oracle_log.exists() else False,
                   10, 0.05, what="nginx oracle lines")  # fmt: skip
        wait_until(lambda: len(srv.access_log.read_bytes().splitlines()) >= n, 10, 0.05)
    finally:
        srv.stop()
    # escape=json writes bytes that are not UTF-8 raw; logformat shows them as \xHH
    oracle = [
        {
            k: v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            for k, v in json.loads(x.decode("utf-8", "surrogateescape")).items()
        }
        for x in oracle_log.read_bytes().splitlines()
    ]
    recs = logformat("nginx", srv.access_log.read_bytes())
    assert len(recs) == len(oracle) == n
    for rec, o in zip(recs, oracle, strict=True):
        where = (o, rec)
        assert not rec.get("parse_error"), where
        assert rec["remote_addr"] == o["remote_addr"], where
        assert rec.get("remote_user", "") == o["remote_user"], where
        assert rec["message"] == o["request"], where
        assert rec["status"] == int(o["status"]), where
        assert rec["body_bytes_sent"] == int(o["body_bytes_sent"]), where
        assert rec.get("http_referer", "") == o["http_referer"].replace(
            "-", "", o["http_referer"] == "-"
        ), where
        ua = o["http_user_agent"]
        assert rec.get("http_user_agent", "") == ("" if ua == "-" else ua), where
        t = datetime.strptime(o["time_local"], "%d/%b/%Y:%H:%M:%S %z").timestamp()
        assert epoch(rec["time"]) == t, where
    assert recs[4]["remote_user"] == "alice" and recs[-1]["remote_addr"] == "::1"
    assert recs[1]["path"] == '/q?a="b"&c=\\d' and recs[2]["path"] == "/caf\u00e9"


# -- Apache httpd -------------------------------------------------------------------


def test_apache_combined_and_error_log_against_its_per_field_log(tmp_path: Path) -> None:
    binary = need("apache2", "/usr/sbin")
    root = tmp_path / "apache"
    root.mkdir()
    port = free_port()
    conf = root / "httpd.conf"
    conf.write_text(
        f"""
ServerRoot {root}
Listen 127.0.0.1:{port}
PidFile {root}/httpd.pid
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
User www-data
Group www-data
ServerName localhost
DocumentRoot /var/www/html
ErrorLog {root}/error.log
LogLevel info
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{Referer}}i\\" \\"%{{User-agent}}i\\"" combined
CustomLog {root}/access.log combined
LogFormat "%h\\t%l\\t%u\\t%{{%s}}t\\t%r\\t%>s\\t%b\\t%{{Referer}}i\\t%{{User-agent}}i" fields
CustomLog {root}/fields.log fields
<Directory /var/www/html>
  Require all granted
</Directory>
<Location /denied>
  Require all denied
</Location>
"""
    )
    proc = subprocess.Popen([binary, "-f", str(conf), "-DFOREGROUND"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    requests = [
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b'GET /denied?a="b" HTTP/1.1\r\nHost: x\r\nReferer: http://x/"q"\r\nUser-Agent: ua \xc3\xa9 \\ z\r\nConnection: close\r\n\r\n',
        b"GET /index.html HTTP/1.0\r\nUser-Agent: curl/8\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    try:
        try:
            wait_port(port)
        except AssertionError:
            proc.kill()
            raise AssertionError(
                proc.stderr.read() if proc.stderr else "apache2 did not start"
            ) from None
        for r in requests:
            raw_request(port, r)
        fields = root / "fields.log"
        wait_until(lambda: fields.exists() and len(fields.read_bytes().splitlines()) >= len(requests),
                   10, 0.05, what="apache field log")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(15)
    recs = logformat("apache-combined", (root / "access.log").read_bytes())
    oracle = [x.decode("ascii").split("\t") for x in fields.read_bytes().splitlines()]
    assert len(recs) == len(oracle) == len(requests)
    for rec, o in zip(recs, oracle, strict=True):
        host, ident, user, secs, request, status, size, referer, agent = o
        where = (o, rec)
        assert not rec.get("parse_error"), where
        assert rec["remote_addr"] == host and rec["message"] == unescape(request), where
        assert rec.get("ident") == (None if ident == "-" else ident), where
        assert rec.get("remote_user") == (None if user == "-" else user), where
        assert rec["status"] == int(status), where
        assert rec.get("body_bytes_sent") == (None if size == "-" else int(size)), where
        assert rec.get("http_referer") == (None if referer == "-" else unescape(referer)), where
        assert rec.get("http_user_agent") == (None if agent == "-" else unescape(agent)), where
        assert epoch(rec["time"]) == int(secs), where
    assert recs[1]["http_user_agent"] == "ua \u00e9 \\ z" and recs[1]["path"] == '/denied?a="b"'

    # the same file through grok's %{COMBINEDAPACHELOG} (Logstash's field names,
    # captures as text) and a user pattern file
    patterns = tmp_path / "patterns"
    patterns.write_text("# mine\nAPACHEVERB GET|HEAD|POST\n")
    grok = logformat("grok:%{COMBINEDAPACHELOG}", (root / "access.log").read_bytes())
    assert len(grok) == len(oracle) and not [g for g in grok if g.get("parse_error")], grok
    for g, o in zip(grok, oracle, strict=True):
        assert g["clientip"] == o[0] and g["response"] == o[5] and epoch(g["time"]) == int(o[3])
        assert g.get("bytes", "-") == o[6]
    custom = logformat(
        "grok:^%{IPORHOST:client} \\S+ \\S+ \\[%{HTTPDATE:timestamp}\\] \"%{APACHEVERB:verb} ",
        (root / "access.log").read_bytes(), "--grok-patterns-file", str(patterns),
    )  # fmt: skip
    assert [c.get("verb") for c in custom] == ["GET", "GET", "GET", "HEAD", "GET"]

    # its 2.4 error log for the same requests
    # (its dates carry no zone: Apache writes the process's local time)
    errors = logformat("apache-error", (root / "error.log").read_bytes(), "--timezone", "local")
    assert errors and not [e for e in errors if e.get("parse_error")], errors
    by_code: dict[str, dict[str, Any]] = {}
    for e in errors:
        by_code.setdefault(e.get("error_code", ""), e)
    nope = by_code["AH00128"]
    assert (
        nope["message"] == "File does not exist: /var/www/html/nope"
        and nope["client"] == "127.0.0.1"
    )
    assert (
        nope["module"] == "core"
        and nope["level"] == "info"
        and isinstance(nope["client_port"], int)
    )
    denied = by_code["AH01630"]
    assert denied["level"] == "error" and denied["referer"] == 'http://x/"q"'
    assert denied["message"] == "client denied by server configuration: /var/www/html/denied"
    assert (
        by_code["AH00489"]["module"] == "mpm_event" and by_code["AH00489"]["log_level"] == "notice"
    )
    assert all(abs(epoch(e["time"]) - time.time()) < 300 for e in errors)
    # Apache escapes the request's non-UTF-8 byte in its error log too
    assert [e["message"] for e in errors if e.get("error_code") == "AH00128"][1].endswith("/\\xff")
