"""Every pod-spec snippet in the README and docs/ runs in its own image as written.

Each podkit container of a YAML snippet is started from the image built for
this session with the snippet's args and env, on a read-only root as user
65532, with each of its volumeMounts: an emptyDir is an empty writable
directory, a configMap or secret volume holds the stand-in files below (what
the snippet's reader is told to put there). It must not fail on its
configuration (exit 2), and a program whose snippet has an httpGet probe must
answer it at the pod IP with the image's own defaults (the admin address and
state directory the image sets), as the kubelet would probe it.

Peers the snippets name (Loki, an API, a git server, a database) do not
exist here: programs that need one to get ready (waitfor, gitsync) are only
required to keep waiting rather than fail.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import E2E
from tests.e2e.harness import NETWORK, ROOT, PodFailed, http_get, podman, wait_for
from tests.peers.tls import make_ca

_IMAGE = re.compile(r"REGISTRY/podkit-([a-z]+):[\w.\-]+")
# Programs that cannot be ready without their peer (a database, a git server,
# the Kubernetes API, a webhook certificate): they must keep waiting.
NEED_A_PEER = {"waitfor", "gitsync", "kubefiles", "injector"}
# Stand-ins for what a snippet's reader mounts from a Secret or ConfigMap.
TLS = "tls"  # replaced by a throwaway CA's files
FILES: dict[str, str] = {
    "/etc/git-secret/token": "s3cret-token\n",
    "/etc/git-secret/webhook": "s3cret-webhook\n",
    "/var/run/secrets/api/token": "s3cret-token\n",
    "/var/run/secrets/api/basic-auth": "app:s3cret\n",  # docs/proxy.md, credentials
    "/var/run/secrets/api/api-key": "s3cret-key\n",
    "/var/run/secrets/oauth/client-secret": "s3cret\n",
    "/var/run/secrets/jwt/tls.key": TLS,
    "/secrets/db/password": "s3cret\n",
    "/etc/api-tls/ca.crt": TLS,
    "/etc/api-tls/tls.crt": TLS,
    "/etc/api-tls/tls.key": TLS,
    "/tls/ca.crt": TLS,  # docs/proxy.md, TLS and mTLS on the listener
    "/tls/tls.crt": TLS,
    "/tls/tls.key": TLS,
    "/etc/prometheus/prometheus.yml": "global: {scrape_interval: 15s}\n",
    "/etc/metrics/adapter.yaml": "sources:\n  - type: statsd\n    udp: 127.0.0.1:9125\n",
}


@dataclass
class Snippet:
    where: str  # doc:line
    container: dict[str, Any]
    volumes: dict[str, dict[str, Any]]

    @property
    def program(self) -> str:
        m = _IMAGE.fullmatch(self.container["image"])
        assert m, self.container["image"]
        return m[1]

    @property
    def probe_port(self) -> int | None:
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = self.container.get(kind, {}).get("httpGet", {}).get("port")
            if isinstance(port, int):
                return port
        return None


def _containers(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("image"), str) and _IMAGE.fullmatch(node["image"]):
            found.append(node)
        for value in node.values():
            found += _containers(value)
    elif isinstance(node, list):
        for value in node:
            found += _containers(value)
    return found


def _volumes(node: Any) -> dict[str, dict[str, Any]]:
    if isinstance(node, dict):
        out = {v["name"]: v for v in node.get("volumes", []) if isinstance(v, dict)}
        for value in node.values():
            out.update(_volumes(value))
        return out
    if isinstance(node, list):
        merged: dict[str, dict[str, Any]] = {}
        for value in node:
            merged.update(_volumes(value))
        return merged
    return {}


def snippets() -> list[Snippet]:
    out = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text()
        for m in re.finditer(r"^```yaml\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, m.start()) + 1
            try:
                parsed = list(yaml.safe_load_all(m[1]))
            except yaml.YAMLError as e:
                raise AssertionError(f"{doc.name}:{line}: not YAML: {e}") from None
            volumes = _volumes(parsed)
            for c in _containers(parsed):
                out.append(Snippet(f"{doc.relative_to(ROOT)}:{line}", c, volumes))
    return out


SNIPPETS = snippets()


def test_the_docs_have_snippets_for_every_program_image() -> None:
    programs = {s.program for s in SNIPPETS}
    assert {"waitfor", "logship", "gitsync", "reloader", "metrics", "logformat", "proxy"} <= (
        programs
    ), programs


def _mounts(s: Snippet, world: Path, tls_dir: Path) -> list[str]:
    args = []
    for i, m in enumerate(s.container.get("volumeMounts", [])):
        # A volume the snippet does not declare is whatever its reader
        # mounts there: the stand-in files, if any name that path.
        volume = s.volumes.get(m["name"], {})
        host = world / f"{i}-{m['name']}"
        host.mkdir()
        host.chmod(0o1777)  # an emptyDir with fsGroup: writable by the pod's user
        mount_path = m["mountPath"].rstrip("/")
        for path, content in FILES.items():
            if path.startswith(mount_path + "/") and "emptyDir" not in volume:
                dest = host / path[len(mount_path) + 1 :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                if content == TLS:
                    src = {"ca.crt": "ca.pem", "tls.crt": "client.pem", "tls.key": "client.key"}
                    shutil.copy(tls_dir / src[dest.name], dest)
                else:
                    dest.write_text(content)
                dest.chmod(0o644)
        ro = ":ro" if m.get("readOnly") else ""
        args += ["-v", f"{host}:{mount_path}{ro}"]
    return args


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"{s.where}-{s.program}" for s in SNIPPETS])
def test_snippet_runs_in_its_image(e2e: E2E, snippet: Snippet, tmp_path: Path) -> None:
    e2e.require(snippet.program)
    tls = make_ca(tmp_path / "tls")
    for f in tls.__dict__.values():
        Path(f).chmod(0o644)
    c = snippet.container
    env = [f"{e['name']}={e['value']}" for e in c.get("env", []) if "value" in e]
    name = f"snippet-{snippet.program}-{abs(hash(snippet.where)) % 10**6}"
    (tmp_path / "world").mkdir()
    cmd = [
        "run",
        "--detach",
        "--name",
        name,
        "--network",
        NETWORK,
        # readOnlyRootFilesystem: no tmpfs that the kubelet would not give either.
        "--read-only",
        "--read-only-tmpfs=false",
        "--user",
        "65532:65532",
        *[a for e in env for a in ("--env", e)],
        *_mounts(snippet, tmp_path / "world", tls.ca.parent),
        e2e.images[snippet.program],
        *[str(a) for a in c.get("args", [])],
    ]
    podman(*cmd)
    try:

        def inspect() -> dict[str, Any]:
            return dict(json.loads(podman("inspect", name))[0])

        def logs() -> str:
            return podman("logs", name, check=False)[-3000:]

        port = snippet.probe_port
        if snippet.program in NEED_A_PEER or port is None:
            # No peer, nothing to probe: it may wait or give up on the peer
            # (exit 1, as `gitsync --one-time` does), but its configuration
            # must be accepted: no exit 2, no traceback. Five seconds to
            # refuse it, fewer when it has already exited.
            deadline = time.monotonic() + 5
            while inspect()["State"]["Running"] and time.monotonic() < deadline:
                time.sleep(0.25)
            st = inspect()["State"]
            assert st["Running"] or st["ExitCode"] != 2, f"{snippet.where}: exit 2:\n{logs()}"
            assert "Traceback" not in logs(), logs()
        else:

            def ready() -> bool:
                info = inspect()
                if not info["State"]["Running"]:
                    code = info["State"]["ExitCode"]
                    raise PodFailed(f"{snippet.where}: exited {code}:\n{logs()}")
                ip = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
                return http_get(f"http://{ip}:{port}/readyz")[0] == 200

            try:
                wait_for(ready, 60, f"{snippet.where}: /readyz on port {port} at the pod IP")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{logs()}") from None
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
