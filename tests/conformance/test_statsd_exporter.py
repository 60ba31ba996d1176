"""podkit's metrics adapter against the real statsd_exporter, side by side.

Both get the same mapping file and the same bytes (real PyPI clients,
`statsd` and `datadog`'s DogStatsD, plus raw lines over UDP and TCP); the two
scrapes must hold the same series: names, labels and values. The only
normalisation is podkit's documented deliberate difference: a counter is
served with `_total` (statsd_exporter serves the bare name, which promtool
rejects), and `le`/`quantile` label values compared as numbers (Go prints
`1`, Python `1.0`). What statsd_exporter v0.27.2 (the newest release that
builds offline, see exporters.py) does not have yet — DogStatsD container
ids (`|c:`) and `|T` timestamps, both v0.29 — is checked against v0.30's test
vectors in tests/integration/test_metrics_conformance.py instead.

Run with `make conformance` (not part of `make test`: the build needs the
statsd_exporter source, from $PODKIT_STATSD_EXPORTER_GIT or GitHub).
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from datadog.dogstatsd.base import DogStatsd
from statsd import StatsClient, TCPStatsClient

from podkit.testing import http
from tests.conformance.compare import SENTINEL, Series, diff, helps, normalise
from tests.conformance.exporters import statsd_exporter
from tests.helpers import ProgramProcess, free_port, wait_until


class Pair:
    """statsd_exporter and podkit metrics, same mapping, listening side by side."""

    def __init__(self, tmp: Path, mapping: str | None) -> None:
        self.tmp = tmp
        self.mapping = None
        if mapping is not None:
            self.mapping = tmp / "mapping.yml"
            self.mapping.write_text(mapping)
        self.se_udp = free_port(kind=socket.SOCK_DGRAM)
        self.se_tcp = free_port()
        self.se_web = free_port()
        self.pk_udp = free_port(kind=socket.SOCK_DGRAM)
        self.pk_tcp = free_port()
        self.se_sock = str(tmp / "se.sock")
        self.pk_sock = str(tmp / "pk.sock")

    def __enter__(self) -> Pair:
        args = [
            statsd_exporter(),
            f"--web.listen-address=127.0.0.1:{self.se_web}",
            f"--statsd.listen-udp=127.0.0.1:{self.se_udp}",
            f"--statsd.listen-tcp=127.0.0.1:{self.se_tcp}",
            "--statsd.event-flush-interval=20ms",
            f"--statsd.listen-unixgram={self.se_sock}",
            "--statsd.unixsocket-mode=700",
            "--log.level=warn",
        ]
        pk_args = ["--statsd-udp", f"127.0.0.1:{self.pk_udp}"]
        pk_args += ["--statsd-tcp", f"127.0.0.1:{self.pk_tcp}"]
        pk_args += ["--statsd-listen-unixgram", self.pk_sock, "--statsd-unixsocket-mode", "700"]
        if self.mapping is not None:
            args.append(f"--statsd.mapping-config={self.mapping}")
            pk_args += ["--statsd-mapping", str(self.mapping)]
        self.se_log = (self.tmp / "statsd_exporter.log").open("wb")
        self.se = subprocess.Popen(args, stdout=self.se_log, stderr=subprocess.STDOUT)
        self.pk = ProgramProcess("metrics", pk_args, tmp=self.tmp).start()
        self.pk.wait_ready()
        wait_until(lambda: self._se_up(), what="statsd_exporter serving /metrics")
        return self

    def _se_up(self) -> bool:
        assert self.se.poll() is None, (self.tmp / "statsd_exporter.log").read_text()
        try:
            return http(f"http://127.0.0.1:{self.se_web}/metrics")[0] == 200
        except OSError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.pk.stop()
        self.se.terminate()
        self.se.wait(10)
        self.se_log.close()

    def each(self, fn: Callable[[int, int], None]) -> None:
        """Run a sender against statsd_exporter, then against podkit."""
        fn(self.se_udp, self.se_tcp)
        fn(self.pk_udp, self.pk_tcp)

    def raw(self, *lines: str) -> None:
        def send(udp: int, _tcp: int) -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for line in lines:
                    s.sendto(line.encode(), ("127.0.0.1", udp))

        self.each(send)

    def scrapes(self) -> tuple[Series, Series]:
        """Both scrapes, once each has applied everything sent before now."""
        self.raw(f"{DONE}:1|c")

        def got(url: str) -> Series | None:
            status, _, body = http(url)
            assert status == 200
            s = normalise(body.decode())
            return s if any(k[0] == SENTINEL for k in s) else None

        se = wait_until(lambda: got(f"http://127.0.0.1:{self.se_web}/metrics"), what="se")
        pk = wait_until(lambda: got(self.pk.url("/metrics")), what="podkit")
        return pk, se

    def same(self) -> Series:
        pk, se = self.scrapes()
        problems = diff(pk, se, PODKIT_ONLY, EXPORTER_ONLY)
        assert not problems, "podkit and statsd_exporter differ:\n" + "\n".join(problems)
        return pk


PODKIT_ONLY = {
    # StatsD sets (`|s`): statsd_exporter rejects them ("no support for StatsD
    # sets"); podkit serves the number of distinct members as a gauge.
    "client_users",
    "set_dedup",
}
#: statsd_exporter serves nothing podkit does not.
EXPORTER_ONLY: set[str] = set()
DONE = "conformance.done"


@pytest.fixture
def pair(tmp_path: Path, request: Any) -> Iterator[Pair]:
    with Pair(tmp_path, getattr(request, "param", None)) as p:
        yield p


def clients(pair: Pair) -> None:
    """The same calls through both PyPI clients (UDP and TCP) to both programs."""

    def send(udp: int, tcp: int) -> None:
        sc = StatsClient("127.0.0.1", udp)
        sc.incr("client.hits")
        sc.incr("client.hits", 4)
        sc.decr("client.level_down")
        sc.gauge("client.level", 10)
        sc.gauge("client.level", -3, delta=True)
        sc.gauge("client.level", 2, delta=True)
        sc.timing("client.latency", 250)
        sc.set("client.users", "alice")
        sc.set("client.users", "bob")
        tc = TCPStatsClient("127.0.0.1", tcp)
        tc.incr("client.tcp_hits", 2)
        tc.close()
        dd = DogStatsd(host="127.0.0.1", port=udp, disable_telemetry=True)
        dd.increment("dd.requests", tags=["code:200", "method:get"])
        dd.increment("dd.requests", 2, tags=["code:500", "method:get"])
        dd.gauge("dd.queue", 7.5, tags=["queue:mail"])
        dd.histogram("dd.size", 300, tags=["route:/a"])
        dd.distribution("dd.dist", 0.25)
        dd.timing("dd.timer", 120)
        dd.decrement("dd.down")

    pair.each(send)


# The clients send a sampled metric only when random() < rate: send that one raw.
SAMPLED = ["client.sampled:3|c|@0.5"]

ESCAPING = [
    "test.web-server.foo.bar:1|c",
    "with---multiple-dashes:1|c",
    "with.*.multiple:1|c",
    "with😱emoji:1|c",
    "0starts_with_digit:1|c",
    "with/slash:1|c",
    "with:colon_in_value:1|c",
    "with%percent:1|c",
    "_leading_underscore:1|c",
    "CamelCase.And.Dots:1|c",
    "trailing.dot.:1|c",
    "a-b-c--d:1|g",
]

TOLERANCE = [
    "rate.bad:1|c|@abc",
    "rate.zero:2|c|@0",
    "rate.neg:2|c|@-1",
    "rate.big:2|c|@2",
    "neg.counter:-1|c",
    "neg.then.pos:-1|c",
    "neg.then.pos:2|c",
    "gauge.delta:+5|g",
    "gauge.delta:-2|g",
    "gauge.rate:5|g|@0.1",
    "timer.rate:100|ms|@0.5",
    "hist.rate:2|h|@0.25",
    "multi.sample:1|c:2|c",
    "ext.agg:1:2:3|ms",
    "ext.agg.bad:1:2|c",
    "empty::1|c",
    ":1|c",
    "no.type:1",
    "bad.type:1|x",
    "bad.value:abc|c",
    "too.many:1|c|@1|#a:b|x|y|z",
    "tags.dd:1|c|#k:v,k2:v2,novalue,:nokey",
    "tags.influx,k=v,k2=v2:1|c",
    "tags.librato#k=v,k2=v2:1|c",
    "tags.signalfx[k=v,k2=v2]:1|c",
    "tags.mixed,k=v:1|c|#k2:v2",
    "tags.escaped:1|c|#my-key:v,Key.Dot:x",
    "set.dedup:a|s",
    "set.dedup:a|s",
    "set.dedup:b|s",
    "conflict.a:1|c",
    "conflict.a:1|g",
    "labels.conflict:1|c|#a:1",
    "labels.conflict:1|c|#b:2",
]


def test_dogstatsd_over_a_unix_datagram_socket(pair: Pair) -> None:
    for path in (pair.se_sock, pair.pk_sock):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        dd = DogStatsd(socket_path=path, disable_telemetry=True)
        dd.increment("uds.hits", tags=["via:uds"])
        dd.distribution("uds.size", 3)
        dd.gauge("uds.level", 2.5)
        dd.flush()
    # The sentinel goes over UDP, another socket: wait for these lines first.
    wait_until(
        lambda: all(("uds_level", ()) in side for side in pair.scrapes()),
        what="the unixgram lines applied by both",
    )
    got = pair.same()
    assert ("uds_hits_total", (("via", "uds"),)) in got


def test_unmapped_clients_escaping_and_tolerance(pair: Pair) -> None:
    clients(pair)
    pair.raw(*SAMPLED, *ESCAPING, *TOLERANCE)
    got = pair.same()
    assert ("test_web_server_foo_bar_total", ()) in got  # something was compared


MAPPING = r"""
defaults:
  observer_type: histogram
  histogram_options:
    buckets: []                # empty: the default buckets
  summary_options:
    quantiles:
      - quantile: 0.5
        error: 0.05
