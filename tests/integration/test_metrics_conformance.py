"""statsd_exporter conformance, black box: the program as a subprocess, real
PyPI StatsD clients (`statsd`, `datadog`'s DogStatsD) and raw sockets as
senders, and the scrape compared with the series statsd_exporter serves for
the same mapping file and lines (its documented behaviour and the vectors of
its mapper, line and escape tests, re-expressed here). Every output also
passes promtool and the OpenMetrics parser.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from datadog.dogstatsd.base import DogStatsd
from statsd import StatsClient

from tests.helpers import ProgramProcess, free_port, run_program, wait_until
from tests.integration.test_metrics import scrape

MAPPING = """
defaults:
  observer_type: histogram
  timer_type: summary          # deprecated spelling: observer_type wins
  histogram_options:
    buckets: []                # empty: the default buckets
  quantiles:                   # deprecated spelling ...
    - quantile: 0.9
  summary_options:
    quantiles:                 # ... the new one wins
      - quantile: 0.5
        error: 0.05
mappings:
- match: "app.*.requests"
  name: "app_requests_total"
  help: "Requests by code."
  labels:
    code: "$1_x"               # ONE reference, to "1_x": expands to nothing
    route: "${1}_y"            # the way to suffix
- match: '^svc\\.(\\w+)\\.(?P<op>\\w+)\\.latency$'
  match_type: regex
  name: "svc_latency_seconds"
  scale: 0.001
  labels:
    svc: "$1"
    op: "${op}"
    odd: "$1x"                 # Go's Expand: the group named "1x", empty
- match: "tagged.*"
  name: "tagged_events_total"
  honor_labels: true
  labels:
    env: "default"
    kind: "$1"
- match: "typed.*"
  match_metric_type: gauge
  name: "typed_level"
- match: "typed.*"
  match_metric_type: counter
  name: "typed_hits_total"
- match: "drop.*"
  action: drop
  name: "dropped"
- match: "short.*"
  name: "short_lived"
  ttl: 1s
- match: "sum.*"
  observer_type: summary
  name: "sum_seconds"
  summary_options:
    max_age: 30s
    age_buckets: 2
    buf_cap: 100
- match: "hist.*"
  name: "hist_seconds"
  histogram_options:
    buckets: [0.1, 1]
