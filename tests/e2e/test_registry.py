"""What `make publish` put in the tier's registry, read back with skopeo: each
image's OCI labels and the digest publish recorded, under both tags, and the
image's CycloneDX SBOM pushed next to it (the same bytes as the SBOM inside
the image)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.e2e.conftest import E2E
from tests.e2e.harness import podman

# What each image's virtualenv must list beyond podkit's core (its extras).
EXTRAS = {
    "logship": "aiohttp",
    "gitsync": "GitPython",
    "proxy": "uvloop",
    "reloader": "watchdog",
    "metrics": "aiohttp",
    "logformat": "watchdog",
}


def skopeo(*args: str) -> str:
    res = subprocess.run(
        ["skopeo", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, f"skopeo {' '.join(args)}: {res.stderr}"
    return res.stdout


def test_labels_and_digest_as_published(e2e: E2E) -> None:
    version, commit = e2e.published["version"], e2e.published["commit"]
    assert set(e2e.published["images"]) == set(e2e.images)
    for program, rec in e2e.published["images"].items():
        assert rec["repository"] == f"{e2e.registry}/podkit-{program}"
        assert rec["tags"] == [version, f"{version}-{commit}"]
        for tag in rec["tags"]:
            info = json.loads(
                skopeo("inspect", "--tls-verify=false", f"docker://{rec['repository']}:{tag}")
            )
            assert info["Digest"] == rec["digest"], (program, tag)
            labels = info["Labels"]
            assert labels["org.opencontainers.image.title"] == f"podkit-{program}"
            assert labels["org.opencontainers.image.version"] == version
            assert labels["org.opencontainers.image.revision"].startswith(commit[:12])
            assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
            assert labels["org.opencontainers.image.source"]
            assert labels["dev.podkit.sbom"] == "/opt/podkit/sbom.cdx.json"


def _sbom_from_registry(ref: str, tmp: Path) -> bytes:
    manifest = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
    assert manifest["artifactType"] == "application/vnd.cyclonedx+json", manifest
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cyclonedx+json", layer
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"dir:{tmp}")
    data = (tmp / layer["digest"].removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
    return data


def test_each_image_carries_its_sbom_and_the_registry_has_it_too(e2e: E2E, tmp_path: Path) -> None:
    for program, rec in e2e.published["images"].items():
        digest_tag = f"{rec['repository']}:{rec['digest'].replace(':', '-')}.sbom"
        assert digest_tag in rec["sbom"], rec
        pushed = [
            _sbom_from_registry(ref, tmp_path / f"{program}-{i}")
            for i, ref in enumerate(rec["sbom"])
        ]
        assert pushed[0] == pushed[1]
        # The SBOM in the registry is the one inside the image, read from the
        # image pulled by reference.
        inside = podman(
            "run", "--rm", "--read-only", "--network", "none",
            "--entrypoint", "/opt/podkit/bin/python", e2e.images[program],
            "-c", "import sys; sys.stdout.write(open('/opt/podkit/sbom.cdx.json').read())",
            timeout=120,
        )  # fmt: skip
        assert hashlib.sha256(pushed[0]).hexdigest() == rec["sbom_sha256"]
        assert inside.encode() == pushed[0], program
        bom: dict[str, Any] = json.loads(pushed[0])
        assert bom["bomFormat"] == "CycloneDX"
        assert bom["metadata"]["component"]["name"] == "podkit"
        names = {c["name"].lower() for c in bom["components"]}
        # From the image's own virtualenv: its program's extras, nothing of
        # the build (pip, the SBOM tool itself).
        assert "prometheus-client" in names or "prometheus_client" in names, names
        if program in EXTRAS:
            assert EXTRAS[program].lower() in names, (program, names)
        assert not names & {"pip", "setuptools", "cyclonedx-bom", "cyclonedx-python-lib"}, names
        assert ("gitpython" in names) == (program == "gitsync"), names
        # The Debian packages whose files the image holds (images/sbom-debian.py),
        # as pkg:deb purls; not those slim.sh left out of the image.
        debs = {
            c["name"]: c["purl"]
            for c in bom["components"]
            if str(c.get("purl", "")).startswith("pkg:deb/debian/")
        }
        assert {"python3.11-minimal", "libpython3.11-minimal", "libssl3", "libc6", "tini"} <= set(
            debs
        ), (program, sorted(debs))
        assert "distro=debian-12" in debs["libssl3"], debs["libssl3"]
        assert not set(debs) & {"apt", "dpkg", "perl-base", "coreutils", "bash"}, sorted(debs)
        assert ("git" in debs) == (program == "gitsync"), sorted(debs)
        assert ("python3-cryptography" in debs) == (program == "proxy"), sorted(debs)
        assert any(c["type"] == "operating-system" for c in bom["components"])


def test_every_blob_of_every_image_downloads_and_matches_its_digest(
    e2e: E2E, tmp_path: Path
) -> None:
    # The pods' pulls may reuse layers the build left in local storage (a warm
    # node does the same), so the pushed blobs themselves are fetched here:
    # skopeo verifies each blob against the manifest's digest.
    for program, rec in e2e.published["images"].items():
        out = tmp_path / program
        skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{rec['reference']}",
               f"dir:{out}")  # fmt: skip
        manifest = json.loads((out / "manifest.json").read_text())
        for blob in [manifest["config"], *manifest["layers"]]:
            data = (out / blob["digest"].removeprefix("sha256:")).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"], program
            assert len(data) == blob["size"], program
