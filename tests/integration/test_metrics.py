"""The metrics adapter as a subprocess against real peers: a Prometheus server that
scrapes it, promtool, an aiohttp JSON server (also serving hostile documents),
StatsD over real UDP and TCP sockets, and log files followed by the core tailer."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ProgramProcess, free_port, run_program, wait_until
from tests.peers.aioapp import ThreadedApp, app_of
from tests.peers.prometheus import promtool_check, wait_scraped

STATS = {
    "version": "2.1",
    "queues": [{"name": "mail", "depth": 3}, {"name": "sms", "depth": 11}],
    "components": {"db": "UP", "cache": "DEGRADED", "search": "DOWN"},
}

# statsd_exporter's README mapping example, as a user would bring it.
STATSD_MAPPING = """
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
- match: "cache.*.ttl"
  name: "cache_entries"
  ttl: 1s
  labels:
    cache: "$1"
- match: test.timing.*.*.*
  observer_type: histogram
  histogram_options:
    buckets: [0.05, 0.1, 0.5]
  name: "my_timer_seconds"
  labels:
    provider: "$2"
    outcome: "$3"
    job: "${1}_server"
"""


class JSONServer:
    """A real aiohttp server in a thread, serving fixture documents per path."""

    def __init__(self, ssl_ctx: Any = None) -> None:
        self.port = free_port()
        self.ssl_ctx = ssl_ctx
        self.auth: list[str | None] = []
        self.docs: dict[str, Any] = {}
        self.hits: dict[str, int] = {}
        self._served: ThreadedApp | None = None

    def url(self, path: str) -> str:
        scheme = "https" if self.ssl_ctx else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        self.auth.append(request.headers.get("Authorization"))
        doc = self.docs.get(path)
        if doc is None:
            return web.Response(status=404)
        if callable(doc):
            return await doc(request)  # type: ignore[no-any-return]
        if isinstance(doc, bytes):
            return web.Response(body=doc, content_type="application/json")
        return web.json_response(doc)

    def __enter__(self) -> JSONServer:
        # Do not wait for a deliberately slow handler at teardown (shutdown_timeout).
        self._served = ThreadedApp(
            app_of(self._handle, "GET"), self.port, ssl_context=self.ssl_ctx, shutdown_timeout=0.2
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._served is not None:
            self._served.close()


@pytest.fixture
def json_server() -> Iterator[JSONServer]:
    with JSONServer() as srv:
        yield srv


def scrape(
    proc: ProgramProcess, openmetrics: bool = False
) -> dict[str, dict[tuple[Any, ...], float]]:
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    status, hdrs, body = proc.get("/metrics", headers=headers)
    assert status == 200, body
    if openmetrics:
        assert hdrs["Content-Type"].startswith("application/openmetrics-text")
    else:
        promtool_check(body)
    out: dict[str, dict[tuple[Any, ...], float]] = {}
    if openmetrics:
        from prometheus_client.openmetrics.parser import (
            text_string_to_metric_families as om_families,
        )

        families = om_families(body.decode())
    else:
        families = text_string_to_metric_families(body.decode())
    for fam in families:
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def send_udp(port: int, *payloads: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in payloads:
            s.sendto(p, ("127.0.0.1", port))


def send_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)


def test_prometheus_scrapes_all_three_sources(
    tmp_path: Path, json_server: JSONServer, prometheus_factory: Any
) -> None:
    json_server.docs["/stats"] = STATS
    (tmp_path / "statsd-mapping.yaml").write_text(STATSD_MAPPING)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text(
        "status=200 dur_ms=12\nstatus=200 dur_ms=40\nstatus=500 dur_ms=700\nnoise\n"
    )
    udp, tcp = free_port(kind=socket.SOCK_DGRAM), free_port()
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(
        f"""
