"""The metrics adapter against values the app (or a probed target) chooses.

Each test feeds a source what a JSON document or a log line may hold and
asserts on the exposition a scraper gets: it must encode, parse, and keep the
other series. Before the fixes, a label value with a lone surrogate (the JSON
escape "\\ud800") made every /metrics answer a 500 for as long as the series
lived; a /probe document with an integer past float's range was a 500; and a
log line's NaN or Infinity poisoned a counter for good.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from podkit.adapters.metrics.json_exporter import load_modules
from podkit.adapters.metrics.json_source import JSONSource
from podkit.adapters.metrics.log_source import LogSource
from podkit.adapters.metrics.sources import build
from podkit.adapters.metrics.store import Store
from prometheus_client.parser import text_string_to_metric_families

LOG = logging.getLogger("test.hostile.metrics")


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What a scraper reads: the text must encode as UTF-8 and parse."""
    body = text.encode("utf-8").decode("utf-8")
    out = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def log_source(store: Store, rules: list[dict[str, Any]], fmt: str | None = None) -> LogSource:
    cfg: dict[str, Any] = {"type": "log", "path": "/x/*.log", "rules": rules}
    if fmt:
        cfg["format"] = fmt
    src = build(cfg, "t", store, LOG, None)
    assert isinstance(src, LogSource)
    return src


def test_a_lone_surrogate_in_a_label_keeps_the_exposition_valid() -> None:
    store = Store(LOG)
    src = log_source(store, [{"counter": "lines_total", "labels": ["user"]}], "json")
    src.process(['{"user": "bob"}', '{"user": "\\ud800"}', '{"user": "\\udfff"}', '{"user": "é"}'])
    got = scrape(store.render())
    users = {dict(k[1])["user"]: v for k, v in got.items() if k[0] == "lines_total"}
    # the two surrogates stay two series, written as the escapes they came from
    assert users == {"bob": 1.0, "\\ud800": 1.0, "\\udfff": 1.0, "é": 1.0}
    assert scrape(store.render(openmetrics=True))


def test_a_json_source_label_with_a_lone_surrogate_keeps_the_exposition_valid() -> None:
    store = Store(LOG)
    src = build(
        {
            "type": "json",
            "url": "http://127.0.0.1:1/",
            "metrics": [
                {
                    "name": "q_depth",
                    "path": "$.queues[*].depth",
                    "labels": {"q": "$.queues[*].name"},
                }
            ],
        },
        "t",
        store,
        LOG,
        None,
    )
    assert isinstance(src, JSONSource)
    doc = {"queues": [{"name": "mail", "depth": 3}, {"name": "\ud800", "depth": 4}]}
    src._apply(src._parse(json.dumps(doc).encode()))
    got = scrape(store.render())
    assert got[("q_depth", (("q", "mail"),))] == 3.0
    assert got[("q_depth", (("q", "\\ud800"),))] == 4.0


PROBE_CONFIG = """
modules:
  default:
    metrics:
    - name: value
      path: '{ .value }'
    - name: item
      type: object
      path: '{ .items[*] }'
      labels:
        name: '{ .name }'
      values:
        size: '{ .size }'
"""


def test_a_probed_document_a_scraper_cannot_read_as_is_is_still_answered(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(PROBE_CONFIG)
    mod = load_modules(str(cfg), "--json-exporter-config")["default"]
    big = 10**400
    doc = json.loads(
        json.dumps(
            {
                "value": big,
                "items": [
                    {"name": "a", "size": 1},
                    {"name": "\ud800", "size": -big},
                    {"name": "c", "size": 2},
                ],
            }
        )
    )
    text, _skipped = mod.collect(doc)
    got = scrape(text)
    assert got[("value", ())] == math.inf  # float's range ends there, as for 1e999
    assert got[("item_size", (("name", "a"),))] == 1.0
    assert got[("item_size", (("name", "\\ud800"),))] == -math.inf
    assert got[("item_size", (("name", "c"),))] == 2.0


def test_a_log_line_cannot_poison_a_counter() -> None:
    store = Store(LOG)
    rules = [{"match": r"bytes=(?P<b>\S+)", "counter": "bytes_total", "value": "b"}]
    src = log_source(store, rules)
    src.process(["bytes=5", "bytes=nan", "bytes=inf", "bytes=1e999", "bytes=-Infinity", "bytes=7"])
    assert scrape(store.render())[("bytes_total", ())] == 12.0
    assert src.errors["bad_value"] == 4
