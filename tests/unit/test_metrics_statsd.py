"""StatsD parsing, mapping (statsd_exporter's documented examples) and the store."""

from __future__ import annotations

import logging
import math

import pytest
import yaml
from podkit.adapters.metrics.mapper import Mapper
from podkit.adapters.metrics.sources import build
from podkit.adapters.metrics.statsd import BadLine, StatsdSource, parse_line
from podkit.adapters.metrics.store import Store
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from podkit import UsageError
from tests.helpers import wait_until_async

LOG = logging.getLogger("test")

# The examples of statsd_exporter's README ("Metric Mapping and Configuration").
README_MAPPING = """
mappings:
- match: "test.dispatcher.*.*.*"
  name: "dispatcher_events_total"
  labels:
    processor: "$1"
    action: "$2"
    outcome: "$3"
    job: "test_dispatcher"
- match: "*.signup.*.*"
  name: "signup_events_total"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
"""


def make(cfg: dict | None = None, mapping: str | None = None) -> tuple[StatsdSource, Store]:
    store = Store(LOG)
    raw = {"type": "statsd", "udp": "127.0.0.1:0", **(cfg or {})}
    if mapping is not None:
        raw.update(yaml.safe_load(mapping))
    src = build(raw, "test", store, LOG, None)
    assert isinstance(src, StatsdSource)
    return src, store


def scrape(store: Store) -> dict[str, dict[tuple, float]]:
    text = store.render()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_readme_glob_mapping_maps_as_documented() -> None:
    src, store = make(mapping=README_MAPPING)
    src.ingest(
        b"test.dispatcher.FooProcessor.send.success:1|c\n"
        b"foo_product.signup.facebook.failure:1|c\n"
        b"test.web-server.foo.bar:1|c\n"
    )
    got = scrape(store)
    assert got["dispatcher_events_total"] == {
        (
            ("action", "send"),
            ("job", "test_dispatcher"),
            ("outcome", "success"),
            ("processor", "FooProcessor"),
        ): 1.0
    }
    assert got["signup_events_total"] == {
        (("job", "foo_product_server"), ("outcome", "failure"), ("provider", "facebook")): 1.0
    }
    # Unmapped: escaped name (counters get the OpenMetrics _total suffix).
    assert got["test_web_server_foo_bar_total"] == {(): 1.0}


def test_regex_mapping_and_go_expand_rules() -> None:
    m = Mapper(
        yaml.safe_load(
            r"""
mappings:
- match: test\.(\w+)\.(\w+)\.counter
  match_type: regex
  name: "${2}_total"
  labels:
    provider: "$1"
    odd: "$1x"
"""
        ),
        "t",
    )
    mapping, name, labels = m.map("test.aws.requests.counter", "counter")
    assert mapping is not None
    assert name == "requests_total"
    # Go's Expand reads `$1x` as the (absent) group named "1x".
    assert labels == {"provider": "aws", "odd": ""}


def test_drop_action_match_metric_type_and_defaults() -> None:
    src, store = make(
        mapping="""
defaults:
  observer_type: histogram
  buckets: [0.01, 0.1, 1]
  ttl: 0
mappings:
- match: test.timing.*.*.*
  name: my_timer
  labels: {provider: "$2", outcome: "$3", job: "${1}_server"}
- match: other.timing.*.*.*
  timer_type: summary
  name: other_timer
  quantiles: [{quantile: 0.5, error: 0.05}]
  labels: {job: "${1}_server_other"}
- match: test.foo.*
  name: test_foo
  match_metric_type: counter
  labels: {provider: "$1"}
- match: .
  match_type: regex
  action: drop
  name: dropped
"""
    )
    src.ingest(
        b"test.timing.web.aws.ok:50|ms\n"
        b"test.timing.web.aws.ok:500|ms\n"
        b"other.timing.a.b.c:2|h\n"
        b"test.foo.aws:3|c\n"
        b"test.foo.aws:3|g\n"
        b"anything.else:1|c\n"
    )
    got = scrape(store)
    key = (("job", "web_server"), ("outcome", "ok"), ("provider", "aws"))
    assert got["my_timer_bucket"][(*key[:1], ("le", "0.1"), *key[1:])] == 1.0
    assert got["my_timer_bucket"][(*key[:1], ("le", "1.0"), *key[1:])] == 2.0
    assert got["my_timer_count"][key] == 2.0
    assert math.isclose(got["my_timer_sum"][key], 0.55)
    assert got["other_timer"][(("job", "a_server_other"), ("quantile", "0.5"))] == 2.0
    assert got["test_foo_total"] == {(("provider", "aws"),): 3.0}
    # The gauge did not match the counter-only rule; the regex drop took it.
    assert "test_foo" not in got
    assert src.dropped["mapping"] == 2
    assert "anything_else_total" not in got


