"""The admin server's TLS certificate and credentials, read from files and re-read on change.

Imported only when `--admin-tls-cert-file` or `--admin-auth-file` is given:
hashlib alone costs an idle sidecar ~0.6 MB of RSS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import ssl
from typing import Any

log = logging.getLogger("podkit.admin")


def _file_sig(*paths: str) -> tuple[tuple[int, int, int, int], ...]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class Reloading:
    """Something built from files and rebuilt when they change (one stat per file per use).

    A rebuild that fails keeps what was built before and logs once per change:
    a certificate half-written by a rotation must not take the server down.
    """

    what = "file"

    def __init__(self, *paths: str) -> None:
        self.paths = paths
        self._sig = _file_sig(*paths)
        self._failed: object = None
        self.load()

    def load(self) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        try:
            sig = _file_sig(*self.paths)
        except OSError:
            sig = None  # mid-rotation: keep what we have
        if sig is None or sig == self._sig or sig == self._failed:
            return
        try:
            self.load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._failed = sig
            log.warning(
                f"cannot reload admin {self.what}; keeping the previous one",
                extra={"files": list(self.paths), "error": str(exc)},
            )
            return
        self._sig = sig
        log.info(f"admin {self.what} reloaded", extra={"files": list(self.paths)})


class TLSFiles(Reloading):
    """The server certificate and key (and client CA); a new context is built on change.

    With a client CA, a client certificate is verified when one is sent
    (CERT_OPTIONAL) and required by the server for every route but the exempt
    probes: the kubelet sends none, so the handshake cannot demand one.
    """

    what = "TLS certificate"

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        self.client_ca = client_ca
        super().__init__(cert, key, *([client_ca] if client_ca else []))

    def load(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(self.paths[0], self.paths[1])
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL
        self.context = ctx


class AuthFile(Reloading):
    """Credentials from --admin-auth-file (YAML), stored as SHA-256 hashes only.

    ```yaml
    basic_auth_users:              # as exporter-toolkit's web config, but sha256:
      prometheus: sha256:<hex of sha256(password)>
    bearer_tokens:
      - sha256:<hex of sha256(token)>
    ```

    bcrypt (exporter-toolkit's choice) is refused on purpose: at its usual cost
    one check takes ~50 ms of CPU on the event loop, so anyone who can reach the
    port could stall the program with wrong passwords, and it would add a
    compiled dependency to every image. Machine credentials are random, where a
    slow hash adds nothing: use 32 random bytes (`openssl rand -hex 32`).
    """

    what = "auth file"

    def load(self) -> None:
        from .options import UsageError, load_yaml

        path = self.paths[0]
        try:
            data = load_yaml(path, "") or {}  # the caller names --admin-auth-file
        except UsageError as exc:
            raise ValueError(str(exc).strip()) from None
        if not isinstance(data, dict) or set(data) - {"basic_auth_users", "bearer_tokens"}:
            raise ValueError(f"{path}: expected a mapping with basic_auth_users and bearer_tokens")
        users = data.get("basic_auth_users") or {}
        tokens = data.get("bearer_tokens") or []
        if not isinstance(users, dict) or not isinstance(tokens, list):
            raise ValueError(f"{path}: basic_auth_users is a mapping, bearer_tokens a list")
        self.users = {
            str(u): _hash_of(h, f"{path}: basic_auth_users.{u}") for u, h in users.items()
        }
        self.tokens = [_hash_of(h, f"{path}: bearer_tokens[{i}]") for i, h in enumerate(tokens)]
        if not self.users and not self.tokens:
            raise ValueError(f"{path}: no basic_auth_users and no bearer_tokens")

    def challenge(self) -> str:
        schemes = (["Basic"] if self.users else []) + (["Bearer"] if self.tokens else [])
        return ", ".join(f'{s} realm="podkit"' for s in schemes)

    def allows(self, authorization: str | None) -> bool:
        scheme, _, cred = (authorization or "").strip().partition(" ")
        cred = cred.strip()
        scheme = scheme.lower()
        if scheme == "bearer" and self.tokens:
            digest = hashlib.sha256(cred.encode("utf-8", "replace")).digest()
            ok = False
            for t in self.tokens:  # no early exit: the time taken says nothing
                ok |= hmac.compare_digest(digest, t)
            return ok
        if scheme == "basic" and self.users:
            try:
                user, sep, password = base64.b64decode(cred, validate=True).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError, and non-ASCII text
                return False
            digest = hashlib.sha256(password.encode()).digest()
            expected = self.users.get(user, b"\0" * 32)
            return hmac.compare_digest(digest, expected) and bool(sep) and user in self.users
        return False


def _hash_of(value: Any, where: str) -> bytes:
    text = str(value).strip()
    algo, _, hexdigest = text.partition(":")
    if text.startswith("$2"):
        raise ValueError(f"{where}: bcrypt hashes are not supported; use sha256:<hex>")
    if algo != "sha256" or len(hexdigest) != 64:
        raise ValueError(f"{where}: expected sha256:<64 hex digits>")
    try:
        return bytes.fromhex(hexdigest)
    except ValueError:
        raise ValueError(f"{where}: expected sha256:<64 hex digits>") from None
