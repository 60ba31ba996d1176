"""Who may ask for a sync, and how often: the guard in front of `POST /sync`.

`POST /sync` changes state (it starts git against the remote), so anyone who
can reach the admin port could otherwise make gitsync hammer the git server.
Two defences, both here:

- **Authentication** (optional, `--sync-token-file`): the request must carry
  the shared secret as `Authorization: Bearer <token>` or GitLab's
  `X-Gitlab-Token: <token>`, or sign its body with it as GitHub does
  (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`). Every
  comparison is constant-time (`hmac.compare_digest`); the file is re-read when
  it changes (one stat per request), and an empty or unreadable file refuses
  every request rather than accepting any.
- **Rate limiting** (always): a token bucket of `SYNC_BURST` requests refilled
  one per `SYNC_REFILL` seconds; beyond it `429` with `Retry-After`. Accepted
  requests coalesce on one event, so at most one sync is ever queued behind
  the running one, however many requests arrive.

Refusals are answered before the bucket is touched, so a flood without the
secret cannot use up the budget of the real webhook.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from podkit.admin import Request
from podkit.secrets import SecretFile

#: Sync requests accepted at once (a burst of pushes, a retried webhook delivery).
SYNC_BURST = 5
#: Seconds until the bucket holds one more request.
SYNC_REFILL = 1.0


class TokenBucket:
    """`burst` tokens, one more every `refill` seconds."""

    def __init__(
        self,
        burst: int = SYNC_BURST,
        refill: float = SYNC_REFILL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.refill = refill
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) / self.refill)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) * self.refill


def refusal(request: Request, token: SecretFile | None) -> str | None:
    """Why `request` may not trigger a sync, or None when it may.

    Without a token file every request may (the rate limit still applies).
    """
    if token is None:
        return None
    import hashlib  # only with a token file: an open trigger never needs them
    import hmac

    try:
        secret = token.value().encode("utf-8")
    except (OSError, UnicodeDecodeError):
        return "--sync-token-file unreadable"
    if not secret:
        return "--sync-token-file is empty"
    h = request.headers
    auth = h.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return None if _same(auth[7:].strip(), secret) else "wrong bearer token"
    if "x-gitlab-token" in h:
        return None if _same(h["x-gitlab-token"], secret) else "wrong X-Gitlab-Token"
    signature = h.get("x-hub-signature-256")
    if signature is not None:
        want = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
        return None if _same(signature.lower(), want.encode()) else "bad X-Hub-Signature-256"
    return "no credentials"


def _same(sent: str, secret: bytes) -> bool:
    import hmac

    # Header values were decoded as latin-1: that encoding gives the bytes back.
    return hmac.compare_digest(sent.encode("latin-1", "replace"), secret)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
