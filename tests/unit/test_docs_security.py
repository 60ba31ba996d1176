"""docs/security.md: every test it cites as proof exists (a claim without a
test is a bug in that page), and every file it names is there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "security.md").read_text()


def test_every_cited_test_exists() -> None:
    defined = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        defined.update(re.findall(r"^(?:async )?def (test_\w+)", path.read_text(), re.M))
    cited = set(re.findall(r"\b(test_\w+)\b", PAGE))
    cited = {c for c in cited if not c.endswith("_py")}
    files = {c for c in cited if (ROOT / "tests" / "unit" / f"{c}.py").exists()}
    files |= {c for c in cited if (ROOT / "tests" / "integration" / f"{c}.py").exists()}
    missing = sorted(cited - defined - files)
    assert not missing, f"docs/security.md cites tests that do not exist: {missing}"


def test_every_cited_test_file_exists() -> None:
    for path in re.findall(r"`(tests/[\w/]+\.py)", PAGE):
        assert (ROOT / path).exists(), path