"""

DEFAULT_LES = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0"]


def _val(got: dict[str, dict[tuple[Any, ...], float]], name: str, **labels: str) -> float:
    return got[name][tuple(sorted(labels.items()))]


@pytest.fixture
def adapter(tmp_path: Path) -> Any:
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    port = free_port(kind=socket.SOCK_DGRAM)
    sock_path = str(tmp_path / "dsd.socket")
    args = [
        "--statsd-udp",
        f"127.0.0.1:{port}",
        "--statsd-mapping",
        str(mapping),
        "--statsd-listen-unixgram",
        sock_path,
        "--statsd-unixsocket-mode",
        "770",
    ]
    with ProgramProcess("metrics", args, tmp=tmp_path) as proc:
        proc.wait_ready()
        yield proc, port, sock_path, mapping


def test_mapping_keys_clients_and_tolerance_match_statsd_exporter(adapter: Any) -> None:
    proc, port, _, _ = adapter
    sc = StatsClient("127.0.0.1", port)
    dd = DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True)
    sc.incr("app.200.requests")
    sc.incr("app.200.requests", 2)
    sc.incr("web-server--x.hits")  # unmapped: a run of dashes is one _
    sc.gauge("typed.a", 7)
    sc.incr("typed.a", 3)
    sc.incr("drop.me")
    sc.timing("sum.op", 250)  # ms -> 0.25 s, a summary with the 0.5 quantile
    sc.timing("hist.op", 500)  # 0.5 s, buckets 0.1 and 1
    sc.timing("plain.timer", 20)  # unmapped observer: defaults (histogram, default buckets)
    sc.incr("short.x")
    dd.histogram("svc.api.get.latency", 250)  # scale 0.001 -> 0.25
    dd.increment("tagged.a", tags=["env:prod"])  # honor_labels: the tag wins
    dd.increment("tagged.b")  # no tag: the mapping's label is the default
    dd.gauge("gauge.dd", 1.5, tags=["zone:eu-1"])
    # Raw lines where statsd_exporter is tolerant, or refuses.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        for line in (
            "with😱emoji:1|c",
            "0starts:1|g",
            "rate.bad:1|c|@abc",  # invalid rate: counted, taken as 1
            "rate.zero:2|c|@0",  # zero rate: taken as 1
            "ts.c:3|c|#k:v|T1656581400",  # DogStatsD 1.3 timestamp: ignored
            "neg.c:-1|c",  # negative counter: dropped, no series
            "empty.name:1|c",
        ):
            raw.sendto(line.encode(), ("127.0.0.1", port))
    got = wait_until(
        lambda: (g := scrape(proc)) and "with_emoji_total" in g and "empty_name_total" in g and g,
        what="every line applied",
    )
    assert got["app_requests_total"] == {(("code", ""), ("route", "200_y")): 3.0}
    assert _val(got, "web_server_x_hits_total") == 1.0
    assert _val(got, "typed_level") == 7.0
    assert _val(got, "typed_hits_total") == 3.0
    assert not any(k.startswith("drop") for k in got)
    assert _val(got, "sum_seconds", quantile="0.5") == 0.25
    assert _val(got, "hist_seconds_bucket", le="0.1") == 0.0
    assert _val(got, "hist_seconds_bucket", le="1.0") == 1.0
    # Unmapped timer: defaults' observer_type (histogram) with the default buckets.
    les = sorted(dict(k)["le"] for k in got["plain_timer_bucket"])
    assert sorted([*DEFAULT_LES, "+Inf"]) == les
    assert _val(got, "plain_timer_sum") == pytest.approx(0.02)
    assert _val(got, "svc_latency_seconds_sum", svc="api", op="get", odd="") == 0.25
    assert _val(got, "tagged_events_total", env="prod", kind="a") == 1.0
    assert _val(got, "tagged_events_total", env="default", kind="b") == 1.0
    assert _val(got, "gauge_dd", zone="eu-1") == 1.5
    assert _val(got, "with_emoji_total") == 1.0
    assert _val(got, "_0starts") == 1.0
    assert _val(got, "rate_bad_total") == 1.0
    assert _val(got, "rate_zero_total") == 2.0
    assert _val(got, "ts_c_total", k="v") == 3.0
    assert "neg_c_total" not in got
    # statsd_exporter's own metric names, next to podkit's.
    assert _val(got, "statsd_exporter_sample_errors_total", reason="invalid_sample_factor") == 2
    assert _val(got, "statsd_exporter_events_error_total", reason="illegal_negative_counter") == 1
    assert _val(got, "statsd_exporter_events_actions_total", action="drop") == 1
    assert _val(got, "statsd_exporter_events_total", type="counter") >= 8
    assert _val(got, "statsd_exporter_loaded_mappings") == 9
    assert _val(got, "statsd_exporter_lines_total") >= 21
    assert (
        _val(
            got,
            "podkit_metrics_statsd_errors_total",
            reason="negative_counter",
            source=(f"statsd 127.0.0.1:{port}"),
        )
        == 1
    )
    text = proc.get("/metrics")[2].decode()
    assert "# HELP app_requests_total Requests by code.\n" in text  # help
    # OpenMetrics' strict parser takes the same output.
    om = scrape(proc, openmetrics=True)
    assert om["app_requests_total"] == got["app_requests_total"]
    # ttl: the series goes, the others stay.
    wait_until(lambda: "short_lived_total" not in scrape(proc), timeout=5, what="ttl expiry")


def test_dogstatsd_over_a_unix_datagram_socket(adapter: Any) -> None:
    proc, _, sock_path, _ = adapter
    assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o770
    dd = DogStatsd(socket_path=sock_path, disable_telemetry=True)
    dd.increment("uds.hits", tags=["via:uds"])
    dd.distribution("uds.size", 3)
    got = wait_until(
        lambda: (g := scrape(proc)) and "uds_hits_total" in g and g, what="unixgram lines"
    )
    assert _val(got, "uds_hits_total", via="uds") == 1.0
    assert _val(got, "uds_size_sum") == 3.0
    assert _val(got, "statsd_exporter_unixgram_packets_total") >= 2


def post_reload(proc: ProgramProcess) -> int:
    """POST /-/reload, waiting out the one-per-second limit."""
    return int(
        wait_until(
            lambda: (st := proc.get("/-/reload", method="POST", data=b"")[0]) != 429 and st,
            what="a reload that is not rate-limited",
        )
    )


def test_reload_keeps_series_and_a_bad_file_keeps_the_old_rules(adapter: Any) -> None:
    proc, port, _, mapping = adapter
    sc = StatsClient("127.0.0.1", port)
    sc.incr("app.500.requests")
    wait_until(lambda: "app_requests_total" in scrape(proc), what="first series")
    mapping.write_text(MAPPING.replace('name: "app_requests_total"', 'name: "app_calls_total"'))
    assert post_reload(proc) == 200
    # Rate-limited: a second reload within a second is refused, not run.
    assert proc.get("/-/reload", method="POST", data=b"")[0] == 429
    sc.incr("app.500.requests")
    got = wait_until(
        lambda: (g := scrape(proc)) and "app_calls_total" in g and g, what="new mapping in use"
    )
    # The series made under the old mapping is still served, with its value.
    assert _val(got, "app_requests_total", code="", route="500_y") == 1.0
    assert _val(got, "app_calls_total", code="", route="500_y") == 1.0
    # A bad file: refused (500), logged, counted; the previous rules stay.
    mapping.write_text(MAPPING + "- match: x\n  name: y\n  scal: 2\n")
    assert post_reload(proc) == 500
    proc.wait_log("mapping file reload failed; keeping the previous mappings")
    sc.incr("app.500.requests")
    got = wait_until(
        lambda: (
            (g := scrape(proc)) and _val(g, "app_calls_total", code="", route="500_y") == 2.0 and g
        ),
        what="old rules still in use",
    )
    assert _val(got, "statsd_exporter_config_reloads_total", outcome="failure") == 1
    # SIGHUP reloads too.
    mapping.write_text(MAPPING)
    proc.signal(signal.SIGHUP)
    wait_until(
        lambda: _val(scrape(proc), "statsd_exporter_config_reloads_total", outcome="success") == 2,
        what="SIGHUP reload",
    )


def test_check_config_exits_0_or_2_naming_the_key(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MAPPING)
    res = run_program(
        "metrics", ["--check-config", "--statsd-udp", "127.0.0.1:0", "--statsd-mapping", str(good)]
    )
    assert res.returncode == 0, res.stderr
    for bad, key in (
        (
            "defaults:\n  histogram_options:\n    native_histogram_bucket_factor: 1.1\n",
            "native_histogram_bucket_factor",
        ),
        ("mappings:\n- match: a.b\n  name: x\n  honor_label: true\n", "honor_label"),
        ("mappings:\n- match: a.b*\n  name: x\n", "invalid glob"),
    ):
        f = tmp_path / "bad.yaml"
        f.write_text(bad)
        res = run_program(
            "metrics", ["--check-config", "--statsd-udp", "127.0.0.1:0", "--statsd-mapping", str(f)]
        )
        assert res.returncode == 2, res.stderr
        assert key in res.stderr.decode()
