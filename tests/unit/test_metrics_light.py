"""podkit.metrics keeps prometheus_client's exposition module (http.server,
urllib, wsgiref, email: megabytes an idle sidecar never uses) out of the
process, and writes the text format byte for byte as prometheus_client does."""

from __future__ import annotations

import subprocess
import sys

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from podkit.metrics import Metrics, _text


class Extra(Collector):
    def collect(self):  # type: ignore[no-untyped-def]
        c = CounterMetricFamily("podkit_x_raw", "raw\\counter\nhelp", labels=["k"])
        c.add_metric(['va"l\\ue\n2'], 3.0, timestamp=1700000000.123)
        yield c
        yield InfoMetricFamily("podkit_x_build", "build", value={"version": "1"})
        yield StateSetMetricFamily("podkit_x_state", "state", value={"a": True, "b": False})
        g = GaugeHistogramMetricFamily(
            "podkit_x_gh", "gh", buckets=[("1", 2), ("+Inf", 3)], gsum_value=7
        )
        yield g


def test_the_text_format_is_prometheus_clients_own() -> None:
    from prometheus_client import exposition

    m = Metrics("same")
    c = m.counter("events_total", "Events.", ["kind"])
    c.labels("a").inc(2)
    c.labels('we"ird\\').inc(1e7)
    m.gauge("level", "A level.").set(float("inf"))
    m.gauge("nan", "Not a number.").set(float("nan"))
    h = m.histogram("seconds", "Durations.", ["op"], buckets=(0.1, 1, 10))
    h.labels("read").observe(0.5)
    h.labels("write").observe(123456789.0)
    m.registry.register(Extra())
    ours, ctype = m.render(None)
    assert ctype == exposition.CONTENT_TYPE_LATEST
    assert b"podkit_same_events_total" in ours and b"process_cpu_seconds_total" in ours
    # Without the process collector, whose CPU time moves between two calls:
    m.registry.unregister(
        next(
            c
            for c in list(m.registry._collector_to_names)
            if type(c).__name__ == "ProcessCollector"
        )
    )
    assert _text(m.registry) == exposition.generate_latest(m.registry)


def test_an_idle_program_never_imports_the_exposition_module() -> None:
    code = (
        "import sys\n"
        "from podkit.metrics import Metrics\n"
        "m = Metrics('idle'); m.counter('c', 'c').inc(); m.render(None)\n"
        "heavy = ('prometheus_client.exposition', 'http.server', 'wsgiref')\n"
        "bad = [n for n in heavy if n in sys.modules]\n"
        "print(bad)\n"
        "import prometheus_client\n"
        "print(prometheus_client.generate_latest.__name__, 'http.server' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "[]"
    # the whole package is still there for whoever asks for it by name
    assert lines[1] == "generate_latest True"
