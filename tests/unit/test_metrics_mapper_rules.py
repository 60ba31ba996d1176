"""The statsd_exporter mapping file, rule by rule: what each key does, what a
wrong value says, and templates expanded exactly as statsd_exporter v0.27.2
expands them (the expected strings below were served by the real exporter,
tests/conformance). Written to kill the mutants `make mutate` left in
adapters/metrics/mapper.py."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from podkit.adapters.metrics.mapper import (
    DEFAULT_KEYS,
    HISTOGRAM_KEYS,
    MAPPING_KEYS,
    SUMMARY_KEYS,
    Mapper,
)
from podkit.adapters.metrics.series import DEFAULT_QUANTILES
from podkit.adapters.metrics.store import DEFAULT_BUCKETS

from podkit import UsageError


def mapper(text: str) -> Mapper:
    return Mapper(yaml.safe_load(text), "m")


def one(extra: str, match: str = "a.*", name: str = "x") -> str:
    return f'mappings:\n- match: "{match}"\n  name: "{name}"\n' + "".join(
        f"  {line}\n" for line in extra.splitlines()
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "m: expected a mapping with 'mappings:'"),
        ("defaults: [1]", "m.defaults: expected a mapping"),
        ("defaults: {match_type: fuzzy}", "m.defaults.match_type: 'fuzzy' is not glob or regex"),
        ("defaults: {glob_disable_ordering: 'x'}", "m.defaults.glob_disable_ordering: expected"),
        ("drop_unmapped: 'yes'", "m.drop_unmapped: expected true or false"),
        ("mappings: {a: 1}", "m.mappings: expected a list"),
        ("mappings: [1]", "m.mappings[0]: expected a mapping"),
        ("mappings: [{name: x}]", "m.mappings[0].match: required"),
        ("mappings: [{match: '', name: x}]", "m.mappings[0].match: required"),
        ("mappings: [{match: 5, name: x}]", "m.mappings[0].match: required"),
        ("mappings: [{match: a.b}]", "m.mappings[0]: metric mapping didn't set a metric name"),
        ("mappings: [{match: a.b, name: ''}]", "didn't set a metric name"),
        ("mappings: [{match: a.b, name: 5}]", "didn't set a metric name"),
        ("mappings: [{match: a.b, name: '1x'}]", "m.mappings[0].name: '1x' is not a valid"),
        (one("match_type: fuzzy"), "m.mappings[0].match_type: 'fuzzy' is not glob or regex"),
        (one("action: keep"), "m.mappings[0].action: 'keep' is not map or drop"),
        (one("labels: [a]"), "m.mappings[0].labels: expected a mapping"),
        (one("labels: {'1x': a}"), "m.mappings[0].labels: invalid label key '1x'"),
        (one("labels: {__x: a}"), "invalid label key '__x'"),
        (one("honor_labels: 'yes'"), "m.mappings[0].honor_labels: expected true or false"),
        (one("scale: 'x'"), "m.mappings[0].scale: expected a number"),
        (one("scale: true"), "m.mappings[0].scale: expected a number"),
        (one("match_metric_type: set_of"), "m.mappings[0].match_metric_type: 'set_of' is not"),
        (one("observer_type: median"), "m.mappings[0].observer_type: 'median' is not histogram"),
        (
            one("observer_type: histogram\nsummary_options: {}"),
            "m.mappings[0]: cannot use histogram observer and summary options",
        ),
        (
            one("timer_type: histogram\nsummary_options: {}"),
            "m.mappings[0]: cannot use histogram observer and summary options",
        ),
        (
            one("observer_type: summary\nhistogram_options: {}"),
            "m.mappings[0]: cannot use summary observer and histogram options",
        ),
        (one("histogram_options: [1]"), "m.mappings[0].histogram_options: expected a mapping"),
        (one("summary_options: 'x'"), "m.mappings[0].summary_options: expected a mapping"),
        (
            one("histogram_options: {buckets: [a]}"),
            "m.mappings[0].histogram_options.buckets: expected a list of numbers",
        ),
        (
            one("summary_options: {quantiles: 'x'}"),
            "m.mappings[0].summary_options.quantiles: expected a list of {quantile, error}",
        ),
        (
            one("summary_options: {quantiles: [{quantile: x}]}"),
            "m.mappings[0].summary_options.quantiles[0]: expected a quantile between 0 and 1",
        ),
        (
            one("summary_options: {quantiles: [{quantile: 0.5}, {quantile: 1.5}]}"),
            "m.mappings[0].summary_options.quantiles[1]: quantile 1.5 is not between 0 and 1",
        ),
        (one("quantiles: [{quantile: -0.1}]"), "quantile -0.1 is not between 0 and 1"),
        (
            one("summary_options: {age_buckets: many}"),
            "m.mappings[0].summary_options: age buckets and buffer size are numbers",
        ),
        (one("ttl: soon"), "m.mappings[0].ttl: "),
        (one("summary_options: {max_age: soon}"), "m.mappings[0].summary_options.max_age: "),
        (one("", match="a.b*"), "m.mappings[0].match: invalid glob 'a.b*'"),
        (one("match_type: regex", match="a(["), "m.mappings[0].match: invalid regex: "),
        (one("native: 1"), "m.mappings[0].native: unknown key"),
        (
            one("histogram_options: {native_histogram_max_buckets: 9}"),
            "m.mappings[0].histogram_options.native_histogram_max_buckets: native histograms",
        ),
    ],
)
def test_every_wrong_value_names_its_key(text: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        mapper(text)
    assert message in str(exc.value)


def test_the_key_sets_follow_the_compat_table() -> None:
    assert "match" in MAPPING_KEYS and "summary_options" in MAPPING_KEYS
    assert "mappings" not in MAPPING_KEYS and "drop_unmapped" not in MAPPING_KEYS
    assert not any("." in k for k in MAPPING_KEYS | DEFAULT_KEYS | SUMMARY_KEYS)
    assert {
        "observer_type",
        "match_type",
        "glob_disable_ordering",
        "ttl",
        "summary_options",
        "histogram_options",
        "timer_type",
        "buckets",
        "quantiles",
    } == DEFAULT_KEYS
    assert {
        "quantiles",
        "max_age",
        "age_buckets",
        "buf_cap",
        "max_summary_age",
        "summary_age_buckets",
        "stream_buffer_size",
    } == SUMMARY_KEYS
    assert {
        "buckets",
        "native_histogram_bucket_factor",
        "native_histogram_max_buckets",
    } == HISTOGRAM_KEYS


def test_defaults_when_nothing_is_said() -> None:
    m = mapper("mappings:\n- {match: a.*, name: x}\n")
    for opts in (m.defaults, m.mappings[0].opts):
        assert opts.observer_type == "summary"
        assert opts.buckets == DEFAULT_BUCKETS
        assert opts.ttl == 0.0
        s = opts.summary
        assert (s.quantiles, s.max_age, s.age_buckets, s.buf_cap) == (
            DEFAULT_QUANTILES,
            600.0,
            5,
            500,
        )
    mp = m.mappings[0]
    assert mp.honor_labels is False and mp.scale is None and mp.action == "map"
    assert mp.match_metric_type is None and mp.opts.help == ""
    assert not m.warnings and m.drop_unmapped is False
    assert Mapper(None, "m").mappings == []


def test_a_mapping_inherits_the_defaults_it_does_not_override() -> None:
    m = mapper(
        """
