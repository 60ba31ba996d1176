"""A real redis-server on a free loopback port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, need, wait_port


@dataclass
class RedisServer:
    port: int
    password: str | None
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def start_redis(
    tmp: Path, password: str | None = None, port: int | None = None, bind: str = "127.0.0.1"
) -> RedisServer:
    binary = need("redis-server")
    port = port or free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        bind,
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(tmp),
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
    ]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, bind.split()[0])
    return RedisServer(port, password, proc)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = start_redis(tmp_path)
    yield srv
    srv.stop()


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[object]:
    started: list[RedisServer] = []

    def factory(**kw: object) -> RedisServer:
        d = tmp_path / f"redis{len(started)}"
        d.mkdir()
        srv = start_redis(d, **kw)  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()
