"""Private keys that sign JWTs (--jwt-private-key-file, OAuth2's private_key_jwt).

Apart from credentials.py so that oauth2.py, which signs client assertions, needs
nothing from the module that builds it (the proxy's modules form no import cycle).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from podkit.fsutil import file_sig
from podkit.secrets import register_secret

log = logging.getLogger("podkit.proxy")


def load_private_key(path: str) -> Any:
    """A PEM private key object (cryptography); ValueError when it is not one."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    with open(path, "rb") as f:
        data = f.read()
    try:
        return load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None


def algorithm_for(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp256r1":
            raise ValueError(f"EC key on {key.curve.name}: ES256 needs P-256")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"unsupported key type {type(key).__name__}")


class SigningKey:
    """A private key file, re-read when it changes, and the algorithm it signs with."""

    def __init__(self, path: str, algorithm: str | None = None, purpose: str = "jwt") -> None:
        self.path = path
        self.wanted = algorithm
        # Every JWT signed here is a bearer credential until it expires, so it is
        # scrubbed from logs. One slot per key object: a per-request minter keeps its
        # latest two, not one per request, and two listeners signing with the same
        # file (or a --jwt-* key that is also an --oauth2-private-key-file) do not
        # push each other's current token out.
        self.slot = (purpose, path, id(self))
        self.key: Any = None
        self.algorithm = ""
        self._sig: tuple[int, int, int, int] | None = None

    def changed(self) -> bool:
        return file_sig(self.path) != self._sig

    def load(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            if self.key is not None:
                self._sig = None  # gone: changed() again once it is back
            raise
        sig = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            key = load_private_key(self.path)
            algorithm = algorithm_for(key)
            if self.wanted and self.wanted != algorithm:
                raise ValueError(f"the key signs {algorithm}, not {self.wanted}")
        except ValueError:
            if self.key is not None:
                self._sig = sig  # this broken version is not read again; the old key stays
            raise
        self.key, self.algorithm = key, algorithm
        self._sig = sig

    def sign(self, claims: dict[str, Any], kid: str | None = None) -> str:
        import jwt

        if self.key is None or self.changed():
            try:
                self.load()
            except (OSError, ValueError) as exc:
                if self.key is None:
                    raise
                log.warning(
                    "cannot use the new signing key; signing with the old one",
                    extra={"file": self.path, "error": str(exc)},
                )
        headers = {"kid": kid} if kid else None
        token = jwt.encode(claims, self.key, algorithm=self.algorithm, headers=headers)
        register_secret(token, slot=self.slot)
        return token