mappings:
- match: "app.*.requests"
  name: "app_requests_total"
  help: "Requests by code."
  labels:
    code: "$1_x"               # ONE reference, to "1_x": expands to nothing
    route: "${1}_y"            # the way to suffix
    both: "$1-$1"
- match: "app.*.*.calls"
  name: "app_${2}_calls"
  labels:
    first: "$1"
- match: '^svc\.(\w+)\.(?P<op>\w+)\.latency$'
  match_type: regex
  name: "svc_latency_seconds"
  observer_type: summary
  scale: 0.001
  labels:
    svc: "$1"
    op: "${op}"
    odd: "$1x"                 # Go's Expand: the group named "1x", empty
    dollar: "$$1"
- match: 'regex\.(.*)'
  match_type: regex
  name: "regex_first"
- match: "regex.glob"
  name: "glob_wins_over_earlier_regex"
- match: "tagged.*"
  name: "tagged_events_total"
  honor_labels: true
  labels:
    env: "default"
    kind: "$1"
- match: "override.*"
  name: "override_events_total"
  labels:
    env: "mapping"
- match: "typed.*"
  match_metric_type: gauge
  name: "typed_level"
- match: "typed.*"
  match_metric_type: counter
  name: "typed_hits_total"
- match: "typed.*"
  match_metric_type: observer
  name: "typed_seconds"
