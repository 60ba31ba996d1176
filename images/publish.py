#!/usr/bin/env python3
"""Push the images `make images` built to a registry, each with its SBOM, and
record what was pushed.

    REGISTRY=host:port/podkit images/publish.py [PROGRAM ...]     (= make publish)

For each image `localhost/podkit-<program>:<TAG>` (default: all programs and
podkit-base; TAG defaults to the version, as in images/build.sh):

1. `podman push` to `REGISTRY/podkit-<program>:<VERSION>-<COMMIT>`, recording
   the manifest digest podman reports (`--digestfile`);
2. `skopeo copy` of that manifest, unchanged, to `REGISTRY/podkit-<program>:<VERSION>`,
   so both tags name the same digest;
3. the image's own SBOM (`/opt/podkit/sbom.cdx.json`, made at build time by
   cyclonedx-py from the image's virtualenv) pushed next to it as an OCI
   artifact: a manifest with `artifactType: application/vnd.cyclonedx+json`,
   the empty config and the SBOM as its one layer (what `oras push` makes),
   under the tag cosign uses for an image's SBOM, `sha256-<image digest>.sbom`,
   and under `<VERSION>.sbom`.

VERSION and COMMIT come from images/version.sh. The record is JSON, printed
and written to images/.build/digests.json (DIGESTS= another file): registry,
version, commit, and per program its repository, tags, digest and SBOM
references. Needs podman and skopeo (Debian packages of those names).

Environment: REGISTRY (required), TAG, TLS_VERIFY (default true; false for a
plain-HTTP registry such as the e2e tier's), DIGESTS, JOBS (images pushed at a
time, default 2), CONTAINERS_CONF (default images/containers.conf).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
# podkit's own programs (images/programs.sh reads pyproject.toml's entry points), and
# the base image a custom sidecar is built FROM
PROGRAMS = (
    *subprocess.run(
        [str(HERE / "programs.sh")], capture_output=True, text=True, check=True
    ).stdout.split(),
    "base",
)
SBOM_PATH = "/opt/podkit/sbom.cdx.json"
SBOM_TYPE = "application/vnd.cyclonedx+json"
# The OCI 1.1 empty descriptor: the config of an artifact that has none.
EMPTY = b"{}"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"


class PublishError(Exception):
    pass


def env() -> dict[str, str]:
    return {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(HERE / "containers.conf")),
    }


def run(*cmd: str) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    if res.returncode != 0:
        raise PublishError(f"{' '.join(cmd)}: {(res.stderr or '').strip()[-2000:]}")
    return res.stdout or ""


def version_and_commit() -> tuple[str, str]:
    version, commit = run(str(HERE / "version.sh")).split()
    return version, commit


def image_sbom(image: str, dest: Path) -> bytes:
    """The SBOM file inside the image, copied out without running it."""
    ctr = run("podman", "create", image).strip()
    try:
        run("podman", "cp", f"{ctr}:{SBOM_PATH}", str(dest))
    finally:
        run("podman", "rm", "--force", ctr)
    data = dest.read_bytes()
    if json.loads(data).get("bomFormat") != "CycloneDX":
        raise PublishError(f"{image}: {SBOM_PATH} is not a CycloneDX document")
    return data


def sbom_layout(sbom: bytes, subject: str, out: Path) -> None:
    """An OCI image layout holding one artifact manifest: the SBOM as its layer."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": SBOM_TYPE,
        "config": {"mediaType": EMPTY_TYPE, **blob(EMPTY)},
        "layers": [
            {
                "mediaType": SBOM_TYPE,
                **blob(sbom),
                "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
            }
        ],
        # Which image this describes (registries that know OCI 1.1 list it as
        # a referrer; the cosign-style tag finds it everywhere else).
        "annotations": {"dev.podkit.sbom.subject": subject},
    }
    desc = blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **desc}],
    }
    (out / "index.json").write_text(json.dumps(index))
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def publish(
    program: str, registry: str, tag: str, version: str, commit: str, tls: str, tmp: Path
) -> dict[str, object]:
    local = f"localhost/podkit-{program}:{tag}"
    repo = f"{registry}/podkit-{program}"
    full, short = f"{version}-{commit}", version
    digestfile = tmp / f"{program}.digest"
    run("podman", "push", "--quiet", f"--tls-verify={tls}", "--digestfile", str(digestfile),
        local, f"docker://{repo}:{full}")  # fmt: skip
    digest = digestfile.read_text().strip()
    # The same manifest under the version's tag: copied, not pushed again,
    # so both tags are one digest.
    run("skopeo", "copy", "--quiet", f"--src-tls-verify={tls}", f"--dest-tls-verify={tls}",
        f"docker://{repo}@{digest}", f"docker://{repo}:{short}")  # fmt: skip
    sbom = image_sbom(local, tmp / f"{program}.cdx.json")
    layout = tmp / f"{program}-sbom"
    sbom_layout(sbom, f"{repo}@{digest}", layout)
    sbom_tags = [f"{digest.replace(':', '-')}.sbom", f"{short}.sbom"]
    for t in sbom_tags:
        run("skopeo", "copy", "--quiet", f"--dest-tls-verify={tls}", f"oci:{layout}",
            f"docker://{repo}:{t}")  # fmt: skip
    return {
        "repository": repo,
        "tags": [short, full],
        "digest": digest,
        "reference": f"{repo}@{digest}",
        "sbom": [f"{repo}:{t}" for t in sbom_tags],
        "sbom_sha256": hashlib.sha256(sbom).hexdigest(),
    }


