"""The metrics adapter's byte budget (issue 13, class 4): every input-chosen
string is charged, refused beyond the limits, and given back when it goes."""

from __future__ import annotations

import logging

from podkit.adapters.metrics.series import SUMMARY
from podkit.adapters.metrics.sources import build
from podkit.adapters.metrics.statsd import StatsdSource
from podkit.adapters.metrics.store import Store

LOG = logging.getLogger("test")


def make(store: Store, **cfg: object) -> StatsdSource:
    src = build({"type": "statsd", "udp": "127.0.0.1:0", **cfg}, "t", store, LOG, None)
    assert isinstance(src, StatsdSource)
    return src


def test_budget_refuses_new_series_and_counts_them() -> None:
    store = Store(LOG, max_bytes=200_000)
    src = make(store)
    src.ingest(b"\n".join(b"n%d:1|c" % i for i in range(1000)))
    assert 0 < store.budget.used <= 200_000
    assert store.conflicts["bytes"] > 0
    assert store.series_count() + store.conflicts["bytes"] == 1000


def test_name_and_label_value_length_limits() -> None:
    store = Store(LOG, max_name_length=20, max_label_value_length=10)
    src = make(store)
    src.ingest(b"a" * 21 + b":1|c\nok:1|c|#k:" + b"v" * 11 + b"\nok2:1|c|#" + b"k" * 21 + b":v")
    assert store.conflicts["too_long"] == 3
    assert store.series_count() == 0 and store.budget.used == 0


def test_budget_is_given_back_when_series_expire() -> None:
    store = Store(LOG)
    src = make(store, defaults={"ttl": "1s"})
    src.ingest(b"\n".join(b"n%d:1|c|#k:v%d" % (i, i) for i in range(100)))
    src.ingest(b"s:abc|s\ns:def|s\nt:1|ms\nt:2|ms")
    assert store.budget.used > 0
    store.expire(store.now + 10)
    assert store.series_count() == 0
    assert store.budget.used == 0


def test_set_members_are_charged_and_refused_beyond_the_budget() -> None:
    store = Store(LOG, max_bytes=60_000, max_label_value_length=100)
    src = make(store)
    src.ingest(b"\n".join(b"s:%s|s" % (b"m%05d" % i * 10) for i in range(2000)))
    src.ingest(b"s:" + b"x" * 101 + b"|s")
    assert store.budget.used <= 60_000
    assert src.dropped["set_member"] > 0


def test_summary_samples_stop_growing_when_the_budget_is_spent() -> None:
    store = Store(LOG, max_bytes=20_000)
    fam = store.family("t", SUMMARY, ())
    s = fam.get((), 0.0)
    for i in range(10_000):
        s.observe(float(i))
    assert store.budget.used <= 20_000
    assert s.count == 10_000 and store.budget.starved == 0
    q = dict(s.quantiles(0.0))
    assert 0 <= q[0.5] < 10_000


def test_sample_timestamps_only_inside_the_window_prometheus_accepts() -> None:
    from podkit.adapters.metrics.exposition import (
        TIMESTAMP_MAX_AGE,
        TIMESTAMP_MAX_AHEAD,
        sample_timestamp,
    )

    wall = 1_800_000_000.0
    assert sample_timestamp(wall - 1.5, wall, False) == " 1799999998500"
    assert sample_timestamp(wall - 1.5, wall, True) == " 1799999998.5"
    assert sample_timestamp(None, wall, False) == ""
    assert sample_timestamp(wall - TIMESTAMP_MAX_AGE - 1, wall, False) == ""
    assert sample_timestamp(wall + TIMESTAMP_MAX_AHEAD + 1, wall, True) == ""
