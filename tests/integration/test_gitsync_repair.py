"""Repair as git-sync repairs (its test_e2e.sh: sync_recover_wrong_worktree_hash,
worktree_cleanup), and no-op detection for every kind of ref."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import wait_until
from tests.integration.test_gitsync import flags, gitsync, metric, polled, published, wait_published
from tests.peers.git import GitDaemon, GitRepos, git


def test_damaged_worktree_is_rebuilt_and_strays_removed(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"file": "good\n", "other": "x\n"})
    sha = up.head()
    root = tmp_path / "root"
    link = root / "app"
    wt = root / ".worktrees" / sha
    args = flags(repo=git_daemon.url("app"), root=root, period="100ms")
    with gitsync(tmp_path, *args, *flags(repair_check_interval="200ms")) as p:
        p.wait_ready()
        wait_published(link, sha)
        fetches = metric(p, "podkit_gitsync_fetches_total")

        # A consumer's untracked files (caches) are not damage: never rebuilt.
        (link / "__pycache__").mkdir()
        (link / "__pycache__" / "x.pyc").write_text("cache")
        n = metric(p, "podkit_gitsync_syncs_total", result="noop")
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="noop") > n + 2, 10)
        assert (link / "__pycache__" / "x.pyc").exists()
        assert metric(p, "podkit_gitsync_fetches_total") == fetches

        # A tracked file changed in place: rebuilt, under the same name.
        (link / "file").write_text("tampered\n")
        wait_until(lambda: (wt / "file").read_text() == "good\n", 10, what="file restored")
        assert published(link) == sha and (link / "other").read_text() == "x\n"

        # A commit made inside the served tree (HEAD no longer its name): rebuilt.
        (link / "file").write_text("committed\n")
        git(
            "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "corrupt", cwd=link
        )  # fmt: skip
        wait_until(lambda: (wt / "file").read_text() == "good\n", 10, what="commit undone")
        wait_until(lambda: git("rev-parse", "HEAD", cwd=link) == sha, 10)
        assert git("status", "--porcelain", "--untracked-files=no", cwd=link) == ""

        # Strays in .worktrees go (git-sync's worktree_cleanup).
        (root / ".worktrees" / "not_a_hash" / "subdir").mkdir(parents=True)
        (root / ".worktrees" / "not_a_directory").write_text("x")
        wait_until(lambda: os.listdir(root / ".worktrees") == [sha], 10, what="strays removed")
        logs = p.stderr()
    assert "files changed in place: file" in logs
    assert "its HEAD is" in logs
    # A directory the rebuild used is gone, and git knows one worktree only.
    assert len(os.listdir(root / ".git" / "worktrees")) == 1


def test_files_are_checked_on_the_repair_timer_or_when_asked(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    """Idle syncs read the tree's HEAD only; `git status` (a process per sync) runs
    every --repair-check-interval, or for a sync that was asked for."""
    up = git_repos.create("app", {"file": "good\n"})
    root = tmp_path / "root"
    link = root / "app"
    args = flags(repo=git_daemon.url("app"), root=root, period="50ms")
    with gitsync(tmp_path, *args, *flags(repair_check_interval="1h")) as p:
        p.wait_ready()
        wait_published(link, up.head())
        (link / "file").write_text("tampered\n")
        n = metric(p, "podkit_gitsync_syncs_total", result="noop")
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="noop") > n + 5, 10)
        assert (link / "file").read_text() == "tampered\n"  # not looked at yet
        assert "files changed in place" not in p.stderr()
        assert p.get("/sync", method="POST", data=b"")[0] == 202
        wait_until(lambda: (link / "file").read_text() == "good\n", 10, what="rebuilt")
        assert published(link) == up.head()


@pytest.mark.parametrize("kind", ["branch", "lightweight", "annotated", "full", "abbreviated"])
def test_a_period_with_nothing_new_does_no_fetch(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon, kind: str
) -> None:
    up = git_repos.create("app", {"v": "1"})
    target = up.commit_push({"v": "2"})
    if kind == "lightweight":
        up.tag("light")
    elif kind == "annotated":
        up.tag("v2.0", annotated=True)
    up.commit_push({"v": "3"})  # the branch moves past the tags
    ref, want = {
        "branch": ("main", up.head()),
        "lightweight": ("light", target),
        "annotated": ("v2.0", target),
        "full": (target, target),
        "abbreviated": (target[:10], target),
    }[kind]
    if kind == "abbreviated":
        # An abbreviated hash resolves through an advertised ref's commit.
        git("push", "-q", "origin", f"{target}:refs/tags/t-abbrev", cwd=up.work)
    root = tmp_path / "root"
    with gitsync(
        tmp_path, *flags(repo=git_daemon.url("app"), root=root, ref=ref, period="50ms")
    ) as p:
        p.wait_ready()
        wait_published(root / "app", want)
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="noop") >= 5, 15)
        # One fetch at start (the first sync of a process always fetches), then
        # ls-remote at most.
        assert metric(p, "podkit_gitsync_fetches_total") <= 1
        assert metric(p, "podkit_gitsync_syncs_total", result="error") == 0
        assert (root / "app" / "v").read_text() == ("3" if kind == "branch" else "2")
