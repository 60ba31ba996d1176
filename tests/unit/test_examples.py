"""Every Kubernetes manifest in examples/ is valid and set up as a careful operator would.

Validation uses kubernetes-validate's bundled JSON schemas (no cluster, no network),
strict mode (unknown fields are errors), against the first version with native
sidecars (1.29) and the newest schema the package ships.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from podkit import __version__

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MANIFESTS = sorted(p for p in EXAMPLES.glob("*/*.yaml") if p.parent.name != "demo")
VERSION = __version__
# podkit's own programs (pyproject.toml's entry points, through images/programs.sh);
# the injector is the webhook `podkit inject` stands in for: no pod spec runs it
PROGRAMS = set(
    subprocess.run(
        [str(ROOT / "images" / "programs.sh")], capture_output=True, text=True, check=True
    ).stdout.split()
) - {"injector"}
IMAGE = re.compile(r"^REGISTRY/podkit-(?P<program>[a-z]+):(?P<tag>.+)$")
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind = doc["kind"]
    if kind == "Pod":
        return dict(doc["spec"])
    if kind in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
        return dict(doc["spec"]["template"]["spec"])
    return None


def all_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in MANIFESTS:
        for doc in docs(path):
            spec = pod_spec(doc)
            if spec is not None:
                out.append((f"{path.parent.name}/{doc['metadata']['name']}", spec))
    return out


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def program_of(c: dict[str, Any]) -> str | None:
    m = IMAGE.match(c["image"])
    return m["program"] if m else None


def test_every_pattern_has_an_example() -> None:
    dirs = {p.parent.name for p in MANIFESTS}
    assert dirs >= {
        "waitfor",
        "gitsync-reloader",
        "logship",
        "metrics",
        "logformat",
        "proxy",
        "job-logship",
    }
    used = {program_of(c) for _, spec in all_specs() for c in containers(spec)}
    assert used - {None} == PROGRAMS


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_manifest_is_valid(path: Path, version: str) -> None:
    for doc in docs(path):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            loc = ".".join(str(p) for p in e.path)
            pytest.fail(f"{path.name} {doc['kind']} {loc}: {e.message}", pytrace=False)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_validation_rejects_a_broken_copy(path: Path) -> None:
    """The validator really checks these documents: a misspelt field fails strict mode."""
    doc = next(d for d in docs(path) if pod_spec(d) is not None)
    spec = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    spec["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, SCHEMA_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name,spec", all_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_pod_is_locked_down(name: str, spec: dict[str, Any]) -> None:
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True, name
    assert pod_sc.get("runAsUser") == 65532, name
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
    assert spec.get("automountServiceAccountToken") is False, name
    for c in containers(spec):
        where = f"{name}/{c['name']}"
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        res = c.get("resources", {})
        for key in ("cpu", "memory"):
            assert key in res.get("requests", {}), f"{where}: no {key} request"
            assert key in res.get("limits", {}), f"{where}: no {key} limit"


@pytest.mark.parametrize("name,spec", all_specs(), ids=lambda v: v if isinstance(v, str) else "")
def test_podkit_containers(name: str, spec: dict[str, Any]) -> None:
    """What the examples promise beyond `podkit validate` (args parse, probes on
    the admin port and not loopback, native sidecars, --one-time, volumes), which
    tests/unit/test_validate.py runs over examples/: this release's tag, and a
    liveness probe patient enough for a loaded node."""
    for c in containers(spec):
        program = program_of(c)
        if program is None:
            continue
        where = f"{name}/{c['name']}"
        assert program in PROGRAMS, where
        assert IMAGE.match(c["image"])["tag"] == VERSION, f"{where}: tag is not {VERSION}"  # type: ignore[index]
        if c.get("restartPolicy") == "Always":
            assert c["livenessProbe"].get("timeoutSeconds", 1) >= 2, where


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.parent.name)
def test_readme_says_what_to_change(path: Path) -> None:
    readme = (path.parent / "README.md").read_text()
    assert "REGISTRY" in readme
    assert "1.29" in readme, "must say what to change for clusters before 1.29"


def test_volumes_are_declared() -> None:
    for name, spec in all_specs():
        declared = {v["name"] for v in spec.get("volumes", [])}
        for c in containers(spec):
            for m in c.get("volumeMounts", []):
                assert m["name"] in declared, f"{name}/{c['name']}: volume {m['name']}"
