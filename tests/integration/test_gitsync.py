"""gitsync against real git servers on loopback: git daemon, git http-backend, sshd."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProgramProcess, free_port, need, run_program, stays, wait_until
from tests.peers.git import GitDaemon, GitHttp, GitRepos, Sshd, git
from tests.peers.prometheus import promtool_check


def published(link: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def metric(proc: ProgramProcess, name: str, missing: float | None = None, **labels: str) -> float:
    # podkit.testing's: an absent series fails the test instead of reading 0,
    # unless the caller says absence is expected (a poll, before the first event).
    return proc.metric(name, missing=missing, **labels)


def polled(proc: ProgramProcess, name: str, **labels: str) -> float:
    """For wait_until: an admin server not listening yet, or a series not
    created yet, counts as 0 (not yet)."""
    try:
        return metric(proc, name, missing=0.0, **labels)
    except OSError:
        return 0.0


def status(proc: ProgramProcess) -> dict[str, Any]:
    return json.loads(proc.get("/")[2])  # type: ignore[no-any-return]


def descendants(pid: int) -> list[int]:
    """Every live process below pid (git runs in its own session, but stays our child)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


def mid_fetch(proc: ProgramProcess, root: Path) -> ProgramProcess:
    """Start gitsync and return once its git fetch is in flight."""
    proc.start()
    wait_until(
        lambda: any("fetch" in c or "remote-http" in c for c in procs_in(root)),
        15,
        what="a fetch in flight",
    )
    return proc


def procs_in(root: Path) -> list[str]:
    """Processes whose working directory is under root (leftover git)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(root) or cwd.startswith(str(root) + "/"):
            found.append(f"{entry}: {cmd}")
    return found


def no_git_left(root: Path) -> None:
    """No process works under root any more. A killed git is gone within moments;
    one left running would go on for seconds (the throttled fetch), so the
    deadline is well below that."""
    deadline = time.monotonic() + 1.0
    while (left := procs_in(root)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert left == [], left


def git_whose_fetch_has_a_grandchild(tmp: Path) -> tuple[dict[str, str], Path]:
    """An env whose PATH finds a `git` that, for a fetch, first starts a `sleep`
    in git's process group (its pid appended to the returned file), then execs
    the real git.

    Real git's own children (remote-http, index-pack) cannot tell a kill of the
    group from a kill of git's pid alone: they hold gitsync's pipes, so
    communicate() waits for them either way, and they end with the fetch. The
    sleep holds none of the pipes: a kill that misses it lets gitsync go on
    while it lives, and only a kill of the whole group ends it.
    """
    bindir = tmp / "grandchild-bin"
    bindir.mkdir()
    pids = tmp / "grandchild-pids"
    script = bindir / "git"
    script.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" fetch "*)\n'
        f'  sleep 120 </dev/null >/dev/null 2>&1 & echo $! >> "{pids}" ;;\n'
        "esac\n"
        f'exec "{need("git")}" "$@"\n'
    )
    script.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, pids


def grandchildren(pids: Path) -> list[int]:
    """The sleeps that git_whose_fetch_has_a_grandchild() started and that still run."""
    live = []
    for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
        try:
            with open(f"/proc/{pid}/stat") as f:
                name, state = f.read().split(" ", 3)[1:3]
        except OSError:
            continue
        if name == "(sleep)" and state != "Z":  # a zombie was killed, just not reaped yet
            live.append(pid)
    return live


def grandchildren_killed(pids: Path) -> None:
    """Every grandchild git's fetch started is gone: git's process group was killed."""
    assert pids.exists(), "the git on PATH ran no fetch (a deadline spent before it?)"
    wait_until(lambda: not grandchildren(pids), 2, 0.01, what="git's whole group killed")


def receiving_pack(root: Path) -> bool:
    """git is unpacking the pack it receives (unpack-objects or index-pack)."""
    return any("unpack-objects" in c or "index-pack" in c for c in procs_in(root))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def gitsync(tmp: Path, *args: str, env: dict[str, str] | None = None) -> ProgramProcess:
    return ProgramProcess("gitsync", list(args), tmp=tmp, env=env)


def flags(**opts: object) -> list[str]:
    """`--name value` per keyword (True: the bare flag), so a start reads as one line."""
    out: list[str] = []
    for name, value in opts.items():
        out.append("--" + name.replace("_", "-"))
        if value is not True:
            out.append(str(value))
    return out


def sync_once(p: ProgramProcess) -> dict[str, Any]:
    """Ask for one sync with POST /sync and wait until it finished; the status after it."""
    before = status(p)["syncs"]
    assert p.get("/sync", method="POST", data=b"")[0] == 202
    wait_until(lambda: status(p)["syncs"] > before, 15, 0.01, what="a sync")
    return status(p)


class TreeReader:
    """A thread reading every file of the published tree over and over while
    commits are published: a tree with files of two commits, or one that cannot
    be read, is a problem. `read_tree()` returns the files' contents (None: skip)."""

    def __init__(self, read_tree: Callable[[], set[str] | None]) -> None:
        self.read_tree = read_tree
        self.seen: set[str] = set()
        self.problems: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                values = self.read_tree()
            except OSError as exc:
                self.problems.append(str(exc))
                continue
            if values is None:
                continue
            self.reads += 1
            if len(values) != 1:
                self.problems.append(f"mixed {sorted(values)}")
            self.seen.update(values)
            time.sleep(0.0005)  # let the driving thread have the GIL

    def __enter__(self) -> TreeReader:
        self._thread.start()
        wait_until(lambda: self.reads > 0 or bool(self.problems), 10, what="a first read")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_published(link: Path, sha: str, timeout: float = 20.0) -> None:
    wait_until(lambda: published(link) == sha, timeout, 0.01, what=f"{link} -> {sha[:10]}")


