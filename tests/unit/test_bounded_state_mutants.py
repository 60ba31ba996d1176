"""The bounded state of podkit.logs.RateLimited and the tailer's watches under
mutation testing (docs/testing.md; tests/unit/test_bounded_state.py holds the
growth tests).

What a bug here does: a repeated condition is said again within its interval
(or its `repeated` count is lost), keys are kept beyond the bound or the sweep,
a directory's watch is dropped while its file is followed (new files wait for
the next poll) or kept after its files are gone (the pile-up the change
removed), a failed watch is said with no directory or error, or on every
discovery. RateLimited runs on a fake clock and the watch reconciliation on a
recording watcher, so each test is deterministic and a few milliseconds; one
runs a real tailer, for the case the growth tests leave out (a directory that
stays after its file went).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from podkit.logs import RATE_LIMITED_MAX_KEYS, RateLimited
from podkit.tailer import Tailer
from tests.helpers import wait_until_async
from tests.unit import test_bounded_state as bounded
from tests.unit.test_tailer import Collector, cfg, write

# -- RateLimited ----------------------------------------------------------------------

_Clock = bounded._Clock
clock = bounded.clock  # the fake clock's fixture, shared with test_bounded_state

LOGGER = "test.bounded.mutants"


def _said(caplog: pytest.LogCaptureFixture) -> list[tuple[str, Any]]:
    return [(r.getMessage(), getattr(r, "repeated", None)) for r in caplog.records]


def test_rate_limited_default_interval_is_thirty_seconds(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    rl = RateLimited(logging.getLogger(LOGGER))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert rl.log("k", logging.WARNING, "down")
        clock.now += 29.999
        assert not rl.log("k", logging.WARNING, "down")
        clock.now += 0.001
        assert rl.log("k", logging.WARNING, "down")
    assert _said(caplog) == [("down", None), ("down", 1)]


def test_rate_limited_sweeps_once_an_interval_from_its_last_sweep(clock: _Clock) -> None:
    """The sweep runs at the first record an interval (or more) after the last
    one, and drops a key whose own interval is over to the second: not at
    every record (each sweep walks every key), not later than that."""
    rl = RateLimited(logging.getLogger(LOGGER), interval=30)  # last swept: 1000
    assert rl.log("a", logging.INFO, "x")  # 1000
    clock.now = 1001.0
    assert rl.log("b", logging.INFO, "x")
    clock.now = 1030.0  # an interval since the sweep, and since "a"
    assert rl.log("c", logging.INFO, "x")
    assert list(rl._last) == ["b", "c"]
    clock.now = 1031.0  # "b" is over now, but the next sweep is at 1060
    assert rl.log("d", logging.INFO, "x")
    assert list(rl._last) == ["b", "c", "d"]
    clock.now = 1060.0
    assert rl.log("e", logging.INFO, "x")
    assert list(rl._last) == ["d", "e"]  # "d" is 29 s old


def test_rate_limited_sweep_keeps_a_key_within_its_interval(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A key said 10 s before a sweep is still suppressed after it."""
    rl = RateLimited(logging.getLogger(LOGGER), interval=30)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        clock.now = 1020.0
        assert rl.log("a", logging.WARNING, "a")
        clock.now = 1030.0
        assert rl.log("b", logging.WARNING, "b")  # sweeps
        clock.now = 1031.0
        assert not rl.log("a", logging.WARNING, "a")
        clock.now = 1050.0
        assert rl.log("a", logging.WARNING, "a")
    assert _said(caplog) == [("a", None), ("b", None), ("a", 1)]


