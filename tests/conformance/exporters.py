"""The real statsd_exporter and json_exporter, built from source for the conformance tier.

Neither is packaged for Debian or PyPI, and this machine (like CI) reaches no
Go module proxy. What does work offline is Debian bookworm's Go 1.19 with its
`golang-*-dev` library packages (GOPATH mode, no go.mod): statsd_exporter
v0.27.2 and json_exporter v0.6.0 are the newest releases that build that way
(statsd_exporter v0.28 and json_exporter v0.7 need Go 1.21+ for log/slog).
Mechanical adaptations make them build against Debian's libraries, none of
which touches parsing, mapping, JSONPath or exposition:

- `github.com/alecthomas/kingpin/v2` → `gopkg.in/alecthomas/kingpin.v2` and
  `github.com/Masterminds/sprig/v3` → `github.com/Masterminds/sprig` (the
  same libraries under the import paths Debian ships);
- client_golang's `collectors/version` (newer than Debian's 1.14) → a
  three-line shim over prometheus/common's `version.NewCollector`;
- the HTML landing page on `/` (exporter-toolkit 0.8 has no LandingConfig)
  is left out;
- json_exporter's `k8s.io/client-go/util/jsonpath` (not in Debian) is taken
  from client-go's source at the version its go.mod names, with the forked
  text/template it needs.

Sources come from $PODKIT_STATSD_EXPORTER_GIT, $PODKIT_JSON_EXPORTER_GIT and
$PODKIT_CLIENT_GO_GIT (local git directories, e.g. mirrors) or are cloned
from GitHub at the tag (needs network). Binaries are cached under
~/.cache/podkit-conformance/ keyed by the tag, so a build (10-30 s) happens
once. When one cannot be built the test is skipped on a laptop and fails
under PODKIT_REQUIRE_ALL=1 (tests.helpers.missing).

Debian packages needed: golang-go, golang-github-prometheus-client-golang-dev,
golang-github-prometheus-common-dev, golang-github-prometheus-exporter-toolkit-dev,
golang-gopkg-alecthomas-kingpin.v2-dev, golang-github-go-kit-log-dev,
golang-github-golang-groupcache-dev, golang-gopkg-yaml.v2-dev,
golang-github-masterminds-sprig-dev.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests.helpers import missing

STATSD_EXPORTER_TAG = "v0.27.2"
JSON_EXPORTER_TAG = "v0.6.0"
#: The client-go release json_exporter v0.6.0's go.mod names.
CLIENT_GO_TAG = "v0.27.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "podkit-conformance"

_VERSION_SHIM = """package version

import (
\t"github.com/prometheus/client_golang/prometheus"
\tv "github.com/prometheus/common/version"
)

func NewCollector(program string) prometheus.Collector { return v.NewCollector(program) }
"""
_IMPORTS = {
    "github.com/alecthomas/kingpin/v2": "gopkg.in/alecthomas/kingpin.v2",
    "github.com/Masterminds/sprig/v3": "github.com/Masterminds/sprig",
    "github.com/prometheus/client_golang/prometheus/collectors/version": "podkitshim/version",
}
_LANDING = re.compile(
    r"\n\t\tlandingConfig := web\.LandingConfig\{.*?(?:mux|http)\.Handle\(\"/\", landingPage\)\n",
    re.S,
)


def _fetch_source(env: str, url: str, tag: str, dest: Path, paths: tuple[str, ...] = ()) -> None:
    """The tree at `tag` (only `paths` of it, if given) into dest."""
    src = os.environ.get(env)
    if src and Path(src).is_dir():
        archive = subprocess.run(
            ["git", "--git-dir", src, "archive", tag, *paths],
            check=True,
            capture_output=True,
            timeout=300,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
        return
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", "--branch", tag, src or url, "."],
        cwd=dest,
        check=True,
        capture_output=True,
        timeout=600,
    )


def _adapt(tree: Path) -> None:
    """The import-level adaptations of the module docstring."""
    for go in tree.rglob("*.go"):
        if go.name.endswith("_test.go"):
            go.unlink()
            continue
        text = go.read_text()
        new = text
        for old, repl in _IMPORTS.items():
            new = new.replace(f'"{old}"', f'"{repl}"')
        new = _LANDING.sub("\n\t\t_ = version.Info\n\t\t_ = web.FlagConfig{}\n", new)
        if new != text:
            go.write_text(new)


def _build(name: str, tag: str, fetch: Callable[[Path], Path], keep: str = "") -> str:
    """Build `name` at `tag` once (fetch(gopath) puts its source under gopath
    and returns the main package's directory); the cached binary's path.
    `keep`: a directory of the source copied next to the binary (examples)."""
    binary = CACHE / f"{name}-{tag}" / name
    if binary.exists():
        return str(binary)
    go = shutil.which("go") or shutil.which("go", path="/usr/lib/go-1.19/bin")
    if go is None:
        missing(f"go not installed (Debian golang-go), needed to build {name}")
    assert go is not None
    with tempfile.TemporaryDirectory(prefix=f"podkit-{name}-") as tmp:
        gopath = Path(tmp)
        shim = gopath / "src/podkitshim/version"
        shim.mkdir(parents=True)
        (shim / "version.go").write_text(_VERSION_SHIM)
        try:
            tree = fetch(gopath)
        except (subprocess.SubprocessError, OSError) as exc:
            missing(f"{name} {tag} source not available ({exc}); see tests/conformance")
        _adapt(gopath / "src")
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
            [go, "build", "-o", str(out), "."], cwd=tree, env=env, capture_output=True, timeout=600
        )
        if res.returncode != 0:
            missing(
                f"{name} {tag} does not build (Debian golang-*-dev packages, see "
                f"tests/conformance/exporters.py): {res.stderr.decode()[-800:]}"
            )
        if keep:
            shutil.copytree(tree / keep, binary.parent / keep, dirs_exist_ok=True)
        out.rename(binary)
    return str(binary)


def _module_tree(gopath: Path, module: str) -> Path:
    tree = gopath / "src" / module
    tree.mkdir(parents=True)
    return tree


def statsd_exporter() -> str:
    """Path of the built statsd_exporter binary (building it once per tag)."""

    def fetch(gopath: Path) -> Path:
        tree = _module_tree(gopath, "github.com/prometheus/statsd_exporter")
        _fetch_source(
            "PODKIT_STATSD_EXPORTER_GIT",
            "https://github.com/prometheus/statsd_exporter.git",
            STATSD_EXPORTER_TAG,
            tree,
        )
        return tree

    return _build("statsd_exporter", STATSD_EXPORTER_TAG, fetch)


def json_exporter() -> str:
    """Path of the built json_exporter binary (building it once per tag)."""

    def fetch(gopath: Path) -> Path:
        tree = _module_tree(gopath, "github.com/prometheus-community/json_exporter")
        _fetch_source(
            "PODKIT_JSON_EXPORTER_GIT",
            "https://github.com/prometheus-community/json_exporter.git",
            JSON_EXPORTER_TAG,
            tree,
        )
        client_go = _module_tree(gopath, "k8s.io/client-go")
        _fetch_source(
            "PODKIT_CLIENT_GO_GIT",
            "https://github.com/kubernetes/client-go.git",
            CLIENT_GO_TAG,
            client_go,
            ("util/jsonpath", "third_party/forked/golang/template"),
        )
        return tree

    return _build("json_exporter", JSON_EXPORTER_TAG, fetch, keep="examples")


def json_exporter_examples() -> Path:
    """json_exporter's own examples/ (config.yml, data.json) at the built tag."""
    return Path(json_exporter()).parent / "examples"
