"""gitsync's pure parts: flag checks, URL handling, failure counting, askpass, locks."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from podkit.sidecars.gitsync import _ASKPASS as ASKPASS
from podkit.sidecars.gitsync import (
    GitSync,
    _remove_locks,
    default_link,
    is_local,
    is_ssh,
    split_password,
    too_many_failures,
)
from podkit.sidecars.gitsync._git import Runs

from podkit import UsageError
from podkit.runner import configure


def make(*args: str, env: dict[str, str] | None = None) -> GitSync:
    prog = configure(GitSync, list(args), env or {})
    assert isinstance(prog, GitSync)
    return prog


@pytest.mark.parametrize(
    ("repo", "link"),
    [
        ("https://example.com/org/app.git", "app"),
        ("https://example.com/org/app", "app"),
        ("https://example.com/org/app/", "app"),
        ("git@github.com:org/conf.git", "conf"),
        ("ssh://git@host:2222/srv/x.git", "x"),
        ("/srv/git/local.git", "local"),
    ],
)
def test_default_link_is_the_repo_leaf(repo: str, link: str) -> None:
    assert default_link(repo) == link


def test_is_ssh() -> None:
    assert is_ssh("git@github.com:org/x.git")
    assert is_ssh("ssh://git@h/x")
    assert not is_ssh("https://h/x")
    assert not is_ssh("/srv/x.git")
    assert not is_ssh("git://h/x")


def test_password_is_split_out_of_the_url() -> None:
    assert split_password("https://bob:p%40ss@h/x.git") == ("https://bob@h/x.git", "p@ss")
    assert split_password("https://h/x.git") == ("https://h/x.git", None)
    assert split_password("git@h:x.git") == ("git@h:x.git", None)


@pytest.mark.parametrize(
    ("failures", "max_failures", "abort"),
    # git-sync v4 counts `failCount >= max`: 0 and 1 both exit on the first failure
    # (issue 14 changed this from "N tolerated, N+1 exits").
    [
        (1, -1, False),
        (1000, -1, False),
        (1, 0, True),
        (1, 1, True),
        (2, 1, True),
        (2, 3, False),
        (3, 3, True),
    ],
)
def test_max_failures_counts_as_git_sync_counts(
    failures: int, max_failures: int, abort: bool
) -> None:
    assert too_many_failures(failures, max_failures) is abort


def test_defaults_and_derived_values(tmp_path: Path) -> None:
    p = make("--repo", "https://h/org/app.git", "--root", str(tmp_path))
    assert p.link == "app" and p.ref == "HEAD" and p.depth == 1 and p.max_failures == -1
    assert p.period == 10 and p.stale_after == 100 and p.sync_timeout == 120
    assert p.submodules == "recursive" and p.git_gc == "auto" and p.ssh_known_hosts is True
    assert p.webhook.status == 200 and p.webhook.timeout == 1 and p.webhook_backoff == 3
    assert p.exechook_timeout == 30 and p.exechook_backoff == 3
    assert p.stale_worktree_timeout == 0
    assert p.admin_addr == "127.0.0.1:9412"
    p = make("--repo", "x", "--root", "r", env={"PODKIT_PERIOD": "2s", "PODKIT_ONE_TIME": "true"})
    assert p.period == 2 and p.one_time is True and p.stale_after == 20


def test_git_sync_env_names_are_read_after_podkit_ones(tmp_path: Path) -> None:
    # A git-sync v4 pod spec's env switches over unchanged.
    env = {
        "GITSYNC_REPO": "https://h/org/conf.git",
        "GITSYNC_ROOT": str(tmp_path),
        "GITSYNC_PERIOD": "1m30s",
        "GITSYNC_MAX_FAILURES": "3",
        "GITSYNC_ONE_TIME": "true",
        "GITSYNC_GIT_GC": "off",
        "GITSYNC_WEBHOOK_SUCCESS_STATUS": "0",
    }
    p = make(env=env)
    assert p.repo == "https://h/org/conf.git" and p.root == str(tmp_path) and p.link == "conf"
    assert p.period == 90 and p.max_failures == 3 and p.one_time is True
    assert p.git_gc == "off" and p.webhook.status == 0
    # PODKIT_* wins over GITSYNC_*, and a flag over both.
    p = make("--max-failures", "5", env={**env, "PODKIT_PERIOD": "2s", "PODKIT_MAX_FAILURES": "4"})
    assert p.period == 2 and p.max_failures == 5
    # The source named in an error is the variable that was read.
    with pytest.raises(UsageError, match="GITSYNC_GIT_GC"):
        make(env={**env, "GITSYNC_GIT_GC": "sometimes"})
    # Only the flags git-sync has: --stale-after is ours.
    assert make(env={**env, "GITSYNC_STALE_AFTER": "1s"}).stale_after == 900


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--repo", "ext::sh -c id"], "--repo"),
        (["--repo", "fd::3"], "--repo"),
        (["--repo", "ftp://h/x"], "--repo"),
        (["--repo", "https://h/x", "--depth", "-1"], "--depth"),
        (["--repo", "https://h/x", "--period", "1ms"], "--period"),
        (["--repo", "https://h/x", "--link", "../escape"], "--link"),
        (["--repo", "https://h/x", "--ref", "--upload-pack=evil"], "--ref"),
        (["--repo", "https://h/x", "--password-file", "/nonexistent/pw"], "--password-file"),
        (["--repo", "https://h/x", "--submodules", "maybe"], "--submodules"),
        (["--repo", "https://h/x", "--exechook-command", "'unterminated"], "--exechook-command"),
    ],
)
def test_bad_flags_are_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    with pytest.raises(UsageError) as err:
        make(*args, "--root", str(tmp_path))
    assert needle in str(err.value)


def _live_in_group(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (an orphan waits for init to reap it)."""
    live = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(int(entry))
    return live