def test_line_types_sample_rates_and_sets() -> None:
    src, store = make()
    src.ingest(
        b"c:1|c\nc:1|c|@0.1\n"
        b"g:10|g\ng:-3|g\ng:+1|g\n"
        b"t:250|ms\nh:3|h\nd:4|d|@0.5\n"
        b"u:a|s\nu:b|s\nu:a|s\n"
        b"multi:1|c:2|c\n"
        b"c:nan|c\nc:inf|c\nc:-1|c\n"
    )
    got = scrape(store)
    assert got["c_total"][()] == pytest.approx(11.0)
    assert got["g"][()] == 8.0
    assert got["t_sum"][()] == 0.25  # ms -> seconds
    assert got["h_sum"][()] == 3.0
    assert got["d_count"][()] == 2.0  # sampled at 0.5: counted twice
    assert got["u"][()] == 2.0
    assert got["multi_total"][()] == 3.0
    assert src.errors["bad_value"] == 2 and src.errors["negative_counter"] == 1


def test_four_tag_dialects() -> None:
    src, store = make()
    src.ingest(
        b"dog:1|c|#env:prod,region:eu\n"
        b"influx,env=prod,region=eu:1|c\n"
        b"librato#env=prod,region=eu:1|c\n"
        b"signal[env=prod,region=eu]fx:1|c\n"
    )
    got = scrape(store)
    want = {(("env", "prod"), ("region", "eu")): 1.0}
    for name in ("dog_total", "influx_total", "librato_total", "signalfx_total"):
        assert got[name] == want, name


@pytest.mark.parametrize(
    ("line", "reason", "whole_line"),
    [
        ("nocolon", "malformed", True),
        ("x:1", "malformed", True),
        ("x:1:2|c", "bad_type", True),
        ("x,a=b:1|c|#c:d", "mixed_tags", True),
        # One sample's fault drops that sample only (statsd_exporter's
        # `continue samples`), counted by reason.
        ("x:1|q", "bad_type", False),
        ("x:abc|c", "bad_value", False),
        ("x:1|c|", "malformed", False),
        ("x:1|c|zz", "bad_section", False),
        ("x:1|c|c", "bad_container_id", False),
        ("x:1|c|cfoo", "bad_container_id", False),
    ],
)
def test_malformed_lines(line: str, reason: str, whole_line: bool) -> None:
    dropped: list[str] = []
    if whole_line:
        with pytest.raises(BadLine) as exc:
            parse_line(line)
        assert exc.value.reason == reason
    else:
        assert parse_line(line, None, dropped) == []
        assert dropped == [reason]
    src, store = make()
    src.ingest(line.encode() + b"\nok:1|c\n")
    assert src.errors[reason] == 1
    assert scrape(store) == {"ok_total": {(): 1.0}}


def test_a_bad_section_drops_its_sample_not_the_line() -> None:
    src, store = make()
    # Two samples on one line: the first has an unknown section, the second is kept.
    src.ingest(b"two:1|c|zz:5|g\nthree:2|c|@0.5|c:\n")
    assert scrape(store) == {"two": {(): 5.0}}
    assert src.errors["bad_section"] == 1 and src.errors["bad_container_id"] == 1
    assert parse_line("ts:1|c|Tnot-a-number")[0].value == "1"  # |T: ignored unparsed


def test_sample_rates_as_statsd_exporter_uses_them() -> None:
    src, store = make()
    src.ingest(
        b"bad:3|c|@abc\nzero:3|c|@0\n"  # taken as 1, counted
        b"over:4|c|@2\n"  # used as given: 4 / 2
        b"neg:4|c|@-1\n"  # 4 / -1 is a negative counter: dropped, no series
        b"t:1|ms|@2\nt2:1|ms|@0.25\n"  # observed int(1/rate) times: 0 and 4
    )
    got = scrape(store)
    assert got["bad_total"][()] == 3.0 and got["zero_total"][()] == 3.0
    assert got["over_total"][()] == 2.0
    assert "neg_total" not in got and src.errors["negative_counter"] == 1
    assert got["t2_count"][()] == 4.0
    assert got.get("t_count", {}).get((), 0.0) == 0.0
    assert src.errors["bad_sample_rate"] == 2


def test_a_negative_counter_after_scale_creates_no_series() -> None:
    src, store = make({"mappings": [{"match": "neg.*", "name": "neg_total", "scale": -1}]})
    src.ingest(b"neg.a:1|c\nneg.a:1|c\n")
    assert "neg_total" not in scrape(store)
    assert not store.families and src.errors["negative_counter"] == 2