def test_rate_limited_keeps_exactly_the_bound_least_recently_seen_out_first(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    rl = RateLimited(logging.getLogger(LOGGER), interval=30)
    for i in range(RATE_LIMITED_MAX_KEYS):
        assert rl.log(f"k{i}", logging.WARNING, f"k{i}")
        assert not rl.log(f"k{i}", logging.WARNING, f"k{i}")  # each carries a count
    assert len(rl._last) == RATE_LIMITED_MAX_KEYS
    assert not rl.log("k0", logging.WARNING, "k0")  # seen again: now the most recent
    assert rl.log("new", logging.WARNING, "new")
    assert len(rl._last) == RATE_LIMITED_MAX_KEYS
    assert list(rl._last)[:2] == ["k2", "k3"] and list(rl._last)[-2:] == ["k0", "new"]
    clock.now += 30
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert rl.log("k0", logging.WARNING, "k0")
        assert rl.log("k1", logging.WARNING, "k1")  # its count went with it
        assert rl.log("k2", logging.WARNING, "k2")
    assert _said(caplog) == [("k0", 2), ("k1", None), ("k2", 1)]


def test_rate_limited_clear_says_the_next_one_at_once(
    clock: _Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """gitsync clears its "sync" key after a success: the next failure is news."""
    rl = RateLimited(logging.getLogger(LOGGER), interval=30)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert rl.log("sync", logging.WARNING, "sync")
        assert rl.log("other", logging.WARNING, "other")
        assert not rl.log("sync", logging.WARNING, "sync")
        rl.clear("sync")
        rl.clear("never seen")  # nothing to forget: not an error
        assert rl.log("sync", logging.WARNING, "sync")
        assert not rl.log("other", logging.WARNING, "other")  # another key is kept
    # The count suppressed before the clear goes with it: news, not a repeat.
    assert _said(caplog) == [("sync", None), ("other", None), ("sync", None)]


# -- the tailer's watches -------------------------------------------------------------


class RecordingWatcher:
    """The calls _sync_watches makes, on directories whose watches are alive or not."""

    def __init__(self, dirs: list[str], dead: Iterable[str] = ()) -> None:
        self.dirs = list(dirs)
        self.dead = set(dead)
        self.calls: list[tuple[str, str]] = []
        self.fail: OSError | None = None

    def alive(self, d: str) -> bool:
        return d not in self.dead

    def remove(self, d: str) -> None:
        self.calls.append(("remove", d))
        self.dirs.remove(d)
        self.dead.discard(d)

    def add(self, d: str) -> None:
        self.calls.append(("add", d))
        if self.fail is not None:
            raise self.fail
        if d not in self.dirs:
            self.dirs.append(d)


class _F:
    def __init__(self, path: Path) -> None:
        self.path = str(path)


def test_sync_watches_keeps_followed_and_base_directories_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    kept, dead, gone, other_base = logs / "kept", logs / "dead", logs / "gone", tmp_path / "b"
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "*.log"), str(other_base / "*.log")]))
    t._files = [_F(kept / "a.log"), _F(kept / "b.log"), _F(dead / "a.log")]  # type: ignore[list-item]
    w = RecordingWatcher(
        [str(logs), str(kept), str(gone), str(dead), str(other_base)], dead={str(dead)}
    )
    t._watcher = w  # type: ignore[assignment]
    t._sync_watches()
    # A followed directory with a live watch is left as it is (add() knows it):
    # removing it would lose its events until the add. Its dead watch is renewed.
    assert w.calls == [
        ("remove", str(gone)),
        ("remove", str(dead)),
        ("add", str(dead)),
        ("add", str(kept)),
    ]
    assert sorted(w.dirs) == sorted([str(logs), str(kept), str(dead), str(other_base)])


def test_watch_failure_is_said_once_with_its_directory_and_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    a, b, gone = logs / "a", logs / "b", logs / "gone"
    a.mkdir(parents=True)
    b.mkdir()
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "*.log")]))
    w = RecordingWatcher([str(logs)])
    t._watcher = w  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG, logger="podkit.tailer"):
        t._watch(str(a))
        assert w.dirs == [str(logs), str(a)] and caplog.records == []
        w.fail = OSError(errno.ENOENT, "No such file or directory")
        t._watch(str(gone))  # gone meanwhile: polling's business, not a failure to report
        assert caplog.records == [] and not t._watch_failing
        w.fail = OSError(errno.ENOSPC, "inotify watch limit reached")
        t._watch(str(b))
        t._watch(str(b))  # said once, not at every discovery
    assert [(r.getMessage(), r.path, r.error) for r in caplog.records] == [  # type: ignore[attr-defined]
        (
            "cannot watch a directory; its new files are found by polling",
            str(b),
            "[Errno 28] inotify watch limit reached",
        )
    ]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


async def test_tailer_unwatches_a_directory_that_stays_after_its_file_went(
    tmp_path: Path,
) -> None:
    """A day's directory is often kept, its log deleted or compressed to a
    name the glob does not match: its watch goes all the same (the growth
    tests delete the directory, whose watch dies with it)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "app.log")], rotate_wait=0.05))
    await t.start()
    if t.polling:
        await t.close()
        pytest.skip("no inotify here: nothing is watched")
    c = Collector(t)
    try:
        day = logs / "day"
        day.mkdir()
        write(day / "app.log", "one\n")
        await c.until(1)
        assert str(day) in t._watcher.dirs
        (day / "app.log").rename(day / "app.log.1")  # not matched: let go after rotate_wait
        await wait_until_async(lambda: t.files_watched == 0, what="closed")
        await wait_until_async(
            lambda: str(day) not in t._watcher.dirs, what="the day's directory unwatched"
        )
        assert set(t._watcher.dirs) == {str(logs)}
        write(day / "app.log", "two\n")  # found again (the base's watch, or a poll)
        assert await c.until(2) == ["one", "two"]
        await wait_until_async(lambda: str(day) in t._watcher.dirs, what="watched again")
    finally:
        await t.close()