def test_a_git_started_after_an_abort_is_killed_with_its_group() -> None:
    # The race: execute() checked `aborted`, then abort() snapshotted the
    # processes, then this one started; it must not run on to --sync-timeout.
    runs = Runs()
    runs.abort()
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
    try:
        runs.add(proc)
        assert proc.wait(5) == -9
        deadline = time.monotonic() + 5
        while _live_in_group(proc.pid):  # the sleep too, not only the shell
            assert time.monotonic() < deadline, "a child of the killed git survived"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_is_local() -> None:
    assert is_local("/srv/app.git") and is_local("file:///srv/app.git") and is_local("rel/app")
    assert not is_local("https://h/app.git") and not is_local("git@h:org/app.git")
    assert not is_local("ssh://h/app.git") and not is_local("git://h/app.git")


def askpass(tmp_path: Path, **env: str) -> Callable[[str], str]:
    """gitsync's askpass helper, installed in tmp_path: ask(prompt) -> its answer,
    with PODKIT_GITSYNC_ASKPASS_<KEY> (or another name given whole) in its env."""
    helper = tmp_path / "askpass"
    helper.write_text(ASKPASS)
    helper.chmod(0o700)
    full = {"PATH": os.environ["PATH"]}
    for key, value in env.items():
        full[key if key.startswith("PODKIT_") else f"PODKIT_GITSYNC_ASKPASS_{key}"] = value

    def ask(prompt: str) -> str:
        return subprocess.run(
            [str(helper), prompt], env=full, capture_output=True, text=True, check=True
        ).stdout

    return ask


def test_askpass_reads_the_password_file_when_git_asks(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("tok-123 with spaces\nsecond line ignored\n")
    ask = askpass(tmp_path, USER="alice", FILE=str(pw))

    assert ask("Username for 'https://h': ") == "alice\n"
    assert ask("Password for 'https://alice@h': ") == "tok-123 with spaces\n"
    pw.write_text("no-newline")
    assert ask("Password for 'https://alice@h': ") == "no-newline\n"


def test_leftover_locks_are_removed_objects_kept(tmp_path: Path) -> None:
    gitdir = tmp_path / ".git"
    for rel in (
        "index.lock",
        "shallow.lock",
        "refs/heads/main.lock",
        "objects/pack/tmp_pack_x",
        "objects/ab/cdef",
        "objects/pack/pack-1.pack",
        "worktrees/a/index.lock",
        "HEAD",
    ):
        (gitdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (gitdir / rel).write_text("x")
    removed = sorted(_remove_locks(str(gitdir)))
    assert removed == sorted(
        [
            "index.lock",
            "shallow.lock",
            "refs/heads/main.lock",
            "objects/pack/tmp_pack_x",
            "worktrees/a/index.lock",
        ]
    )
    assert (gitdir / "objects/ab/cdef").exists() and (gitdir / "objects/pack/pack-1.pack").exists()


class _LsRemote:
    def __init__(self, out: str) -> None:
        self.out = out

    def ls_remote(self, *args: Any) -> str:
        return self.out


@pytest.mark.parametrize(
    ("ref", "want"),
    [
        ("HEAD", "a" * 40),
        ("main", "b" * 40),
        ("v1", "d" * 40),  # annotated: the peeled commit
        ("light", "e" * 40),
        ("refs/heads/main", "b" * 40),
        ("nope", None),
    ],
)
def test_remote_sha_resolves_like_fetch(tmp_path: Path, ref: str, want: str | None) -> None:
    out = "\n".join(
        [
            f"{'a' * 40}\tHEAD",
            f"{'b' * 40}\trefs/heads/main",
            f"{'c' * 40}\trefs/tags/v1",
            f"{'d' * 40}\trefs/tags/v1^{{}}",
            f"{'e' * 40}\trefs/tags/light",
        ]
    )
    p = make("--repo", "https://h/x", "--root", str(tmp_path), "--ref", ref)
    assert p._remote_sha(_LsRemote(out)) == want  # type: ignore[arg-type]


def test_private_dirs_of_dead_processes_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from podkit.sidecars.gitsync import _remove_dead_private_dirs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "podkit-gitsync-999999999-abc"
    alive = tmp_path / f"podkit-gitsync-{os.getpid()}-def"
    other = tmp_path / "podkit-gitsync-notapid"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "password").write_text("x")
    _remove_dead_private_dirs()
    assert not dead.exists() and alive.exists() and other.exists()


@pytest.mark.parametrize("exchange_works", [True, False])
def test_copy_publish_swaps_directories_and_records_the_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange_works: bool
) -> None:
    """--publish-mode copy, with renameat2 and with the rename-aside fallback."""
    from podkit.sidecars.gitsync import publish as pub

    if not exchange_works:
        monkeypatch.setattr(pub, "exchange", lambda a, b: False)
    shas = ["a" * 40, "b" * 40]
    for sha in shas:
        wt = tmp_path / ".worktrees" / sha
        (wt / "sub").mkdir(parents=True)
        (wt / "sub" / "f").write_text(sha[0])
        (wt / ".git").write_text("gitdir: ../../.git/worktrees/x\n")
        (wt / "rel").symlink_to("sub/f")
    link = str(tmp_path / "out")
    assert pub.published_sha(link, "copy") is None
    for sha in shas:
        pub.publish(link, str(tmp_path / ".worktrees" / sha), "copy", keep=60)
        assert pub.published_sha(link, "copy") == sha
        assert (tmp_path / "out" / "sub" / "f").read_text() == sha[0]
        assert os.readlink(tmp_path / "out" / "rel") == "sub/f"  # links copied as links
        assert not (tmp_path / "out" / ".git").exists()
    # The replaced copy stays `keep` seconds for readers inside it, then goes.
    olds = [n for n in os.listdir(tmp_path) if n.startswith(".out.old-")]
    assert len(olds) == 1 and (tmp_path / olds[0] / "sub" / "f").read_text() == "a"
    pub.expire_copies(link, 0)
    assert sorted(os.listdir(tmp_path)) == [".out.published", ".worktrees", "out"]


