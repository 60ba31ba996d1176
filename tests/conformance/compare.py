"""Two expositions reduced to comparable series, and their differences.

The only normalisation is podkit's documented deliberate difference: a
counter is served with `_total` (the Go exporters serve the bare name, which
promtool rejects); `le`/`quantile` label values are compared as numbers (Go
prints `1`, Python `1.0`); sample timestamps are compared too.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]
Series = dict[Key, tuple[float, float | None]]

#: Families that are each program's own, not adapted data.
OWN = (
    "go_",
    "process_",
    "promhttp_",
    "statsd_exporter_",
    "statsd_metric_mapper_",
    "podkit_",
    "python_",
)
#: The sentinel line each scrape sends (its count is the test's own).
SENTINEL = "conformance_done_total"


def normalise(text: str) -> Series:
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith(OWN):
            continue
        for s in fam.samples:
            name = s.name
            if name.endswith("_created"):
                continue
            if fam.type == "counter" and not name.endswith("_total"):
                name += "_total"
            labels = {
                k: (repr(float(v)) if k in ("le", "quantile") else v) for k, v in s.labels.items()
            }
            ts = None if s.timestamp is None else float(s.timestamp)
            out[(name, tuple(sorted(labels.items())))] = (s.value, ts)
    return out


def diff(
    podkit: Series,
    exporter: Series,
    podkit_only: Collection[str] = (),
    exporter_only: Collection[str] = (),
) -> list[str]:
    """Every series whose presence, value or timestamp differs, except the
    names a side is documented to serve alone."""
    out = []
    for key in sorted(set(podkit) | set(exporter)):
        if key[0] == SENTINEL:
            continue
        a, b = podkit.get(key), exporter.get(key)
        if (b is None and key[0] in podkit_only) or (a is None and key[0] in exporter_only):
            continue
        if (
            a is None
            or b is None
            or not math.isclose(a[0], b[0], rel_tol=1e-9, abs_tol=1e-12)
            or a[1] != b[1]
        ):
            out.append(f"{key[0]}{dict(key[1])}: podkit={a} exporter={b}")
    return out


def helps(text: str) -> dict[str, str]:
    """HELP text per family (counters under their `_total`-less family name)."""
    return {f.name: f.documentation for f in text_string_to_metric_families(text)}
