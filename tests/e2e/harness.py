"""Run the examples/ manifests as real pods with `podman kube play`.

What the harness changes in a manifest, and why (podman 4.3 is not a kubelet):

- Native sidecars (initContainers with `restartPolicy: Always`) become classic
  containers: podman 4.3 treats them as init containers that never finish.
  The kubelet's shutdown order for them is emulated by `Pod.finish()`: once
  the app containers have exited, the sidecars get SIGTERM in reverse order.
- Probes are removed: podman turns httpGet probes into `curl` health checks
  run inside the container (the images have no curl, by design). The tests
  poll `/readyz` from outside instead, which is what a startupProbe does.
- A Job becomes its pod template as a Pod (kube play has no Job).
- Image names: `REGISTRY/podkit-<program>:<version>` -> the images built for
  this run; the apps' `python:3.12-slim` -> the local base image (no registry).
- Service names of peers (a database, a git server, Loki, an upstream) ->
  `host.containers.internal:<port>`: the peers run on the host, bound to the
  gateway address of the e2e bridge network, which the pod reaches under
  that name. The pod has its own network namespace like a real pod; nothing
  is published on the host's other interfaces.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "images" / "containers.conf"
BASE_IMAGE = "localhost/podkit-base:bookworm"
NETWORK = "podkit-e2e"
TAG = "e2e"
PROGRAMS = ("waitfor", "logship", "gitsync", "reloader", "metrics", "logformat", "proxy")
PACKAGE_DIRS = {
    "waitfor": "initkits/waitfor",
    "logship": "sidecars/logship",
    "gitsync": "sidecars/gitsync",
    "reloader": "sidecars/reloader",
    "metrics": "adapters/metrics",
    "logformat": "adapters/logformat",
    "proxy": "ambassadors/proxy",
}
PEER_HOST = "host.containers.internal"
DOWNWARD_LITERALS = {"metadata.namespace": "default", "spec.nodeName": "podman"}
_IMAGE = re.compile(r"REGISTRY/podkit-([a-z]+):[\w.\-]+")


class PodFailed(Exception):
    """Something in the pod died: no point in waiting any longer."""


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
    res = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and res.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {res.stderr.strip()}")
    return res.stdout


def written_programs() -> list[str]:
    return [p for p in PROGRAMS if (ROOT / PACKAGE_DIRS[p] / "__init__.py").exists()]


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except (OSError, AssertionError, ValueError) as e:
            last_error = e
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what} (last error: {last_error})"
    )


def _probe_port(c: dict[str, Any]) -> int | None:
    port = c.get("startupProbe", {}).get("httpGet", {}).get("port")
    named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    port = named.get(port, port)
    return port if isinstance(port, int) else None


def kube_for_podman(
    text: str, images: dict[str, str]
) -> tuple[str, list[str], list[str], dict[str, int]]:
    """The podman-ready YAML, the pod's sidecar names, its app container names,
    and each sidecar's startupProbe port."""
    text = _IMAGE.sub(lambda m: images[m[1]], text)
    text = text.replace("python:3.12-slim", BASE_IMAGE)
    out: list[dict[str, Any]] = []
    sidecars: list[str] = []
    apps: list[str] = []
    probes: dict[str, int] = {}
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc["kind"] == "Job":
            template = doc["spec"]["template"]
            doc = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {**template.get("metadata", {}), "name": doc["metadata"]["name"]},
                "spec": template["spec"],
            }
        if doc["kind"] == "Pod":
            spec = doc["spec"]
            inits = spec.get("initContainers", [])
            native = [c for c in inits if c.get("restartPolicy") == "Always"]
            spec["initContainers"] = [c for c in inits if c not in native]
            if not spec["initContainers"]:
                del spec["initContainers"]
            apps += [c["name"] for c in spec["containers"]]
            sidecars += [c["name"] for c in native]
            for c in native:
                del c["restartPolicy"]
                if (port := _probe_port(c)) is not None:
                    probes[c["name"]] = port
            spec["containers"] = [*native, *spec["containers"]]
            for c in [*spec.get("initContainers", []), *spec["containers"]]:
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    c.pop(probe, None)
                # podman publishes every containerPort on all the host's
                # interfaces; the tests reach the pod by its IP instead.
                c.pop("ports", None)
                # podman 4.3's Downward API knows metadata.name but not the
                # namespace or node: give those the values a pod would see.
                for env in c.get("env", []):
                    ref = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                    if ref in DOWNWARD_LITERALS:
                        env.pop("valueFrom")
                        env["value"] = DOWNWARD_LITERALS[ref]
            # Keep finished init containers (podman's default removes them) so
            # the tests can read their exit codes and logs.
            annotations = doc["metadata"].setdefault("annotations", {})
            annotations["io.podman.annotations.init.container.type"] = "always"
            # A Pod that is not a Job's would restart exited containers; the
            # tests want to see an exit, not a restart loop.
            spec["restartPolicy"] = "Never"
        out.append(doc)
    return yaml.safe_dump_all(out, sort_keys=False), sidecars, apps, probes


