"""podkit.tailer against a hostile shared volume and hostile state (issue 13, classes 3 and 7).

Whoever can write the log volume plants links, loops, FIFOs and devices; whoever
(or whatever crash) wrote the state directory left a checkpoint that is not one
the tailer wrote. Neither may make the tailer read a file outside its glob,
hang, stop, or skip lines.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from podkit.metrics import Metrics
from podkit.tailer import Tailer, register_metrics
from tests.unit.test_tailer import Collector, cfg, write

SECRET = "token=s3cr3t-value"


def warnings(caplog: pytest.LogCaptureFixture, reason: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "reason", None) == reason]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the logs, as a Secret's mount is: outside the glob's base."""
    d = tmp_path / "secrets"
    d.mkdir()
    (d / "token").write_text(SECRET + "\n")
    return d


async def test_link_out_of_the_glob_is_not_followed(
    tmp_path: Path, logs: Path, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(logs / "app.log", "real line\n")
    os.symlink(outside / "token", logs / "token.log")
    os.symlink("/proc/self/environ", logs / "env.log")
    (logs / "sub").mkdir()
    os.symlink(outside, logs / "dirlink")  # a directory link leading out, via **
    t = Tailer(cfg(tmp_path, paths=[str(logs / "**" / "*.log"), str(logs / "*" / "token")]))
    await t.start()
    c = Collector(t)
    await c.until(1)
    write(logs / "app.log", "second\n")
    await c.until(2)
    for _ in range(3):  # discovery runs again and again: still one warning per path
        t._discover()
    texts = await c.finish()
    assert texts == ["real line", "second"]
    assert not any(SECRET in x for x in texts)
    assert t.skipped["symlink_outside"] == 3  # token.log, env.log, dirlink
    assert len(warnings(caplog, "symlink_outside")) == 3
    assert {s["path"] for s in t.skipped_files()} >= {str(logs / "token.log")}


async def test_link_inside_the_glob_base_is_followed(tmp_path: Path, logs: Path) -> None:
    (logs / "2026").mkdir()
    write(logs / "2026" / "app-1.log", "from the target\n")
    os.symlink("2026/app-1.log", logs / "current.log")  # a rotation scheme's link
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    assert await c.finish() == ["from the target"]
    assert sum(t.skipped.values()) == 0


async def test_follow_symlinks_opts_in_but_never_into_proc_or_devices(
    tmp_path: Path, logs: Path, outside: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.symlink(outside / "token", logs / "token.log")
    os.symlink("/proc/self/environ", logs / "env.log")
    os.symlink("/dev/zero", logs / "zero.log")
    t = Tailer(cfg(tmp_path, follow_symlinks=True))
    await t.start()
    c = Collector(t)
    assert await c.finish() == [SECRET]  # the operator asked for it
    assert t.skipped["special_file"] == 1  # /proc/self/environ
    assert t.skipped["not_regular"] == 1  # /dev/zero, a character device
    assert len(warnings(caplog, "special_file")) == 1


async def test_fifo_and_device_are_skipped_with_one_warning_and_a_metric(
    tmp_path: Path, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(logs / "pipe.log")  # opening it for reading would wait for a writer
    os.symlink("/dev/zero", logs / "zero.log")  # reading it never ends
    write(logs / "app.log", "ok\n")
    t = Tailer(cfg(tmp_path))
    m = Metrics("logship")
    register_metrics(m, lambda: t)
    await t.start()
    t._discover()
    c = Collector(t)
    assert await c.finish() == ["ok"]
    assert t.skipped["not_regular"] == 2
    assert len(warnings(caplog, "not_regular")) == 2
    body = m.render(None)[0].decode()
    assert 'podkit_logship_files_skipped_total{reason="not_regular"} 2.0' in body
    assert 'podkit_logship_files_skipped_total{reason="symlink_outside"} 0.0' in body
    assert "podkit_logship_checkpoint_errors_total 0.0" in body


async def test_symlink_loops_are_reported_and_reading_goes_on(
    tmp_path: Path, logs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.symlink("b.log", logs / "a.log")
    os.symlink("a.log", logs / "b.log")  # a -> b -> a
    (logs / "d").mkdir()
    os.symlink("..", logs / "d" / "up")  # a directory loop under **
    write(logs / "d" / "real.log", "one\n")
    t = Tailer(cfg(tmp_path, paths=[str(logs / "**" / "*.log")]))
    await t.start()
    c = Collector(t)
    await c.until(1)
    write(logs / "d" / "real.log", "two\n")
    await c.until(2)
    assert await c.finish() == ["one", "two"]
    assert t.skipped["symlink_loop"] == 3  # a.log, b.log, d/up
    assert len(warnings(caplog, "symlink_loop")) == 3


def test_links_to_dot_do_not_explode_discovery(tmp_path: Path) -> None:
    """glob.glob follows `x -> .` and `y -> .` down 40 levels each: 2^40 paths.

    Run in a child so that a tailer that walks like glob fails this test
    instead of hanging the suite.
    """
    logs = tmp_path / "tree"
    logs.mkdir()
    (logs / "app.log").write_text("x\n")
    for name in ("x", "y", "z"):
        os.symlink(".", logs / name)
    code = (
        "import sys; from podkit.tailer import Tailer, TailerConfig\n"
        "t = Tailer(TailerConfig(paths=[sys.argv[1]]))\n"
        "print(sorted(t._match()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(logs / "**" / "*.log")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == repr([str(logs / "app.log")])


async def test_a_tree_deeper_than_the_stack_is_cut_and_reported(tmp_path: Path, logs: Path) -> None:
    """glob recursed once per level: 1,100 nested directories raised RecursionError
    in discovery, which stopped the tailer."""
    write(logs / "app.log", "top\n")
    fd = os.open(logs, os.O_RDONLY)
    for _ in range(1100):  # relative steps: the absolute path would exceed PATH_MAX
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(fd)
    try:
        t = Tailer(cfg(tmp_path, paths=[str(logs / "**" / "*.log")]))
        await t.start()
        c = Collector(t)
        assert await c.finish() == ["top"]
        assert t.skipped["too_deep"] == 1
    finally:
        _remove_chain(logs, "d")


def _remove_chain(top: Path, name: str) -> None:
    """Remove a chain top/name/name/... deeper than the stack, bottom up.

    Left in place, it makes pytest's clean-up of old base temp directories
    (shutil.rmtree, recursive) raise RecursionError in a later session."""
    fds = [os.open(top, os.O_RDONLY)]
    while True:
        try:
            fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
        except FileNotFoundError:
            break
    os.close(fds.pop())  # the deepest directory: it has no child to remove
    while fds:
        fd = fds.pop()
        os.rmdir(name, dir_fd=fd)
        os.close(fd)


async def test_a_link_swapped_in_under_a_directory_is_not_followed(
    tmp_path: Path, logs: Path, outside: Path
) -> None:
    """The glob matched `logs/d/app.log` with `d` a directory; by the time the
    file is opened, `d` is a link out of the base. O_NOFOLLOW on every component
    refuses it."""
    (logs / "d").mkdir()
    write(logs / "d" / "app.log", "inside\n")
    t = Tailer(cfg(tmp_path, paths=[str(logs / "*" / "app.log")]))
    matched = t._match()
    (logs / "d" / "app.log").unlink()
    (logs / "d").rmdir()
    (outside / "app.log").write_text(SECRET + "\n")
    os.symlink(outside, logs / "d")
    path = str(logs / "d" / "app.log")
    assert t._open(path, True, matched[path]) is None
    assert t.skipped["symlink_outside"] == 1


# -- corrupt state (class 7) ---------------------------------------------------------


def _saved_entry(tmp_path: Path, logs: Path) -> dict[str, Any]:
    """A valid entry for logs/a.log at offset 6 (after "first\\n")."""
    import hashlib

    st = (logs / "a.log").stat()
    head = (logs / "a.log").read_bytes()[:256]
    return {
        "path": str(logs / "a.log"),
        "dev": st.st_dev,
        "ino": st.st_ino,
        "fp": hashlib.sha1(head).hexdigest(),
        "fp_len": len(head),
        "offset": 6,
        "partial": False,
    }


BAD_ENTRIES: list[tuple[str, Any]] = [
    ("offset", "6"),
    ("offset", None),
    ("offset", -6),
    ("offset", 6.0),
    ("offset", True),
    ("offset", 10**6),  # beyond the end of the file
    ("fp_len", 10**6),  # a fingerprint longer than any we take
    ("fp_len", -1),
    ("fp", None),
    ("fp", "zz"),
    ("dev", "x"),
    ("path", 3),
    ("partial", "yes"),
    ("tail", "zz"),  # not a SHA-1
]


@pytest.mark.parametrize(("key", "value"), BAD_ENTRIES, ids=[f"{k}={v!r}" for k, v in BAD_ENTRIES])
async def test_bad_checkpoint_entry_reads_its_file_as_new(
    tmp_path: Path, logs: Path, caplog: pytest.LogCaptureFixture, key: str, value: Any
) -> None:
    write(logs / "a.log", "first\nsecond\n")
    write(logs / "b.log", "b-old\nb-new\n")
    good = _saved_entry(tmp_path, logs)
    st = (logs / "b.log").stat()
    other = {**good, "path": str(logs / "b.log"), "dev": st.st_dev, "ino": st.st_ino}
    other["fp"] = __import__("hashlib").sha1(b"b-old\nb-new\n").hexdigest()
    other["fp_len"] = 12
    bad = {**good, key: value}
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checkpoints.json").write_text(
        json.dumps({"version": 1, "files": [bad, other]})
    )
    caplog.set_level(logging.WARNING)
    t = Tailer(cfg(tmp_path))
    await t.start()  # never raises
    c = Collector(t)
    await c.until(3)
    write(logs / "a.log", "third\n")  # and it keeps following the file
    await c.until(4)
    texts = await c.finish()
    # a.log is read as a new file (from its head: nothing skipped); b.log keeps
    # its own valid position.
    assert sorted(texts) == sorted(["first", "second", "third", "b-new"])
    assert t.read_errors == 0
    assert not [r for r in caplog.records if r.getMessage() == "read failed"]
    complaints = [r for r in caplog.records if "checkpoint" in r.getMessage()]
    assert len(complaints) == 1, [r.getMessage() for r in complaints]


@pytest.mark.parametrize(
    "content",
    [
        b'{"version":1,"files":[{"path":"/x","dev":1,',  # truncated
        b"\xff\xfe not utf-8",
        b"[]",
        b'{"files": 3}',
        b"null",
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON parser recurses
        b"",
    ],
    ids=["truncated", "binary", "list", "files-not-list", "null", "deep", "empty"],
)
async def test_corrupt_checkpoint_file_starts_over_and_keeps_running(
    tmp_path: Path, logs: Path, content: bytes
) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checkpoints.json").write_bytes(content)
    write(logs / "a.log", "x\ny\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    assert await c.finish() == ["x", "y"]
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == 4  # replaced by a good one


async def test_fifo_as_checkpoint_file_does_not_hang_start(tmp_path: Path, logs: Path) -> None:
    (tmp_path / "state").mkdir()
    os.mkfifo(tmp_path / "state" / "checkpoints.json")
    write(logs / "a.log", "x\n")
    done = threading.Event()
    rescued = []

    def rescue() -> None:
        # If start() blocks in open() waiting for a writer, be that writer after a
        # while, so the failure is an assertion rather than a hung suite.
        if not done.wait(5):
            rescued.append(True)
            with open(tmp_path / "state" / "checkpoints.json", "wb"):
                pass

    th = threading.Thread(target=rescue, daemon=True)
    th.start()
    t = Tailer(cfg(tmp_path))
    await t.start()
    done.set()
    c = Collector(t)
    assert await c.finish() == ["x"]
    assert not rescued, "start() blocked on the FIFO"


async def test_checkpoint_past_the_end_after_restart_reads_from_zero(
    tmp_path: Path, logs: Path
) -> None:
    """Issue 25: the file was truncated and rewritten (same first bytes, shorter
    than the checkpoint) while the program was down: every new line is read."""
    head = "h" * 300 + "\n"  # longer than the fingerprint: the fingerprint still matches
    write(logs / "a.log", head + "".join(f"old {i}\n" for i in range(50)))
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    await c.until(51)
    await c.finish()
    saved = json.loads((tmp_path / "state" / "checkpoints.json").read_text())
    assert saved["files"][0]["offset"] == (logs / "a.log").stat().st_size
    with open(logs / "a.log", "r+b") as fh:  # truncated in place: same inode
        fh.truncate(len(head))
        fh.seek(0, os.SEEK_END)
        fh.write(b"new 1\nnew 2\n")
    t = Tailer(cfg(tmp_path))
    await t.start()
    c = Collector(t)
    assert await c.finish() == ["h" * 300, "new 1", "new 2"]
