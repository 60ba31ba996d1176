"""reloader as a real subprocess against a real HTTP peer and real child processes.

The webhook receiver is a small aiohttp server run by the test in a thread:
it is the real HTTP peer (the reloader talks to it over loopback), and it can
be taken down and brought back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import ProgramProcess, free_port, stays, wait_until
from tests.peers.aioapp import AppServer, LoopThread, app_of
from tests.peers.prometheus import ConfiguredPrometheus, promtool_check


class Receiver:
    """An aiohttp webhook target on a fixed port that records every call."""

    def __init__(self, status: int = 200) -> None:
        self.port = free_port()
        self.status = status
        self.delay = 0.0
        self.calls: list[dict[str, Any]] = []
        self._thread = LoopThread()
        self._server: AppServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/-/reload"

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.append(
            {"method": request.method, "headers": dict(request.headers), "t": time.monotonic()}
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, text="ok")

    def up(self) -> Receiver:
        app = app_of(self._handle, "*", "/-/reload")
        self._server = self._thread.serve(app, self.port, reuse_address=True)
        return self

    def down(self) -> None:
        if self._server is not None:
            self._thread.unserve(self._server)
            self._server = None

    def close(self) -> None:
        self._thread.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().up()
    yield r
    r.close()


def atomic_write(target: Path, payload: dict[str, bytes]) -> None:
    """kubernetes' AtomicWriter.Write, step by step: timestamped directory with
    the payload, `..data_tmp` symlink to it, renamed over `..data`, user-visible
    links for new keys, then the old timestamped directory removed."""
    target.mkdir(parents=True, exist_ok=True)
    data = target / "..data"
    old = os.readlink(data) if data.is_symlink() else None
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    ts = Path(
        __import__("tempfile").mkdtemp(prefix=f"..{stamp}.", dir=target)
    )  # os.MkdirTemp, as the kubelet does
    for key, value in payload.items():
        (ts / key).write_bytes(value)
        (ts / key).chmod(0o644)
    tmp_link = target / "..data_tmp"
    os.symlink(ts.name, tmp_link)
    os.rename(tmp_link, data)
    for key in payload:
        if not (target / key).is_symlink():
            os.symlink(f"..data/{key}", target / key)
    for stale in target.iterdir():
        if not stale.name.startswith("..") and stale.name not in payload:
            stale.unlink()
    if old:
        shutil.rmtree(target / old)


def reloader(tmp_path: Path, *args: str) -> ProgramProcess:
    return ProgramProcess("reloader", ["--log-level", "debug", *args], tmp=tmp_path, env={"V": "x"})


def metric(proc: ProgramProcess, name: str) -> float:
    # podkit.testing's: an absent series fails the test instead of reading 0.
    return proc.metric(name)


def labelled(proc: ProgramProcess, name: str, result: str) -> float:
    return proc.metric(name, result=result)


def status(proc: ProgramProcess) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(proc.get("/")[2])
    return data


def calls_reach(receiver: Receiver, n: int) -> Any:
    return lambda: len(receiver.calls) >= n


@pytest.mark.parametrize("root", ["dir", "file"])
def test_kubelet_atomic_writer_20_updates(tmp_path: Path, receiver: Receiver, root: str) -> None:
    conf = tmp_path / "conf"
    atomic_write(conf, {"app.yml": b"v0", "other.yml": b"o"})
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    watch = str(conf) if root == "dir" else str(conf / "app.yml")
    with reloader(
        tmp_path,
        "--watch", watch,
        "--webhook-url", receiver.url,
        "--webhook-method", "PUT",
        "--webhook-header", "X-From: podkit",
        "--bearer-token-file", str(token),
        "--debounce", "150ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        # No reload at start without --reload-on-start: one would be a 21st
        # call, which the exact counts below (20 calls, 20 successes) refuse.
        assert receiver.calls == []
        for i in range(1, 21):
            atomic_write(conf, {"app.yml": b"v%d" % i, "other.yml": b"o"})
            wait_until(calls_reach(receiver, i), 10, what=f"webhook call {i}")
        # Identical content through a full swap: no call.
        atomic_write(conf, {"app.yml": b"v20", "other.yml": b"o"})
        assert stays(lambda: len(receiver.calls) == 20, 1.5)
        if root == "file":
            # A change to another key of the same volume does not concern this file.
            atomic_write(conf, {"app.yml": b"v20", "other.yml": b"changed"})
            assert stays(lambda: len(receiver.calls) == 20, 1.0)
        call = receiver.calls[-1]
        assert call["method"] == "PUT"
        assert call["headers"]["Authorization"] == "Bearer s3cr3t-token"
        assert call["headers"]["X-From"] == "podkit"
        assert labelled(p, "podkit_reloader_reloads_total", "success") == 20
        assert metric(p, "podkit_reloader_last_reload_successful") == 1
        assert metric(p, "podkit_reloader_last_reload_success_timestamp_seconds") > 0
        assert metric(p, "podkit_reloader_watch_events_total") >= 20
        st = status(p)
        assert st["current_hash"] == st["last_success_hash"]
        assert st["last_reload"]["result"] == "success"
        assert st["retry"] is None
        assert "s3cr3t-token" not in p.stderr()
        promtool_check(p.get("/metrics")[2])


def test_write_storm_gives_one_reload(tmp_path: Path, receiver: Receiver) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("start")
    with reloader(
        tmp_path, "--watch", str(conf), "--webhook-url", receiver.url, "--debounce", "1s"
    ) as p:
        p.wait_ready()
        start = time.monotonic()
        for i in range(100):
            (conf / "a.conf").write_text(f"write {i}")
            if i % 10 == 9:
                (conf / f"new{i}.conf").write_text("x")
            time.sleep(max(0.0, start + (i + 1) * 0.002 - time.monotonic()))
        # Paced at 2 ms; a loaded machine may stretch it, but never to a 1 s pause.
        assert time.monotonic() - start < 0.9
        wait_until(lambda: len(receiver.calls) >= 1, 10, what="the reload")
        assert stays(lambda: len(receiver.calls) == 1, 2.0)
        assert metric(p, "podkit_reloader_watch_events_total") >= 100


def test_webhook_down_10s_then_up_delivers_once(tmp_path: Path, receiver: Receiver) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    receiver.down()
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--webhook-url", receiver.url,
        "--debounce", "100ms",
        "--retry-max-backoff", "2s",
    ) as p:  # fmt: skip
        p.wait_ready()
        (conf / "a.conf").write_text("2")
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 2, 10)
        st = status(p)
        assert st["retry"]["pending"] is True
        assert st["last_reload"]["result"] == "failure"
        assert metric(p, "podkit_reloader_last_reload_successful") == 0
        # A sustained outage: the backoff (capped at 2s) has run its course
        # several times, which is what the ten seconds of the name were for.
        wait_until(
            lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 6,
            30,
            what="six failed attempts",
        )
        receiver.up()
        wait_until(lambda: len(receiver.calls) >= 1, 10, what="the retried reload")
        assert stays(lambda: len(receiver.calls) == 1, 2.5)
        st = status(p)
        assert st["retry"] is None and st["last_reload"]["result"] == "success"
        assert metric(p, "podkit_reloader_last_reload_successful") == 1
        assert any(r["message"] == "action failed; will retry" for r in p.records())


COUNTER = """\
#!{python}
import os, signal, sys, time
out = sys.argv[1]
n = 0
def on_hup(signum, frame):
    global n
    n += 1
    with open(out + ".tmp", "w") as f:
        f.write(str(n))
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGHUP, on_hup)
if len(sys.argv) > 2:
    with open(sys.argv[2], "w") as f:
        f.write(str(os.getpid()))
