"""docs/metrics.md's table of statsd_exporter mapping keys agrees with the
implementation, and each status is true: an implemented or deprecated key
loads, a refused key exits 2 naming it, an unknown key is refused too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from podkit.adapters.metrics.mapper import COMPAT, REFUSED, Mapper

from podkit import UsageError

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

#: A value each key takes in a minimal valid file.
SAMPLE: dict[str, Any] = {
    "mappings": [],
    "drop_unmapped": True,
    "observer_type": "histogram",
    "timer_type": "histogram",
    "match_type": "glob",
    "glob_disable_ordering": True,
    "ttl": "10s",
    "summary_options": {},
    "histogram_options": {},
    "buckets": [0.1, 1],
    "quantiles": [{"quantile": 0.5, "error": 0.05}],
    "max_age": "30s",
    "age_buckets": 3,
    "buf_cap": 100,
    "max_summary_age": "30s",
    "summary_age_buckets": 3,
    "stream_buffer_size": 100,
    "native_histogram_bucket_factor": 1.1,
    "native_histogram_max_buckets": 256,
    "match": "a.*",
    "name": "x",
    "labels": {"k": "$1"},
    "honor_labels": True,
    "help": "text",
    "action": "drop",
    "match_metric_type": "counter",
    "scale": 0.001,
}


def doc_table() -> dict[str, str]:
    text = DOC.read_text()
    section = text.split("### statsd_exporter mapping keys", 1)[1].split("\n\n**", 1)[0]
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([^`]+)` \| (\w+)", section, re.MULTILINE)
    }


def document_with(key: str) -> dict[str, Any]:
    """A mapping file that sets `key` (dotted: where it lives)."""
    *parents, leaf = key.split(".")
    value = SAMPLE[leaf]
    if not parents:
        if leaf in ("mappings", "drop_unmapped"):
            return {leaf: value}
        m = {"match": "a.*", "name": "x", leaf: value}
        if leaf == "summary_options":
            m["observer_type"] = "summary"
        return {"mappings": [m]}
    if parents == ["defaults"]:
        return {"defaults": {leaf: value}}
    # summary_options.* / histogram_options.* inside a mapping
    obs = "summary" if parents[0] == "summary_options" else "histogram"
    return {
        "mappings": [{"match": "a.*", "name": "x", "observer_type": obs, parents[0]: {leaf: value}}]
    }


def test_doc_table_is_the_implementation() -> None:
    assert doc_table() == COMPAT


@pytest.mark.parametrize("key", sorted(COMPAT))
def test_each_status_is_true(key: str) -> None:
    data = document_with(key)
    if COMPAT[key] == REFUSED:
        with pytest.raises(UsageError, match=re.escape(key.split(".")[-1])):
            Mapper(data, "f")
    else:
        Mapper(data, "f")


@pytest.mark.parametrize(
    "data",
    [
        {"mapping": []},
        {"defaults": {"observer": "histogram"}},
        {"mappings": [{"match": "a", "name": "x", "bucket": [1]}]},
        {"mappings": [{"match": "a", "name": "x", "summary_options": {"maxage": "1s"}}]},
    ],
)
def test_unknown_keys_are_refused_by_name(data: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="unknown key"):
        Mapper(data, "f")


def test_scale_is_applied_not_ignored() -> None:
    # statsd_exporter's README: scale 0.001 turns milliseconds into seconds.
    import logging

    from podkit.adapters.metrics.sources import build
    from podkit.adapters.metrics.store import Store

    log = logging.getLogger("t")
    store = Store(log)
    src = build(
        {
            "type": "statsd",
            "udp": "127.0.0.1:0",
            "mappings": [{"match": "ms.*", "name": "latency_seconds", "scale": 0.001}],
        },
        "t",
        store,
        log,
        None,
    )
    src.ingest(b"ms.a:250|g\n")  # type: ignore[attr-defined]
    assert store.families["latency_seconds"].series[()].value == 0.25


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        # statsd_exporter's EscapeMetricName vectors.
        ("clean", "clean"),
        ("0starts_with_digit", "_0starts_with_digit"),
        ("with_underscore", "with_underscore"),
        ("with--doubledash", "with_doubledash"),
        ("with---multiple-dashes", "with_multiple_dashes"),
        ("with.dot", "with_dot"),
        ("with\U0001f631emoji", "with_emoji"),
        ("with.*.multiple", "with___multiple"),
        ("test.web-server.foo.bar", "test_web_server_foo_bar"),
        ("", ""),
        # And the edges of its rule: only a dash after a dash is dropped.
        ("a.-b", "a__b"),
        ("a-.b", "a__b"),
        ("9-9", "_9_9"),
    ],
)
def test_escape_metric_name(raw: str, escaped: str) -> None:
    from podkit.adapters.metrics.store import escape_name

    assert escape_name(raw) == escaped


@pytest.mark.parametrize(
    ("template", "captures", "want"),
    [
        ("${1}_foo", ("good",), "good_foo"),
        ("$1_foo", ("good",), ""),  # one reference, to "1_foo"
        ("x_$1", ("good",), "x_good"),
        ("$2.$1", ("a", "b"), "b.a"),
        ("${2}${1}", ("a", "b"), "ba"),
        ("$3", ("a", "b"), ""),  # past the captures
        ("$0", ("a",), ""),
        ("${name}", ("a",), ""),  # glob templates have no named groups
        ("$1.$1", ("a",), "a.a"),
        ("static", ("a",), "static"),
    ],
)
def test_glob_templates_expand_as_statsd_exporter(
    template: str, captures: tuple[str, ...], want: str
) -> None:
    from podkit.adapters.metrics.mapper import GlobTemplate

    assert GlobTemplate(template, len(captures)).format(captures) == want


def test_glob_ordering_and_backtracking_vectors() -> None:
    # statsd_exporter's mapper tests "Config with backtracking" and "super
    # sets, disables ordering", re-expressed.
    m = Mapper(
        {
            "defaults": {"glob_disable_ordering": True},
            "mappings": [
                {"match": "backtrack.*.bbb", "name": "testb", "labels": {"label": "${1}_foo"}},
                {
                    "match": "backtrack.justatest.aaa",
                    "name": "testa",
                    "labels": {"label": "${1}_foo"},
                },
                {"match": "noorder.*.*", "name": "testa", "labels": {"label": "${1}_foo"}},
                {"match": "noorder.*.bbb", "name": "testb", "labels": {"label": "${1}_foo"}},
                {"match": "noorder.ccc.bbb", "name": "testc", "labels": {"label": "ccc_foo"}},
            ],
        },
        "f",
    )

    def mapped(name: str) -> tuple[str, dict[str, str]]:
        return m.map(name, "counter")[1:]

    assert mapped("backtrack.good.bbb") == ("testb", {"label": "good_foo"})
    assert mapped("backtrack.justatest.bbb") == ("testb", {"label": "justatest_foo"})
    assert mapped("backtrack.justatest.aaa") == ("testa", {"label": "_foo"})
    assert mapped("noorder.good.bbb") == ("testb", {"label": "good_foo"})
    assert mapped("noorder.ccc.bbb") == ("testc", {"label": "ccc_foo"})
    # With ordering kept (the default), the first rule in the file wins.
    m2 = Mapper(
        {
            "mappings": [
                {"match": "order.*.*", "name": "testa", "labels": {"label": "${1}_foo"}},
                {"match": "order.*.bbb", "name": "testb", "labels": {"label": "${1}_foo"}},
            ]
        },
        "f",
    )
    assert m2.map("order.good.bbb", "counter")[1:] == ("testa", {"label": "good_foo"})
