"""Run the examples/ manifests as real pods with `podman kube play`.

What the harness changes in a manifest, and why (podman 4.3 is not a kubelet):

- Every container becomes a classic container of a pod created with
  `kube play --start=false`, and the harness starts them itself in the
  kubelet's order (`Pod._start_in_order`): podman 4.3 treats a native sidecar
  (`restartPolicy: Always`) as an init container that never finishes, and
  starts classic containers all at once. So: each plain init container runs
  to completion (exit 0) before the next entry of `initContainers` starts;
  each native sidecar is started and, if it has an httpGet startupProbe,
  probed on `/readyz` until it answers 200 before the next entry starts; the
  app containers start together after that. The kubelet's shutdown order is
  emulated by `Pod.finish()`: once the app containers have exited, the
  sidecars get SIGTERM in reverse order. docs/images.md lists what is not
  emulated.
- Each pod gets one more container, `podkit-e2e-keeper` (the pause image),
  started first and never stopped by the harness: podman 4.3 plays every
  kube pod with the exit policy "stop" (hard-coded), so when a container
  exits and every other one is exited or *stopping*, podman stops the whole
  pod, which sends the sidecar the harness is stopping a second SIGTERM. A
  kubelet sends one; podkit's runner takes a second one as "exit now" (a
  CI run saw logship exit 143 after the proxy's exit raced its stop). With
  the keeper running, some container always runs, and podman leaves the
  pod's end to the harness, as a kubelet's pod would.
- `podkit.dev/*` annotations are removed: podman 4.3 refuses annotation
  values longer than 63 characters, which Kubernetes allows, and they are
  the input of `podkit inject`, not something a running pod reads.
- Probes are removed: podman turns httpGet probes into `curl` health checks
  run inside the container (the images have no curl, by design). The tests
  poll `/readyz` from outside instead, which is what a startupProbe does.
- A Job, Deployment, StatefulSet, DaemonSet or ReplicaSet becomes its pod
  template as a Pod named after it (kube play has no Job; one replica is
  what the tests look at).
- Image names: `REGISTRY/podkit-<program>:<version>` -> the images of this
  run, by their reference in the tier's own registry (`127.0.0.1:PORT/podkit/
  podkit-<program>:<version>`, where conftest published them and removed
  the local tags), so `kube play` pulls them as a kubelet would; the apps'
  `python:3.12-slim` -> the local base image (no outside registry here).
- Service names of peers (a database, a git server, Loki, an upstream) ->
  `host.containers.internal:<port>`: the peers run on the host, bound to the
  gateway address of the e2e bridge network, which the pod reaches under
  that name. The pod has its own network namespace like a real pod; nothing
  is published on the host's other interfaces.

The harness owns the network's lifetime (`clean_state`, `network_up`): it
removes whatever an earlier run left (the tier's pods, the holder container,
the network), creates the network, and keeps its bridge up for the whole
session with a holder container, so the gateway address the peers bind to
exists before any pod starts. `python -m tests.e2e.harness clean` (`make
e2e-clean`) does the removal alone.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
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
# Keeps the bridge (and the gateway address on it) up while no pod runs.
HOLDER = "podkit-e2e-net"
PAUSE_IMAGE = "localhost/podkit-pause:bookworm"
# A container of each pod that runs until the pod is removed: it keeps
# podman's pod exit policy from stopping the pod (the module docstring says why).
KEEPER = "podkit-e2e-keeper"
TAG = "e2e"
# podkit's own programs, as pyproject.toml's entry points declare them (the one list)
PROGRAMS = tuple(
    subprocess.run(
        [str(ROOT / "images" / "programs.sh")], capture_output=True, text=True, check=True
    ).stdout.split()
)
PEER_HOST = "host.containers.internal"
DOWNWARD_LITERALS = {"metadata.namespace": "default", "spec.nodeName": "podman"}
# Kinds whose pod template the harness plays as one Pod.
WORKLOADS = ("Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
_IMAGE = re.compile(r"REGISTRY/podkit-([a-z]+):[\w.\-]+")
# What the tier pulled from its own registry (on a loopback port of the run).
_PULLED = re.compile(r"^127\.0\.0\.1:\d+/podkit/podkit-[a-z]+:")


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


@dataclass(frozen=True)
class Step:
    """One entry of the pod's start order: a plain init container (run to
    completion), a native sidecar (started, then probed if it has a
    startupProbe on an httpGet port) or the app containers (started together)."""

    kind: str  # "init" | "sidecar" | "apps"
    names: tuple[str, ...]
    probe_port: int | None = None


def _downward_files(doc: dict[str, Any], tmp: Path) -> None:
    """podman 4.3 has no downwardAPI volume: each becomes a hostPath directory
    holding the files the kubelet would write (labels and annotations as
    key="value" lines, sorted), from the pod's own metadata."""
    meta = doc.get("metadata", {})
    for vol in doc["spec"].get("volumes", []):
        items = vol.pop("downwardAPI", {}).get("items")
        if items is None:
            continue
        where = tmp / f"downward-{meta.get('name', 'pod')}-{vol['name']}"
        where.mkdir(parents=True, exist_ok=True)
        for item in items:
            field_path = item["fieldRef"]["fieldPath"]
            value = meta.get(field_path.removeprefix("metadata."), {})
            text = (
                "".join(f"{k}={json.dumps(str(v))}\n" for k, v in sorted(value.items()))
                if isinstance(value, dict)
                else str(value)
            )
            (where / item["path"]).write_text(text)
        where.chmod(0o755)
        vol["hostPath"] = {"path": str(where), "type": "Directory"}


