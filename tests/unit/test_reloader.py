"""reloader: hashing, link-aware watch planning, filters, process lookup, option checks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from podkit.sidecars.reloader import Reloader
from podkit.sidecars.reloader.actions import find_processes, parse_signal, read_pid_file
from podkit.sidecars.reloader.tree import Filter, Plan, resolve, scan

from podkit.options import UsageError
from podkit.runner import configure

ALL = Filter([], [])


def kubelet_write(target: Path, payload: dict[str, bytes], stamp: str) -> None:
    """The kubelet's atomic writer, in the order it acts."""
    ts = target / f"..{stamp}"
    ts.mkdir()
    for k, v in payload.items():
        (ts / k).write_bytes(v)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    os.symlink(ts.name, target / "..data_tmp")
    os.rename(target / "..data_tmp", target / "..data")
    for k in payload:
        if not (target / k).is_symlink():
            os.symlink(f"..data/{k}", target / k)
    if old:
        import shutil

        shutil.rmtree(target / old)


def test_hash_is_stable_across_a_kubelet_swap_with_same_content(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"a.yml": b"one", "b.yml": b"two"}, "2024_01_01_00_00_00.1")
    first = scan([str(tmp_path)], ALL)
    kubelet_write(tmp_path, {"a.yml": b"one", "b.yml": b"two"}, "2024_01_01_00_00_01.2")
    second = scan([str(tmp_path)], ALL)
    assert first.digest == second.digest
    assert first.files == 2  # the `..` internals are not counted twice
    kubelet_write(tmp_path, {"a.yml": b"one", "b.yml": b"TWO"}, "2024_01_01_00_00_02.3")
    assert scan([str(tmp_path)], ALL).digest != first.digest


