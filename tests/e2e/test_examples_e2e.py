"""Each example of examples/ as a real pod (podman kube play), its pattern checked from outside.

See tests/e2e/harness.py for what the harness changes in a manifest to run it
under podman 4.3 instead of a kubelet, and tests/e2e/peers.py for the peers.
"""

from __future__ import annotations

import datetime
import time
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import E2E
from tests.e2e.harness import PEER_HOST, http_get, podman, wait_for
from tests.e2e.peers import GitDaemon, Recorder, prepare_postgres, start_prepared
from tests.helpers import need
from tests.peers.git import GitRepos

LOKI = "loki+http://loki.monitoring.svc.cluster.local:3100"


def test_waitfor_holds_the_app_until_the_database_answers(e2e: E2E) -> None:
    e2e.require("waitfor")
    need("initdb")
    pg = prepare_postgres(e2e.gateway, e2e.subnet)
    pod = None
    try:
        pod = e2e.play(
            "waitfor/pod.yaml",
            {"postgres://app@postgres:5432/app": f"postgres://app@{PEER_HOST}:{pg.port}/app"},
        )
        wait_for(lambda: pod.running("wait-for-db"), 30, "waitfor to run")
        time.sleep(3)  # the database is down: the app must not start meanwhile
        assert pod.running("wait-for-db"), pod.logs("wait-for-db")
        assert not pod.running("app")
        assert "app started" not in pod.logs("app")

        db_up = time.time()
        start_prepared(pg)
        assert pod.wait_exited("wait-for-db", 60) == 0, pod.logs("wait-for-db")
        line = wait_for(
            lambda: next((s for s in pod.logs("app").splitlines() if "app started" in s), None),
            60,
            "the app to start",
        )
        pod.played()
        started = datetime.datetime.fromisoformat(line.split()[-1]).timestamp()
        assert started >= db_up, f"app started {db_up - started:.2f}s before the database"
        ready = [r for r in pod.records("wait-for-db") if "ready" in r.get("message", "")]
        assert ready, pod.final_logs["wait-for-db"]
    finally:
        if pod is not None:
            pod.down()
        pg.stop()


def test_gitsync_publishes_and_reloader_reloads_the_app(e2e: E2E, tmp_path: Path) -> None:
    e2e.require("gitsync", "reloader")
    (tmp_path / "srv").mkdir()
    repos = GitRepos(tmp_path / "srv")
    upstream = repos.create("app-config", {"app.conf": "colour = blue\n"})
    daemon = GitDaemon(repos.base, e2e.gateway).start()
    pod = None
    try:
        pod = e2e.play(
            "gitsync-reloader/pod.yaml",
            {
                "https://github.com/example/app-config.git": (
                    f"git://{PEER_HOST}:{daemon.port}/app-config.git"
                )
            },
        )
        assert pod.wait_exited("gitsync-init", 90) == 0, pod.logs("gitsync-init")
        pod.played()
        app = pod.url(8080, "/")
        # The tree gitsync --one-time fetched is what the app read at start.
        state = wait_for(lambda: http_get(app)[1], 60, "the app to serve its config")
        assert '"colour = blue\\n"' in state, state
        pod.wait_ready(9412)
        pod.wait_ready(9413)

        sha = upstream.commit_push({"app.conf": "colour = green\n"})
        # period 10s + debounce 1s; generous on a loaded machine
        state = wait_for(
            lambda: (s := http_get(app)[1]) and "green" in s and s, 90, "the new commit in the app"
        )
        assert '"reloads": 1' in state or '"reloads": 2' in state, state
        status = http_get(pod.url(9412, "/"))[1]
        assert sha in status, status

        podman("stop", "--time", "10", pod.ctr("app"))
        codes = pod.finish()
        assert codes["gitsync"] == 0 and codes["reloader"] == 0, pod.exit_report(codes)
    finally:
        if pod is not None:
            pod.down()
        daemon.stop()


def test_logship_ships_the_apps_log_files(e2e: E2E, recorder: Recorder) -> None:
    e2e.require("logship")
    pod = e2e.play("logship/pod.yaml", {LOKI: f"loki+http://{PEER_HOST}:{recorder.port}"})
    try:
        pod.wait_ready(9411)
        expected = {f"request {i} handled" for i in range(1, 1001)}
        recorder.wait_lines(expected, 90)
        with recorder.lock:
            assert set(recorder.lines) == expected
            pushes = [r for r in recorder.requests if r["path"] == "/loki/api/v1/push"]
            labels = recorder.streams[0]
        assert pushes
        # --label, the file, and the pod's name from the Downward API.
        assert labels.get("app") == "logship-demo", labels
        assert any(v == "/var/log/app/app.log" for v in labels.values()), labels
        assert "logship-demo" in {v for k, v in labels.items() if k != "app"}, labels
        podman("stop", "--time", "10", pod.ctr("app"))
        assert pod.finish()["logship"] == 0, pod.logs("logship")
    finally:
        pod.down()


