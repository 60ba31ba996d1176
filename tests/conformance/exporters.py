"""The real statsd_exporter, built from source for the conformance tier.

Neither statsd_exporter nor json_exporter is packaged for Debian or PyPI, and
this machine (like CI) reaches no Go module proxy. What does work offline is
Debian bookworm's Go 1.19 with its `golang-*-dev` library packages (GOPATH
mode, no go.mod): statsd_exporter v0.27.2 is the newest release that builds
that way (v0.28 moved to log/slog, which needs Go 1.21). Three mechanical
adaptations make it build against Debian's libraries, none of which touches
parsing, mapping or exposition:

- `github.com/alecthomas/kingpin/v2` → `gopkg.in/alecthomas/kingpin.v2`
  (the same flag library under its older import path);
- client_golang's `collectors/version` (newer than Debian's 1.14) → a
  three-line shim over prometheus/common's `version.NewCollector`;
- the HTML landing page on `/` (exporter-toolkit 0.8 has no LandingConfig)
  is left out.

The source comes from $PODKIT_STATSD_EXPORTER_GIT (a local git directory,
e.g. a mirror) or is cloned from GitHub at the tag (needs network). The
binary is cached under ~/.cache/podkit-conformance/ keyed by the tag, so the
build (about 10 s) happens once. When it cannot be built the test is skipped
on a laptop and fails under PODKIT_REQUIRE_ALL=1 (tests.helpers.missing).

Debian packages needed for the build: golang-go,
golang-github-prometheus-client-golang-dev, golang-github-prometheus-common-dev,
golang-github-prometheus-exporter-toolkit-dev,
golang-gopkg-alecthomas-kingpin.v2-dev, golang-github-go-kit-log-dev,
golang-github-golang-groupcache-dev, golang-gopkg-yaml.v2-dev.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import missing

STATSD_EXPORTER_TAG = "v0.27.2"
STATSD_EXPORTER_URL = "https://github.com/prometheus/statsd_exporter.git"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "podkit-conformance"

_VERSION_SHIM = """package version

import (
\t"github.com/prometheus/client_golang/prometheus"
\tv "github.com/prometheus/common/version"
)

func NewCollector(program string) prometheus.Collector { return v.NewCollector(program) }
"""


def _fetch_source(tag: str, dest: Path) -> None:
    src = os.environ.get("PODKIT_STATSD_EXPORTER_GIT")
    if src and Path(src).is_dir():
        archive = subprocess.run(
            ["git", "--git-dir", src, "archive", tag], check=True, capture_output=True, timeout=120
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
        return
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", "--branch", tag, src or STATSD_EXPORTER_URL, "."],
        cwd=dest,
        check=True,
        capture_output=True,
        timeout=300,
    )


def _adapt(tree: Path) -> None:
    """The three import-level adaptations of the module docstring."""
    for go in tree.rglob("*.go"):
        text = go.read_text()
        new = text.replace("github.com/alecthomas/kingpin/v2", "gopkg.in/alecthomas/kingpin.v2")
        new = new.replace(
            "github.com/prometheus/client_golang/prometheus/collectors/version",
            "podkitshim/version",
        )
        if go.name == "main.go":
            new = re.sub(
                r"\n\t\tlandingConfig := web\.LandingConfig\{.*?"
                r"mux\.Handle\(\"/\", landingPage\)\n",
                "\n\t\t_ = version.Info\n\t\t_ = web.FlagConfig{}\n",
                new,
                flags=re.S,
            )
        if new != text:
            go.write_text(new)


def statsd_exporter() -> str:
    """Path of the built statsd_exporter binary (building it once per tag)."""
    tag = STATSD_EXPORTER_TAG
    binary = CACHE / f"statsd_exporter-{tag}" / "statsd_exporter"
    if binary.exists():
        return str(binary)
    go = shutil.which("go") or shutil.which("go", path="/usr/lib/go-1.19/bin")
    if go is None:
        missing("go not installed (Debian golang-go), needed to build statsd_exporter")
    assert go is not None
    with tempfile.TemporaryDirectory(prefix="podkit-se-build-") as tmp:
        gopath = Path(tmp)
        tree = gopath / "src/github.com/prometheus/statsd_exporter"
        tree.mkdir(parents=True)
        shim = gopath / "src/podkitshim/version"
        shim.mkdir(parents=True)
        (shim / "version.go").write_text(_VERSION_SHIM)
        try:
            _fetch_source(tag, tree)
        except (subprocess.SubprocessError, OSError) as exc:
            missing(f"statsd_exporter {tag} source not available ({exc}); see tests/conformance")
        for f in ("go.mod", "go.sum"):
            (tree / f).unlink(missing_ok=True)
        _adapt(tree)
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": f"{gopath}:/usr/share/gocode",
            "GOFLAGS": "",
            "GOCACHE": str(CACHE / "gocache"),
        }
        out = binary.with_suffix(".tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            [go, "build", "-o", str(out), "."],
            cwd=tree,
            env=env,
            capture_output=True,
            timeout=600,
        )
        if res.returncode != 0:
            missing(
                f"statsd_exporter {tag} does not build (Debian golang-*-dev packages, see "
                f"tests/conformance/exporters.py): {res.stderr.decode()[-800:]}"
            )
        out.rename(binary)
    return str(binary)
