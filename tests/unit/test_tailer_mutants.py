"""The tailer's checkpoints and restore at their edges: what is refused, what is
read again after a restart, and what is never read twice or skipped.

Written against the survivors of `make mutate` over podkit/tailer/checkpoints.py,
core.py (`_open`) and files.py (docs/testing.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from podkit.tailer import Tailer
from podkit.tailer.checkpoints import _read_state_file, checkpoint_entry_error
from podkit.tailer.discovery import _Skip
from podkit.tailer.files import TAIL_BYTES, _File
from tests.unit.test_tailer import Collector, cfg, write

SHA = "0123456789abcdef" * 2 + "01234567"


def entry(**kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"path": "/l/a.log", "dev": 1, "ino": 2, "offset": 3, "fp_len": 4}
    e["fp"] = SHA
    e.update(kw)
    return e


@pytest.mark.parametrize(
    ("e", "why"),
    [
        (entry(), None),
        (entry(partial=True, tail=SHA), None),
        ([], "not an object"),
        (entry(offset="3"), "offset is not an integer"),
        (entry(offset=True), "offset is not an integer"),
        (entry(ino=-1), "ino is negative"),
        (entry(fp_len=257), "fp_len is larger than 256"),
        (entry(fp_len=256), None),
        (entry(fp="z" * 40), "fp is not a SHA-1 in hex"),  # the right length, not hex
        (entry(fp="X" * 40), "fp is not a SHA-1 in hex"),
        (entry(fp="abc"), "fp is not a SHA-1 in hex"),  # hex, not the right length
        (entry(fp=SHA.upper()), "fp is not a SHA-1 in hex"),
        (entry(path=""), "path is not a string"),
        (entry(path=7), "path is not a string"),
        (entry(partial="yes"), "partial is not a boolean"),
        (entry(tail="abc"), "tail is not a SHA-1 in hex"),
        (entry(tail=5), "tail is not a SHA-1 in hex"),
    ],
)
def test_checkpoint_entry_refusals_say_why(e: Any, why: str | None) -> None:
    assert checkpoint_entry_error(e) == why


def test_state_file_limit_is_inclusive_and_counts_every_read(tmp_path: Path) -> None:
    p = tmp_path / "s"
    data = b"x" * ((1 << 20) + (1 << 19))  # more than one read of 1 MiB
    p.write_bytes(data)
    assert _read_state_file(str(p), len(data)) == data
    with pytest.raises(ValueError, match=f"larger than {len(data) - 1} bytes"):
        _read_state_file(str(p), len(data) - 1)
    with pytest.raises(ValueError, match=f"larger than {(1 << 20) + 1} bytes"):
        _read_state_file(str(p), (1 << 20) + 1)  # each read under it, the sum over


def test_state_file_must_be_a_regular_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match=r"^not a regular file$"):
        _read_state_file(str(tmp_path / "fifo"), 100)


def _file(path: Path, offset: int = 0) -> _File:
    fd = os.open(path, os.O_RDONLY)
    return _File(str(path), fd, os.fstat(fd), offset)


def test_bytes_before_is_all_or_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"0123456789")
    f = _file(p)
    assert f.bytes_before(4) == b"0123"
    assert f.bytes_before(20) == b""  # fewer bytes than asked: the file is shorter now
    assert f.same_before(4, b"") is True  # nothing known: nothing contradicts
    assert f.same_before(4, b"23") is True
    assert f.same_before(4, b"xx") is False
    f.close()
    assert f.bytes_before(4) == b""  # an unreadable file: nothing known


# -- restarts ------------------------------------------------------------------------


async def _run_once(tmp: Path, ack: bool = True) -> list[str]:
    t = Tailer(cfg(tmp))
    await t.start()
    return await Collector(t, ack=ack).finish()


def _saved(tmp: Path) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = json.loads((tmp / "state" / "checkpoints.json").read_text())[
        "files"
    ]
    return files


async def test_restart_resumes_exactly_after_the_acknowledged_bytes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "one\ntwo\n")
    assert await _run_once(tmp_path) == ["one", "two"]
    [e] = _saved(tmp_path)
    assert e["offset"] == 8 and e["partial"] is False and e["path"] == str(logs / "a.log")
    write(logs / "a.log", "three\n")
    assert await _run_once(tmp_path) == ["three"]
    assert _saved(tmp_path)[0]["offset"] == 14


async def test_checkpoint_past_the_end_reads_the_file_again(tmp_path: Path) -> None:
    """Truncated while stopped (same inode, same first bytes, shorter): every line
    now in the file is read, none skipped."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "first line\n" + "x" * 40 + "\n")
    assert len(await _run_once(tmp_path)) == 2
    with open(logs / "a.log", "r+b") as f:
        f.truncate(11)
    write(logs / "a.log", "new\n")  # 15 bytes: less than the 52 checkpointed
    assert await _run_once(tmp_path) == ["first line", "new"]