def kube_for_podman(
    text: str, images: dict[str, str], tmp: Path | None = None
) -> tuple[str, list[Step]]:
    """The podman-ready YAML and the kubelet's start order for its one pod
    (downwardAPI volumes become files under tmp)."""
    text = _IMAGE.sub(lambda m: images[m[1]], text)
    text = text.replace("python:3.12-slim", BASE_IMAGE)
    out: list[dict[str, Any]] = []
    steps: list[Step] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc["kind"] in WORKLOADS:
            template = doc["spec"]["template"]
            doc = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {**template.get("metadata", {}), "name": doc["metadata"]["name"]},
                "spec": template["spec"],
            }
        if doc["kind"] == "Pod":
            # podman 4.3 refuses annotation values over 63 characters (a
            # label-value rule Kubernetes does not apply to annotations), and
            # podkit.dev/* ones are what injection read: the pod never uses them.
            meta = doc.setdefault("metadata", {})
            meta["annotations"] = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if not k.startswith("podkit.dev/")
            }
            spec = doc["spec"]
            if tmp is not None:
                _downward_files(doc, tmp)
            inits = spec.pop("initContainers", [])
            for c in inits:
                if c.pop("restartPolicy", None) == "Always":
                    steps.append(Step("sidecar", (c["name"],), _probe_port(c)))
                else:
                    steps.append(Step("init", (c["name"],)))
            steps.append(Step("apps", tuple(c["name"] for c in spec["containers"])))
            # All classic: the harness starts them in order (Pod._start_in_order).
            spec["containers"] = [*inits, *spec["containers"]]
            assert all(c["name"] != KEEPER for c in spec["containers"]), KEEPER
            for c in spec["containers"]:
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
            # Added after the loop above: it needs none of what it changes.
            spec["containers"].append({"name": KEEPER, "image": PAUSE_IMAGE})
            # A Pod that is not a Job's would restart exited containers; the
            # tests want to see an exit, not a restart loop.
            spec["restartPolicy"] = "Never"
        out.append(doc)
    return yaml.safe_dump_all(out, sort_keys=False), steps


