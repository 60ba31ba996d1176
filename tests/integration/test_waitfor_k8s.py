"""waitfor's k8s:// targets against an aiohttp fake of the Kubernetes API.

No API server runs here, so the fake serves the four GETs the probe makes
(a Job, a Deployment, pods by label selector, Endpoints) from objects the test
changes, checks the bearer token, and answers 403 in a namespace the
service account has no RBAC for, as a real API server would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import ProgramProcess, run_program
from tests.peers.aioapp import ThreadedApp

TOKEN = "k8s-sa-token-xyz"


class FakeAPI:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.paths: list[str] = []
        app = web.Application()
        app.router.add_get("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", self.get)
        app.router.add_get("/api/v1/namespaces/{ns}/{plural}/{name}", self.get)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self.list_pods)
        self.served = ThreadedApp(app)
        self.port = self.served.port

    def _denied(self, request: web.Request) -> web.Response | None:
        self.paths.append(request.path_qs)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        if request.match_info["ns"] == "locked":
            return web.json_response({"kind": "Status", "code": 403}, status=403)
        return None

    async def get(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        m = request.match_info
        obj = self.objects.get((m["ns"], m["plural"], m["name"]))
        if obj is None:
            return web.json_response({"kind": "Status", "code": 404}, status=404)
        return web.json_response(obj)

    async def list_pods(self, request: web.Request) -> web.Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        key, _, value = request.query.get("labelSelector", "").partition("=")
        items = [p for p in self.pods if p["metadata"]["labels"].get(key) == value]
        return web.json_response({"kind": "PodList", "items": items})

    def close(self) -> None:
        self.served.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[FakeAPI, list[str]]]:
    fake = FakeAPI()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    yield fake, ["--k8s-api", f"http://127.0.0.1:{fake.port}", "--k8s-token-file", str(token)]
    fake.close()


def cond(kind: str, status: str = "True", **kw: str) -> dict[str, str]:
    return {"type": kind, "status": status, **kw}


def test_job_complete_and_failed(api: tuple[FakeAPI, list[str]]) -> None:
    fake, flags = api
    url = "k8s://job/migrate?namespace=app"
    with ProgramProcess("waitfor", ["--max-interval", "200ms", *flags, url], admin=False) as p:
        p.wait_log("waiting", error="no job 'migrate' in app (yet)")
        fake.objects[("app", "jobs", "migrate")] = {"status": {"active": 1}}
        p.wait_log("waiting", error="job 'migrate' not Complete (active 1, succeeded 0, failed 0)")
        fake.objects[("app", "jobs", "migrate")] = {
            "status": {"succeeded": 1, "conditions": [cond("Complete")]}
        }
        assert p.wait(30) == 0, p.stderr()
    assert fake.paths[-1] == "/apis/batch/v1/namespaces/app/jobs/migrate"
    fake.objects[("app", "jobs", "bad")] = {
        "status": {"failed": 6, "conditions": [cond("Failed", reason="BackoffLimitExceeded",
                                                    message="Job has reached the backoff limit")]}
    }  # fmt: skip
    res = run_program("waitfor", ["--timeout", "1s", *flags, "k8s://job/bad?namespace=app"])
    assert res.returncode == 124
    assert (
        b"job 'bad' failed: BackoffLimitExceeded: Job has reached the backoff limit" in res.stderr
    )
    assert TOKEN.encode() not in res.stderr


def test_deployment_pods_endpoints_and_rbac(api: tuple[FakeAPI, list[str]]) -> None:
    fake, flags = api
    fake.objects[("app", "deployments", "web")] = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 2},
        "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1},
    }
    fake.objects[("app", "endpoints", "db")] = {"subsets": [{"notReadyAddresses": [{"ip": "x"}]}]}
    pod = {"metadata": {"name": "db-0", "labels": {"app": "db"}},
           "status": {"conditions": [cond("Ready", "False")]}}  # fmt: skip
    fake.pods.append(pod)
    targets = ["k8s://deployment/web?namespace=app&available",
               "k8s://pod?namespace=app&selector=app%3Ddb&ready",
               "k8s://endpoints/db?namespace=app"]  # fmt: skip
    with ProgramProcess("waitfor", ["--max-interval", "200ms", *flags, *targets], admin=False) as p:
        p.wait_log("waiting", error="deployment 'web': 2 of 2 updated, 1 available")
        p.wait_log("waiting", error="1 of 1 pods not Ready: db-0")
        p.wait_log("waiting", error="endpoints 'db': no ready address")
        fake.objects[("app", "deployments", "web")]["status"]["availableReplicas"] = 2
        pod["status"] = {"conditions": [cond("Ready")]}
        fake.objects[("app", "endpoints", "db")] = {
            "subsets": [{"addresses": [{"ip": "10.0.0.9"}]}]
        }
        assert p.wait(30) == 0, p.stderr()
    res = run_program("waitfor", ["--timeout", "1s", *flags, "k8s://job/x?namespace=locked"])
    assert res.returncode == 124
    assert b"the service account needs get on jobs in locked (RBAC)" in res.stderr
    res = run_program("waitfor", [*flags, "k8s://statefulset/x", "k8s://pod?ready"])
    assert res.returncode == 2 and b"kind must be one of" in res.stderr


def test_an_empty_token_file_is_waited_out_without_asking_the_api(
    api: tuple[FakeAPI, list[str]], tmp_path: Path
) -> None:
    """A service-account token not projected yet is named as such, and nothing is
    sent with `Authorization: Bearer ` meanwhile; once it is there, the wait ends."""
    fake, flags = api
    token = tmp_path / "token"
    token.write_text("\n")
    fake.objects[("app", "jobs", "migrate")] = {
        "status": {"succeeded": 1, "conditions": [cond("Complete")]}
    }
    url = "k8s://job/migrate?namespace=app"
    with ProgramProcess("waitfor", ["--max-interval", "200ms", *flags, url], admin=False) as p:
        p.wait_log("waiting", error=f"the token {token}: empty")
        assert fake.paths == []
        token.write_text(TOKEN + "\n")
        assert p.wait(30) == 0, p.stderr()
    assert fake.paths == ["/apis/batch/v1/namespaces/app/jobs/migrate"]
