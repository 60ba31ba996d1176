"""`podkit.sinks` is a package since issue 20 split the 1239-line module along
its seams: every name the module offered is still importable from it, each
module is within the 600-line budget, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import podkit.sinks

#: The public names of podkit/sinks.py before the split.
BEFORE = [
    "COMPRESSIONS",
    "Batch",
    "RecordBatch",
    "NdjsonBatch",
    "as_batch",
    "SinkClosed",
    "Retry",
    "Outcome",
    "RETRY_REASONS",
    "REFUSAL_REASONS",
    "SPLIT_REASONS",
    "refusal_reason",
    "parse_retry_after",
    "EventHook",
    "Sleep",
    "Sink",
    "register_sink",
    "open_sink",
    "StdoutSink",
    "FileSink",
    "HTTPSink",
    "LOKI_MAX_STREAMS",
    "record_field",
    "loki_label_name",
    "LokiSink",
    "OTLPSink",
    "OTLP_FORMATS",
    "ElasticsearchSink",
]


def test_every_name_of_the_module_is_still_there() -> None:
    missing = [n for n in BEFORE if not hasattr(podkit.sinks, n)]
    assert missing == []
    assert set(BEFORE) <= set(podkit.sinks.__all__)


def test_each_scheme_opens_its_sink() -> None:
    kinds = {
        "stdout://": podkit.sinks.StdoutSink,
        "file:///tmp/x.ndjson": podkit.sinks.FileSink,
        "https://h/x": podkit.sinks.HTTPSink,
        "loki+http://h:3100": podkit.sinks.LokiSink,
        "elasticsearch+https://h:9200/logs": podkit.sinks.ElasticsearchSink,
        "otlp+http://h:4318": podkit.sinks.OTLPSink,
    }
    for url, cls in kinds.items():
        assert type(podkit.sinks.open_sink(url)) is cls, url


def test_each_module_is_within_the_budget() -> None:
    root = Path(podkit.sinks.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in root.glob("*.py")}
    assert len(sizes) >= 8 and max(sizes.values()) <= 600, sizes


def test_importing_the_sinks_loads_no_http_client_nor_protobuf() -> None:
    code = (
        "import sys, podkit.sinks\n"
        "heavy = [m for m in ('aiohttp', 'google.protobuf', 'zstandard') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
