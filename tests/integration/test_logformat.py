"""logformat against logs written by the real programs: nginx, rsyslog, Python, Java."""
# ruff: noqa: E501  (real log lines and patterns read best unwrapped)

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers import ProgramProcess, http, run_program, wait_until
from tests.peers.nginx import start_nginx
from tests.peers.prometheus import promtool_check
from tests.peers.rsyslog import Rsyslog


def out_records(path: Path) -> list[dict[str, Any]]:
    try:
        data = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.splitlines() if line.endswith("}")]


def wait_records(path: Path, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: (recs := out_records(path)) and len(recs) >= n and recs,
        timeout,
        0.05,
        what=f"{n} records in {path}",
    )


def metric(proc: ProgramProcess, name: str) -> float:
    """`name` or `name{label="value",...}`, through podkit.testing: absent fails."""
    base, _, labels = name.partition("{")
    pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    return proc.metric(base, **pairs)


def raw_request(port: int, data: bytes, host: str = "127.0.0.1") -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((host, port))
        s.sendall(data)
        while s.recv(65536):
            pass


def test_nginx_access_and_error_logs_with_rotation_and_restart(tmp_path: Path) -> None:
    srv = start_nginx(tmp_path)
    try:
        url6 = f"http://[::1]:{srv.port}"
        assert http(srv.url + "/")[0] == 200
        assert http(url6 + "/missing", headers={"Referer": "https://example.com/a?b=1"})[0] == 404
        raw_request(
            srv.port,
            b'GET /caf\xc3\xa9/\xff?q="x" HTTP/1.1\r\nHost: t\r\nUser-Agent: say "hi" \\o/\r\n'
            b"Connection: close\r\n\r\n",
            "::1",
        )
        raw_request(srv.port, b"\x16\x03\x01\x00\x05hello\r\n\r\n")  # TLS to the plain port
        wait_until(lambda: len(srv.access_log.read_bytes().splitlines()) >= 4, 10, what="4 lines")
        out = tmp_path / "out.ndjson"
        state = tmp_path / "state"
        args = [
            "--path", str(srv.access_log), "--path", str(srv.error_log), "--format", "nginx",
            "--output", f"file://{out}", "--state-dir", str(state),
        ]  # fmt: skip
        with ProgramProcess("logformat", args, tmp=tmp_path) as p:
            p.wait_ready()
            n_error = len(srv.error_log.read_bytes().splitlines())
            recs = wait_records(out, 4 + n_error)
            access = [r for r in recs if r["source"] == str(srv.access_log)]
            errors = [r for r in recs if r["source"] == str(srv.error_log)]
            assert not [r for r in recs if r.get("parse_error")], recs
            assert [a["status"] for a in access] == [200, 404, 404, 400]
            ok, missing, odd, tls = access
            assert list(ok)[:4] == ["time", "level", "message", "source"]
            assert ok["remote_addr"] == "127.0.0.1" and ok["level"] == "info"
            assert ok["message"] == "GET / HTTP/1.1" and ok["body_bytes_sent"] > 0
            assert abs(_epoch(ok["time"]) - time.time()) < 120
            assert missing["remote_addr"] == "::1" and missing["level"] == "warning"
            assert missing["http_referer"] == "https://example.com/a?b=1"
            assert "http_user_agent" in missing and "remote_user" not in missing
            # nginx escaped the quote and the non-UTF-8 byte; é was valid UTF-8
            assert odd["path"] == '/café/\\xff?q="x"'
            assert odd["http_user_agent"] == 'say "hi" \\o/'
            assert "method" not in tls and tls["message"].startswith("\x16\x03")
            notfound = [e for e in errors if "No such file" in e["message"]]
            assert notfound and notfound[0]["level"] == "error"
            assert notfound[0]["client"] == "::1" and notfound[0]["request"].startswith("GET /miss")
            assert all(isinstance(e["pid"], int) for e in errors)
            # The counter moves after the sink's write returns, so a reader of
            # the file can be a step ahead of it: poll, with a deadline.
            wait_until(
                lambda: metric(p, 'podkit_logformat_records_total{format="nginx"}') == len(recs),
                10,
                what=f"records_total to reach {len(recs)}",
            )
            assert metric(p, "podkit_logformat_parse_errors_total") == 0
            wait_until(lambda: metric(p, "podkit_logformat_lag_bytes") == 0, 10, what="lag 0")
            promtool_check(p.get("/metrics")[2])

            # Rotation the way logrotate does it with nginx: rename, then USR1 to reopen.
            srv.access_log.rename(srv.access_log.with_name("access.log.1"))
            http(srv.url + "/before-reopen")  # still written to the renamed file
            srv.proc.send_signal(signal.SIGUSR1)
            wait_until(srv.access_log.exists, 10, what="nginx to reopen its log")
            http(srv.url + "/after-reopen")
            paths = wait_until(
                lambda: (
                    {r.get("path") for r in out_records(out)} >= {"/before-reopen", "/after-reopen"}
                ),
                20,
                what="the lines written before and after the reopen",
            )
            assert paths
            p.signal(signal.SIGTERM)
            assert p.wait(20) == 0, p.stderr()
        assert (state / "checkpoints.json").exists()
        before = len(out_records(out))

        # Restarted with the same state dir: only what nginx wrote meanwhile comes out.
        http(url6 + "/?while-down")  # 200: no error-log line of its own
        with ProgramProcess("logformat", args, tmp=tmp_path) as p:
            p.wait_ready()
            wait_records(out, before + 1)
            # A duplicate re-read from the checkpoint would come before a line
            # nginx writes now: wait for that one, then count.
            http(url6 + "/?sentinel")
            recs = wait_records(out, before + 2)
            assert len(recs) == before + 2, recs[before:]
            assert [r["path"] for r in recs[before:]] == ["/?while-down", "/?sentinel"]
            assert recs[before]["remote_addr"] == "::1"
            p.signal(signal.SIGTERM)
            assert p.wait(20) == 0
    finally:
        srv.stop()