# -- basic contract -------------------------------------------------------------


def test_one_time_publishes_relative_link_depth_1_and_full(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"a.txt": "1\n"})
    up.commit_push({"b/c.txt": "2\n"})
    head = up.commit_push({"a.txt": "3\n"})
    root = tmp_path / "root"
    p = run_program(
        "gitsync",
        ["--repo", git_daemon.url("app"), "--root", str(root), "--one-time", "--admin-addr", "off"],
    )
    assert p.returncode == 0, p.stderr.decode()
    link = root / "app"
    assert os.readlink(link) == f".worktrees/{head}"  # relative, git-sync's layout
    assert (link / "a.txt").read_text() == "3\n"
    assert (link / "b" / "c.txt").read_text() == "2\n"
    assert os.listdir(root / ".worktrees") == [head]
    assert git("rev-parse", "--is-shallow-repository", cwd=root) == "true"
    assert git("rev-list", "--count", head, cwd=root) == "1"
    # The worktree's .git points back relatively, so another mount path works too.
    assert (link / ".git").read_text().startswith("gitdir: ../../.git/worktrees/")
    assert git("rev-parse", "HEAD", cwd=link) == head

    # --depth 0 on the same root unshallows: the full history.
    p = run_program(
        "gitsync",
        flags(
            repo=git_daemon.url("app"),
            root=root,
            one_time=True,
            depth="0",
            link="full",
            admin_addr="off",
        ),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert git("rev-parse", "--is-shallow-repository", cwd=root) == "false"
    assert git("rev-list", "--count", head, cwd=root) == "3"
    assert published(root / "full") == head

    # A restart checks the repository cheaply; git fsck (every object read) runs
    # only when a lock file shows that a git was killed.
    def restart() -> str:
        trace = tmp_path / "trace"
        trace.unlink(missing_ok=True)
        args = ["--repo", git_daemon.url("app"), "--root", str(root), "--one-time"]
        p = run_program("gitsync", [*args, "--admin-addr", "off"], env={"GIT_TRACE": str(trace)})
        assert p.returncode == 0, p.stderr.decode()
        return trace.read_text()

    trace = restart()
    assert f"rev-parse --verify -q '{head}^{{commit}}'" in trace and " fsck " not in trace
    (root / ".git" / "index.lock").write_text("")
    assert " fsck " in restart()


def test_push_force_push_post_sync_sighup_and_endpoints(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1"})
    root = tmp_path / "root"
    link = root / "cfg"
    touch = tmp_path / "touched"
    with gitsync(
        tmp_path,
        *flags(repo=git_daemon.url("app"), root=root, link="cfg", period="500ms", touch_file=touch),
    ) as p:
        p.wait_ready()
        wait_published(link, up.head())
        assert touch.exists()
        # A push is seen within one period (generous deadline: shared machine).
        sha2 = up.commit_push({"v": "2"})
        wait_published(link, sha2, 10)
        assert (link / "v").read_text() == "2"
        # Force-push back over it: fetched and published, never merged.
        up.reset_hard(f"{sha2}~1")
        sha3 = up.commit({"v": "3-forced"})
        up.push(force=True)
        wait_published(link, sha3, 10)
        assert (link / "v").read_text() == "3-forced"
        wait_until(
            lambda: (
                os.listdir(root / ".worktrees") == [sha3]
                and len(os.listdir(root / ".git" / "worktrees")) == 1
            ),  # git's records of them too
            10,
            what="old worktrees removed",
        )
        assert "prunable" not in git("worktree", "list", "--porcelain", cwd=root)
        # Endpoints (status follows the link flip by the cleanup's few ms).
        wait_until(lambda: status(p)["published"] == sha3, 10)
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="noop") >= 1, 10)
        st = status(p)
        assert st["published"] == sha3 and st["ref"] == "HEAD" and st["last_error"] is None
        assert p.get("/healthz")[0] == 200
        body = p.get("/metrics")[2]
        assert metric(p, "podkit_gitsync_syncs_total", result="success") >= 3
        assert metric(p, "podkit_gitsync_syncs_total", result="noop") >= 1
        # Fetches only when the ref moved (noop syncs compare with ls-remote).
        assert metric(p, "podkit_gitsync_fetches_total") == 3
        assert metric(p, "podkit_gitsync_last_success_timestamp_seconds") > time.time() - 60
        assert b"podkit_gitsync_sync_duration_seconds_bucket" in body
        promtool_check(body)
        # The branch deleted: syncs fail, the tree stays; recreated: published.
        errors = metric(p, "podkit_gitsync_syncs_total", result="error")
        git("update-ref", "-d", "refs/heads/main", cwd=up.bare)
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") > errors, 10)
        assert published(link) == sha3 and (link / "v").read_text() == "3-forced"
        sha4 = up.commit({"v": "4-recreated"})
        up.push()
        wait_published(link, sha4, 10)
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0

    # A long period: only POST /sync, SIGHUP and git-sync's --sync-on-signal trigger.
    with gitsync(
        tmp_path,
        *flags(
            repo=git_daemon.url("app"), root=root, link="cfg", period="1h", sync_on_signal="USR1"
        ),
    ) as p:
        p.wait_ready()
        assert published(link) == sha4
        sha4b = up.commit_push({"v": "4b"})
        # Nothing follows "no sync without a trigger" to wait for: sampled.
        assert stays(lambda: published(link) == sha4, 0.5)
        code, _, body = p.get("/sync", method="POST", data=b"")
        assert code == 202
        wait_published(link, sha4b, 10)
        sha5 = up.commit_push({"v": "5"})
        p.signal(signal.SIGHUP)
        wait_published(link, sha5, 10)
        assert (link / "v").read_text() == "5"
        sha6 = up.commit_push({"v": "6"})
        p.signal(signal.SIGUSR1)  # without --sync-on-signal USR1 this would kill it
        wait_published(link, sha6, 10)
        assert p.proc is not None and p.proc.poll() is None


