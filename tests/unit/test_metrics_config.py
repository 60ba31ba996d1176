"""Configuration of the metrics adapter: flags, the config file, and its errors."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest
from podkit.adapters.metrics import MetricsAdapter
from podkit.adapters.metrics.json_source import JSONSource
from podkit.adapters.metrics.log_source import LogSource
from podkit.adapters.metrics.sources import build
from podkit.adapters.metrics.store import Store

from podkit import UsageError
from podkit.multiline import MultilineOptions
from podkit.runner import configure
from podkit.tailer.config import TailingOptions

LOG = logging.getLogger("test")


def conf(tmp_path: Path, text: str, *args: str) -> MetricsAdapter:
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(text)
    prog = configure(MetricsAdapter, ["--config", str(cfg), *args], env={})
    assert isinstance(prog, MetricsAdapter)
    return prog


def test_issue_example_config_loads(tmp_path: Path) -> None:
    (tmp_path / "statsd-mapping.yaml").write_text("mappings:\n- match: a.*\n  name: a\n")
    prog = conf(
        tmp_path,
        r"""
sources:
  - type: json
    url: http://127.0.0.1:8080/stats
    headers: {Accept: application/json}
    metrics:
      - name: app_queue_depth
        path: $.queues[*].depth
        labels: {queue: "$.queues[*].name"}   # quoted: [ ] is not plain YAML in { }
        type: gauge
        help: Messages waiting per queue.
      - name: app_component_up
        path: $.components
        each: key
        labels: {component: "{key}"}
        value_map: {UP: 1, DEGRADED: 0.5, DOWN: 0}
  - type: statsd
    udp: 0.0.0.0:9125
    tcp: 0.0.0.0:9125
    mapping_file: statsd-mapping.yaml
  - type: log
    path: /var/log/app/*.log
    rules:
      - match: 'status=(?P<status>\d{3}) dur_ms=(?P<dur_ms>\d+)'
        counter: app_requests_total
        labels: [status]
      - match: 'dur_ms=(?P<dur_ms>\d+)'
        histogram: app_request_duration_seconds
        value: dur_ms
        scale: 0.001
        buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1]
""",
    )
    assert [s.type for s in prog._sources] == ["json", "statsd", "log"]
    assert prog.admin_addr == "127.0.0.1:9414"


@pytest.mark.parametrize(
    ("text", "args", "msg"),
    [
        ("sources: {}\n", [], "sources: expected a list"),
        ("sources:\n- type: nope\n", [], r"sources\[0\]\.type: unknown source type 'nope'"),
        ("sources:\n- type: statsd\n", [], "give udp, tcp or unixgram"),
        ("sources:\n- type: statsd\n  udp: x\n", [], r"\.udp: expected HOST:PORT"),
        ("sources:\n- {type: statsd, udp: ':1', mapping_file: /nonexistent}\n", [], "cannot read"),
        (
            "sources:\n- {type: log, path: /x, rules: [{match: 'a', gauge: g}]}\n",
            [],
            "needs the named group",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: '(?P<a>x)', counter: c, labels: [b]}]}\n",
            [],
            "'b' is not a named group",
        ),
        (
            "sources:\n- {type: json, url: 'ftp://x', metrics: [{name: a, path: $.a}]}\n",
            [],
            "expected an http",
        ),
        ("bogus: 1\n", [], "unknown setting 'bogus'"),
        (
            "sources:\n- {type: json, url: 'http://x/', metrics: [{name: 'a-b', path: $.a}]}\n",
            [],
            r"metrics\[0\]\.name: 'a-b' is not a valid metric name",
        ),
        (
            "sources:\n- {type: json, url: 'http://x/', metrics: "
            "[{name: a, path: $.a, labels: {__x: y}}]}\n",
            [],
            "'__x' is not a valid label name",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: '(?P<le>x)(?P<v>1)', histogram: h, value: v, labels: [le]}]}\n",
            [],
            "'le' cannot be a label name here",
        ),
        (
            "sources:\n- {type: json, url: 'http://x/', metrics: "
            "[{name: a, path: $.a, labels: {le: '1'}}]}\n",
            [],
            "'le' is reserved for histograms and summaries",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: '(?P<quantile>x)', counter: c, labels: [quantile]}]}\n",
            [],
            "'quantile' cannot be a label name here",
        ),
        # Wrong YAML types where a duration or buckets belong: once tracebacks.
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: '(?P<v>1)', histogram: h, value: v, buckets: [a, 1]}]}\n",
            [],
            r"rules\[0\]\.buckets: expected a list of numbers, got 'a'",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: '(?P<v>1)', histogram: h, value: v, buckets: [.nan]}]}\n",
            [],
            "NaN is not a bucket bound",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: [{match: 'a', counter: c, ttl: [1]}]}\n",
            [],
            r"ttl: not a duration: \[1\]",
        ),
        (
            "sources:\n- {type: statsd, udp: ':1', mappings: [{match: a.*, name: x, ttl: {}}]}\n",
            [],
            r"mappings\[0\]\.ttl: not a duration",
        ),
        (
            "sources:\n- {type: statsd, udp: ':1', defaults: {ttl: [5s]}, mappings: []}\n",
            [],
            r"defaults\.ttl: not a duration",
        ),
        (
            "sources:\n- {type: statsd, udp: ':1', mappings: [{match: a.*, name: x, "
            "observer_type: histogram, buckets: [1, .nan]}]}\n",
            [],
            "NaN is not a bucket bound",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: [{match: 'a', counter: c, timestamp: t}]}\n",
            [],
            r"rules\[0\]\.timestamp: 't' is not a named group",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: 'a', counter: c, timestamp_format: unix}]}\n",
            [],
            r"timestamp_format: needs timestamp",
        ),
        (
            "sources:\n- {type: log, path: /x, rules: "
            "[{match: '(?P<t>a)', counter: c, timestamp: t, timestamp_format: 'YYYY'}]}\n",
            [],
            r"timestamp_format: 'YYYY': expected strptime",
        ),
        *(
            ("sources:\n- {type: statsd, udp: ':1'}\n", [flag, "0"], f"{flag}: 0 is below")
            for flag in (
                "--max-series",
                "--max-series-bytes",
                "--max-name-length",
                "--max-label-value-length",
            )
        ),
        ("{}\n", [], "no sources"),
        ("{}\n", ["--json-url", "http://x/"], "--json-url: needs --json-mapping"),
        ("{}\n", ["--statsd-mapping", "m.yaml"], "--statsd-mapping: needs --statsd-udp"),
        (
            "sources:\n- {type: statsd, udp: ':1'}\n- {type: statsd, udp: ':1'}\n",
            [],
            "two sources are named",
        ),
    ],
)
def test_config_errors_are_one_line_usage_errors(
    tmp_path: Path, text: str, args: list[str], msg: str
) -> None:
    with pytest.raises(UsageError, match=msg):
        conf(tmp_path, text, *args)


def test_simple_flags_build_sources(tmp_path: Path) -> None:
    m = tmp_path / "json.yaml"
    m.write_text("interval: 2s\nmetrics:\n- {name: a, path: $.a}\n")
    prog = configure(
        MetricsAdapter,
        ["--json-url", "http://127.0.0.1:1/", "--json-mapping", str(m), "--statsd-udp", ":9125"],
        env={},
    )
    assert isinstance(prog, MetricsAdapter)
    json_src, statsd_src = prog._sources
    assert json_src.interval == 2.0  # type: ignore[attr-defined]
    assert statsd_src.udp_addr == ":9125"  # type: ignore[attr-defined]


def test_log_rules_count_label_and_observe() -> None:
    store = Store(LOG)
    src = build(
        {
            "type": "log",
            "path": "/x/*.log",
            "rules": [
                {
                    "match": r"status=(?P<status>\d{3}) dur_ms=(?P<dur_ms>\d+)",
                    "counter": "app_requests_total",
                    "labels": ["status"],
                },
                {
                    "match": r"dur_ms=(?P<dur_ms>\S+)",
                    "histogram": "app_request_duration_seconds",
                    "value": "dur_ms",
                    "scale": 0.001,
                    "buckets": [0.01, 0.1, 1],
                },
                {"match": r"queue=(?P<q>\d+)", "gauge": "app_queue", "value": "q"},
            ],
        },
        "t",
        store,
        LOG,
        None,
    )
    assert isinstance(src, LogSource)
    src.process(
        [
            "status=200 dur_ms=5",
            "status=200 dur_ms=50",
            "status=500 dur_ms=500",
            "dur_ms=abc",
            "queue=4",
            "queue=2",
            "nothing here",
        ]
    )
    fams = store.families
    assert {k: s.value for k, s in fams["app_requests"].series.items()} == {
        ("200",): 2.0,
        ("500",): 1.0,
    }
    h = fams["app_request_duration_seconds"].series[()]
    assert h.count == 3 and h.counts == [1, 1, 1, 0]
    assert fams["app_queue"].series[()].value == 2.0
    assert src.errors["bad_value"] == 1
    assert src.lines == 7


# -- settings declared once: the core option groups read a source's keys ------------


def test_a_log_source_takes_the_tailers_keys_with_the_tailers_defaults(tmp_path: Path) -> None:
    prog = conf(
        tmp_path,
        "sources:\n- type: log\n  path: logs/*.log\n  state_dir: cp\n  max_line_bytes: 1KiB\n"
        "  buffer_max_bytes: 64KiB\n  poll_interval: 250ms\n  multiline_start: '^\\S'\n"
        "  multiline_max_lines: 3\n  rules: [{match: a, counter: c}]\n"
        "- type: log\n  path: /x\n  rules: [{match: a, counter: c}]\n",
    )
    custom, plain = (s.tailing.config(s.joining) for s in prog._sources)  # type: ignore[attr-defined]
    assert custom.paths == [str(tmp_path / "logs/*.log")]
    assert custom.state_dir == str(tmp_path / "cp")  # relative to the config file
    assert (custom.max_line_bytes, custom.max_buffer_bytes) == (1024, 65536)
    assert custom.poll_interval == 0.25
    assert (custom.multiline_start, custom.multiline_max_lines) == (r"^\S", 3)
    # Nothing given: the tailer's own defaults, except no checkpoints.
    defaults = TailingOptions.from_mapping({}).config(MultilineOptions.from_mapping({}))
    assert plain.state_dir is None
    assert plain == dataclasses.replace(defaults, paths=["/x"], state_dir=None)


def test_a_json_source_takes_the_core_tls_and_auth_keys(tmp_path: Path) -> None:
    prog = conf(
        tmp_path,
        "sources:\n- type: json\n  url: https://127.0.0.1:1/\n  ca_file: ca.pem\n"
        "  basic_auth_user: u\n  basic_auth_password_file: pw\n  metrics: [{name: a, path: $.a}]\n",
    )
    src = prog._sources[0]
    assert src.tls.ca_file == str(tmp_path / "ca.pem")  # type: ignore[attr-defined]
    (tmp_path / "pw").write_text("secret\n")
    assert src.auth.headers() == {"Authorization": "Basic dTpzZWNyZXQ="}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        (
            "sources:\n- type: log\n  path: /x\n  read_from: middle\n  rules: []\n",
            r":4: sources\[0\]\.read_from: 'middle' is not one of head, tail$",
        ),
        (
            "sources:\n- type: log\n  path: /x\n  rules: [{match: a, counter: c}]\n"
            "  poll_interval: 1ms\n",
            r":5: sources\[0\]\.poll_interval: 0\.001 is below the minimum 0\.01$",
        ),
        (
            "sources:\n- type: log\n  path: /x\n  max_line_bytes: 1MiB\n  buffer_max_bytes: 1KiB\n",
            r":5: sources\[0\]\.buffer_max_bytes: must be at least sources\[0\]\.max_line_bytes$",
        ),
        (
            "sources:\n- type: log\n  path: /x\n  multiline: java\n  multiline_start: x\n",
            r":4: sources\[0\]\.multiline: give multiline or multiline_start, not both$",
        ),
        (
            "sources:\n- type: json\n  url: http://x/\n  key_file: k.pem\n",
            r":4: sources\[0\]\.key_file: needs sources\[0\]\.cert_file$",
        ),
        (
            "sources:\n- type: json\n  url: http://x/\n  basic_auth_user: u\n",
            r":4: sources\[0\]\.basic_auth_user and sources\[0\]\.basic_auth_password_file: ",
        ),
        (
            "sources:\n- type: statsd\n  udp: ':1'\n  unixgram_mode: '999'\n",
            r":4: sources\[0\]\.unixgram_mode: expected an octal mode like 755, got '999'$",
        ),
        (
            "sources:\n- type: statsd\n  mapping_file: m.yml\n",
            r":3: sources\[0\]\.mapping_file: needs sources\[0\]\.udp, sources\[0\]\.tcp or ",
        ),
    ],
)
def test_source_errors_name_file_line_and_key(tmp_path: Path, text: str, msg: str) -> None:
    with pytest.raises(UsageError, match=msg) as err:
        conf(tmp_path, text)
    assert str(err.value).startswith(f"--config {tmp_path / 'adapter.yaml'}:")


def test_flags_and_keys_of_the_statsd_listener_are_one_declaration(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--statsd-udp: expected HOST:PORT, got '9125' \(did"):
        configure(MetricsAdapter, ["--statsd-udp", "9125"], env={})
    with pytest.raises(UsageError, match=r"^--statsd-unixsocket-mode: expected an octal mode"):
        configure(MetricsAdapter, ["--statsd-udp", ":1", "--statsd-unixsocket-mode", "8"], env={})
    prog = configure(
        MetricsAdapter,
        ["--statsd-tcp", "127.0.0.1:0"],
        env={"PODKIT_STATSD_LISTEN_UNIXGRAM": "s.sock", "PODKIT_STATSD_UNIXSOCKET_MODE": "700"},
    )
    assert isinstance(prog, MetricsAdapter)
    src = prog._sources[0]
    assert src.unixgram == os.path.abspath("s.sock")  # type: ignore[attr-defined]
    assert src.unixgram_mode == 0o700  # type: ignore[attr-defined]
    assert prog.store.max_series == Store(LOG).max_series  # the store's default, once


async def test_a_credential_file_that_cannot_be_read_fails_that_fetch_only(tmp_path: Path) -> None:
    store = Store(LOG)
    src = build(
        {
            "type": "json",
            "url": "http://127.0.0.1:9/",
            "bearer_token_file": "token",  # relative: in the config file's directory
            "metrics": [{"name": "a", "path": "$.a"}],
        },
        "sources[0]",
        store,
        LOG,
        str(tmp_path),
    )
    assert isinstance(src, JSONSource)
    failures: list[str] = []
    src.on_error = lambda reason, message: failures.append(message)
    await src.start()
    try:
        await src.fetch()  # the token file is missing: counted, not raised
        assert src.errors["fetch"] == 1 and src.up == 0.0
        assert f"{tmp_path / 'token'}" in failures[0]
    finally:
        await src.stop()