def _epoch(rfc3339: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def test_rsyslog_files_in_both_syslog_formats(rsyslog: Rsyslog, tmp_path: Path) -> None:
    messages = [
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 "
        'iut="3" eventSource="Application" eventID="1011"] An application event log entry...',
        '<11>1 2024-05-06T07:08:09.123456+02:00 ::1 web 4242 REQ [req@1 q="say \\"hi\\""] failed "x"',
        "<34>Oct 11 22:14:15 mymachine su[42]: 'su root' failed for lonvick on /dev/pts/8",
        "<191>Nov  2 03:04:05 host app: debug text",
        "<12>Nov  2 03:04:05 host app: caf\xe9 latin-1 byte",
        "<14>Nov  2 03:04:05 host long: " + "x" * 20000,
    ]
    for m in messages:
        rsyslog.send(m.encode("latin-1") if "\xe9" in m else m.encode())
    rsyslog.wait_lines(len(messages))
    out = tmp_path / "out.ndjson"
    args = ["--format", "syslog", "--output", f"file://{out}", "--state-dir", str(tmp_path / "s")]
    for f in rsyslog.files.values():
        args += ["--path", str(f)]
    with ProgramProcess("logformat", args, tmp=tmp_path) as p:
        p.wait_ready()
        recs = wait_records(out, len(messages) * len(rsyslog.files))
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
    assert not [r for r in recs if r.get("parse_error")], [r for r in recs if r.get("parse_error")]
    by = {name: [r for r in recs if r["source"] == str(f)] for name, f in rsyslog.files.items()}
    for name, rs in by.items():
        assert len(rs) == len(messages), (name, rs)
        # RFC 5424 MSG as rsyslog wrote it: its %msg% of a BSD message keeps the
        # space after the tag's colon; the BSD layouts drop that separator.
        lead = " " if name == "rfc5424" else ""
        assert rs[5]["message"].startswith(lead + "x" * 1000)
        assert len(rs[5]["message"]) == 20000 + len(lead)
        # rsyslog writes the raw 0xE9 byte; the tailer's rule makes it U+FFFD
        assert rs[4]["message"] == lead + "caf\ufffd latin-1 byte" and rs[4]["app_name"] == "app"
        assert rs[2]["hostname"] == "mymachine"
        assert rs[2]["message"].startswith(lead + "'su root'"), (name, rs[2])
    r5 = by["rfc5424"]
    assert r5[0]["time"] == "2003-10-11T22:14:15.003Z"
    assert r5[0]["structured_data"] == {
        "exampleSDID@32473": {"iut": 3, "eventSource": "Application", "eventID": 1011}
    }
    assert r5[0]["level"] == "info" and r5[0]["facility"] == "local4" and r5[0]["msg_id"] == "ID47"
    assert r5[1]["time"] == "2024-05-06T05:08:09.123456Z" and r5[1]["hostname"] == "::1"
    assert r5[1]["structured_data"]["req@1"]["q"] == 'say "hi"' and r5[1]["level"] == "error"
    assert r5[1]["message"] == 'failed "x"' and r5[1]["proc_id"] == 4242
    assert r5[2]["level"] == "critical" and r5[2]["app_name"] == "su" and r5[2]["proc_id"] == 42
    assert r5[3]["level"] == "debug" and r5[3]["facility"] == "local7"
    assert by["forward"][2]["level"] == "critical" and by["forward"][1]["level"] == "error"
    trad = by["traditional"]
    assert trad[2]["app_name"] == "su" and trad[2]["proc_id"] == 42 and trad[2]["level"] == "info"
    assert trad[2]["time"].endswith("-10-11T22:14:15Z")
    assert by["file"][1]["time"] == "2024-05-06T05:08:09.123456Z"


PY_APP = """
import logging, sys
logging.basicConfig(stream=sys.stderr if sys.argv[1] == "-" else open(sys.argv[1], "w"),
                    level=logging.DEBUG,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app.worker")
log.info("starting job %s", 7)
try:
    {}["missing"]
except KeyError:
    log.exception("job failed: \\"quoted\\" reason")
log.warning("done")
"""
PY_FORMAT = r"regex:^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+) (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)"


def _check_python(recs: list[dict[str, Any]]) -> None:
    assert [r["level"] for r in recs] == ["info", "error", "warning"], recs
    assert not [r for r in recs if r.get("parse_error")]
    assert recs[0]["message"] == "starting job 7" and recs[0]["logger"] == "app.worker"
    trace = recs[1]["message"]
    assert trace.startswith('job failed: "quoted" reason\nTraceback (most recent call last):')
    assert trace.endswith("KeyError: 'missing'")
    assert abs(_epoch(recs[0]["time"]) - time.time()) < 120


def test_python_traceback_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(PY_APP)
    log = tmp_path / "app.log"
    env = {**os.environ, "TZ": "UTC"}
    subprocess.run([sys.executable, str(app), str(log)], check=True, env=env, timeout=30)
    common = [
        "--format", PY_FORMAT, "--multiline-start", r"^\d{4}-\d\d-\d\d ",
        "--time-format", "%Y-%m-%d %H:%M:%S,%f", "--multiline-timeout", "300ms",
    ]  # fmt: skip
    out = tmp_path / "out.ndjson"
    args = ["--path", str(log), "--output", f"file://{out}", "--state-dir", str(tmp_path / "s")]
    with ProgramProcess("logformat", args + common, tmp=tmp_path) as p:
        p.wait_ready()
        recs = wait_records(out, 3)
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
    _check_python(recs)

    # The same app piped into --stdin: joined the same way, exit 0 at end of input.
    lf = subprocess.Popen(
        [sys.executable, "-m", "podkit", "logformat", "--stdin", "--admin-addr", "off", *common],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    app_proc = subprocess.run(
        [sys.executable, str(app), "-"], stderr=subprocess.PIPE, env=env, timeout=30, check=True
    )
    stdout, stderr = lf.communicate(app_proc.stderr, timeout=30)
    assert lf.returncode == 0, stderr
    recs = [json.loads(line) for line in stdout.decode().splitlines()]
    _check_python(recs)
    assert {r["source"] for r in recs} == {"stdin"}


JAVA_APP = """
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
public class Trace {
    static void inner() { throw new IllegalStateException("inner \\"state\\""); }
    static void outer() {
        try { inner(); } catch (IllegalStateException e) { throw new RuntimeException("outer", e); }
    }
    public static void main(String[] args) {
        DateTimeFormatter f = DateTimeFormatter.ofPattern("yyyy-MM-dd HH:mm:ss.SSS");
        System.out.println(LocalDateTime.now() .format(f) + " INFO  [main] starting");
        try { outer(); } catch (RuntimeException e) {
            System.out.println(LocalDateTime.now().format(f) + " ERROR [main] request failed");
            e.printStackTrace(System.out);
        }
        System.out.println(LocalDateTime.now().format(f) + " INFO  [main] done");
    }
}
"""
# Documented sample (java.lang.Throwable#printStackTrace javadoc), used only where no JVM runs.
JAVA_SAMPLE = """2024-01-02 03:04:05.678 INFO  [main] starting
2024-01-02 03:04:05.679 ERROR [main] request failed
java.lang.RuntimeException: outer
\tat Trace.outer(Trace.java:7)
\tat Trace.main(Trace.java:12)
Caused by: java.lang.IllegalStateException: inner "state"
\tat Trace.inner(Trace.java:5)
\tat Trace.outer(Trace.java:7)
\t... 1 more
2024-01-02 03:04:05.680 INFO  [main] done
"""


def test_java_stack_trace(tmp_path: Path) -> None:
    log = tmp_path / "java.log"
    java = shutil.which("java")
    if java:  # a real JVM writes the trace (single-file source launch, JDK 11+)
        src = tmp_path / "Trace.java"
        src.write_text(JAVA_APP)
        with open(log, "wb") as f:
            # C1 only: the in-process compile of the source launcher is twice as fast.
            subprocess.run([java, "-XX:TieredStopAtLevel=1", str(src)], stdout=f, check=True, timeout=60,
                           env={**os.environ, "TZ": "UTC"})  # fmt: skip
    else:
        log.write_text(JAVA_SAMPLE)
    out = tmp_path / "out.ndjson"
    args = [
        "--path", str(log), "--output", f"file://{out}", "--state-dir", str(tmp_path / "s"),
        "--format", r"regex:^(?P<time>\S+ \S+) (?P<level>[A-Z]+) +\[(?P<thread>[^\]]+)\] (?P<message>.*)",
        "--multiline-start", r"^\d{4}-", "--multiline-timeout", "300ms",
        "--time-format", "%Y-%m-%d %H:%M:%S.%f",
    ]  # fmt: skip
    with ProgramProcess("logformat", args, tmp=tmp_path) as p:
        p.wait_ready()
        recs = wait_records(out, 3)
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
    assert [r["level"] for r in recs] == ["info", "error", "info"], recs
    trace = recs[1]["message"]
    assert trace.startswith("request failed\njava.lang.RuntimeException: outer\n\tat Trace.outer")
    assert 'Caused by: java.lang.IllegalStateException: inner "state"' in trace
    assert re.search(r"\n\t\.\.\. \d+ more$", trace) and recs[1]["thread"] == "main"


KLOG_LINES = [
    'I1025 00:15:15.525108       1 controller_utils.go:116] "Pod status updated" pod="kube-system/kubedns" status="ready"',
    'E1025 00:15:16.000001    4242 reflector.go:138] "Failed to watch" err="connection refused" resource="*v1.Pod"',
    "W1025 00:15:17.5 9 server.go:77] plain warning text",
    "this is not klog",
]


def test_stdin_klog_metrics_and_sigterm_flush(tmp_path: Path) -> None:
    port_proc = ProgramProcess(
        "logformat", ["--stdin", "--format", "klog", "--multiline-start", r"^[IWEF]\d{4} ",
                      "--multiline-timeout", "60s", "--timezone", "+01:00"], tmp=tmp_path,
    )  # fmt: skip
    proc = subprocess.Popen(
        port_proc.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=port_proc.env,
    )  # fmt: skip
    port_proc.proc = proc
    try:
        port_proc.wait_ready()
        assert proc.stdin is not None
        proc.stdin.write(("\n".join(KLOG_LINES) + "\n").encode())
        proc.stdin.flush()
        # The last record ("this is not klog" joins the W record as a continuation)
        # is held for its multiline timeout; the first two are out at once.
        wait_until(lambda: metric(port_proc, 'podkit_logformat_records_total{format="klog"}') >= 2,
                   10, what="two records")  # fmt: skip
        promtool_check(port_proc.get("/metrics")[2])
        status = json.loads(port_proc.get("/")[2])
        assert status["format"] == "klog" and status["input"] == "stdin"
        proc.send_signal(signal.SIGTERM)  # stdin still open: flush what was read, exit 0
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    recs = [json.loads(line) for line in stdout.decode().splitlines()]
    assert len(recs) == 3, recs
    assert recs[0]["message"] == "Pod status updated" and recs[0]["pod"] == "kube-system/kubedns"
    assert recs[0]["time"].endswith("-10-24T23:15:15.525108Z")
    assert recs[1]["level"] == "error" and recs[1]["err"] == "connection refused"
    assert recs[2]["level"] == "warning"
    assert recs[2]["message"] == "plain warning text\nthis is not klog"


def test_parse_errors_pass_through_and_usage_errors(tmp_path: Path) -> None:
    data = b'level=info msg="ok" n=1\nnot logfmt at all\n\xff\xfe binary\nmsg=' + b"y" * 300 + b"\n"
    res = run_program(
        "logformat",
        ["--stdin", "--format", "logfmt", "--admin-addr", "off", "--max-line-bytes", "100"],
        input=data,
    )
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.decode().splitlines()]
    assert [r.get("parse_error", False) for r in recs] == [False, True, True, False]
    assert recs[1]["message"] == "not logfmt at all"
    assert recs[2]["message"] == "\ufffd\ufffd binary"
    assert recs[3]["truncated"] is True and len(recs[3]["message"]) == 96

    bad = run_program("logformat", ["--stdin", "--format", "regex:(unclosed"])
    assert bad.returncode == 2
    assert bad.stderr.decode().count("\n") == 1 and "--format" in bad.stderr.decode()


def test_torture_rotation_garbage_and_kill9(tmp_path: Path) -> None:
    """40,000 records written while the adapter follows: rotated every 10,000,
    garbage, non-UTF-8 and over-long lines mixed in, and a SIGKILL halfway.
    Every record comes out, in order, none lost; parse errors counted exactly."""
    log = tmp_path / "app.log"
    out = tmp_path / "out.ndjson"
    args = [
        "--path", str(log), "--format", "nginx", "--output", f"file://{out}",
        "--state-dir", str(tmp_path / "state"), "--max-line-bytes", "4KiB",
    ]  # fmt: skip
    total, bad = 40_000, 0

    def line(i: int) -> bytes:
        nonlocal bad
        if i % 97 == 0:
            bad += 1
            return f'garbage line {i} "unbalanced\n'.encode()
        if i % 1001 == 0:  # cut at 4 KiB: no closing quote left, so a parse error too
            bad += 1
            return f'::1 - - [26/Nov/2026:06:40:01 +0000] "GET /seq/{i}/{"x" * 6000} HTTP/1.1" 200 1 "-" "-"\n'.encode()
        agent = b"caf\xe9\xff" if i % 13 == 0 else b"curl"
        return (
            f'2001:db8::{i % 9999:x} - - [26/Nov/2026:06:40:01 +0000] "GET /seq/{i} HTTP/1.1" 200 {i} "-" "'.encode()
            + agent
            + b'"\n'
        )

    def write(start: int, stop: int) -> None:
        with open(log, "ab") as f:
            for i in range(start, stop):
                if i and i % 10_000 == 0:  # logrotate: rename, the app reopens
                    f.close()
                    log.rename(tmp_path / f"app.log.{i // 10_000}")
                    f = open(log, "ab")
                f.write(line(i))
                if i % 2000 == 0:
                    f.flush()

    def n_out() -> int:
        return out.read_bytes().count(b"\n") if out.exists() else 0

    p = ProgramProcess("logformat", args, tmp=tmp_path).start()
    p.wait_ready()
    # The first rotation must find the file already followed (a file renamed
    # out of the glob before any tailer saw it is lost to every tailer): on a
    # loaded machine 10,000 lines and a rename take less than one discovery.
    write(0, 1)
    wait_until(lambda: n_out() >= 1, 30, 0.05, what="the adapter to follow app.log")
    write(1, 20_000)

    wait_until(lambda: n_out() > 12_000, 60, 0.1, what="half the records")
    # The file about to be rotated away while the adapter is down must be in a
    # checkpoint already (a file never checkpointed and renamed out of the glob
    # while down is lost to any tailer); on a loaded machine 2,000 lines of it
    # can be out before the next checkpoint write.
    current = os.stat(log).st_ino

    def checkpointed() -> bool:
        try:
            saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
        except (OSError, ValueError):
            return False
        return any(e.get("ino") == current and e.get("offset", 0) > 0 for e in saved["files"])

    wait_until(checkpointed, 30, 0.05, what="the current file in a checkpoint")
    p.kill()  # no checkpoint write, no flush: the restart must resume from the last one
    # One rotation while it is down: the checkpointed file is found again by inode.
    # (A second one would move a never-seen file out of the glob: lost to any tailer.)
    write(20_000, 25_000)
    p2 = ProgramProcess("logformat", args, tmp=tmp_path).start()
    try:
        p2.wait_ready()
        write(25_000, total)

        last = f"/seq/{total - 1} ".encode()
        wait_until(lambda: last in out.read_bytes()[-4096:], 90, 0.1, what="the last record")
        p2.signal(signal.SIGTERM)
        assert p2.wait(30) == 0, p2.stderr()
    finally:
        p2.stop()
    recs = out_records(out)
    got = [_seq(r) for r in recs]
    # Failures are summed up by hand: pytest's own diff of two 40,000-item
    # lists takes many minutes.
    lost = set(range(total)) - set(got)
    assert not lost, f"{len(lost)} records lost, e.g. {sorted(lost)[:10]}"
    # At least once: a restart may repeat what was written but not yet checkpointed,
    # and it repeats it in order; apart from that, order follows the files.
    first_repeat = next((k for k in range(1, len(got)) if got[k] <= got[k - 1]), len(got))
    wrong = next((k for k in range(first_repeat) if got[k] != k), None)
    assert wrong is None, f"record {wrong} came out as {got[wrong]}, not in order"
    resumed = got[first_repeat:]
    unsorted = next((k for k in range(1, len(resumed)) if resumed[k] < resumed[k - 1]), None)
    assert unsorted is None, f"after the restart, {resumed[unsorted]} came after a later one"
    assert got[-1] == total - 1, got[-1]
    assert len(got) - total < 20_000
    errors = [r for r in recs if r.get("parse_error")]
    want = {i for i in range(total) if i % 97 == 0 or i % 1001 == 0}
    seen = {_seq(r) for r in errors}
    assert seen == want, (
        f"parse errors missing {sorted(want - seen)[:10]}, extra {sorted(seen - want)[:10]}"
    )
    assert all(r.get("truncated") for r in errors if "/seq/" in r["message"])
    assert all(
        r["http_user_agent"] == "caf\ufffd\ufffd"
        for r in recs
        if _seq(r) % 13 == 0 and not r.get("parse_error")
    )


def _seq(rec: dict[str, Any]) -> int:
    m = re.search(r"(?:/seq/|garbage line )(\d+)", rec["message"])
    assert m, rec
    return int(m.group(1))


def test_output_down_unhealthy_then_resumes_from_checkpoint(tmp_path: Path) -> None:
    """An output that cannot be written: /healthz 503, nothing acknowledged, SIGTERM
    still exits 0 in time; the next start with a working output writes every line."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"ts={i} level=info msg=line{i}\n" for i in range(100)))
    blocked = tmp_path / "missing-dir" / "out.ndjson"  # the directory does not exist
    args = ["--path", str(log), "--format", "logfmt", "--state-dir", str(tmp_path / "s"),
            "--shutdown-timeout", "3s"]  # fmt: skip
    with ProgramProcess("logformat", [*args, "--output", f"file://{blocked}"], tmp=tmp_path) as p:
        p.wait_ready()
        wait_until(lambda: p.get("/healthz")[0] == 503, 10, what="/healthz 503")
        assert b"output failing" in p.get("/healthz")[2]
        # `/` says what failed, not only that something did (issue 23)
        err = json.loads(p.get("/")[2])["error"]
        assert err["reason"] == "output" and "missing-dir/out.ndjson" in err["message"], err
        assert metric(p, "podkit_logformat_lag_bytes") > 0
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0, p.stderr()  # past --shutdown-timeout the runner would exit 1
    out = tmp_path / "out.ndjson"
    with ProgramProcess("logformat", [*args, "--output", f"file://{out}"], tmp=tmp_path) as p:
        p.wait_ready()
        recs = wait_records(out, 100)
        assert [r["message"] for r in recs] == [f"line{i}" for i in range(100)]
        assert recs[5]["time"] == "1970-01-01T00:00:05Z"  # ts=5: epoch seconds
        wait_until(lambda: p.get("/healthz")[0] == 200, 10, what="/healthz 200")

    # --stdin has no checkpoint: a stuck output at SIGTERM is a failure (exit 1), in time.
    proc = subprocess.Popen(
        [sys.executable, "-m", "podkit", "logformat", "--stdin", "--format", "logfmt",
         "--admin-addr", "off", "--shutdown-timeout", "2s", "--output", f"file://{blocked}"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(b"msg=x\n")
    proc.stdin.flush()
    # SIGTERM once the line is read and its write is failing: the sink says so.
    assert proc.stderr is not None
    lines: list[bytes] = []
    failing = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if b"delivery failed" in line:
                failing.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert failing.wait(20), b"".join(lines)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 1, b"".join(lines)
    proc.stdin.close()
    reader.join(10)
    assert b"lines read from stdin were lost" in b"".join(lines)


def test_closed_stdout_stops_with_exit_1(tmp_path: Path) -> None:
    """`logformat ... | head -1`: EPIPE is permanent. The adapter says so and exits 1
    instead of retrying until SIGTERM, from stdin and from files alike; with files
    the checkpoint stops before what could not be written."""
    lines = b"".join(b"level=info msg=m%d\n" % i for i in range(50_000))
    log = tmp_path / "app.log"
    log.write_bytes(lines)
    state = tmp_path / "state"
    modes = {
        "stdin": ["--stdin"],
        "files": ["--path", str(log), "--state-dir", str(state)],
    }
    for mode, args in modes.items():
        proc = subprocess.Popen(
            [sys.executable, "-m", "podkit", "logformat", "--format", "logfmt",
             "--admin-addr", "off", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            if mode == "stdin":
                proc.stdin.write(lines[:1000])
                proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["message"] == "m0"
            proc.stdout.close()  # what `head -1` does once it has its line
            if mode == "stdin":
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(lines)  # more input: writing it out must fail
                    proc.stdin.close()
            else:
                with open(log, "ab") as f:
                    f.write(b"level=info msg=late\n")
            proc.wait(15)  # not until SIGTERM: by itself, promptly
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == 1, (mode, err)
        assert "output closed; stopping" in err, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
    offset = json.loads((state / "checkpoints.json").read_text())["files"][0]["offset"]
    assert offset < log.stat().st_size  # the late line was not acknowledged


def test_stdin_joined_record_is_cut_at_max_line_bytes() -> None:
    """A stack trace joined from stdin obeys --max-line-bytes, as one from a file does."""
    data = b"START a\n" + b"".join(b"  at frame %d padding padding\n" % i for i in range(50))
    res = run_program(
        "logformat",
        ["--stdin", "--format", "regex:^(?P<message>START.*)", "--multiline-start", "^START",
         "--max-line-bytes", "200", "--admin-addr", "off"],
        input=data + b"START b\n",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.decode().splitlines()]
    assert [len(r["message"]) for r in recs] == [200, 7]
    assert recs[0]["truncated"] is True and "truncated" not in recs[1]


def test_glob_exclude_and_read_from_tail(tmp_path: Path) -> None:
    """--path GLOB with --exclude, and --read-from tail: what a file held before the
    adapter first saw it is skipped, what is appended afterwards comes out."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("msg=old-app\n")
    (logs / "app.debug.log").write_text("msg=old-debug\n")
    out = tmp_path / "out.ndjson"
    args = [
        "--path", str(logs / "*.log"), "--exclude", str(logs / "*.debug.log"),
        "--read-from", "tail", "--format", "logfmt", "--output", f"file://{out}",
        "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    with ProgramProcess("logformat", args, tmp=tmp_path) as p:
        p.wait_ready()
        with open(logs / "app.log", "a") as f:
            f.write("msg=new-app\n")
        with open(logs / "app.debug.log", "a") as f:
            f.write("msg=new-debug\n")
        (logs / "later.log").write_text("msg=later\n")  # appears after start: read whole
        wait_records(out, 2)
        # An excluded or skipped line, written before it, would arrive before
        # a sentinel written now: wait for the sentinel, then look.
        with open(logs / "app.log", "a") as f:
            f.write("msg=sentinel\n")
        recs = wait_records(out, 3)
        assert sorted(r["message"] for r in out_records(out)) == ["later", "new-app", "sentinel"]
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
    assert {r["source"] for r in recs} <= {str(logs / "app.log"), str(logs / "later.log")}


def test_closed_stdin_is_end_of_input() -> None:
    """Started with fd 0 closed (`<&-`): the runner puts /dev/null there, so --stdin
    sees end of input (exit 0) instead of reading the event loop's own fd, and
    uvloop does not abort (it asserts when closing an fd <= 2)."""
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "logformat", "--stdin", "--format", "syslog",
         "--admin-addr", "off"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
        preexec_fn=lambda: os.close(0),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert b"Assertion" not in res.stderr and res.stdout == b""
