"""Injection end to end: examples/inject/worker.yaml, a plain Deployment with
podkit.dev/* annotations, made whole by `podkit inject` (the command) and by
`podkit injector` (the admission webhook, running from its image), then run
as a pod with the images pulled from the tier's registry. Each injected
container is checked by its work, not by its start: waitfor held the app
until the API answered, the proxy carried the app's calls (adding its
headers), logship shipped every line the app wrote.
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
from pathlib import Path
from typing import Any

import jsonpatch
import yaml

from tests.e2e.conftest import E2E
from tests.e2e.harness import NETWORK, PEER_HOST, ROOT, Pod, http_get, podman, replaced, wait_for
from tests.e2e.peers import Recorder
from tests.peers.tls import make_ca

WORKER = ROOT / "examples/inject/worker.yaml"
PROGRAMS = ("waitfor", "proxy", "logship")
JOBS = 20


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
    assert codes["podkit-logship"] == 0 and codes["podkit-proxy"] == 0, codes


def test_podkit_inject_output_runs_as_a_pod(e2e: E2E, recorder: Recorder) -> None:
    e2e.require(*PROGRAMS)
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "inject", "--registry", e2e.registry,
         "--version", e2e.published["version"], "-"],
        input=replaced(WORKER, peers(recorder)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    pod = e2e.play_text(res.stdout, "inject-cli")
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
