"""The layering is in the code, not only in ARCHITECTURE.md (issue 20).

- No import cycles among podkit's modules (module-level imports; an import
  inside a function or under TYPE_CHECKING is deliberate and lazy).
- The core (`podkit.*` below the program packages) imports no program.
- `podkit --help` and `podkit <program> --help` import none of the programs'
  heavy dependencies: listing programs must not cost GitPython or aiohttp.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {
    "podkit": "podkit",
    "sidecars": "podkit.sidecars",
    "adapters": "podkit.adapters",
    "ambassadors": "podkit.ambassadors",
    "initkits": "podkit.initkits",
}
PROGRAM_PACKAGES = ("podkit.sidecars", "podkit.adapters", "podkit.ambassadors", "podkit.initkits")
# prometheus_client is podkit's own (lazy in the core, see Program.metrics); these are
# the programs' dependencies, which only running a program should pay for.
HEAVY = ("git", "aiohttp", "watchdog", "uvloop", "yaml")


def modules() -> dict[str, Path]:
    out = {}
    for folder, pkg in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts]
            parts = [p for p in parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


MODULES = modules()


def imports(name: str, path: Path) -> set[str]:
    """podkit modules that `name` imports when it is imported."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    mod = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    mod = node.module or ""
                # `from . import sub` imports the submodule (its package is
                # imported first anyway, as for any submodule); `from . import
                # name` of a name defined in the package imports the package.
                for a in node.names:
                    found.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                visit(node.body)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports(name, path) for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            strong(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles() == []


def test_the_core_imports_no_program() -> None:
    core = [n for n in GRAPH if not n.startswith(PROGRAM_PACKAGES)]
    bad = {n: sorted(m for m in GRAPH[n] if m.startswith(PROGRAM_PACKAGES)) for n in core}
    assert {n: m for n, m in bad.items() if m} == {}


def _imported(argv: list[str]) -> set[str]:
    script = (
        "import sys, runpy\n"
        f"sys.argv = {['podkit', *argv]!r}\n"
        "try:\n"
        "    runpy.run_module('podkit', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    return {m.split(".")[0] for m in res.stderr.splitlines()}


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        *[
            [p, "--help"]
            for p in ("waitfor", "logship", "gitsync", "reloader", "metrics", "logformat", "proxy")
        ],
    ],
    ids=lambda a: " ".join(a),
)
def test_help_imports_no_heavy_dependency(argv: list[str]) -> None:
    heavy = _imported(argv) & set(HEAVY)
    assert not heavy, f"podkit {' '.join(argv)} imported {sorted(heavy)}"


def test_proxy_modules_form_no_cycle_even_for_type_checking() -> None:
    """`upstream` states what it needs of a listener as Protocols (issue 18): no module
    of the proxy imports back, not even under TYPE_CHECKING, so each can be read (and
    tested) without the ones above it."""
    pkg = "podkit.ambassadors.proxy"
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if not name.startswith(pkg + "."):
            continue
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                found.add(f"{pkg}.{node.module}")
        graph[name] = {m for m in found if m in MODULES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for m in graph.get(start, ()):
            if m == goal or (m not in seen and reaches(m, goal, seen | {m})):
                return True
        return False

    assert graph[f"{pkg}.upstream"] <= {f"{pkg}.http1"}
    assert sorted(n for n in graph if reaches(n, n, set())) == []
