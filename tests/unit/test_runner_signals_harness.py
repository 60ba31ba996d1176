"""The e2e harness delivers one SIGTERM to a sidecar, as a kubelet does.

podman 4.3 plays every kube pod with the exit policy "stop": when a container
exits and every other one (but the infra) is exited or *stopping*, podman
stops the whole pod, and that stop sends a sidecar the harness is already
stopping a second SIGTERM. podkit's runner takes a second signal as "exit at
once" (128+SIGTERM): a CI run saw logship exit 143 when the proxy's exit
raced `Pod.finish()`'s stop of logship. The harness keeps one container of
its own running in every pod, started before anything can exit and never
stopped by the harness, so the pod's exit policy never fires. These tests
pin that down without podman: the keeper is in the played manifest, it is
started first, and neither the start order nor finish() touches it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import harness
from tests.e2e.harness import KEEPER, PAUSE_IMAGE, Pod, Step, kube_for_podman

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: demo}
spec:
  initContainers:
    - name: wait
      image: REGISTRY/podkit-waitfor:1.0
    - name: ship
      image: REGISTRY/podkit-logship:1.0
      restartPolicy: Always
    - name: amb
      image: REGISTRY/podkit-proxy:1.0
      restartPolicy: Always
  containers:
    - name: app
      image: python:3.12-slim
"""
IMAGES = {p: f"reg/podkit-{p}:1.0" for p in ("waitfor", "logship", "proxy")}


def test_the_played_pod_has_a_keeper_running_the_pause_image() -> None:
    text, steps = kube_for_podman(POD, IMAGES)
    spec = yaml.safe_load(text)["spec"]
    names = [c["name"] for c in spec["containers"]]
    assert names == ["wait", "ship", "amb", "app", KEEPER]
    assert spec["containers"][-1] == {"name": KEEPER, "image": PAUSE_IMAGE}
    # Not a step of the kubelet's order: no sidecar or app the tests look at.
    assert steps == [
        Step("init", ("wait",)),
        Step("sidecar", ("ship",)),
        Step("sidecar", ("amb",)),
        Step("apps", ("app",)),
    ]
    assert "initContainers" not in spec


def test_a_manifest_naming_the_keeper_is_refused() -> None:
    text = POD.replace("name: app", f"name: {KEEPER}")
    with pytest.raises(AssertionError, match=KEEPER):
        kube_for_podman(text, IMAGES)


class FakePodman:
    """podman start/stop as the harness calls them; every container's exit
    code is 0 and each started one has exited by the time it is waited for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, **kw: Any) -> str:
        self.calls.append(args)
        return ""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePodman:
    fake = FakePodman()
    monkeypatch.setattr(harness, "podman", fake)
    monkeypatch.setattr(Pod, "wait_exited", lambda self, name, timeout=60: 0)
    monkeypatch.setattr(Pod, "wait_ready", lambda self, port, timeout=60: None)
    return fake


def played(tmp_path: Path) -> Pod:
    _, steps = kube_for_podman(POD, IMAGES)
    return Pod("demo", steps, tmp_path / "demo.yaml")


def test_the_keeper_starts_before_any_container_can_exit(fake: FakePodman, tmp_path: Path) -> None:
    pod = played(tmp_path)
    pod._start_in_order(10)
    assert fake.calls == [
        ("start", f"demo-{KEEPER}"),
        ("start", "demo-wait"),  # an init container: it exits before the next starts
        ("start", "demo-ship"),
        ("start", "demo-amb"),
        ("start", "demo-app"),
    ]


def test_finish_stops_each_sidecar_once_in_reverse_order_and_not_the_keeper(
    fake: FakePodman, tmp_path: Path
) -> None:
    pod = played(tmp_path)
    pod._starter = threading.Thread(target=lambda: None)
    pod._starter.start()
    codes = pod.finish(10)
    assert codes == {"app": 0, "amb": 0, "ship": 0}
    stops = [c for c in fake.calls if c[0] == "stop"]
    assert stops == [
        ("stop", "--time", "30", "demo-amb"),
        ("stop", "--time", "30", "demo-ship"),
    ]
    assert not [c for c in fake.calls if any(KEEPER in a for a in c)], fake.calls