while True:
    time.sleep(3600)
"""


def hups(path: Path) -> int:
    try:
        return int(path.read_text() or 0)
    except FileNotFoundError:
        return 0


@pytest.fixture
def counter_script(tmp_path: Path) -> Path:
    # A name unique to this run: a concurrent run of this suite on the machine
    # (the same PID namespace) must not be found, and signalled, by --process.
    script = tmp_path / f"hup{uuid.uuid4().hex[:10]}"
    script.write_text(COUNTER.format(python=sys.executable))
    script.chmod(0o755)
    return script


def test_signal_by_process_name(tmp_path: Path, counter_script: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    count = tmp_path / "count"
    # Run through its shebang: the kernel names the process after the script.
    child = subprocess.Popen([str(counter_script), str(count)])
    try:
        with reloader(
            tmp_path, "--watch", str(conf), "--process", counter_script.name, "--debounce", "100ms"
        ) as p:
            p.wait_ready()
            (conf / "a.conf").write_text("2")
            wait_until(lambda: hups(count) == 1, 10, what="first SIGHUP")
            (conf / "b.conf").write_text("new")
            wait_until(lambda: hups(count) == 2, 10, what="second SIGHUP")
            assert stays(lambda: hups(count) == 2, 1.0)
            assert child.poll() is None
            rec = p.wait_log("signalled")
            assert rec["pids"] == [child.pid] and rec["signal"] == "SIGHUP"
    finally:
        child.kill()
        child.wait()


def test_signal_by_pid_file_retries_until_the_process_exists(
    tmp_path: Path, counter_script: Path
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    count, pidfile = tmp_path / "count", tmp_path / "app.pid"
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--pid-file", str(pidfile),
        "--signal", "SIGHUP",
        "--debounce", "100ms",
        "--retry-max-backoff", "500ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        (conf / "a.conf").write_text("2")
        # No pid file yet: the reload fails and is retried.
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 1, 10)
        child = subprocess.Popen([str(counter_script), str(count), str(pidfile)])
        try:
            wait_until(lambda: hups(count) == 1, 10, what="the retried SIGHUP")
            assert stays(lambda: hups(count) == 1, 1.0)
            (conf / "a.conf").write_text("3")
            wait_until(lambda: hups(count) == 2, 10, what="second SIGHUP")
        finally:
            child.kill()
            child.wait()


def test_gitsync_style_link_swap(tmp_path: Path, receiver: Receiver) -> None:
    repo = tmp_path / "repo"
    wt = repo / ".worktrees"

    def publish(rev: str, files: dict[str, str]) -> None:
        (wt / rev).mkdir(parents=True)
        # As in a git worktree: a .git file naming the revision, not content.
        (wt / rev / ".git").write_text(f"gitdir: {repo}/.git/worktrees/{rev}\n")
        for k, v in files.items():
            (wt / rev / k).write_text(v)
        old = os.readlink(repo / "current") if (repo / "current").is_symlink() else None
        os.symlink(f".worktrees/{rev}", repo / "current.tmp")
        os.rename(repo / "current.tmp", repo / "current")
        if old:
            shutil.rmtree(repo / old)

    publish("r1", {"rules.yml": "a"})
    assert (repo / "current" / ".git").exists()
    with reloader(
        tmp_path,
        "--watch", str(repo / "current"),
        "--webhook-url", receiver.url,
        "--debounce", "100ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        publish("r2", {"rules.yml": "b"})
        wait_until(lambda: len(receiver.calls) == 1, 10, what="reload after the swap")
        # The watch followed the link: an in-place edit of the new target is seen.
        wait_until(lambda: any("r2" in d for d in status(p)["watches"]), 5)
        (wt / "r2" / "rules.yml").write_text("c")
        wait_until(lambda: len(receiver.calls) == 2, 10, what="reload after an in-place edit")
        publish("r3", {"rules.yml": "c"})  # same content, new revision: no reload
        assert stays(lambda: len(receiver.calls) == 2, 1.0)
        assert not any(".worktrees/r1" in d for d in status(p)["watches"])


def test_command_gates_reload(tmp_path: Path, receiver: Receiver) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.conf").write_text("valid 1")
    log = tmp_path / "cmd.log"
    check = f'echo "$PODKIT_RELOADER_HASH" >> {log}; grep -q valid {conf}/app.conf'
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--webhook-url", receiver.url,
        "--command", check,
        "--command-gates-reload",
        "--debounce", "100ms",
        "--resync-interval", "1s",
    ) as p:  # fmt: skip
        p.wait_ready()
        (conf / "app.conf").write_text("broken")
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "blocked") == 1, 10)
        st = status(p)
        assert st["rejected_hash"] == st["current_hash"]
        assert st["last_reload"]["result"] == "blocked"
        assert metric(p, "podkit_reloader_last_reload_successful") == 0
        # Rejected content is not retried, not even by the resyncs.
        assert stays(lambda: labelled(p, "podkit_reloader_reloads_total", "blocked") == 1, 2.5)
        assert receiver.calls == []
        (conf / "app.conf").write_text("valid 2")
        wait_until(lambda: len(receiver.calls) == 1, 10, what="reload of valid content")
        assert log.read_text().split() == [st["current_hash"], status(p)["current_hash"]]
        assert metric(p, "podkit_reloader_resyncs_total") >= 2


def test_failing_command_without_gate_is_retried(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a").write_text("1")
    marker, done = tmp_path / "marker", tmp_path / "done"
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--command", f"test -e {marker} && echo run >> {done}",
        "--debounce", "100ms",
        "--retry-max-backoff", "300ms",
        "--reload-on-start",
    ) as p:  # fmt: skip
        p.wait_ready()
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 2, 10)
        marker.touch()
        # Not just exists(): `>>` creates the file a moment before it writes to it.
        wait_until(lambda: done.exists() and done.read_text(), 10, what="the retried command")
        assert stays(lambda: done.read_text().split() == ["run"], 1.0)


def test_resync_catches_a_change_inotify_cannot_see(tmp_path: Path, receiver: Receiver) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    # A write through a hard link elsewhere gives no event on the watched directory.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(conf / "a.conf", elsewhere / "alias")
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--webhook-url", receiver.url,
        "--resync-interval", "1s",
        "--include", "*.conf",
        "--exclude", "skip*",
    ) as p:  # fmt: skip
        p.wait_ready()
        # The write through the link alone: were it next to writes in the watched
        # directory, their events would start a scan that finds it first (a CI run).
        with open(elsewhere / "alias", "r+") as f:
            f.write("2")
        wait_until(lambda: len(receiver.calls) == 1, 10, what="reload found by the resync")
        assert metric(p, "podkit_reloader_resyncs_total") >= 1
        assert p.wait_log("change detected")["reason"] == "resync"
        # Files the filters leave out change nothing, whether seen by an event or a resync.
        (conf / "skip.conf").write_text("excluded")
        (conf / "notes.txt").write_text("not included")
        assert stays(lambda: len(receiver.calls) == 1, 2.5)
        assert status(p)["files"] == 1


def test_sigterm_exits_zero_and_usage_error_exits_two(tmp_path: Path) -> None:
    from tests.helpers import run_program

    r = run_program("reloader", ["--watch", str(tmp_path)])
    assert r.returncode == 2 and b"no action" in r.stderr and b"Traceback" not in r.stderr
    with reloader(tmp_path, "--watch", str(tmp_path), "--command", "true") as p:
        p.wait_ready()
        p.signal(signal.SIGTERM)
        assert p.wait(15) == 0


def test_dir_recreated_and_file_renamed_over(tmp_path: Path, receiver: Receiver) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    single = tmp_path / "single.conf"
    single.write_text("s1")
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--watch", str(single),
        "--webhook-url", receiver.url,
        "--debounce", "100ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        # The watched directory removed and made anew: the watch must follow.
        shutil.rmtree(conf)
        conf.mkdir()
        (conf / "a.conf").write_text("2")
        wait_until(lambda: len(receiver.calls) == 1, 10, what="reload after the re-creation")
        (conf / "a.conf").write_text("3")
        wait_until(lambda: len(receiver.calls) == 2, 10, what="reload of an edit in the new dir")
        # An editor's save: write a temporary file, rename it over the watched one.
        (tmp_path / ".single.conf.swp").write_text("s2")
        os.rename(tmp_path / ".single.conf.swp", single)
        wait_until(lambda: len(receiver.calls) == 3, 10, what="reload after rename-over")
        # Unrelated files next to the single watched file are ignored.
        (tmp_path / "unrelated").write_text("x")
        assert stays(lambda: len(receiver.calls) == 3, 1.0)
        assert metric(p, "podkit_reloader_watched_files") == 2
        # A plain delete is a change too.
        (conf / "a.conf").unlink()
        wait_until(lambda: len(receiver.calls) == 4, 10, what="reload after a delete")
        assert metric(p, "podkit_reloader_watched_files") == 1


def test_two_webhooks_one_down_newer_change_supersedes(tmp_path: Path) -> None:
    """A webhook that answered is not called again while another is retried,
    and a newer change replaces the pending retry: one call each per content."""
    a, b = Receiver().up(), Receiver()
    try:
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "x").write_text("1")
        with reloader(
            tmp_path,
            "--watch", str(conf),
            "--webhook-url", a.url,
            "--webhook-url", b.url,
            "--webhook-status", "200",
            "--debounce", "100ms",
            "--retry-max-backoff", "500ms",
        ) as p:  # fmt: skip
            p.wait_ready()
            (conf / "x").write_text("2")
            wait_until(lambda: len(a.calls) == 1, 10, what="first webhook")
            wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 3, 10)
            assert len(a.calls) == 1  # not repeated by the retries for b
            (conf / "x").write_text("3")  # supersedes the pending retry
            wait_until(lambda: len(a.calls) == 2, 10, what="first webhook, newer content")
            pending = status(p)["retry"]
            assert pending is not None and pending["pending"] is True
            b.up()
            wait_until(lambda: len(b.calls) == 1, 10, what="second webhook after it came up")
            assert stays(lambda: len(a.calls) == 2 and len(b.calls) == 1, 1.5)
            st = status(p)
            assert st["last_success_hash"] == st["current_hash"] and st["retry"] is None
    finally:
        a.close()
        b.close()


def test_unexpected_status_and_timeout_are_failures_retried(
    tmp_path: Path, receiver: Receiver
) -> None:
    """--webhook-status and --webhook-timeout: a wrong status and a hung target are
    failed reloads, retried until the target answers as expected, then not again."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    receiver.status = 503
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--webhook-url", receiver.url,
        "--webhook-status", "204",
        "--webhook-timeout", "300ms",
        "--debounce", "100ms",
        "--retry-max-backoff", "400ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        (conf / "a.conf").write_text("2")
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 1, 10)
        assert "status 503, expected 204" in status(p)["last_reload"]["error"]
        # `/` gives the message of the newest error, not only a reason code
        err = status(p)["error"]
        assert err["reason"] == "failure" and "status 503, expected 204" in err["message"]
        receiver.status, receiver.delay = 204, 3.0  # right status, far too late
        wait_until(
            lambda: "timed out after 0.3s" in (status(p)["last_reload"]["error"] or ""),
            10,
            what="a timed-out call",
        )
        assert status(p)["retry"]["pending"] is True
        receiver.delay = 0.0
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "success") == 1, 10)
        n = len(receiver.calls)
        assert stays(lambda: len(receiver.calls) == n, 1.5)
        assert status(p)["retry"] is None
        assert metric(p, "podkit_reloader_last_reload_successful") == 1