@dataclass
class Pod:
    name: str
    sidecars: list[str]
    apps: list[str]
    yaml_path: Path
    # kube play runs the init containers before it returns: it runs in the
    # background so the test can watch an init container that is waiting.
    play: subprocess.Popen[str] | None = None
    probes: dict[str, int] = field(default_factory=dict)  # sidecar -> startupProbe port
    exit_codes: dict[str, int] = field(default_factory=dict)
    # Logs captured when a container exited: podman removes finished init
    # containers soon after.
    final_logs: dict[str, str] = field(default_factory=dict)

    def ctr(self, container: str) -> str:
        return f"{self.name}-{container}"

    def inspect(self, container: str) -> dict[str, Any]:
        return dict(json.loads(podman("inspect", self.ctr(container)))[0])

    def state(self, container: str) -> dict[str, Any]:
        return dict(self.inspect(container)["State"])

    def running(self, container: str) -> bool:
        try:
            return bool(self.state(container)["Running"])
        except AssertionError:  # not even created yet
            return False

    def logs(self, container: str) -> str:
        env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
        res = subprocess.run(
            ["podman", "logs", self.ctr(container)],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        return res.stdout + res.stderr

    def records(self, container: str) -> list[dict[str, Any]]:
        """The JSON lines a container printed (podkit logs, logformat output)."""
        out = []
        text = self.final_logs.get(container) or self.logs(container)
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    @property
    def ip(self) -> str:
        infra = json.loads(podman("pod", "inspect", self.name))
        if isinstance(infra, list):
            infra = infra[0]
        infra_id = infra.get("InfraContainerID") or infra.get("InfraContainerId")
        if not infra_id:
            raise AssertionError(f"pod {self.name} has no infra container yet")
        nets = json.loads(podman("inspect", infra_id))[0]["NetworkSettings"]
        return str(nets["Networks"][NETWORK]["IPAddress"])

    def url(self, port: int, path: str) -> str:
        return f"http://{self.ip}:{port}{path}"

    def wait_ready(self, port: int, timeout: float = 60) -> None:
        """What a startupProbe on /readyz does, from outside the pod. A sidecar
        that exited meanwhile fails the test at once, with its logs."""

        def ready() -> bool:
            for side in self.sidecars:
                try:
                    st = self.state(side)
                except AssertionError:
                    continue  # not created yet
                if st["Status"] in ("exited", "stopped"):
                    raise PodFailed(
                        f"{self.ctr(side)} exited {st['ExitCode']}:\n{self.logs(side)[-3000:]}"
                    )
            return http_get(self.url(port, "/readyz"))[0] == 200

        wait_for(ready, timeout, f"{self.name}: /readyz on port {port}")

    def wait_exited(self, container: str, timeout: float = 60) -> int:
        def state() -> dict[str, Any] | None:
            try:
                s = self.state(container)
            except AssertionError:  # not created yet (kube play still running inits)
                return None
            if s["Status"] not in ("exited", "stopped"):
                return None
            self.final_logs[container] = self.logs(container)
            return s

        st = wait_for(
            state,
            timeout,
            f"{self.ctr(container)} to exit",
        )
        return int(st["ExitCode"])

    def finish(self, timeout: float = 120) -> dict[str, int]:
        """The kubelet's end of a pod with native sidecars: after every app
        container has exited, SIGTERM each sidecar in reverse order, waiting for
        it (within the grace period) before the next. Returns every exit code."""
        # A kubelet starts the app only once each sidecar's startupProbe passed;
        # podman starts them together, so a quick app may be done before a
        # sidecar is up. Signalling a sidecar still starting would test nothing.
        for side in self.sidecars:
            if side in self.probes:
                self.wait_ready(self.probes[side], timeout)
        for app in self.apps:
            self.exit_codes[app] = self.wait_exited(app, timeout)
        for side in reversed(self.sidecars):
            podman("stop", "--time", "30", self.ctr(side), timeout=60)
            self.exit_codes[side] = self.wait_exited(side, 40)
        return self.exit_codes

    def played(self, timeout: float = 180) -> None:
        """Wait for kube play to return (all init containers done, the rest started)."""
        assert self.play is not None
        _out, err = self.play.communicate(timeout=timeout)
        assert self.play.returncode == 0, f"kube play {self.yaml_path}: {err.strip()}"

    def down(self) -> None:
        if self.play is not None and self.play.poll() is None:
            self.play.kill()
            self.play.communicate()
        # Only this pod's volumes (its emptyDirs), not every unused one.
        volumes: set[str] = set()
        ids = podman("ps", "-a", "-q", "--filter", f"pod={self.name}", check=False).split()
        if ids:
            for info in json.loads(podman("inspect", *ids, check=False) or "[]"):
                for m in info.get("Mounts", []):
                    if m.get("Type") == "volume" and m.get("Name"):
                        volumes.add(m["Name"])
        podman("pod", "rm", "--force", "--time", "5", self.name, check=False, timeout=60)
        for v in volumes:
            podman("volume", "rm", "--force", v, check=False)


def play(manifest: Path, replace: dict[str, str], images: dict[str, str], tmp: Path) -> Pod:
    text = manifest.read_text()
    for old, new in replace.items():
        assert old in text, f"{manifest}: {old!r} not found (did the example change?)"
        text = text.replace(old, new)
    kube, sidecars, apps, probes = kube_for_podman(text, images)
    path = tmp / f"{manifest.parent.name}.podman.yaml"
    path.write_text(kube)
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(kube) if d and d["kind"] == "Pod"]
    assert len(names) == 1
    # A pod left over from an interrupted run would make kube play fail.
    podman("pod", "rm", "--force", "--time", "0", names[0], check=False)
    proc = subprocess.Popen(
        ["podman", "kube", "play", "--network", NETWORK, str(path)],
        env={**os.environ, "CONTAINERS_CONF": str(CONF)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pod = Pod(names[0], sidecars, apps, path, proc, probes)

    def exists() -> bool:
        if proc.poll() not in (None, 0):
            pod.played()  # raises with kube play's error
        return (
            subprocess.run(
                ["podman", "pod", "exists", pod.name],
                env={**os.environ, "CONTAINERS_CONF": str(CONF)},
            ).returncode
            == 0
        )

    wait_for(exists, 60, f"pod {pod.name} to be created")
    return pod
