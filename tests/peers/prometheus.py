"""promtool (Debian's prometheus package) to check exposition output."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import need


def promtool_check(text: bytes) -> None:
    """Fail the test unless `promtool check metrics` accepts the exposition."""
    tool = need("promtool")
    res = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    # promtool exits 3 for lint warnings only (e.g. a counter without _total),
    # 1 for errors; both are failures here since our names follow the rules.
    assert res.returncode == 0, f"promtool check metrics: {res.stdout!r} {res.stderr!r}"


@pytest.fixture
def promtool() -> object:
    return promtool_check
