"""A real MariaDB (mariadb-install-db into a temp dir, mariadbd) on a free loopback port.

Root-safe: `--user=root` lets mariadbd run as root in a throwaway datadir
(it refuses to otherwise); `--no-defaults` keeps the machine's /etc/mysql
config out. `root` logs in over TCP with an empty password.
Start once per session with the `mariadb_server` fixture, or `start_mariadb()`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, need, wait_port


@dataclass
class MariaDBServer:
    port: int
    base: Path
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mysql://root@{self.host}:{self.port}"

    @property
    def error_log(self) -> Path:
        return self.base / "error.log"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)


def install_mariadb_datadir(datadir: Path) -> None:
    """A fresh system database in `datadir` (about a second)."""
    install = need("mariadb-install-db")
    res = subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            f"--user={'root' if os.geteuid() == 0 else os.environ.get('USER', '')}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ],
        capture_output=True,
        timeout=120,
    )
    if res.returncode != 0:
        raise AssertionError(f"mariadb-install-db failed: {res.stderr.decode(errors='replace')}")


def start_mariadb(
    port: int | None = None, bind: str = "127.0.0.1", datadir: Path | None = None
) -> MariaDBServer:
    """Start mariadbd on a free port (in a new temp datadir unless one is given)."""
    mariadbd = need("mariadbd")
    port = port or free_port()
    base = Path(tempfile.mkdtemp(prefix="podkit-mariadb-"))
    if datadir is None:
        datadir = base / "data"
        install_mariadb_datadir(datadir)
    args = [
        mariadbd,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={port}",
        f"--bind-address={bind}",
        f"--socket={base / 'mysqld.sock'}",
        f"--pid-file={base / 'mysqld.pid'}",
        f"--log-error={base / 'error.log'}",
        "--skip-log-bin",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=16M",
        "--max-connections=20",
    ]
    if os.geteuid() == 0:
        args.insert(2, "--user=root")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = MariaDBServer(port, base, proc, host=bind)
    try:
        wait_port(port, bind, timeout=60)
    except AssertionError:
        log = srv.error_log.read_text(errors="replace")[-2000:] if srv.error_log.exists() else ""
        srv.stop()
        raise AssertionError(f"mariadbd did not start:\n{log}") from None
    return srv


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """One MariaDB for the whole session."""
    srv = start_mariadb()
    yield srv
    srv.stop()
