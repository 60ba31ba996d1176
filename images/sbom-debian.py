"""sbom-debian.py ROOTFS [EXTRA]: add the image's Debian packages to its SBOM.

Run by the Dockerfile's rootfs stage, after images/slim.sh has cut ROOTFS
(the image's whole root filesystem) out of the build stage and before the
build stage's dpkg database is left behind (the image has no dpkg). The SBOM
at ROOTFS/opt/podkit/sbom.cdx.json lists the venv's Python packages
(cyclonedx-py); this adds, as CycloneDX components:

- every installed Debian package with at least one of its files in ROOTFS
  (python3.11, libssl3, libc6, tini, tzdata, git and ssh in gitsync's, ...),
  with its version, architecture and source package, as a `pkg:deb` purl;
  a package none of whose files slim.sh kept (apt, perl-base, coreutils, the
  wheels python3-venv ships) is not listed: it is not in the image;
- the packages of EXTRA, lines of `PACKAGE VERSION ARCH SOURCE` that
  images/debian-py.sh wrote for Debian Python packages copied into the venv
  (the proxy's python3-cryptography and python3-cffi-backend), whose files
  are in the image under /opt/podkit rather than where dpkg put them;
- Debian itself, as the operating-system component.

Deterministic (sorted, no timestamps), so the SBOM layer stays cacheable. Files
that a package's maintainer scripts generate rather than ship are mapped by
hand (GENERATED). Licences are not given: the base drops /usr/share/doc, where
Debian keeps each package's copyright file.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

STATUS = Path("/var/lib/dpkg/status")
INFO = Path("/var/lib/dpkg/info")
#: Files in the image that a package's scripts made, with that package.
GENERATED = {
    "/etc/ssl/certs/ca-certificates.crt": "ca-certificates",  # update-ca-certificates
    "/etc/ld.so.cache": "libc-bin",  # ldconfig
}


def installed() -> dict[str, dict[str, str]]:
    """Package name -> its dpkg status fields, for installed packages."""
    out = {}
    for para in STATUS.read_text().split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed"):
            out[fields["Package"]] = fields
    return out


def files_in_image(rootfs: Path, name: str, arch: str) -> int:
    """How many of the package's files (not directories) ROOTFS holds."""
    listing = next(
        (p for p in (INFO / f"{name}:{arch}.list", INFO / f"{name}.list") if p.exists()), None
    )
    count = 0
    if listing is not None:
        for path in listing.read_text().splitlines():
            inside = str(rootfs) + path
            if os.path.lexists(inside) and not os.path.isdir(inside):
                count += 1
    count += sum(1 for f, pkg in GENERATED.items() if pkg == name and (rootfs / f[1:]).exists())
    return count


def component(
    name: str, version: str, arch: str, source: str, distro: str, where: str
) -> dict[str, object]:
    purl = f"pkg:deb/debian/{name}@{quote(version, safe='.-_~')}?arch={arch}&distro={distro}"
    props = [{"name": "dev.podkit:debian:in-image", "value": where}]
    if source and source != name:
        props.insert(0, {"name": "dev.podkit:debian:source", "value": source})
    return {
        "bom-ref": purl,
        "name": name,
        "properties": props,
        "purl": purl,
        "type": "library",
        "version": version,
    }


def main(rootfs: Path, extra: Path | None) -> None:
    sbom = rootfs / "opt/podkit/sbom.cdx.json"
    bom = json.loads(sbom.read_text())
    osr = dict(
        line.split("=", 1)
        # The build stage's: the image is cut from it and keeps neither file.
        for line in Path("/usr/lib/os-release").read_text().splitlines()
        if "=" in line
    )
    os_id, os_version = osr["ID"].strip('"'), osr.get("VERSION_ID", "").strip('"')
    distro = f"{os_id}-{os_version}"
    debs = []
    for name, f in sorted(installed().items()):
        arch = f.get("Architecture", "")
        n = files_in_image(rootfs, name, arch)
        if n:
            source = f.get("Source", name).split(" ")[0]
            debs.append(component(name, f["Version"], arch, source, distro, f"{n} files"))
    if extra is not None and extra.exists():
        for line in sorted(set(extra.read_text().splitlines())):
            if line.strip():
                name, version, arch, source = line.split()
                debs.append(
                    component(
                        name, version, arch, source, distro, "copied into /opt/podkit (the venv)"
                    )
                )
    debian_version = Path("/etc/debian_version").read_text().strip()
    system = {
        "bom-ref": f"os:{distro}",
        "name": os_id,
        "type": "operating-system",
        "version": debian_version,
    }
    bom["components"] = [*bom["components"], system, *debs]
    sbom.write_text(json.dumps(bom, indent=2, sort_keys=True) + "\n")
    print(f"SBOM: {len(debs)} Debian packages added", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