def test_tag_and_commit_as_ref(tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon) -> None:
    up = git_repos.create("app", {"v": "1"})
    c1 = up.head()
    up.tag("v1.0", annotated=True)
    c2 = up.commit_push({"v": "2"})
    up.tag("light")
    up.commit_push({"v": "3"})
    root = tmp_path / "root"
    for ref, want in (("v1.0", c1), ("light", c2), (c1, c1)):
        p = run_program(
            "gitsync",
            flags(
                repo=git_daemon.url("app"),
                root=root,
                ref=ref,
                link="x",
                one_time=True,
                admin_addr="off",
            ),
        )
        assert p.returncode == 0, p.stderr.decode()
        assert published(root / "x") == want, ref
    # A commit as --ref never moves: later syncs are no-ops without a fetch.
    with gitsync(
        tmp_path, *flags(repo=git_daemon.url("app"), root=root, ref=c1, link="x", period="100ms")
    ) as p:
        p.wait_ready()
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="noop") >= 3, 10)
        assert metric(p, "podkit_gitsync_fetches_total") == 0
        assert published(root / "x") == c1


def test_submodule_and_sparse_checkout(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    git_repos.create("lib", {"lib.txt": "library\n"})
    app = git_repos.create(
        "app", {"docs/guide.md": "guide\n", "src/main.py": "print()\n", "top": "t"}
    )
    git(
        "-c",
        "protocol.allow=always",
        "submodule",
        "add",
        "-q",
        git_daemon.url("lib"),
        "vendor/lib",
        cwd=app.work,
    )
    head = app.commit_push({})
    root = tmp_path / "root"
    p = run_program(
        "gitsync",
        ["--repo", git_daemon.url("app"), "--root", str(root), "--one-time", "--admin-addr", "off"],
    )
    assert p.returncode == 0, p.stderr.decode()
    assert published(root / "app") == head
    assert (root / "app" / "vendor" / "lib" / "lib.txt").read_text() == "library\n"

    # --submodules off leaves the submodule directory empty.
    p = run_program(
        "gitsync",
        flags(
            repo=git_daemon.url("app"),
            root=tmp_path / "r2",
            one_time=True,
            submodules="off",
            admin_addr="off",
        ),
    )
    assert p.returncode == 0, p.stderr.decode()
    assert not (tmp_path / "r2" / "app" / "vendor" / "lib" / "lib.txt").exists()

    sparse = tmp_path / "sparse"
    sparse.write_text("/docs/\n")
    p = run_program(
        "gitsync",
        flags(
            repo=git_daemon.url("app"),
            root=tmp_path / "r3",
            one_time=True,
            sparse_checkout_file=sparse,
            submodules="off",
            admin_addr="off",
        ),
    )
    assert p.returncode == 0, p.stderr.decode()
    tree = tmp_path / "r3" / "app"
    assert (tree / "docs" / "guide.md").read_text() == "guide\n"
    assert not (tree / "src").exists() and not (tree / "top").exists()


@pytest.mark.parametrize("transport", ["ext", "file"])
def test_submodule_with_ext_or_file_transport_is_refused(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon, transport: str
) -> None:
    """A hostile .gitmodules cannot run commands through ext::, nor copy a local
    repository (another volume's) into the tree through file:// (GIT_ALLOW_PROTOCOL)."""
    pwned = tmp_path / "pwned"
    app = git_repos.create("app", {"v": "1"})
    if transport == "ext":
        url, sub = f"ext::sh -c touch% {pwned}", app.head()
    else:
        private = git_repos.create("private", {"secret": "s"})
        url, sub = private.bare.as_uri(), private.head()
    (app.work / ".gitmodules").write_text(f'[submodule "evil"]\n\tpath = evil\n\turl = {url}\n')
    git("update-index", "--add", "--cacheinfo", f"160000,{sub},evil", cwd=app.work)
    git("add", ".gitmodules", cwd=app.work)  # not `add -A`: it would drop the bare gitlink
    git("commit", "-qm", "evil submodule", cwd=app.work)
    app.push()
    p = run_program(
        "gitsync",
        flags(repo=git_daemon.url("app"), root=tmp_path / "r", one_time=True, admin_addr="off"),
    )
    assert p.returncode == 1
    assert f"transport '{transport}' not allowed".encode() in p.stderr, p.stderr.decode()
    assert not pwned.exists()
    assert not (tmp_path / "r" / "app").exists()  # never published


# -- credentials ------------------------------------------------------------------


def _ps() -> str:
    return subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout


def test_http_basic_auth_wrong_password_never_leaks(
    tmp_path: Path, git_repos: GitRepos, git_http: GitHttp
) -> None:
    up = git_repos.create("app", {"v": "1"})
    assert git_http.password
    right, wrong = git_http.password, "wr0ng-Passw0rd-xyz"
    pwfile = tmp_path / "pw"
    pwfile.write_text(wrong + "\n")
    root = tmp_path / "root"
    samples: list[str] = []
    with gitsync(
        tmp_path,
        *flags(
            repo=git_http.url("app"),
            root=root,
            username="alice",
            password_file=pwfile,
            period="200ms",
        ),
    ) as p:
        deadline = time.monotonic() + 20
        p.wait_log("admin server listening")
        while polled(p, "podkit_gitsync_syncs_total", result="error") < 3:
            samples.append(_ps())
            assert time.monotonic() < deadline, p.stderr()
        assert p.get("/readyz")[0] == 503
        st = status(p)
        assert st["published"] is None and st["consecutive_failures"] >= 3
        assert "Authentication failed" in st["last_error"] or "401" in st["last_error"]
        # Rotate the secret: picked up by the next sync.
        pwfile.write_text(right + "\n")
        while published(root / "app") != up.head():
            samples.append(_ps())
            assert time.monotonic() < deadline + 10, p.stderr()
        p.wait_ready()
        for _ in range(20):
            samples.append(_ps())
            time.sleep(0.02)
        logs = p.stderr()
    # The sampling must have caught git at work, or the ps check proves nothing.
    assert any("git" in s and ("fetch" in s or "remote-http" in s) for s in samples)
    for s in samples:
        assert right not in s and wrong not in s
    assert right not in logs and wrong not in logs
    assert "sync failed" in logs

    # A password in the URL (given through the environment here) is taken out of
    # it before git runs: not in any git argv, not in logs.
    url = git_http.url("app").replace("http://", f"http://alice:{right}@")
    p2 = ProgramProcess(
        "gitsync",
        ["--root", str(tmp_path / "r2"), "--one-time"],
        tmp=tmp_path,
        admin=False,
        env={"PODKIT_REPO": url},
    ).start()
    while p2.proc is not None and p2.proc.poll() is None:
        s = _ps()
        assert right not in s
    assert p2.wait() == 0, p2.stderr()
    assert right not in p2.stderr()
    assert published(tmp_path / "r2" / "app") == up.head()


def test_ssh_with_known_hosts(tmp_path: Path, git_repos: GitRepos, sshd: Sshd) -> None:
    up = git_repos.create("app", {"v": "ssh"})
    key = tmp_path / "key"
    key.write_bytes(sshd.key.read_bytes())
    key.chmod(0o644)  # as a Kubernetes Secret is often mounted; gitsync copies it 0600
    base = [
        "--repo",
        sshd.url(up.bare),
        "--ssh-key-file",
        str(key),
        "--one-time",
        "--admin-addr",
        "off",
    ]
    p = run_program(
        "gitsync",
        [*base, "--root", str(tmp_path / "r1"), "--ssh-known-hosts-file", str(sshd.known_hosts)],
    )
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "r1" / "app" / "v").read_text() == "ssh"
    # A host key that does not match: refused, exit 1 on the first failure.
    p = run_program(
        "gitsync",
        [
            *base,
            "--root",
            str(tmp_path / "r2"),
            "--ssh-known-hosts-file",
            str(sshd.wrong_known_hosts),
        ],
    )
    assert p.returncode == 1
    assert b"Host key verification failed" in p.stderr or b"HOST IDENTIFICATION" in p.stderr
    assert not (tmp_path / "r2" / "app").exists()
    # Checking off: accepted.
    p = run_program(
        "gitsync",
        [
            *base,
            "--root",
            str(tmp_path / "r3"),
            "--ssh-known-hosts=false",
            "--ssh-known-hosts-file",
            str(sshd.wrong_known_hosts),
        ],
    )
    assert p.returncode == 0, p.stderr.decode()


