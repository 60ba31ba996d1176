"""k8s://KIND/NAME: a Kubernetes object in the state the app needs, read from the API.

- `k8s://job/NAME[?condition=Complete]`: the Job has that condition True
  (`Complete` by default; a Failed job is reported with its reason);
- `k8s://deployment/NAME?available`: the rollout is done, as `kubectl rollout
  status` decides: the controller saw the latest spec, and every desired
  replica is updated and available;
- `k8s://pod?selector=app=db&ready`: at least one pod matches the label
  selector and every matching pod is Ready;
- `k8s://endpoints/NAME`: the Endpoints object has at least one ready address.

`?namespace=` (default: the pod's own, from the service account). The API
server, token and CA are the in-cluster ones (KUBERNETES_SERVICE_HOST/PORT,
/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}),
overridable with --k8s-api, --k8s-token-file and --ca-file. The token is
re-read on every attempt (bound tokens rotate). One GET per attempt with the
small HTTP/1.1 client, no Kubernetes library.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import SplitResult, quote

from podkit import SecretFile

from .base import NotReady, Probe, Settings, register

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
KINDS = {
    "job": ("/apis/batch/v1", "jobs"),
    "deployment": ("/apis/apps/v1", "deployments"),
    "pod": ("/api/v1", "pods"),
    "endpoints": ("/api/v1", "endpoints"),
}


def in_cluster_api() -> str | None:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT", "443"),
    )
    if not host:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


@register
class K8sProbe(Probe):
    schemes = ("k8s",)
    network = False
    query_keys = frozenset({"namespace", "condition", "available", "selector", "ready"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(
            url, parts._replace(netloc="", path=f"/{parts.netloc}{parts.path}"), settings
        )
        kind, _, name = self.path.strip("/").partition("/")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if kind == "pod":
            if name or not self.query.get("selector"):
                raise ValueError("k8s://pod?selector=LABEL=VALUE&ready (pods by label selector)")
        elif not name or "/" in name:
            raise ValueError(f"expected k8s://{kind}/NAME")
        self.kind, self.name = kind, name
        self.condition = self.query.get("condition", "Complete")
        if "condition" in self.query and kind != "job":
            raise ValueError("condition= is for k8s://job/NAME")
        self.namespace = self.query.get("namespace")

    def _request_path(self, namespace: str) -> str:
        prefix, plural = KINDS[self.kind]
        path = f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}"
        if self.kind == "pod":
            return f"{path}?labelSelector={quote(self.query['selector'], safe='')}"
        return f"{path}/{quote(self.name, safe='')}"

    async def check(self) -> None:
        from podkit.checks import load_json
        from podkit.http import bearer_token_problem, ssl_context
        from podkit.httpclient import fetch

        s = self.settings
        api = s.k8s_api or in_cluster_api()
        if not api:
            raise NotReady(
                "no API server: not in a cluster (KUBERNETES_SERVICE_HOST); give --k8s-api"
            )
        namespace = self.namespace or _read(os.path.join(SA_DIR, "namespace")) or "default"
        token_file = s.k8s_token_file or os.path.join(SA_DIR, "token")
        try:
            token = SecretFile(token_file).value()
        except OSError as exc:
            raise NotReady(f"cannot read the token {token_file}: {exc.strerror or exc}") from None
        problem = bearer_token_problem(token)
        if problem:
            raise NotReady(f"the token {token_file}: {problem}")
        ca = s.tls.ca_file or (os.path.join(SA_DIR, "ca.crt") if s.k8s_api is None else None)
        tls = ssl_context(ca, s.tls.insecure) if api.startswith("https") else None
        res = await fetch(
            "GET",
            api.rstrip("/") + self._request_path(namespace),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            ssl_ctx=tls,
            timeout=30.0,  # the attempt's own timeout is shorter and governs
            max_body=8 << 20,
        )
        if res.status in (401, 403):
            verb = "list" if self.kind == "pod" else "get"
            raise NotReady(
                f"the API refused ({res.status}): the service account needs {verb} on "
                f"{KINDS[self.kind][1]} in {namespace} (RBAC)"
            )
        if res.status == 404:
            raise NotReady(f"no {self.kind} {self.name!r} in {namespace} (yet)")
        if res.status != 200:
            raise NotReady(f"the API answered {res.status}")
        try:
            obj = load_json(res.body)
        except ValueError:
            raise NotReady("the API answered something that is not JSON") from None
        getattr(self, f"_{self.kind}")(obj)

    def _job(self, obj: dict[str, Any]) -> None:
        conditions = _conditions(obj)
        if conditions.get(self.condition, {}).get("status") == "True":
            return
        failed = conditions.get("Failed", {})
        if failed.get("status") == "True" and self.condition != "Failed":
            raise NotReady(
                f"job {self.name!r} failed: {failed.get('reason')}: {failed.get('message')}"
            )
        st = obj.get("status") or {}
        raise NotReady(
            f"job {self.name!r} not {self.condition} (active {st.get('active', 0)}, "
            f"succeeded {st.get('succeeded', 0)}, failed {st.get('failed', 0)})"
        )

    def _deployment(self, obj: dict[str, Any]) -> None:
        meta, spec, st = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        want = spec.get("replicas", 1)
        if st.get("observedGeneration", 0) < meta.get("generation", 0):
            raise NotReady(
                f"deployment {self.name!r}: the controller has not seen the new spec yet"
            )
        updated, available = st.get("updatedReplicas", 0), st.get("availableReplicas", 0)
        if updated < want or available < want:
            raise NotReady(
                f"deployment {self.name!r}: {updated} of {want} updated, {available} available"
            )

    def _pod(self, obj: dict[str, Any]) -> None:
        pods = obj.get("items") or []
        if not pods:
            raise NotReady(f"no pod matches {self.query['selector']}")
        waiting = [
            (p.get("metadata") or {}).get("name", "?")
            for p in pods
            if _conditions(p).get("Ready", {}).get("status") != "True"
        ]
        if waiting:
            raise NotReady(
                f"{len(waiting)} of {len(pods)} pods not Ready: {', '.join(waiting[:3])}"
            )

    def _endpoints(self, obj: dict[str, Any]) -> None:
        ready = sum(len(s.get("addresses") or []) for s in obj.get("subsets") or [])
        if not ready:
            raise NotReady(f"endpoints {self.name!r}: no ready address")


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c.get("type")): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if isinstance(c, dict)
    }


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None