defaults:
  observer_type: histogram
  ttl: 30s
  histogram_options: {buckets: [1, 2]}
  summary_options: {quantiles: [{quantile: 0.9}], max_age: 1m, age_buckets: 3, buf_cap: 7}
mappings:
- {match: a.*, name: a}
- {match: b.*, name: b, ttl: 0s, histogram_options: {buckets: []}}
- {match: c.*, name: c, ttl: 5s, observer_type: summary, summary_options: {buf_cap: 9}}
"""
    )
    a, b, c = (mp.opts for mp in m.mappings)
    assert a.observer_type == "histogram" and a.buckets == (1.0, 2.0) and a.ttl == 30.0
    assert b.buckets == (1.0, 2.0) and b.ttl == 30.0  # [] and 0: not set
    assert c.observer_type == "summary" and c.ttl == 5.0
    s = c.summary
    assert (s.quantiles, s.max_age, s.age_buckets, s.buf_cap) == ((0.9,), 60.0, 3, 9)


def test_deprecated_spellings_work_and_lose_to_their_new_form() -> None:
    m = mapper(
        """
defaults:
  timer_type: histogram
  buckets: [3]
  quantiles: [{quantile: 0.25}]
mappings:
- match: a.*
  name: a
  summary_options: {max_summary_age: 2m, summary_age_buckets: 2, stream_buffer_size: 40}
