"""Credentials the proxy adds to upstream requests, so the app never holds them.

Every scheme reads its secret from a file (never argv or env) and re-reads it
when the file changes (kubelet rotates mounted Secrets by swapping a symlink):
a bearer token, basic auth (`user:password`), API-key headers (`NAME=FILE`), a
JWT minted from a private key (per request, or reused until half its lifetime
has passed), and OAuth2 client credentials (oauth2.py). What is sent is one
block of header lines, `Injector.lines`, recomputed when a secret changes, so
the fast path pays nothing per request for it; only a per-request JWT is
minted at send time.

A file that becomes unreadable or malformed keeps the last good value (with a
rate-limited warning); an OAuth2 token that expired with the token endpoint
down blocks requests with 503 (`x-podkit-proxy: credentials-unavailable`)
rather than sending them without credentials.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from podkit import UsageError, option
from podkit.http import HOP_BY_HOP, bearer_token_problem, parse_header_files
from podkit.options import OptionGroup
from podkit.secrets import SecretFile, register_secret

from .signing import SigningKey as SigningKey  # re-exported: tests name it from here
from .signing import algorithm_for as algorithm_for
from .signing import load_private_key as load_private_key

if TYPE_CHECKING:
    from .oauth2 import OAuth2Client

log = logging.getLogger("podkit.proxy")

JWT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
CLIENT_AUTH = ("client_secret_basic", "client_secret_post", "private_key_jwt")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# framing and hop-by-hop headers belong to each connection (the core refuses them
# in every program's --header-file), and the proxy writes the X-Forwarded ones
# itself: neither --set-header nor --header-file may set them
NOT_SETTABLE = (*HOP_BY_HOP, "x-forwarded-for", "x-forwarded-proto")


class CredentialOptions(OptionGroup):
    """The credentials one listener adds; every secret comes from a file."""

    bearer_token_file: str | None = option(
        None,
        kind="path",
        help="file with a token sent as 'Authorization: Bearer' (re-read on change)",
    )
    basic_auth_file: str | None = option(
        None,
        kind="path",
        help="file holding user:password, sent as 'Authorization: Basic' (re-read on change)",
    )
    header_file: list[str] = option(
        repeat=True,
        metavar="NAME=FILE",
        help="header NAME set to the content of FILE on every upstream request, e.g. an "
        "API key (re-read on change), repeatable",
    )
    jwt_private_key_file: str | None = option(
        None,
        kind="path",
        help="PEM private key (RSA, EC P-256 or Ed25519): send a JWT signed with it as "
        "'Authorization: Bearer' (re-read on change)",
    )
    jwt_algorithm: str | None = option(
        None,
        choices=JWT_ALGORITHMS,
        help="JWT signature algorithm (default: from the key: RS256, ES256 or EdDSA)",
    )
    jwt_issuer: str | None = option(None, help="the JWT's iss claim")
    jwt_subject: str | None = option(None, help="the JWT's sub claim")
    jwt_audience: str | None = option(None, help="the JWT's aud claim")
    jwt_lifetime: float = option(
        "5m", kind="duration", min=1.0, help="time from a JWT's iat to its exp"
    )
    jwt_claim: list[str] = option(
        repeat=True, metavar="KEY=VALUE", help="a further string claim of the JWT, repeatable"
    )
    jwt_key_id: str | None = option(None, help="the JWT header's kid (to pick the key in a JWKS)")
    jwt_per_request: bool = option(
        False,
        help="mint a new JWT (new jti) for every request; by default one is reused until "
        "half its lifetime has passed",
    )
    oauth2_token_url: str | None = option(
        None,
        kind="url",
        help="OAuth2 token endpoint: fetch an access token by client credentials "
        "(RFC 6749 4.4) and send it as 'Authorization: Bearer'",
    )
    oauth2_client_id: str | None = option(None, help="OAuth2 client_id")
    oauth2_client_secret_file: str | None = option(
        None, kind="path", help="file with the OAuth2 client secret (re-read on change)"
    )
    oauth2_client_auth: str = option(
        "client_secret_basic",
        choices=CLIENT_AUTH,
        help="how the proxy authenticates to the token endpoint",
    )
    oauth2_private_key_file: str | None = option(
        None,
        kind="path",
        help="PEM private key for --oauth2-client-auth private_key_jwt (RFC 7523)",
    )
    oauth2_scope: str | None = option(None, help="OAuth2 scope requested (space-separated)")
    oauth2_audience: str | None = option(
        None, help="audience parameter sent to the token endpoint (Auth0, Okta and others)"
    )
    oauth2_ca_file: str | None = option(
        None, kind="path", help="CA bundle for the token endpoint (default: the system's)"
    )
    oauth2_timeout: float = option(
        "10s", kind="duration", min=0.001, help="timeout of one token request"
    )
    replay_max_body: int = option(
        "64KiB",
        kind="size",
        min=0,
        help="after a 401, a request is replayed with fresh credentials if its body is at "
        "most this big (such bodies are buffered before sending)",
    )

    def header_files(self, pre: str = "", set_headers: Iterable[str] = ()) -> list[tuple[str, str]]:
        """--header-file as (name, path) pairs, read by the core's one parser
        (podkit.http.parse_header_files) with the proxy's refusals: a name
        NOT_SETTABLE, or set twice (by another --header-file or by
        `set_headers`, the --set-header names); UsageError naming the flag."""
        return list(
            parse_header_files(
                self.header_file,
                f"{pre}--header-file",
                refused=NOT_SETTABLE,
                taken=set_headers,
                taken_by="--set-header",
            ).items()
        )

    def authorization_schemes(self) -> list[str]:
        """The flags that each set the Authorization header."""
        flags = {
            "--bearer-token-file": self.bearer_token_file,
            "--basic-auth-file": self.basic_auth_file,
            "--jwt-private-key-file": self.jwt_private_key_file,
            "--oauth2-token-url": self.oauth2_token_url,
        }
        return [flag for flag, value in flags.items() if value]

    def any_credentials(self) -> bool:
        return bool(self.authorization_schemes() or self.header_file)

    def check_credentials(self, pre: str, mode: str, set_headers: list[str]) -> None:
        """Rules across the credential options; `pre` names a --config listener."""
        schemes = self.authorization_schemes()
        if len(schemes) > 1:
            raise UsageError(f"{pre}{' and '.join(schemes)}: only one may set Authorization")
        headers = self.header_files(pre, set_headers)
        if mode == "tcp" and (schemes or headers):
            raise UsageError(f"{pre}{(schemes or ['--header-file'])[0]}: not in TCP mode")
        taken = {n.lower() for n in set_headers} | {n.lower() for n, _ in headers}
        if schemes and "authorization" in taken:
            # two Authorization lines would reach the upstream, which picks one
            raise UsageError(f"{pre}--set-header: Authorization conflicts with {schemes[0]}")
        files = [
            ("--bearer-token-file", self.bearer_token_file),
            ("--basic-auth-file", self.basic_auth_file),
            ("--jwt-private-key-file", self.jwt_private_key_file),
            ("--oauth2-client-secret-file", self.oauth2_client_secret_file),
            ("--oauth2-private-key-file", self.oauth2_private_key_file),
            ("--oauth2-ca-file", self.oauth2_ca_file),
            *(("--header-file", path) for _, path in headers),
        ]
        for flag, path in files:
            if path and not os.path.exists(path):
                raise UsageError(f"{pre}{flag}: {path}: no such file")
        if self.oauth2_token_url:
            if not self.oauth2_token_url.startswith(("http://", "https://")):
                raise UsageError(f"{pre}--oauth2-token-url: must be an http(s) URL")
            if not self.oauth2_client_id:
                raise UsageError(f"{pre}--oauth2-token-url needs --oauth2-client-id")
            if self.oauth2_client_auth == "private_key_jwt":
                if not self.oauth2_private_key_file:
                    raise UsageError(
                        f"{pre}--oauth2-client-auth private_key_jwt needs --oauth2-private-key-file"
                    )
            elif not self.oauth2_client_secret_file:
                raise UsageError(
                    f"{pre}--oauth2-client-auth {self.oauth2_client_auth} needs "
                    "--oauth2-client-secret-file"
                )
        for item in self.jwt_claim:
            key, sep, _ = item.partition("=")
            if not sep or not key:
                raise UsageError(f"{pre}--jwt-claim: {item!r} is not KEY=VALUE")
        if self.jwt_private_key_file or self.oauth2_client_auth == "private_key_jwt":
            try:
                import jwt  # noqa: F401
            except ImportError:
                raise UsageError(
                    f"{pre}JWT signing needs PyJWT with cryptography: pip install 'podkit[proxy]'"
                ) from None


def header_value(value: str, what: str) -> str:
    """A secret as a header value: refused when empty or holding control characters."""
    if not value or _BAD_VALUE.search(value):
        raise ValueError(f"{what} is empty or holds control characters")
    return value


def bearer_value(token: str) -> str:
    problem = bearer_token_problem(token)
    if problem:
        raise ValueError(problem)  # the caller names the flag and file
    return token


class FileHeader:
    """One header line whose value comes from a secret file."""

    def __init__(
        self, flag: str, path: str, render: Callable[[str], str], warning: str = ""
    ) -> None:
        self.flag = flag
        self.file = SecretFile(path)
        self.render = render  # file content -> 'Name: value', ValueError when unusable
        self.warning = warning or f"cannot use {flag} {path}; keeping the old value"

    def line(self) -> str:
        return self.render(self.file.value())

    def changed(self) -> bool:
        return self.file.changed()


def _named(name: str) -> Callable[[str], str]:
    def render(value: str) -> str:
        return f"{name}: " + header_value(value, f"--header-file {name}")

    return render


def _basic(path: str) -> Callable[[str], str]:
    def render(content: str) -> str:
        user, sep, _ = content.partition(":")
        if not sep or not user or "\n" in content or "\r" in content:
            raise ValueError("expected one line user:password")
        encoded = base64.b64encode(content.encode()).decode()
        # the base64 form must be scrubbed from logs too; a rotated file's new
        # encoding takes the old one's place
        register_secret(encoded, slot=("basic", path))
        return f"Authorization: Basic {encoded}"

    return render


class JwtMinter:
    """`Authorization: Bearer <JWT>` signed with --jwt-private-key-file."""

    def __init__(self, opts: CredentialOptions, clock: Callable[[], float] = time.time) -> None:
        assert opts.jwt_private_key_file is not None
        self.key = SigningKey(opts.jwt_private_key_file, opts.jwt_algorithm)
        self.opts = opts
        self.clock = clock
        self.claims: dict[str, Any] = {}
        for item in opts.jwt_claim:
            k, _, v = item.partition("=")
            self.claims[k] = v
        for name, value in (
            ("iss", opts.jwt_issuer),
            ("sub", opts.jwt_subject),
            ("aud", opts.jwt_audience),
        ):
            if value:
                self.claims[name] = value
        self.renew_at = 0.0  # interval mode: when the current token is half-way through

    def mint(self) -> str:
        now = int(self.clock())
        claims = {
            **self.claims,
            "iat": now,
            "nbf": now,
            "exp": now + int(self.opts.jwt_lifetime),
            "jti": uuid.uuid4().hex,
        }
        self.renew_at = now + self.opts.jwt_lifetime / 2
        return self.key.sign(claims, self.opts.jwt_key_id)

    def line(self) -> str:
        return f"Authorization: Bearer {self.mint()}"

    def due(self) -> bool:
        return self.clock() >= self.renew_at or self.key.changed()


class Injector:
    """The credential header lines of one listener, kept current.

    `lines` is what every request gets (bytes, ready to write); `per_request`, when
    set, makes a further line for each request (a JWT with its own jti). `blocked`
    names why requests cannot get credentials now (an OAuth2 token not fetched yet,
    or expired); `generation` changes whenever `lines` does, so a request that got a
    401 can tell whether its credentials are already stale.
    """

    def __init__(
        self,
        opts: CredentialOptions,
        on_change: Callable[[], None],
        on_error: Callable[[str, str], None] = lambda reason, message: None,
    ) -> None:
        self.on_error = on_error  # the program's record_error: shown on `/`
        self.opts = opts
        self.on_change = on_change
        self.files: list[FileHeader] = []
        self.jwt: JwtMinter | None = None
        self.oauth2: OAuth2Client | None = None
        self.lines = b""
        self.per_request: Callable[[], bytes] | None = None
        self.blocked: str | None = None
        self.generation = 0
        self._warned: dict[str, str] = {}
        if opts.bearer_token_file:
            self.files.append(
                FileHeader(
                    "--bearer-token-file",
                    opts.bearer_token_file,
                    lambda v: "Authorization: Bearer " + bearer_value(v),
                    "cannot use the bearer token file; keeping the old token",
                )
            )
        if opts.basic_auth_file:
            self.files.append(
                FileHeader("--basic-auth-file", opts.basic_auth_file, _basic(opts.basic_auth_file))
            )
        for name, path in opts.header_files():
            self.files.append(FileHeader("--header-file", path, _named(name)))
        if opts.jwt_private_key_file:
            self.jwt = JwtMinter(opts)
            if opts.jwt_per_request:
                self.per_request = self._mint_line
        if opts.oauth2_token_url:
            from .oauth2 import OAuth2Client

            self.oauth2 = OAuth2Client(opts, self._token_changed, on_error=on_error)
        self._file_lines: list[str] = []
        self._jwt_line = ""

    @property
    def drop(self) -> list[bytes]:
        """Header names a client's request may not carry: the proxy sets them."""
        names = [name.encode().lower() for name, _ in self.opts.header_files()]
        if self.opts.authorization_schemes():
            names.append(b"authorization")
        return names

    # -- life cycle --------------------------------------------------------------

    def load(self) -> None:
        """Read every file now; UsageError naming the flag when one is unusable."""
        lines = []
        for fh in self.files:
            try:
                lines.append(fh.line())
            except (OSError, ValueError) as exc:
                raise UsageError(f"{fh.flag} {fh.file.path}: {exc}") from None
        self._file_lines = lines
        if self.jwt is not None:
            try:
                line = self.jwt.line()
            except (OSError, ValueError) as exc:
                raise UsageError(f"--jwt-private-key-file {self.jwt.key.path}: {exc}") from None
            self._jwt_line = "" if self.per_request else line
        if self.oauth2 is not None:
            self.oauth2.check_files()
        self._publish()

    async def start(self) -> None:
        if self.oauth2 is not None:
            await self.oauth2.start()

    async def close(self) -> None:
        if self.oauth2 is not None:
            await self.oauth2.close()

    def tick(self) -> None:
        """Once a second: re-read changed files, renew an interval JWT."""
        changed = False
        for i, fh in enumerate(self.files):
            if fh.changed():
                try:
                    line = fh.line()
                except (OSError, ValueError) as exc:
                    self._warn(fh, exc)
                    continue
                if line != self._file_lines[i]:
                    self._file_lines[i] = line
                    changed = True
                    log.info("credential file reloaded", extra={"flag": fh.flag})
        if self.jwt is not None and not self.per_request and self.jwt.due():
            # signs with the last good key if the file broke (SigningKey warns)
            self._jwt_line = self.jwt.line()
            changed = True
        if changed:
            self._publish()

    def _warn(self, fh: FileHeader, exc: Exception) -> None:
        key = fh.file.path
        if self._warned.get(key) != str(exc):  # once per distinct problem
            self._warned[key] = str(exc)
            log.warning(fh.warning, extra={"file": key, "error": str(exc)})
            self.on_error("credentials", f"{fh.flag} {key}: {exc}")

    # -- what requests get ---------------------------------------------------------

    def _mint_line(self) -> bytes:
        assert self.jwt is not None
        return (self.jwt.line() + "\r\n").encode()

    def _token_changed(self) -> None:
        self._publish()

    def _publish(self) -> None:
        parts = list(self._file_lines)
        if self._jwt_line:
            parts.append(self._jwt_line)
        if self.oauth2 is not None:
            token = self.oauth2.token
            self.blocked = None if token else self.oauth2.why_none()
            if token:
                parts.append(f"Authorization: Bearer {token}")
        self.lines = "".join(p + "\r\n" for p in parts).encode()
        self.generation += 1
        self.on_change()

    async def wait_usable(self, timeout: float) -> str | None:
        """None once requests can get credentials (waiting up to `timeout` for a token
        fetch already under way), else why not."""
        if self.blocked is not None and self.oauth2 is not None and timeout > 0:
            await self.oauth2.wait_fetch(timeout)
        return self.blocked

    async def renew_after_401(self, generation: int, timeout: float) -> None:
        """The upstream refused credentials of `generation`: make new ones, once for all
        the requests that saw the same refusal (one token request however many wait)."""
        if generation != self.generation:
            return  # already renewed since that request was sent
        if self.oauth2 is not None:
            await self.oauth2.refresh(timeout)
            return
        # files: kubelet may have rotated the secret this very second; a JWT: mint anew
        for i, fh in enumerate(self.files):
            try:
                self._file_lines[i] = fh.line()
            except (OSError, ValueError):
                pass
        if self.jwt is not None and not self.per_request:
            try:
                self._jwt_line = self.jwt.line()
            except (OSError, ValueError):
                pass
        self._publish()