def test_hash_depends_on_names_and_content(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    h1 = scan([str(tmp_path)], ALL).digest
    (tmp_path / "a").rename(tmp_path / "b")
    h2 = scan([str(tmp_path)], ALL).digest
    (tmp_path / "b").write_text("y")
    h3 = scan([str(tmp_path)], ALL).digest
    assert len({h1, h2, h3}) == 3
    (tmp_path / "b").write_text("x")
    (tmp_path / "b").rename(tmp_path / "a")
    assert scan([str(tmp_path)], ALL).digest == h1


def test_single_file_root_through_kubelet_links(tmp_path: Path) -> None:
    kubelet_write(tmp_path, {"app.yml": b"v1"}, "2024_01_01_00_00_00.1")
    plan = Plan()
    real = resolve(str(tmp_path / "app.yml"), plan)
    assert real == str(tmp_path / "..2024_01_01_00_00_00.1" / "app.yml")
    # The swap of ..data happens in the mount directory: it must be watched.
    assert {"app.yml", "..data"} <= plan.names[str(tmp_path)]
    s = scan([str(tmp_path / "app.yml")], ALL)
    assert s.files == 1
    assert plan.relevant(str(tmp_path / "..data"))
    assert not plan.relevant(str(tmp_path / "unrelated"))


def test_link_root_watches_target_and_link(tmp_path: Path) -> None:
    wt = tmp_path / ".worktrees"
    (wt / "r1").mkdir(parents=True)
    (wt / "r1" / "f").write_text("1")
    (tmp_path / "current").symlink_to(".worktrees/r1")
    s = scan([str(tmp_path / "current")], ALL)
    w = s.plan.watches()
    assert w[str(wt / "r1")] is True
    assert w[str(tmp_path)] is False  # non-recursive, for the link swap
    assert s.plan.relevant(str(tmp_path / "current"))
    assert not s.plan.relevant(str(tmp_path / "other"))


def test_linked_dir_outside_the_tree_is_followed_only_with_follow(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.conf").write_text("1")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "conf.d").symlink_to(outside)
    (tree / "loop").symlink_to(tree)  # must not recurse forever
    s = scan([str(tree)], ALL, follow=True)
    assert s.files == 1
    assert s.plan.watches() == {str(outside): True, str(tree): True, str(tmp_path): False}
    s = scan([str(tree)], ALL)
    assert s.files == 0
    assert s.skipped == {str(tree / "conf.d"): "outside"}


def test_links_leaving_the_tree_are_not_followed_by_default(tmp_path: Path) -> None:
    """A shared volume is not a way out: links to a secret, /proc/self/environ, a FIFO, a device."""
    secret = tmp_path / "secret"
    secret.write_text("hunter2")
    tree = tmp_path / "conf"
    tree.mkdir()
    kubelet_write(tree, {"app.yml": b"a: 1\n"}, "2024_01_01")  # the normal case keeps working
    (tree / "token").symlink_to(secret)
    (tree / "environ").symlink_to("/proc/self/environ")
    (tree / "zero").symlink_to("/dev/zero")
    os.mkfifo(tree / "..fifo_target")  # inside the tree, but a FIFO
    (tree / "pipe").symlink_to("..fifo_target")
    (tree / "sub").mkdir()
    (tree / "sub" / "up").symlink_to("../app.yml")  # inside: counts
    s = scan([str(tree)], ALL)
    assert s.files == 2 and not s.unstable and not s.errors
    assert s.skipped == {
        str(tree / "token"): "outside",
        str(tree / "environ"): "outside",
        str(tree / "zero"): "outside",
        str(tree / "pipe"): "special",
    }
    secret.write_text("changed")  # the secret is not in the hash
    assert scan([str(tree)], ALL).digest == s.digest
    # A watched file that is a link must stay in its own directory, too.
    assert scan([str(tree / "token")], ALL).skipped == {str(tree / "token"): "outside"}
    assert scan([str(tree / "app.yml")], ALL).files == 1
    assert scan([str(tree / "token")], ALL, follow=True).files == 1


def test_link_loop_is_reported_and_the_rest_still_counts(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "c").write_text("1")
    s = scan([str(tmp_path)], ALL)
    assert not s.unstable  # a loop is no reason to postpone the decision forever
    assert s.files == 1
    assert s.skipped == {str(tmp_path / "a"): "loop", str(tmp_path / "b"): "loop"}
    assert s.plan.relevant(str(tmp_path / "a"))  # fixing the loop is seen
    (tmp_path / "c").write_text("2")
    assert scan([str(tmp_path)], ALL).digest != s.digest
    # A --watch path that is itself a loop is reported the same way.
    root = scan([str(tmp_path / "a")], ALL)
    assert root.skipped == {str(tmp_path / "a"): "loop"} and not root.errors


def test_o_nofollow_refuses_a_link_swapped_in_after_the_check(tmp_path: Path) -> None:
    from podkit.sidecars.reloader.tree import _hash_file

    (tmp_path / "secret").write_text("x")
    (tmp_path / "f").symlink_to(tmp_path / "secret")
    import hashlib

    with pytest.raises(OSError):
        _hash_file(hashlib.sha256(), str(tmp_path / "f"), nofollow=True)


def test_filter_globs(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for n in ("a.yml", "b.txt", "sub/c.yml", "sub/d.swp"):
        (tmp_path / n).write_text(n)
    assert scan([str(tmp_path)], Filter(["*.yml"], [])).files == 2
    assert scan([str(tmp_path)], Filter([], ["*.swp", "sub/c.*"])).files == 2
    f = Filter(["*.yml"], ["sub/*"])
    assert f.wants("a.yml") and not f.wants("sub/c.yml") and not f.wants("b.txt")


def test_missing_root_is_hashed_and_its_parent_watched(tmp_path: Path) -> None:
    s = scan([str(tmp_path / "later")], ALL)
    assert s.files == 0 and not s.unstable
    assert s.plan.relevant(str(tmp_path / "later"))
    assert s.plan.watches() == {str(tmp_path): False}


def test_parse_signal() -> None:
    assert parse_signal("HUP") is signal.SIGHUP
    assert parse_signal("sigusr1") is signal.SIGUSR1
    assert parse_signal("15") is signal.SIGTERM
    with pytest.raises(ValueError):
        parse_signal("NOPE")


def test_find_processes_by_comm_and_argv0(tmp_path: Path) -> None:
    script = tmp_path / "findme-proc"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    script.chmod(0o755)
    p = subprocess.Popen([str(script)])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and p.pid not in find_processes("findme-proc"):
            time.sleep(0.02)
        assert find_processes("findme-proc") == [p.pid]
        assert find_processes("findme-proc", exclude={p.pid}) == []
    finally:
        p.kill()
        p.wait()
    assert find_processes("findme-proc") == []


def test_read_pid_file(tmp_path: Path) -> None:
    from podkit.hooks import HookError

    (tmp_path / "p").write_text("1234\n")
    assert read_pid_file(str(tmp_path / "p")) == 1234
    (tmp_path / "p").write_text("garbage")
    with pytest.raises(HookError):
        read_pid_file(str(tmp_path / "p"))
    with pytest.raises(HookError):
        read_pid_file(str(tmp_path / "missing"))
    # A FIFO (or /dev/zero) swapped in for the pid file: refused at once, no hang.
    os.mkfifo(tmp_path / "fifo.pid")
    for bad in (tmp_path / "fifo.pid", Path("/dev/zero")):
        with pytest.raises(HookError, match="not a regular file"):
            read_pid_file(str(bad))


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--watch", "/x"], "no action"),
        (["--watch", "/x", "--signal", "HUP"], "--signal: needs"),
        (["--watch", "/x", "--process", "a", "--pid-file", "/p"], "not both"),
        (["--watch", "/x", "--process", "a", "--signal", "BOGUS"], "--signal"),
        (["--watch", "/x", "--command-gates-reload"], "no action"),
        (["--watch", "/x", "--process", "a", "--command-gates-reload"], "needs --command"),
        (["--watch", "/x", "--webhook-url", "http://h/", "--webhook-header", "bad"], "header"),
        (["--watch", "/x", "--process", "a", "--bearer-token-file", "/t"], "need --webhook-url"),
        (["--watch", "/x", "--command", "true", "--resync-interval", "0s"], "--resync-interval"),
        (["--command", "true"], "--watch is required"),
        (["--watch", "/x", "--process", ""], "--process: an executable name"),
        (["--watch", "/x", "--webhook-url", "ftp://u:pw@h/"], "--webhook-url: not http"),
        (["--watch", "/x", "--process", "a", "--signal", "0"], "--signal: unknown signal '0'"),
        (["--watch", "/x", "--process", "/usr/sbin/nginx"], "--process: an executable name"),
    ],
)
def test_usage_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment.replace("-", r"\-")):
        configure(Reloader, argv, env={})