- match: b.*
  name: b
  timer_type: summary
  observer_type: histogram
  buckets: [7]
  histogram_options: {buckets: [8]}
- match: c.*
  name: c
  summary_options:
    max_summary_age: 2m
    max_age: 3m
    summary_age_buckets: 2
    age_buckets: 4
    stream_buffer_size: 40
    buf_cap: 50
    quantiles: [{quantile: 0.5}]
  quantiles: [{quantile: 0.75}]
"""
    )
    assert m.defaults.observer_type == "histogram" and m.defaults.buckets == (3.0,)
    assert m.defaults.summary.quantiles == (0.25,)
    a, b, c = (mp.opts for mp in m.mappings)
    assert (a.summary.max_age, a.summary.age_buckets, a.summary.buf_cap) == (120.0, 2, 40)
    assert b.observer_type == "histogram" and b.buckets == (8.0,)
    s = c.summary
    assert (s.max_age, s.age_buckets, s.buf_cap, s.quantiles) == (180.0, 4, 50, (0.5,))
    assert m.warnings == [
        "m.mappings[1]: both timer_type (deprecated) and observer_type given; observer_type wins",
        "m.mappings[1]: both buckets (deprecated) and histogram_options.buckets given; "
        "histogram_options.buckets wins",
        "m.mappings[2]: both quantiles (deprecated) and summary_options.quantiles given; "
        "summary_options.quantiles wins",
        "m.mappings[2].summary_options: both max_summary_age (deprecated) and max_age given; "
        "max_age wins",
        "m.mappings[2].summary_options: both summary_age_buckets (deprecated) and age_buckets "
        "given; age_buckets wins",
        "m.mappings[2].summary_options: both stream_buffer_size (deprecated) and buf_cap "
        "given; buf_cap wins",
    ]


def test_quantile_bounds_are_inclusive_and_sorted_once() -> None:
    m = mapper(one("summary_options: {quantiles: [{quantile: 1}, {quantile: 0}, 0.5, 0.5]}"))
    assert m.mappings[0].opts.summary.quantiles == (0.0, 0.5, 1.0)


def test_keys_of_a_mapping_take_effect() -> None:
    m = mapper(
        """
mappings:
- {match: t.*, name: timed, match_metric_type: timer}
- {match: t.*, name: counted, match_metric_type: counter, scale: 2, help: Hits.}
- {match: h.*, name: h, honor_labels: true, labels: {env: "$1"}}
- {match: d.*, name: d, action: drop}
"""
    )
    mp, name, _ = m.map("t.a", "observer")
    assert name == "timed" and mp is not None and mp.match_metric_type == "observer"
    mp, name, _ = m.map("t.a", "counter")
    assert name == "counted" and mp is not None and mp.scale == 2.0 and mp.opts.help == "Hits."
    assert m.map("t.a", "gauge") == (None, "t_a", {})
    mp, _, labels = m.map("h.prod", "counter")
    assert mp is not None and mp.honor_labels is True and labels == {"env": "prod"}
    mp, _, _ = m.map("d.x", "counter")
    assert mp is not None and mp.action == "drop"


# Served by statsd_exporter v0.27.2 for `t.A.B:1|c` with `match: "t.*.*"`.
GLOB_VECTORS = {
    "x_$1_$1": "x_",
    "x_${1}_$1": "x_A_A",
    "x_$1$2": "x_",
    "x_$1$": "x_",
    "x_$$1": "x_",
    "x_$1_${2}y$2": "x_{2}yB",
    "x_$3": "x_",
    "x_$0": "x_",
    "x_$1${1}": "x_{1}",
    "x_$2$1$2": "x_",
    "x_${2}${1}$2$1": "x_BA",
    "${1}$1$": "A",
    "plain": "plain",
    "x_$1.$1x": "x_A.%!s(MISSING)x",
    "x_$2.$1.$2x.$1y": "x_B.A.%!s(MISSING)x.%!s(MISSING)y",
    "${1}x.${1}": "Ax.A",
    "$1x.$2.$1": ".B.A",
    "$9": "",
}


def test_glob_templates_expand_as_statsd_exporter_expands_them() -> None:
    labels = {f"l{i}": t for i, t in enumerate(GLOB_VECTORS)}
    m = Mapper({"mappings": [{"match": "t.*.*", "name": "tpl", "labels": labels}]}, "m")
    _, _, got = m.map("t.A.B", "counter")
    assert {labels[k]: v for k, v in got.items()} == GLOB_VECTORS


@pytest.mark.parametrize(
    ("template", "want"),
    [
        ("$1", "api"),
        ("${op}", "get"),
        ("$1x", ""),  # the group named 1x
        ("${1}x", "apix"),
        ("$$1", "$1"),
        ("$9", ""),  # no such group
        ("${nope}", ""),
        ("$opt", ""),  # a group that did not take part
        ("a$2b", "a"),  # `$2b` is the group named 2b
    ],
)
def test_regex_templates_follow_go_expand(template: str, want: str) -> None:
    raw: dict[str, Any] = {
        "match": r"^svc\.(\w+)\.(?P<op>\w+)(?P<opt>\.x)?$",
        "match_type": "regex",
        "name": "n",
        "labels": {"v": template},
    }
    m = Mapper({"mappings": [raw]}, "m")
    assert m.map("svc.api.get", "counter")[2] == {"v": want}


def test_globs_before_regexes_and_the_most_literal_glob_first_when_asked() -> None:
    text = """
