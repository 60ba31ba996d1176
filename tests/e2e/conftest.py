"""Session set-up of the e2e tier: the base image, the program images, a
registry, the network.

Everything is built from this checkout: the base image with debootstrap
(cached by tag; images/base.sh), the program images with images/build.sh
under a tag of their own (`e2e`). Then, as a release would: a real OCI
registry starts on 127.0.0.1 (Debian's docker-registry), `images/publish.py`
(`make publish`) pushes every image and its SBOM to it, and the local tags are
removed, so every pod pulls its images from the registry by reference, as a
kubelet would. The pulled names are removed at the end of the session; the
images stay, untagged, as the next run's layer cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    CONF,
    PROGRAMS,
    ROOT,
    TAG,
    Pod,
    clean_state,
    network_up,
    play,
    play_text,
    podman,
)
from tests.e2e.peers import Recorder, Registry
from tests.helpers import missing


@dataclass
class E2E:
    gateway: str  # the host's address on the e2e bridge: peers bind here
    subnet: str  # the bridge's subnet: where the pods' connections come from
    images: dict[str, str]  # program -> its reference in the registry, as a pod names it
    tmp: Path
    registry: str  # HOST:PORT/podkit, what `make publish` was given
    published: dict[str, Any]  # the record publish wrote (images/.build/digests.json)

    def require(self, *programs: str) -> None:
        absent = [p for p in programs if p not in self.images]
        if absent:
            missing(f"program(s) not written yet, no image: {', '.join(absent)}")

    def play(self, manifest: str, replace: dict[str, str]) -> Pod:
        return play(ROOT / "examples" / manifest, replace, self.images, self.tmp)

    def play_text(self, text: str, label: str) -> Pod:
        return play_text(text, label, self.images, self.tmp)


@pytest.fixture
def recorder(e2e: E2E) -> Iterator[Recorder]:
    """Loki (push API) and an HTTP upstream, on the bridge's gateway."""
    rec = Recorder(e2e.gateway).start()
    yield rec
    rec.stop()


def _timed(
    config: pytest.Config, what: str, cmd: list[str], timeout: float, **extra_env: str
) -> None:
    start = time.monotonic()
    env = {**os.environ, "CONTAINERS_CONF": str(CONF), **extra_env}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{what} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    # Through the terminal reporter: shown even when pytest captures output.
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(f"\n[e2e] {what}: {time.monotonic() - start:.1f}s")


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[E2E]:
    # What the host needs, and nothing more: tini, python and git are inside
    # the images. Each missing tool is named with its Debian package.
    for tool, package in (
        ("podman", "podman"),
        ("runc", "runc"),
        ("debootstrap", "debootstrap"),
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
    ):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None:
            missing(f"{tool} not installed (Debian package {package})")
    if os.geteuid() != 0:
        missing("the e2e tier needs root (debootstrap, rootful podman networking)")
    os.environ["CONTAINERS_CONF"] = str(CONF)
    _timed(
        pytestconfig,
        "base image (images/base.sh; cached by tag)",
        [str(ROOT / "images/base.sh")],
        900,
    )
    # base: podkit-base, what a custom sidecar's image is built FROM.
    programs = [*PROGRAMS, "base"]
    built: dict[str, str] = {p: f"localhost/podkit-{p}:{TAG}" for p in programs}
    # For iterating on the tests: images left by an earlier run with
    # PODKIT_E2E_REUSE_IMAGES=1 are not built again, and the local tags stay.
    reuse = os.environ.get("PODKIT_E2E_REUSE_IMAGES") == "1"
    to_build = programs
    if reuse:
        env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
        to_build = [
            p
            for p in programs
            if subprocess.run(["podman", "image", "exists", built[p]], env=env).returncode != 0
        ]
    # PODKIT_E2E_KEEP_IMAGES=1 keeps the local tags, to look inside after a failure.
    keep = reuse or os.environ.get("PODKIT_E2E_KEEP_IMAGES") == "1"
    registry: Registry | None = None
    try:
        if to_build:
            _timed(
                pytestconfig,
                f"program images ({' '.join(to_build)})",
                ["env", f"TAG={TAG}", str(ROOT / "images/build.sh"), *to_build],
                900,
            )
        # Nothing from an earlier run is relied on, or left behind.
        clean_state()
        gateway, subnet = network_up()
        tmp = tmp_path_factory.mktemp("e2e")
        (tmp / "registry").mkdir()
        registry = Registry(tmp / "registry").start()
        # Plain HTTP on loopback: every podman and skopeo call of the session
        # (kube play's pulls, run, build FROM) is told so by this file alone.
        os.environ["CONTAINERS_REGISTRIES_CONF"] = str(registry.registries_conf())
        repo = f"{registry.address}/podkit"
        digests = tmp / "digests.json"
        _timed(
            pytestconfig,
            f"make publish to the registry at {registry.address}",
            [str(ROOT / "images/publish.py"), *programs],
            600,
            REGISTRY=repo,
            TAG=TAG,
            TLS_VERIFY="false",
            DIGESTS=str(digests),
        )
        published = json.loads(digests.read_text())
        # From here on only the registry has them by name. Untagged, not
        # removed: `podman rmi` would take the build's last stage (its
        # dangling parents) along and the next run would rebuild it. A pull
        # still resolves the reference at the registry (manifest, config);
        # test_registry downloads and checks every blob.
        if not keep:
            for image in built.values():
                podman("untag", image)
        pulled = {p: f"{repo}/podkit-{p}:{published['version']}" for p in programs}
        yield E2E(gateway, subnet, pulled, tmp, repo, published)
    finally:
        if registry is not None:
            registry.stop()
        # Also removes what was pulled from the registry.
        clean_state()
        os.environ.pop("CONTAINERS_REGISTRIES_CONF", None)
        if not keep:  # a failed build or publish may have left them
            for image in built.values():
                podman("untag", image, check=False)
        # Dangling build layers stay as cache for the next run; the base
        # image stays too (it is cached by tag on purpose).
