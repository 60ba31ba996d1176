"""waitfor's further conditions against real peers: HTTP JSON, client certificates, DNS,
exec, AMQP (RabbitMQ).

nginx serves a health document whose status a test flips, and requires a
client certificate signed by the test CA on its TLS port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    ProgramProcess,
    free_port,
    missing,
    run_program,
    wait_until,
)
from tests.peers.dnsmasq import Dnsmasq
from tests.peers.nginx import Nginx, start_nginx
from tests.peers.rabbitmq import RabbitMQServer
from tests.peers.tls import TLSFiles


def waiting_for(args: list[str]) -> ProgramProcess:
    return ProgramProcess("waitfor", ["--max-interval", "200ms", *args], admin=False)


@pytest.fixture(scope="module")
def mtls_web(tmp_path_factory: pytest.TempPathFactory, tls_files: TLSFiles) -> Iterator[Nginx]:
    port = free_port()
    listen = (
        f"listen 127.0.0.1:{port} ssl;\n"
        f"        ssl_certificate {tls_files.server_cert};\n"
        f"        ssl_certificate_key {tls_files.server_key};\n"
        f"        ssl_client_certificate {tls_files.ca};\n"
        "        ssl_verify_client on;"
    )
    srv = start_nginx(
        tmp_path_factory.mktemp("nginx-mtls"),
        port=port,
        listen=listen,
        server_extra="location = /actuator/health { default_type application/json; "
        "add_header X-Health-Source podkit-test; }",
    )
    yield srv
    srv.stop()


def test_http_json_condition_waits_for_up(tmp_path: Path) -> None:
    srv = start_nginx(tmp_path, server_extra="location /h { default_type application/json; }")
    try:
        doc = srv.root / "h"
        doc.write_text('{"status": "DOWN", "components": {"db": {"status": "DOWN"}}}')
        url = f"{srv.url}/h"
        with waiting_for(["--http-json", '$.status == "UP"', "--http-json",
                          "$.components.db.status == 'UP'", url]) as p:  # fmt: skip
            p.wait_log("waiting", error='HTTP 200: $.status == "UP" does not hold (found "DOWN")')
            doc.write_text('{"status": "UP", "components": {"db": {"status": "DOWN"}}}')
            p.wait_log(
                "waiting",
                error="HTTP 200: $.components.db.status == 'UP' does not hold (found \"DOWN\")",
            )
            doc.write_text('{"status": "UP", "components": {"db": {"status": "UP"}}}')
            assert p.wait(30) == 0, p.stderr()
        doc.write_text("<html>not json</html>")
        res = run_program("waitfor", ["--timeout", "1s", "--http-json", "$.status", url])
        assert res.returncode == 124 and b"body is not JSON" in res.stderr
        res = run_program("waitfor", ["--http-json", "status == 1", url])
        assert res.returncode == 2 and b"--http-json" in res.stderr
    finally:
        srv.stop()


def test_client_certificate_and_expected_header(mtls_web: Nginx, tls_files: TLSFiles) -> None:
    doc = mtls_web.root / "actuator" / "health"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text('{"status": "UP"}')
    url = f"https://localhost:{mtls_web.port}/actuator/health"
    common = ["--ca-file", str(tls_files.ca), "--http-json", '$.status == "UP"']
    # Without a client certificate nginx answers 400 ("No required SSL certificate").
    res = run_program("waitfor", ["--timeout", "1s", *common, url])
    assert res.returncode == 124 and b"HTTP 400" in res.stderr, res.stderr
    res = run_program(
        "waitfor",
        ["--timeout", "20s", *common, "--cert-file", str(tls_files.client_cert),
         "--key-file", str(tls_files.client_key),
         "--http-header", "X-Health-Source=^podkit-", url],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = run_program(
        "waitfor",
        ["--timeout", "1s", *common, "--cert-file", str(tls_files.client_cert),
         "--key-file", str(tls_files.client_key), "--http-header", "X-Missing", url],
    )  # fmt: skip
    assert res.returncode == 124 and b"without header X-Missing" in res.stderr
    res = run_program("waitfor", ["--key-file", str(tls_files.client_key), url])
    assert res.returncode == 2 and b"--key-file: needs --cert-file" in res.stderr


def test_dns_expected_addresses_types_and_nameserver(tmp_path: Path) -> None:
    dns = Dnsmasq(
        tmp_path,
        srv=["_postgresql._tcp.app.test,db.app.test,5432"],
        extra=["--cname=www.app.test,web.app.test", "--txt-record=app.test,v=ready"],
    )
    try:
        ns = f"nameserver={dns.addr}"
        url = f"dns://db.app.test?{ns}&expect=10.1.0.5,fd00::5"
        with waiting_for([url]) as p:
            p.wait_log("waiting", error="no such name (NXDOMAIN)")
            dns.set_hosts({"db.app.test": ["10.1.0.4"]})
            p.wait_log(
                "waiting", error="db.app.test resolves to 10.1.0.4, not yet to 10.1.0.5, fd00::5"
            )
            dns.set_hosts({"db.app.test": ["10.1.0.4", "10.1.0.5", "fd00::5"]})
            wait_until(lambda: errors(p, "db.app.test resolves to 10.1.0.4, 10.1.0.5"), 10)
            assert p.proc is not None and p.proc.poll() is None
        # A is asked for by default: the AAAA expectation needs type=AAAA.
        res = run_program(
            "waitfor",
            ["--timeout", "20s",
             f"dns://db.app.test?{ns}&expect=10.1.0.5",
             f"dns://db.app.test?{ns}&type=AAAA&expect=fd00::5",
             f"dns://www.app.test?{ns}&type=CNAME&expect=web.app.test.",
             f"dns://_postgresql._tcp.app.test?{ns}&type=SRV&expect=db.app.test:5432",
             f"dns://_postgresql._tcp.app.test?{ns}&type=SRV&expect=db.app.test",
             f"dns://app.test?{ns}&type=TXT&expect=v=ready"],
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        res = run_program(
            "waitfor", ["--timeout", "1s", f"dns://app.test?{ns}&type=TXT&expect=v=other"]
        )
        assert res.returncode == 124 and b"resolves to v=ready, not yet to v=other" in res.stderr
        res = run_program("waitfor", ["dns://x.test?type=MX", "dns://x.test?expect=notanip"])
        assert res.returncode == 2 and b"type must be one of" in res.stderr
    finally:
        dns.stop()


def errors(p: ProgramProcess, prefix: str) -> bool:
    return any(
        r["message"] == "waiting" and str(r.get("error", "")).startswith(prefix)
        for r in p.records()
    )


def test_exec_target_waits_for_exit_zero(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    script = tmp_path / "check.sh"
    script.write_text('#!/bin/sh\n[ -f "$1" ] && exit 0\necho "no flag at $1"\nexit 3\n')
    script.chmod(0o755)
    url = f"exec://{script}?args={flag}"
    with waiting_for([url]) as p:
        p.wait_log("waiting", error=f"exited 3: no flag at {flag}")
        flag.write_text("")
        assert p.wait(30) == 0, p.stderr()
    # A hanging command is killed at --attempt-timeout, its whole group with it.
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")
    hang.chmod(0o755)
    res = run_program(
        "waitfor", ["--timeout", "1s", "--attempt-timeout", "300ms", f"exec://{hang}"]
    )
    assert res.returncode == 124 and b"no answer within 300ms" in res.stderr
    res = run_program("waitfor", ["--timeout", "500ms", f"exec://{tmp_path}/missing"])
    assert res.returncode == 124 and b"no such command" in res.stderr


def test_amqp_connection_open_against_rabbitmq(rabbitmq_server: RabbitMQServer) -> None:
    rmq = rabbitmq_server
    res = run_program("waitfor", ["--timeout", "30s", rmq.url(), rmq.url(vhost="%2F")])
    assert res.returncode == 0, res.stderr
    res = run_program(
        "waitfor",
        ["--timeout", "1500ms", rmq.url(password="not-it-9"), rmq.url(vhost="nosuch")],
    )
    assert res.returncode == 124
    errs = sorted(r["last_error"] for r in records(res.stderr) if r["message"] == "not ready")
    assert errs[0].startswith("login refused: wrong user or password (ACCESS_REFUSED)"), errs
    assert errs[1].startswith("not allowed (NOT_ALLOWED)") and "nosuch" in errs[1], errs
    assert b"not-it-9" not in res.stderr and b"app-secret" not in res.stderr


def records(stderr: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]


class HealthServer:
    """A real gRPC server (grpcio) serving grpc.health.v1 from grpcio-health-checking."""

    def __init__(self) -> None:
        try:
            import grpc
            from grpc_health.v1 import health, health_pb2, health_pb2_grpc
        except ImportError:
            missing("grpcio-health-checking not installed (pip install -e '.[dev]')")
        from concurrent.futures import ThreadPoolExecutor

        self.pb = health_pb2
        self.health = health.HealthServicer()
        self.server = grpc.server(ThreadPoolExecutor(2))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def set(self, service: str, status: str) -> None:
        self.health.set(service, getattr(self.pb.HealthCheckResponse, status))

    def stop(self) -> None:
        self.server.stop(0)


def test_grpc_health_against_grpcio() -> None:
    srv = HealthServer()
    try:
        srv.set("", "SERVING")
        srv.set("app.Api", "NOT_SERVING")
        url = f"grpc://127.0.0.1:{srv.port}?service=app.Api"
        with waiting_for([url, f"grpc://127.0.0.1:{srv.port}"]) as p:
            p.wait_log("waiting", error="health status NOT_SERVING for 'app.Api'")
            srv.set("app.Api", "SERVING")
            assert p.wait(30) == 0, p.stderr()
        res = run_program(
            "waitfor", ["--timeout", "1s", f"grpc://127.0.0.1:{srv.port}?service=nope"]
        )
        assert res.returncode == 124
        assert b"health status UNKNOWN for 'nope' (or a service the server" in res.stderr
    finally:
        srv.stop()


def test_grpc_probe_against_http1(tmp_path: Path) -> None:
    web = start_nginx(tmp_path)
    try:
        res = run_program("waitfor", ["--timeout", "1s", f"grpc://127.0.0.1:{web.port}"])
        assert res.returncode == 124 and b"it answered HTTP/1" in res.stderr, res.stderr
    finally:
        web.stop()
