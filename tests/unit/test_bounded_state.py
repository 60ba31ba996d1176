"""State that a long-running program keeps per event must stay bounded.

Each test drives one kind of growth with many events (distinct error texts,
directories that come and go, commits) and asserts that what is kept stays
bounded or that an old entry goes away, and that the behaviour the state is
there for still holds.
"""

from __future__ import annotations

import errno
import logging
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

import podkit.logs
from podkit.logs import RateLimited
from podkit.tailer import Tailer
from tests.helpers import wait_until_async
from tests.unit.test_tailer import Collector, cfg, write

# -- RateLimited: keys made of error texts --------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    c = _Clock()
    monkeypatch.setattr(podkit.logs, "time", types.SimpleNamespace(monotonic=c.monotonic))
    return c


def _repeated(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [getattr(r, "repeated", None) for r in caplog.records]


def test_rate_limited_forgets_keys_that_stopped_recurring(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Retrier, kubefiles and the reloader key on the error text, which often
    holds something new each time (a port, a resourceVersion, a timestamp in a
    script's output): a week of failures every few seconds must not keep a
    week of keys."""
    rl = RateLimited(logging.getLogger("test.grow.rl"), interval=30)
    with caplog.at_level(logging.INFO, logger="test.grow.rl"):
        for i in range(20_000):
            clock.now += 5.0
            assert rl.log(f"webhook:connect to 10.0.0.1:{i} refused", logging.WARNING, "failed")
    assert len(caplog.records) == 20_000  # each new text is said at once
    assert len(rl._last) <= 64


def test_rate_limited_bounds_keys_even_when_each_repeats_once(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A text said twice within the interval carries a count for its next
    record; a flood of those is bounded by number, oldest first."""
    rl = RateLimited(logging.getLogger("test.grow.rl2"), interval=30)
    with caplog.at_level(logging.INFO, logger="test.grow.rl2"):
        for i in range(20_000):
            clock.now += 0.001
            rl.log(f"k{i}", logging.WARNING, "failed")
            rl.log(f"k{i}", logging.WARNING, "failed")
    assert len(rl._last) <= 1000  # RATE_LIMITED_MAX_KEYS


def test_rate_limited_still_counts_what_it_suppressed(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The bound must not cost the `repeated` count of a condition that goes on."""
    rl = RateLimited(logging.getLogger("test.grow.rl3"), interval=30)
    with caplog.at_level(logging.INFO, logger="test.grow.rl3"):
        for _ in range(121):  # once a second for two minutes, plus the first
            rl.log("down", logging.WARNING, "down")
            for i in range(50):  # other texts, once each, meanwhile
                rl.log(f"noise {clock.now} {i}", logging.INFO, "noise")
            clock.now += 1.0
    down = [r for r in caplog.records if r.getMessage() == "down"]
    assert [getattr(r, "repeated", None) for r in down] == [None, 29, 29, 29, 29]
    # Said once more (suppressed), then quiet for an hour of other texts: its
    # next record still says it was suppressed once.
    assert not rl.log("down", logging.WARNING, "down")
    for i in range(3600):
        clock.now += 1.0
        rl.log(f"noise {i}", logging.INFO, "noise")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.grow.rl3"):
        assert rl.log("down", logging.WARNING, "down")
    assert _repeated(caplog) == [1]
    assert len(rl._last) <= 64


# -- the tailer: watches on directories whose files are gone ---------------------------


async def test_tailer_goes_on_when_a_directory_cannot_be_watched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """inotify's limits (max_user_watches, max_user_instances) are shared by
    every container of the user on the node: reaching them costs the watch,
    not the tailer."""
    logs = tmp_path / "logs"
    logs.mkdir()
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "*.log")]))
    await t.start()
    if t.polling:
        await t.close()
        pytest.skip("no inotify here: nothing is watched")

    def full(directory: str, recursive: bool | None = None) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    t._watcher.add = full
    c = Collector(t)
    try:
        with caplog.at_level(logging.WARNING, logger="podkit.tailer"):
            for name in ("one", "two"):
                (logs / name).mkdir()
                write(logs / name / "a.log", f"{name}\n")
            assert sorted(await c.until(2)) == ["one", "two"]  # found by polling
            write(logs / "one" / "a.log", "more\n")
            assert (await c.until(3))[-1] == "more"
        assert t.error is None
        said = [r for r in caplog.records if "cannot watch" in r.getMessage()]
        assert len(said) == 1
    finally:
        await t.close()


async def test_tailer_unwatches_directories_whose_files_are_gone(tmp_path: Path) -> None:
    """Logs in one directory a day (or a pod's directory under /var/log/pods):
    once a directory's files are gone and closed, its watch goes too, however
    many directories came and went."""
    logs = tmp_path / "logs"
    logs.mkdir()
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "app.log")], rotate_wait=0.05))
    await t.start()
    if t.polling:
        await t.close()
        pytest.skip("no inotify here: nothing is watched")
    c = Collector(t)
    try:
        for day in range(12):
            d = logs / f"2026-01-{day:02d}"
            d.mkdir()
            write(d / "app.log", f"day {day}\n")
            await c.until(day + 1)
            shutil.rmtree(d)
            await wait_until_async(lambda: t.files_watched == 0, what="closed")
        await wait_until_async(
            lambda: set(t._watcher.dirs) <= {str(logs)}, what="only the glob's base watched"
        )
        assert len(t._watcher._observer.emitters) <= 1
    finally:
        await t.close()


async def test_tailer_watches_a_directory_made_again_under_the_same_name(
    tmp_path: Path,
) -> None:
    """A directory deleted and made again: its old watch died with it, so a
    file created in the new one is noticed by a new watch, not at the next
    poll (an hour away here)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    t = Tailer(
        cfg(tmp_path, paths=[str(logs / "*" / "*.log")], poll_interval=3600, rotate_wait=0.05)
    )
    await t.start()
    if t.polling:
        await t.close()
        pytest.skip("no inotify here: only polling finds files")
    c = Collector(t)
    try:
        sub = logs / "sub"
        sub.mkdir()
        write(sub / "a.log", "a\n")
        await c.until(1)  # found when the watch on logs/ saw sub appear
        shutil.rmtree(sub)
        await wait_until_async(lambda: t.files_watched == 0, what="closed")
        sub.mkdir()
        write(sub / "b.log", "b\n")
        await c.until(2)
        write(sub / "c.log", "c\n")  # only a watch on the new sub/ sees this one
        assert await c.until(3, timeout=3) == ["a", "b", "c"]
    finally:
        await t.close()


# -- gitsync: commits whose fresh checkout is already dirty ---------------------------


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_gitsync_remembers_dirty_checkouts_of_the_published_commit_only(tmp_path: Path) -> None:
    """A repository whose files were committed with CRLF before `* text` came
    into .gitattributes: every fresh checkout already differs from its commit.
    Such a commit is remembered so that it is not rebuilt at every check;
    only the published one needs remembering, not every commit of weeks."""
    from podkit.sidecars.gitsync.auth import Auth
    from podkit.sidecars.gitsync.checkout import Checkout

    up = tmp_path / "up"
    up.mkdir()
    _git(up, "init", "-q", "-b", "main")
    (up / "f").write_bytes(b"a\r\nb\r\n")
    _git(up, "add", "f")
    _git(up, "commit", "-qm", "crlf")
    (up / ".gitattributes").write_text("* text\n")
    _git(up, "add", ".gitattributes")
    _git(up, "commit", "-qm", "text")
    root = tmp_path / "root"
    (root / ".worktrees").mkdir(parents=True)
    auth = Auth(str(up))
    auth.setup()
    c = Checkout(
        str(up),
        str(root),
        str(root / "app"),
        "main",
        auth,
        logging.getLogger("test.grow.gitsync"),
        depth=1,
        submodules="off",
        sparse_checkout_file=None,
        sync_timeout=60,
        stale_worktree_timeout=0,
        git_gc="off",
        group_write=False,
        filter_spec=None,
        repair_check_interval=0,  # every sync looks at the files
        publish_mode="link",
    )
    shas = []
    for i in range(6):
        (up / "v").write_bytes(f"{i}\r\n".encode())
        _git(up, "add", "v")
        _git(up, "commit", "-qm", f"v{i}")
        shas.append(_git(up, "rev-parse", "HEAD"))
        assert c.sync().sha == shas[-1]
        mark = root / ".worktrees" / shas[-1] / "untracked"  # not damage: gone only with the tree
        mark.write_text("x")
        c.sync()  # its files differ from the commit: rebuilt (a new directory) once...
        assert not mark.exists()
        mark.write_text("x")
        c.sync()  # ... then remembered: left as it is
        assert mark.exists()
    assert c._dirty_on_checkout == {shas[-1]}
