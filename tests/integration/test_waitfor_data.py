"""waitfor's data-level checks against real peers: ready means usable, not just listening.

PostgreSQL with a migrations table (`?query=`), redis with a key a seeding job
sets (`?key=`, `&value=`), MariaDB with a real login and `?query=`.
"""

from __future__ import annotations

import subprocess
import uuid
from urllib.parse import quote

from tests.helpers import ProgramProcess, need
from tests.peers.mariadb import MariaDBServer
from tests.peers.postgres import PostgresServer
from tests.peers.redis import RedisServer


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