def test_job_finishes_with_every_line_shipped(e2e: E2E, recorder: Recorder) -> None:
    e2e.require("logship")
    pod = e2e.play("job-logship/job.yaml", {LOKI: f"loki+http://{PEER_HOST}:{recorder.port}"})
    try:
        codes = pod.finish(timeout=120)
        assert codes == {"job": 0, "logship": 0}, (codes, pod.logs("logship")[-2000:])
        expected = {f"batch item {i} done" for i in range(1, 2001)}
        # Everything was shipped before logship exited: no waiting here.
        with recorder.lock:
            lost = expected - set(recorder.lines)
        assert not lost, f"{len(lost)} lines lost, e.g. {sorted(lost)[:5]}"
    finally:
        pod.down()


def test_metrics_adapter_serves_the_mapped_series(e2e: E2E) -> None:
    e2e.require("metrics")
    pod = e2e.play("metrics/pod.yaml", {})
    try:
        pod.wait_ready(9414)

        def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            status, body = http_get(pod.url(9414, "/metrics"))
            assert status == 200, body
            out = {}
            for fam in text_string_to_metric_families(body):
                for s in fam.samples:
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
            return out if ("app_queue_depth", (("queue", "orders"),)) in out else None

        got = wait_for(samples, 60, "the mapped series on /metrics")
        assert got[("app_queue_depth", (("queue", "orders"),))] == 7
        assert got[("app_queue_depth", (("queue", "mail"),))] == 2
        assert got[("app_component_up", (("component", "db"),))] == 1
        assert got[("app_component_up", (("component", "cache"),))] == 0.5
        assert got[("app_component_up", (("component", "search"),))] == 0
        assert got[("app_requests_total", ())] > 1200
        podman("stop", "--time", "10", pod.ctr("app"))
        assert pod.finish()["metrics"] == 0, pod.logs("metrics")
    finally:
        pod.down()


def test_logformat_normalises_the_apps_logs(e2e: E2E) -> None:
    e2e.require("logformat")
    pod = e2e.play("logformat/pod.yaml", {})
    try:
        pod.wait_ready(9415)

        def records() -> list[dict[str, object]] | None:
            out = [r for r in pod.records("logformat") if "status" in r]
            return out if len(out) >= 200 else None

        recs = wait_for(records, 60, "200 normalised records on logformat's stdout")
        assert len(recs) == 200, len(recs)
        assert Counter(r["status"] for r in recs) == {200: 180, 404: 20}
        for r in recs:
            assert r.get("parse_error") is not True, r
            assert isinstance(r["time"], str) and r["time"].startswith("20"), r
            assert r["level"] in ("info", "warning", "error"), r
        podman("stop", "--time", "10", pod.ctr("app"))
        assert pod.finish()["logformat"] == 0, pod.logs("logformat")
    finally:
        pod.down()


def test_proxy_carries_the_apps_calls_to_its_upstream(e2e: E2E, recorder: Recorder) -> None:
    e2e.require("proxy")
    pod = e2e.play(
        "proxy/pod.yaml",
        {"http://api.example.svc.cluster.local:80": f"http://{PEER_HOST}:{recorder.port}"},
    )
    try:
        pod.wait_ready(9416)
        pod.played()
        first = wait_for(lambda: next(iter(pod.records("app")), None), 60, "the app's first call")
        # The native-sidecar start order (emulated by the harness): the app
        # starts only once the proxy's startupProbe passed, so even its very
        # first call goes through instead of meeting a closed port.
        assert first.get("status") == 200, first
        wait_for(
            lambda: any(
                r.get("status") == 200 and r.get("body") == "hello from upstream"
                for r in pod.records("app")
            ),
            60,
            "the app to get its upstream's answer through the proxy",
        )
        with recorder.lock:
            calls = [r for r in recorder.requests if r["path"] == "/hello"]
        headers = {k.lower(): v for k, v in calls[0]["headers"].items()}
        # The ambassador, not the app, added these.
        assert headers.get("x-request-id"), headers
        assert headers.get("x-forwarded-for"), headers
        podman("stop", "--time", "10", pod.ctr("app"))
        assert pod.finish()["proxy"] == 0, pod.logs("proxy")
    finally:
        pod.down()