- match: "drop.*"
  action: drop
  name: "dropped"
- match: "sum.*"
  observer_type: summary
  name: "sum_seconds"
  summary_options:
    quantiles:
      - quantile: 0.9
        error: 0.01
      - quantile: 0.5
        error: 0.05
    max_age: 30s
    age_buckets: 2
    buf_cap: 100
- match: "hist.*"
  name: "hist_seconds"
  histogram_options:
    buckets: [0.1, 1, 2.5]
- match: "scaled.*"
  name: "scaled_bytes"
  scale: 1024
- match: "scaled_counter.*"
  name: "scaled_counter_total"
  scale: 0.5
- match: "empty.*"
  name: "$2"
- match: "*.*.*.deep"
  name: "deep_$3_$2_$1"
"""


@pytest.mark.parametrize("pair", [MAPPING], indirect=True)
def test_every_mapping_key(pair: Pair) -> None:
    clients(pair)
    pair.raw(
        "app.200.requests:1|c",
        "app.200.requests:2|c",
        "app.a.b.calls:1|c",
        "svc.api.get.latency:250|ms",
        "svc.api.put.latency:750|h",
        "regex.glob:1|c",
        "regex.other:1|c",
        "tagged.a:1|c|#env:prod",
        "tagged.b:1|c",
        "override.a:1|c|#env:prod",
        "typed.a:7|g",
        "typed.a:3|c",
        "typed.a:40|ms",
        "drop.me:1|c",
        "drop.me:1|g",
        "sum.op:250|ms",
        "sum.op:50|ms",
        "hist.op:500|ms",
        "hist.op:3|h",
        "plain.timer:20|ms",
        "scaled.x:2|g",
        "scaled_counter.x:4|c",
        "empty.x:1|c",
        "a.b.c.deep:1|c",
        "unmapped-name.x:1|c",
    )
    got = pair.same()
    assert ("typed_hits_total", ()) in got
    # `help:` is served as HELP by both.
    se_help = helps(http(f"http://127.0.0.1:{pair.se_web}/metrics")[2].decode())
    pk_help = helps(pair.pk.get("/metrics")[2].decode())
    assert se_help["app_requests"] == pk_help["app_requests"] == "Requests by code."


TTL_MAPPING = """
defaults:
  ttl: 1s
