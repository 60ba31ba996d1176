"""The statsd source's listeners: UDP, TCP and unix datagram sockets in,
`ingest(bytes)` out; and StatsdOptions, where a source listens (a source's
keys and the adapter's `--statsd-*` flags, declared once).

The transport half of the source, kept apart from what lines mean (statsd.py):
UDP and unixgram sockets are drained off non-blocking sockets with
loop.add_reader, a bounded batch per wake-up; TCP is newline-delimited, with
a cap on connections and on a line's length (each connection may buffer up
to max_line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
from typing import Any

from podkit import OptionGroup, UsageError, option
from podkit.options import split_addr

from .store import Store


def _listen_addr(text: str) -> None:
    """HOST:PORT, [::1]:PORT or :PORT (all interfaces, said out loud)."""
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        hint = f" (did you mean 127.0.0.1:{text}?)" if text.isdigit() else ""
        raise ValueError(f"expected HOST:PORT, got {text!r}{hint}")


def _octal_mode(text: str) -> None:
    # An octal permission string, as statsd_exporter's --statsd.unixsocket-mode.
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError(f"expected an octal mode like 755, got {text!r}")


class StatsdOptions(OptionGroup):
    """Where one statsd source listens and how it maps: the keys of a
    `type: statsd` source, and the adapter's `--statsd-*` flags for the one
    source they describe (statsd_exporter's names, see FLAG_NAMES)."""

    about = "StatsD"

    udp: str | None = option(
        None, metavar="HOST:PORT", validator=_listen_addr, help="listen for StatsD on UDP HOST:PORT"
    )
    tcp: str | None = option(
        None, metavar="HOST:PORT", validator=_listen_addr, help="listen for StatsD on TCP HOST:PORT"
    )
    unixgram: str | None = option(
        None,
        kind="path",
        help="also listen for StatsD/DogStatsD datagrams on this unix socket path "
        "(statsd_exporter's --statsd.listen-unixgram)",
    )
    unixgram_mode: str = option(
        "755",
        validator=_octal_mode,
        help="permission mode of that unix socket, octal (--statsd.unixsocket-mode)",
    )
    mapping_file: str | None = option(
        None, kind="path", help="statsd_exporter mapping file for the StatsD listener"
    )

    #: The flags' names where statsd_exporter's differ from the keys.
    FLAG_NAMES = {
        "unixgram": "listen_unixgram",
        "unixgram_mode": "unixsocket_mode",
        "mapping_file": "mapping",
    }

    @property
    def listening(self) -> bool:
        return bool(self.udp or self.tcp or self.unixgram)

    def check(self) -> None:
        if self.mapping_file and not self.listening:
            listeners = ", ".join(map(self.flag, ("udp", "tcp")))
            raise UsageError(
                f"{self.flag('mapping_file')}: needs {listeners} or {self.flag('unixgram')}"
            )


class StatsdListeners:
    """Sockets of one statsd source (a base of StatsdSource, which sets the
    addresses and limits and provides `ingest`)."""

    store: Store
    log: Any
    udp_addr: str | None
    tcp_addr: str | None
    unixgram: str | None
    unixgram_mode: int
    udp_buffer: int
    max_line: int
    max_connections: int
    packets: dict[str, int]
    errors: dict[str, int]
    dropped: dict[str, int]
    tcp_accepted: int

    def _init_listeners(self) -> None:
        self._sock: socket.socket | None = None
        self._usock: socket.socket | None = None
        self._tcp_server: asyncio.base_events.Server | None = None
        self._tcp_conns: set[_TCPProtocol] = set()
        self.udp_port: int | None = None
        self.tcp_port: int | None = None

    def ingest(self, data: bytes) -> None:
        raise NotImplementedError

    async def _open_listeners(self) -> None:
        """Bind the UDP, TCP and unixgram listeners the source was given."""
        loop = asyncio.get_running_loop()
        if self.udp_addr:
            host, port = split_addr(self.udp_addr)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.udp_buffer)
            except OSError:
                pass
            sock.bind((host, port))
            sock.setblocking(False)
            self._sock = sock
            self.udp_port = sock.getsockname()[1]
            loop.add_reader(sock.fileno(), self._readable)
        if self.tcp_addr:
            host, port = split_addr(self.tcp_addr)
            self._tcp_server = await loop.create_server(
                lambda: _TCPProtocol(self), host, port, reuse_address=True
            )
            self.tcp_port = self._tcp_server.sockets[0].getsockname()[1]
        if self.unixgram:
            self._usock = _bind_unixgram(self.unixgram, self.unixgram_mode, self.udp_buffer)
            loop.add_reader(self._usock.fileno(), self._readable, "unixgram")

    def _readable(self, transport: str = "udp") -> None:
        sock = self._sock if transport == "udp" else self._usock
        if sock is None:
            return
        self.store.now = time.monotonic()
        ingest = self.ingest
        recv = sock.recv
        n = 0
        # Drain a bounded batch per wake-up so one flood cannot starve scrapes.
        while n < 512:
            try:
                data = recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            n += 1
            ingest(data)
        self.packets[transport] += n

    async def _close_listeners(self) -> None:
        """Close the listeners, taking in what the kernel already accepted."""
        if self._sock is not None:
            # What is already in the socket buffer was accepted by the kernel:
            # take it in before closing.
            self._readable()
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._usock is not None:
            self._readable("unixgram")
            asyncio.get_running_loop().remove_reader(self._usock.fileno())
            self._usock.close()
            self._usock = None
            assert self.unixgram is not None
            with contextlib.suppress(OSError):
                os.unlink(self.unixgram)
        if self._tcp_server is not None:
            self._tcp_server.close()
            for conn in list(self._tcp_conns):
                conn.finish()
            await self._tcp_server.wait_closed()

    def udp_kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for our socket (receive buffer full)."""
        if self._sock is None:
            return None
        inode = os.fstat(self._sock.fileno()).st_ino
        for path in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(path) as f:
                    next(f)
                    for row in f:
                        cols = row.split()
                        if len(cols) > 12 and cols[9] == str(inode):
                            return int(cols[12])
            except (OSError, StopIteration, ValueError):
                continue
        return None


def _bind_unixgram(path: str, mode: int, rcvbuf: int) -> socket.socket:
    """A unix datagram socket at `path` with permission `mode` (DogStatsD's
    `unix://` transport). A stale socket file from an earlier run is replaced;
    anything else at that path is an error, not something to delete."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    except OSError:
        pass
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class _TCPProtocol(asyncio.Protocol):
    """Newline-delimited lines; a partial last line waits for the next read."""

    def __init__(self, source: StatsdListeners) -> None:
        self.source = source
        self.buf = b""
        self.skipping = False
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; only close() is used.
        self.transport = transport
        src = self.source
        src.tcp_accepted += 1
        if len(src._tcp_conns) >= src.max_connections:
            # Each connection may buffer up to max_line: a cap on them is a cap
            # on that memory (and on file descriptors).
            src.dropped["connection_limit"] += 1
            self.skipping = True
            transport.close()
            return
        src._tcp_conns.add(self)

    def data_received(self, data: bytes) -> None:
        src = self.source
        src.packets["tcp"] += 1
        src.store.now = time.monotonic()
        buf = self.buf + data if self.buf else data
        i = buf.rfind(b"\n")
        if i < 0:
            if len(buf) > src.max_line:
                # One endless line: count it once and skip to its newline.
                if not self.skipping:
                    src.errors["line_too_long"] += 1
                self.skipping = True
                self.buf = b""
            else:
                self.buf = buf
            return
        head, self.buf = buf[:i], buf[i + 1 :]
        if self.skipping:
            j = head.find(b"\n")
            head = head[j + 1 :] if j >= 0 else b""
            self.skipping = False
        if len(head) > src.max_line:
            # Only a big read can hold an over-long line; check those alone.
            lines = head.split(b"\n")
            keep = [ln for ln in lines if len(ln) <= src.max_line]
            src.errors["line_too_long"] += len(lines) - len(keep)
            head = b"\n".join(keep)
        src.ingest(head)

    def finish(self) -> None:
        if self.buf and not self.skipping:
            self.source.ingest(self.buf)
        self.buf = b""
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        self.finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buf and not self.skipping:
            self.source.ingest(self.buf)
            self.buf = b""
        self.source._tcp_conns.discard(self)
