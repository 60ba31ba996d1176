"""Peers the example pods talk to, on the host, bound to the e2e bridge's gateway.

Real servers where this machine has them (PostgreSQL, `git daemon`); a small
recording HTTP server where it has none: Loki is not installed here, so the
log receiver implements Loki's documented push API (`POST /loki/api/v1/push`,
JSON streams with `[ "<ns timestamp>", "<line>" ]` values), and the upstream
behind the proxy is the same server answering GETs, so the test can see the
headers the ambassador added.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.e2e.harness import wait_for
from tests.helpers import free_port, need, wait_port
from tests.peers.postgres import PostgresServer, start_postgres


@dataclass
class Recorder:
    """Accepts Loki pushes and NDJSON posts (records their lines); answers GETs."""

    host: str
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    streams: list[dict[str, str]] = field(default_factory=list)  # Loki stream labels
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Recorder:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with rec.lock:
                    rec.requests.append(
                        {"method": "GET", "path": self.path, "headers": dict(self.headers)}
                    )
                self._reply(200, b"hello from upstream")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                lines: list[str] = []
                streams: list[dict[str, str]] = []
                if self.path.startswith("/loki/api/v1/push"):
                    for stream in json.loads(body)["streams"]:
                        assert isinstance(stream["stream"], dict)
                        streams.append(stream["stream"])
                        for ts, line in stream["values"]:
                            assert isinstance(ts, str) and ts.isdigit()
                            lines.append(line)
                else:
                    for raw in body.splitlines():
                        if raw.strip():
                            lines.append(json.loads(raw)["message"])
                with rec.lock:
                    rec.requests.append(
                        {"method": "POST", "path": self.path, "headers": dict(self.headers)}
                    )
                    rec.lines.extend(lines)
                    rec.streams.extend(streams)
                self._reply(204)

        self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def wait_lines(self, expected: set[str], timeout: float) -> None:
        """Until every expected line has arrived; fails naming some that did not."""

        def done() -> bool:
            with self.lock:
                return expected <= set(self.lines)

        try:
            wait_for(done, timeout, "every line at the receiver")
        except AssertionError:
            with self.lock:
                lost = sorted(expected - set(self.lines))
            raise AssertionError(f"{len(lost)} lines never arrived, e.g. {lost[:5]}") from None

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def prepare_postgres(gateway: str, subnet: str) -> PostgresServer:
    """A real PostgreSQL with role and database `app`, stopped, configured to
    listen on the gateway (start it with `start_prepared`)."""
    srv = start_postgres(listen="127.0.0.1")
    srv.psql("CREATE ROLE app LOGIN")
    srv.psql("CREATE DATABASE app OWNER app")
    _pg_ctl(srv, "stop", "-m", "fast")
    with open(srv.datadir / "postgresql.conf", "a") as f:
        f.write(f"\nlisten_addresses = '{gateway}'\n")
    with open(srv.datadir / "pg_hba.conf", "a") as f:
        f.write(f"host app app {subnet} trust\n")
    srv.host = gateway
    return srv


def start_prepared(srv: PostgresServer) -> None:
    _pg_ctl(srv, "-l", str(srv.base / "server.log"), "-w", "-t", "60", "start")
    wait_port(srv.port, srv.host)


def _pg_ctl(srv: PostgresServer, *args: str) -> None:
    res = subprocess.run(
        [*srv.as_user, f"{srv.bindir}/pg_ctl", "-D", str(srv.datadir), *args],
        capture_output=True,
        timeout=90,
    )
    if res.returncode != 0:
        raise AssertionError(f"pg_ctl {args}: {res.stderr.decode(errors='replace')}")


@dataclass
class GitDaemon:
    """`git daemon` serving every bare repository under `base` on host:port."""

    base: Path
    host: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GitDaemon:
        self.port = self.port or free_port(self.host)
        self.proc = subprocess.Popen(
            [
                need("git"),
                "daemon",
                "--reuseaddr",
                "--export-all",
                f"--base-path={self.base}",
                f"--listen={self.host}",
                f"--port={self.port}",
                str(self.base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_port(self.port, self.host)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(10)


# Where the running registry's pid is kept, so `make e2e-clean` can stop one
# that an interrupted run left behind (and nothing else).
REGISTRY_PIDFILE = Path(__file__).resolve().parents[2] / "images" / ".build" / "e2e-registry.pid"


@dataclass
class Registry:
    """A real OCI registry (CNCF distribution 2.8, Debian's `docker-registry`)
    on 127.0.0.1, storing in `base`: the pods' images are pushed to it and
    pulled from it by reference. Plain HTTP, so podman is told it is insecure
    through a registries.conf of the tier's own (`registries_conf`)."""

    base: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        binary = need("docker-registry")
        self.port = self.port or free_port()
        config = self.base / "config.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(self.base / "data")}},
                    "http": {"addr": self.address},
                }
            )
        )
        with open(self.base / "registry.log", "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True
            )
        REGISTRY_PIDFILE.parent.mkdir(parents=True, exist_ok=True)
        REGISTRY_PIDFILE.write_text(f"{self.proc.pid}\n")
        wait_port(self.port)
        return self

    def registries_conf(self) -> Path:
        """A registries.conf naming only this registry, as insecure (plain HTTP)."""
        path = self.base / "registries.conf"
        path.write_text(f'[[registry]]\nlocation = "{self.address}"\ninsecure = true\n')
        return path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(10)
        REGISTRY_PIDFILE.unlink(missing_ok=True)


def stop_leftover_registry() -> None:
    """Stop the registry an interrupted run left, if its pid is still that registry."""
    try:
        pid = int(REGISTRY_PIDFILE.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        REGISTRY_PIDFILE.unlink(missing_ok=True)
        return
    if b"docker-registry" in cmdline:
        os.killpg(pid, 15)
    REGISTRY_PIDFILE.unlink(missing_ok=True)
