"""A custom sidecar's image, built FROM podkit-base with the docs' own Dockerfile."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.e2e.conftest import E2E
from tests.e2e.harness import NETWORK, ROOT, PodFailed, http_get, podman, wait_for


def test_the_documented_three_line_dockerfile_builds_and_runs(e2e: E2E, tmp_path: Path) -> None:
    e2e.require("base")
    doc = (ROOT / "docs/custom-sidecar.md").read_text()
    dockerfile = re.search(r"^```dockerfile\n(.*?)^```", doc, re.S | re.M)
    assert dockerfile, "docs/custom-sidecar.md has no dockerfile block"
    text = re.sub(r"REGISTRY/podkit-base:\S+", e2e.images["base"], dockerfile[1])
    assert len(text.strip().splitlines()) == 3, text
    (tmp_path / "Containerfile").write_text(text)
    shutil.copy(ROOT / "examples/custom_sidecar.py", tmp_path / "custom_sidecar.py")
    image = "localhost/podkit-e2e-custom:e2e"
    podman("build", "--quiet", "-t", image, str(tmp_path), timeout=300)
    name = "podkit-e2e-custom"
    podman("rm", "--force", "--time", "0", name, check=False)
    try:
        podman(
            "run", "--detach", "--name", name, "--network", NETWORK,
            "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
            image, "--admin-addr", "0.0.0.0:9400", "--every", "200ms",
        )  # fmt: skip

        def ready() -> bool:
            info = json.loads(podman("inspect", name))[0]
            if not info["State"]["Running"]:
                raise PodFailed(podman("logs", name, check=False))
            assert info["Config"]["User"] == "65532:65532"
            ip = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
            return http_get(f"http://{ip}:9400/readyz")[0] == 200

        wait_for(ready, 60, "the custom sidecar's /readyz at the pod IP")
        podman("stop", "--time", "10", name)
        assert json.loads(podman("inspect", name))[0]["State"]["ExitCode"] == 0
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
        podman("rmi", "--force", image, check=False)