def test_ext_transport_refused(tmp_path: Path) -> None:
    p = run_program("gitsync", ["--repo", "ext::sh -c touch% /tmp/pwned", "--root", str(tmp_path)])
    assert p.returncode == 2
    assert b"--repo" in p.stderr and b"Traceback" not in p.stderr


# -- failures ---------------------------------------------------------------------


def test_remote_goes_away_and_comes_back(
    tmp_path: Path, git_repos: GitRepos, git_http: GitHttp
) -> None:
    up = git_repos.create("app", {"v": "1"})
    pw = tmp_path / "pw"
    pw.write_text(str(git_http.password))
    root = tmp_path / "root"
    link = root / "app"
    with gitsync(
        tmp_path,
        *flags(
            repo=git_http.url("app"), root=root, username="alice", password_file=pw, period="200ms"
        ),
    ) as p:
        p.wait_ready()
        first = up.head()
        wait_published(link, first)
        git_http.stop()
        sha2 = up.commit_push({"v": "2"})  # pushed straight into the bare repo
        wait_until(lambda: polled(p, "podkit_gitsync_syncs_total", result="error") >= 3, 20)
        # The last good tree stays published and readable; the pod stays ready.
        assert published(link) == first and (link / "v").read_text() == "1"
        assert p.get("/readyz")[0] == 200
        assert status(p)["last_error"]
        # `/`'s one error format: reason, message (not only a code) and time.
        err = status(p)["error"]
        assert err["reason"] == "sync" and err["message"] == status(p)["last_error"]
        # No good sync for --stale-after (default 10 x period = 2 s): /healthz says so.
        wait_until(lambda: p.get("/healthz")[0] == 503, 20)
        assert b"last successful sync" in p.get("/healthz")[2]
        assert p.get("/readyz")[0] == 200
        git_http.start()
        wait_published(link, sha2, 20)
        wait_until(lambda: status(p)["consecutive_failures"] == 0, 10)
        assert status(p)["last_error"] is None
        assert p.get("/healthz")[0] == 200


