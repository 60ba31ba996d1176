"""The metrics log source shares logformat's parsing (issues 15 and 16): grok
expressions in `match`, `format:` for any of logformat's formats (their fields
then label, value and condition the rules), and the multiline modes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from podkit.testing import ProgramProcess, wait_until

APACHE = (
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" {status} '
    '{size} "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n'
)


@contextmanager
def following(tmp_path: Path, lines: str, source: str) -> Iterator[ProgramProcess]:
    """The adapter, ready, with one log source following a file that holds
    `lines`; `source` is the rest of the source's keys (YAML, indented 4)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(lines)
    cfg = tmp_path / "adapter.yaml"
    head = f"sources:\n  - type: log\n    path: {logs}/*.log\n    poll_interval: 100ms\n"
    cfg.write_text(head + source.lstrip("\n"))
    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as p:
        p.wait_ready()
        yield p


def test_grok_rules_count_and_observe_apache_lines(tmp_path: Path) -> None:
    patterns = tmp_path / "patterns"
    patterns.write_text("SLOWPATH /slow/\\S+\n")
    lines = (
        APACHE.format(status=200, size=2326)
        + APACHE.format(status=200, size=100)
        + APACHE.format(status=404, size=7)
        + "GET /slow/report took 1500ms\n"
    )
    source = f"""
    grok_patterns_file: {patterns}
    rules:
      - match: '%{{COMBINEDAPACHELOG}}'
        counter: apache_requests_total
        labels: [response]
      - match: '%{{COMBINEDAPACHELOG}}'
        counter: apache_response_bytes_total
        value: bytes
      - match: 'GET %{{SLOWPATH:path}} took %{{NUMBER:ms}}ms'
        histogram: slow_request_seconds
        value: ms
        scale: 0.001
        buckets: [1, 2]
"""
    with following(tmp_path, lines, source) as p:
        wait_until(
            lambda: p.metric("apache_requests_total", missing=0.0) == 3, 15, what="three lines"
        )
        assert p.metric("apache_requests_total", response="200") == 2
        assert p.metric("apache_requests_total", response="404") == 1
        assert p.metric("apache_response_bytes_total") == 2326 + 100 + 7
        wait_until(lambda: p.metric("slow_request_seconds_count", missing=0.0) == 1, 10)
        assert p.metric("slow_request_seconds_sum") == 1.5


def test_a_bad_grok_pattern_is_a_usage_error_naming_the_rule(tmp_path: Path) -> None:
    from podkit.testing import run_program

    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(
        f"sources:\n  - type: log\n    path: {tmp_path}/*.log\n"
        "    rules:\n      - match: '%{NOSUCHPATTERN:x}'\n        counter: x_total\n"
    )
    res = run_program("metrics", ["--config", str(cfg)])
    assert res.returncode == 2
    err = res.stderr.decode()
    assert "rules[0]" in err and "NOSUCHPATTERN" in err, err


def test_when_conditions_on_captures(tmp_path: Path) -> None:
    lines = "".join(
        APACHE.format(status=st, size=sz) for st, sz in ((200, 10), (503, 20), (500, 5))
    ) + APACHE.replace("GET", "POST").format(status=502, size=1)
    source = """
    rules:
      - match: '%{COMBINEDAPACHELOG}'
        when: 'response >= 500'
        counter: server_errors_total
      - match: '%{COMBINEDAPACHELOG}'
        when: ['response >= 500', 'verb =~ ^GET$', 'bytes != "5"']
        counter: get_errors_total
"""
    with following(tmp_path, lines, source) as p:
        wait_until(lambda: p.metric("server_errors_total", missing=0.0) == 3, 15)
        assert p.metric("get_errors_total") == 1  # the 503; not the 500 (5 bytes), not the POST


def test_multiline_python_traces_are_one_record_for_the_rules(tmp_path: Path) -> None:
    lines = (
        "2026-12-04 10:00:00,000 ERROR app: request failed\n"
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in <module>\n'
        "    main()\n"
        "ZeroDivisionError: division by zero\n"
        "2026-12-04 10:00:01,000 INFO app: next request\n"
    )
    source = """
    multiline: python
    rules:
      - match: '(?s)ERROR.*\\n(?P<type>\\w+Error): '
        counter: app_exceptions_total
        labels: [type]
      - match: '^\\d{4}-'
        counter: app_records_total
"""
    with following(tmp_path, lines, source) as p:
        wait_until(lambda: p.metric("app_records_total", missing=0.0) == 2, 15, what="2 records")
        assert p.metric("app_exceptions_total", type="ZeroDivisionError") == 1


NGINX = (
    '192.0.2.{i} - - [04/Dec/2026:10:00:0{i} +0000] "{verb} /api/{i} HTTP/1.1" {st} {size} '
    '"-" "curl/8"\n'
)


