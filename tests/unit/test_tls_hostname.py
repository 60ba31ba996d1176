"""TLS to a server whose certificate names another host is refused.

The certificate is signed by the CA the client trusts, so only the hostname
check stands between the client and the wrong server: switch it off
(`check_hostname = False`, or no server_hostname given to the handshake) and
these tests fail. Each refusal has a control with the right certificate, so a
test cannot pass because the handshake fails for some other reason.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from podkit.http import client_session, ssl_context
from podkit.httpclient import fetch
from tests.helpers import need
from tests.peers.tls import TLSFiles


@pytest.fixture(scope="module")
def other_host(tls_files: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate from the trusted CA for `other.invalid` only."""
    openssl = need("openssl")
    d = tmp_path_factory.mktemp("other-host")
    (d / "ext").write_text("subjectAltName=DNS:other.invalid\nextendedKeyUsage=serverAuth\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    run(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", str(d / "key.pem"), "-out", str(d / "csr.pem"), "-subj", "/CN=other.invalid"),
    )
    run(
        *("x509", "-req", "-in", str(d / "csr.pem"), "-CA", str(tls_files.ca)),
        *("-CAkey", str(tls_files.ca_key), "-CAcreateserial", "-days", "2"),
        *("-out", str(d / "cert.pem"), "-extfile", str(d / "ext")),
    )
    return d / "cert.pem", d / "key.pem"


@asynccontextmanager
async def https_server(cert: Path, key: Path) -> AsyncIterator[int]:
    """An HTTPS server on 127.0.0.1 that answers every request with 200 `ok`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client refused the handshake: what the tests want
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def refused_for_the_name(exc: BaseException) -> bool:
    return isinstance(exc, ssl.SSLCertVerificationError) and "match" in str(exc)


Cases = list[Callable[[TLSFiles], ssl.SSLContext]]
CONTEXTS: Cases = [
    lambda f: ssl_context(ca_file=str(f.ca)),
    lambda f: ssl_context(
        ca_file=str(f.ca), cert_file=str(f.client_cert), key_file=str(f.client_key)
    ),
]


@pytest.mark.parametrize("make_ctx", CONTEXTS, ids=["ca", "ca+client-cert"])
async def test_podkit_http_context_refuses_a_certificate_for_another_host(
    tls_files: TLSFiles,
    other_host: tuple[Path, Path],
    make_ctx: Callable[[TLSFiles], ssl.SSLContext],
) -> None:
    ctx = make_ctx(tls_files)
    assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    async with https_server(*other_host) as port:
        with pytest.raises(ssl.SSLCertVerificationError) as err:
            await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        assert refused_for_the_name(err.value), err.value
    async with https_server(tls_files.server_cert, tls_files.server_key) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=make_ctx(tls_files))
        writer.close()


async def test_aiohttp_session_refuses_a_certificate_for_another_host(
    tls_files: TLSFiles, other_host: tuple[Path, Path]
) -> None:
    """client_session() is what logship's sinks and the JSON source call with."""
    import aiohttp

    ctx = ssl_context(ca_file=str(tls_files.ca))
    async with client_session(5, ssl_ctx=ctx) as session:
        async with https_server(*other_host) as port:
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as err:
                await session.get(f"https://127.0.0.1:{port}/")
            assert refused_for_the_name(err.value.certificate_error), err.value
        async with (
            https_server(tls_files.server_cert, tls_files.server_key) as port,
            session.get(f"https://127.0.0.1:{port}/") as resp,
        ):
            assert resp.status == 200 and await resp.text() == "ok"


async def test_webhook_client_refuses_a_certificate_for_another_host(
    tls_files: TLSFiles, other_host: tuple[Path, Path]
) -> None:
    """podkit/httpclient.py (reload and sync webhooks) with a context from ssl_context()."""
    ctx = ssl_context(ca_file=str(tls_files.ca))
    async with https_server(*other_host) as port:
        with pytest.raises(ssl.SSLCertVerificationError) as err:
            await fetch("POST", f"https://127.0.0.1:{port}/hook", body=b"{}", ssl_ctx=ctx)
        assert refused_for_the_name(err.value), err.value
        # Without a context of its own: the system CAs, which do not know this
        # CA either; refused all the same.
        with pytest.raises(ssl.SSLCertVerificationError):
            await fetch("POST", f"https://127.0.0.1:{port}/hook", body=b"{}")
    async with https_server(tls_files.server_cert, tls_files.server_key) as port:
        res = await fetch("POST", f"https://127.0.0.1:{port}/hook", body=b"{}", ssl_ctx=ctx)
        assert res.status == 200 and res.body == b"ok"


async def test_insecure_is_the_only_way_past_the_name(
    tls_files: TLSFiles, other_host: tuple[Path, Path]
) -> None:
    """--insecure turns both checks off: it is the documented, explicit opt-out."""
    ctx = ssl_context(ca_file=str(tls_files.ca), insecure=True)
    assert not ctx.check_hostname and ctx.verify_mode == ssl.CERT_NONE
    async with https_server(*other_host) as port:
        res = await fetch("GET", f"https://127.0.0.1:{port}/", ssl_ctx=ctx)
        assert res.status == 200
