"""TLS on a listener: a server certificate re-read on change, and mTLS with allow-lists.

The certificate and key are files cert-manager (or a CSI driver) rewrites before they
expire, so they are checked every second and a new context built when they change:
handshakes from then on get the new certificate, connections already up keep theirs,
nothing restarts. The listening socket keeps the context it started with; its SNI
callback, which OpenSSL runs on every handshake (with or without a server name),
hands each new connection the current one.

With --tls-client-ca-file a client must present a certificate signed by that CA
(no certificate, or another CA's: the handshake fails). The allow-lists then narrow
who may connect, as ghostunnel's --allow-cn/--allow-dns/--allow-uri do: a client is
let in when any of its subjectAltNames (DNS, URI, IP, email) is in --tls-allow-san or
its subject CN is in --tls-allow-cn; with neither list, any certificate the CA signed
is. The identity verified is passed upstream in X-Forwarded-Client-Cert (Envoy's
format); a client's own X-Forwarded-Client-Cert is always removed, so the app can
trust the header it gets.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from typing import Any

from podkit import OptionGroup, UsageError, option
from podkit.fsutil import file_sig

log = logging.getLogger("podkit.proxy")

XFCC = b"x-forwarded-client-cert"


class TlsInOptions(OptionGroup):
    """TLS the listener itself speaks to its clients."""

    tls_cert_file: str | None = option(
        None, kind="path", help="serve TLS with this certificate (PEM, re-read on change)"
    )
    tls_key_file: str | None = option(
        None, kind="path", help="the key of --tls-cert-file (PEM, re-read on change)"
    )
    tls_client_ca_file: str | None = option(
        None, kind="path", help="require client certificates signed by this CA (mTLS)"
    )
    tls_allow_san: list[str] = option(
        repeat=True, help="let in a client whose certificate has this subjectAltName, repeatable"
    )
    tls_allow_cn: list[str] = option(
        repeat=True, help="let in a client whose certificate has this subject CN, repeatable"
    )

    def check(self) -> None:
        self.check_tls_in()

    def check_tls_in(self) -> None:
        """(Named apart from check() so a class mixing several groups can call each.)"""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise UsageError(f"{self.flag('tls_cert_file')} and --tls-key-file go together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise UsageError(f"{self.flag('tls_client_ca_file')} needs --tls-cert-file")
        if (self.tls_allow_san or self.tls_allow_cn) and not self.tls_client_ca_file:
            raise UsageError("--tls-allow-san/--tls-allow-cn need --tls-client-ca-file")
        # (the files are read when the listener starts, not here: `podkit validate`
        # parses the flags of a manifest far from the pod's volumes)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TlsServer:
    """The listener's server-side TLS: contexts, reloads and the client's identity."""

    def __init__(self, opts: TlsInOptions) -> None:
        self.opts = opts
        self.allow_san = frozenset(opts.tls_allow_san)
        self.allow_cn = frozenset(opts.tls_allow_cn)
        try:
            self.current = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            files = ", ".join(
                f"{o} {p}"
                for o, p in (
                    ("--tls-cert-file", opts.tls_cert_file),
                    ("--tls-key-file", opts.tls_key_file),
                    ("--tls-client-ca-file", opts.tls_client_ca_file),
                )
                if p
            )
            raise UsageError(f"cannot load {files}: {exc}") from None
        self.sig = self._files_sig()
        # The context the socket listens with: it only passes each handshake on to the
        # current one. verify_mode is taken from here, so it is set here too.
        outer = self._build()
        outer.sni_callback = self._pick
        self.outer = outer
        self.refused = 0
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        o = self.opts
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        assert o.tls_cert_file and o.tls_key_file
        ctx.load_cert_chain(o.tls_cert_file, o.tls_key_file)
        if o.tls_client_ca_file:
            ctx.load_verify_locations(cafile=o.tls_client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def _pick(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        if self.current is not ctx:
            sslobj.context = self.current
        return None

    def _files_sig(self) -> tuple[Any, ...]:
        o = self.opts
        return (file_sig(o.tls_cert_file), file_sig(o.tls_key_file), file_sig(o.tls_client_ca_file))

    def reload(self) -> str | None:
        """Re-read the files if they changed; an error text when the new ones are unusable
        (the old ones are kept: a half-written pair must not take the listener down)."""
        sig = self._files_sig()
        if sig == self.sig:
            return None
        try:
            ctx = self._build()
        except (OSError, ssl.SSLError, ValueError) as exc:
            return str(exc) or type(exc).__name__
        self.current = ctx
        self.sig = sig
        self.reloads += 1
        log.info("listener TLS files reloaded", extra={"cert_file": self.opts.tls_cert_file})
        return None

    def identity(self, transport: Any) -> bytes | None:
        """The header line passing the client's verified certificate upstream, b"" with
        no mTLS, or None when the allow-lists refuse the client."""
        if not self.opts.tls_client_ca_file:
            return b""
        cert = transport.get_extra_info("peercert") or {}
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        sans = [(kind, str(value)) for kind, value in cert.get("subjectAltName", ())]
        subject = [
            (str(k), str(v)) for rdn in cert.get("subject", ()) for k, v in rdn
        ]  # outermost RDN first
        cns = [v for k, v in subject if k == "commonName"]
        if self.allow_san or self.allow_cn:
            ok = any(v in self.allow_san for _, v in sans) or any(cn in self.allow_cn for cn in cns)
            if not ok:
                self.refused += 1
                return None
        short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
        parts = [f"Hash={hashlib.sha256(der or b'').hexdigest()}"]
        parts.append(
            "Subject=" + _quote(",".join(f"{short.get(k, k)}={v}" for k, v in reversed(subject)))
        )
        for kind, value in sans:
            key = {"URI": "URI", "DNS": "DNS", "IP Address": "IP", "email": "Email"}.get(kind)
            if key:
                parts.append(f"{key}={_quote(value) if key == 'Email' else value}")
        value = ";".join(parts)
        # a value with a control character must not reach the head (it cannot come
        # from a certificate the CA signed, but the header is one the app trusts)
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            self.refused += 1
            return None
        return b"\r\nX-Forwarded-Client-Cert: " + value.encode("utf-8")