def test_bad_tags_are_dropped_and_counted_the_line_kept() -> None:
    src, store = make()
    src.ingest(b"x:1|c|#novalue,ok:1\nx:1|c|#novalue,ok:1\ny[a=1:1|c\n")
    assert src.errors["bad_tag"] == 3
    got = scrape(store)
    assert got["x_total"] == {(("ok", "1"),): 2.0}
    assert got["y_a_1_total"][()] == 1.0


def test_dogstatsd_extended_aggregation_container_id_and_timestamp() -> None:
    src, store = make({"defaults": {"observer_type": "histogram"}})
    src.ingest(b"lat:100:200:300|ms|#env:a|c:abc123|T1656581400\n")
    got = scrape(store)
    key = (("container_id", "abc123"), ("env", "a"))
    assert got["lat_count"][key] == 3.0
    assert got["lat_sum"][key] == pytest.approx(0.6)


def test_conflicts_drop_offender_keep_the_rest() -> None:
    src, store = make()
    src.ingest(b"a:1|c\na:1|g\nb:1|c|#x:1\nb:1|c|#y:1\nb:2|c|#x:1\n")
    got = scrape(store)
    assert got["a_total"][()] == 1.0
    assert "a" not in got
    # Another tag set under one name is served too, as statsd_exporter does.
    assert got["b_total"] == {(("x", "1"),): 3.0, (("y", "1"),): 1.0}
    assert store.conflicts["type"] == 1 and store.conflicts["labels"] == 0
    # Cached conflicts are still counted.
    src.ingest(b"a:1|g\n")
    assert store.conflicts["type"] == 2


def test_drop_unmapped_and_ttl_expiry() -> None:
    src, store = make(
        {"drop_unmapped": True, "mappings": [{"match": "keep.*", "name": "kept", "ttl": "1s"}]}
    )
    src.ingest(b"keep.me:1|g\nother:1|g\n")
    assert src.dropped["unmapped"] == 1
    assert scrape(store)["kept"][()] == 1.0
    store.expire(store.now + 2)
    assert "kept" not in scrape(store)
    # The cache was dropped with the series: a new sample creates it again.
    src.ingest(b"keep.me:5|g\n")
    assert scrape(store)["kept"][()] == 5.0


def test_histogram_label_le_is_a_conflict_and_openmetrics_renders() -> None:
    src, store = make({"defaults": {"observer_type": "histogram"}})
    src.ingest(b"lat:5|ms|#le:x\nlat2:5|ms\nc:1|c\n")
    assert store.conflicts["labels"] == 1
    text = store.render(openmetrics=True) + "# EOF\n"
    fams = {f.name: f for f in om_families(text)}
    assert fams["c"].type == "counter" and fams["c"].samples[0].name == "c_total"
    assert [s.labels["le"] for s in fams["lat2"].samples[:2]] == ["0.005", "0.01"]


def test_exposition_escapes_and_special_values() -> None:
    src, store = make()
    src.ingest(b'esc:1|g|#path:C:\\dir,q:say "hi"\n')
    fam = store.families["esc"]
    fam.series[next(iter(fam.series))].value = float("nan")
    src.ingest(b"inf:1|g\n")
    store.families["inf"].series[()].value = float("-inf")
    text = store.render()
    assert 'esc{path="C:\\\\dir",q="say \\"hi\\""} NaN' in text
    assert "inf -Inf" in text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["esc"].samples[0].labels == {"path": "C:\\dir", "q": 'say "hi"'}


def test_mapping_file_errors_name_the_place() -> None:
    with pytest.raises(UsageError, match=r"mappings\[0\]: metric mapping didn't set a metric name"):
        Mapper({"mappings": [{"match": "a.*"}]}, "f")
    with pytest.raises(UsageError, match="invalid regex"):
        Mapper({"mappings": [{"match": "(", "match_type": "regex", "name": "x"}]}, "f")
    with pytest.raises(UsageError, match="invalid label key"):
        Mapper({"mappings": [{"match": "a", "name": "x", "labels": {"1bad": "v"}}]}, "f")
    # Nothing is accepted and ignored: an unknown key or one podkit does not
    # implement is refused, naming it; scale is implemented.
    with pytest.raises(UsageError, match=r"mappings\[0\]\.scal: unknown key"):
        Mapper({"mappings": [{"match": "a", "name": "x", "scal": 2}]}, "f")
    with pytest.raises(UsageError, match="native_histogram_max_buckets: native histograms"):
        Mapper({"defaults": {"histogram_options": {"native_histogram_max_buckets": 256}}}, "f")
    m = Mapper({"mappings": [{"match": "a", "name": "x", "scale": 2}]}, "f")
    assert m.mappings[0].scale == 2.0 and not m.warnings


