"""The one retry decision: may a failed try be tried again on another upstream?

Three things must all allow it (Envoy's model): the request's own count
(`--retries`), what failed (`--retry-on`, and whether replaying is safe), and
the listener's retry budget (`--retry-budget`: retries in flight stay under a
share of the active requests, but at least 3 are always allowed, so a quiet
proxy can still retry). The fast path and the coroutine both ask here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings

#: Retries in flight the budget always allows, however few requests are active.
MIN_BUDGET = 3.0


def budget_allows(share: float, retrying: int, active: int, holding: bool = False) -> bool:
    """Whether one more retry fits the budget. A try that is itself a retry (`holding`)
    already counts in `retrying`, so its own slot is not held against it."""
    return retrying < max(MIN_BUDGET, share * active) + (1 if holding else 0)


def kind_allows(kinds: frozenset[str], kind: str, idempotent: bool, streamed: bool) -> bool:
    """Whether `--retry-on` covers a failure of this kind, and replaying it is safe.

    A connect failure sent nothing, so every method may go again; anything else
    may have reached the upstream, so only an idempotent request whose body the
    proxy still holds (not streamed) is replayed.
    """
    if kind == "connect-failure":
        return "connect-failure" in kinds
    if not idempotent or streamed:
        return False
    if kind == "timeout":
        return "timeout" in kinds or "504" in kinds
    return kind in kinds  # reset, or a status code as text


def should_retry(
    s: Settings,
    kind: str,
    *,
    idempotent: bool,
    streamed: bool,
    retries: int,
    retrying: int,
    active: int,
    holding: bool = False,
) -> bool:
    """The decision: `retries` made so far for this request, `retrying` and `active`
    the listener's retries in flight and requests in flight."""
    return (
        retries < s.retries
        and kind_allows(s.retry_kinds, kind, idempotent, streamed)
        and budget_allows(s.retry_budget, retrying, active, holding)
    )
