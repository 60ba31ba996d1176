"""The proxy's TCP mode against clients that hang up in every way, over raw sockets.

Each connection must end with its access line (`connection`) and none with an
error record. Before the fix, under the asyncio loop, a client that closed
while the upstream's half-close was being passed on made write_eof() raise
ENOTCONN out of splice(): TcpClient.run's task ended with it, asyncio wrote
"Task exception was never retrieved" with a traceback for that connection,
unthrottled, and its access line was never written.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProgramProcess, free_port, wait_until
from tests.integration.proxy_sockets import SocketUpstream


class Echo(SocketUpstream):
    """Echoes what it reads, then closes when the client has finished sending."""

    def serve(self, c: socket.socket, n: int) -> None:
        while data := c.recv(65536):
            c.sendall(data)


@pytest.fixture(scope="module")
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def hang_up(port: int, data: bytes, how: str) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if data:
            s.sendall(data)
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "half":
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(65536):
                    pass
            except OSError:
                pass
    finally:
        s.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_every_hang_up_gets_its_access_line_and_no_traceback(
    echo: Echo, tmp_path: Path, loop: str
) -> None:
    port = free_port()
    args = ["--listen", f"tcp://127.0.0.1:{port}", "--upstream", f"tcp://127.0.0.1:{echo.port}"]
    with ProgramProcess("proxy", args, tmp=tmp_path, env={"PODKIT_EVENT_LOOP": loop}) as p:
        p.wait_ready()
        n = 0
        for _ in range(10):
            for data in (b"", b"\x00" * 10, bytes(range(256)) * 64, b"\xff" * 3):
                for how in ("close", "reset", "half"):
                    hang_up(port, data, how)
                    n += 1

        def lines() -> list[dict[str, Any]]:
            return [r for r in p.records() if r["message"] == "connection"]

        def settled() -> bool:
            if any(r["level"] == "error" for r in p.records()):
                return True  # fail at once, below, with the record
            return len(lines()) >= n

        wait_until(settled, 15, what=f"{n} access lines")
        bad = [r for r in p.records() if r["level"] in ("error", "critical") or "exc_info" in r]
        assert bad == [], bad[:2]
        assert len(lines()) == n
