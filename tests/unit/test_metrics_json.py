"""The json source's JSONPath subset, value conversion, labels and error counting."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from podkit.adapters.metrics.json_source import JSONSource
from podkit.adapters.metrics.jsonpath import JSONPath, PathError
from podkit.adapters.metrics.sources import build
from podkit.adapters.metrics.store import Store

from podkit import UsageError

LOG = logging.getLogger("test")

DOC = {
    "version": "1.2",
    "queues": [
        {"name": "mail", "depth": 3},
        {"name": "sms"},
        {"name": "push", "depth": "7"},
        {"name": "fax", "depth": None},
    ],
    "components": {"db": "UP", "cache": "DEGRADED", "queue": "DOWN", "new": "WEIRD"},
    "nodes": {"a": {"status": "UP", "load": 0.5}, "b": {"status": "DOWN", "load": 1}},
    "flags": {"maintenance": True},
    "deep": {"x": {"y": {"hits": 4}}},
}


def source(metrics: list[dict[str, Any]], **extra: Any) -> JSONSource:
    src = build(
        {"type": "json", "url": "http://127.0.0.1:1/stats", "metrics": metrics, **extra},
        "test",
        Store(LOG),
        LOG,
        None,
    )
    assert isinstance(src, JSONSource)
    return src


@pytest.mark.parametrize(
    ("path", "want"),
    [
        ("$.queues[*].name", ["mail", "sms", "push", "fax"]),
        ("$.queues[0].depth", [3]),
        ("$.queues[-1].name", ["fax"]),
        ("$['components']['db']", ["UP"]),
        ('$.queues[?(@.name == "push")].depth', ["7"]),
        ("$.queues[?(@.depth >= 3)].name", ["mail", "push"]),
        ("$.queues[?(@.depth)].name", ["mail", "push", "fax"]),
        ("$..hits", [4]),
        ("$.nodes.*.load", [0.5, 1]),
        ("$", [DOC]),
    ],
)
def test_jsonpath_subset(path: str, want: list[Any]) -> None:
    assert [m.value for m in JSONPath(path).find(DOC)] == want


def test_jsonpath_rejects_garbage() -> None:
    for bad in ("queues", "$.a[", "$.a[x]", "$.a[?(@.b ==)]"):
        with pytest.raises(PathError):
            JSONPath(bad)


def test_deep_nesting_does_not_recurse() -> None:
    doc: Any = 1
    for _ in range(20000):
        doc = {"a": doc}
    assert len(JSONPath("$..a").find(doc)) == 20000


def test_array_labels_bind_to_their_own_item_and_missing_is_counted() -> None:
    src = source(
        [
            {
                "name": "app_queue_depth",
                "path": "$.queues[*].depth",
                "labels": {"queue": "$.queues[*].name"},
            }
        ]
    )
    out = src.extract(DOC)
    assert out["app_queue_depth"][1] == {("mail",): 3.0, ("push",): 7.0}
    assert src.errors["missing"] == 1  # sms has no depth
    assert src.errors["not_numeric"] == 1  # fax's depth is null


def test_each_key_value_map_and_templates() -> None:
    src = source(
        [
            {
                "name": "app_component_up",
                "path": "$.components",
                "each": "key",
                "labels": {"component": "{key}", "version": "v{$.version}"},
                "value_map": {"UP": 1, "DEGRADED": 0.5, "DOWN": 0},
            },
            {
                "name": "app_node_up",
                "path": "$.nodes",
                "each": "key",
                "value": "@.status",
                "labels": {"node": "{key}", "load": "{@.load}", "static": "x"},
                "value_map": {"UP": 1, "DOWN": 0},
            },
            {"name": "app_maintenance", "path": "$.flags.maintenance"},
            {"name": "app_absent", "path": "$.nope"},
        ]
    )
    out = src.extract(DOC)
    assert out["app_component_up"][1] == {
        ("db", "v1.2"): 1.0,
        ("cache", "v1.2"): 0.5,
        ("queue", "v1.2"): 0.0,
    }
    assert src.errors["not_numeric"] == 1  # "WEIRD" is in no value_map
    assert out["app_node_up"][1] == {("0.5", "a", "x"): 1.0, ("1", "b", "x"): 0.0}
    assert out["app_maintenance"][1] == {(): 1.0}
    assert src.errors["missing"] == 1


def test_duplicates_and_max_series() -> None:
    src = source(
        [
            {
                "name": "dup",
                "path": "$.queues[*].name",
                "labels": {"x": "same"},
                "value_map": {"mail": 1, "sms": 2, "push": 3, "fax": 4},
            }
        ],
    )
    out = src.extract(DOC)
    assert out["dup"][1] == {("same",): 1.0}
    assert src.errors["duplicate"] == 3
    big = {"items": list(range(50000))}
    src = source([{"name": "item", "path": "$.items[*]", "labels": {"i": "{key}"}}], max_series=100)
    out = src.extract(big)
    assert len(out["item"][1]) == 100
    assert src.errors["too_many_series"] == 1


def test_config_errors_name_the_key() -> None:
    with pytest.raises(UsageError, match=r"metrics\[0\]\.type: 'summary' is not one of"):
        source([{"name": "x", "path": "$.a", "type": "summary"}])
    with pytest.raises(UsageError, match=r"metrics\[0\]\.path"):
        source([{"name": "x", "path": "a.b"}])
    with pytest.raises(UsageError, match=r"unknown key 'pth'"):
        source([{"name": "x", "pth": "$.a"}])
    with pytest.raises(UsageError, match=r"labels\.q: unknown template field"):
        source([{"name": "x", "path": "$.a", "labels": {"q": "{nope}"}}])


def test_metric_names_from_the_data() -> None:
    # json_exporter #290: a name drawn from a key, escaped, one family each;
    # names that cannot be made valid, or clash in labels, are counted.
    doc = {
        "counters": {"http.requests": 7, "db-queries": 3, "9lives": 9},
        "gauges": [{"kind": "queue depth", "v": 4}, {"kind": "temp", "v": 21.5}],
    }
    src = source(
        [
            {"name": "app_{key}_total", "path": "$.counters", "each": "key", "type": "counter"},
            {"name": "app_{@.kind}", "path": "$.gauges[*].v", "labels": {"unit": "x"}},
            {"name": "{key}", "path": "$.counters", "each": "key"},
        ]
    )
    out = src.extract(doc)
    got = {k: v[1] for k, v in out.items() if v[1]}
    assert got["app_http_requests_total"] == {(): 7.0}
    assert got["app_db_queries_total"] == {(): 3.0}
    assert got["app_queue_depth"] == {("x",): 4.0}
    assert got["app_temp"] == {("x",): 21.5}
    # "9lives" escapes to "_9lives": valid; "http.requests" -> "http_requests".
    assert got["_9lives"] == {(): 9.0} and got["http_requests"] == {(): 7.0}
    src._apply(out)
    assert "app_http_requests" in src.store.families  # counter, served with _total


def test_kubectl_style_paths_are_accepted() -> None:
    src = source(
        [{"name": "depth", "path": "{.queues[*].depth}", "labels": {"q": "$.queues[*].name"}}]
    )
    out = src.extract({"queues": [{"name": "a", "depth": 1}, {"name": "b", "depth": 2}]})
    assert out["depth"][1] == {("a",): 1.0, ("b",): 2.0}


def test_numbers_print_as_gos_percent_v_of_a_float64() -> None:
    # Printed by Go 1.19 (fmt %v of json.Unmarshal'd numbers), as kubectl's
    # JSONPath prints them into json_exporter's labels.
    from podkit.adapters.metrics.json_exporter import _go_text

    vectors = [
        (123456, "123456"),
        (1234567, "1.234567e+06"),
        (999999, "999999"),
        (1000000, "1e+06"),
        (1234567.5, "1.2345675e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (12345678901234567890, "1.2345678901234567e+19"),
        (-1234567, "-1.234567e+06"),
        (0, "0"),
        (-0.0, "-0"),
        (1.5e300, "1.5e+300"),
        (12.5, "12.5"),
    ]
    assert [(v, _go_text(v)) for v, _ in vectors] == vectors