async def test_checkpoint_exactly_at_the_end_reads_nothing_again(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "a\nb\n")
    assert await _run_once(tmp_path) == ["a", "b"]
    assert await _run_once(tmp_path) == []
    write(logs / "a.log", "c\n")
    assert await _run_once(tmp_path) == ["c"]


async def test_rewritten_before_the_offset_is_read_from_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    head = "h" * 300 + "\n"  # past the fingerprint: the same first bytes
    write(logs / "a.log", head + "old line\n")
    assert len(await _run_once(tmp_path)) == 2
    with open(logs / "a.log", "r+b") as f:  # same inode, same size, other content
        f.seek(len(head))
        f.write(b"new line\n")
    caplog.set_level("INFO", logger="podkit.tailer")
    assert await _run_once(tmp_path) == ["h" * 300, "new line"]
    said = [
        getattr(r, "path", None)
        for r in caplog.records
        if r.getMessage() == "file rewritten while we were away; reading it from the start"
    ]
    assert said == [str(logs / "a.log")]


async def test_the_tail_hash_is_of_the_bytes_before_the_offset(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    body = "".join(f"line {i:04d}\n" for i in range(100))
    write(logs / "a.log", body)
    await _run_once(tmp_path)
    [e] = _saved(tmp_path)
    data = body.encode()
    assert e["tail"] == hashlib.sha1(data[len(data) - TAIL_BYTES :]).hexdigest()
    assert e["fp_len"] == 256 and e["fp"] == hashlib.sha1(data[:256]).hexdigest()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"files": 3}', "not a checkpoint object with a files list"),
        (b"[]", "not a checkpoint object with a files list"),
        (b"{", "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ],
)
async def test_an_unreadable_checkpoint_file_starts_over_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, error: str
) -> None:
    """The operator's only sign that lines may come twice is this error line."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "a\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "checkpoints.json").write_bytes(content)
    caplog.set_level("INFO", logger="podkit.tailer")
    assert await _run_once(tmp_path) == ["a"]
    [rec] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert rec.getMessage() == "cannot read checkpoints; starting over"
    assert getattr(rec, "error", None) == error
    assert getattr(rec, "path", None) == str(tmp_path / "state" / "checkpoints.json")


def _sha(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


def test_a_checkpoint_tail_is_what_was_read_before_the_acknowledged_offset(
    tmp_path: Path,
) -> None:
    p = tmp_path / "a.log"
    data = bytes(range(256)) * 3  # 768 bytes, no two windows alike
    p.write_bytes(data)
    f = _file(p, offset=300)  # resumed at 300: acknowledged up to there
    assert f.checkpoint()["tail"] == _sha(data[300 - TAIL_BYTES : 300])
    # Read on to 600 (the reader keeps the tail before read_pos), nothing acked yet:
    # the entry is about offset 300, so its tail is the bytes before 300.
    f.read_pos, f.tail = 600, f.bytes_before(600)
    e = f.checkpoint()
    assert e["offset"] == 300 and e["tail"] == _sha(data[300 - TAIL_BYTES : 300])
    # Near the start of the file the tail is shorter, never padded.
    g = _file(p, offset=4)
    g.read_pos, g.tail = 10, g.bytes_before(10)
    assert g.checkpoint()["tail"] == _sha(data[:4])
    f.close()
    g.close()


def test_a_checkpoint_tail_is_what_was_read_not_what_is_there_now(tmp_path: Path) -> None:
    """Rewritten under us after reading: the entry describes what was handed on,
    so a restart notices the rewrite instead of trusting the offset."""
    p = tmp_path / "a.log"
    p.write_bytes(b"0123456789")
    f = _file(p, offset=10)
    with open(p, "r+b") as w:
        w.write(b"abcdefghij")
    assert f.checkpoint()["tail"] == _sha(b"0123456789")
    f.close()


async def test_one_bad_entry_costs_only_its_own_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "a1\n")
    write(logs / "b.log", "b1\n")
    assert sorted(await _run_once(tmp_path)) == ["a1", "b1"]
    ckpt = tmp_path / "state" / "checkpoints.json"
    data = json.loads(ckpt.read_text())
    bad = next(e for e in data["files"] if e["path"].endswith("a.log"))
    bad["offset"] = "3"
    bad["junk"] = "j" * 300
    ckpt.write_text(json.dumps(data))
    caplog.set_level("INFO", logger="podkit.tailer")
    assert await _run_once(tmp_path) == ["a1"]  # a.log read again, b.log not
    [rec] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert rec.getMessage() == "checkpoint entry discarded; its file is read as a new one"
    assert getattr(rec, "error", None) == "offset is not an integer"
    assert getattr(rec, "path", None) == str(ckpt)
    assert getattr(rec, "entry", None) == str(bad)[:200]


async def test_refused_files_are_counted_and_said_with_their_detail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "pipe.log")
    os.symlink("loop2.log", logs / "loop1.log")
    os.symlink("loop1.log", logs / "loop2.log")
    write(logs / "a.log", "a\n")
    caplog.set_level("INFO", logger="podkit.tailer")
    t = Tailer(cfg(tmp_path))
    await t.start()
    try:
        refused = {Path(s["path"]).name: s["reason"] for s in t.skipped_files()}
        assert refused == {
            "pipe.log": "not_regular",
            "loop1.log": "symlink_loop",
            "loop2.log": "symlink_loop",
        }
        assert t.skipped["symlink_loop"] == 2 and t.skipped["not_regular"] == 1
        said = {
            (Path(getattr(r, "path", "")).name, getattr(r, "detail", None))
            for r in caplog.records
            if r.getMessage().startswith("not following file")
        }
        mode = stat.filemode(os.lstat(logs / "pipe.log").st_mode)  # prw-r--r-- under umask 022
        assert said == {("pipe.log", mode), ("loop1.log", None), ("loop2.log", None)}
    finally:
        await t.close()


async def test_a_checkpoint_past_the_end_with_the_same_first_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated while stopped but still longer than the fingerprint: the first bytes
    match, so only the size tells that the offset is past the end (issue 25: lines
    written after the truncation were silently skipped)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    first = "f" * 299 + "\n"  # the whole fingerprint is in this line
    write(logs / "a.log", first + "second line that goes\n" * 10)
    assert len(await _run_once(tmp_path)) == 11
    offset = _saved(tmp_path)[0]["offset"]
    with open(logs / "a.log", "r+b") as f:
        f.truncate(len(first))
    write(logs / "a.log", "after the truncation\n")
    size = (logs / "a.log").stat().st_size
    assert 256 < size < offset
    caplog.set_level("INFO", logger="podkit.tailer")
    assert await _run_once(tmp_path) == ["f" * 299, "after the truncation"]
    [rec] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert rec.getMessage() == "checkpoint beyond the end of the file; reading it from the start"
    assert (getattr(rec, "offset", None), getattr(rec, "size", None)) == (offset, size)
    assert getattr(rec, "path", None) == str(logs / "a.log")


@pytest.mark.parametrize(
    ("error", "reason", "detail"),
    [
        (OSError(errno.ELOOP, "loop"), "symlink_loop", None),
        (OSError(errno.EIO, "disk"), "open_failed", "[Errno 5] disk"),
        (OSError(errno.ENOENT, "gone"), None, None),  # deleted since discovery: no refusal
        (OSError(errno.ENOTDIR, "gone"), None, None),
        (_Skip("symlink_outside", "/elsewhere/x.log"), "symlink_outside", "/elsewhere/x.log"),
    ],
)
async def test_open_failures_are_told_apart(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    reason: str | None,
    detail: str | None,
) -> None:
    """What happens between discovery's stat and the open (a race discovery cannot see)."""
    t = Tailer(cfg(tmp_path))

    def fail(path: str, base: tuple[str, str]) -> tuple[int, os.stat_result]:
        raise error

    monkeypatch.setattr(t, "_open_checked", fail)
    caplog.set_level("INFO", logger="podkit.tailer")
    path = str(tmp_path / "logs" / "a.log")
    assert t._open(path, False, (str(tmp_path), str(tmp_path))) is None
    counted = {k: v for k, v in t.skipped.items() if v}
    said = [
        (getattr(r, "path", None), getattr(r, "detail", None))
        for r in caplog.records
        if r.getMessage().startswith("not following file")
    ]
    if reason is None:
        assert counted == {} and said == [] and t.read_errors == 0
        return
    assert counted == {reason: 1}
    assert said == [(path, detail)]
    assert t.read_errors == (1 if reason == "open_failed" else 0)


