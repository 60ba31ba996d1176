"""podkit.tailer.discovery under mutation testing (docs/testing.md, issue 25).

What a discovery bug does: a file the globs match is not read, a file they do
not match (or one behind a link out of the base, a FIFO, a device) is read, or
a refusal is counted and warned about on every poll. Asserted on what the
matching returns, what opening refuses and why, and what a tailer delivers.
The functions are called directly where they are pure enough (no event loop,
no watcher), so each test is a few milliseconds and fully deterministic.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from podkit.tailer import Tailer
from podkit.tailer.discovery import (
    MAX_DEPTH,
    _base_dir,
    _Link,
    _open_beneath,
    _open_regular_at,
    _Skip,
    _special,
    _split_glob,
    _within,
    missing_bases,
    watch_log_volume,
)
from podkit.watch import Change
from tests.unit.test_tailer import Collector, cfg, write


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.log").write_text("secret\n")
    return d


def tailer(tmp_path: Path, *patterns: Path | str, **kw: Any) -> Tailer:
    return Tailer(cfg(tmp_path, paths=[str(p) for p in patterns], **kw))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, Any]]:
    return [
        (r.reason, r.path, r.detail)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage().startswith("not following file")
    ]


# -- globs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "base", "parts"),
    [
        ("/a/b/*.log", "/a/b", ["*.log"]),
        ("/a/b/c.log", "/a/b", ["c.log"]),  # no wildcard: the last part is still the name
        ("/a/*/c/x.log", "/a", ["*", "c", "x.log"]),
        ("/a/b?/x.log", "/a", ["b?", "x.log"]),
        ("/a/[bc]/x.log", "/a", ["[bc]", "x.log"]),
        ("/a/**/x.log", "/a", ["**", "x.log"]),
        ("/a/*//x.log", "/a", ["*", "x.log"]),  # empty components dropped
        ("/*.log", "/", ["*.log"]),
        ("*.log", ".", ["*.log"]),
        ("rel/dir/*.log", "rel/dir", ["*.log"]),
        ("*/x.log", ".", ["*", "x.log"]),
    ],
)
def test_split_glob(pattern: str, base: str, parts: list[str]) -> None:
    assert _split_glob(pattern) == (base, parts)
    assert _base_dir(pattern) == base


def test_within_and_special() -> None:
    assert _within("/a/b", "/a/b")
    assert _within("/a/b/c", "/a/b")
    assert _within("/a/b/c", "/a/b/")
    assert _within("/x", "/")
    assert not _within("/a/bc", "/a/b")  # a sibling sharing a prefix is not inside
    assert not _within("/a", "/a/b")
    for p in ("/proc", "/proc/self/environ", "/sys/kernel", "/dev/zero", "/dev"):
        assert _special(p), p
    for p in ("/procx", "/tmp/proc", "/devices", "/system", "/"):
        assert not _special(p), p


def test_missing_bases_names_the_first_missing_volume(tmp_path: Path, logs: Path) -> None:
    ok = str(logs / "*.log")
    gone = str(tmp_path / "nope" / "**" / "*.log")
    assert missing_bases([ok]) == None  # noqa: E711 (None, not merely falsy)
    assert missing_bases([ok, gone, str(tmp_path / "other" / "*.log")]) == (
        f"{tmp_path / 'nope'} does not exist (is the volume that holds {gone} mounted?)"
    )
    # A file is not a directory: the volume is not there.
    write(tmp_path / "flat", "x")
    assert missing_bases([str(tmp_path / "flat" / "*.log")]) is not None
    # Relative patterns are taken from the working directory.
    assert missing_bases([os.path.relpath(ok)]) is None


class FakeProgram:
    def __init__(self) -> None:
        self.checks: dict[str, Any] = {}
        self.warned: list[tuple[str, Any]] = []
        self.log = self

    def readiness(self, name: str, check: Any) -> None:
        self.checks[name] = check

    def warning(self, msg: str, extra: Any = None) -> None:
        self.warned.append((msg, extra))


def test_watch_log_volume_readiness_and_warnings(tmp_path: Path, logs: Path) -> None:
    gone = tmp_path / "later"
    patterns = [str(logs / "*.log"), str(gone / "*.log")]
    p = FakeProgram()
    watch_log_volume(p, patterns, files=3)  # type: ignore[arg-type]
    why = f"{gone} does not exist (is the volume that holds {patterns[1]} mounted?)"
    assert p.warned == [("not ready until the log volume exists", {"reason": why})]
    assert p.checks["log-volume"]() == why
    patterns.clear()  # the check keeps its own copy
    gone.mkdir()
    assert p.checks["log-volume"]() is None  # mounted later: ready

    p = FakeProgram()
    watch_log_volume(p, [str(logs / "*.log")], files=0)  # type: ignore[arg-type]
    assert p.warned == [("no file matches yet", {"path": [str(logs / "*.log")]})]
    assert p.checks["log-volume"]() is None

    p = FakeProgram()
    watch_log_volume(p, [str(logs / "*.log")], files=1)  # type: ignore[arg-type]
    assert p.warned == []
    assert set(p.checks) == {"log-volume"}


def test_excluded_by_full_path_or_by_name(tmp_path: Path, logs: Path) -> None:
    t = tailer(tmp_path, logs / "*.log", exclude=["skip*.log", str(logs / "sub" / "*")])
    assert t._excluded(str(logs / "skip-me.log"))  # a name pattern matches the name
    assert t._excluded(str(logs / "sub" / "x.log"))  # a path pattern the whole path
    assert not t._excluded(str(logs / "keep.log"))
    assert not t._excluded(str(logs / "Skip.log"))  # case matters
    # A pattern with a slash is never matched against the name alone.
    t = tailer(tmp_path, logs / "*.log", exclude=["sub/x.log"])
    assert not t._excluded(str(logs / "sub" / "x.log"))
    t = tailer(tmp_path, logs / "*.log", exclude=["*/x.log"])
    assert t._excluded(str(logs / "sub" / "x.log"))
    t = tailer(tmp_path, logs / "*.log", exclude=["[/a]pp.log"])  # a slash, in a class
    assert not t._excluded(str(logs / "app.log"))
    assert not tailer(tmp_path, logs / "*.log")._excluded(str(logs / "a.log"))


def test_matches_is_what_the_watcher_reports_moves_for(tmp_path: Path, logs: Path) -> None:
    t = tailer(tmp_path, logs / "*.log", logs / "x" / "*.txt", exclude=["no.log"])
    assert t._matches(str(logs / "a.log"))
    assert t._matches(str(logs / "x" / "b.txt"))  # the second pattern
    assert not t._matches(str(logs / "a.txt"))
    assert not t._matches(str(logs / "no.log"))  # excluded


# -- matching ---------------------------------------------------------------------


def test_match_returns_sorted_paths_with_their_bases(tmp_path: Path, logs: Path) -> None:
    for n in ("c.log", "a.log", "b.log", "skip.log", "a.txt", ".hidden.log"):
        write(logs / n, "x\n")
    (logs / "d.log").mkdir()  # matched here; discovery leaves directories alone
    real = tmp_path / "real"
    real.mkdir()
    write(real / "z.log", "z\n")
    os.symlink(real, tmp_path / "via")  # the base itself a link: resolved once
    t = tailer(
        tmp_path,
        logs / "*.log",
        tmp_path / "via" / "*.log",
        logs / "a.*",  # a.log again: kept with the first pattern's base
        tmp_path / "missing" / "*.log",  # no base: nothing, no error
        exclude=["skip.log"],
    )
    m = t._match()
    b = (str(logs), str(logs))
    assert list(m.items()) == [
        (str(logs / "a.log"), b),
        (str(logs / "b.log"), b),
        (str(logs / "c.log"), b),
        (str(logs / "d.log"), b),
        (str(tmp_path / "via" / "z.log"), (str(tmp_path / "via"), str(real))),
        (str(logs / "a.txt"), b),
    ]
    # A glob whose base is missing does not stop the ones after it.
    t = tailer(tmp_path, tmp_path / "missing" / "*.log", logs / "c.*")
    assert list(t._match()) == [str(logs / "c.log")]


def test_hidden_names_match_only_a_dot_pattern(tmp_path: Path, logs: Path) -> None:
    write(logs / ".a.log", "x\n")
    write(logs / "b.log", "x\n")
    (logs / ".dir").mkdir()
    write(logs / ".dir" / "c.log", "x\n")
    assert list(tailer(tmp_path, logs / "*.log")._match()) == [str(logs / "b.log")]
    assert list(tailer(tmp_path, logs / ".*.log")._match()) == [str(logs / ".a.log")]
    assert list(tailer(tmp_path, logs / "**" / "*.log")._match()) == [str(logs / "b.log")]
    assert list(tailer(tmp_path, logs / ".dir" / "*.log")._match()) == [
        str(logs / ".dir" / "c.log")
    ]


def test_literal_components_and_dangling_names(tmp_path: Path, logs: Path) -> None:
    (logs / "a").mkdir()
    (logs / "b").mkdir()
    write(logs / "a" / "app.log", "x\n")
    write(logs / "b" / "app.log", "x\n")
    os.symlink("nowhere", logs / "b" / "gone.log")  # lexists: matched, opening decides
    write(logs / "a" / "file", "x\n")
    t = tailer(tmp_path, logs / "*" / "app.log", logs / "b" / "gone.log", logs / "*" / "file" / "x")
    assert list(t._match()) == [
        str(logs / "a" / "app.log"),
        str(logs / "b" / "app.log"),
        str(logs / "b" / "gone.log"),
    ]
    # A literal name that is not there is not matched.
    assert tailer(tmp_path, logs / "a" / "none.log")._match() == {}


def test_double_star_matches_every_depth_including_none(tmp_path: Path, logs: Path) -> None:
    write(logs / "top.log", "x\n")
    (logs / "a" / "b").mkdir(parents=True)
    write(logs / "a" / "mid.log", "x\n")
    write(logs / "a" / "b" / "deep.log", "x\n")
    write(logs / "a" / "b" / "deep.txt", "x\n")
    t = tailer(tmp_path, logs / "**" / "*.log")
    assert list(t._match()) == [
        str(logs / "a" / "b" / "deep.log"),
        str(logs / "a" / "mid.log"),
        str(logs / "top.log"),
    ]
    # `**` last: everything below, directories included (discovery skips those).
    t = tailer(tmp_path, logs / "a" / "**")
    assert list(t._match()) == [
        str(logs / "a" / "b"),
        str(logs / "a" / "b" / "deep.log"),
        str(logs / "a" / "b" / "deep.txt"),
        str(logs / "a" / "mid.log"),
    ]
    # `**` in the middle, then a literal directory.
    (logs / "x" / "app").mkdir(parents=True)
    (logs / "app").mkdir()
    write(logs / "x" / "app" / "1.log", "x\n")
    write(logs / "app" / "2.log", "x\n")
    t = tailer(tmp_path, logs / "**" / "app" / "*.log")
    assert list(t._match()) == [str(logs / "app" / "2.log"), str(logs / "x" / "app" / "1.log")]
    # `**` matching no directory, then a link (inside the base) as the next one.
    (logs / "real").mkdir()
    write(logs / "real" / "3.log", "x\n")
    os.symlink("real", logs / "cur")
    t = tailer(tmp_path, logs / "**" / "cur" / "*.log")
    assert list(t._match()) == [str(logs / "cur" / "3.log")]
    assert sum(t.skipped.values()) == 0


def test_each_double_star_walks_a_directory_on_its_own(tmp_path: Path, logs: Path) -> None:
    """A directory the second `**` walked is still walked by the first: each
    looks for something else below it (here the hidden literal `.x`, which a
    `**` does not enter by itself)."""
    (logs / ".x" / "d" / ".x").mkdir(parents=True)
    write(logs / ".x" / "d" / ".x" / "z.log", "x\n")
    os.symlink(".x/d", logs / "a")  # inside the base: the first `**` enters it
    t = tailer(tmp_path, logs / "**" / ".x" / "**" / "*.log")
    assert list(t._match()) == [str(logs / "a" / ".x" / "z.log")]


def test_a_directory_is_walked_once_per_component_it_is_reached_at(
    tmp_path: Path, logs: Path
) -> None:
    """`visited` holds (directory, component): the same directory reached at two
    components is walked at both (through links inside the base, in either order)."""
    # Reached at the first and at the second `*`.
    (logs / "a" / "s").mkdir(parents=True)
    (logs / "c").mkdir()
    write(logs / "a" / "z.log", "x\n")
    write(logs / "a" / "s" / "q.log", "x\n")
    os.symlink("../a", logs / "c" / "l")
    t = tailer(tmp_path, logs / "*" / "*" / "*.log")
    assert list(t._match()) == [str(logs / "a" / "s" / "q.log"), str(logs / "c" / "l" / "z.log")]
    # Reached at a `*` and at a later `**`.
    (logs / "b" / "x").mkdir(parents=True)
    os.symlink("../../a", logs / "b" / "x" / "l")
    t = tailer(tmp_path, logs / "*" / "x" / "**" / "*.log")
    assert str(logs / "b" / "x" / "l" / "z.log") in t._match()
    # Reached at a literal (hidden: no `**` enters it) and, through a link, at a `**`.
    (logs / ".x" / ".x").mkdir(parents=True)
    write(logs / ".x" / ".x" / "h.log", "x\n")
    os.symlink(".x", logs / "k")
    t = tailer(tmp_path, logs / "**" / ".x" / "*.log")
    assert list(t._match()) == [str(logs / "k" / ".x" / "h.log")]


def test_double_star_depth_is_cut_at_max_depth(
    tmp_path: Path, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = logs
    for i in range(MAX_DEPTH + 1):
        d = d / "d"
        d.mkdir()
        if i == MAX_DEPTH - 1:
            write(d / "deepest.log", "x\n")  # MAX_DEPTH directories below the base
    write(d / "too.log", "x\n")  # one more
    t = tailer(tmp_path, logs / "**" / "*.log")
    assert [os.path.basename(p) for p in t._match()] == ["deepest.log"]
    assert t.skipped["too_deep"] == 1
    assert refusals(caplog) == [("too_deep", str(d), None)]


def test_a_directory_reached_twice_is_walked_once(tmp_path: Path, logs: Path) -> None:
    (logs / "sub").mkdir()
    write(logs / "sub" / "x.log", "x\n")
    os.symlink("sub", logs / "again")  # inside the base: allowed, but the same directory
    t = tailer(tmp_path, logs / "**" / "*.log")
    m = t._match()
    assert len(m) == 1
    assert os.path.realpath(next(iter(m))) == str(logs / "sub" / "x.log")
    assert sum(t.skipped.values()) == 0
    # The same with a single-level wildcard.
    t = tailer(tmp_path, logs / "*" / "*.log")
    assert len(t._match()) == 1


def test_links_while_walking(
    tmp_path: Path, logs: Path, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (logs / "in").mkdir()
    write(logs / "in" / "a.log", "x\n")
    os.symlink(outside, logs / "out")  # a directory out of the base
    os.symlink("in/a.log", logs / "file")  # a link to a file: not a directory to walk
    os.symlink("missing", logs / "dangling")
    os.symlink("self", logs / "self")  # ELOOP
    os.symlink("/proc/self", logs / "proc")
    os.symlink("..", logs / "in" / "up")  # back to a directory being walked
    t = tailer(tmp_path, logs / "*" / "*.log")
    assert list(t._match()) == [str(logs / "in" / "a.log")]
    assert t.skipped == {
        "symlink_outside": 2,  # out, proc
        "symlink_loop": 1,  # self
        "not_regular": 0,
        "special_file": 0,
        "open_failed": 0,
        "too_deep": 0,
    }
    assert sorted(refusals(caplog)) == [
        ("symlink_loop", str(logs / "self"), None),
        ("symlink_outside", str(logs / "out"), str(outside)),
        ("symlink_outside", str(logs / "proc"), os.path.realpath("/proc/self")),
    ]
    caplog.clear()
    t = tailer(tmp_path, logs / "**" / "*.log")
    assert list(t._match()) == [str(logs / "in" / "a.log")]
    assert t.skipped["symlink_loop"] == 2  # self, in/up
    assert ("symlink_loop", str(logs / "in" / "up"), str(logs)) in refusals(caplog)
    # With follow_symlinks: the directory out of the base is walked, /proc is not.
    caplog.clear()
    t = tailer(tmp_path, logs / "*" / "*.log", follow_symlinks=True)
    assert list(t._match()) == [str(logs / "in" / "a.log"), str(logs / "out" / "secret.log")]
    assert t.skipped["symlink_outside"] == 0
    assert t.skipped["special_file"] == 1
    assert ("special_file", str(logs / "proc"), os.path.realpath("/proc/self")) in refusals(caplog)


@pytest.fixture
def shm() -> Any:
    """A directory in /dev/shm (a tmpfs under /dev: where some apps put their logs)."""
    import shutil
    import tempfile

    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    d = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="podkit-test-"))
    yield d
    shutil.rmtree(d)


@pytest.mark.parametrize("follow", [False, True])
async def test_a_glob_under_dev_shm_is_read(shm: Path, tmp_path: Path, follow: bool) -> None:
    """A base under /dev is the operator's choice: what is inside it is not "special".

    The check was `_within(base, real)` (the base inside the link's target),
    arguments swapped: with --follow-symlinks every file of a glob under
    /dev/shm was refused as special_file and nothing was read, and without it
    a link to a directory inside the base was refused (with a warning and a
    count) under `**`.
    """
    (shm / "sub" / "other").mkdir(parents=True)
    write(shm / "a.log", "a\n")
    write(shm / "sub" / "other" / "c.log", "c\n")
    os.symlink(shm / "sub" / "other", shm / "sub" / "link")  # inside the base
    t = Tailer(
        cfg(
            tmp_path,
            paths=[str(shm / "*.log"), str(shm / "sub" / "**" / "*.log")],
            follow_symlinks=follow,
        )
    )
    await t.start()
    c = Collector(t)
    texts = await c.finish()
    assert sorted(texts) == ["a", "c"]
    assert sum(t.skipped.values()) == 0, t.skipped
    # A link from there to elsewhere in /dev is still refused.
    os.symlink("/dev/zero", shm / "zero.log")
    os.symlink("/dev", shm / "sub" / "dev")
    t = Tailer(
        cfg(
            tmp_path,
            paths=[str(shm / "*.log"), str(shm / "sub" / "**" / "*.log")],
            follow_symlinks=follow,
        )
    )
    t._match()
    fd, _ = t._open_checked(str(shm / "a.log"), (str(shm), str(shm)))
    os.close(fd)
    with pytest.raises(_Skip) as e:
        t._open_checked(str(shm / "zero.log"), (str(shm), str(shm)))
    assert e.value.reason == ("special_file" if follow else "symlink_outside")
    assert t.skipped["special_file" if follow else "symlink_outside"] == 1  # sub/dev


# -- refusals, counted once -------------------------------------------------------


def test_a_refusal_is_counted_once_until_it_goes_away(
    tmp_path: Path, logs: Path, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.symlink(outside, logs / "out")
    t = tailer(tmp_path, logs / "*" / "*.log")
    for _ in range(3):
        t._discover()
    assert t.skipped["symlink_outside"] == 1
    assert len(refusals(caplog)) == 1
    assert t.skipped_files() == [{"path": str(logs / "out"), "reason": "symlink_outside"}]
    os.unlink(logs / "out")
    t._discover()  # gone for one round
    assert t.skipped_files() == []
    os.symlink(outside, logs / "out")
    t._discover()  # back: said again
    assert t.skipped["symlink_outside"] == 2
    assert len(refusals(caplog)) == 2
    assert t.read_errors == 0


def test_an_open_failure_counts_as_a_read_error_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = Tailer(cfg(tmp_path))
    t.read_errors = 5  # reads that failed before
    t._skip("/x/a.log", "open_failed", "Permission denied")
    t._skip("/x/a.log", "open_failed", "Permission denied")
    t._skip("/x/b.log", "not_regular")
    assert t.read_errors == 6
    assert t.skipped["open_failed"] == 1 and t.skipped["not_regular"] == 1
    assert refusals(caplog) == [
        ("open_failed", "/x/a.log", "Permission denied"),
        ("not_regular", "/x/b.log", None),
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "not following file: open failed",
        "not following file: not regular",
    ]
    # Another reason for the same path is news.
    t._skip("/x/a.log", "symlink_loop")
    assert t.skipped["symlink_loop"] == 1
    t._skips, t._skips_next = t._skips_next, {}  # a discovery ended
    t._skip("/x/a.log", "symlink_loop")  # known from the last round: not again
    assert t.skipped["symlink_loop"] == 1
    assert t._skips_next == {"/x/a.log": "symlink_loop"}


# -- opening ----------------------------------------------------------------------


def test_open_regular_at_refuses_links_fifos_directories_and_devices(logs: Path) -> None:
    write(logs / "a.log", "abc\n")
    os.symlink("a.log", logs / "link.log")
    os.mkfifo(logs / "fifo.log")
    (logs / "dir.log").mkdir()
    before = open_fds()
    fd, st = _open_regular_at(str(logs / "a.log"), None)
    try:
        assert os.pread(fd, 10, 0) == b"abc\n"
        assert st.st_size == 4 and stat.S_ISREG(st.st_mode)
        assert os.fstat(fd).st_ino == st.st_ino
        assert os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    dfd = os.open(logs, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd, st = _open_regular_at("a.log", dfd)  # relative to a directory
        os.close(fd)
        with pytest.raises(_Link):
            _open_regular_at("link.log", dfd)
        with pytest.raises(_Skip) as e:
            _open_regular_at("fifo.log", dfd)
        assert (e.value.reason, e.value.detail) == ("not_regular", "prw-r--r--")
        with pytest.raises(_Skip) as e:
            _open_regular_at("dir.log", dfd)
        assert e.value.reason == "not_regular" and e.value.detail.startswith("d")
        with pytest.raises(_Skip) as e:
            _open_regular_at("/dev/null", None)
        assert e.value.reason == "not_regular" and e.value.detail.startswith("c")
        with pytest.raises(FileNotFoundError):
            _open_regular_at("none.log", dfd)
    finally:
        os.close(dfd)
    assert open_fds() == before


def test_open_regular_at_a_link_swapped_in_after_the_check(
    logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name was a regular file when looked at, a link when opened (O_NOFOLLOW: ELOOP)."""
    write(logs / "a.log", "abc\n")
    os.symlink("a.log", logs / "link.log")
    regular = os.stat(logs / "a.log")
    real_stat = os.stat
    monkeypatch.setattr(
        os,
        "stat",
        lambda p, *a, **kw: regular if str(p).endswith("link.log") else real_stat(p, *a, **kw),
    )
    with pytest.raises(_Link):
        _open_regular_at(str(logs / "link.log"), None)


def test_open_regular_at_a_fifo_swapped_in_after_the_check(
    logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regular when looked at, a FIFO once open (O_NONBLOCK: opening it does not wait)."""
    write(logs / "a.log", "abc\n")
    os.mkfifo(logs / "fifo.log")
    regular = os.stat(logs / "a.log")
    real_stat = os.stat
    monkeypatch.setattr(
        os,
        "stat",
        lambda p, *a, **kw: regular if str(p).endswith("fifo.log") else real_stat(p, *a, **kw),
    )
    before = open_fds()
    with pytest.raises(_Skip) as e:
        _open_regular_at(str(logs / "fifo.log"), None)
    assert (e.value.reason, e.value.detail) == ("not_regular", "prw-r--r--")
    assert open_fds() == before  # the descriptor was closed


def test_open_beneath_refuses_to_leave_the_base(logs: Path, outside: Path) -> None:
    (logs / "a" / "b").mkdir(parents=True)
    write(logs / "a" / "b" / "x.log", "x\n")
    write(logs / "a" / "file", "x\n")
    os.symlink(outside, logs / "a" / "out")
    before = open_fds()
    fd, st = _open_beneath(str(logs), "a/b/x.log")
    os.close(fd)
    assert st.st_ino == os.stat(logs / "a" / "b" / "x.log").st_ino
    fd, _ = _open_beneath(str(logs), "./a//b/./x.log")
    os.close(fd)
    for rel in ("", ".", "a/../a/b/x.log", "../logs/a/b/x.log"):
        with pytest.raises(_Skip) as e:
            _open_beneath(str(logs), rel)
        assert (e.value.reason, e.value.detail) == ("symlink_outside", rel)
    with pytest.raises(_Link) as lk:
        _open_beneath(str(logs), "a/out/secret.log")  # a link as a directory
    assert str(lk.value) == "out"
    with pytest.raises(_Link):
        _open_beneath(str(logs), "a/file/x.log")  # a file as a directory: ENOTDIR
    with pytest.raises(FileNotFoundError):
        _open_beneath(str(logs), "a/none/x.log")
    with pytest.raises(FileNotFoundError):
        _open_beneath(str(logs), "a/b/none.log")
    assert open_fds() == before  # every directory descriptor closed


def test_open_checked_without_follow_symlinks(tmp_path: Path, logs: Path, outside: Path) -> None:
    (logs / "2026").mkdir()
    write(logs / "2026" / "a.log", "inside\n")
    os.symlink("2026/a.log", logs / "current.log")  # stays inside: followed
    os.symlink(outside / "secret.log", logs / "secret.log")
    os.symlink(outside, logs / "dir")
    t = tailer(tmp_path, logs / "*.log")
    base = (str(logs), str(logs))
    fd, st = t._open_checked(str(logs / "current.log"), base)
    os.close(fd)
    assert st.st_ino == os.stat(logs / "2026" / "a.log").st_ino
    for path, real in (
        (logs / "secret.log", outside / "secret.log"),
        (logs / "dir" / "secret.log", outside / "secret.log"),
    ):
        with pytest.raises(_Skip) as e:
            t._open_checked(str(path), base)
        assert (e.value.reason, e.value.detail) == ("symlink_outside", str(real))
    # The base as given may itself be a link: what counts is the resolved base.
    os.symlink(logs, tmp_path / "via")
    fd, _ = t._open_checked(
        str(tmp_path / "via" / "current.log"), (str(tmp_path / "via"), str(logs))
    )
    os.close(fd)


def test_open_checked_a_link_resolved_then_swapped(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resolved inside the base, a link again when opened: refused, not followed."""
    (logs / "d").mkdir()
    write(logs / "d" / "a.log", "x\n")
    os.symlink("d/a.log", logs / "cur.log")
    os.symlink("a.log", logs / "d" / "swapped.log")
    real = str(logs / "d" / "swapped.log")
    monkeypatch.setattr(os.path, "realpath", lambda p, strict=False: real)
    t = tailer(tmp_path, logs / "*.log")
    with pytest.raises(_Skip) as e:
        t._open_checked(str(logs / "cur.log"), (str(logs), str(logs)))
    assert (e.value.reason, e.value.detail) == ("symlink_outside", real)


def test_open_checked_with_follow_symlinks(tmp_path: Path, logs: Path, outside: Path) -> None:
    os.symlink(outside / "secret.log", logs / "secret.log")
    os.symlink("/proc/self/environ", logs / "env.log")
    os.symlink("/dev/null", logs / "null.log")
    os.symlink("/nonexistent/x", logs / "gone.log")
    t = tailer(tmp_path, logs / "*.log", follow_symlinks=True)
    base = (str(logs), str(logs))
    with pytest.raises(FileNotFoundError):
        t._open_checked(str(logs / "gone.log"), base)
    fd, _ = t._open_checked(str(logs / "secret.log"), base)
    try:
        assert os.pread(fd, 100, 0) == b"secret\n"
    finally:
        os.close(fd)
    with pytest.raises(_Skip) as e:
        t._open_checked(str(logs / "env.log"), base)
    assert (e.value.reason, e.value.detail) == (
        "special_file",
        os.path.realpath("/proc/self/environ"),
    )
    with pytest.raises(_Skip) as e:
        t._open_checked(str(logs / "null.log"), base)
    assert (e.value.reason, e.value.detail) == ("special_file", "/dev/null")
    os.mkfifo(outside / "fifo")
    os.symlink(outside / "fifo", logs / "fifo.log")
    with pytest.raises(_Skip) as e:
        t._open_checked(str(logs / "fifo.log"), base)
    assert (e.value.reason, e.value.detail) == ("not_regular", "prw-r--r--")
    # A glob whose base is in /proc names it on purpose.
    fd, _ = t._open_checked("/proc/self/status", ("/proc/self", os.path.realpath("/proc/self")))
    os.close(fd)
    # ... but a link under /proc to another special file is still followed only within.
    with pytest.raises(_Skip) as e:
        t._open_checked(str(logs / "env.log"), ("/proc/1", "/proc/1"))
    assert e.value.reason == "special_file"


def test_base_for_a_path_found_by_a_rename(tmp_path: Path, logs: Path) -> None:
    (logs / "sub").mkdir()
    (logs / "x").mkdir()
    os.symlink(logs, tmp_path / "via")
    t = tailer(tmp_path, logs / "*.log", logs / "sub" / "*.log", tmp_path / "via" / "x" / "*")
    # The longest base that holds it, resolved.
    assert t._base_for(str(logs / "sub" / "a.log")) == (str(logs / "sub"), str(logs / "sub"))
    assert t._base_for(str(logs / "a.log")) == (str(logs), str(logs))
    assert t._base_for(str(tmp_path / "via" / "x" / "a")) == (
        str(tmp_path / "via" / "x"),
        str(logs / "x"),
    )
    # Under no glob: its own directory.
    assert t._base_for(str(tmp_path / "else" / "a.log")) == (
        str(tmp_path / "else"),
        str(tmp_path / "else"),
    )
    os.makedirs(tmp_path / "lnk")
    os.symlink(logs, tmp_path / "lnk" / "l")
    assert t._base_for(str(tmp_path / "lnk" / "l" / "a.log")) == (
        str(tmp_path / "lnk" / "l"),
        str(logs),
    )
    # A base that is gone: as given, even when a link leads part of the way.
    t = tailer(tmp_path, tmp_path / "gone" / "*.log", tmp_path / "via" / "gone" / "*.log")
    assert t._base_for(str(tmp_path / "gone" / "a.log")) == (
        str(tmp_path / "gone"),
        str(tmp_path / "gone"),
    )
    assert t._base_for(str(tmp_path / "via" / "gone" / "a.log")) == (
        str(tmp_path / "via" / "gone"),
        str(tmp_path / "via" / "gone"),
    )
    # Deeper than the base (a `**` glob): the glob's base, not the file's directory.
    t = tailer(tmp_path, tmp_path / "via" / "**" / "*.log")
    assert t._base_for(str(tmp_path / "via" / "sub" / "x" / "a.log")) == (
        str(tmp_path / "via"),
        str(logs),
    )


# -- the watcher ------------------------------------------------------------------


class FakeWatcher:
    made: list[FakeWatcher] = []
    fail = False

    def __init__(self, dirs: list[str], callback: Any, **kw: Any) -> None:
        self.dirs = sorted(dirs)
        self.callback = callback
        self.kw = kw
        self.polling = True  # what the watcher says, not the default (False)
        FakeWatcher.made.append(self)

    def start(self) -> None:
        if FakeWatcher.fail:
            raise OSError(errno.EMFILE, "no inotify instances left")


def test_start_watcher_watches_the_bases_and_the_files_dirs(
    tmp_path: Path, logs: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import podkit.watch

    monkeypatch.setattr(podkit.watch, "Watcher", FakeWatcher)
    FakeWatcher.made = []
    (logs / "sub").mkdir()
    t = tailer(
        tmp_path,
        logs / "*.log",
        tmp_path / "missing" / "*.log",
        poll_interval=0.25,
        force_polling=True,
    )

    class F:
        path = str(tmp_path / "elsewhere" / "a.log")

    (tmp_path / "elsewhere").mkdir()
    t._files = [F()]  # type: ignore[list-item]
    t._start_watcher()
    w = FakeWatcher.made[-1]
    assert t._watcher is w
    assert w.dirs == [str(tmp_path / "elsewhere"), str(logs)]  # no missing directory
    assert w.callback == t._on_change
    assert w.kw == {"recursive": False, "poll_interval": 0.25, "force_polling": True}
    assert t.polling is True

    t = tailer(tmp_path, logs / "**" / "*.log")
    t._start_watcher()
    assert FakeWatcher.made[-1].kw["recursive"] is True
    assert FakeWatcher.made[-1].kw["force_polling"] is False

    FakeWatcher.fail = True
    try:
        t = tailer(tmp_path, logs / "*.log")
        caplog.set_level(logging.WARNING)
        t._start_watcher()
    finally:
        FakeWatcher.fail = False
    assert t._watcher is None and t.polling is True
    assert [(r.getMessage(), r.error) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("cannot watch directories; polling only", "[Errno 24] no inotify instances left")
    ]


def test_on_change_asks_for_discovery_and_records_moves(tmp_path: Path, logs: Path) -> None:
    t = tailer(tmp_path, logs / "*.log")
    a, b = str(logs / "a.log"), str(logs / "a.log.1")
    t._discover_now = False
    t._on_change(Change("modified", a))
    assert not t._discover_now and t._wake.is_set()  # content: the reader's business
    t._wake.clear()
    for kind in ("created", "deleted", "events_lost"):
        t._discover_now = False
        t._on_change(Change(kind, a))
        assert t._discover_now and t._wake.is_set()
        t._wake.clear()
    assert t._moves == []
    t._discover_now = False
    t._on_change(Change("moved", a, b))
    assert t._discover_now and t._moves == [(a, b)]
    t._on_change(Change("moved", str(logs / "x.txt"), b))  # not a matched path
    t._on_change(Change("moved", a, None))  # no destination known
    assert t._moves == [(a, b)]


# -- through a running tailer -----------------------------------------------------


async def test_new_files_are_found_from_their_head_and_vanished_ones_let_go(
    tmp_path: Path, logs: Path
) -> None:
    write(logs / "old.log", "old 1\n")
    t = Tailer(cfg(tmp_path, read_from="tail", paths=[str(logs / "**" / "*.log")]))
    await t.start()
    c = Collector(t)
    (logs / "new" / "deeper").mkdir(parents=True)
    write(logs / "new" / "deeper" / "n.log", "new 1\nnew 2\n")  # after start: from its head
    write(logs / "n.txt", "not matched\n")
    await c.until(2)
    write(logs / "old.log", "old 2\n")
    await c.until(3)
    os.unlink(logs / "new" / "deeper" / "n.log")
    t._discover_now = True
    t._wake.set()
    texts = await c.finish()
    assert sorted(texts) == ["new 1", "new 2", "old 2"]
    assert t.files_watched == 0  # closed by close()


@pytest.mark.parametrize("follow", [False, True])
def test_open_checked_a_link_loop_is_a_loop(tmp_path: Path, logs: Path, follow: bool) -> None:
    os.symlink("b.log", logs / "a.log")
    os.symlink("a.log", logs / "b.log")
    os.symlink("missing", logs / "dangling.log")
    t = tailer(tmp_path, logs / "*.log", follow_symlinks=follow)
    base = (str(logs), str(logs))
    with pytest.raises(OSError) as e:
        t._open_checked(str(logs / "a.log"), base)
    assert e.value.errno == errno.ELOOP  # said as symlink_loop by the caller
    with pytest.raises(FileNotFoundError):
        t._open_checked(str(logs / "dangling.log"), base)


def test_a_loop_below_a_single_level_wildcard_is_refused(
    tmp_path: Path, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(logs / "top.log", "x\n")
    (logs / "in").mkdir()
    os.symlink("..", logs / "in" / "up")  # back to the base, two components down
    t = tailer(tmp_path, logs / "*" / "*" / "*.log")
    assert list(t._match()) == []
    assert t.skipped["symlink_loop"] == 1
    assert refusals(caplog) == [("symlink_loop", str(logs / "in" / "up"), str(logs))]
