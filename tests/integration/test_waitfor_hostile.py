"""waitfor against a server that answers with interim responses forever (issue 13 class 9)."""

from __future__ import annotations

import json
import socket
import threading

from podkit.testing import run_program


def test_an_endless_stream_of_1xx_is_an_error_not_a_wait() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n" * 10_000)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = run_program("waitfor", ["--timeout", "3s", f"http://127.0.0.1:{port}/"], timeout=30)
    finally:
        stop.set()
        t.join(5)
        srv.close()
    assert res.returncode == 124
    records = [json.loads(line) for line in res.stderr.splitlines() if line.strip()]
    reasons = {r.get("last_error") for r in records if r.get("message") == "not ready"}
    assert reasons == {"more than 5 interim (1xx) responses"}, reasons