async def test_new_content_in_a_checkpointed_inode_is_read_whole_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "old\n" * 10)
    assert len(await _run_once(tmp_path)) == 10
    with open(logs / "a.log", "r+b") as f:  # same inode, other first bytes, longer
        f.write(b"new\n" * 12)
    caplog.set_level("INFO", logger="podkit.tailer")
    assert await _run_once(tmp_path) == ["new"] * 12
    said = [
        getattr(r, "path", None)
        for r in caplog.records
        if r.getMessage() == "inode reused by a new file; reading it from the start"
    ]
    assert said == [str(logs / "a.log")]


async def test_a_partial_line_sent_before_a_restart_is_not_sent_again(tmp_path: Path) -> None:
    """A last line flushed without its newline (--partial-flush-timeout) is
    checkpointed as partial: after a restart its newline ends it; no empty line."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "one\nabc")

    async def run(n: int) -> list[str]:
        t = Tailer(cfg(tmp_path, partial_flush_timeout=0.2))
        await t.start()
        c = Collector(t)
        await c.until(n)
        return await c.finish()

    assert await run(2) == ["one", "abc"]
    [e] = _saved(tmp_path)
    assert (e["offset"], e["partial"]) == (7, True)
    t = Tailer(cfg(tmp_path, partial_flush_timeout=0.2))  # a restart with nothing new:
    await t.start()
    assert await Collector(t).finish() == []
    assert _saved(tmp_path)[0]["partial"] is True  # ... keeps knowing the line went out
    write(logs / "a.log", "\nnext\n")
    assert await run(1) == ["next"]
    [e] = _saved(tmp_path)
    assert (e["offset"], e["partial"]) == (13, False)


async def test_read_from_tail_keeps_its_place_across_a_quiet_restart(tmp_path: Path) -> None:
    """Started at the end of a file and stopped before anything was appended: the
    position is still checkpointed, so lines written while stopped are read."""
    logs = tmp_path / "logs"
    logs.mkdir()
    write(logs / "a.log", "old\n")
    t = Tailer(cfg(tmp_path, read_from="tail"))
    await t.start()
    assert await Collector(t).finish() == []
    write(logs / "a.log", "while stopped\n")
    t = Tailer(cfg(tmp_path, read_from="tail"))
    await t.start()
    assert await Collector(t).finish() == ["while stopped"]