def test_defaults_and_implied_hup() -> None:
    p = configure(Reloader, ["--watch", "rel", "--process", "nginx"], env={})
    assert isinstance(p, Reloader)
    assert p._signal is signal.SIGHUP
    assert p.debounce == 1.0 and p.resync_interval == 180.0 and p.retry.max_backoff == 30.0
    assert p.watch == [os.path.abspath("rel")]
    assert p.admin_addr == "127.0.0.1:9413"
    env = {"PODKIT_COMMAND": "true", "PODKIT_WATCH": "/a,/b"}
    q = configure(Reloader, [], env=env)
    assert isinstance(q, Reloader)
    assert q.reload_command == "true" and q.watch == ["/a", "/b"]


async def test_watcher_extensions(tmp_path: Path) -> None:
    """podkit.watch.Watcher: per-directory recursion, remove(), alive(), reads=False."""
    import asyncio
    import shutil

    from podkit.watch import Change, Watcher

    seen: list[Change] = []
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("x")
    w = Watcher([], seen.append, reads=False)
    w.start()
    try:
        w.add(str(tmp_path), recursive=False)
        w.add(str(tmp_path / "tree"), recursive=True)
        assert w.alive(str(tmp_path / "tree"))

        marks = 0

        async def settle(via: Path) -> list[str]:
            """The events before a sentinel written under `via` after them.

            The sentinel goes in the watch the awaited (or absent) event
            belongs to: events keep their order within one watch, which is
            all this needs (podkit.watch reads one inotify instance, whose
            order holds across watches too, but the polling fallback's not).
            """
            nonlocal marks
            marks += 1
            mark = via / f".sentinel{marks}"
            mark.write_text("")
            deadline = time.monotonic() + 10
            while str(mark) not in [c.path for c in seen]:
                assert time.monotonic() < deadline, f"no event for {mark}"
                await asyncio.sleep(0.01)
            # The sentinel's own events, and its directory's "modified", are not news.
            out = [c.path for c in seen if ".sentinel" not in c.path and c.path != str(via)]
            seen.clear()
            return out

        # Reading does not wake the watcher.
        (tmp_path / "tree" / "sub" / "f").read_text()
        assert await settle(tmp_path / "tree" / "sub") == []
        (tmp_path / "tree" / "sub" / "f").write_text("y")
        assert str(tmp_path / "tree" / "sub" / "f") in await settle(tmp_path / "tree" / "sub")
        # The non-recursive watch on tmp_path does not see into other subdirectories.
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "g").write_text("z")
        assert str(tmp_path / "other" / "g") not in await settle(tmp_path)
        # A deleted directory's watch ends; remove() + add() brings it back.
        shutil.rmtree(tmp_path / "tree")
        (tmp_path / "tree").mkdir()
        deadline = time.monotonic() + 10
        while w.alive(str(tmp_path / "tree")):
            assert time.monotonic() < deadline, "the deleted directory's watch still alive"
            await asyncio.sleep(0.01)
        seen.clear()
        w.remove(str(tmp_path / "tree"))
        w.add(str(tmp_path / "tree"), recursive=True)
        (tmp_path / "tree" / "new").write_text("1")
        assert str(tmp_path / "tree" / "new") in await settle(tmp_path / "tree")
        with pytest.raises(OSError):
            w.add(str(tmp_path / "missing"), recursive=True)
        assert str(tmp_path / "missing") not in w.dirs
    finally:
        await w.stop()


