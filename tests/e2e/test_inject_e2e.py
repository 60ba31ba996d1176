"""Injection end to end: plain Deployments with podkit.dev/* annotations,
made whole by `podkit inject` (the command) and by `podkit injector` (the
admission webhook, running from its image), then run as pods with the images
pulled from the tier's registry. Between them the two examples inject every
program that runs in a pod without an API server (kubefiles needs one; the
injector is the webhook itself):

- examples/inject/worker.yaml: waitfor, proxy, logship (by the command and by
  the webhook);
- examples/inject/site.yaml: gitsync, reloader, logformat, metrics (by the
  command).

Each injected container is checked by its work, not by its start: waitfor
held the app until the API answered, the proxy carried the app's calls
(adding its headers), logship shipped every line the app wrote; gitsync's
checkout was there when the app started and followed a new commit, the
reloader made the app re-read it, logformat turned each access-log line into
a JSON record, metrics served the app's StatsD counts.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import E2E
from tests.e2e.harness import NETWORK, PEER_HOST, ROOT, Pod, http_get, podman, replaced, wait_for
from tests.e2e.peers import GitDaemon, Recorder
from tests.peers.git import GitRepos
from tests.peers.tls import make_ca

WORKER = ROOT / "examples/inject/worker.yaml"
PROGRAMS = ("waitfor", "proxy", "logship")
JOBS = 20
SITE = ROOT / "examples/inject/site.yaml"
SITE_PROGRAMS = ("gitsync", "logformat", "metrics", "reloader")  # annotation (key) order
SITE_REPO = "https://git.example.com/web/site.git"


def inject_cli(e2e: E2E, text: str) -> str:
    """`podkit inject` of a manifest, naming the tier's registry and version."""
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "inject", "--registry", e2e.registry,
         "--version", e2e.published["version"], "-"],
        input=text, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


def peers(recorder: Recorder) -> dict[str, str]:
    """The example's API and Loki, both played by the recorder."""
    here = f"http://{PEER_HOST}:{recorder.port}"
    return {
        "http://api.example.svc.cluster.local:80": here,
        "loki+http://loki.monitoring.svc.cluster.local:3100": f"loki+{here}",
    }


def check_worker(pod: Pod, e2e: E2E, recorder: Recorder) -> None:
    """What each injected container did for the worker, seen from outside."""
    # Every podkit container runs the published image, by its registry reference.
    spec = yaml.safe_load(pod.yaml_path.read_text())["spec"]
    images = {c["name"]: c["image"] for c in spec["containers"]}
    for program in PROGRAMS:
        assert images[f"podkit-{program}"] == e2e.images[program], images
    # The kubelet's order: the native sidecars ready, then waitfor, then the app.
    assert [s.names for s in pod.steps] == [
        ("podkit-logship",),
        ("podkit-proxy",),
        ("podkit-waitfor",),
        ("worker",),
    ], pod.steps
    pod.played(180)
    assert pod.wait_exited("podkit-waitfor") == 0
    assert any("ready" in r.get("message", "") for r in pod.records("podkit-waitfor"))
    # logship: every line the app wrote reached Loki; the proxy: each was a
    # 200 from the upstream, through the ambassador on localhost:8080.
    expected = {f"job {i} status 200 hello from upstream" for i in range(1, JOBS + 1)}
    recorder.wait_lines(expected, 90)
    with recorder.lock:
        gets = [r for r in recorder.requests if r["method"] == "GET"]
        streams = list(recorder.streams)
    assert any(r["path"] == "/healthz" for r in gets), gets  # waitfor's checks
    jobs = [r for r in gets if r["path"].startswith("/job/")]
    assert len(jobs) >= JOBS, jobs
    for r in jobs:
        headers = {k.lower() for k in r["headers"]}
        assert "x-request-id" in headers and "x-forwarded-for" in headers, r
    assert any(s.get("app") == "inject-worker" for s in streams), streams
    podman("stop", "--time", "10", pod.ctr("worker"))
    codes = pod.finish()
    assert codes["podkit-logship"] == 0 and codes["podkit-proxy"] == 0, pod.exit_report(codes)


def test_podkit_inject_output_runs_as_a_pod(e2e: E2E, recorder: Recorder) -> None:
    e2e.require(*PROGRAMS)
    pod = e2e.play_text(inject_cli(e2e, replaced(WORKER, peers(recorder))), "inject-cli")
    try:
        check_worker(pod, e2e, recorder)
    finally:
        pod.down()


