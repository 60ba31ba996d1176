"""waitfor's further conditions against real peers: HTTP JSON bodies, client certificates.

nginx serves a health document whose status a test flips, and requires a
client certificate signed by the test CA on its TLS port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ProgramProcess, free_port, run_program
from tests.peers.nginx import Nginx, start_nginx
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