def test_max_failures_and_one_time_failure_exit_1(tmp_path: Path) -> None:
    dead = f"git://127.0.0.1:{free_port()}/nothing.git"
    # Configured the git-sync way (GITSYNC_* env), password included.
    p = run_program(
        "gitsync",
        ["--admin-addr", "off"],
        env={
            "GITSYNC_REPO": dead,
            "GITSYNC_ROOT": str(tmp_path / "a"),
            "GITSYNC_ONE_TIME": "true",
            "GITSYNC_PASSWORD": "pw-in-env",
        },
    )
    assert p.returncode == 1
    # Read now (issue 14), with a warning that a file is better; never logged.
    assert b"prefer --password-file" in p.stderr and b"pw-in-env" not in p.stderr
    # git-sync's counting (failCount >= max): the second consecutive failure exits 1.
    p = run_program(
        "gitsync",
        flags(repo=dead, root=tmp_path / "b", max_failures="2", period="50ms", admin_addr="off"),
    )
    assert p.returncode == 1
    recs = [json.loads(line) for line in p.stderr.decode().splitlines() if line.startswith("{")]
    assert (
        next(r for r in recs if r["message"] == "too many consecutive failures; exiting")[
            "failures"
        ]
        == 2
    )


def test_sync_timeout_kills_git_and_sigkill_mid_fetch_restart(
    tmp_path: Path, git_repos: GitRepos
) -> None:
    up = git_repos.create("big", {"small": "x"})
    big = os.urandom(3 * 1024 * 1024)  # incompressible: ~3 s at 1 MB/s
    (up.work / "blob.bin").write_bytes(big)
    head = up.commit_push({})
    srv = GitHttp(git_repos.base, free_port(), None, None, throttle=1024 * 1024).start()
    gc_env, gc_pids = git_whose_fetch_has_a_grandchild(tmp_path)
    try:
        root = tmp_path / "root"
        # --sync-timeout kills the whole git process tree (git, remote-http, index-pack).
        p = run_program(
            "gitsync",
            flags(
                repo=srv.url("big"), root=root, one_time=True, sync_timeout="1s", admin_addr="off"
            ),
            env=gc_env,
        )
        assert p.returncode == 1
        assert b"timed out" in p.stderr, p.stderr.decode()
        grandchildren_killed(gc_pids)
        no_git_left(root)

        args = ("--repo", srv.url("big"), "--root", str(root))
        # SIGTERM in the middle of a fetch: the git in flight is killed with its
        # children, and gitsync exits 0 well inside --shutdown-timeout.
        gc_pids.unlink()
        proc = mid_fetch(gitsync(tmp_path, *args, "--period", "1h", env=gc_env), root)
        # A SIGTERM before the git on PATH started its sleep would leave nothing to check.
        wait_until(lambda: grandchildren(gc_pids), 15, 0.01, what="the fetch's grandchild")
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - t0 < 10
        proc.stop()
        grandchildren_killed(gc_pids)
        no_git_left(root)

        # --one-time (an init container) stopped before it published exits 143,
        # never 0: the app must not start without its tree.
        proc = mid_fetch(gitsync(tmp_path, *args, "--one-time"), root)
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 143
        proc.stop()
        assert published(root / "big") is None
        proc = mid_fetch(gitsync(tmp_path, *args, "--one-time"), root)
        proc.signal(signal.SIGINT)  # Ctrl-C when run by hand: 130, as an init task
        assert proc.wait(15) == 130
        proc.stop()
        assert published(root / "big") is None

        # SIGKILL in the middle of a fetch (the whole tree, as a container kill would).
        proc = mid_fetch(gitsync(tmp_path, *args, "--period", "1h"), root)
        # Killed while the pack is coming in: what a real kill mid-fetch leaves behind.
        wait_until(lambda: receiving_pack(root), 15, 0.01, what="the pack coming in")
        kids = descendants(proc.pid)
        proc.kill()
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.stop()
        assert published(root / "big") is None
        # Whatever the kill left, plus the locks a killed git typically leaves.
        (root / ".git" / "shallow.lock").write_text("")
        (root / ".git" / "index.lock").write_text("")
        with gitsync(
            tmp_path, "--repo", srv.url("big"), "--root", str(root), "--period", "1h"
        ) as p2:
            p2.wait_ready(30)
            assert published(root / "big") == head
            assert (root / "big" / "blob.bin").read_bytes() == big
            assert "removed leftover lock files" in p2.stderr()
        assert not (root / ".git" / "shallow.lock").exists()
    finally:
        srv.stop()
        for pid in grandchildren(gc_pids):  # left by a kill that missed them
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _delete_objects(root: Path) -> None:
    for d in (root / ".git" / "objects").iterdir():
        if d.name != "info":
            for f in d.rglob("*"):
                if f.is_file():
                    f.unlink()


