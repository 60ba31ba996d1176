"""gitsync's publish step, in process: what a reader of `<link>` finds on disk.

Written against the survivors of `make mutate MUTATE="podkit.sidecars.gitsync.publish*"`
(docs/testing.md): the link mode was only exercised by the integration tier,
which runs gitsync as a subprocess that mutmut cannot see.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import time
from pathlib import Path

import pytest
from podkit.sidecars.gitsync import publish as pub

A, B = "a" * 40, "b" * 40


def _worktrees(root: Path, *shas: str) -> dict[str, str]:
    out = {}
    for sha in shas:
        wt = root / ".worktrees" / sha
        wt.mkdir(parents=True)
        (wt / "f").write_text(sha[0])
        out[sha] = str(wt)
    return out


def _olds(parent: Path, name: str = "out") -> list[str]:
    return sorted(n for n in os.listdir(parent) if n.startswith(f".{name}.old-"))


def test_link_mode_flips_a_relative_link_in_a_directory_it_makes(tmp_path: Path) -> None:
    wts = _worktrees(tmp_path, A, B)
    link = tmp_path / "deep" / "er" / "out"
    assert pub.published_sha(str(link)) is None  # nothing there yet
    for sha in (A, B):
        pub.publish(str(link), wts[sha])  # the default mode is the link
        assert pub.published_sha(str(link)) == sha
        assert (link / "f").read_text() == sha[0]
        # Relative, so the volume can be mounted elsewhere in the consumer.
        assert os.readlink(link) == os.path.join("..", "..", ".worktrees", sha)
    # No temporary link is left beside it.
    assert os.listdir(link.parent) == ["out"]


def test_link_mode_replaces_a_temporary_link_left_by_a_crash(tmp_path: Path) -> None:
    wts = _worktrees(tmp_path, A)
    stale = tmp_path / f".out.tmp-{os.getpid()}"
    os.symlink("nowhere", stale)
    pub.publish(str(tmp_path / "out"), wts[A])
    assert pub.published_sha(str(tmp_path / "out")) == A
    assert not os.path.lexists(stale)


def test_published_sha_of_a_link_reads_only_a_commit_name(tmp_path: Path) -> None:
    link = tmp_path / "out"
    os.symlink(f".worktrees/{A}/", link)  # a trailing slash, as a hand-made link may have
    assert pub.published_sha(str(link)) == A
    os.unlink(link)
    os.symlink(".worktrees/not-a-commit", link)
    assert pub.published_sha(str(link)) is None
    os.unlink(link)
    link.mkdir()  # a directory is no link of ours
    assert pub.published_sha(str(link)) is None


@pytest.mark.parametrize("exchange_works", [True, False])
def test_copy_then_link_mode_turns_the_directory_into_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange_works: bool
) -> None:
    """Switching --publish-mode from copy back to link: the copy and its record go."""
    if not exchange_works:
        monkeypatch.setattr(pub, "exchange", lambda a, b: False)
    wts = _worktrees(tmp_path, A, B)
    link = tmp_path / "out"
    pub.publish(str(link), wts[A], "copy")
    assert (tmp_path / ".out.published").exists()
    pub.publish(str(link), wts[B])
    assert os.path.islink(link) and pub.published_sha(str(link)) == B
    assert (link / "f").read_text() == "b"
    assert sorted(os.listdir(tmp_path)) == [".worktrees", "out"]  # no record, no copy


def test_link_then_copy_mode_keeps_the_replaced_link_for_its_readers(tmp_path: Path) -> None:
    """The replaced entry is a symlink: its own mtime starts the keep clock, not its target's."""
    wts = _worktrees(tmp_path, A, B)
    link = tmp_path / "out"
    pub.publish(str(link), wts[A])
    os.utime(link, (0, 0), follow_symlinks=False)  # a link published long ago
    pub.publish(str(link), wts[B], "copy", keep=60)
    assert pub.published_sha(str(link), "copy") == B
    olds = _olds(tmp_path)
    assert len(olds) == 1 and os.path.islink(tmp_path / olds[0])
    # Expiry removes the link itself, not the worktree it points at.
    pub.expire_copies(str(link), 0)
    assert _olds(tmp_path) == []
    assert (Path(wts[A]) / "f").read_text() == "a"


def test_copy_mode_default_keep_removes_the_replaced_copy_at_once(tmp_path: Path) -> None:
    wts = _worktrees(tmp_path, A, B)
    link = str(tmp_path / "out")
    pub.publish(link, wts[A], "copy")
    pub.publish(link, wts[B], "copy")
    assert _olds(tmp_path) == []
    assert (tmp_path / "out" / "f").read_text() == "b"


