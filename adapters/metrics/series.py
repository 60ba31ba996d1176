"""The series kinds the store holds (counter/gauge/untyped values, histograms,
summaries over a sliding window) and the byte budget they are charged to.

Plain objects with __slots__ whose attributes the sources' hot paths bump
directly; what names them and bounds how many there are is store.py's.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from random import random as _random
from typing import Any

COUNTER = "counter"
GAUGE = "gauge"
UNTYPED = "untyped"
HISTOGRAM = "histogram"
SUMMARY = "summary"
KINDS = (COUNTER, GAUGE, UNTYPED, HISTOGRAM, SUMMARY)

DEFAULT_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
#: One summary sample, kept in an array('d').
SAMPLE_BYTES = 8


class Budget:
    """Bytes left for input-chosen data; `take` is the only way to spend them."""

    __slots__ = ("free", "limit", "starved")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        #: Summary samples not kept because the budget was spent.
        self.starved = 0

    def take(self, n: int) -> bool:
        if self.free < n:
            return False
        self.free -= n
        return True

    @property
    def used(self) -> int:
        return self.limit - self.free


class Series:
    """A counter, gauge or untyped value."""

    __slots__ = ("updated", "value")

    def __init__(self, now: float) -> None:
        self.value = 0.0
        self.updated = now


class TimedSeries(Series):
    """A Series that also carries the time its input says it happened (unix
    seconds, from a log line), served as the sample timestamp."""

    __slots__ = ("ts",)

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.ts: float | None = None


class HistogramSeries:
    __slots__ = ("bounds", "count", "counts", "sum", "updated")

    def __init__(self, bounds: Sequence[float], now: float) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0
        self.updated = now

    def observe(self, v: float) -> None:
        # Prometheus buckets are `le` (upper bound inclusive): bisect_left puts
        # v == bound into that bound's bucket.
        self.counts[bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.count += 1


class TimedHistogramSeries(HistogramSeries):
    __slots__ = ("ts",)

    def __init__(self, bounds: Sequence[float], now: float) -> None:
        super().__init__(bounds, now)
        self.ts: float | None = None


class SummaryOptions:
    __slots__ = ("age_buckets", "buf_cap", "max_age", "quantiles")

    def __init__(
        self,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        max_age: float = 600.0,
        age_buckets: int = 5,
        buf_cap: int = 500,
    ) -> None:
        self.quantiles = tuple(quantiles)
        self.max_age = max_age
        self.age_buckets = max(1, age_buckets)
        self.buf_cap = max(1, buf_cap)

    def key(self) -> tuple[Any, ...]:
        return (self.quantiles, self.max_age, self.age_buckets, self.buf_cap)


class SummarySeries:
    """Quantiles over a sliding window of `max_age`, kept in `age_buckets` slices.

    Each slice holds at most `buf_cap` * 4 samples, reservoir-sampled beyond
    that, so memory per series is bounded; quantiles are exact while the
    window holds fewer samples and a uniform-sample estimate beyond. Samples
    are charged to the store's byte budget as they are kept (`nbytes`); with
    the budget spent, a slice stops growing and samples within what it holds.
    """

    __slots__ = (
        "budget",
        "count",
        "nbytes",
        "opts",
        "seen",
        "slice_start",
        "slices",
        "sum",
        "updated",
    )

    def __init__(self, opts: SummaryOptions, now: float, budget: Budget | None = None) -> None:
        self.opts = opts
        self.slices: list[array[float]] = [array("d")]
        self.budget = budget
        self.nbytes = 0
        self.seen = 0
        self.slice_start = now
        self.sum = 0.0
        self.count = 0
        self.updated = now

    def _rotate(self, now: float) -> None:
        width = self.opts.max_age / self.opts.age_buckets
        if now - self.slice_start < width:
            return
        # The current slice may hold samples from just now (observe() does not
        # read the clock), so it is kept as the newest complete slice; only the
        # slices before it age out.
        steps = int((now - self.slice_start) / width)
        keep_current = self.opts.age_buckets > 1
        for _ in range(max(1, min(steps, self.opts.age_buckets - 1)) if keep_current else 1):
            self.slices.append(array("d"))
        cut = max(0, len(self.slices) - self.opts.age_buckets)
        freed = SAMPLE_BYTES * sum(len(s) for s in self.slices[:cut])
        del self.slices[:cut]
        if freed and self.budget is not None:
            self.nbytes -= freed
            self.budget.free += freed
        self.slice_start = now
        self.seen = 0

    def observe(self, v: float) -> None:
        self.sum += v
        self.count += 1
        cur = self.slices[-1]
        self.seen += 1
        cap = self.opts.buf_cap * 4
        n = len(cur)
        if n < cap and (self.budget is None or self.budget.take(SAMPLE_BYTES)):
            cur.append(v)
            self.nbytes += SAMPLE_BYTES
        elif n:
            # Reservoir sampling within what the slice holds. int(random() * n)
            # is uniform enough here and ~4x cheaper than randrange.
            j = int(_random() * self.seen)
            if j < n:
                cur[j] = v
        else:
            assert self.budget is not None
            self.budget.starved += 1

    def quantiles(self, now: float) -> list[tuple[float, float]]:
        self._rotate(now)
        values = sorted(v for s in self.slices for v in s)
        out = []
        for q in self.opts.quantiles:
            if not values:
                out.append((q, math.nan))
                continue
            # Nearest rank, as the Go client's CKMS estimate converges to.
            idx = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
            out.append((q, values[idx]))
        return out


AnySeries = Series | HistogramSeries | SummarySeries
