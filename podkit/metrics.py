"""Prometheus metrics: one registry per program, named podkit_<program>_<what>_<unit>."""

from __future__ import annotations

import platform
from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.process_collector import ProcessCollector

from . import __version__


class Metrics:
    """The program's metrics registry, with constructors that apply the naming rule."""

    def __init__(self, program: str) -> None:
        # No `_created` series: a sidecar's counters start with the process,
        # which process_start_time_seconds already says, and each would double
        # the series of every counter and histogram (process-wide setting).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.program = program
        self.prefix = f"podkit_{program.replace('-', '_')}_"
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        info = Gauge(
            "podkit_build_info",
            "podkit build: version, Python version, program",
            ["version", "python_version", "program"],
            registry=self.registry,
        )
        info.labels(__version__, platform.python_version(), program).set(1)

    def counter(self, name: str, help: str, labels: Sequence[str] = ()) -> Counter:
        return Counter(self.prefix + name, help, list(labels), registry=self.registry)

    def gauge(self, name: str, help: str, labels: Sequence[str] = ()) -> Gauge:
        return Gauge(self.prefix + name, help, list(labels), registry=self.registry)

    def histogram(
        self,
        name: str,
        help: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> Histogram:
        return Histogram(
            self.prefix + name, help, list(labels), registry=self.registry, buckets=buckets
        )

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """Exposition bytes and content type, OpenMetrics when the client asks for it."""
        if accept and "application/openmetrics-text" in accept:
            from prometheus_client.openmetrics import exposition as om

            return om.generate_latest(self.registry), om.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
        from prometheus_client import exposition

        return exposition.generate_latest(self.registry), exposition.CONTENT_TYPE_LATEST
