"""`make mutate`: run mutmut over podkit/ *and* the programs' own trees.

mutmut copies its `source_paths` into `mutants/` and puts that first on
sys.path, so `import podkit` loads the mutated copy. The programs live in
sidecars/, adapters/, ambassadors/ and initkits/ and are mapped into
`podkit.*` by package-dir; mutating `sidecars/` in place would produce a
`sidecars.reloader` module nobody imports, and the tests would keep loading
the original through the editable install.

So this builds the tree as the installed package looks: `podkit/` with the
four program trees copied inside it (`podkit/sidecars/...`), the tests, and
a pyproject.toml holding only the mutmut and pytest settings; then runs
mutmut there with `source_paths = ["podkit"]`. A mutant is then named after
the module the tests import (`podkit.sidecars.reloader.program.xǁReloaderǁ_arm__mutmut_3`),
and `import podkit.sidecars.reloader` finds the mutated copy first, because
the editable install's finder comes after the path finder.

    python tools/mutate.py [--tests FILE]... [--only PATH]... [NAME-GLOB ...]

NAME-GLOBs are mutmut's (`podkit.secrets*`). `--tests` replaces the test
selection of pyproject.toml (the stats run executes all of it once, so a
run over one module is faster with only that module's tests). The tree stays
in .venv/mutate-tree: `.venv/bin/mutmut results` and `mutmut show NAME` are
run from there (`make mutate-results`).

`--only` replaces `only_mutate` (a path inside the built tree, such as
`podkit/sidecars/gitsync/publish.py`): mutmut generates the mutants of every
file it may mutate before running any, which is ~35 s for the whole list on 2
shared cores, for a run that then tests one module's. At the end the survivors
of the NAME-GLOBs are listed (not mutmut's list of every mutant not run) with a
tally per module: killed / mutants (a timeout counts as killed: the tests
noticed). `--tree DIR` builds elsewhere than .venv/mutate-tree, so two runs
(two modules) can go on at once.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from pkgtree import ROOT, copy_package  # tools/ is this script's folder

TREE = ROOT / ".venv" / "mutate-tree"


ALARM_SECONDS = 60
ALARM_PLUGIN = f"""import signal


def _expired(signum, frame):
    raise TimeoutError("test still running after {ALARM_SECONDS} s (wall clock) under this mutant")


def pytest_runtest_setup(item):
    signal.signal(signal.SIGALRM, _expired)
    signal.alarm({ALARM_SECONDS})


def pytest_runtest_teardown(item):
    signal.alarm(0)
"""


def _toml(value: Any) -> str:
    """The few TOML values these settings use: strings, bools, numbers, lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return repr(value)


def _table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())


def build(tests: list[str] | None, only: list[str] | None = None) -> None:
    """The tree mutmut runs in, at TREE (see the module's docstring)."""
    if TREE.exists():
        shutil.rmtree(TREE)
    copy_package(TREE)
    shutil.copytree(
        ROOT / "tests", TREE / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    mutmut = dict(tool["mutmut"])
    mutmut["source_paths"] = ["podkit"]
    if tests:
        mutmut["pytest_add_cli_args_test_selection"] = tests
    if only:
        mutmut["only_mutate"] = only
    # mutmut's timeout counts CPU seconds: a mutant that leaves a test waiting
    # forever (an `async for` over chunks that never come) blocks its worker for
    # good. A wall-clock alarm per test fails it instead: the tests noticed.
    (TREE / "tests" / "mutate_alarm.py").write_text(ALARM_PLUGIN)
    alarm = ["-p", "tests.mutate_alarm"]
    mutmut["pytest_add_cli_args"] = [*mutmut.get("pytest_add_cli_args", []), *alarm]
    pytest = tool["pytest"]["ini_options"]
    (TREE / "pyproject.toml").write_text(
        _table("tool.mutmut", mutmut) + "\n" + _table("tool.pytest.ini_options", pytest)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tests", action="append", help="a test file run instead of pyproject's list (repeat)"
    )
    ap.add_argument(
        "--only", action="append", help="a file to mutate instead of only_mutate's (repeat)"
    )
    ap.add_argument("--tree", help="where to build the tree (default .venv/mutate-tree)")
    ap.add_argument(
        "--max-children", type=int, help="mutmut's workers (default: its own, the CPU count)"
    )
    ap.add_argument(
        "--max-survivors",
        action="append",
        default=[],
        metavar="MODULE=N",
        help="fail (exit 1) when MODULE has more than N survivors or none was run: N is "
        "its known equivalent mutants, listed in docs/testing.md (repeat)",
    )
    ap.add_argument("names", nargs="*", help="mutant name globs (podkit.secrets*)")
    args = ap.parse_args()
    if args.tree:
        global TREE
        TREE = Path(args.tree).resolve()
    build(args.tests, args.only)
    tmp = TREE.parent / (TREE.name + "-tmp") if args.tree else ROOT / ".venv" / "mutate-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    # No hang guard (tests/conftest.py): mutmut replaces sys.stderr while it collects
    # its stats, and faulthandler needs a real file ('fileno' unsupported: "failed to
    # collect stats"); the tree has its own per-test wall-clock alarm instead.
    env = dict(os.environ, PYTEST_DEBUG_TEMPROOT=str(tmp), PODKIT_TEST_HANG_SECONDS="0")
    mutmut = str(Path(sys.executable).parent / "mutmut")
    workers = ["--max-children", str(args.max_children)] if args.max_children else []
    code = subprocess.call([mutmut, "run", *workers, *args.names], cwd=TREE, env=env)
    tally = report(mutmut, args.names, env)
    # mutmut's own exit status does not count survivors: the ratchet is here. A new
    # survivor fails the run; an equivalent one is added to the docs' list and to N.
    for spec in args.max_survivors:
        module, _, n = spec.partition("=")
        killed, total = tally.get(module, (0, 0))
        if total == 0:
            print(f"FAIL {module}: no mutant of it was run", file=sys.stderr)
            code = code or 1
        elif total - killed > int(n):
            print(
                f"FAIL {module}: {total - killed} survivors, at most {n} are known equivalent "
                "(docs/testing.md): a test misses a changed line",
                file=sys.stderr,
            )
            code = code or 1
    return code


def report(mutmut: str, names: list[str], env: dict[str, str]) -> dict[str, tuple[int, int]]:
    """The survivors of `names` and, per module, killed / mutants (also returned)."""
    out = subprocess.run(
        [mutmut, "results", "--all", "true"], cwd=TREE, env=env, capture_output=True, text=True
    ).stdout
    tally: dict[str, list[int]] = {}
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name or (names and not any(fnmatch.fnmatchcase(name, g) for g in names)):
            continue
        if status == "not checked":
            continue
        module = name.split(".x_")[0].split(".xǁ")[0]
        counts = tally.setdefault(module, [0, 0])
        counts[1] += 1
        if status in ("killed", "timeout"):
            counts[0] += 1
        else:
            print(f"{name}: {status}")
    for module, (killed, total) in sorted(tally.items()):
        print(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.1f}%)")
    return {m: (k, t) for m, (k, t) in tally.items()}


if __name__ == "__main__":
    sys.exit(main())
