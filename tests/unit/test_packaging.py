"""Every package folder is listed in pyproject, so wheels and images hold all the code.

The editable install finds subpackages on its own; a normal wheel ships only
what `[tool.setuptools] packages` lists, so a missing entry passes every
venv test and breaks the image.
"""

from __future__ import annotations

import tomllib

from tests.helpers import ROOT

PATTERN_DIRS = {"sidecars", "adapters", "ambassadors", "initkits"}


def test_every_package_folder_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for top in ("podkit", *PATTERN_DIRS):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((dirs[top], *rel)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"
    assert listed - found == set(), "these listed packages have no folder"