def test_format_fields_feed_labels_values_and_conditions(tmp_path: Path) -> None:
    rows = [("GET", 200, 100), ("GET", 404, 10), ("POST", 500, 5), ("GET", 200, 50)]
    lines = (
        "".join(NGINX.format(i=i, verb=v, st=st, size=sz) for i, (v, st, sz) in enumerate(rows))
        + "not an nginx line\n"
    )
    source = """
    format: nginx
    rules:
      - counter: http_requests_total
        labels: [status, method]
      - counter: http_response_bytes_total
        value: body_bytes_sent
      - counter: http_errors_total
        when: 'status >= 400'
      - match: '/api/(?P<id>\\d+)'
        counter: api_calls_total
        labels: [id]
        when: 'method == GET'
"""
    with following(tmp_path, lines, source) as p:
        wait_until(lambda: p.metric("http_requests_total", missing=0.0) == 4, 15, what="4 lines")
        assert p.metric("http_requests_total", status="200", method="GET") == 2
        assert p.metric("http_requests_total", status="500", method="POST") == 1
        assert p.metric("http_response_bytes_total") == 165
        assert p.metric("http_errors_total") == 2
        assert p.metric("api_calls_total") == 3 and p.metric("api_calls_total", id="1") == 1
        assert p.metric("podkit_metrics_log_errors_total", reason="parse_error") == 1


def test_timestamps_from_the_line_are_served_as_sample_timestamps(tmp_path: Path) -> None:
    import time

    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as text

    from tests.peers.prometheus import promtool_check

    now = int(time.time())
    t1, t2 = now - 90, now - 30  # inside the hour Prometheus accepts
    apache = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t2))
    iso = time.strftime("%Y-%m-%dT%H:%M:%S.250Z", time.gmtime(t1))
    lines = (
        APACHE.replace("10/Oct/2000:13:55:36 -0700", apache).format(status=200, size=1)
        # Older than the line before: the series' timestamp does not go back.
        + APACHE.replace("10/Oct/2000:13:55:36 -0700", "10/Oct/2000:13:55:36 -0700").format(
            status=200, size=1
        )
        + f"{iso} queue=7\n"
        + f"{t1}500 took 0.2\n"  # unix_ms
        + "2000-01-01T00:00:00Z queue=3\n"  # too old for Prometheus: served untimed
        + "yesterday queue=9\n"  # not a time: counted, the value still applies
    )
    source = """
    rules:
      - match: '%{COMBINEDAPACHELOG}'
        counter: hits_total
        timestamp: timestamp
        timestamp_format: '%d/%b/%Y:%H:%M:%S %z'
      - match: '^(?P<t>\\S+) queue=(?P<n>\\d+)'
        gauge: queue_depth
        value: n
        labels: [n]
        timestamp: t
      - match: '^(?P<t>\\d+) took (?P<s>[\\d.]+)'
        histogram: took_seconds
        value: s
        buckets: [1]
        timestamp: t
        timestamp_format: unix_ms
"""
    with following(tmp_path, lines, source) as p:
        wait_until(
            lambda: (
                p.metric("podkit_metrics_log_errors", missing=0.0, reason="bad_timestamp")
                or p.metric("podkit_metrics_log_errors_total", missing=0.0, reason="bad_timestamp")
            ),
            15,
            what="every line read",
        )
        body = p.get("/metrics")[2]
        promtool_check(body)
        stamps = {
            (s.name, s.labels.get("n"), s.labels.get("le")): s.timestamp
            for f in text(body.decode())
            for s in f.samples
            if not s.name.startswith(("podkit", "process", "python"))
        }
        ms = {k: (None if v is None else float(v)) for k, v in stamps.items()}
        assert ms[("hits_total", None, None)] == t2  # the newer of the two lines
        assert ms[("queue_depth", "7", None)] == t1 + 0.25
        assert ms[("queue_depth", "3", None)] is None  # year 2000: not served
        assert ms[("queue_depth", "9", None)] is None
        assert ms[("took_seconds_bucket", None, "+Inf")] == t1 + 0.5
        assert ms[("took_seconds_count", None, None)] == t1 + 0.5
        status, _, om_body = p.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert status == 200
        om_stamps = {
            (s.name, s.labels.get("n")): s.timestamp
            for f in om(om_body.decode())
            for s in f.samples
            if s.name in ("hits_total", "queue_depth")
        }
        assert float(om_stamps[("hits_total", None)]) == t2  # type: ignore[arg-type]
        assert float(om_stamps[("queue_depth", "7")]) == t1 + 0.25  # type: ignore[arg-type]
        assert om_stamps[("queue_depth", "3")] is None
