"""Raw-socket clients for the proxy's tests: bytes a client library would refuse to send."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from tests.helpers import ProgramProcess


@contextlib.contextmanager
def client(p: ProgramProcess) -> Iterator[socket.socket]:
    """A connection to the proxy's listener (`p.port`)."""
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:  # type: ignore[attr-defined]
        yield s


def read_all(s: socket.socket) -> tuple[bytes, str]:
    """Everything until the end; and how it ended: 'eof', 'reset' or 'timeout'."""
    out = b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return out, "eof"
            out += data
    except ConnectionResetError:
        return out, "reset"
    except TimeoutError:
        return out, "timeout"


def exchange(p: ProgramProcess, data: bytes) -> tuple[bytes, str]:
    """Send `data` on a new connection; everything that came back, and how it ended."""
    with client(p) as s:
        s.sendall(data)
        return read_all(s)


def recv_head(c: socket.socket, buf: bytes) -> tuple[bytes, bytes] | None:
    """The next request head on `c` (after what is in `buf`) and what followed it; None
    at the end of the connection."""
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return None
        buf += data
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


class SocketUpstream:
    """A hand-written upstream: one thread per connection running `serve(c, n)`.

    For what no real server does on demand (resets mid-body, unsolicited responses,
    1xx floods). Records which connections it saw end, by number, in `closed_conns`.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: dict[int, socket.socket] = {}
        self.closed_conns: set[int] = set()
        self.nconn = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.nconn += 1
                n = self.nconn
                self.conns[n] = c
            threading.Thread(target=self._run, args=(c, n), daemon=True).start()

    def _run(self, c: socket.socket, n: int) -> None:
        try:
            self.serve(c, n)
        except OSError:
            pass
        finally:
            with self.lock:
                self.closed_conns.add(n)
            c.close()

    def serve(self, c: socket.socket, n: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()
