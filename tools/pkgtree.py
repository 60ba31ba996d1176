"""The package as an install lays it out, built from the repository's folders.

pyproject's package-dir maps sidecars/, adapters/, ambassadors/ and initkits/
into `podkit.*`. Tools that run the code from a copy (mutmut's tree, mypyc's
build) need it in that shape: `podkit/` with the program trees inside it, so
module names are the installed ones (`podkit.ambassadors.proxy.http1`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where each top-level folder lands inside the package, as pyproject's package-dir says.
PROGRAM_TREES = ("sidecars", "adapters", "ambassadors", "initkits")


def copy_package(dest: Path) -> None:
    """`dest/podkit`, with the program trees inside it (no bytecode, no built extensions)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    shutil.copytree(ROOT / "podkit", dest / "podkit", ignore=ignore)
    for name in PROGRAM_TREES:
        shutil.copytree(ROOT / name, dest / "podkit" / name, ignore=ignore)
