"""Session set-up of the e2e tier: the base image, the program images, the network.

Everything is built from this checkout: the base image with debootstrap
(cached by tag; images/base.sh), the program images with images/build.sh
under a tag of their own (`e2e`), removed again at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import (
    CONF,
    ROOT,
    TAG,
    Pod,
    clean_state,
    network_up,
    play,
    podman,
    written_programs,
)
from tests.helpers import missing


@dataclass
class E2E:
    gateway: str  # the host's address on the e2e bridge: peers bind here
    subnet: str  # the bridge's subnet: where the pods' connections come from
    images: dict[str, str]  # program -> image built for this session
    tmp: Path

    def require(self, *programs: str) -> None:
        absent = [p for p in programs if p not in self.images]
        if absent:
            missing(f"program(s) not written yet, no image: {', '.join(absent)}")

    def play(self, manifest: str, replace: dict[str, str]) -> Pod:
        return play(ROOT / "examples" / manifest, replace, self.images, self.tmp)


def _timed(config: pytest.Config, what: str, cmd: list[str], timeout: float) -> None:
    start = time.monotonic()
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
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
    programs = [*written_programs(), "base"]
    built: dict[str, str] = {p: f"localhost/podkit-{p}:{TAG}" for p in programs}
    if os.environ.get("PODKIT_E2E_REUSE_IMAGES") == "1":  # for iterating on the tests
        env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
        programs = [
            p
            for p in programs
            if subprocess.run(["podman", "image", "exists", built[p]], env=env).returncode != 0
        ]
    try:
        if programs:
            _timed(
                pytestconfig,
                f"program images ({' '.join(programs)})",
                ["env", f"TAG={TAG}", str(ROOT / "images/build.sh"), *programs],
                900,
            )
        # Nothing from an earlier run is relied on, or left behind.
        clean_state()
        gateway, subnet = network_up()
        yield E2E(gateway, subnet, built, tmp_path_factory.mktemp("e2e"))
    finally:
        clean_state()
        # PODKIT_E2E_KEEP_IMAGES=1 keeps them, to look inside after a failure.
        for image in [] if os.environ.get("PODKIT_E2E_KEEP_IMAGES") == "1" else built.values():
            podman("rmi", "--force", image, check=False)
        # Dangling build layers stay as cache for the next run; the base
        # image stays too (it is cached by tag on purpose).
