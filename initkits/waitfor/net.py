"""Connections for the probes: resolve on every attempt, never block shutdown.

Name resolution and stat() run in daemon threads of their own rather than in
the loop's default executor: a resolver that hangs for its full timeout must
not hold back an exit on SIGTERM (asyncio joins its executor threads on close;
nobody joins a daemon thread).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from podkit.httpclient import HTTPClientError

from .base import NotReady

T = TypeVar("T")

#: Cap on any one message read from a peer: a hostile or confused server
#: (say, an HTTP server on the postgres port) must not make us buffer much.
MAX_MESSAGE = 1 << 20


async def blocking(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a daemon thread; cancelling abandons the thread."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def work() -> None:
        try:
            result: Any = fn(*args)
            ok = True
        except BaseException as exc:
            result, ok = exc, False
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:  # the loop closed while we were blocked
            pass

    threading.Thread(target=work, daemon=True, name="waitfor-blocking").start()
    return await fut


async def resolve(
    host: str, port: int = 0, family: int = socket.AF_UNSPEC
) -> list[tuple[int, str]]:
    """(family, address) pairs for host, resolved now; NotReady when the name does not resolve."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if family not in (socket.AF_UNSPEC, fam):
            raise NotReady(f"{host} is not an IPv{4 if family == socket.AF_INET else 6} address")
        return [(fam, host)]
    try:
        infos = await blocking(socket.getaddrinfo, host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NotReady(f"cannot resolve {host}: {exc.strerror}") from None
    out: list[tuple[int, str]] = []
    for fam, _type, _proto, _canon, addr in infos:
        item = (int(fam), str(addr[0]))
        if item not in out:
            out.append(item)
    if not out:
        raise NotReady(f"cannot resolve {host}: no addresses")
    return out


async def open_stream(
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to host:port (each resolved address in turn), TLS when `tls` is given."""
    last: Exception | None = None
    for _fam, ip in await resolve(host, port):
        try:
            return await asyncio.open_connection(
                ip,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                limit=64 * 1024,
            )
        except OSError as exc:
            last = exc
    assert last is not None
    raise last


async def close(writer: asyncio.StreamWriter) -> None:
    """Close without waiting long on a peer that does not finish the TLS goodbye."""
    writer.close()
    try:
        # Not wait_for(): on Python 3.11 (the images' python) it swallows a
        # cancellation that arrives as wait_closed() finishes, and this runs in
        # the `finally` of every probe: --timeout's cancel was lost and waitfor
        # kept probing past its deadline. asyncio.timeout() re-raises it.
        async with asyncio.timeout(0.2):
            await writer.wait_closed()
    except (OSError, TimeoutError, ssl.SSLError):
        pass


def describe(exc: BaseException) -> str:
    """A short, stable reason for a failed attempt (it is compared to spot changes)."""
    if isinstance(exc, NotReady | HTTPClientError):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed by the server"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "answer too long"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        return text[0].lower() + text[1:]
    return f"{type(exc).__name__}: {exc}"
