"""images/version.sh: the version images are built and published under comes
from a release tag that must match podkit.__version__, else `<version>-dev`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import need

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git = need("git")
    (tmp_path / "images").mkdir()
    shutil.copy(ROOT / "images/version.sh", tmp_path / "images/version.sh")
    (tmp_path / "podkit").mkdir()
    (tmp_path / "podkit" / "__init__.py").write_text('"""podkit."""\n\n__version__ = "1.2.3"\n')
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run([git, *cmd], cwd=tmp_path, check=True, env=env)
    return tmp_path


def version(repo: Path, **env: str) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if k != "VERSION"}
    res = subprocess.run(
        [str(repo / "images/version.sh")], capture_output=True, text=True, env={**environ, **env}
    )
    return res.returncode, res.stdout.strip(), res.stderr


def head(repo: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()


def test_an_untagged_commit_is_a_dev_version(repo: Path) -> None:
    assert version(repo) == (0, f"1.2.3-dev {head(repo)}", "")


def test_a_release_tag_gives_the_version(repo: Path) -> None:
    subprocess.run(["git", "tag", "v1.2.3"], cwd=repo, check=True)
    assert version(repo) == (0, f"1.2.3 {head(repo)}", "")


def test_a_release_tag_that_does_not_match_the_declared_version_is_refused(repo: Path) -> None:
    subprocess.run(["git", "tag", "v1.3.0"], cwd=repo, check=True)
    code, out, err = version(repo)
    assert (code, out) == (2, "")
    assert "v1.3.0" in err and "1.2.3" in err


def test_version_overrides_and_a_changed_tree_is_dirty(repo: Path) -> None:
    with open(repo / "podkit" / "__init__.py", "a") as f:
        f.write("# x\n")
    assert version(repo, VERSION="9.9.9") == (0, f"9.9.9 {head(repo)}-dirty", "")
