"""waitfor as a real subprocess against real peers on loopback.

Servers that start slowly (PostgreSQL, MariaDB) come from session fixtures in
tests/peers/; nginx (plain and TLS) starts once for this module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    ProgramProcess,
    free_port,
    need,
    run_program,
    wait_port,
    wait_until,
)
from tests.peers.mariadb import MariaDBServer
from tests.peers.nginx import Nginx, start_nginx
from tests.peers.postgres import PostgresServer, password_of
from tests.peers.redis import RedisServer, start_redis
from tests.peers.tls import TLSFiles

NGINX_LOCATIONS = r"""
        location = /moved { return 302 /status; }
        location = /json { add_header X-Build "v1.2.3"; return 200 '{"status":"UP"}'; }
        location = /starting { return 503 "starting\n"; }
        location = /private {
            if ($http_x_token != "abc") { return 403; }
            return 200 "ok\n";
        }
"""


def records(stderr: bytes | str) -> list[dict[str, Any]]:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def by_message(recs: list[dict[str, Any]], message: str) -> list[dict[str, Any]]:
    return [r for r in recs if r.get("message") == message]


def waitfor(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return run_program("waitfor", list(args), timeout=timeout)


def ts(rec: dict[str, Any]) -> float:
    return datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    srv = start_nginx(tmp_path_factory.mktemp("nginx"), server_extra=NGINX_LOCATIONS)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tls_web(tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles) -> Iterator[Nginx]:
    port = free_port()
    listen = (
        f"listen 127.0.0.1:{port} ssl;\n"
        f"        ssl_certificate {tls_files.server_cert};\n"
        f"        ssl_certificate_key {tls_files.server_key};"
    )
    srv = start_nginx(tmp_path_factory.mktemp("nginx-tls"), port=port, listen=listen)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def redis_pw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = start_redis(tmp_path_factory.mktemp("redis-pw"), password="s3cret-redis-pass")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def redis_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = start_redis(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


class Listener:
    """A TCP listener that appears when told to, and notes when it did."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.sock: socket.socket | None = None
        self.appeared = 0.0

    def appear(self) -> None:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(64)
        self.appeared = time.time()
        self.sock = s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# -- readiness ---------------------------------------------------------------


def test_late_target_is_detected_within_one_interval() -> None:
    lst = Listener()
    max_interval = 0.4
    args = ["--interval", "100ms", "--max-interval", f"{max_interval}s", "--timeout", "30s"]
    with ProgramProcess("waitfor", [*args, f"tcp://127.0.0.1:{lst.port}"], admin=False) as p:
        p.wait_log("waiting", target=f"tcp://127.0.0.1:{lst.port}")
        time.sleep(1.5)  # long enough for the backoff to reach --max-interval
        lst.appear()
        try:
            assert p.wait(15) == 0, p.stderr()
        finally:
            lst.close()
        ready = p.wait_log("target ready")
    # One interval (its ceiling) plus generous slack for a loaded machine.
    assert ts(ready) - lst.appeared <= max_interval + 0.5, (ts(ready), lst.appeared)
    assert ready["attempts"] > 3 and ready["elapsed"] >= 1.5


def test_refused_connections_do_not_grow_the_gap() -> None:
    """Nothing listening: polling stays at --interval however high --max-interval is."""
    lst = Listener()
    args = ["--interval", "100ms", "--max-interval", "30s", "--timeout", "30s"]
    with ProgramProcess("waitfor", [*args, f"tcp://127.0.0.1:{lst.port}"], admin=False) as p:
        p.wait_log("waiting", target=f"tcp://127.0.0.1:{lst.port}")
        time.sleep(3)  # a growing backoff would have reached gaps of seconds by now
        lst.appear()
        try:
            assert p.wait(15) == 0, p.stderr()
        finally:
            lst.close()
        ready = p.wait_log("target ready")
    assert ts(ready) - lst.appeared <= 0.1 + 0.5, (ts(ready), lst.appeared)
    assert ready["attempts"] > 15


