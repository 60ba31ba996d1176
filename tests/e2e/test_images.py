"""The program images themselves: entrypoint, user, labels, contents, size."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.harness import CONF, PROGRAMS, podman

LABELS = ("source", "version", "revision", "licenses")


def run(image: str, *args: str, entrypoint: str | None = None) -> subprocess.CompletedProcess[str]:
    ep = ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(
        ["podman", "run", "--rm", "--read-only", "--network", "none", *ep, image, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
            "CONTAINERS_CONF": str(CONF),
            "CONTAINERS_REGISTRIES_CONF": os.environ["CONTAINERS_REGISTRIES_CONF"],
        },
    )


@pytest.mark.parametrize("program", PROGRAMS)
def test_image(e2e: E2E, program: str) -> None:
    e2e.require(program)
    image = e2e.images[program]
    # From the registry by reference: the local build's tag is gone.
    podman("pull", "--quiet", image, timeout=300)
    info = json.loads(podman("image", "inspect", image))[0]
    config = info["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    labels = config["Labels"]
    for key in LABELS:
        assert labels.get(f"org.opencontainers.image.{key}"), key
    # What every node pulls: at most 60 MB, 110 MB with git (docs/images.md). The
    # proxy carries `cryptography` (PyJWT's RS/ES/EdDSA signing for private_key_jwt
    # and --jwt-*, issue 18: ~15 MB, a compiled Rust library), over issue 19's bar.
    bar = {"gitsync": 110_000_000, "proxy": 75_000_000}.get(program, 60_000_000)
    assert info["Size"] <= bar, f"{info['Size'] / 1e6:.1f} MB, bar {bar / 1e6:.0f} MB"

    # The entrypoint is the program: --help is its own, on a read-only root.
    res = run(image, "--help")
    assert res.returncode == 0, res.stderr
    assert f"podkit {program}" in res.stdout, res.stdout[:300]

    # Only this program's extras; no pip; git only where gitsync needs it.
    script = (
        "import importlib.util as u, shutil, os; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('pip', 'setuptools', 'git', 'watchdog', 'uvloop')} | "
        "{'git-binary': shutil.which('git') is not None, 'uid': os.getuid()}))"
    )
    res = run(image, "-c", f"import json; {script}", entrypoint="/opt/podkit/bin/python")
    assert res.returncode == 0, res.stderr
    has = json.loads(res.stdout)
    assert has["uid"] == 65532
    assert not has["pip"] and not has["setuptools"], has
    assert has["git"] == has["git-binary"] == (program == "gitsync"), has
    assert has["uvloop"] == (program == "proxy"), has
    assert has["watchdog"] == (program in ("logship", "reloader", "metrics", "logformat")), has