def test_git_objects_deleted_under_it(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1", "w": "1"})
    root = tmp_path / "root"
    link = root / "app"
    with gitsync(
        tmp_path, *flags(repo=git_daemon.url("app"), root=root, period="200ms", depth="0")
    ) as p:
        p.wait_ready()
        wait_published(link, up.head())
        # Objects gone, then a push: the fetch refills what is missing (git does
        # not trust a "have" it cannot read), and the tree is complete.
        _delete_objects(root)
        sha2 = up.commit_push({"v": "2"})
        wait_published(link, sha2, 30)
        assert (link / "v").read_text() == "2" and (link / "w").read_text() == "1"
        # Objects gone and HEAD garbled: git cannot use the repository at all.
        # It is re-cloned (within the failing sync, or the next one) and the
        # tree stays served throughout.
        _delete_objects(root)
        (root / ".git" / "HEAD").write_text("garbage\n")
        wait_until(lambda: "repository unusable; re-cloning" in p.stderr(), 20)
        assert published(link) == sha2 and (link / "v").read_text() == "2"
        wait_until(lambda: status(p)["last_error"] is None, 20)
        # Re-cloned at the commit it serves: the served tree is re-attached to
        # the new repository (its old .git file named a removed admin dir).
        wait_until(lambda: "re-attached the published worktree" in p.stderr(), 20)
        assert git("rev-parse", "HEAD", cwd=link) == sha2
        assert git("status", "--porcelain", cwd=link) == ""
        sha3 = up.commit_push({"v": "3"})
        wait_published(link, sha3, 30)
        assert (link / "w").read_text() == "1"
        # The link flips inside the sync; the status names sha3 once that sync,
        # with its clean-up, has ended.
        wait_until(lambda: status(p)["published"] == sha3, 10, what="the sync to end")
        assert git("fsck", "--connectivity-only", cwd=root) == ""


# -- hooks ------------------------------------------------------------------------


class _FlakyWebhook:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[tuple[str, str]] = []
        hook = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_POST(self) -> None:
                hook.calls.append((self.command, self.headers.get("Gitsync-Hash", "")))
                code = 500 if len(hook.calls) <= hook.failures else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_hooks_retried_until_they_succeed(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1"})
    web = _FlakyWebhook(failures=2)
    hooklog = tmp_path / "hook.log"
    script = tmp_path / "hook.sh"
    script.write_text(
        f"""#!/bin/sh
echo "$GITSYNC_HASH $(pwd)" >> {hooklog}
[ "$(wc -l < {hooklog})" -ge 3 ]
"""
    )
    script.chmod(0o755)
    root = tmp_path / "root"
    try:
        with gitsync(
            tmp_path,
            *flags(
                repo=git_daemon.url("app"),
                root=root,
                period="1h",
                webhook_url=f"http://127.0.0.1:{web.port}/hook",
                webhook_backoff="200ms",
                exechook_command=script,
                exechook_backoff="200ms",
            ),
        ) as p:
            p.wait_ready()
            sha = up.head()
            wait_until(
                lambda: (
                    polled(p, "podkit_gitsync_hook_runs_total", hook="exechook", result="success")
                    == 1
                ),
                15,
            )
            wait_until(
                lambda: (
                    polled(p, "podkit_gitsync_hook_runs_total", hook="webhook", result="success")
                    == 1
                ),
                15,
            )
            assert metric(p, "podkit_gitsync_hook_runs_total", hook="webhook", result="error") == 2
            assert metric(p, "podkit_gitsync_hook_runs_total", hook="exechook", result="error") == 2
            assert web.calls == [("POST", sha)] * 3
            lines = hooklog.read_text().splitlines()
            assert lines == [f"{sha} {root / '.worktrees' / sha}"] * 3
            # A new commit runs both once more, with the new hash.
            sha2 = up.commit_push({"v": "2"})
            p.get("/sync", method="POST", data=b"")
            wait_until(lambda: len(web.calls) == 4, 10)
            assert web.calls[-1] == ("POST", sha2)
            wait_until(lambda: len(hooklog.read_text().splitlines()) == 4, 10)
            assert hooklog.read_text().splitlines()[-1].startswith(sha2)
            # Coalesced: while the webhook fails, two more publishes; once it
            # recovers, its last call is for the newest commit, and no call for
            # an older commit follows the first call for the newest.
            web.failures = len(web.calls) + 1_000_000
            sha3 = up.commit_push({"v": "3"})
            p.get("/sync", method="POST", data=b"")
            wait_published(root / "app", sha3)
            sha4 = up.commit_push({"v": "4"})
            p.get("/sync", method="POST", data=b"")
            wait_published(root / "app", sha4)
            wait_until(lambda: ("POST", sha4) in web.calls, 10)
            web.failures = len(web.calls)
            wait_until(
                lambda: (
                    polled(p, "podkit_gitsync_hook_runs_total", hook="webhook", result="success")
                    == 3
                ),
                10,
            )
            first4 = web.calls.index(("POST", sha4))
            assert set(web.calls[first4:]) == {("POST", sha4)}
    finally:
        web.server.shutdown()


def test_webhook_settings_in_git_syncs_env_names_and_a_header(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    """The core's webhook group under git-sync's names: GITSYNC_WEBHOOK_METHOD and
    _SUCCESS_STATUS drive the call, --webhook-header adds a header (issue 20)."""
    up = git_repos.create("app", {"v": "1"})
    calls: list[tuple[str, str, str]] = []

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_PUT(self) -> None:
            h = self.headers
            calls.append((self.command, h.get("Gitsync-Hash", ""), h.get("Authorization", "")))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"GITSYNC_WEBHOOK_METHOD": "PUT", "GITSYNC_WEBHOOK_SUCCESS_STATUS": "204"}
    args = flags(
        repo=git_daemon.url("app"),
        root=tmp_path / "root",
        period="1h",
        webhook_url=f"http://127.0.0.1:{server.server_address[1]}/hook",
        webhook_header="Authorization: Bearer s3cret",
    )
    try:
        with gitsync(tmp_path, *args, env=env) as p:
            p.wait_ready()
            wait_until(
                lambda: (
                    polled(p, "podkit_gitsync_hook_runs_total", hook="webhook", result="success")
                    == 1
                ),
                15,
            )
            assert calls == [("PUT", up.head(), "Bearer s3cret")]  # the first call succeeded
            assert "s3cret" not in p.stderr()  # a header is secret: never in the start log
    finally:
        server.shutdown()


def test_one_time_runs_hooks_once_and_fails_with_them(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    up = git_repos.create("app", {"v": "1"})
    out = tmp_path / "hook.out"
    ok = tmp_path / "ok.sh"
    ok.write_text(f'#!/bin/sh\necho "$GITSYNC_HASH" >> {out}\n')
    ok.chmod(0o755)
    base = ["--repo", git_daemon.url("app"), "--one-time", "--admin-addr", "off"]
    p = run_program(
        "gitsync", [*base, "--root", str(tmp_path / "a"), "--exechook-command", str(ok)]
    )
    assert p.returncode == 0, p.stderr.decode()
    assert out.read_text().split() == [up.head()]
    # A failing hook (as an init container) fails the pod's start: exit 1.
    p = run_program(
        "gitsync", [*base, "--root", str(tmp_path / "b"), "--exechook-command", "false"]
    )
    assert p.returncode == 1
    assert published(tmp_path / "b" / "app") == up.head()  # the tree itself was published


# -- torture ----------------------------------------------------------------------


def test_atomicity_and_leaks_over_200_syncs(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    """A reader never sees files from two commits while 100 commits are published
    in quick succession; after 200 syncs no git process is left and no fd leaked."""
    names = [f"d{i % 3}/f{i}.txt" for i in range(12)]
    up = git_repos.create("app", dict.fromkeys(names, "0"))
    shas = up.precreate([dict.fromkeys(names, str(i)) for i in range(1, 101)])
    root = tmp_path / "root"
    link = root / "app"

    def read_tree() -> set[str] | None:
        try:
            tree = root / os.readlink(link)  # resolve once, then read the tree it names
        except FileNotFoundError:
            return None
        return {(tree / n).read_text() for n in names}

    # 200 syncs as fast as POST /sync can drive them: past the default rate limit.
    args = flags(repo=git_daemon.url("app"), root=root, period="1h", submodules="off")
    args += flags(stale_worktree_timeout="2s", sync_burst=1000)
    with gitsync(tmp_path, *args) as p:
        p.wait_ready()
        for _ in range(10):
            sync_once(p)
        base_fds = fds(p.pid)
        with TreeReader(read_tree) as reader:
            for sha in shas:
                up.set_main(sha)
                p.get("/sync", method="POST", data=b"")
                wait_published(link, sha, 15)
        while status(p)["syncs"] < 200:
            sync_once(p)
        st = status(p)
        assert st["last_error"] is None and st["published"] == shas[-1]

        # Replaced worktrees go once --stale-worktree-timeout has passed, even
        # when the sync that notices it publishes nothing new: syncs that publish
        # nothing, until one has removed them.
        def stale_removed() -> bool:
            sync_once(p)
            return os.listdir(root / ".worktrees") == [shas[-1]]

        wait_until(stale_removed, 15, 0.1, what="stale worktrees removed")
        assert len(os.listdir(root / ".git" / "worktrees")) == 1
        # git is waited for inside each sync; a process still here is a leak.
        wait_until(lambda: descendants(p.pid) == [], 5, what="no git process left behind")
        assert procs_in(root) == []
        assert fds(p.pid) <= base_fds + 2, (base_fds, os.listdir(f"/proc/{p.pid}/fd"))
    assert reader.problems == []
    assert reader.reads > 100
    assert len(reader.seen) > 20  # the reader really did straddle many publishes


def test_copy_mode_swaps_a_real_directory_atomically(
    tmp_path: Path, git_repos: GitRepos, git_daemon: GitDaemon
) -> None:
    """--publish-mode copy: <link> is a real directory (no symlink to follow), and a
    reader looping meanwhile never finds it missing nor sees files of two commits."""
    names = [f"d{i % 3}/f{i}.txt" for i in range(12)]
    up = git_repos.create("app", dict.fromkeys(names, "0"))
    shas = up.precreate([dict.fromkeys(names, str(i)) for i in range(1, 41)])
    root = tmp_path / "root"
    link = root / "app"

    def read_tree() -> set[str]:
        fd = os.open(link, os.O_RDONLY | os.O_DIRECTORY)  # one tree (missing: a problem)
        try:
            values = set()
            for n in names:
                f = os.open(n, os.O_RDONLY, dir_fd=fd)
                try:
                    values.add(os.read(f, 100).decode())
                finally:
                    os.close(f)
            return values
        finally:
            os.close(fd)

    args = flags(repo=git_daemon.url("app"), root=root, period="1h", publish_mode="copy")
    args += flags(submodules="off", stale_worktree_timeout="2s", sync_burst=1000)
    with gitsync(tmp_path, *args) as p:
        p.wait_ready()
        assert link.is_dir() and not link.is_symlink()
        assert not (link / ".git").exists()  # a plain tree: no admin-dir pointer
        with TreeReader(read_tree) as reader:
            for sha in shas:
                up.set_main(sha)
                p.get("/sync", method="POST", data=b"")
                wait_until(lambda sha=sha: status(p)["published"] == sha, 15, 0.01)
        assert (link / names[0]).read_text() == "40"
        assert (root / ".app.published").read_text().strip() == shas[-1]
        assert not link.is_symlink()
    assert reader.problems == []
    assert reader.reads > 40
    assert len(reader.seen) > 10  # the reader really did straddle many publishes

    # Restarted in link mode over the copy: the directory becomes the symlink.
    with gitsync(tmp_path, *flags(repo=git_daemon.url("app"), root=root)) as p:
        p.wait_ready()
        wait_published(link, shas[-1])
    assert [n for n in os.listdir(root) if n.startswith(".app")] == []
