"""--help says what a new user needs (issue 23): required options marked,
choices listed, defaults shown (the admin address too), and EXAMPLES that
parse with the program's own option parser."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from podkit.cli import programs
from podkit.runner import configure

PROGRAMS = {name: ep.load() for name, ep in programs().items()}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_help_marks_required_lists_choices_and_shows_defaults(name: str) -> None:
    cls = PROGRAMS[name]
    out = subprocess.run(
        [sys.executable, "-m", "podkit", "help", name], capture_output=True, text=True, timeout=60
    ).stdout
    flat = " ".join(out.split())
    assert f"(default: {cls.default_admin_addr})" in flat, "the admin address default"
    assert "log level (one of: debug, info, warning, error)" in flat
    for opt in cls.options():
        if opt.required and not opt.positional and not opt.config_only:
            assert f"{opt.flag_name} " in out and "(required)" in flat, opt.flag_name
    assert "examples:" in out


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_example_parses_with_the_programs_own_parser(name: str) -> None:
    cls = PROGRAMS[name]
    lines = [ln for ln in cls.examples.splitlines() if ln.startswith(f"podkit {name} ")]
    assert lines, f"{name} has no examples"
    for line in lines:
        words = shlex.split(line.split("  #")[0].split(" < ")[0])
        configure(cls, words[2:], {}, validate=False)  # raises UsageError with the reason
