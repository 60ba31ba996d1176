"""deploy/injector as `kubectl kustomize` renders it, the way `kubectl apply -k` sends it.

Every rendered object is validated with kubernetes-validate (the cert-manager
kinds, CRDs without a bundled schema, are checked field by field), and the
references between the objects are checked: what the API server calls (the
webhook's service, namespace, port and path) reaches the injector's container,
and the certificate cert-manager issues is the one the injector serves, for
the name the API server dials, with its CA injected into the webhook.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from podkit.validate import _programs, validate_text
from tests.helpers import need

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def render() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered()) if doc]


@functools.cache
def rendered() -> str:
    kubectl = need("kubectl")  # Debian's kubectl package, with kustomize built in
    return subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy" / "injector")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def arg(args: list[str], flag: str) -> str:
    for a in args:
        if a.startswith(f"{flag}="):
            return a.split("=", 1)[1]
    raise AssertionError(f"no {flag}= in {args}")


def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Every broken reference between the rendered objects, as a sentence."""
    problems: list[str] = []
    ns = one(objects, "Namespace")
    svc = one(objects, "Service")
    dep = one(objects, "Deployment")
    cert = one(objects, "Certificate")
    issuer = one(objects, "Issuer")
    webhooks = one(objects, "MutatingWebhookConfiguration")
    namespace = ns["metadata"]["name"]
    for o in (svc, dep, cert, issuer):
        if o["metadata"].get("namespace") != namespace:
            problems.append(f"{o['kind']} is in {o['metadata'].get('namespace')}, not {namespace}")
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if not matches(dep["spec"]["selector"], pod["metadata"]["labels"]):
        problems.append("the Deployment's selector does not match its pod template")
    if not matches({"matchLabels": svc["spec"]["selector"]}, pod["metadata"]["labels"]):
        problems.append("the Service's selector does not match the injector's pods")
    listen_port = int(arg(container["args"], "--listen").rsplit(":", 1)[1])

    ann = webhooks["metadata"].get("annotations", {})
    if ann.get("cert-manager.io/inject-ca-from") != f"{namespace}/{cert['metadata']['name']}":
        problems.append(f"inject-ca-from is {ann.get('cert-manager.io/inject-ca-from')!r}")
    for hook in webhooks["webhooks"]:
        ref = hook["clientConfig"]["service"]
        name = hook["name"]
        if (ref["name"], ref.get("namespace")) != (svc["metadata"]["name"], namespace):
            problems.append(f"{name} calls service {ref.get('namespace')}/{ref['name']}")
        svc_port = next(
            (p for p in svc["spec"]["ports"] if p["port"] == ref.get("port", 443)), None
        )
        if svc_port is None:
            problems.append(f"{name} calls port {ref.get('port', 443)}, which the Service lacks")
        else:
            target = svc_port.get("targetPort", svc_port["port"])
            target = ports.get(target) if isinstance(target, str) else target
            if target != listen_port:
                problems.append(
                    f"the Service's port {svc_port['port']} reaches {target}, "
                    f"the injector listens on {listen_port}"
                )
        if ref.get("path") != "/mutate":
            problems.append(f"{name} posts to {ref.get('path')}, the injector serves /mutate")
        # The injector's own namespace is never mutated (its pods would wait on
        # themselves): the namespace selector must not match its labels.
        if matches(hook.get("namespaceSelector", {}), ns["metadata"].get("labels", {})):
            problems.append(f"{name} would mutate pods of its own namespace {namespace}")
        if hook.get("failurePolicy") != "Ignore":
            problems.append(f"{name}'s failurePolicy is not Ignore")

    dns = f"{svc['metadata']['name']}.{namespace}.svc"
    if dns not in cert["spec"].get("dnsNames", []):
        problems.append(f"the Certificate is not for {dns}, the name the API server dials")
    if cert["spec"]["issuerRef"] != {"name": issuer["metadata"]["name"], "kind": "Issuer"}:
        problems.append(f"the Certificate's issuer {cert['spec']['issuerRef']} is not the Issuer")
    secrets = {
        v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v
    }
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    tls_volume = next((n for n, s in secrets.items() if s == cert["spec"]["secretName"]), None)
    if tls_volume is None:
        problems.append(f"no volume of the injector mounts Secret {cert['spec']['secretName']}")
    else:
        for flag, file in (("--cert-file", "tls.crt"), ("--key-file", "tls.key")):
            if arg(container["args"], flag) != f"{mounts.get(tls_volume)}/{file}":
                problems.append(f"{flag} is not {file} of the certificate's Secret")
    return problems


def test_kustomize_render_is_valid() -> None:
    objects = render()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == [
        "Certificate",
        "Deployment",
        "Issuer",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Service",
    ]
    for doc in objects:
        if doc["apiVersion"] == "cert-manager.io/v1":
            # CRDs, which kubernetes-validate has no schema for: the fields
            # cert-manager requires (its v1 API).
            spec = doc["spec"]
            if doc["kind"] == "Certificate":
                assert spec["secretName"] and spec["issuerRef"]["name"], doc
                assert spec["dnsNames"], doc
            else:
                assert set(spec) & {"selfSigned", "ca", "acme", "vault", "venafi"}, doc
            continue
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path)
                pytest.fail(f"{doc['kind']} {version} {loc}: {e.message}", pytrace=False)
    assert reference_problems(objects) == []
    # The injector's own arguments, through its own option parser.
    problems = validate_text(yaml.safe_dump(one(objects, "Deployment")), "deploy", _programs())
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (
            ("MutatingWebhookConfiguration", "webhooks", 0, "clientConfig", "service", "name"),
            "injector",
            "calls service podkit-system/injector",
        ),
        (("Service", "spec", "ports", 0, "targetPort"), "admin", "the injector listens on 8443"),
        (("Certificate", "spec", "secretName"), "other-tls", "no volume of the injector mounts"),
        (("Certificate", "metadata", "name"), "webhook-cert", "inject-ca-from is"),
        (
            ("Certificate", "spec", "dnsNames"),
            ["injector.podkit-system.svc"],
            "not for podkit-injector.podkit-system.svc",
        ),
        (
            ("MutatingWebhookConfiguration", "webhooks", 0, "namespaceSelector"),
            {},
            "would mutate pods of its own namespace",
        ),
    ],
)
def test_broken_references_are_found(path: tuple[Any, ...], value: Any, problem: str) -> None:
    """The reference check is not vacuous: each broken reference is named."""
    objects = render()
    target: Any = one(objects, path[0])
    for key in path[1:-1]:
        target = target[key]
    target[path[-1]] = value
    found = reference_problems(objects)
    assert any(problem in p for p in found), found