def test_mixed_targets_in_one_call(
    web: Nginx, redis_plain: RedisServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    flag.write_text("x")
    targets = [
        f"tcp://127.0.0.1:{web.port}",
        f"{web.url}/status",
        f"file://{flag}",
        redis_plain.url,
        postgres_server.url("scram_user"),
    ]
    res = waitfor("--timeout", "30s", *targets)
    recs = records(res.stderr)
    assert res.returncode == 0, res.stderr
    ready = by_message(recs, "target ready")
    assert len(ready) == 5
    assert all(r["attempts"] == 1 and r["elapsed"] < 5 for r in ready)
    summary = by_message(recs, "all targets ready")[0]
    assert summary["targets"] == 5 and summary["attempts"] == 5
    # The password is logged as ***, everywhere.
    assert password_of("scram_user") not in res.stderr.decode()
    assert f"scram_user:***@127.0.0.1:{postgres_server.port}" in res.stderr.decode()


def test_ipv6_targets(web: Nginx, postgres_server: PostgresServer, tmp_path: Path) -> None:
    redis6 = start_redis(tmp_path, bind="::1")
    try:
        res = waitfor(
            "--timeout",
            "30s",
            f"tcp://[::1]:{web.port}",
            f"http://[::1]:{web.port}/status",
            f"redis://[::1]:{redis6.port}",
            postgres_server.url("md5_user", host="::1"),
        )
    finally:
        redis6.stop()
    assert res.returncode == 0, res.stderr
    assert len(by_message(records(res.stderr), "target ready")) == 4


def test_all_postgres_auth_methods(postgres_server: PostgresServer) -> None:
    urls = [postgres_server.url(role, db="appdb") for role in postgres_server.roles]
    res = waitfor("--timeout", "30s", *urls)
    assert res.returncode == 0, res.stderr
    assert len(by_message(records(res.stderr), "target ready")) == 4


def test_postgres_failures_are_named(postgres_server: PostgresServer) -> None:
    pg = postgres_server
    res = waitfor(
        "--timeout",
        "1s",
        pg.url("scram_user", password="not-the-password"),
        pg.url("md5_user", password="not-the-password"),
        pg.url("cleartext_user", password=None),
        pg.url("scram_user", db="nosuchdb"),
        pg.url("trust_user", query="sslmode=require"),
        pg.url("ghost_role"),
    )
    assert res.returncode == 124
    errors = {r["target"]: r["last_error"] for r in by_message(records(res.stderr), "not ready")}
    assert len(errors) == 6, errors
    values = list(errors.values())
    assert values[0].startswith("wrong password") and "28P01" in values[0]
    assert values[1].startswith("wrong password")
    assert "wants a password" in values[2]
    assert values[3].startswith("no such database") and "nosuchdb" in values[3]
    assert "does not offer TLS" in values[4]
    assert values[5].startswith("no such role") and "ghost_role" in values[5]
    assert "not-the-password" not in res.stderr.decode()


def test_postgres_over_tls(tls_files: TLSFiles) -> None:
    from tests.peers.postgres import start_postgres

    pg = start_postgres(ssl_cert=tls_files.server_cert, ssl_key=tls_files.server_key)
    try:
        res = waitfor(
            "--timeout",
            "30s",
            "--ca-file",
            str(tls_files.ca),
            pg.url("scram_user", query="sslmode=verify-full"),
            pg.url("md5_user", query="sslmode=require"),
            pg.url("trust_user"),  # prefer: TLS because the server offers it
        )
        assert res.returncode == 0, res.stderr
        # Without our CA, verify-full must not accept the certificate.
        res = waitfor("--timeout", "1s", pg.url("scram_user", query="sslmode=verify-full"))
        assert res.returncode == 124
        (rec,) = by_message(records(res.stderr), "not ready")
        assert "certificate" in rec["last_error"]
    finally:
        pg.stop()


def test_postgres_in_recovery_is_not_ready_until_promoted() -> None:
    """A real standby with hot_standby off answers 57P03 until it is promoted."""
    from tests.peers.postgres import start_postgres

    pg = start_postgres(standby=True)
    try:
        with ProgramProcess("waitfor", ["--max-interval", "300ms", pg.url("postgres")]) as p:
            rec = p.wait_log("waiting")
            assert "57P03" in rec["error"] and "starting up" in rec["error"], rec
            # Asked again and again (the "waiting" line is rate-limited; the
            # counter is not), and still waiting after each answer.
            wait_until(lambda: p.metric("podkit_waitfor_attempts_total") >= 3, 10, 0.02)
            assert p.proc is not None and p.proc.poll() is None
            pg.promote()
            assert p.wait(30) == 0, p.stderr()
            assert p.wait_log("target ready")["attempts"] > 1
    finally:
        pg.stop()


def test_redis_auth_and_wrong_password(redis_pw: RedisServer) -> None:
    good = redis_pw.url
    bad = f"redis://:not-the-password@127.0.0.1:{redis_pw.port}"
    none = f"redis://127.0.0.1:{redis_pw.port}"
    res = waitfor("--timeout", "30s", good, f"{good}/3")
    assert res.returncode == 0, res.stderr
    res = waitfor("--timeout", "1s", bad, none)
    assert res.returncode == 124
    errors = [r["last_error"] for r in by_message(records(res.stderr), "not ready")]
    assert errors[0].startswith("wrong password"), errors
    assert "authentication required" in errors[1], errors
    text = res.stderr.decode()
    assert "not-the-password" not in text and "s3cret-redis-pass" not in text


SLOW_LOAD = ["--loading-process-events-interval-bytes", "1024"]


def test_rediss_with_throwaway_ca(tls_files: TLSFiles, tmp_path: Path) -> None:
    """redis-server's own TLS port, with requirepass, checked against our CA."""
    binary = need("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(tls_files.server_cert)),
            *("--tls-key-file", str(tls_files.server_key)),
            *("--tls-auth-clients", "no", "--requirepass", "tls-pass-123"),
            *("--save", "", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        url = f"rediss://:tls-pass-123@localhost:{port}"
        res = waitfor("--timeout", "30s", "--ca-file", str(tls_files.ca), url)
        assert res.returncode == 0, res.stderr
        res = waitfor("--timeout", "1s", url)
        assert res.returncode == 124
        assert "certificate" in by_message(records(res.stderr), "not ready")[0]["last_error"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_loading_dataset_is_not_ready(tmp_path: Path) -> None:
    """A real redis-server slowed down while loading its RDB answers -LOADING."""
    binary = need("redis-server")
    port = free_port()
    base = [binary, "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
    seed = subprocess.Popen(
        [*base, "--port", str(port), "--enable-debug-command", "yes"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        cli = need("redis-cli")
        subprocess.run([cli, "-p", str(port), "debug", "populate", "2000"], check=True)
        subprocess.run([cli, "-p", str(port), "save"], check=True, capture_output=True)
    finally:
        seed.terminate()
        seed.wait(10)
    # key-load-delay (µs per key) is redis' own testing knob for a slow load.
    slow = subprocess.Popen(
        [*base, "--port", str(port), "--key-load-delay", "1000", *SLOW_LOAD],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        res = waitfor("--timeout", "20s", f"redis://127.0.0.1:{port}")
    finally:
        slow.terminate()
        slow.wait(10)
    assert res.returncode == 0, res.stderr
    recs = records(res.stderr)
    waiting = [r["error"] for r in by_message(recs, "waiting")]
    assert any("LOADING" in e for e in waiting), waiting
    assert by_message(recs, "target ready")[0]["attempts"] > 1


def test_mysql_handshake(mariadb_server: MariaDBServer) -> None:
    res = waitfor(
        "--timeout",
        "30s",
        mariadb_server.url,  # root with no password: a real login
        f"mariadb://127.0.0.1:{mariadb_server.port}/app",  # no user: the greeting is enough
    )
    assert res.returncode == 0, res.stderr
    res = waitfor("--timeout", "500ms", f"mysql://127.0.0.1:{free_port()}")
    assert res.returncode == 124
    assert by_message(records(res.stderr), "not ready")[0]["last_error"] == "connection refused"


def test_mysql_not_a_mysql_server(web: Nginx) -> None:
    """nginx on the mysql port waits for a request: no handshake, so not ready."""
    res = waitfor("--timeout", "1s", "--attempt-timeout", "300ms", f"mysql://127.0.0.1:{web.port}")
    assert res.returncode == 124
    assert "no answer within 300ms" in by_message(records(res.stderr), "not ready")[0]["last_error"]


def test_postgres_probe_against_a_web_server(web: Nginx) -> None:
    res = waitfor("--timeout", "1s", f"postgres://u@127.0.0.1:{web.port}/db?sslmode=disable")
    assert res.returncode == 124
    err = by_message(records(res.stderr), "not ready")[0]["last_error"]
    assert "not a PostgreSQL server" in err or "closed" in err, err


# -- http --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "path", "ok", "error"),
    [
        ([], "/status", True, ""),
        ([], "/starting", False, "HTTP 503 (want 200-399)"),
        (["--http-status", "503"], "/starting", True, ""),
        (["--http-status", "200,204"], "/moved", False, "HTTP 302"),
        (["--http-status", "200", "--http-follow-redirects"], "/moved", True, ""),
        (["--http-body-regex", '"status":\\s*"UP"'], "/json", True, ""),
        (["--http-body-regex", "DOWN"], "/json", False, "body does not match"),
        (["--http-header", "X-Build=^v1\\."], "/json", True, ""),
        (["--http-header", "X-Missing"], "/json", False, "without header X-Missing"),
        (["--http-request-header", "X-Token: abc"], "/private", True, ""),
        ([], "/private", False, "HTTP 403"),
        (["--http-method", "HEAD"], "/status", True, ""),
    ],
)
def test_http_options(web: Nginx, args: list[str], path: str, ok: bool, error: str) -> None:
    res = waitfor("--timeout", "1s" if not ok else "30s", *args, f"{web.url}{path}")
    recs = records(res.stderr)
    if ok:
        assert res.returncode == 0, res.stderr
    else:
        assert res.returncode == 124, res.stderr
        assert error in by_message(recs, "not ready")[0]["last_error"]


def test_https_with_throwaway_ca(tls_web: Nginx, tls_files: TLSFiles) -> None:
    url = f"https://localhost:{tls_web.port}/status"
    res = waitfor("--timeout", "30s", "--ca-file", str(tls_files.ca), url)
    assert res.returncode == 0, res.stderr
    res = waitfor("--timeout", "1s", url)
    assert res.returncode == 124
    assert (
        "certificate not trusted" in by_message(records(res.stderr), "not ready")[0]["last_error"]
    )
    res = waitfor("--timeout", "30s", "--insecure", url)
    assert res.returncode == 0, res.stderr


# -- other schemes -----------------------------------------------------------


def test_file_nonempty_unix_and_dns(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text("")
    sock_path = tmp_path / "app.sock"
    with ProgramProcess(
        "waitfor",
        [
            "--max-interval",
            "200ms",
            "--timeout",
            "30s",
            f"file://{data}?nonempty=1",
            f"unix://{sock_path}",
            "dns://localhost?type=A",
        ],
        admin=False,
    ) as p:
        p.wait_log("target ready", target="dns://localhost?type=A")
        p.wait_log("waiting", error="file is empty")
        p.wait_log("waiting", error="no such file or directory")
        data.write_text("hello")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(str(sock_path))
        srv.listen(4)
        try:
            assert p.wait(15) == 0, p.stderr()
        finally:
            srv.close()


def test_dns_name_that_does_not_resolve() -> None:
    res = waitfor("--timeout", "1s", "dns://no-such-host.invalid")
    assert res.returncode == 124
    assert "cannot resolve" in by_message(records(res.stderr), "not ready")[0]["last_error"]


# -- modes, timeout, command, signals ----------------------------------------


def test_timeout_reports_each_unready_target(web: Nginx) -> None:
    closed = free_port()
    res = waitfor("--timeout", "700ms", f"tcp://127.0.0.1:{web.port}", f"tcp://127.0.0.1:{closed}")
    assert res.returncode == 124
    recs = records(res.stderr)
    (unready,) = by_message(recs, "not ready")
    assert unready["target"] == f"tcp://127.0.0.1:{closed}"
    assert unready["last_error"] == "connection refused" and unready["attempts"] >= 2
    assert unready["level"] == "error"
    # The same error again is not news: one "waiting" line, not one per attempt.
    waiting = [r for r in by_message(recs, "waiting") if r["target"] == unready["target"]]
    assert len(waiting) == 1
    (summary,) = by_message(recs, "timed out")
    assert (summary["ready"], summary["targets"], summary["timeout"]) == (1, 2, "700ms")


def test_command_runs_after_ready_with_its_own_exit_code(web: Nginx, tmp_path: Path) -> None:
    res = waitfor(f"tcp://127.0.0.1:{web.port}", "--", sh(), "-c", "echo from-app; exit 7")
    assert res.returncode == 7, res.stderr
    assert res.stdout == b"from-app\n"
    # On timeout the command is not run.
    marker = tmp_path / "ran"
    res = waitfor(
        "--timeout", "300ms", f"tcp://127.0.0.1:{free_port()}", "--", "touch", str(marker)
    )
    assert res.returncode == 124 and not marker.exists()
    res = waitfor(f"tcp://127.0.0.1:{web.port}", "--", str(tmp_path / "no-such-app"))
    assert res.returncode == 127
    assert by_message(records(res.stderr), "command not found")


def test_targets_and_settings_from_a_config_file(web: Nginx, tmp_path: Path) -> None:
    cfg = tmp_path / "waitfor.yaml"
    cfg.write_text(
        f"targets:\n  - tcp://127.0.0.1:{web.port}\n  - {web.url}/json\n"
        "timeout: 20s\nhttp-header: ['X-Build=^v1']\n"
    )
    res = waitfor("--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert len(by_message(records(res.stderr), "target ready")) == 2


def test_command_exec_keeps_the_pid(web: Nginx, tmp_path: Path) -> None:
    out = tmp_path / "pid"
    with ProgramProcess(
        "waitfor",
        [f"tcp://127.0.0.1:{web.port}", "--", sh(), "-c", f"echo $$ > {out}"],
        admin=False,
    ) as p:
        assert p.wait(30) == 0
        assert int(out.read_text()) == p.pid


def sh() -> str:
    return "/bin/sh"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_while_waiting_exits_fast(sig: int, code: int) -> None:
    with ProgramProcess("waitfor", [f"tcp://127.0.0.1:{free_port()}"], admin=False) as p:
        p.wait_log("waiting")  # between attempts now: the signal must cut the wait
        t0 = time.monotonic()
        p.signal(sig)
        rc = p.wait(10)
        took = time.monotonic() - t0
    assert rc == code
    assert took < 0.5, f"exit took {took:.3f}s after {signal.Signals(sig).name}"


def test_sigterm_while_the_admin_server_starts_still_exits_143() -> None:
    """A signal before run() began (here: while the admin server starts)
    must still stop the init task; it once ran on until the shutdown deadline."""
    args = ["--shutdown-timeout", "8s", "--admin-addr", "127.0.0.1:0"]
    with ProgramProcess("waitfor", [*args, f"tcp://127.0.0.1:{free_port()}"], admin=False) as p:
        p.wait_log("starting")  # logged before the admin server starts
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        rc = p.wait(15)
        took = time.monotonic() - t0
    assert rc == 143, p.stderr()
    assert took < 5, f"exit took {took:.3f}s"
    assert not by_message(p.records(), "shutdown deadline exceeded; exiting")


def test_any_and_invert(web: Nginx, tmp_path: Path) -> None:
    res = waitfor(
        "--any", "--timeout", "10s", f"tcp://127.0.0.1:{free_port()}", web.url + "/status"
    )
    assert res.returncode == 0, res.stderr
    assert by_message(records(res.stderr), "all targets ready")[0]["mode"] == "any"
    lst = Listener()
    lst.appear()
    gone = tmp_path / "lock"
    gone.write_text("")
    with ProgramProcess(
        "waitfor",
        ["--invert", "--max-interval", "200ms", f"tcp://127.0.0.1:{lst.port}", f"file://{gone}"],
        admin=False,
    ) as p:
        p.wait_log("waiting", error="still answers")
        lst.close()
        gone.unlink()
        assert p.wait(15) == 0, p.stderr()
        assert len(by_message(p.records(), "target gone")) == 2


def test_metrics_with_admin_addr(promtool: Any) -> None:
    port = free_port()
    with ProgramProcess("waitfor", [f"tcp://127.0.0.1:{port}", "--timeout", "30s"]) as p:
        p.wait_log("waiting")
        status, _, body = p.get("/metrics")
        assert status == 200
        text = body.decode()
        label = f'target="tcp://127.0.0.1:{port}"'
        assert f"podkit_waitfor_target_ready{{{label}}} 0.0" in text
        assert f"podkit_waitfor_attempts_total{{{label}}}" in text
        promtool(body)
        status, _, body = p.get("/")
        assert json.loads(body)["targets"][0]["last_error"] == "connection refused"
        assert p.get("/readyz")[0] == 503


def test_no_admin_server_by_default() -> None:
    target = f"tcp://127.0.0.1:{free_port()}"
    with (
        ProgramProcess("waitfor", [target], admin=False) as quiet,
        ProgramProcess("waitfor", [target]) as served,
    ):
        quiet.wait_log("waiting")
        served.wait_log("waiting")
        conns = subprocess.run([need("ss"), "-ltnp"], capture_output=True, text=True).stdout
        assert f"pid={served.pid}," in conns  # the check can see a listener when there is one
        assert f"pid={quiet.pid}," not in conns


# -- usage errors: exit 2 before any waiting ---------------------------------


BAD_TARGETS = [
    ("foo://x:1", "unknown scheme 'foo'"),
    ("db:5432", "not a URL"),
    ("tcp://db", "missing port"),
    ("tcp://:5432", "missing host"),
    ("tcp://db:0", "out of range"),
    ("tcp://db:99999", "invalid port"),
    ("tcp://db:port", "invalid port"),
    ("tcp://[::1:80", "malformed URL"),
    ("tcp://::1:80", "IPv6 addresses go in brackets"),
    ("tcp://db:1/path", "unexpected path"),
    ("tcp://db:1?x=1", "unknown query parameter"),
    ("file://relative/x", "three slashes"),
    ("unix://sock", "three slashes"),
    ("file:///x?nonempty=maybe", "not a boolean"),
    ("dns://db?type=MX", "type must be one of A, AAAA, CNAME, SRV, TXT"),
    ("dns://db:53", "takes no port"),
    ("redis://h:6379/zero", "database must be a number"),
    ("postgres://h:5432/db", "missing user"),
    ("postgres://u@h:5432/db?sslmode=sometimes", "sslmode must be"),
    ("http://", "missing host"),
]


def test_every_malformed_target_exits_2_before_waiting() -> None:
    lst = Listener()
    lst.appear()
    assert lst.sock is not None
    lst.sock.settimeout(0.5)
    try:
        res = waitfor(f"tcp://127.0.0.1:{lst.port}", *[t for t, _ in BAD_TARGETS])
        with pytest.raises(OSError):
            lst.sock.accept()  # the valid target was never tried
    finally:
        lst.close()
    assert res.returncode == 2
    err = res.stderr.decode()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for target, why in BAD_TARGETS:
        assert why in err, (target, why, err)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "TARGETS is required"),
        (["--timeout", "soon", "tcp://h:1"], "--timeout"),
        (["--interval", "0", "tcp://h:1"], "--interval"),
        (["--interval", "3s", "--max-interval", "1s", "tcp://h:1"], "--max-interval"),
        (["--attempt-timeout", "0s", "tcp://h:1"], "--attempt-timeout"),
        (["--http-status", "2xx", "http://h"], "--http-status"),
        (["--http-status", "600", "http://h"], "--http-status"),
        (["--http-body-regex", "(", "http://h"], "--http-body-regex"),
        (["--http-header", "X-A=(", "http://h"], "--http-header"),
        (["--http-header", "Bad Name", "http://h"], "--http-header"),
        (["--http-request-header", "NoColon", "http://h"], "--http-request-header"),
        (["--http-method", "FETCH", "http://h"], "--http-method"),
        (["--ca-file", "/nonexistent/ca.pem", "https://h"], "--ca-file"),
        (["--invert=maybe", "tcp://h:1"], "--invert"),
        (["--bogus", "tcp://h:1"], "unrecognized arguments"),
    ],
)
def test_bad_options_exit_2(args: list[str], why: str) -> None:
    res = waitfor(*args)
    assert res.returncode == 2, res.stderr
    err = res.stderr.decode()
    assert why in err and len(err.strip().splitlines()) == 1, err


def test_password_file_is_read_per_attempt(redis_pw: RedisServer, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("wrong-one\n")
    url = f"redis://127.0.0.1:{redis_pw.port}?password_file={pw}"
    with ProgramProcess("waitfor", ["--max-interval", "200ms", url], admin=False) as p:
        p.wait_log("waiting")
        wait_until(lambda: "wrong password" in p.stderr(), 10)
        pw.write_text(f"{redis_pw.password}\n")  # the secret rotates
        assert p.wait(15) == 0, p.stderr()
    assert "wrong-one" not in p.stderr() and str(redis_pw.password) not in p.stderr()


def test_console_script_and_module_entry(web: Nginx) -> None:
    target = f"tcp://127.0.0.1:{web.port}"
    for cmd in (
        [os.path.join(os.path.dirname(sys.executable), "podkit-waitfor"), target],
        [sys.executable, "-m", "podkit.initkits.waitfor", target],
    ):
        assert subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0


def test_secrets_never_reach_the_logs(redis_pw: RedisServer) -> None:
    # Three characters is below the scrubber's minimum, so only redaction protects it.
    res = waitfor(
        "--timeout",
        "300ms",
        f"redis://:q9z@127.0.0.1:{redis_pw.port}",
        f"http://u:q9z@127.0.0.1:{free_port()}/",
        "--http-request-header",
        "Authorization: Bearer tok-3f9a7c",
    )
    assert res.returncode == 124
    text = res.stderr.decode()
    assert "q9z" not in text and "tok-3f9a7c" not in text
    assert f"redis://:***@127.0.0.1:{redis_pw.port}" in text


def test_two_hundred_targets_at_once(tmp_path: Path) -> None:
    """Torture: many targets, all failing concurrently; each is reported, none lost."""
    listeners = [Listener() for _ in range(50)]
    for lst in listeners:
        lst.appear()
    try:
        targets = [f"tcp://127.0.0.1:{lst.port}" for lst in listeners]
        targets += [f"tcp://127.0.0.1:{free_port()}" for _ in range(75)]
        targets += [f"file://{tmp_path}/absent-{i}" for i in range(75)]
        res = waitfor("--timeout", "2s", "--max-interval", "200ms", *targets)
    finally:
        for lst in listeners:
            lst.close()
    assert res.returncode == 124
    recs = records(res.stderr)
    assert len(by_message(recs, "target ready")) == 50
    assert len(by_message(recs, "not ready")) == 150
    assert by_message(recs, "timed out")[0]["ready"] == 50
