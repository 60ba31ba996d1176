"""proxy TLS: served to clients (mTLS, allow-lists, identity header, certificate
rotation without restart) and refused to upstreams whose certificate names another host.

Certificates are made per test session with the openssl CLI (tests/peers/tls.py).
"""

from __future__ import annotations

import contextlib
import http.client as httpc
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ProgramProcess, free_port, http, need, wait_until
from tests.peers.nginx import start_nginx
from tests.peers.tls import TLSFiles, make_ca

ECHO = r"""
location /echo {
    return 200 "xfcc=[$http_x_forwarded_client_cert] xfp=$http_x_forwarded_proto\n";
}
"""


def issue(ca: TLSFiles, d: Path, name: str, cn: str, ext: str) -> tuple[Path, Path]:
    """A certificate (and key) signed by `ca`, with the given extensions."""
    openssl = need("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True)

    key, csr, cert, extf = (d / f"{name}.{x}" for x in ("key", "csr", "pem", "ext"))
    extf.write_text(ext + "\n")
    run(
        *("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", str(key), "-out", str(csr), "-subj", f"/O=podkit/CN={cn}"),
    )
    run(
        *("x509", "-req", "-in", str(csr), "-CA", str(ca.ca), "-CAkey", str(ca.ca_key)),
        *("-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extf)),
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d / "ca")
    other = make_ca(d / "other-ca")  # a CA the proxy does not trust
    out: dict[str, object] = {"ca": ca, "other": other}
    client = "extendedKeyUsage=clientAuth\nsubjectAltName="
    out["app"] = issue(ca, d, "app", "app", client + "URI:spiffe://cluster/ns/shop/sa/app")
    out["intruder"] = issue(ca, d, "intruder", "intruder", client + "DNS:intruder.test")
    out["by-cn"] = issue(ca, d, "bycn", "batch-job", "extendedKeyUsage=clientAuth")
    out["foreign"] = issue(
        other, d, "foreign", "app", client + "URI:spiffe://cluster/ns/shop/sa/app"
    )
    server = "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1"
    out["server2"] = issue(ca, d, "server2", "localhost", server)
    out["elsewhere"] = issue(ca, d, "elsewhere", "other.test", "subjectAltName=DNS:other.test")
    return out


@pytest.fixture(scope="module")
def nginx_echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    srv = start_nginx(tmp_path_factory.mktemp("nginx"), server_extra=ECHO)
    yield srv
    srv.stop()


@contextlib.contextmanager
def proxy(tmp: Path, *args: str) -> Iterator[ProgramProcess]:
    port = free_port()
    p = ProgramProcess("proxy", ["--listen", f"127.0.0.1:{port}", *args], tmp=tmp)
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


def client_ctx(ca: TLSFiles, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def get(port: int, ctx: ssl.SSLContext, path: str = "/echo") -> tuple[int, dict[str, str], bytes]:
    conn = httpc.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        conn.request("GET", path, headers={"X-Forwarded-Client-Cert": "By=forged;URI=admin"})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def served_cert(port: int, ca: TLSFiles) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        ctx = ssl.create_default_context(cafile=str(ca.ca))
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
            assert der is not None
            return der


def pem_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def test_mtls_allowed_disallowed_and_missing_client_certificates(
    pki: dict[str, object], nginx_echo: object, tmp_path: Path
) -> None:
    ca = pki["ca"]
    assert isinstance(ca, TLSFiles)
    with proxy(
        tmp_path,
        *("--upstream", nginx_echo.url),  # type: ignore[attr-defined]
        *("--tls-cert-file", str(ca.server_cert), "--tls-key-file", str(ca.server_key)),
        *("--tls-client-ca-file", str(ca.ca)),
        *("--tls-allow-san", "spiffe://cluster/ns/shop/sa/app"),
        *("--tls-allow-cn", "batch-job"),
        *("--header-timeout", "1s"),
    ) as p:
        port = p.port  # type: ignore[attr-defined]
        # allowed by its URI SAN: the identity reaches the upstream, the forged one not
        code, _, body = get(port, client_ctx(ca, pki["app"]))  # type: ignore[arg-type]
        assert code == 200, body
        text = body.decode()
        assert "xfp=https" in text
        xfcc = text.split("xfcc=[")[1].split("]")[0]
        assert "forged" not in xfcc and "URI=admin" not in xfcc
        assert "URI=spiffe://cluster/ns/shop/sa/app" in xfcc
        assert 'Subject="CN=app,O=podkit"' in xfcc and xfcc.startswith("Hash=")
        # allowed by its CN
        code, _, body = get(port, client_ctx(ca, pki["by-cn"]))  # type: ignore[arg-type]
        assert code == 200 and b'Subject=\\"CN=batch-job' not in body
        assert b'CN=batch-job,O=podkit"' in body
        # signed by the CA but in neither allow-list: 403, nothing sent upstream
        code, headers, _ = get(port, client_ctx(ca, pki["intruder"]))  # type: ignore[arg-type]
        assert code == 403 and headers["x-podkit-proxy"] == "client-not-allowed"
        # no client certificate, or one from another CA: the handshake fails
        for cert in (None, pki["foreign"]):
            with pytest.raises((ssl.SSLError, ConnectionResetError, httpc.RemoteDisconnected)):
                get(port, client_ctx(ca, cert))  # type: ignore[arg-type]
        # a client that opens a connection and never starts its handshake is cut
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            t0 = time.monotonic()
            assert idle.recv(1) == b""
            assert time.monotonic() - t0 < 5
        # plain HTTP on the TLS port gets nowhere either
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = s.recv(4096)
            except OSError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 200")
    access = Path(nginx_echo.access_log).read_text()  # type: ignore[attr-defined]
    assert access.count("GET /echo") == 2


def test_listener_certificate_rotates_without_restart(
    pki: dict[str, object], nginx_echo: object, tmp_path: Path
) -> None:
    ca = pki["ca"]
    assert isinstance(ca, TLSFiles)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(ca.server_cert.read_bytes())
    key.write_bytes(ca.server_key.read_bytes())
    with proxy(
        tmp_path,
        *("--upstream", nginx_echo.url),  # type: ignore[attr-defined]
        *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
    ) as p:
        port = p.port  # type: ignore[attr-defined]
        pid = p.proc.pid
        assert served_cert(port, ca) == pem_der(ca.server_cert)
        code, _, body = get(port, client_ctx(ca))
        assert code == 200 and b"xfcc=[]" in body  # no mTLS: no identity, forged one gone
        # cert-manager writes the new pair (here: key first, then the certificate)
        new_cert, new_key = pki["server2"]  # type: ignore[misc]
        key.write_bytes(new_key.read_bytes())
        cert.write_bytes(new_cert.read_bytes())
        wait_until(lambda: served_cert(port, ca) == pem_der(new_cert), 10, what="new cert")
        assert p.proc.pid == pid and p.proc.poll() is None
        assert get(port, client_ctx(ca))[0] == 200
        # an unusable pair is refused and the current one kept
        cert.write_text("not a certificate\n")
        wait_until(
            lambda: any(
                r["message"] == "cannot load the listener's TLS files; keeping the old ones"
                for r in p.records()
            ),
            10,
        )
        assert served_cert(port, ca) == pem_der(new_cert)


def test_upstream_tls_to_a_certificate_for_another_host_is_refused(
    pki: dict[str, object], tmp_path: Path
) -> None:
    """Issue 25: TLS hostname checking on proxy upstreams is on, and fails closed."""
    ca = pki["ca"]
    assert isinstance(ca, TLSFiles)
    cert, key = pki["elsewhere"]  # type: ignore[misc]
    port = free_port()
    nginx = start_nginx(
        tmp_path,
        port=port,
        listen=f"listen 127.0.0.1:{port} ssl;\n ssl_certificate {cert};\n"
        f" ssl_certificate_key {key};",
    )
    try:
        up = f"https://127.0.0.1:{nginx.port}"
        common = ("--upstream", up, "--ca-file", str(ca.ca), "--retries", "0")
        with proxy(tmp_path, *common) as p:
            code, headers, _ = http(f"http://127.0.0.1:{p.port}/")  # type: ignore[attr-defined]
            assert code == 502 and headers["x-podkit-proxy"] == "connect-failure"
            # refused for the name, not for any other reason
            wait_until(
                lambda: any(
                    r["message"] == "cannot connect to upstream"
                    and "certificate is not valid for '127.0.0.1'" in r["error"]
                    for r in p.records()
                ),
                5,
                what="the reason logged",
            )
        # the same server, asked for the name it has: served (so the refusal was the name)
        with proxy(tmp_path, *common, "--sni", "other.test") as p:
            code, _, body = http(f"http://127.0.0.1:{p.port}/")  # type: ignore[attr-defined]
            assert code == 200 and body == b"hello from nginx\n"
        assert Path(nginx.access_log).read_text().count("GET / ") == 1
    finally:
        nginx.stop()


def test_tcp_listener_with_mtls(pki: dict[str, object], nginx_echo: object, tmp_path: Path) -> None:
    ca = pki["ca"]
    assert isinstance(ca, TLSFiles)
    port = free_port()
    p = ProgramProcess(
        "proxy",
        [
            *("--listen", f"tcp://127.0.0.1:{port}"),
            *("--upstream", f"tcp://127.0.0.1:{nginx_echo.port}"),  # type: ignore[attr-defined]
            *("--tls-cert-file", str(ca.server_cert), "--tls-key-file", str(ca.server_key)),
            *("--tls-client-ca-file", str(ca.ca), "--tls-allow-cn", "batch-job"),
        ],
        tmp=tmp_path,
    )

    def exchange(cert: tuple[Path, Path]) -> bytes:
        ctx = client_ctx(ca, cert)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            try:
                while chunk := s.recv(65536):
                    out += chunk
            except (OSError, ssl.SSLError):
                pass
            return out

    with p:
        p.wait_ready()
        assert exchange(pki["by-cn"]).startswith(b"HTTP/1.1 200")  # type: ignore[arg-type]
        assert exchange(pki["app"]) == b""  # type: ignore[arg-type]  # not in the list: closed
