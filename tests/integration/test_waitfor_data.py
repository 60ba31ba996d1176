"""waitfor's data-level checks against real peers: ready means usable, not just listening.

PostgreSQL with a migrations table (`?query=`), redis with a key a seeding job
sets (`?key=`, `&value=`), MariaDB with a real login and `?query=`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import threading
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.helpers import ProgramProcess, need, run_program, wait_until
from tests.peers.mariadb import MariaDBServer
from tests.peers.postgres import PostgresServer
from tests.peers.redis import RedisServer
from tests.peers.tls import TLSFiles


def errors(p: ProgramProcess, prefix: str) -> bool:
    return any(
        r["message"] == "waiting" and str(r.get("error", "")).startswith(prefix)
        for r in p.records()
    )


def waiting_for(args: list[str]) -> ProgramProcess:
    return ProgramProcess("waitfor", ["--max-interval", "200ms", *args], admin=False)


def test_postgres_waits_for_the_migration_row(postgres_server: PostgresServer) -> None:
    pg = postgres_server
    table = f"schema_migrations_{uuid.uuid4().hex[:8]}"
    sql = f"SELECT 1 FROM {table} WHERE version='42'"
    url = pg.url("scram_user", query="query=" + quote(sql))
    with waiting_for([url]) as p:
        rec = p.wait_log("waiting")
        assert "no such table" in rec["error"] and "42P01" in rec["error"], rec
        pg.psql(f"CREATE TABLE {table} (version text); GRANT SELECT ON {table} TO scram_user")
        p.wait_log("waiting", error="query returned no row")
        assert p.proc is not None and p.proc.poll() is None
        pg.psql(f"INSERT INTO {table} VALUES ('41'), ('42')")
        assert p.wait(30) == 0, p.stderr()
    assert "scram_user-secret" not in p.stderr()


def test_redis_waits_for_a_key_and_its_value(redis_server: RedisServer) -> None:
    cli = need("redis-cli")
    key = f"seeded-{uuid.uuid4().hex[:8]}"

    def redis(*args: str) -> None:
        subprocess.run([cli, "-p", str(redis_server.port), *args], check=True, capture_output=True)

    with waiting_for([f"{redis_server.url}?key={key}&value=done"]) as p:
        p.wait_log("waiting", error=f"key '{key}' does not exist (yet)")
        redis("SET", key, "running")
        p.wait_log("waiting", error=f"key '{key}' is 'running', waiting for 'done'")
        redis("SET", key, "done")
        assert p.wait(30) == 0, p.stderr()
    with waiting_for([f"{redis_server.url}?key={key}x"]) as p:
        p.wait_log("waiting")
        redis("LPUSH", f"{key}x", "a")  # any type: EXISTS is enough without value=
        assert p.wait(30) == 0, p.stderr()


def mariadb_sql(srv: MariaDBServer, sql: str) -> None:
    res = subprocess.run(
        [
            need("mariadb"),
            "--no-defaults",
            "-S",
            str(srv.base / "mysqld.sock"),
            "-uroot",
            "-e",
            sql,
        ],
        capture_output=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr


def test_mariadb_login_and_query_wait_for_the_user_the_grant_and_the_row(
    mariadb_server: MariaDBServer,
) -> None:
    srv = mariadb_server
    tag = uuid.uuid4().hex[:8]
    user, db = f"app_{tag}", f"appdb_{tag}"
    sql = quote("SELECT 1 FROM migrations WHERE version=42")
    url = f"mysql://{user}:pw-{tag}@127.0.0.1:{srv.port}/{db}?query={sql}&ssl-mode=disabled"
    with waiting_for([url]) as p:
        rec = p.wait_log("waiting")
        assert "access denied (wrong user or password)" in rec["error"], rec
        mariadb_sql(srv, f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-{tag}'")
        wait_until(lambda: errors(p, "access denied to the database"), 15, what="1044")
        mariadb_sql(srv, f"CREATE DATABASE {db}; GRANT ALL ON {db}.* TO '{user}'@'%'")
        wait_until(lambda: errors(p, "query failed: no such table (yet)"), 15, what="1146")
        mariadb_sql(srv, f"CREATE TABLE {db}.migrations (version int)")
        p.wait_log("waiting", error="query returned no row")
        mariadb_sql(srv, f"INSERT INTO {db}.migrations VALUES (41), (42)")
        assert p.wait(30) == 0, p.stderr()
    assert f"pw-{tag}" not in p.stderr()
    # A wrong password is named as such.
    bad = f"mysql://{user}:nope@127.0.0.1:{srv.port}/{db}"
    with waiting_for(["--timeout", "1s", bad]) as p:
        assert p.wait(30) == 124
        rec = p.wait_log("not ready")
        assert rec["last_error"].startswith("access denied (wrong user or password)"), rec


class FakeMySQL8:
    """A protocol-level fake of a MySQL 8 server's caching_sha2_password login.

    No MySQL 8 installs here and MariaDB has no caching_sha2_password, so this
    fake speaks just that part of the protocol (handshake, fast and full
    authentication, the RSA public-key exchange, TLS) and checks what the
    client sends: the fast-path scramble, the password over TLS, or the
    RSA-OAEP ciphertext, decrypted with the openssl command.
    """

    def __init__(self, tmp: Path, mode: str, tls: TLSFiles | None = None) -> None:
        self.mode, self.tls, self.password = mode, tls, "s3cret-8"
        self.openssl = need("openssl")
        self.key, self.pub = tmp / "key.pem", tmp / "pub.pem"
        if mode == "rsa":
            subprocess.run([self.openssl, "genrsa", "-out", str(self.key), "2048"], check=True,
                           capture_output=True)  # fmt: skip
            subprocess.run([self.openssl, "rsa", "-in", str(self.key), "-pubout", "-out",
                            str(self.pub)], check=True, capture_output=True)  # fmt: skip
        self.logins: list[str] = []
        # Blocking sockets, one thread per connection: after the 32-byte
        # SSLRequest the client sends its TLS hello at once, and an asyncio
        # stream would already have buffered it where start_tls cannot see it.
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    fake.handle(self.request)
                except (OSError, subprocess.CalledProcessError):
                    pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, sock: socket.socket) -> None:
        seq = 0

        def send(payload: bytes) -> None:
            nonlocal seq
            sock.sendall(len(payload).to_bytes(3, "little") + bytes([seq]) + payload)
            seq += 1

        def exactly(n: int) -> bytes:
            out = b""
            while len(out) < n:
                chunk = sock.recv(n - len(out))
                if not chunk:
                    raise OSError("closed")
                out += chunk
            return out

        def read() -> bytes:
            nonlocal seq
            head = exactly(4)
            seq = head[3] + 1
            return exactly(int.from_bytes(head[:3], "little"))

        scramble = os.urandom(20).replace(b"\0", b"x")
        caps = 0x200 | 0x8000 | 0x80000 | 0x8 | (0x800 if self.tls else 0)
        send(
            b"\x0a8.0.36-fake\0" + b"\1\0\0\0" + scramble[:8] + b"\0"
            + struct.pack("<H", caps & 0xFFFF) + b"\x2d" + b"\2\0"
            + struct.pack("<H", caps >> 16) + bytes([21]) + b"\0" * 10
            + scramble[8:] + b"\0" + b"caching_sha2_password\0"
        )  # fmt: skip
        resp = read()
        tls = False
        if len(resp) == 32 and self.tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.tls.server_cert, self.tls.server_key)
            sock = ctx.wrap_socket(sock, server_side=True)
            tls = True
            resp = read()
        user, _, rest = resp[32:].partition(b"\0")
        auth = rest[1 : 1 + rest[0]]
        pw = self.password.encode()
        h1 = hashlib.sha256(pw).digest()
        h2 = hashlib.sha256(hashlib.sha256(h1).digest() + scramble).digest()
        ok = False
        if self.mode == "fast":
            ok = auth == bytes(a ^ b for a, b in zip(h1, h2, strict=True))
            send(b"\x01\x03")
        else:
            send(b"\x01\x04")
            got = read()
            if tls:
                ok = got == pw + b"\0"
            elif got == b"\x02":
                send(b"\x01" + self.pub.read_bytes())
                cipher = read()
                plain = subprocess.run(
                    [self.openssl, "pkeyutl", "-decrypt", "-inkey", str(self.key),
                     "-pkeyopt", "rsa_padding_mode:oaep"],
                    input=cipher, capture_output=True, check=True,
                ).stdout  # fmt: skip
                mask = (scramble * 4)[: len(plain)]
                ok = bytes(a ^ b for a, b in zip(plain, mask, strict=True)) == pw + b"\0"
        if ok:
            self.logins.append(f"{self.mode}:{'tls' if tls else 'plain'}:{user.decode()}")
            send(b"\x00\x00\x00\x02\x00\x00\x00")
        else:
            send(b"\xff\x15\x04#28000Access denied for user")
        sock.recv(100)


@pytest.mark.parametrize("mode", ["fast", "rsa", "tls"])
def test_caching_sha2_password_against_a_fake_mysql8(
    tmp_path: Path, mode: str, tls_files: TLSFiles
) -> None:
    fake = FakeMySQL8(
        tmp_path, "full" if mode == "tls" else mode, tls_files if mode == "tls" else None
    )
    try:
        ssl_mode = "verify_identity" if mode == "tls" else "disabled"
        good = f"mysql://app:{fake.password}@localhost:{fake.port}?ssl-mode={ssl_mode}"
        res = run_program("waitfor", ["--timeout", "20s", "--ca-file", str(tls_files.ca), good])
        assert res.returncode == 0, res.stderr
        want = {"fast": "fast:plain:app", "rsa": "rsa:plain:app", "tls": "full:tls:app"}[mode]
        assert fake.logins == [want]
        bad = f"mysql://app:not-it-8@localhost:{fake.port}?ssl-mode={ssl_mode}"
        res = run_program("waitfor", ["--timeout", "3s", "--ca-file", str(tls_files.ca), bad])
        assert res.returncode == 124
        assert b"access denied (wrong user or password)" in res.stderr
    finally:
        fake.close()