@dataclass
class Pod:
    name: str
    steps: list[Step]
    yaml_path: Path
    exit_codes: dict[str, int] = field(default_factory=dict)
    # Logs captured when a container exited.
    final_logs: dict[str, str] = field(default_factory=dict)
    # The kubelet's start order runs in the background, so a test can watch an
    # init container that is waiting; played() waits for it and re-raises.
    _starter: threading.Thread | None = None
    _start_error: BaseException | None = None

    @property
    def sidecars(self) -> list[str]:
        return [s.names[0] for s in self.steps if s.kind == "sidecar"]

    @property
    def apps(self) -> list[str]:
        return [n for s in self.steps if s.kind == "apps" for n in s.names]

    @property
    def probes(self) -> dict[str, int]:  # sidecar -> startupProbe port
        return {
            s.names[0]: s.probe_port
            for s in self.steps
            if s.kind == "sidecar" and s.probe_port is not None
        }

    def start(self, timeout: float = 180) -> None:
        def run() -> None:
            try:
                self._start_in_order(timeout)
            except BaseException as e:  # handed to played()
                self._start_error = e

        self._starter = threading.Thread(target=run, name=f"start-{self.name}", daemon=True)
        self._starter.start()

    def _start_in_order(self, timeout: float) -> None:
        """What the kubelet does with initContainers (plain and native) before
        it starts the app containers. The keeper first: before any
        container can exit and find no other one running."""
        podman("start", self.ctr(KEEPER), timeout=60)
        for step in self.steps:
            if step.kind == "init":
                (name,) = step.names
                podman("start", self.ctr(name), timeout=60)
                code = self.wait_exited(name, timeout)
                if code != 0:
                    raise PodFailed(
                        f"init container {self.ctr(name)} exited {code}:\n"
                        f"{self.final_logs.get(name, '')[-3000:]}"
                    )
            elif step.kind == "sidecar":
                podman("start", self.ctr(step.names[0]), timeout=60)
                if step.probe_port is not None:
                    self.wait_ready(step.probe_port, timeout)
            else:
                podman("start", *(self.ctr(n) for n in step.names), timeout=60)

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
        # Every container was started in the kubelet's order (sidecars probed first).
        self.played(timeout)
        for app in self.apps:
            self.exit_codes[app] = self.wait_exited(app, timeout)
        for side in reversed(self.sidecars):
            podman("stop", "--time", "30", self.ctr(side), timeout=60)
            self.exit_codes[side] = self.wait_exited(side, 40)
        return self.exit_codes

    def exit_report(self, codes: dict[str, int] | None = None, tail: int = 4000) -> str:
        """An exit-code assertion's message: the codes, then the final logs of
        each container that did not exit 0 (what it said last is why)."""
        codes = self.exit_codes if codes is None else codes
        out = [repr(codes)]
        for name, code in codes.items():
            if code != 0:
                text = self.final_logs.get(name) or self.logs(name)
                out.append(f"--- {self.ctr(name)} exited {code}; its last logs:\n{text[-tail:]}")
        return "\n".join(out)

    def played(self, timeout: float = 180) -> None:
        """Wait until every container has been started in order (init
        containers done, sidecars probed, apps started); re-raise what failed."""
        assert self._starter is not None
        self._starter.join(timeout)
        assert not self._starter.is_alive(), f"{self.name}: not started within {timeout}s"
        if self._start_error is not None:
            raise self._start_error

    def down(self) -> None:
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


def replaced(manifest: Path, replace: dict[str, str]) -> str:
    """The manifest's text with each peer's address replaced by the tier's."""
    text = manifest.read_text()
    for old, new in replace.items():
        assert old in text, f"{manifest}: {old!r} not found (did the example change?)"
        text = text.replace(old, new)
    return text


def play(manifest: Path, replace: dict[str, str], images: dict[str, str], tmp: Path) -> Pod:
    return play_text(replaced(manifest, replace), manifest.parent.name, images, tmp)