def main(argv: list[str]) -> int:
    registry = os.environ.get("REGISTRY", "").rstrip("/")
    if not registry:
        print(
            "REGISTRY is required, e.g. make publish REGISTRY=registry.example:5000/podkit",
            file=sys.stderr,
        )
        return 2
    programs = argv or list(PROGRAMS)
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        print(
            f"unknown program(s): {' '.join(unknown)} (one of: {' '.join(PROGRAMS)})",
            file=sys.stderr,
        )
        return 2
    try:
        version, commit = version_and_commit()
    except PublishError as e:
        print(e, file=sys.stderr)
        return 2
    tag = os.environ.get("TAG") or version
    tls = (
        "false" if os.environ.get("TLS_VERIFY", "true").lower() in ("0", "false", "no") else "true"
    )
    missing = [
        p
        for p in programs
        if subprocess.run(
            ["podman", "image", "exists", f"localhost/podkit-{p}:{tag}"], env=env()
        ).returncode
        != 0
    ]
    if missing:
        names = " ".join(f"localhost/podkit-{p}:{tag}" for p in missing)
        print(f"not built: {names} (make images first, or TAG=)", file=sys.stderr)
        return 2
    record: dict[str, object] = {"registry": registry, "version": version, "commit": commit}
    images: dict[str, object] = {}
    # Two at a time (JOBS=): a push waits on the registry as much as it
    # compresses, so a second one fills the gaps on two cores.
    jobs = max(1, int(os.environ.get("JOBS") or 2))
    with (
        tempfile.TemporaryDirectory(prefix="podkit-publish-") as t,
        ThreadPoolExecutor(jobs) as pool,
    ):
        futures = {
            p: pool.submit(publish, p, registry, tag, version, commit, tls, Path(t))
            for p in programs
        }
        for p, future in futures.items():
            try:
                images[p] = future.result()
            except PublishError as e:
                print(f"publishing {p} failed: {e}", file=sys.stderr)
                for f in futures.values():
                    f.cancel()
                return 1
            print(f"pushed {images[p]['reference']}", file=sys.stderr)  # type: ignore[index]
    record["images"] = images
    out = Path(os.environ.get("DIGESTS") or HERE / ".build" / "digests.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2) + "\n"
    out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
