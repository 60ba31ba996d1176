"""Prometheus metrics: one registry per program, named podkit_<program>_<what>_<unit>.

prometheus_client's package `__init__` imports its exposition module, which
pulls in http.server, urllib.request, wsgiref, gzip and email: ~8 MB and
tens of milliseconds that an idle sidecar never uses (the admin server is
podkit's own). `_light_prometheus_client()` makes the package importable
without running that `__init__` until someone asks for a name only it
defines; the classes below come from the submodules, and `/metrics` is
written by `_text()`, tested byte for byte against prometheus_client's own
`generate_latest` (tests/unit/test_metrics_light.py).
"""

from __future__ import annotations

import platform
import re
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast


def _light_prometheus_client() -> None:
    """Register the prometheus_client package with its `__init__` deferred to
    the first attribute that only `__init__` defines (then it runs, once)."""
    if "prometheus_client" in sys.modules:
        return
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("prometheus_client")
    if spec is None or spec.loader is None:
        return  # let the ordinary import below report it
    pkg = importlib.util.module_from_spec(spec)
    once = threading.Lock()  # two threads asking at once run __init__ once

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = f"prometheus_client.{name}"
        if importlib.util.find_spec(sub) is not None:  # `from . import values`
            return importlib.import_module(sub)
        with once:
            if pkg.__dict__.pop("__getattr__", None) is not None:
                spec.loader.exec_module(pkg)  # type: ignore[union-attr]
        return getattr(pkg, name)

    pkg.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["prometheus_client"] = pkg


_light_prometheus_client()

from prometheus_client.metrics import (  # noqa: E402
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.process_collector import ProcessCollector  # noqa: E402
from prometheus_client.registry import CollectorRegistry  # noqa: E402
from prometheus_client.utils import floatToGoString  # noqa: E402

from . import __version__  # noqa: E402

if TYPE_CHECKING:
    from prometheus_client.samples import Sample

# What prometheus_client (>= 0.22) answers for the text format; the test
# holds it to exposition.CONTENT_TYPE_LATEST so an upgrade cannot drift.
TEXT_CONTENT_TYPE = "text/plain; version=1.0.0; charset=utf-8"
_LEGACY_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
# The Prometheus text format's name for each OpenMetrics family type.
_TEXT_TYPE = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
_OM_ONLY = ("_created", "_gsum", "_gcount")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


# Go's float formatting, as Prometheus writes values (+Inf, NaN, 1e+06).
_go_float = cast("Callable[[float], str]", floatToGoString)


def _line(s: Sample) -> str:
    labels = ",".join(f'{k}="{_escape_value(v)}"' for k, v in sorted(s.labels.items()))
    ts = "" if s.timestamp is None else f" {int(float(s.timestamp) * 1000):d}"
    where = f"{s.name}{{{labels}}}" if labels else s.name
    return f"{where} {_go_float(s.value)}{ts}\n"


def _text(registry: CollectorRegistry) -> bytes | None:
    """The Prometheus text format of `registry`; None when a name needs
    the UTF-8 quoting only prometheus_client's own writer does."""
    out: list[str] = []
    for family in registry.collect():
        name, kind = family.name, family.type
        if kind == "counter":
            name += "_total"
        elif kind == "info":
            name += "_info"
        if not _LEGACY_NAME.match(name):
            return None
        help_text = _escape_help(family.documentation)
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {_TEXT_TYPE.get(kind, kind)}\n")
        extra: dict[str, list[str]] = {}
        for s in family.samples:
            if not _LEGACY_NAME.match(s.name) or any(not _LEGACY_NAME.match(k) for k in s.labels):
                return None
            suffix = next((x for x in _OM_ONLY if s.name == family.name + x), None)
            if suffix is None:
                out.append(_line(s))
            else:  # OpenMetrics-only series: a gauge family of their own, after
                extra.setdefault(suffix, []).append(_line(s))
        for suffix, lines in sorted(extra.items()):
            gname = family.name + suffix
            out.append(f"# HELP {gname} {help_text}\n# TYPE {gname} gauge\n")
            out.extend(lines)
    return "".join(out).encode("utf-8")


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
        body = _text(self.registry)
        if body is not None:
            return body, TEXT_CONTENT_TYPE
        from prometheus_client import exposition

        return exposition.generate_latest(self.registry), exposition.CONTENT_TYPE_LATEST