mappings:
- {match: 'a\\.', match_type: regex, name: by_regex}
- {match: a.*.c, name: star_first}
- {match: a.b.*, name: literal_second}
"""
    m = mapper(text)
    assert m.map("a.b.c", "counter")[1] == "star_first"
    assert m.map("a.x.c", "counter")[1] == "star_first"
    assert m.map("a.b.z", "counter")[1] == "literal_second"
    assert m.map("a.q", "counter")[1] == "by_regex"
    m = mapper("defaults: {glob_disable_ordering: true}\n" + text)
    assert m.map("a.b.c", "counter")[1] == "literal_second"
    assert m.map("a.q", "counter")[1] == "by_regex"
    m = mapper("defaults: {match_type: regex}\nmappings:\n- {match: 'a+', name: r}\n")
    assert m.map("xaay", "counter")[1] == "r"  # unanchored, as Go's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mapping: []", "m.mapping: unknown key"),
        ("defaults: {ttl_s: 1}", "m.defaults.ttl_s: unknown key"),
        (one("summary_options: {max_ages: 1m}"), "m.mappings[0].summary_options.max_ages: unknown"),
        (one("histogram_options: {bucket: [1]}"), "m.mappings[0].histogram_options.bucket: unkno"),
    ],
)
def test_unknown_keys_are_named_where_they_are(text: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        mapper(text)
    assert message in str(exc.value)


def test_an_empty_deprecated_list_means_the_defaults() -> None:
    m = mapper(one("observer_type: histogram\nbuckets: []\nquantiles: []"))
    assert m.mappings[0].opts.buckets == DEFAULT_BUCKETS


def test_glob_names_from_captures_and_globs_anchored_at_both_ends() -> None:
    m = mapper('mappings:\n- {match: "a.*.*", name: "${2}_${1}_total"}\n')
    assert m.map("a.x.y", "counter")[1] == "y_x_total"
    for name in ("xa.b.c", "b.a.b.c", "a.b.c.d"):
        assert m.map(name, "counter")[0] is None


def test_a_regex_group_that_did_not_take_part_expands_to_nothing() -> None:
    m = Mapper(
        {
            "mappings": [
                {"match": "(x)?(y)", "match_type": "regex", "name": "n", "labels": {"v": "$1|$2"}}
            ]
        },
        "m",
    )
    assert m.map("y", "counter")[2] == {"v": "|y"}


def test_ordering_keeps_every_mapping_once() -> None:
    m = mapper(
        "defaults: {glob_disable_ordering: true}\nmappings:\n"
        "- {match: 'r', match_type: regex, name: r}\n"
        "- {match: a.*, name: a}\n"
        "- {match: b.c, name: b}\n"
    )
    assert [mp.name for mp in m.mappings] == ["b", "a", "r"]


def test_unmapped_statsd_metrics_get_podkits_help_text() -> None:
    import logging

    from podkit.adapters.metrics.sources import build
    from podkit.adapters.metrics.store import Store

    store = Store(logging.getLogger("t"))
    src = build({"type": "statsd", "udp": "127.0.0.1:0"}, "t", store, logging.getLogger("t"), None)
    src.ingest(b"hits:1|c\n")  # type: ignore[attr-defined]
    assert "# HELP hits_total StatsD counter adapted by podkit metrics.\n" in store.render()
