"""The exposition: adapted families written out in the Prometheus text format
(0.0.4) or OpenMetrics 1.0, and the adapter's own podkit_metrics_* families.

Written by hand rather than through prometheus_client's Sample objects, for
speed (see render_family); the store calls it for each family at scrape time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from .series import COUNTER, GAUGE, HISTOGRAM, UNTYPED

if TYPE_CHECKING:
    from .store import Family

#: Sample timestamps are served only inside this window around the scrape.
#: Prometheus refuses a sample older than its head block ("out of bounds",
#: about an hour back at most) and a series whose timestamp goes backwards;
#: a line read long after it was written (a backlog, a restart reading from
#: the head) is therefore served at scrape time instead.
TIMESTAMP_MAX_AGE = 3600.0
TIMESTAMP_MAX_AHEAD = 600.0


def sample_timestamp(ts: float | None, wall: float, openmetrics: bool) -> str:
    """` <timestamp>` for a sample line, or "" outside the window: milliseconds
    in the text format (0.0.4), seconds in OpenMetrics."""
    if ts is None or not wall - TIMESTAMP_MAX_AGE <= ts <= wall + TIMESTAMP_MAX_AHEAD:
        return ""
    return f" {ts!r}" if openmetrics else f" {round(ts * 1000)}"


def _fmt_bound(b: float) -> str:
    return "+Inf" if b == math.inf else repr(float(b))


_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def fmt_value(v: float) -> str:
    r = repr(v)
    # Only inf, -inf and nan end in a letter; everything else is Go-parseable.
    return _SPECIAL[r] if r[-1] in "fn" else r


def _escape_label(v: str) -> str:
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate, from a "\ud800" escape in the app's JSON: no
            # UTF-8 holds it, and the whole exposition would fail to encode
            # (every scrape a 500). Written as the escape it came from.
            v = v.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return v


def _escape_help(v: str, openmetrics: bool) -> str:
    v = v.replace("\\", "\\\\").replace("\n", "\\n")
    return v.replace('"', '\\"') if openmetrics else v


def _labelstr(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    """`k="v",k2="v2"` (no braces): built once per series and cached."""
    return ",".join(f'{k}="{_escape_label(v)}"' for k, v in zip(names, values, strict=True))


def render_family(
    fam: Family, now: float, openmetrics: bool, out: list[str], header: bool = True
) -> None:
    """Append one family in the text format (0.0.4) or OpenMetrics 1.0
    (`header`: with its HELP and TYPE lines; a sibling label set follows
    its family's lines without).

    Written out by hand rather than through prometheus_client's Sample
    objects: with 10,000 series that takes a scrape from ~100 ms to ~20 ms.
    """
    kind, name = fam.kind, fam.name
    cache = fam.labelcache
    names = fam.labelnames
    help = _escape_help(fam.help, openmetrics)
    if not header:
        pass
    elif kind == COUNTER:
        head = name if openmetrics else name + "_total"
        out.append(f"# HELP {head} {help}\n# TYPE {head} counter\n")
    else:
        t = ("unknown" if openmetrics else "untyped") if kind == UNTYPED else kind
        out.append(f"# HELP {name} {help}\n# TYPE {name} {t}\n")
    add = out.append
    simple = kind in (COUNTER, GAUGE, UNTYPED)
    sname = name + "_total" if kind == COUNTER else name
    timed = fam.timestamps
    wall = time.time()
    ts = ""
    for lv, s in list(fam.series.items()):
        ls = cache.get(lv)
        if ls is None:
            ls = cache[lv] = _labelstr(names, lv)
        if timed:
            ts = sample_timestamp(s.ts, wall, openmetrics)
        if simple:
            if ls:
                add(f"{sname}{{{ls}}} {fmt_value(s.value)}{ts}\n")
            else:
                add(f"{sname} {fmt_value(s.value)}{ts}\n")
            continue
        sep = "," if ls else ""
        suffix = f"{{{ls}}}" if ls else ""
        if kind == HISTOGRAM:
            acc = 0
            for le, c in zip(fam.les, s.counts, strict=True):
                acc += c
                add(f'{name}_bucket{{{ls}{sep}le="{le}"}} {acc}{ts}\n')
        else:
            for q, v in s.quantiles(now):
                add(f'{name}{{{ls}{sep}quantile="{q!r}"}} {fmt_value(v)}\n')
        add(f"{name}_count{suffix} {s.count}{ts}\n{name}_sum{suffix} {fmt_value(s.sum)}{ts}\n")


def own_metric(
    name: str,
    kind: str,
    help: str,
    labelnames: Sequence[str],
    values: Iterable[tuple[Sequence[str], float]],
) -> Metric:
    """One of the adapter's own podkit_metrics_* families, built at scrape time."""
    m = Metric(name, help, kind)
    sname = name + "_total" if kind == COUNTER else name
    for lv, v in values:
        m.samples.append(Sample(sname, dict(zip(labelnames, lv, strict=True)), v, None, None))
    return m


class Collector:
    """prometheus-client Collector interface for the adapter's own metrics
    (the adapted families are rendered by Store.render)."""

    def __init__(self, extra: Callable[[], Iterable[Metric]]) -> None:
        self.extra = extra

    def collect(self) -> Iterable[Metric]:
        yield from self.extra()

    def describe(self) -> Iterable[Metric]:
        # Returning nothing stops the registry from calling collect() at register
        # time (auto_describe) and from checking our dynamic names for duplicates.
        return []