def play_text(text: str, label: str, images: dict[str, str], tmp: Path) -> Pod:
    """Play one pod's manifest (a Pod or a workload with a pod template)."""
    kube, steps = kube_for_podman(text, images, tmp)
    path = tmp / f"{label}.podman.yaml"
    path.write_text(kube)
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(kube) if d and d["kind"] == "Pod"]
    assert len(names) == 1
    # A pod left over from an interrupted run would make kube play fail.
    podman("pod", "rm", "--force", "--time", "0", names[0], check=False)
    # Created, not started: the harness starts the containers in the kubelet's order.
    podman("kube", "play", "--start=false", "--network", NETWORK, str(path), timeout=180)
    # Each container runs the image its spec names, pulled by that reference.
    wanted = {
        f"{names[0]}-{c['name']}": c["image"]
        for d in yaml.safe_load_all(kube)
        if d and d["kind"] == "Pod"
        for c in d["spec"]["containers"]
    }
    got = dict(
        line.split(" ", 1)
        for line in podman(
            "ps", "-a", "--filter", f"pod={names[0]}", "--format", "{{.Names}} {{.Image}}"
        ).splitlines()
        if line.split(" ", 1)[0] in wanted
    )
    assert got == wanted, (got, wanted)
    pod = Pod(names[0], steps, path)
    pod.start()
    return pod


def example_pod_names() -> set[str]:
    """The pod names the tier plays: every Pod and workload in examples/."""
    names = set()
    for path in (ROOT / "examples").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("Pod", *WORKLOADS):
                names.add(str(doc["metadata"]["name"]))
    return names


def clean_state() -> None:
    """Remove whatever the tier (or an interrupted run of it) left: its pods,
    the holder container, the network, its registry and the names pulled from
    it. Leaves the base and pause images and the layer cache (on purpose)."""
    on_network = podman("pod", "ps", "-q", "--filter", f"network={NETWORK}", check=False).split()
    for pod in sorted(example_pod_names()) + on_network:
        podman("pod", "rm", "--force", "--time", "0", pod, check=False, timeout=60)
    podman("rm", "--force", "--time", "0", HOLDER, check=False, timeout=60)
    for ctr in podman("ps", "-a", "-q", "--filter", f"network={NETWORK}", check=False).split():
        podman("rm", "--force", "--time", "0", ctr, check=False, timeout=60)
    podman("network", "rm", "--force", NETWORK, check=False, timeout=60)
    # The tier's registry and what was pulled from it (a new port every run).
    from tests.e2e.peers import stop_leftover_registry  # peers uses this module

    stop_leftover_registry()
    # Untagged, not removed: they are the build's own images (same ID), and
    # `podman rmi` would remove the build cache's last stage with them.
    for ref in podman("images", "--format", "{{.Repository}}:{{.Tag}}", check=False).split():
        if _PULLED.match(ref):
            podman("untag", ref, check=False, timeout=60)


def network_up() -> tuple[str, str]:
    """Create the network and keep its bridge up with a holder container, so
    peers can bind to the gateway before any pod runs. (gateway, subnet)."""
    podman("network", "create", NETWORK)
    podman("run", "--detach", "--name", HOLDER, "--network", NETWORK, PAUSE_IMAGE)
    info = json.loads(podman("network", "inspect", NETWORK))[0]
    gateway, subnet = str(info["subnets"][0]["gateway"]), str(info["subnets"][0]["subnet"])

    def bindable() -> bool:
        with socket.socket(socket.AF_INET6 if ":" in gateway else socket.AF_INET) as s:
            s.bind((gateway, 0))
        return True

    wait_for(bindable, 30, f"the gateway address {gateway} on the {NETWORK} bridge")
    return gateway, subnet


if __name__ == "__main__":
    if sys.argv[1:] != ["clean"]:
        sys.exit("usage: python -m tests.e2e.harness clean")
    clean_state()
