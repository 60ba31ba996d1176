"""The series store every source writes into: families by name, conflicts, limits.

One store holds every adapted family, whichever source fed it, so that a
name claimed by two sources with different types or label sets is caught as
a conflict. A conflict never fails a scrape (statsd_exporter #114): the first
family to claim a name keeps it, the offending series is dropped, the
conflict is logged once and counted.

Hot paths (StatsD at 200k lines/s) hold direct references to series objects
and bump plain attributes; the store's `generation` changes whenever a series
is removed (TTL, JSON refresh), which tells those callers to drop their caches.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable
from typing import Any

from podkit.options import OptionGroup, option

from .exposition import _fmt_bound, render_family
from .series import (
    COUNTER,
    HISTOGRAM,
    SUMMARY,
    UNTYPED,
    Budget,
    HistogramSeries,
    Series,
    SummaryOptions,
    SummarySeries,
    TimedHistogramSeries,
    TimedSeries,
)

DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The memory budget (issue 13, class 4). Every string an input can choose
# (metric names, label values, StatsD set members, summary samples) is charged
# in bytes against one budget, so a flood of unique names grows memory to a
# documented ceiling and no further, however long or numerous the names are.
DEFAULT_MAX_SERIES = 100_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_NAME_LENGTH = 256
DEFAULT_MAX_LABEL_VALUE_LENGTH = 1024
#: What one series costs besides its label values, measured with tracemalloc
#: over 100,000 statsd series (object, dict and cache slots, label tuple, the
#: rendered label string, the statsd parse-cache entry that points at it).
SERIES_BYTES = 480
#: Per label: the value's str object header, tuple slot and rendered `k="v",`.
LABEL_BYTES = 96
#: A family: its object, claims on up to five sample names, HELP text.
FAMILY_BYTES = 1600
#: One StatsD set member: its bytes object header plus its set slot.
MEMBER_BYTES = 90

_NAME_OK = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_OK = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_OK_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def parse_buckets(value: Any) -> tuple[float, ...]:
    """Histogram bucket bounds from config, sorted; ValueError saying what is wrong.

    NaN would render as `le="nan"`, which no Prometheus parser accepts, and
    YAML's `true` is not a bound anyone meant.
    """
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise ValueError(f"expected a list of numbers, got {v!r}")
        try:
            f = float(v)
        except ValueError:
            raise ValueError(f"expected a list of numbers, got {v!r}") from None
        if math.isnan(f):
            raise ValueError("NaN is not a bucket bound")
        out.append(f)
    return tuple(sorted(out))


def escape_name(name: str) -> str:
    """statsd_exporter's EscapeMetricName, character for character: every
    character (code point) other than `[a-zA-Z0-9_]` becomes `_`, except a `-`
    right after a `-` (a run of dashes is one `_`); a leading digit gets `_`."""
    if not _BAD_CHARS.search(name):
        return "_" + name if name and name[0] in "0123456789" else name
    out = ["_"] if name[0] in "0123456789" else []
    prev = ""
    for c in name:
        if c in _OK_CHARS:
            out.append(c)
        elif not (c == "-" and prev == "-"):
            out.append("_")
        prev = c
    return "".join(out)


def valid_name(name: str) -> bool:
    return bool(_NAME_OK.match(name))


def valid_label(name: str) -> bool:
    return bool(_LABEL_OK.match(name)) and not name.startswith("__")


def label_allowed(name: str, kind: str) -> bool:
    """A valid label name that this kind of metric may carry. `le` and `quantile`
    belong to histogram buckets and summary quantiles: on those they would
    duplicate a label, on any other typed metric promtool rejects them."""
    return valid_label(name) and (kind == UNTYPED or name not in ("le", "quantile"))


class Family:
    __slots__ = (
        "buckets",
        "help",
        "kind",
        "labelcache",
        "labelnames",
        "les",
        "name",
        "primary",
        "series",
        "siblings",
        "source",
        "store",
        "summary",
        "timestamps",
        "ttl",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        help: str,
        labelnames: tuple[str, ...],
        ttl: float,
        buckets: tuple[float, ...],
        summary: SummaryOptions | None,
        source: str,
        store: Store | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.kind = kind
        self.help = help
        self.labelnames = labelnames
        self.series: dict[tuple[str, ...], Any] = {}
        #: Rendered label strings per series, so a scrape does not re-escape them.
        self.labelcache: dict[tuple[str, ...], str] = {}
        self.les = [_fmt_bound(b) for b in buckets] + ["+Inf"]
        self.ttl = ttl
        self.buckets = buckets
        self.summary = summary
        self.source = source
        #: Series carry a timestamp from their input (log rules' `timestamp:`).
        self.timestamps = False
        #: The same metric with other label names (StatsD, as statsd_exporter
        #: serves them): one family in the exposition, a Family object each.
        self.siblings: dict[tuple[str, ...], Family] = {}
        #: For a sibling, the family that holds the name; None for that one.
        self.primary: Family | None = None

    def parts(self) -> list[Family]:
        """This family and its siblings (the label sets served under its name)."""
        return [self, *self.siblings.values()] if self.siblings else [self]

    def get(self, labelvalues: tuple[str, ...], now: float) -> Any:
        """The series for these label values, created on first use; None when the
        store's series limit is reached (counted as a `limit` conflict)."""
        s = self.series.get(labelvalues)
        if s is None:
            if self.kind == HISTOGRAM:
                hs = TimedHistogramSeries if self.timestamps else HistogramSeries
                s = hs(self.buckets, now)
            elif self.kind == SUMMARY:
                assert self.summary is not None
                s = SummarySeries(self.summary, now, self.store.budget if self.store else None)
            else:
                s = TimedSeries(now) if self.timestamps else Series(now)
            if not self.add(labelvalues, s):
                return None
        return s

    def cost(self, labelvalues: tuple[str, ...]) -> int:
        """Bytes charged for one series of this family (released with it)."""
        # A label value is held three times: in the series key, in the rendered
        # label string, and in the parse-cache key of the line that made it.
        n = SERIES_BYTES + LABEL_BYTES * len(labelvalues) + 3 * sum(map(len, labelvalues))
        if self.kind == HISTOGRAM:
            n += 40 * len(self.les)
        elif self.kind == SUMMARY:
            n += 400  # its slices; the samples are charged as they come
        return n

    def add(self, labelvalues: tuple[str, ...], s: Any) -> bool:
        store = self.store
        if store is not None:
            if store.nseries >= store.max_series:
                store.conflict(self.name, "limit", f"more than {store.max_series} series")
                return False
            limit = store.max_label_value_length
            for v in labelvalues:
                if len(v) > limit:
                    store.conflict(
                        self.name, "too_long", f"a label value is longer than {limit} characters"
                    )
                    return False
            if not store.budget.take(self.cost(labelvalues)):
                store.conflict(self.name, "bytes", f"memory budget of {store.budget.limit} spent")
                return False
            store.nseries += 1
        self.series[labelvalues] = s
        return True


