"""GitHub App auth as git-sync does it: an RS256 JWT exchanged for an installation token.

The app's private key (PEM, PKCS#1 as GitHub hands it out, or PKCS#8) signs a
short JWT; `POST {base}/app/installations/{id}/access_tokens` answers with a
token valid for an hour, used as the password of user `x-access-token`. It is
refreshed five minutes before it expires. The RSA signature is computed here
(PKCS#1 v1.5 over SHA-256, a few lines of integer arithmetic), so no
cryptography library is needed for one signature an hour.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import json
import re
import time
from dataclasses import dataclass, field

from podkit.secrets import register_secret

from .errors import GitError

#: Refresh the installation token this long before GitHub says it expires.
REFRESH_BEFORE = 300.0
#: How long minting a token may take.
TIMEOUT = 10.0
USERNAME = "x-access-token"
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at `pos`."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, s, e = _der(data, start)
        out.append((tag, s, e))
        start = e
    return out


def rsa_key(pem: str) -> tuple[int, int]:
    """(n, d) of an RSA private key in PEM (PKCS#1 or PKCS#8); ValueError otherwise."""
    m = re.search(r"-----BEGIN (RSA )?PRIVATE KEY-----(.+?)-----END", pem, re.S)
    if not m:
        raise ValueError("not a PEM RSA private key")
    der = base64.b64decode("".join(m.group(2).split()))
    _, s, e = _der(der, 0)
    items = _children(der, s, e)
    if not m.group(1):  # PKCS#8: version, algorithm, OCTET STRING holding PKCS#1
        if len(items) < 3 or items[2][0] != 0x04:
            raise ValueError("not a PKCS#8 RSA key")
        der = der[items[2][1] : items[2][2]]
        _, s, e = _der(der, 0)
        items = _children(der, s, e)
    ints = [int.from_bytes(der[a:b], "big") for t, a, b in items if t == 0x02]
    if len(ints) < 4:
        raise ValueError("not an RSA private key")
    return ints[1], ints[3]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer: str, key: tuple[int, int], now: float) -> str:
    """An RS256 JWT for GitHub: issued a minute ago (clock skew), valid nine minutes."""
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = {"iat": int(now) - 60, "exp": int(now) + 540, "iss": issuer}
    payload = _b64(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    n, d = key
    k = (n.bit_length() + 7) // 8
    digest = _SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    em = b"\x00\x01" + b"\xff" * (k - len(digest) - 3) + b"\x00" + digest
    signature = pow(int.from_bytes(em, "big"), d, n).to_bytes(k, "big")
    return f"{header}.{payload}.{_b64(signature)}"


@dataclass
class GitHubApp:
    key_file: str
    issuer: str  # the application id or the client id
    installation_id: str
    base_url: str = "https://api.github.com/"
    _token: str = ""
    _expires: float = 0.0
    _key: tuple[int, int] | None = field(default=None, repr=False)

    def token(self) -> tuple[str, bool]:
        """The installation token, and whether it is new (minted just now)."""
        now = time.time()
        if self._token and now < self._expires - REFRESH_BEFORE:
            return self._token, False
        self._token, self._expires = self._mint(now)
        return self._token, True

    def _mint(self, now: float) -> tuple[str, float]:
        import urllib.error
        import urllib.request

        try:
            with open(self.key_file, encoding="utf-8") as f:
                self._key = rsa_key(f.read())
        except (OSError, ValueError) as exc:
            raise GitError(f"--github-app-private-key-file: {exc}") from None
        url = f"{self.base_url.rstrip('/')}/app/installations/{self.installation_id}/access_tokens"
        # The app's JWT is a bearer credential for nine minutes (it mints installation
        # tokens of any repository the app is installed on): scrubbed like them, one
        # slot per GitHubApp (one per repository) so that a day of hourly mints keeps
        # the latest two.
        app_jwt = jwt(self.issuer, self._key, now)
        register_secret(app_jwt, slot=("github-app jwt", self.key_file, id(self)))
        req = urllib.request.Request(
            url,
            method="POST",
            data=b"",
            headers={
                "Authorization": f"Bearer {app_jwt}",
                "Accept": "application/vnd.github+json",
                "User-Agent": "podkit-gitsync",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                data = json.loads(r.read(1 << 20))
            token = str(data["token"])
            expires = float(
                calendar.timegm(time.strptime(data["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
            )
        except urllib.error.HTTPError as exc:
            err = GitError(f"GitHub App token: HTTP {exc.code} from {url}")
            err.remote = True
            raise err from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            err = GitError(f"GitHub App token: {exc}")
            err.remote = True
            raise err from None
        return token, expires