def test_copy_publish_record_and_expiry_edges(tmp_path: Path) -> None:
    """What published_sha trusts in copy mode, and when replaced copies go."""
    from podkit.sidecars.gitsync import publish as pub

    for sha in ("a" * 40, "b" * 40):
        (tmp_path / ".worktrees" / sha).mkdir(parents=True)
        (tmp_path / ".worktrees" / sha / "f").write_text(sha[0])
    link = str(tmp_path / "out")
    pub.publish(link, str(tmp_path / ".worktrees" / ("a" * 40)), "copy")
    # A tree published long ago: its keep clock starts when it is replaced, not before.
    os.utime(link, (0, 0))
    pub.publish(link, str(tmp_path / ".worktrees" / ("b" * 40)), "copy", keep=60)
    olds = [n for n in os.listdir(tmp_path) if n.startswith(".out.old-")]
    assert len(olds) == 1
    # keep 0 removes at once, whatever the mtime (a clock ahead on another node).
    future = time.time() + 3600
    os.utime(tmp_path / olds[0], (future, future))
    pub.expire_copies(link, 0)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.old-")]
    # A record that is no commit's hash is not trusted.
    (tmp_path / ".out.published").write_text("../../etc\n")
    assert pub.published_sha(link, "copy") is None
    # A symlink at the link (left by link mode) is no published copy.
    (tmp_path / ".out.published").write_text("b" * 40 + "\n")
    assert pub.published_sha(link, "copy") == "b" * 40
    os.rename(link, tmp_path / "was-out")
    os.symlink("was-out", link)
    assert pub.published_sha(link, "copy") is None


def test_webhook_uses_the_core_group_under_git_syncs_names(tmp_path: Path) -> None:
    """Issue 20: WebhookOptions with git-sync's flag and env names and defaults."""
    p = make("--repo", "x", "--root", str(tmp_path), "--webhook-success-status", "0",
             "--webhook-timeout", "250ms", "--webhook-header", "X-A: 1")  # fmt: skip
    assert (p.webhook.status, p.webhook.timeout, p.webhook.headers()) == (0, 0.25, {"X-A": "1"})
    p = make("--repo", "x", "--root", str(tmp_path), env={"GIT_SYNC_WEBHOOK_METHOD": "put"})
    assert p.webhook.method == "PUT" and p.webhook.timeout == 1  # git-sync's 1s, not 5s
    with pytest.raises(UsageError, match="--webhook-success-status"):
        make("--repo", "x", "--root", str(tmp_path), "--webhook-success-status", "600")
    flags = {o.flag_name for o in GitSync.options()}
    assert {"--webhook-success-status", "--webhook-method", "--webhook-timeout"} <= flags
    assert "--webhook-status" not in flags