def sample_names(name: str, kind: str) -> tuple[str, ...]:
    """The names a family occupies: its own and the sample names it puts on the
    wire. Two families must not share one: OpenMetrics parsers reject a family
    named like another's sample (a counter `x_bucket` next to a histogram `x`)."""
    if kind == COUNTER:
        return (name, name + "_total", name + "_created")
    if kind == HISTOGRAM:
        return (name, name + "_bucket", name + "_sum", name + "_count", name + "_created")
    if kind == SUMMARY:
        return (name, name + "_sum", name + "_count", name + "_created")
    return (name,)


class Conflict(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Why a sample was dropped: another family holds the name with another type
#: or label set, the name is not allowed, --max-series or --max-series-bytes
#: is reached, or a name or label value is longer than its limit.
CONFLICT_REASONS = ("type", "labels", "name", "limit", "bytes", "too_long")


class Store:
    """Adapted families by name, with conflict detection and TTL expiry."""

    def __init__(
        self,
        log: logging.Logger,
        reserved: Iterable[str] = (),
        max_series: int = DEFAULT_MAX_SERIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
        max_label_value_length: int = DEFAULT_MAX_LABEL_VALUE_LENGTH,
    ) -> None:
        self.log = log
        self.families: dict[str, Family] = {}
        self._claims: dict[str, str] = {}
        self._reserved = set(reserved)
        #: Adapted names may not start with this (the adapter's own metrics do).
        self.reserved_prefix: str | tuple[str, ...] = ""
        self.generation = 0
        self.conflicts: dict[str, int] = dict.fromkeys(CONFLICT_REASONS, 0)
        #: A bound on adapted series, so a flood of new names (a hostile or buggy
        #: client) cannot grow memory without end.
        self.max_series = max_series
        #: Bytes of input-chosen data held (names, label values, set members,
        #: summary samples); a new series beyond it is dropped (`bytes`).
        self.budget = Budget(max_bytes)
        self.max_name_length = max_name_length
        self.max_label_value_length = max_label_value_length
        self.nseries = 0
        self.expired = 0
        self._logged: set[tuple[str, str]] = set()
        #: A clock hot paths read instead of calling time.monotonic() per line.
        self.now = time.monotonic()

    def reserve(self, names: Iterable[str]) -> None:
        self._reserved.update(names)

    def conflict(self, name: str, reason: str, detail: str, count: int = 1) -> None:
        """Count a dropped series; log each (name, reason) once."""
        self.conflicts[reason] = self.conflicts.get(reason, 0) + count
        # Hitting the series limit is one condition however many names a flood
        # brings: log it once, not once per name.
        key = ("", reason) if reason == "limit" else (name, reason)
        if key not in self._logged and len(self._logged) < 10000:
            self._logged.add(key)
            self.log.warning(
                "metric conflict; dropping the offending series",
                extra={"metric": name, "reason": reason, "detail": detail},
            )

    def family(
        self,
        name: str,
        kind: str,
        labelnames: tuple[str, ...],
        help: str = "",
        *,
        ttl: float = 0.0,
        buckets: tuple[float, ...] = DEFAULT_BUCKETS,
        summary: SummaryOptions | None = None,
        source: str = "",
        timestamps: bool = False,
        label_sets: bool = False,
    ) -> Family:
        """The family `name`, created on first use. Raises Conflict (already counted).
        `timestamps`: its series carry a sample timestamp (set by whoever creates it first).
        `label_sets`: other label names than the family's give a sibling family
        served under the same name (statsd_exporter does), not a `labels` conflict."""
        if kind == COUNTER and name.endswith("_total"):
            name = name[:-6]
        fam = self.families.get(name)
        if fam is not None:
            if fam.kind != kind:
                self.conflict(name, "type", f"{fam.kind} (from {fam.source}) vs {kind}")
                raise Conflict("type")
            if (
                fam.labelnames != labelnames
                and label_sets
                and not (kind == HISTOGRAM and fam.buckets != buckets)
            ):
                return self._sibling(fam, labelnames)
            if fam.labelnames != labelnames:
                self.conflict(
                    name,
                    "labels",
                    f"{list(fam.labelnames)} (from {fam.source}) vs {list(labelnames)}",
                )
                raise Conflict("labels")
            if kind == HISTOGRAM and fam.buckets != buckets:
                self.conflict(name, "type", "histogram with different buckets")
                raise Conflict("type")
            return fam
        if len(name) > self.max_name_length or any(
            len(ln) > self.max_name_length for ln in labelnames
        ):
            # Checked first: the conflict log keys on the name, so it must be
            # short before anything remembers it.
            name = name[: self.max_name_length]
            self.conflict(name, "too_long", f"longer than {self.max_name_length} characters")
            raise Conflict("too_long")
        if not valid_name(name):
            self.conflict(name, "name", "not a valid metric name")
            raise Conflict("name")
        if self.reserved_prefix and name.startswith(self.reserved_prefix):
            self.conflict(name, "name", "the adapter's own metrics use this prefix")
            raise Conflict("name")
        self._check_labelnames(name, kind, labelnames)
        owned = sample_names(name, kind)
        for s in owned:
            other = self._claims.get(s)
            if other is not None or s in self._reserved:
                self.conflict(name, "name", f"{s} is already used by {other or 'the adapter'}")
                raise Conflict("name")
        if self.nseries >= self.max_series:
            # A family holds no sample until its first series, which the limit
            # would refuse anyway; created regardless, a flood of new names
            # left one empty family each (~1 KB), unbounded by --max-series.
            self.conflict(name, "limit", f"more than {self.max_series} series")
            raise Conflict("limit")
        help = help or "Adapted by podkit metrics."
        if not self.budget.take(self._family_cost(name, labelnames, help)):
            self.conflict(name, "bytes", f"memory budget of {self.budget.limit} spent")
            raise Conflict("bytes")
        fam = Family(
            name,
            kind,
            help,
            labelnames,
            ttl,
            tuple(buckets),
            summary or (SummaryOptions() if kind == SUMMARY else None),
            source,
            self,
        )
        fam.timestamps = timestamps and kind != SUMMARY
        for s in owned:
            self._claims[s] = name
        self.families[name] = fam
        return fam

    def _check_labelnames(self, name: str, kind: str, labelnames: tuple[str, ...]) -> None:
        """Raise Conflict (counted) unless every label name fits and is allowed."""
        for ln in labelnames:
            if len(ln) > self.max_name_length:
                why = f"a label name is longer than {self.max_name_length} characters"
                self.conflict(name, "too_long", why)
                raise Conflict("too_long")
            if not label_allowed(ln, kind):
                self.conflict(name, "labels", f"label name {ln!r} is not allowed here")
                raise Conflict("labels")

    def _sibling(self, fam: Family, labelnames: tuple[str, ...]) -> Family:
        sib = fam.siblings.get(labelnames)
        if sib is not None:
            return sib
        self._check_labelnames(fam.name, fam.kind, labelnames)
        if self.nseries >= self.max_series:
            self.conflict(fam.name, "limit", f"more than {self.max_series} series")
            raise Conflict("limit")
        if not self.budget.take(self._family_cost(fam.name, labelnames, "")):
            self.conflict(fam.name, "bytes", f"memory budget of {self.budget.limit} spent")
            raise Conflict("bytes")
        sib = Family(
            fam.name,
            fam.kind,
            fam.help,
            labelnames,
            fam.ttl,
            fam.buckets,
            fam.summary,
            fam.source,
            self,
        )
        sib.timestamps = fam.timestamps
        sib.primary = fam
        fam.siblings[labelnames] = sib
        return sib

    def all_families(self) -> list[Family]:
        """Every Family object, siblings included."""
        return [part for fam in self.families.values() for part in fam.parts()]

    @staticmethod
    def _family_cost(name: str, labelnames: tuple[str, ...], help: str) -> int:
        return FAMILY_BYTES + 6 * len(name) + sum(map(len, labelnames)) + len(help)

    def _release(self, fam: Family, labelvalues: tuple[str, ...], s: Any) -> None:
        self.budget.free += fam.cost(labelvalues)
        if hasattr(s, "nbytes"):  # a summary's samples, a set's members
            self.budget.free += s.nbytes
            s.nbytes = 0

    def drop_family(self, fam: Family) -> None:
        if fam.series:
            # Hot paths may hold these series: the generation tells them.
            for lv, s in fam.series.items():
                self._release(fam, lv, s)
            self.nseries -= len(fam.series)
            fam.series.clear()
            fam.labelcache.clear()
            self.generation += 1
        primary = fam.primary
        if primary is not None:
            # A sibling: it goes, and takes the name with it if nothing is left.
            if primary.siblings.get(fam.labelnames) is fam:
                del primary.siblings[fam.labelnames]
                self.budget.free += self._family_cost(fam.name, fam.labelnames, "")
            if not primary.series and not primary.siblings:
                self.drop_family(primary)
            return
        if fam.siblings:
            return  # its name is still served by another label set
        if self.families.get(fam.name) is fam:
            self.budget.free += self._family_cost(fam.name, fam.labelnames, fam.help)
            del self.families[fam.name]
            for s in sample_names(fam.name, fam.kind):
                self._claims.pop(s, None)

    def remove_series(self, fam: Family, labelvalues: tuple[str, ...]) -> None:
        fam.labelcache.pop(labelvalues, None)
        s = fam.series.pop(labelvalues, None)
        if s is not None:
            self._release(fam, labelvalues, s)
            self.nseries -= 1
            self.generation += 1
        if not fam.series:
            self.drop_family(fam)

    def expire(self, now: float | None = None) -> int:
        """Remove series not updated within their family's ttl; returns how many."""
        now = time.monotonic() if now is None else now
        removed = 0
        for fam in self.all_families():
            if not fam.ttl:
                continue
            cutoff = now - fam.ttl
            stale = [k for k, s in fam.series.items() if s.updated < cutoff]
            for k in stale:
                self._release(fam, k, fam.series.pop(k))
                fam.labelcache.pop(k, None)
            if stale:
                removed += len(stale)
                self.nseries -= len(stale)
                self.generation += 1
            if not fam.series:
                self.drop_family(fam)
        self.expired += removed
        return removed

    def series_count(self) -> int:
        return self.nseries

    def next_expiry_check(self) -> float:
        ttls = [f.ttl for f in self.families.values() if f.ttl]
        return max(0.05, min(1.0, min(ttls) / 4)) if ttls else 1.0

    # -- exposition ----------------------------------------------------------

    def render(self, openmetrics: bool = False, now: float | None = None) -> str:
        """Every adapted family, exposition text without the OpenMetrics `# EOF`."""
        now = time.monotonic() if now is None else now
        out: list[str] = []
        for fam in list(self.families.values()):
            if not fam.siblings:
                if fam.series:
                    render_family(fam, now, openmetrics, out)
                continue
            header = True
            for part in fam.parts():
                if part.series:
                    render_family(part, now, openmetrics, out, header)
                    header = False
        return "".join(out)


class StoreLimits(OptionGroup):
    """The store's bounds (`--max-series`, `--max-series-bytes`, ...): what a
    flood of new names from the input can cost, each a flag of the adapter
    whose default is the store's own."""

    max_series: int = option(
        DEFAULT_MAX_SERIES,
        min=1,
        help="most adapted series kept at once; new ones beyond it are dropped and counted "
        "(about 1 KB of memory each)",
    )
    max_series_bytes: int = option(
        f"{DEFAULT_MAX_BYTES // 2**20}MiB",
        kind="size",
        min=1,
        help="memory budget for everything the input chooses (names, label values, set "
        "members, summary samples); new series beyond it are dropped and counted",
    )
    max_name_length: int = option(
        DEFAULT_MAX_NAME_LENGTH,
        min=1,
        help="longest metric or label name; longer ones are dropped and counted "
        "(like Prometheus' label_name_length_limit)",
    )
    max_label_value_length: int = option(
        DEFAULT_MAX_LABEL_VALUE_LENGTH,
        min=1,
        help="longest label value (and StatsD set member); longer ones are dropped and "
        "counted (like Prometheus' label_value_length_limit)",
    )

    def store(self, log: logging.Logger) -> Store:
        """An empty store with these bounds."""
        return Store(
            log,
            max_series=self.max_series,
            max_bytes=self.max_series_bytes,
            max_name_length=self.max_name_length,
            max_label_value_length=self.max_label_value_length,
        )
