"""`podkit injector`: real AdmissionReview v1 documents posted over TLS to the
running program; the returned JSONPatch is applied with the `jsonpatch`
package (an RFC 6902 implementation that is not ours) and the patched Pod must
pass kubernetes-validate (strict) and `podkit validate`."""

from __future__ import annotations

import base64
import copy
import http.client
import json
import shutil
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from podkit.inject import INJECTED
from podkit.validate import _programs, validate_text
from tests.helpers import ProgramProcess, free_port, wait_until
from tests.peers.tls import TLSFiles, make_ca

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_ca(tmp_path_factory.mktemp("injector-tls"))


class Webhook:
    def __init__(self, proc: ProgramProcess, port: int, ca: Path) -> None:
        self.proc = proc
        self.port = port
        self.ca = ca

    def post(self, body: bytes, ca: Path | None = None) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(ca or self.ca))
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
        try:
            conn.request("POST", "/mutate", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def review(self, request: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        status, data = self.post(json.dumps(body).encode())
        assert status == 200, data
        answer = json.loads(data)
        assert answer["apiVersion"] == "admission.k8s.io/v1"
        assert answer["kind"] == "AdmissionReview"
        response: dict[str, Any] = answer["response"]
        assert response["uid"] == request["uid"]
        assert response["allowed"] is True  # never fails a pod
        return response


@pytest.fixture(scope="module")
def webhook(tls: TLSFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    tmp = tmp_path_factory.mktemp("injector")
    # The files the program reads are copies, so a test may replace them.
    cert, key = tmp / "tls.crt", tmp / "tls.key"
    shutil.copy(tls.server_cert, cert)
    shutil.copy(tls.server_key, key)
    port = free_port()
    args = [
        f"--listen=127.0.0.1:{port}",
        f"--cert-file={cert}",
        f"--key-file={key}",
        "--registry=registry.example:5000/podkit",
        "--image-version=1.2.3",
    ]
    with ProgramProcess("injector", args, tmp=tmp) as proc:
        proc.wait_ready()
        yield Webhook(proc, port, tls.ca)


def pod_from_deployment(annotations: dict[str, str]) -> dict[str, Any]:
    """A Pod as the ReplicaSet controller creates it from a Deployment's template."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "shop-7d9c8b6f5-",
            "namespace": "shop",
            "labels": {"app": "shop", "pod-template-hash": "7d9c8b6f5"},
            "annotations": dict(annotations),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "shop-7d9c8b6f5",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "containers": [
                {
                    "name": "shop",
                    "image": "nginxinc/nginx-unprivileged:1.27",
                    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/shop"}],
                    "terminationMessagePath": "/dev/termination-log",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "volumes": [{"name": "logs", "emptyDir": {}}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
        },
    }


def admission_request(pod: Any, kind: str = "Pod", operation: str = "CREATE") -> dict[str, Any]:
    group_version = {"Pod": ("", "v1", "pods")}.get(kind, ("apps", "v1", "deployments"))
    return {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group_version[0], "version": group_version[1], "kind": kind},
        "resource": {
            "group": group_version[0],
            "version": group_version[1],
            "resource": group_version[2],
        },
        "requestKind": {"group": group_version[0], "version": group_version[1], "kind": kind},
        "namespace": "shop",
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod,
        "oldObject": None,
        "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
    }


def apply(pod: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "patch" not in response:
        return pod
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return dict(jsonpatch.apply_patch(pod, ops))


def check_valid(pod: dict[str, Any]) -> None:
    named = copy.deepcopy(pod)
    named["metadata"]["name"] = "shop-7d9c8b6f5-abcde"  # the API server names it after us
    for version in SCHEMA_VERSIONS:
        kubernetes_validate.validate(named, version, strict=True)
    problems = validate_text(yaml.safe_dump(named), "patched", _programs())
    assert not problems, "\n".join(map(str, problems))


LOGSHIP = "--path '/var/log/shop/*.log' --sink loki+http://loki:3100"


def test_pod_with_annotations_is_patched(webhook: Webhook) -> None:
    pod = pod_from_deployment(
        {"podkit.dev/logship": LOGSHIP, "podkit.dev/waitfor": "tcp://db.shop:5432"}
    )
    response = webhook.review(admission_request(pod))
    assert "warnings" not in response
    patched = apply(pod, response)
    inits = {c["name"]: c for c in patched["spec"]["initContainers"]}
    assert set(inits) == {"podkit-logship", "podkit-waitfor"}
    assert inits["podkit-logship"]["restartPolicy"] == "Always"
    assert inits["podkit-logship"]["image"] == "registry.example:5000/podkit/podkit-logship:1.2.3"
    assert {"name": "logs", "mountPath": "/var/log/shop", "readOnly": True} in inits[
        "podkit-logship"
    ]["volumeMounts"]
    assert patched["metadata"]["annotations"][INJECTED] == "logship,waitfor"
    check_valid(patched)
    # the same answer `podkit inject` gives: applied again, nothing changes
    again = webhook.review(admission_request(patched))
    assert "patch" not in again and "warnings" not in again


def test_pod_without_annotations_is_left_alone(webhook: Webhook) -> None:
    pod = pod_from_deployment({})
    response = webhook.review(admission_request(pod))
    assert "patch" not in response and "warnings" not in response
    check_valid(pod)


def test_already_injected_pod_is_left_alone(webhook: Webhook) -> None:
    pod = pod_from_deployment({"podkit.dev/proxy": "--listen 127.0.0.1:8080 --upstream http://a"})
    patched = apply(pod, webhook.review(admission_request(pod)))
    response = webhook.review(admission_request(copy.deepcopy(patched)))
    assert "patch" not in response
    check_valid(patched)


@pytest.mark.parametrize(
    "annotations,why",
    [
        ({"podkit.dev/logshipp": LOGSHIP}, "podkit.dev/logshipp"),
        ({"podkit.dev/logship": "--sink nowhere --bogus"}, "podkit.dev/logship"),
    ],
)
def test_bad_annotations_allow_the_pod_unpatched_with_a_warning(
    webhook: Webhook, annotations: dict[str, str], why: str
) -> None:
    pod = pod_from_deployment(annotations)
    response = webhook.review(admission_request(pod))
    assert "patch" not in response
    assert any(why in w and "Pod/shop-7d9c8b6f5-" in w for w in response["warnings"])


@pytest.mark.parametrize(
    "request_",
    [
        admission_request({"kind": "Pod", "spec": "not a spec"}),
        admission_request("a string, not an object"),
        admission_request({"kind": "Deployment"}, kind="Deployment"),
    ],
    ids=["spec-not-object", "object-not-object", "not-a-pod"],
)
def test_malformed_objects_are_allowed_with_a_warning(
    webhook: Webhook, request_: dict[str, Any]
) -> None:
    response = webhook.review(request_)
    assert "patch" not in response and response["warnings"]


def test_malformed_reviews_are_refused(webhook: Webhook) -> None:
    before = webhook.proc.metric("podkit_injector_reviews_total", result="malformed")
    for body in (b"{not json", b'{"kind": "AdmissionReview"}', b"[]"):
        status, _ = webhook.post(body)
        assert status == 400
    after = webhook.proc.metric("podkit_injector_reviews_total", result="malformed")
    assert after - before == 3
    assert webhook.proc.get("/readyz")[0] == 200  # and the program lives on


def test_certificate_is_reread_when_it_changes(
    webhook: Webhook, tls: TLSFiles, tmp_path: Path
) -> None:
    """cert-manager renews the Secret: the next connection gets the new pair."""
    fresh = make_ca(tmp_path / "renewed")
    args = webhook.proc.args
    cert = Path(next(a for a in args if a.startswith("--cert-file=")).split("=", 1)[1])
    key = Path(next(a for a in args if a.startswith("--key-file=")).split("=", 1)[1])
    # A half-written renewal (new certificate, old key) keeps the old pair serving.
    shutil.copy(fresh.server_cert, cert)
    assert webhook.post(b"{}")[0] == 400
    shutil.copy(fresh.server_key, key)

    def new_cert_served() -> bool:
        try:
            return webhook.post(b"{}", ca=fresh.ca)[0] == 400
        except ssl.SSLError:
            return False

    wait_until(new_cert_served, timeout=10, what="the renewed certificate")
    with pytest.raises(ssl.SSLError):
        webhook.post(b"{}", ca=tls.ca)
    # put the original pair back for the other tests
    shutil.copy(tls.server_cert, cert)
    shutil.copy(tls.server_key, key)
    wait_until(lambda: webhook.post(b"{}")[0] == 400, timeout=10, what="the old certificate")


def test_deploy_manifests_are_valid() -> None:
    """deploy/injector/, each file alone (test_deploy_injector.py checks the kustomize render)."""
    folder = ROOT / "deploy" / "injector"
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    kinds = set()
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((folder / name).read_text()):
            kinds.add(doc["kind"])
            if doc["apiVersion"] == "cert-manager.io/v1":  # CRDs: no bundled schema
                assert doc["kind"] in ("Issuer", "Certificate")
                if doc["kind"] == "Certificate":
                    assert doc["spec"]["secretName"] == "podkit-injector-tls"
                    assert "podkit-injector.podkit-system.svc" in doc["spec"]["dnsNames"]
                continue
            for version in SCHEMA_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)
    assert {
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "Certificate",
    } <= kinds
    problems = validate_text((folder / "deployment.yaml").read_text(), "deploy", _programs())
    assert not problems, "\n".join(map(str, problems))
