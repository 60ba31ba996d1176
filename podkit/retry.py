"""Exponential backoff with full jitter (the AWS architecture blog's variant).

Full jitter spreads retries of many clients evenly over [0, cap], which is
what keeps a recovering peer from being hit by a synchronised wave.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .options import OptionGroup, option

if TYPE_CHECKING:
    import random


class Backoff:
    def __init__(
        self,
        initial: float = 0.1,
        maximum: float = 30.0,
        multiplier: float = 2.0,
        *,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or multiplier < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and multiplier >= 1")
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
        self.jitter = jitter
        self.attempt = 0
        if rng is None:
            import random  # on first use: random costs an idle sidecar ~0.3 MB

            rng = random.Random()
        self._rng = rng

    def ceiling(self) -> float:
        """The cap of the next delay, before jitter."""
        return min(self.maximum, self.initial * self.multiplier ** min(self.attempt, 64))

    def next(self) -> float:
        cap = self.ceiling()
        self.attempt += 1
        return self._rng.uniform(0, cap) if self.jitter else cap

    def reset(self) -> None:
        self.attempt = 0


class RetryOptions(OptionGroup):
    """How an action that must eventually succeed is retried (a webhook, a
    reload, a write): `--retry-max-backoff` with `include(prefix="retry-")`."""

    about = "a failed action"

    max_backoff: float = option(
        "30s",
        kind="duration",
        metavar="DURATION",
        min=0.01,
        help="longest wait between retries of {about}",
    )

    def backoff(self, initial: float = 0.5) -> Backoff:
        """A fresh Backoff from `initial` (never above the maximum) up to it."""
        return Backoff(min(initial, self.max_backoff), self.max_backoff)