def test_gate_command_timeout_is_retried_not_blocked(tmp_path: Path, receiver: Receiver) -> None:
    """A validator that hangs gives no verdict on the content: the reload is a
    failure retried with backoff (a block would never be retried)."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "a.conf").write_text("1")
    marker = tmp_path / "fast"
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--webhook-url", receiver.url,
        "--command", f"test -e {marker} || sleep 30",
        "--command-gates-reload",
        "--command-timeout", "300ms",
        "--debounce", "100ms",
        "--retry-max-backoff", "300ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        (conf / "a.conf").write_text("2")
        wait_until(lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 2, 10)
        assert labelled(p, "podkit_reloader_reloads_total", "blocked") == 0
        assert "timed out after 0.3s" in status(p)["last_reload"]["error"]
        assert status(p)["rejected_hash"] is None and receiver.calls == []
        marker.touch()
        wait_until(lambda: len(receiver.calls) == 1, 10, what="the reload once the check answers")
        assert stays(lambda: len(receiver.calls) == 1, 1.0)


def skipped_count(proc: ProgramProcess, reason: str) -> float:
    _, _, body = proc.get("/metrics")
    for line in body.decode().splitlines():
        if line.startswith(f'podkit_reloader_skipped_paths_total{{reason="{reason}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_link_loop_is_reported_and_the_next_change_still_reloads(
    tmp_path: Path, receiver: Receiver
) -> None:
    conf = tmp_path / "conf"
    (conf / "sub").mkdir(parents=True)
    (conf / "app.yml").write_text("v0")
    (conf / "sub" / "a").symlink_to("b")
    (conf / "sub" / "b").symlink_to("a")
    with reloader(
        tmp_path, "--watch", str(conf), "--webhook-url", receiver.url, "--debounce", "100ms"
    ) as p:
        p.wait_ready()
        code, _, body = p.get("/healthz")
        assert code == 503 and b"symbolic-link loop" in body and b"/conf/sub/a" in body
        st = status(p)
        assert st["skipped"] == {str(conf / "sub/a"): "loop", str(conf / "sub/b"): "loop"}
        assert st["healthy"] is False
        assert skipped_count(p, "loop") == 2
        (conf / "app.yml").write_text("v1")
        wait_until(calls_reach(receiver, 1), 10, what="the reload after a real change")
        (conf / "sub" / "b").unlink()
        (conf / "sub" / "b").write_text("fixed")
        wait_until(lambda: p.get("/healthz")[0] == 200, 10, what="healthy once the loop is gone")
        wait_until(calls_reach(receiver, 2), 10, what="the reload for the new file b")
        assert sum("symbolic-link loop" in r["message"] for r in p.records()) == 1


def test_links_out_of_the_volume_are_not_followed(tmp_path: Path, receiver: Receiver) -> None:
    """Whoever writes the volume cannot make the reloader read a secret, a FIFO or a device."""
    secret = tmp_path / "secret"
    secret.write_text("s1")
    conf = tmp_path / "conf"
    atomic_write(conf, {"app.yml": b"v0"})
    (conf / "token").symlink_to(secret)
    (conf / "environ").symlink_to("/proc/self/environ")
    os.mkfifo(tmp_path / "fifo")
    (conf / "pipe").symlink_to(tmp_path / "fifo")
    with reloader(
        tmp_path, "--watch", str(conf), "--webhook-url", receiver.url, "--debounce", "100ms"
    ) as p:
        p.wait_ready()
        assert status(p)["files"] == 1
        assert skipped_count(p, "outside") == 3
        secret.write_text("s2")  # not content: no reload
        (conf / "new.yml").write_text("n")
        wait_until(calls_reach(receiver, 1), 10, what="the reload of app.yml")
        assert stays(lambda: len(receiver.calls) == 1, 0.5)
        warnings = [r for r in p.records() if "not followed" in r["message"]]
        assert len(warnings) == 1 and len(warnings[0]["paths"]) == 3
        assert skipped_count(p, "outside") == 3  # once each, not once per scan
        assert p.get("/healthz")[0] == 200


def test_render_env_and_file_reloads_only_when_the_output_changes(
    tmp_path: Path, receiver: Receiver
) -> None:
    src_dir = tmp_path / "src"
    secrets = tmp_path / "secrets"
    out = tmp_path / "out"
    for d in (src_dir, secrets, out):
        d.mkdir()
    (secrets / "password").write_text("pw1\n")
    template = src_dir / "app.yml"
    template.write_text(
        "url: $(URL)\nuser: ${USER_NAME}\npassword: $(file:%s)\n" % (secrets / "password")
    )
    dest = out / "app.yml"
    env = {"URL": "http://db:5432", "USER_NAME": "app"}
    with ProgramProcess(
        "reloader",
        [
            "--render", f"{template}:{dest}",
            "--render-files-from", str(secrets),
            "--webhook-url", receiver.url,
            "--debounce", "100ms",
        ],
        tmp=tmp_path,
        env=env,
    ) as p:  # fmt: skip
        p.wait_ready()
        assert dest.read_text() == "url: http://db:5432\nuser: app\npassword: pw1\n"
        # A template change that renders the same: no reload.
        template.write_text(
            "url: ${URL}\nuser: $(USER_NAME)\npassword: $(file:%s)\n" % (secrets / "password")
        )
        wait_until(lambda: metric(p, "podkit_reloader_watch_events_total") >= 1, 10, what="event")
        assert stays(lambda: receiver.calls == [], 0.8)
        # The secret rotates: re-rendered, reloaded.
        (secrets / "password").write_text("pw2\n")
        wait_until(calls_reach(receiver, 1), 10, what="the reload after the secret rotated")
        assert dest.read_text().endswith("password: pw2\n")
        # An unset variable: the old file stays, no reload, an error in the log.
        template.write_text("url: $(NOT_SET)\n")
        p.wait_log("cannot render; keeping the old files, not reloading")
        assert dest.read_text().endswith("password: pw2\n")
        assert stays(lambda: len(receiver.calls) == 1, 0.5)
        assert "pw2" not in p.stderr()


def test_one_time_renders_gzip_and_exits(tmp_path: Path) -> None:
    import gzip

    src = tmp_path / "prometheus.yml.gz"
    src.write_bytes(gzip.compress(b"external_labels: {cluster: $(CLUSTER)}\nrelabel: ${1}\n"))
    dest = tmp_path / "prometheus.yml"
    res = subprocess.run(
        [sys.executable, "-m", "podkit.sidecars.reloader", "--one-time", "--admin-addr", "off",
         "--render", f"{src}:{dest}"],
        env={**os.environ, "CLUSTER": "eu-1"}, capture_output=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert dest.read_text() == "external_labels: {cluster: eu-1}\nrelabel: ${1}\n"
    # A $(file:...) outside --render-files-from is refused: nothing written, exit 1.
    src2 = tmp_path / "evil.yml"
    src2.write_text("x: $(file:/etc/hostname)\n")
    res = subprocess.run(
        [sys.executable, "-m", "podkit.sidecars.reloader", "--one-time", "--admin-addr", "off",
         "--render", f"{src2}:{tmp_path / 'evil.out'}"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert res.returncode == 1
    assert not (tmp_path / "evil.out").exists()
    assert b"outside every --render-files-from" in res.stderr


VERIFY = {
    "metrics": [
        "--verify-url=/metrics",
        "--verify-metric=prometheus_config_last_reload_successful == 1",
        "--verify-timestamp=prometheus_config_last_reload_success_timestamp_seconds",
    ],
    # As the Thanos reloader asks: an RFC 3339 lastConfigTime that must advance.
    "runtimeinfo": [
        "--verify-url=/api/v1/status/runtimeinfo",
        '--verify-json=$.status == "success"',
        "--verify-json=$.data.reloadConfigSuccess == true",
        "--verify-timestamp=$.data.lastConfigTime",
    ],
}


@pytest.mark.parametrize("how", sorted(VERIFY))
def test_verify_against_real_prometheus_good_then_broken_config(tmp_path: Path, how: str) -> None:
    """SIGHUP gives no answer; only Prometheus' own metrics say whether the config took."""
    src = tmp_path / "prometheus.yml.tmpl"
    good = (
        "global: {scrape_interval: $(INTERVAL)}\n"
        "scrape_configs: [{job_name: %s, static_configs: [{targets: ['127.0.0.1:1']}]}]\n"
    )
    src.write_text(good % "a")
    dest = tmp_path / "prometheus.yml"
    env = {"INTERVAL": "7s"}
    init = subprocess.run(
        [sys.executable, "-m", "podkit.sidecars.reloader", "--one-time", "--admin-addr", "off",
         "--render", f"{src}:{dest}"],
        env={**os.environ, **env}, capture_output=True, timeout=30,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    prom = ConfiguredPrometheus(tmp_path / "prom", dest)
    try:
        prom.wait_ready()
        with ProgramProcess(
            "reloader",
            [
                "--render", f"{src}:{dest}",
                "--pid-file", str(prom.pid_file),
                *(a.replace("--verify-url=", "--verify-url=" + prom.url) for a in VERIFY[how]),
                "--verify-timeout", "3s",
                "--unhealthy-after", "1s",
                "--retry-max-backoff", "1s",
                "--debounce", "100ms",
            ],
            tmp=tmp_path,
            env=env,
        ) as p:  # fmt: skip
            p.wait_ready()
            before = prom.self_metric("prometheus_config_last_reload_success_timestamp_seconds")
            # The timestamp has one-second resolution: let it be able to move.
            wait_until(lambda: time.time() >= before + 1, 5, what="the next second")
            src.write_text(good % "b")
            wait_until(
                lambda: labelled(p, "podkit_reloader_reloads_total", "success") == 1,
                20, what="a verified reload",
            )  # fmt: skip
            assert (
                prom.self_metric("prometheus_config_last_reload_success_timestamp_seconds") > before
            )
            assert "job_name: b" in dest.read_text()
            # Broken: the signal is delivered, Prometheus rejects the file.
            src.write_text("scrape_configs: [{job_name: }}\n")
            wait_until(
                lambda: labelled(p, "podkit_reloader_reloads_total", "failure") >= 2,
                20, what="the failed verification, retried",
            )  # fmt: skip
            assert prom.self_metric("prometheus_config_last_reload_successful") == 0
            assert metric(p, "podkit_reloader_last_reload_successful") == 0
            st = status(p)
            assert st["retry"]["pending"] and "did not take" in st["last_reload"]["error"]
            # The first attempt failed at once: good before, bad after (as Thanos decides).
            assert any("rejected the new config" in str(r.get("error")) for r in p.records())
            wait_until(lambda: p.get("/healthz")[0] == 503, 10, what="/healthz after the bound")
            assert b"has not taken" in p.get("/healthz")[2]
            # Fixed: the retry, or the change, takes.
            src.write_text(good % "c")
            wait_until(lambda: p.get("/healthz")[0] == 200, 20, what="healthy after a good config")
            assert labelled(p, "podkit_reloader_reloads_total", "success") == 2
            assert prom.self_metric("prometheus_config_last_reload_successful") == 1
    finally:
        prom.stop()


def test_render_into_a_watched_directory_reloads_once(tmp_path: Path, receiver: Receiver) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rules.yml").write_text("r1")
    template = conf / "app.tmpl"
    template.write_text("v: ${V}-1\n")
    with reloader(
        tmp_path,
        "--watch", str(conf),
        "--render", f"{template}:{conf / 'app.yml'}",
        "--webhook-url", receiver.url,
        "--debounce", "100ms",
    ) as p:  # fmt: skip
        p.wait_ready()
        template.write_text("v: ${V}-2\n")
        wait_until(calls_reach(receiver, 1), 10, what="the reload of the new render")
        assert stays(lambda: len(receiver.calls) == 1, 1.0)  # its own write is no change
        (conf / "rules.yml").write_text("r2")
        wait_until(calls_reach(receiver, 2), 10, what="the reload of a watched file")
        assert (conf / "app.yml").read_text() == "v: x-2\n"