mappings:
- match: "short.*"
  name: "short_lived"
- match: "zero.*"
  name: "zero_ttl"
  ttl: 0s                      # 0 is "not set": the default's 1s applies
- match: "long.*"
  name: "long_lived"
  ttl: 1h
"""


@pytest.mark.parametrize("pair", [TTL_MAPPING], indirect=True)
def test_ttl(pair: Pair) -> None:
    pair.raw("short.a:1|g", "zero.a:1|g", "long.a:1|g", "unmapped.a:1|g")
    got = pair.same()
    assert ("short_lived", ()) in got and ("zero_ttl", ()) in got
    # statsd_exporter sweeps once a second; wait until it has, then podkit must agree.
    wait_until(
        lambda: ("short_lived", ()) not in pair.scrapes()[1],
        timeout=5,
        interval=0.2,
        what="statsd_exporter expiring short_lived",
    )
    got = wait_until(
        lambda: (g := pair.scrapes()[0]) and ("short_lived", ()) not in g and g,
        timeout=3,
        what="podkit expiring short_lived",
    )
    got = pair.same()
    assert set(got) - {(SENTINEL, ())} == {("long_lived", ())}


ORDERING_MAPPING = """
mappings:
- match: "order.*.x"
  name: "order_star_first"
- match: "order.a.*"
  name: "order_literal_second"
"""


@pytest.mark.parametrize(
    "pair",
    [
        ORDERING_MAPPING,
        "defaults:\n  glob_disable_ordering: true\n" + ORDERING_MAPPING,
        "defaults:\n  match_type: regex\n" + ORDERING_MAPPING.replace('"order.', '"^order\\\\.'),
    ],
    indirect=True,
)
def test_glob_ordering(pair: Pair) -> None:
    pair.raw("order.a.x:1|c", "order.b.x:1|c", "order.a.y:1|c")
    pair.same()


DEPRECATED_MAPPING = """
defaults:
  timer_type: histogram
  buckets: [1, 2]
mappings:
- match: "old.*"
  name: "old_style"
  timer_type: summary
  quantiles:
    - quantile: 0.5
      error: 0.05
"""


@pytest.mark.parametrize("pair", [DEPRECATED_MAPPING], indirect=True)
def test_deprecated_spellings(pair: Pair) -> None:
    pair.raw("old.a:250|ms", "other.a:1500|ms")
    pair.same()
