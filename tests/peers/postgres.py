"""A real PostgreSQL (initdb into a temp dir, pg_ctl start) on a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the cluster
belongs to the `postgres` system user (or `nobody`) and every server command
runs through `runuser`. The data directory is a mkdtemp() under /tmp, not
pytest's tmp_path, because pytest's per-user base directory is mode 0700.

Roles, one per authentication method (pg_hba.conf below), all with LOGIN:

    trust_user      trust          (no password)
    cleartext_user  password       cleartext password
    md5_user        md5            password stored as MD5
    scram_user      scram-sha-256  password stored as SCRAM (the default)

Each password is `<role>-secret`. Databases: `postgres` and `appdb`. Any
other role name is let in by `trust`, so a missing role is reported as such.
Start once per session with the `postgres_server` fixture (initdb + start
take a few seconds); `start_postgres()` starts another, e.g. with TLS.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import free_port, missing, need, wait_port

ROLES = {
    "trust_user": "trust",
    "cleartext_user": "password",
    "md5_user": "md5",
    "scram_user": "scram-sha-256",
}


def password_of(role: str) -> str:
    return f"{role}-secret"


@dataclass
class PostgresServer:
    port: int
    base: Path
    as_user: list[str]
    bindir: str
    host: str = "127.0.0.1"
    roles: dict[str, str] = field(default_factory=lambda: dict(ROLES))

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    def url(
        self,
        role: str = "scram_user",
        password: str | None = "",
        db: str = "postgres",
        host: str | None = None,
        query: str = "",
    ) -> str:
        """A postgres:// URL; password "" means the role's right one, None means none."""
        if password == "":
            password = None if self.roles.get(role, "trust") == "trust" else password_of(role)
        auth = role if password is None else f"{role}:{password}"
        h = host or self.host
        if ":" in h:
            h = f"[{h}]"
        return f"postgres://{auth}@{h}:{self.port}/{db}" + (f"?{query}" if query else "")

    def psql(self, sql: str) -> str:
        res = subprocess.run(
            [
                *self.as_user,
                f"{self.bindir}/psql",
                "-X",
                "-q",
                "-At",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            capture_output=True,
            timeout=30,
        )
        if res.returncode != 0:
            raise AssertionError(f"psql {sql!r}: {res.stderr.decode(errors='replace')}")
        return res.stdout.decode()

    def promote(self) -> None:
        """End recovery: a standby becomes a primary that accepts connections."""
        subprocess.run(
            [*self.as_user, f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "promote"],
            capture_output=True,
            timeout=60,
            check=True,
        )

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "-m", "fast", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.base, ignore_errors=True)


def _owner() -> tuple[list[str], int, int]:
    """The command prefix that runs as an unprivileged user, and that user's uid/gid."""
    if os.geteuid() != 0:
        return [], os.getuid(), os.getgid()
    runuser = need("runuser")
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return [runuser, "-u", name, "--"], pw.pw_uid, pw.pw_gid
    missing("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL")
    raise AssertionError("unreachable")


def start_postgres(
    port: int | None = None,
    listen: str = "127.0.0.1,::1",
    ssl_cert: Path | None = None,
    ssl_key: Path | None = None,
    standby: bool = False,
) -> PostgresServer:
    """initdb into a fresh temp dir and start the server; the roles above exist.

    `standby=True` starts it in recovery with hot_standby off: it answers every
    connection with 57P03 ("not yet accepting connections") until `promote()`,
    and only the trusted superuser `postgres` exists.
    """
    initdb = need("initdb")
    bindir = os.path.dirname(os.path.realpath(initdb))
    as_user, uid, gid = _owner()
    port = port or free_port()
    base = Path(tempfile.mkdtemp(prefix="podkit-pg-"))
    os.chown(base, uid, gid)
    srv = PostgresServer(port, base, as_user, bindir)
    (base / "sock").mkdir()
    os.chown(base / "sock", uid, gid)

    def run(*args: str) -> None:
        res = subprocess.run([*as_user, *args], capture_output=True, timeout=120)
        if res.returncode != 0:
            log = base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"{args[0]} failed: {res.stderr.decode(errors='replace')}{tail}")

    run(
        f"{bindir}/initdb",
        "-D",
        str(srv.datadir),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--no-sync",
        "--no-instructions",
    )
    hba = ["local all all trust", "host all postgres 127.0.0.1/32 trust"]
    for role, method in ROLES.items():
        for net in ("127.0.0.1/32", "::1/128"):
            hba.append(f"host all {role} {net} {method}")
    # Anyone else is trusted, so a role that does not exist is reported as such.
    hba += ["host all all 127.0.0.1/32 trust", "host all all ::1/128 trust"]
    (srv.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
    conf = [
        f"port = {port}",
        f"listen_addresses = '{listen}'",
        f"unix_socket_directories = '{srv.socket_dir}'",
        "fsync = off",
        "synchronous_commit = off",
        "full_page_writes = off",
        "shared_buffers = 16MB",
        "max_connections = 20",
        "log_min_messages = warning",
    ]
    if ssl_cert and ssl_key:
        for src, name in ((ssl_cert, "server.crt"), (ssl_key, "server.key")):
            dst = srv.datadir / name
            shutil.copyfile(src, dst)
            os.chown(dst, uid, gid)
            os.chmod(dst, 0o600)
        conf += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'"]
    if standby:
        conf.append("hot_standby = off")
        (srv.datadir / "standby.signal").write_text("")
        os.chown(srv.datadir / "standby.signal", uid, gid)
    with open(srv.datadir / "postgresql.conf", "a") as f:
        f.write("\n" + "\n".join(conf) + "\n")
    run(
        f"{bindir}/pg_ctl",
        "-D",
        str(srv.datadir),
        "-l",
        str(base / "server.log"),
        "-w",
        "-t",
        "60",
        "start",
    )
    wait_port(port)
    if standby:
        return srv
    statements = ["CREATE DATABASE appdb"]
    for role, method in ROLES.items():
        if method == "trust":
            statements.append(f"CREATE ROLE {role} LOGIN")
            continue
        # md5 in pg_hba.conf silently upgrades to SCRAM unless the stored hash is MD5.
        enc = "md5" if method == "md5" else "scram-sha-256"
        statements.append(
            f"SET password_encryption = '{enc}'; "
            f"CREATE ROLE {role} LOGIN PASSWORD '{password_of(role)}'"
        )
    for sql in statements:
        srv.psql(sql)
    return srv


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole session (IPv4 and IPv6 loopback, no TLS)."""
    srv = start_postgres()
    yield srv
    srv.stop()