async def test_unwatchable_directory_is_reported_not_fatal(tmp_path: Path) -> None:
    """inotify's max_user_watches reached: the scan still hashes, / says why, resync covers."""
    import errno

    (tmp_path / "a.conf").write_text("1")
    p = configure(Reloader, ["--watch", str(tmp_path), "--command", "true"], env={})
    assert isinstance(p, Reloader)
    await p.setup()

    def full(directory: str, recursive: bool | None = None) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    p.watcher.add = full
    try:
        await p._check("start")
        st = p.status()
        assert st["current_hash"] and st["files"] == 1
        assert st["watches"] == {}
        assert any("No space left" in e for e in st["watch_errors"])
    finally:
        await p.cleanup()


def test_fifo_and_device_are_not_read(tmp_path: Path) -> None:
    """A FIFO (or /dev/zero) as a watched file must not hang or never end the scan."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "dir" / "fifo")
    (tmp_path / "dir" / "a").write_text("1")
    s = scan([str(tmp_path / "fifo"), "/dev/zero", str(tmp_path / "dir")], ALL)
    assert s.files == 1  # only dir/a
    assert len(s.errors) == 2 and all("not a regular file" in e for e in s.errors)


def test_signal_failures_are_hook_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """No process, a process gone meanwhile, and a refused signal fail the reload (retried)."""
    from podkit.sidecars.reloader.actions import send_signal

    from podkit.hooks import HookError

    with pytest.raises(HookError, match="no such process"):
        send_signal([], signal.SIGHUP, "--process app")

    def kill(pid: int, sig: int) -> None:
        if pid == 1:
            raise PermissionError(1, "Operation not permitted")
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(os, "kill", kill)
    with pytest.raises(HookError, match="exited before"):
        send_signal([4242], signal.SIGHUP, "--process app")
    with pytest.raises(HookError, match="SIGHUP to pid 1 refused"):
        send_signal([4242, 1], signal.SIGHUP, "--process app")


def _sleeping(token: str) -> bool:
    """Is a live (not zombie) `sleep TOKEN` running?"""
    want = f"sleep\0{token}\0".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/cmdline").read_bytes() != want:
                continue
            stat_line = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        if stat_line[stat_line.rfind(b")") + 2 : stat_line.rfind(b")") + 3] not in (b"Z", b"X"):
            return True
    return False


async def test_run_command_output_and_group_kill() -> None:
    """podkit.hooks.run_command (reloader's --command): exit code and output tail; a
    timeout and a cancel (shutdown), even one that lands while the process is being
    started, kill the shell's children too, not just the shell."""
    import asyncio
    import time

    from podkit.hooks import run_command

    code, out = await run_command(["/bin/sh", "-c", 'echo "$X"; echo err >&2; exit 3'],
                                  timeout=10, env={"X": "from env"})  # fmt: skip
    assert (code, out) == (3, "from env\nerr")

    async def until(pred: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not pred():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    for case in ("timeout", "cancel", "cancel-while-starting"):
        token = f"{60 + os.getpid() % 1000}.{len(case)}{os.getpid()}"  # unique argv
        timeout = 1.0 if case == "timeout" else 60.0
        task = asyncio.create_task(
            run_command(["/bin/sh", "-c", f"sleep {token} & wait"], timeout=timeout)
        )
        if case == "cancel-while-starting":
            for _ in range(3):  # into create_subprocess_exec: the shell is forked, not awaited
                await asyncio.sleep(0)
        else:
            await until(lambda t=token: _sleeping(t), f"{case}: the child to start")
        if case == "timeout":
            assert await task == (None, "")
        else:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.5)  # a start that was under way completes meanwhile
        await until(lambda t=token: not _sleeping(t), f"{case}: the shell's child survived")


def test_render_substitution_escapes_and_files(tmp_path: Path) -> None:
    import gzip

    from podkit.sidecars.reloader.render import MAX_BYTES, RenderError, Spec, render, write

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pw").write_text("s3cr3t\n")
    src = tmp_path / "t.yml"
    src.write_text(
        "a: $(A) b: ${B_1} keep: $1 ${1} $$(A) $${B_1} $(lower) pw: $(file:%s)\n" % (secrets / "pw")
    )
    spec = Spec.parse(f"{src}:{tmp_path / 'out.yml'}")
    env = {"A": "x", "B_1": "y", "lower": "z"}
    r = render(spec, env, [str(secrets)])
    assert r.data == b"a: x b: y keep: $1 ${1} $(A) ${B_1} z pw: s3cr3t\n"
    assert r.files == [str(secrets / "pw")]
    assert write(r) and not write(r)  # the second time it is already there
    assert (tmp_path / "out.yml").read_bytes() == r.data
    with pytest.raises(RenderError, match="B_1 is not set"):
        render(spec, {"A": "x", "lower": "z"}, [str(secrets)])
    with pytest.raises(RenderError, match="outside every --render-files-from"):
        render(spec, env, [])
    (secrets / "link").symlink_to("/etc/hostname")  # a link out of the allowed directory
    src.write_text("$(file:%s)" % (secrets / "link"))
    with pytest.raises(RenderError, match="outside"):
        render(spec, env, [str(secrets)])
    gz = tmp_path / "t.yml.gz"
    gz.write_bytes(gzip.compress(b"v: $(A)\n"))
    assert render(Spec(str(gz), str(tmp_path / "o")), env, []).data == b"v: x\n"
    gz.write_bytes(gzip.compress(b"\0" * (MAX_BYTES + 10)))  # a gzip bomb
    with pytest.raises(RenderError, match="expands to more than"):
        render(Spec(str(gz), str(tmp_path / "o")), env, [])
    with pytest.raises(ValueError):
        Spec.parse("only-one-path")
    # A template that is a link out of its directory is refused unless --follow-symlinks.
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "t.yml").symlink_to(secrets / "pw")
    linked = Spec(str(tmp_path / "conf" / "t.yml"), str(tmp_path / "o"))
    with pytest.raises(RenderError, match="a link out of its directory"):
        render(linked, env, [])
    assert render(linked, env, [], follow=True).data == b"s3cr3t\n"


def test_rendered_dest_keeps_its_old_content_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from podkit.sidecars.reloader.render import Rendered, Spec, write

    target = tmp_path / "f"
    target.write_bytes(b"old")

    def full(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError):
        write(Rendered(Spec(str(tmp_path / "t"), str(target)), b"new"))
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--one-time", "--watch", "/x"], "--one-time: needs --render"),
        (["--render", "nocolon", "--command", "true"], "--render: not SRC:DEST"),
        (["--watch", "/x", "--command", "true", "--verify-json", "$.a"], "need --verify-url"),
        (["--watch", "/x", "--command", "true", "--verify-url", "http://h/"], "give --verify-json"),
        (
            [
                "--watch",
                "/x",
                "--command",
                "true",
                "--verify-url",
                "http://h/",
                "--verify-json",
                "a",
            ],
            "starts with $",
        ),
    ],
)
def test_render_and_verify_usage_errors(argv: list[str], fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)):
        configure(Reloader, argv)
