"""A real nginx (Debian) on a free loopback port, as root-less as nginx allows."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import free_port, need, wait_port


@dataclass
class Nginx:
    port: int
    root: Path
    prefix: Path
    access_log: Path
    error_log: Path
    proc: subprocess.Popen[bytes]
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_nginx(
    tmp: Path,
    port: int | None = None,
    server_extra: str = "",
    http_extra: str = "",
    listen: str | None = None,
) -> Nginx:
    binary = need("nginx")
    port = port or free_port()
    prefix = tmp / "nginx"
    root = prefix / "html"
    root.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    (root / "index.html").write_text("hello from nginx\n")
    access, error = prefix / "logs" / "access.log", prefix / "logs" / "error.log"
    listen_lines = listen or f"listen 127.0.0.1:{port};\n        listen [::1]:{port};"
    conf = f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {error} info;
events {{ worker_connections 1024; }}
http {{
    access_log {access} combined;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    default_type text/plain;
    {http_extra}
    server {{
        {listen_lines}
        root {root};
        location = /status {{ return 200 "ok\\n"; }}
        {server_extra}
    }}
}}
"""
    (prefix / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(error)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port)
    except AssertionError:
        proc.kill()
        raise AssertionError(
            f"nginx did not start: {proc.stderr.read() if proc.stderr else ''!r}"
        ) from None
    return Nginx(port, root, prefix, access, error, proc)


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    srv = start_nginx(tmp_path)
    yield srv
    srv.stop()
