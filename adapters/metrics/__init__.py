"""metrics: JSON stats, StatsD and log lines in, Prometheus /metrics out.

The adapter pattern: the app keeps speaking its own dialect and this
program, next to it in the pod, presents a standard Prometheus endpoint.
Sources (json, statsd, log) are small components chosen by `type`
(`sources.register` adds more); they all write into one Store, which the
admin server's /metrics renders after the registry's own output (process_*,
podkit_build_info, and the adapter's podkit_metrics_* through a collector).
"""

from __future__ import annotations

from . import json_exporter as json_exporter
from . import json_source as json_source
from . import log_source as log_source
from . import statsd as statsd
from .program import AdapterMetrics, MetricsAdapter, main
from .sources import SOURCES

__all__ = [
    "SOURCES",
    "AdapterMetrics",
    "MetricsAdapter",
    "json_exporter",
    "json_source",
    "log_source",
    "main",
    "statsd",
]