@pytest.mark.parametrize("exchange_works", [True, False])
def test_copy_mode_clears_what_a_dead_sync_left_and_writes_nothing_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange_works: bool
) -> None:
    if not exchange_works:
        monkeypatch.setattr(pub, "exchange", lambda a, b: False)
    root = tmp_path / "root"
    wts = _worktrees(root, A, B)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    link = str(root / "out")
    pub.publish(link, wts[A], "copy")
    # A sync that died mid-copy leaves `.out.new` (a file here: _remove takes either),
    # and one that died between the fallback's renames leaves `.out.aside`.
    (root / ".out.new").write_text("half a copy")
    if not exchange_works:
        (root / ".out.aside").mkdir()
        (root / ".out.aside" / "g").write_text("x")
    pub.publish(link, wts[B], "copy", keep=60)
    assert (root / "out" / "f").read_text() == "b"
    assert pub.published_sha(link, "copy") == B
    assert not (root / ".out.new").exists() and not (root / ".out.aside").exists()
    assert os.listdir(elsewhere) == []


def test_expiry_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = str(tmp_path / "out")
    now = 1_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    young, exact, old = (tmp_path / f".out.old-{n}" for n in (1, 2, 3))
    for path, mtime in ((young, now + 100), (exact, now - 60), (old, now - 61)):
        path.mkdir()
        os.utime(path, (mtime, mtime))
    # "Older than keep" is strictly older.
    pub.expire_copies(link, 60)
    assert _olds(tmp_path) == [".out.old-1", ".out.old-2"]
    pub.expire_copies(link, 59)
    assert _olds(tmp_path) == [".out.old-1"]
    # Under a second of keep is still a keep (a clock ahead on another node: age < 0).
    pub.expire_copies(link, 0.5)
    assert _olds(tmp_path) == [".out.old-1"]


def test_expiry_goes_on_past_a_copy_that_vanished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in (1, 2):
        (tmp_path / f".out.old-{n}").mkdir()
    gone = str(tmp_path / ".out.old-1")
    real = os.lstat

    def lstat(path: str, *a: object, **kw: object) -> os.stat_result:
        if str(path) == gone:
            raise FileNotFoundError(path)  # removed by another sync between list and stat
        return real(path, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "lstat", lstat)
    # Whatever order listdir returns, the other copy is removed.
    pub.expire_copies(str(tmp_path / "out"), 0)
    monkeypatch.undo()
    assert _olds(tmp_path) == [".out.old-1"]


def test_a_copy_that_cannot_be_removed_does_not_fail_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / ".out.old-1"
    (old / "sub").mkdir(parents=True)

    def rmdir(*a: object, **kw: object) -> None:
        raise PermissionError(errno.EACCES, "busy")

    monkeypatch.setattr(os, "rmdir", rmdir)
    pub.expire_copies(str(tmp_path / "out"), 0)  # no exception: retried at the next sync
    monkeypatch.undo()
    assert old.exists()
    shutil.rmtree(old)


def test_write_atomic_makes_the_directory_or_writes_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    pub.write_atomic("rec", b"1\n")  # no directory part: the current one
    pub.write_atomic(os.path.join("a", "b", "rec"), b"2\n")
    assert (tmp_path / "rec").read_bytes() == b"1\n"
    assert (tmp_path / "a" / "b" / "rec").read_bytes() == b"2\n"
    assert sorted(os.listdir(tmp_path)) == ["a", "rec"]


def test_exchange_swaps_two_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("x").mkdir()
    Path("x/f").write_text("x")
    Path("y").write_text("y")
    assert pub.exchange("x", "y") is True
    assert Path("y/f").read_text() == "x" and Path("x").read_text() == "y"


def test_exchange_raises_the_real_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("y").write_text("y")
    with pytest.raises(OSError) as info:
        pub.exchange("missing", "y")
    assert info.value.errno == errno.ENOENT
    assert info.value.strerror == os.strerror(errno.ENOENT)
    assert info.value.filename == "missing"


def test_exchange_is_false_where_the_filesystem_cannot(tmp_path: Path) -> None:
    # A directory into itself: EINVAL, as a filesystem without RENAME_EXCHANGE answers.
    (tmp_path / "d" / "sub").mkdir(parents=True)
    assert pub.exchange(str(tmp_path / "d"), str(tmp_path / "d" / "sub")) is False
    assert (tmp_path / "d" / "sub").is_dir()


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EOPNOTSUPP])
def test_exchange_is_false_where_the_kernel_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    monkeypatch.setattr(ctypes, "get_errno", lambda: err)
    assert pub.exchange(str(tmp_path / "missing"), str(tmp_path / "other")) is False


def test_exchange_is_false_without_renameat2(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(*a: object, **kw: object) -> None:
        raise OSError("no libc")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    assert pub.exchange("a", "b") is False