def _post(ip: str, port: int, ca: Path, body: bytes) -> dict[str, Any]:
    """POST /mutate over TLS, verified against the CA as the API server does
    (the certificate names localhost; the pod is reached by its IP)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection((ip, port), timeout=10)
    conn = http.client.HTTPConnection(ip, port, timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, data
        return dict(json.loads(data))
    finally:
        conn.close()


def test_a_pod_patched_by_the_running_injector_runs(
    e2e: E2E, recorder: Recorder, tmp_path: Path
) -> None:
    e2e.require("injector", *PROGRAMS)
    tls = make_ca(tmp_path / "ca")
    certs = tmp_path / "tls"
    certs.mkdir()
    for src, name in ((tls.server_cert, "tls.crt"), (tls.server_key, "tls.key")):
        shutil.copy(src, certs / name)
        (certs / name).chmod(0o644)  # read by the image's user, 65532
    certs.chmod(0o755)
    name = "podkit-e2e-injector"
    podman("rm", "--force", "--time", "0", name, check=False)
    pod = None
    try:
        podman(
            "run", "--detach", "--name", name, "--network", NETWORK, "--read-only",
            "--volume", f"{certs}:/etc/webhook/tls:ro", e2e.images["injector"],
            "--cert-file=/etc/webhook/tls/tls.crt", "--key-file=/etc/webhook/tls/tls.key",
            f"--registry={e2e.registry}", f"--image-version={e2e.published['version']}",
            timeout=300,
        )  # fmt: skip
        info = json.loads(podman("inspect", name))[0]
        ip = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        wait_for(
            lambda: http_get(f"http://{ip}:9418/readyz")[0] == 200, 60, "the injector's /readyz"
        )

        # The Pod the ReplicaSet controller creates from the Deployment's template.
        deployment = yaml.safe_load(replaced(WORKER, peers(recorder)))
        template = deployment["spec"]["template"]
        obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "generateName": "inject-worker-5d8f7c9b6-"},
            "spec": template["spec"],
        }
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "default",
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": obj,
                "oldObject": None,
                "dryRun": False,
            },
        }
        answer = _post(ip, 8443, tls.ca, json.dumps(review).encode())["response"]
        assert answer["allowed"] is True and "warnings" not in answer, answer
        assert answer["patchType"] == "JSONPatch"
        patched = jsonpatch.apply_patch(obj, json.loads(base64.b64decode(answer["patch"])))
        # The API server names the pod from generateName.
        patched["metadata"]["name"] = "inject-webhook"
        del patched["metadata"]["generateName"]
        pod = e2e.play_text(yaml.safe_dump(patched, sort_keys=False), "inject-webhook")
        check_worker(pod, e2e, recorder)
    finally:
        if pod is not None:
            pod.down()
        podman("rm", "--force", "--time", "0", name, check=False)


def test_injected_site_syncs_reloads_formats_and_counts(e2e: E2E, tmp_path: Path) -> None:
    """examples/inject/site.yaml through `podkit inject`: gitsync, reloader,
    logformat and metrics around a plain web app, each checked by its work."""
    e2e.require(*SITE_PROGRAMS)
    (tmp_path / "srv").mkdir()
    repos = GitRepos(tmp_path / "srv")
    upstream = repos.create("site", {"index.html": "<h1>blue</h1>\n"})
    daemon = GitDaemon(repos.base, e2e.gateway).start()
    pod = None
    try:
        text = replaced(SITE, {SITE_REPO: f"git://{PEER_HOST}:{daemon.port}/site.git"})
        pod = e2e.play_text(inject_cli(e2e, text), "inject-site")
        spec = yaml.safe_load(pod.yaml_path.read_text())["spec"]
        images = {c["name"]: c["image"] for c in spec["containers"]}
        for program in SITE_PROGRAMS:
            assert images[f"podkit-{program}"] == e2e.images[program], images
        # The kubelet's order: every native sidecar probed ready, then the app.
        assert [s.names for s in pod.steps] == [
            *((f"podkit-{p}",) for p in SITE_PROGRAMS),
            ("site",),
        ], pod.steps
        ports = {name.removeprefix("podkit-"): port for name, port in pod.probes.items()}
        assert set(ports) == set(SITE_PROGRAMS), ports
        pod.played(180)

        # gitsync: its first sync was published before the app started (the
        # app reads the page at start and would have died without it).
        app = pod.url(8080, "/")
        state = wait_for(lambda: http_get(app)[1], 60, "the app to serve its page")
        assert "<h1>blue</h1>" in json.loads(state)["page"], state
        hits, misses = 20, 5
        for _ in range(hits - 1):  # one GET / was the wait above
            assert http_get(app)[0] == 200
        for i in range(misses):
            assert http_get(pod.url(8080, f"/missing/{i}"))[0] == 404

        # A new commit: gitsync publishes it, the reloader calls the app's
        # reload endpoint, the app serves the new page.
        sha = upstream.commit_push({"index.html": "<h1>green</h1>\n"})

        def reloaded() -> dict[str, Any] | None:
            got = json.loads(http_get(app)[1])
            return got if "green" in got["page"] else None

        state = wait_for(reloaded, 90, "the new commit served by the app")
        assert state["reloads"] >= 1, state
        assert sha in http_get(pod.url(ports["gitsync"], "/"))[1]

        # logformat: every access-log line as a JSON record on its stdout.
        def records() -> list[dict[str, Any]] | None:
            out = [r for r in pod.records("podkit-logformat") if r.get("method") == "GET"]
            return out if len(out) >= hits + misses + 1 else None

        recs = wait_for(records, 60, "the app's GETs as logformat records")
        assert Counter(r["status"] for r in recs)[404] == misses, recs
        assert {r["path"] for r in recs if r["status"] == 404} == {
            f"/missing/{i}" for i in range(misses)
        }
        for r in recs:
            assert r.get("parse_error") is not True and r["level"] in ("info", "warning"), r
        posts = [r for r in pod.records("podkit-logformat") if r.get("method") == "POST"]
        assert posts and all(r["path"] == "/-/reload" for r in posts), posts

        # metrics: the app's StatsD counter (site.requests) on /metrics.
        def counted() -> float | None:
            status, body = http_get(pod.url(ports["metrics"], "/metrics"))
            assert status == 200, body
            total = sum(
                s.value
                for fam in text_string_to_metric_families(body)
                for s in fam.samples
                if s.name in ("site_requests", "site_requests_total")
            )
            return total if total >= len(recs) + len(posts) else None

        wait_for(counted, 60, "the app's StatsD requests counted on /metrics")

        podman("stop", "--time", "10", pod.ctr("site"))
        codes = pod.finish()
        assert all(codes[f"podkit-{p}"] == 0 for p in SITE_PROGRAMS), pod.exit_report(codes)
    finally:
        if pod is not None:
            pod.down()
        daemon.stop()
