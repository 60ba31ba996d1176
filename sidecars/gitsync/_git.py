"""GitPython's `Repo.git` passthrough, with a deadline and a kill that reaches the whole tree.

GitPython's own `kill_after_timeout` kills the git process and its direct
children, but `git fetch` over HTTP runs git-remote-http, which runs
fetch-pack, which runs index-pack: grandchildren survive and keep the output
pipes open, so `communicate()` would block anyway. Here every git child starts
in its own session, and a timeout or a shutdown kills the process group.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import git

from podkit.hooks import kill_group
from podkit.secrets import scrub

from .errors import GitError as GitError


class Runs:
    """The git processes in flight, so a shutdown can kill them, and a stop flag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.aborted = False

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)
            aborted = self.aborted
        if aborted:
            # abort() ran between execute()'s check and the start of this git:
            # its snapshot missed it, and it would run to --sync-timeout.
            kill_group(proc.pid)

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def abort(self) -> None:
        """Kill every git process group in flight; later commands fail at once."""
        with self._lock:
            self.aborted = True
            procs = list(self._procs)
        for proc in procs:
            if proc.returncode is None:  # never signal a reaped (reusable) pid
                kill_group(proc.pid)

    def reset(self) -> None:
        self.aborted = False


def _short(text: str, limit: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


class Git(git.Git):
    """`git.Git` whose every command is bounded by `deadline` (time.monotonic())."""

    deadline: float | None = None
    runs: Runs | None = None

    def execute(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        # Only what this program uses: a command list in, stripped stdout out.
        argv = [str(c) for c in command]
        shown = " ".join(["git", *argv[1:3]])
        runs = self.runs
        if runs is not None and runs.aborted:
            raise GitError(f"{shown}: stopped")
        remaining = None if self.deadline is None else self.deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise GitError(f"{shown}: timed out before it started (--sync-timeout)", timed_out=True)
        handle = super().execute(
            command,
            as_process=True,
            istream=kwargs.get("istream"),
            env=kwargs.get("env"),
            start_new_session=True,
        )
        proc = handle.proc
        assert isinstance(proc, subprocess.Popen)
        if runs is not None:
            runs.add(proc)
        try:
            try:
                out, err = proc.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                proc.communicate()
                raise GitError(
                    f"{shown}: timed out (--sync-timeout), killed", timed_out=True
                ) from None
        finally:
            if runs is not None:
                runs.discard(proc)
        handle.proc = None  # reaped: keep AutoInterrupt's finaliser from touching it
        stderr = scrub(err.decode("utf-8", "replace")) if err else ""
        if proc.returncode != 0:
            if runs is not None and runs.aborted:
                raise GitError(f"{shown}: stopped")
            raise GitError(f"{shown}: exit {proc.returncode}: {_short(stderr)}", stderr=stderr)
        return out.decode("utf-8", "replace").rstrip("\n") if out else ""


class Repo(git.Repo):
    """A Repo whose `.git` passthrough is the bounded `Git` above."""

    GitCommandWrapperType = Git


def bounded(g: git.Git, deadline: float, env: dict[str, str], runs: Runs) -> Git:
    assert isinstance(g, Git)
    g.deadline = deadline
    g.runs = runs
    g.update_environment(**env)
    return g


def new_git(path: str, deadline: float, env: dict[str, str], runs: Runs) -> Git:
    return bounded(Git(path), deadline, env, runs)