sources:
  - type: json
    name: app
    url: {json_server.url("/stats")}
    headers: {{Accept: application/json}}
    metrics:
      - name: app_queue_depth
        path: $.queues[*].depth
        labels: {{queue: "$.queues[*].name"}}
        help: Messages waiting per queue.
      - name: app_component_up
        path: $.components
        each: key
        labels: {{component: "{{key}}", version: "{{$.version}}"}}
        value_map: {{UP: 1, DEGRADED: 0.5, DOWN: 0}}
  - type: statsd
    udp: 127.0.0.1:{udp}
    tcp: 127.0.0.1:{tcp}
    mapping_file: statsd-mapping.yaml
  - type: log
    path: {logs}/*.log
    state_dir: {tmp_path / "state"}
    poll_interval: 200ms
    rules:
      - match: 'status=(?P<status>\\d{{3}}) dur_ms=(?P<dur_ms>\\d+)'
        counter: app_requests_total
        labels: [status]
      - match: 'dur_ms=(?P<dur_ms>\\d+)'
        histogram: app_request_duration_seconds
        value: dur_ms
        scale: 0.001
        buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1]
"""
    )
    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as proc:
        proc.wait_ready()
        send_udp(
            udp,
            b"test.dispatcher.FooProcessor.send.success:1|c\n"
            b"test.dispatcher.FooProcessor.send.success:2|c|@0.5\n"
            b"test.timing.web.aws.ok:75|ms\ntest.timing.web.aws.ok:300|ms",
        )
        send_tcp(tcp, b"foo_product.signup.facebook.failure:1|c\ntest.web-server.foo.bar:7|g\n")
        with (logs / "app.log").open("a") as f:
            f.write("status=404 dur_ms=3\n")
        prom = prometheus_factory([f"127.0.0.1:{proc.admin_port}"])
        wait_scraped(prom)
        # Prometheus keeps its own `job` target label and renames the mapped one.
        checks = {
            'app_queue_depth{queue="sms"}': 11.0,
            'app_component_up{component="cache",version="2.1"}': 0.5,
            'dispatcher_events_total{processor="FooProcessor",action="send",outcome="success",'
            'exported_job="test_dispatcher"}': 5.0,
            'signup_events_total{provider="facebook",exported_job="foo_product_server"}': 1.0,
            "test_web_server_foo_bar": 7.0,
            'my_timer_seconds_bucket{le="0.1",exported_job="web_server"}': 1.0,
            'my_timer_seconds_count{exported_job="web_server"}': 2.0,
            'app_requests_total{status="200"}': 2.0,
            'app_requests_total{status="404"}': 1.0,
            'app_request_duration_seconds_bucket{le="0.05"}': 3.0,
            "app_request_duration_seconds_count": 4.0,
            "sum(podkit_metrics_source_up)": 3.0,
        }
        for expr, want in checks.items():
            prom.wait_value(expr, lambda v, w=want: v == w)  # type: ignore[misc]
        # Prometheus asks for OpenMetrics; plain text must pass promtool too.
        scrape(proc)
        om = scrape(proc, openmetrics=True)
        assert om["app_queue_depth"][(("queue", "mail"),)] == 3.0
        status = json.loads(proc.get("/")[2])
        assert {s["type"] for s in status["sources"]} == {"json", "statsd", "log"}


def test_json_hostile_documents_never_fail_the_scrape(
    tmp_path: Path, json_server: JSONServer
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(8)
        return web.json_response(STATS)

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    json_server.docs.update(
        {
            "/good": STATS,
            "/deep": b"[" * 200000 + b"]" * 200000,
            "/huge": {"items": list(range(120000))},  # ~0.8 MB, under max_body
            "/notjson": b"<html>definitely not json</html>",
            "/big": b'{"pad": "' + b"x" * 3_000_000 + b'"}',
            "/slow": slow,
            "/broken": broken,
        }
    )

    def src(name: str, path: str, metric: str = "$.queues[*].depth", **extra: Any) -> str:
        return json.dumps(
            {
                "type": "json",
                "name": name,
                "url": json_server.url(path),
                # Generous except for the slow one: the machine may be loaded.
                "timeout": "500ms" if name == "slow" else "10s",
                "max_body": "1MiB",
                "metrics": [{"name": f"doc_{name}", "path": metric, **extra}],
            }
        )

    cfg = tmp_path / "adapter.yaml"
    sources = [
        src("good", "/good", labels={"queue": "$.queues[*].name"}),
        src("deep", "/deep", metric="$..x"),
        src("huge", "/huge", metric="$.items[*]", labels={"i": "{key}"}),
        src("notjson", "/notjson"),
        src("big", "/big"),
        src("slow", "/slow"),
        src("broken", "/broken"),
        src("missing", "/good", metric="$.queues[*].nope"),
    ]
    cfg.write_text("sources:\n" + "".join(f"  - {s}\n" for s in sources))
    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as proc:
        proc.wait_ready()
        start = time.monotonic()
        got = scrape(proc)
        # The slow handler answers after 8 s; the scrape must not wait for it.
        assert time.monotonic() - start < 7, "a slow source held the scrape past its timeout"
        up = {k[0][1]: v for k, v in got["podkit_metrics_source_up"].items()}
        assert up == {
            "good": 1.0,
            "deep": 0.0,
            "huge": 1.0,
            "notjson": 0.0,
            "big": 0.0,
            "slow": 0.0,
            "broken": 0.0,
            "missing": 1.0,
        }
        errors = {
            (dict(k)["source"], dict(k)["reason"]): v
            for k, v in got["podkit_metrics_json_errors_total"].items()
            if v
        }
        assert errors == {
            ("deep", "invalid_json"): 1.0,
            ("huge", "too_many_series"): 1.0,
            ("notjson", "invalid_json"): 1.0,
            ("big", "too_large"): 1.0,
            ("slow", "timeout"): 1.0,
            ("broken", "http_status"): 1.0,
            ("missing", "missing"): 2.0,
        }
        assert got["doc_good"] == {(("queue", "mail"),): 3.0, (("queue", "sms"),): 11.0}
        assert len(got["doc_huge"]) == 10000
        # `/` names the newest failure with its source and reason, not only a code.
        err = json.loads(proc.get("/")[2])["error"]
        assert err["reason"] == "json" and err["message"].split(":")[0] in up
        assert err["message"].split(": ")[1] in {r for _, r in errors}
        # The endpoint recovers: the next scrape fetches again and serves it.
        json_server.docs["/broken"] = STATS
        got = scrape(proc)
        assert got["doc_broken"] == {(): 3.0} or len(got["doc_broken"]) == 2
        assert proc.proc is not None and proc.proc.poll() is None


def test_statsd_conflicts_malformed_ttl_and_graceful_stop(tmp_path: Path) -> None:
    udp, tcp = free_port(kind=socket.SOCK_DGRAM), free_port()
    mapping = tmp_path / "m.yaml"
    mapping.write_text(STATSD_MAPPING)
    args = [
        "--statsd-udp",
        f"127.0.0.1:{udp}",
        "--statsd-tcp",
        f"127.0.0.1:{tcp}",
        "--statsd-mapping",
        str(mapping),
    ]
    with ProgramProcess("metrics", args, tmp=tmp_path) as proc:
        proc.wait_ready()
        send_udp(
            udp,
            b"shared:1|c\nshared:5|g\n",  # one name, two types
            b"tagged:1|c|#a:1\ntagged:1|c|#b:2\n",  # one name, two label sets: both served
            b"garbage\nx:1|zz\ny:notanumber|c\nok:1|c\n",
            b"cache.users.ttl:42|g\n",
            b"users:alice|s\nusers:bob|s\nusers:alice|s\n",
        )
        # A TCP line split across two writes, then one too long to keep.
        with socket.create_connection(("127.0.0.1", tcp)) as s:
            s.sendall(b"split.me:")
            # The second half only once the server holds the connection (and so
            # has read the first half): two reads, not one.
            wait_until(
                lambda: proc.metric("podkit_metrics_statsd_tcp_connections", missing=0.0) >= 1,
                10,
                0.02,
                what="the TCP connection open at the server",
            )
            s.sendall(b"2|c\n" + b"z" * 70000 + b"\nafter.long:1|c\n")

        def seen() -> dict[str, dict[tuple[Any, ...], float]] | None:
            got = scrape(proc)
            return got if "after_long_total" in got and "cache_entries" in got else None

        got = wait_until(seen, 10, 0.1, what="statsd lines applied")
        assert got["shared_total"] == {(): 1.0}
        assert "shared" not in got
        assert got["tagged_total"] == {(("a", "1"),): 1.0, (("b", "2"),): 1.0}
        assert got["ok_total"][()] == 1.0
        assert got["split_me_total"][()] == 2.0
        assert got["users"][()] == 2.0
        conflicts = {dict(k)["reason"]: v for k, v in got["podkit_metrics_conflicts_total"].items()}
        assert conflicts["type"] == 1 and conflicts["labels"] == 0
        errs = {dict(k)["reason"]: v for k, v in got["podkit_metrics_statsd_errors_total"].items()}
        assert errs["malformed"] == 1 and errs["bad_type"] == 1 and errs["bad_value"] == 1
        assert errs["line_too_long"] == 1
        # The conflict is logged once, however often it recurs.
        send_udp(udp, b"shared:5|g\n" * 5)
        wait_until(
            lambda: scrape(proc)["podkit_metrics_conflicts_total"][(("reason", "type"),)] == 6,
            10,
            what="conflicts counted",
        )
        logged = [r for r in proc.records() if r["message"].startswith("metric conflict")]
        assert len(logged) == 1, logged
        # ttl: 1s in the mapping; the series goes away, the others stay.
        wait_until(lambda: "cache_entries" not in scrape(proc), 10, 0.2, what="ttl expiry")
        assert "ok_total" in scrape(proc)
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.records()[-1]["message"] == "stopped"


def test_colliding_names_and_reserved_labels_keep_both_formats_valid(tmp_path: Path) -> None:
    """Names that only collide in OpenMetrics (a family named like another's
    sample, or like one of the adapter's own families) and `le`/`quantile`
    labels are conflicts; both expositions stay parseable and lint-clean."""
    udp = free_port(kind=socket.SOCK_DGRAM)
    mapping = tmp_path / "m.yaml"
    mapping.write_text("defaults:\n  observer_type: histogram\nmappings: []\n")
    args = ["--statsd-udp", f"127.0.0.1:{udp}", "--statsd-mapping", str(mapping)]
    with ProgramProcess("metrics", args, tmp=tmp_path) as proc:
        proc.wait_ready()
        send_udp(
            udp,
            b"process_cpu_seconds:1|g\n",  # the registry's counter family
            b"process_open_fds:1|ms\n",  # the registry's gauge, as a histogram
            b"lat:1|h\nlat_bucket:2|c\n",  # a counter family named like a sample
            b"cnt_bucket:2|c\ncnt:1|h\n",  # the same, the other way round
            b"g.le:1|g|#le:3\nc.q:1|c|#quantile:0.5\n",
            b"fine:1|c|#k:v\n",
        )
        got = wait_until(lambda: (g := scrape(proc)) and "fine_total" in g and g, 10, 0.1)
        om = scrape(proc, openmetrics=True)  # the strict OpenMetrics parser
        assert got["process_cpu_seconds_total"] and "process_cpu_seconds" not in got
        assert "process_open_fds_count" not in got
        assert got["lat_count"][()] == 1 and "lat_bucket_total" not in got
        assert got["cnt_bucket_total"][()] == 2 and "cnt_count" not in got
        assert "g_le" not in got and "c_q_total" not in got
        conflicts = {dict(k)["reason"]: v for k, v in om["podkit_metrics_conflicts_total"].items()}
        assert conflicts["name"] == 4 and conflicts["labels"] == 2, conflicts


def test_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    res = run_program("metrics", ["--statsd-udp", "nonsense"])
    assert res.returncode == 2
    assert res.stderr.decode().count("\n") == 1 and "--statsd-udp" in res.stderr.decode()
    bad = tmp_path / "m.yaml"
    bad.write_text("mappings:\n- match: a.*\n")
    res = run_program("metrics", ["--statsd-udp", ":0", "--statsd-mapping", str(bad)])
    assert res.returncode == 2
    assert "didn't set a metric name" in res.stderr.decode()
    assert res.stderr.decode().count("\n") == 1


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_program("metrics", ["--statsd-tcp", f"127.0.0.1:{port}", "--admin-addr", "off"])
    assert res.returncode == 1
    assert "cannot start source" in res.stderr.decode()


def test_log_source_follows_rotation(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("".join(f"status=200 dur_ms={i}\n" for i in range(1000)))
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        f"""
sources:
  - type: log
    path: {logs}/app.log
    poll_interval: 100ms
    rules:
      - match: 'status=(?P<status>\\d+)'
        counter: app_requests_total
        labels: [status]
"""
    )
    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as proc:
        proc.wait_ready()

        def count() -> float:
            return scrape(proc).get("app_requests_total", {}).get((("status", "200"),), 0.0)

        wait_until(lambda: count() == 1000, 15, 0.1, what="1000 lines counted")
        log.rename(logs / "app.log.1")
        with (logs / "app.log.1").open("a") as f:
            f.write("status=200 dur_ms=1\n")  # late write to the rotated file
        log.write_text("status=200 dur_ms=2\nstatus=503 dur_ms=3\n")
        wait_until(lambda: count() == 1002, 15, 0.1, what="rotated and new file counted")
        assert scrape(proc)["app_requests_total"][(("status", "503"),)] == 1.0


def test_json_tls_bearer_token_and_interval(tmp_path: Path, tls_files: Any) -> None:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    token = tmp_path / "token"
    token.write_text("s3cret-token-1\n")
    with JSONServer(ctx) as srv:
        srv.docs["/stats"] = STATS
        base = {
            "type": "json",
            "url": srv.url("/stats"),
            "metrics": [{"name": "depth", "path": "$.queues[0].depth"}],
        }
        cfg = tmp_path / "a.yaml"
        cfg.write_text(
            json.dumps(
                {
                    "sources": [
                        {
                            **base,
                            "name": "verified",
                            "ca_file": str(tls_files.ca),
                            "bearer_token_file": str(token),
                            "interval": "200ms",
                            "metrics": [{"name": "depth_a", "path": "$.queues[0].depth"}],
                        },
                        {
                            **base,
                            "name": "untrusted",
                            "metrics": [{"name": "depth_b", "path": "$.queues[0].depth"}],
                        },
                        {
                            **base,
                            "name": "insecure",
                            "insecure": True,
                            "metrics": [{"name": "depth_c", "path": "$.queues[0].depth"}],
                        },
                    ]
                }
            )
        )
        with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as proc:
            proc.wait_ready()

            # "verified" fetches on its own interval, in the background: a
            # scrape right after ready may come before its first fetch ends.
            scrapes = 0

            def verified_up() -> dict[str, Any] | None:
                nonlocal scrapes
                scrapes += 1
                got = scrape(proc)
                up = got["podkit_metrics_source_up"]
                return got if up[(("source", "verified"),)] == 1.0 else None

            got = wait_until(verified_up, 10, what="the verified source's first fetch")
            up = {dict(k)["source"]: v for k, v in got["podkit_metrics_source_up"].items()}
            assert up == {"verified": 1.0, "untrusted": 0.0, "insecure": 1.0}
            assert got["depth_a"][()] == 3.0 and got["depth_c"][()] == 3.0
            errs = got["podkit_metrics_json_errors_total"]
            # The on-scrape sources fetch once per scrape: one refusal each.
            assert errs[(("reason", "fetch"), ("source", "untrusted"))] == scrapes
            # interval: fetched in the background, without scrapes.
            before = srv.hits["/stats"]
            wait_until(lambda: srv.hits["/stats"] - before >= 3, 10, what="background fetches")
            assert "Bearer s3cret-token-1" in srv.auth
            # The token file is re-read when it changes (Kubernetes rotates secrets).
            token.write_text("s3cret-token-2\n")
            wait_until(lambda: srv.auth[-5:].count("Bearer s3cret-token-2") >= 1, 10)
            assert "s3cret-token" not in proc.stderr()


def test_log_checkpoints_survive_a_restart(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("status=200\nstatus=200\nstatus=500\n")
    cfg = tmp_path / "a.yaml"
    cfg.write_text(
        f"""
sources:
  - type: log
    path: {logs}/*.log
    state_dir: {tmp_path / "state"}
    poll_interval: 100ms
    rules:
      - match: 'status=(?P<status>\\d+)'
        counter: app_requests_total
        labels: [status]
"""
    )

    def total(proc: ProgramProcess) -> float:
        return sum(scrape(proc).get("app_requests_total", {}).values())

    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as proc:
        proc.wait_ready()
        wait_until(lambda: total(proc) == 3, 15, 0.1, what="3 lines counted")
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    with log.open("a") as f:
        f.write("status=201\nstatus=201\n")
    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as proc:
        proc.wait_ready()
        wait_until(lambda: total(proc) == 2, 15, 0.1, what="only the 2 new lines counted")
        # A sentinel after them: once it is counted, every line before it in the
        # file has been read, so an old line read again would be counted too.
        with log.open("a") as f:
            f.write("status=299\n")
        wait_until(lambda: total(proc) >= 3, 15, 0.1, what="the sentinel line counted")
        assert scrape(proc)["app_requests_total"] == {
            (("status", "201"),): 2.0,
            (("status", "299"),): 1.0,
        }


def test_simple_json_flags(tmp_path: Path, json_server: JSONServer) -> None:
    json_server.docs["/stats"] = STATS
    mapping = tmp_path / "json.yaml"
    mapping.write_text(
        "- name: app_component_up\n"
        "  path: $.components\n"
        "  each: key\n"
        '  labels: {component: "{key}"}\n'
        "  value_map: {UP: 1, DEGRADED: 0.5, DOWN: 0}\n"
    )
    args = ["--json-url", json_server.url("/stats"), "--json-mapping", str(mapping)]
    with ProgramProcess("metrics", args, tmp=tmp_path) as proc:
        proc.wait_ready()
        assert scrape(proc)["app_component_up"] == {
            (("component", "db"),): 1.0,
            (("component", "cache"),): 0.5,
            (("component", "search"),): 0.0,
        }
        # Fetched on each scrape.
        json_server.docs["/stats"] = {**STATS, "components": {"db": "DOWN"}}
        assert scrape(proc)["app_component_up"] == {(("component", "db"),): 0.0}