def test_summary_window_ages_out_old_observations() -> None:
    from podkit.adapters.metrics.series import SummaryOptions, SummarySeries

    s = SummarySeries(SummaryOptions((0.5,), max_age=10.0, age_buckets=5), now=0.0)
    for v in range(1, 101):
        s.observe(float(v))
    assert s.quantiles(1.0) == [(0.5, 50.0)]
    # After a long quiet spell the slice that was current survives one more
    # rotation (its samples may be recent), then ages out.
    assert s.quantiles(100.0) == [(0.5, 50.0)]
    s.observe(7.0)
    for t in (103.0, 105.0, 107.0):
        s.quantiles(t)
    assert s.quantiles(109.0) == [(0.5, 7.0)]
    assert math.isnan(s.quantiles(111.0)[0][1])
    assert s.count == 101 and s.sum == 5057.0


def test_series_limit_bounds_a_flood_of_names() -> None:
    store = Store(LOG, max_series=100)
    src = build({"type": "statsd", "udp": "127.0.0.1:0"}, "t", store, LOG, None)
    assert isinstance(src, StatsdSource)
    src.ingest(b"\n".join(b"flood.%d:1|c" % i for i in range(500)))
    src.ingest(b"flood.1:1|c\nset:a|s\n")
    assert store.series_count() == 100
    assert store.conflicts["limit"] == 401
    assert len(store.families) == 100  # no empty family per refused name
    assert scrape(store)["flood_1_total"][()] == 2.0
    # Room again once series expire.
    for fam in store.families.values():
        fam.ttl = 1.0
    store.expire(store.now + 5)
    src.ingest(b"set:a|s\n")
    assert store.series_count() == 1 and scrape(store)["set"][()] == 1.0


def test_readme_summary_options_both_spellings() -> None:
    for opts in (
        "max_summary_age: 30s\n    summary_age_buckets: 3\n    stream_buffer_size: 1000",
        "max_age: 30s\n    age_buckets: 3\n    buf_cap: 1000",
    ):
        m = Mapper(
            yaml.safe_load(
                f"""
mappings:
- match: "test.timing.*.*.*"
  timer_type: summary
  name: "my_timer"
  labels: {{provider: "$2", outcome: "$3", job: "${{1}}_server"}}
  summary_options:
    quantiles:
      - {{quantile: 0.99, error: 0.001}}
      - {{quantile: 0.95, error: 0.01}}
      - {{quantile: 0.9, error: 0.05}}
      - {{quantile: 0.5, error: 0.005}}
    {opts}
"""
            ),
            "t",
        )
        s = m.mappings[0].opts.summary
        assert (s.quantiles, s.max_age, s.age_buckets, s.buf_cap) == (
            (0.5, 0.9, 0.95, 0.99),
            30.0,
            3,
            1000,
        )
        assert not m.warnings


async def test_sets_reset_every_set_interval() -> None:
    src, store = make({"set_interval": "100ms"})
    await src.start()
    try:
        src.ingest(b"u:a|s\nu:b|s\n")
        assert scrape(store)["u"][()] == 2.0
        await wait_until_async(lambda: scrape(store)["u"][()] == 0.0, 2, what="the set reset")
        src.ingest(b"u:c|s\n")
        assert scrape(store)["u"][()] == 1.0
    finally:
        await src.stop()


def test_several_tag_sets_are_one_family_in_the_exposition_and_expire() -> None:
    from tests.peers.prometheus import promtool_check

    src, store = make({"defaults": {"ttl": "10s", "observer_type": "histogram"}})
    used0 = store.budget.used
    src.ingest(b"s:1|g|#a:1\ns:2|g|#b:2\ns:3|g\nh:1|ms|#a:1\nh:2|ms\n")
    text = store.render()
    promtool_check(text.encode())
    assert text.count("# TYPE s gauge") == 1 and text.count("# TYPE h histogram") == 1
    got = scrape(store)
    assert got["s"] == {(("a", "1"),): 1.0, (("b", "2"),): 2.0, (): 3.0}
    assert got["h_count"] == {(("a", "1"),): 1.0, (): 1.0}
    om = {f.name: len(f.samples) for f in om_families(store.render(openmetrics=True) + "# EOF\n")}
    assert om["s"] == 3
    assert store.series_count() == 5 and set(store.families) == {"s", "h"}
    # The first label set (the family's own) expires; the name stays while
    # another set lives.
    src.ingest(b"s:4|g|#b:2\n")
    fam = store.families["s"]
    for part in fam.parts():
        for series in part.series.values():
            series.updated = 0.0 if part is fam else store.now + 100
    store.expire(store.now + 5)
    assert scrape(store)["s"] == {(("b", "2"),): 4.0, (): 3.0}
    src.ingest(b"s:5|g|#a:1\n")  # the family's own label set again
    assert scrape(store)["s"][(("a", "1"),)] == 5.0
    store.expire(store.now + 1000)
    assert not store.families and store.series_count() == 0
    assert store.budget.used == used0
