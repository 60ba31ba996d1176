"""OAuth2 client credentials (RFC 6749 4.4): an access token fetched, cached, renewed.

One token per listener. It is renewed ahead of expiry, at a jittered fraction
of `expires_in` (so a fleet of pods does not hit the token endpoint in step),
and on demand after an upstream's 401. However many requests wait, exactly one
token request is in flight: the others await the same task. When the token
endpoint fails, the current token is kept until it expires, with retries on a
backoff; after that requests are refused with 503 rather than sent without a
token (or with one the upstream will refuse).

Client authentication at the token endpoint: `client_secret_basic` (RFC 6749
2.3.1: id and secret form-encoded, then HTTP Basic), `client_secret_post`
(both in the form), or `private_key_jwt` (RFC 7523 2.2: a short-lived JWT
signed with the client's key, iss = sub = client_id, aud = the token URL).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Protocol
from urllib.parse import quote, urlencode

from podkit import UsageError
from podkit.httpclient import HTTPClientError, fetch
from podkit.retry import Backoff
from podkit.secrets import SecretFile, register_secret

from .signing import SigningKey

log = logging.getLogger("podkit.proxy")

#: The token is renewed when this share of its lifetime has passed, +-JITTER.
RENEW_AT = 0.8
JITTER = 0.05
#: Lifetime assumed when the token endpoint gives no expires_in: renewed this
#: often, and never dropped for age (a 401 still renews it).
NO_EXPIRY = 3600.0
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60


class TokenError(Exception):
    """The token endpoint did not give a usable token (the message says why)."""


def renew_delay(lifetime: float, rng: random.Random) -> float:
    """Seconds after issue to renew a token valid for `lifetime` seconds."""
    return lifetime * rng.uniform(RENEW_AT - JITTER, RENEW_AT + JITTER)


class OAuth2Options(Protocol):
    """The --oauth2-* options (CredentialOptions has them)."""

    oauth2_token_url: str | None
    oauth2_client_id: str | None
    oauth2_client_secret_file: str | None
    oauth2_client_auth: str
    oauth2_private_key_file: str | None
    oauth2_scope: str | None
    oauth2_audience: str | None
    oauth2_ca_file: str | None
    oauth2_timeout: float


class OAuth2Client:
    def __init__(
        self,
        opts: OAuth2Options,
        on_change: Callable[[], None],
        rng: random.Random | None = None,
        on_error: Callable[[str, str], None] = lambda reason, message: None,
    ) -> None:
        self.on_error = on_error  # the program's record_error: shown on `/`
        assert opts.oauth2_token_url and opts.oauth2_client_id
        self.opts = opts
        self.url = opts.oauth2_token_url
        self.client_id = opts.oauth2_client_id
        self.on_change = on_change
        self.rng = rng or random.Random()
        self.secret = (
            SecretFile(opts.oauth2_client_secret_file) if opts.oauth2_client_secret_file else None
        )
        self.key: SigningKey | None = None
        if opts.oauth2_client_auth == "private_key_jwt":
            assert opts.oauth2_private_key_file
            # its client assertions are scrubbed from logs under their own slot
            self.key = SigningKey(opts.oauth2_private_key_file, purpose="oauth2 client assertion")
        self.ssl_ctx: ssl.SSLContext | None = None
        self.token: str | None = None
        self.expires_at = 0.0  # loop time; inf when the endpoint named no lifetime
        self.renew_at = 0.0
        self.error = ""  # why the last fetch failed
        self.fetches = 0
        self._inflight: asyncio.Task[bool] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def check_files(self) -> None:
        """Read the secret or key and build the TLS context now: a usage error at start."""
        try:
            if self.key is not None:
                self.key.load()
            elif self.secret is not None and not self.secret.value():
                raise ValueError("empty")
        except (OSError, ValueError) as exc:
            if self.key is not None:
                flag, path = "--oauth2-private-key-file", self.key.path
            else:
                flag, path = "--oauth2-client-secret-file", self.secret.path if self.secret else ""
            raise UsageError(f"{flag} {path}: {exc}") from None
        if self.url.startswith("https://"):
            try:
                self.ssl_ctx = ssl.create_default_context(cafile=self.opts.oauth2_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UsageError(f"--oauth2-ca-file {self.opts.oauth2_ca_file}: {exc}") from None

    # -- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._keep_fresh())

    async def close(self) -> None:
        for t in (self._task, self._inflight):
            if t is not None:
                t.cancel()
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass

    async def _keep_fresh(self) -> None:
        """Fetch the first token, renew it ahead of expiry, retry with backoff when the
        endpoint fails, and drop the token the moment it expires."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(0.5, 30.0)
        retry_at = 0.0
        while True:
            now = loop.time()
            if self.token is not None and now >= self.expires_at:
                self.token = None
                log.error(
                    "OAuth2 access token expired and could not be renewed; refusing requests",
                    extra={"token_url": self.url, "error": self.error},
                )
                self.on_change()
            due = self.renew_at if self.token is not None else 0.0
            if now >= max(due, retry_at):
                if await self.refresh(None):
                    backoff.reset()
                    retry_at = 0.0
                else:
                    retry_at = loop.time() + backoff.next()
                continue
            wake_at = max(due, retry_at)
            if self.token is not None:
                wake_at = min(wake_at, self.expires_at)
            self._wake.clear()
            try:
                async with asyncio.timeout(max(0.0, wake_at - now)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- fetching ------------------------------------------------------------------

    async def refresh(self, timeout: float | None) -> bool:
        """Fetch a token, joining the fetch already in flight if there is one; True when
        a token was obtained. `timeout` bounds the wait, not the fetch."""
        task = self._inflight
        if task is None:
            task = self._inflight = asyncio.get_running_loop().create_task(self._fetch())
            task.add_done_callback(self._fetched)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(task)
        except TimeoutError:
            return False

    def _fetched(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None
        self._wake.set()  # the keeper re-plans around the new token (or the failure)

    async def wait_fetch(self, timeout: float) -> None:
        """Wait (up to `timeout`) for a fetch already under way: requests that arrive
        while the first token is being fetched wait for it rather than fail."""
        task = self._inflight
        if task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except (TimeoutError, Exception):
                pass

    def why_none(self) -> str:
        if self.fetches == 0 or not self.error:
            return "no OAuth2 access token yet"
        return f"no valid OAuth2 access token: {self.error}"

    async def _fetch(self) -> bool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.fetches += 1
        try:
            token, lifetime = await self._request()
        except (OSError, TimeoutError, HTTPClientError, TokenError, ValueError) as exc:
            self.error = str(exc) or type(exc).__name__
            log.warning(
                "OAuth2 token request failed; keeping the current token until it expires",
                extra={"token_url": self.url, "error": self.error},
            )
            self.on_error("token", f"OAuth2 token request to {self.url} failed: {self.error}")
            if self.token is None:
                self.on_change()  # requests are refused with this reason now
            return False
        # A slot per client: listeners sharing a token URL and client id each fetch
        # their own token, and one slot let the others' renewals evict this one's.
        register_secret(token, slot=("oauth2 token", self.url, self.client_id, id(self)))
        self.token = token
        self.error = ""
        if lifetime is None:
            self.expires_at = float("inf")
            self.renew_at = started + NO_EXPIRY
        else:
            self.expires_at = started + lifetime  # counted from the request: conservative
            self.renew_at = started + renew_delay(lifetime, self.rng)
        log.info(
            "OAuth2 access token obtained",
            extra={"token_url": self.url, "expires_in": lifetime},
        )
        self.on_change()
        return True

    async def _request(self) -> tuple[str, float | None]:
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self.opts.oauth2_scope:
            form["scope"] = self.opts.oauth2_scope
        if self.opts.oauth2_audience:
            form["audience"] = self.opts.oauth2_audience
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        method = self.opts.oauth2_client_auth
        if method == "private_key_jwt":
            form["client_id"] = self.client_id
            form["client_assertion_type"] = ASSERTION_TYPE
            form["client_assertion"] = self.assertion()
        else:
            assert self.secret is not None
            secret = self.secret.value()
            if method == "client_secret_post":
                form["client_id"] = self.client_id
                form["client_secret"] = secret
            else:
                # RFC 6749 2.3.1: each part form-urlencoded before the Basic encoding
                pair = f"{quote(self.client_id, safe='')}:{quote(secret, safe='')}"
                encoded = base64.b64encode(pair.encode()).decode()
                register_secret(encoded, slot=("oauth2 client", self.url, self.client_id))
                headers["Authorization"] = f"Basic {encoded}"
        res = await fetch(
            "POST",
            self.url,
            headers=headers,
            body=urlencode(form).encode(),
            timeout=self.opts.oauth2_timeout,
            ssl_ctx=self.ssl_ctx,
            max_body=64 * 1024,
        )
        return parse_token_response(res.status, res.body)

    def assertion(self) -> str:
        """RFC 7523 2.2: the client's JWT for the token endpoint."""
        assert self.key is not None
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        return self.key.sign(claims)


def parse_token_response(status: int, body: bytes) -> tuple[str, float | None]:
    """(access_token, expires_in or None) from a token endpoint's answer; TokenError
    saying why not (the endpoint's `error` code, never its whole body)."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # nested past the recursion limit: no answer either
        data = None
    if status != 200:
        code = data.get("error") if isinstance(data, dict) else None
        detail = f" ({str(code)[:64]})" if code else ""
        raise TokenError(f"token endpoint answered {status}{detail}")
    if not isinstance(data, dict):
        raise TokenError("token endpoint answered 200 without a JSON object")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise TokenError("token endpoint answered 200 without an access_token")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise TokenError("access_token holds spaces or control characters")
    kind = data.get("token_type")
    if not isinstance(kind, str) or kind.lower() != "bearer":
        raise TokenError(f"token_type {str(kind)[:32]!r} is not Bearer")
    lifetime = data.get("expires_in")
    if lifetime is None:
        return token, None
    if isinstance(lifetime, str) and lifetime.isdigit():
        lifetime = int(lifetime)  # some servers send it as a string
    if not isinstance(lifetime, int | float) or isinstance(lifetime, bool):
        raise TokenError(f"expires_in {str(lifetime)[:32]!r} is not a positive number")
    try:
        seconds = float(lifetime)
    except OverflowError:  # an int past float's range
        seconds = math.inf
    # json.loads takes NaN and Infinity and makes 1e999 inf: a NaN expiry
    # compares false with every clock reading, and the keeper would spin.
    if not 0 < seconds < math.inf:
        raise TokenError(f"expires_in {str(lifetime)[:32]!r} is not a positive number")
    return token, seconds
