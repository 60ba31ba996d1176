"""Compile the proxy's request path with mypyc (issue 18).

    python tools/compile.py [--out DIR]

The proxy's per-request work is Python: about 3 us of CPU a request on the fast
path, against HAProxy's whole 13-14 us. mypyc (part of mypy, which `make lint`
already runs with --strict over these modules) compiles the same typed source to
C extension modules, which cut that Python share by about a third
(docs/benchmarks.md). The source stays the program: the interpreted modules are
what the tests, `make mutate` and a plain `pip install` run, and the compiled
ones are the same code, tested by running the proxy's tests against them
(`make test` does, through PODKIT_COMPILED).

This builds DIR (default .venv/compiled) as the installed package looks
(`podkit/` with the program trees inside it, as pyproject's package-dir maps
them), compiles MODULES there, and leaves the extension modules next to their
sources: `PYTHONPATH=DIR` (or copying DIR's `*.so` files over an installed
podkit, as the proxy image does) makes `import podkit.ambassadors.proxy.httpproxy`
load the compiled one, because an extension module is found before a `.py` in
the same folder. An extension is tagged with the interpreter's version
(`cpython-311`), so another Python ignores it and runs the source.

Interpreted classes cannot inherit from compiled ones, so every module with a
subclass of a compiled class is compiled too (tcp.py's pumps and listener).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from pkgtree import PROGRAM_TREES, ROOT, copy_package  # tools/ is this script's folder

# The request path, as podkit.ambassadors.proxy.compiled lists it (declared
# there once: `/`, the image's build check and the compiled test run read the
# same list). Not the credentials, the settings or the metrics: they run once a
# request at most, and tests replace their methods at run time, which compiled
# classes refuse.
from podkit.ambassadors.proxy.compiled import COMPILED

MODULES = tuple(f"podkit/ambassadors/proxy/{name}.py" for name in COMPILED)


def compiled_modules(tree: Path) -> list[Path]:
    """The extension modules a build left in `tree` (the shared runtime included)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    return sorted(p for p in tree.rglob(f"*{suffix}") if "build" not in p.parts)


def source_key() -> str:
    """What the build depends on: every source file (the compiled modules import
    the rest), this Python and mypyc's version. The same key reuses the tree."""
    import hashlib

    import mypy.version

    h = hashlib.sha256(f"{sys.version}\n{mypy.version.__version__}\n".encode())
    for top in ("podkit", *PROGRAM_TREES):
        for f in sorted((ROOT / top).rglob("*.py")):
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build(out: Path) -> list[Path]:
    key = source_key()
    stamp = out / ".source-key"
    if stamp.exists() and stamp.read_text() == key:
        return compiled_modules(out)  # built from these very sources
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    copy_package(out)
    mypyc = Path(sys.executable).parent / "mypyc"
    env = {**os.environ, "MYPYC_OPT_LEVEL": "3", "MYPYC_DEBUG_LEVEL": "0"}
    res = subprocess.run(
        [str(mypyc), *MODULES], cwd=out, env=env, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit(f"mypyc failed (exit {res.returncode})")
    shutil.rmtree(out / "build", ignore_errors=True)
    built = compiled_modules(out)
    for so in built:
        # no debug symbols: the image carries these files
        subprocess.run(["strip", "--strip-unneeded", str(so)], check=False)
    expected = {Path(m).with_suffix("").name for m in MODULES}
    got = {p.name.split(".")[0] for p in built}
    missing = expected - got
    if missing:
        raise SystemExit(f"mypyc built no extension for {sorted(missing)}")
    stamp.write_text(key)
    return built


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".venv" / "compiled")
    args = ap.parse_args()
    for so in build(args.out.resolve()):
        print(so.relative_to(args.out.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
