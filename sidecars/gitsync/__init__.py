"""Keep a git checkout in a shared volume in sync, published atomically.

The on-disk contract is kubernetes/git-sync v4's, so consumers can switch:
`<root>/<link>` is a relative symlink to `.worktrees/<sha>`, replaced by an
atomic rename once that worktree is completely checked out, and
`basename(readlink(<root>/<link>))` is the published commit. Everything else
under `<root>` (the `.git` directory, other worktrees) is an implementation
detail.

All git work runs in a worker thread through GitPython's `Repo.git`
passthrough, with a fresh `Repo` closed after every sync, each command bounded
by what is left of --sync-timeout (see `_git.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import git

from podkit import RateLimited, Sidecar, UsageError, option, redact_url, register_secret
from podkit.admin import Request, Response
from podkit.hooks import HookError, Retrier, call_webhook, run_command
from podkit.retry import Backoff
from podkit.secrets import SecretFile

from . import _git
from ._git import GitError, Runs
from .triggers import TokenBucket, refusal, retry_after

WORKTREES = ".worktrees"
TARGET_REF = "refs/gitsync/target"
_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Remote-helper syntax `<transport>::<address>` (ext::, fd::, ...) is refused outright.
_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
# file is added only for a local --repo: git >= 2.38.1 refuses it for submodules
# by default (CVE-2022-39253), and GIT_ALLOW_PROTOCOL would re-allow it, letting
# a hostile .gitmodules copy local repositories (other volumes) into the tree.
_ALLOWED_PROTOCOLS = "git:http:https:ssh"

# git asks "Username for '<url>': " or "Password for '<url>': ". The password is
# read from a file at the moment git asks, so it is in no argv and no environment.
_ASKPASS = """#!/bin/sh
case "$1" in
Username*) printf '%s\\n' "$PODKIT_GITSYNC_ASKPASS_USER" ;;
*) p=
   if [ -n "$PODKIT_GITSYNC_ASKPASS_FILE" ]; then
       IFS= read -r p < "$PODKIT_GITSYNC_ASKPASS_FILE" || true
   fi
   printf '%s\\n' "$p" ;;
esac
"""


def default_link(repo: str) -> str:
    """The repo's leaf name without `.git`, as git-sync derives --link."""
    path = urlsplit(repo).path if "://" in repo else repo.rpartition(":")[2]
    leaf = path.rstrip("/").rsplit("/", 1)[-1]
    if leaf.endswith(".git"):
        leaf = leaf[:-4]
    return leaf or "repo"


def is_ssh(repo: str) -> bool:
    if "://" in repo:
        return urlsplit(repo).scheme in ("ssh", "git+ssh", "ssh+git")
    # scp-like user@host:path (a local path never has a colon before the first slash)
    head = repo.split("/", 1)[0]
    return ":" in head


def is_local(repo: str) -> bool:
    """A file:// URL or a path: git's file transport."""
    if "://" in repo:
        return urlsplit(repo).scheme.lower() == "file"
    return not is_ssh(repo)


def split_password(repo: str) -> tuple[str, str | None]:
    """(URL without its password, the password) — git must never see it in argv."""
    if "://" not in repo:
        return repo, None
    parts = urlsplit(repo)
    if parts.password is None:
        return repo, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hostport}" if user else hostport
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    from urllib.parse import unquote

    return clean, unquote(parts.password)


def too_many_failures(consecutive: int, max_failures: int) -> bool:
    """git-sync's documented meaning: N failures in a row are tolerated, N+1 abort.

    Negative: never abort. 0: the first failure aborts.
    """
    return max_failures >= 0 and consecutive > max_failures


def _published_sha(link: str) -> str | None:
    try:
        target = os.readlink(link)
    except OSError:
        return None
    sha = os.path.basename(target.rstrip("/"))
    return sha if _SHA_RE.match(sha) else None


def _nonempty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except OSError:
        return False


def _rmtree(path: str) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        # Read-only files (git packs) inside a writable dir are removable; a
        # read-only dir is not: make it writable and retry once.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            func(p)

    shutil.rmtree(path, onerror=onerror)


@dataclass
class SyncResult:
    sha: str
    changed: bool
    fetched: bool


class GitSync(Sidecar):
    """Keep a git checkout in a volume in sync, published atomically (--one-time: init)."""

    name = "gitsync"
    default_admin_addr = "127.0.0.1:9412"
    env_prefixes = ("GITSYNC_",)  # git-sync's own variables work too, so people can switch

    repo: str = option(
        help="the git repository to sync (https, http, ssh, git, file)",
        required=True,
    )
    root: str = option(
        help="working directory; holds .git, .worktrees/<sha> and the --link",
        kind="path",
        required=True,
    )
    ref: str = option(
        "HEAD",
        help="branch, tag or commit to sync (HEAD: the remote's default branch)",
    )
    link: str | None = option(
        None,
        help="symlink under --root to the published worktree (default: the repo's name)",
    )
    period: float = option("10s", kind="duration", help="how long to wait between syncs")
    depth: int = option(1, help="commits of history to fetch; 0 = the full history")
    submodules: str = option(
        "recursive",
        choices=("recursive", "shallow", "off"),
        help="submodule behaviour",
    )
    sparse_checkout_file: str | None = option(
        None,
        kind="path",
        help="a git sparse-checkout file (non-cone patterns) to apply",
    )
    sync_timeout: float = option(
        "120s",
        kind="duration",
        help="the total time one sync may take",
    )
    one_time: bool = option(
        False,
        help="exit 0 once the tree is published, 1 on the first failure",
    )
    max_failures: int = option(
        -1,
        help="consecutive failed syncs tolerated before exiting 1 (0: exit on the first; "
        "-1: never, keep serving the last good tree)",
    )
    stale_worktree_timeout: float = option(
        "0s",
        kind="duration",
        help="keep replaced worktrees this long (0: remove at once)",
    )
    git_gc: str = option(
        "auto",
        choices=("auto", "always", "aggressive", "off"),
        help="git gc after a sync that removed worktrees",
    )
    touch_file: str | None = option(
        None,
        kind="path",
        help="file touched after each publish (relative paths are under --root)",
    )
    stale_after: float | None = option(
        None,
        kind="duration",
        help="/healthz fails when the last good sync is older (default 10 x --period)",
        env_alias=False,  # podkit's own flag: git-sync has no GITSYNC_STALE_AFTER
    )
    username: str | None = option(None, help="username for HTTP(S) authentication")
    password_file: str | None = option(
        None,
        kind="path",
        help="file holding the password or token (re-read before each sync)",
    )
    ssh_key_file: str | None = option(None, kind="path", help="SSH private key for ssh:// repos")
    ssh_known_hosts: bool = option(
        True,
        help="check SSH host keys against --ssh-known-hosts-file",
    )
    ssh_known_hosts_file: str | None = option(
        None,
        kind="path",
        help="known_hosts file (default: ssh's own, ~/.ssh/known_hosts)",
    )
    webhook_url: str | None = option(None, kind="url", help="URL called after each publish")
    webhook_method: str = option("POST", help="HTTP method of the webhook")
    webhook_success_status: int = option(
        200,
        help="status that counts as success (0: do not check, fire and forget)",
    )
    webhook_timeout: float = option(
        "1s",
        kind="duration",
        help="timeout of one webhook call",
    )
    webhook_backoff: float = option(
        "3s",
        kind="duration",
        help="wait before retrying a failed webhook",
    )
    exechook_command: str | None = option(
        None,
        help="command run in the new worktree after each publish, with $GITSYNC_HASH",
    )
    exechook_timeout: float = option(
        "30s",
        kind="duration",
        help="timeout of one exechook run",
    )
    exechook_backoff: float = option(
        "3s",
        kind="duration",
        help="wait before retrying a failed exechook",
    )
    sync_token_file: str | None = option(
        None,
        kind="path",
        help="file holding the secret POST /sync must carry (Bearer token, X-Gitlab-Token, "
        "or the key of GitHub's X-Hub-Signature-256); re-read when it changes",
        env_alias=False,  # podkit's own flag: git-sync has no authenticated trigger
    )

    def __init__(self) -> None:
        super().__init__()
        self.add_route("POST", "/sync", self._http_sync)
        self._trigger = asyncio.Event()
        self._runs = Runs()
        self._private = ""
        self._password: SecretFile | None = None
        self._url_password_file: str | None = None
        self._git_url = ""
        # "quick" at start and after remote failures; "full" (fsck) after a local one.
        self._needs_check: str | None = "quick"
        self._syncs = 0
        self.published: str | None = None
        self.last_sync: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self._hooks: list[Retrier[str]] = []
        self._sync_token: SecretFile | None = None
        self._sync_bucket = TokenBucket()
        self._ssh_key_sig: tuple[int, int, int] | None = None
        self._fetched_once = False

    # -- configuration ------------------------------------------------------

    def validate(self) -> None:
        repo = self.repo.strip()
        if _HELPER_RE.match(repo):
            raise UsageError(
                f"--repo: remote-helper transports ({repo.split('::')[0]}::) are refused"
            )
        if "://" in repo:
            scheme = urlsplit(repo).scheme.lower()
            if scheme not in ("http", "https", "ssh", "git", "file", "git+ssh", "ssh+git"):
                raise UsageError(f"--repo: unsupported scheme {scheme!r}")
        self.repo = repo
        if self.depth < 0:
            raise UsageError("--depth: must be 0 (full history) or more")
        if self.period < 0.01:
            raise UsageError("--period: must be at least 10ms")
        if self.sync_timeout < 0.01:
            raise UsageError("--sync-timeout: must be at least 10ms")
        if not self.ref.strip() or self.ref.startswith("-"):
            raise UsageError("--ref: must name a branch, tag or commit")
        self.link = self.link or default_link(repo)
        if os.path.isabs(self.link):
            self.link = os.path.relpath(self.link, os.path.abspath(self.root))
        if self.link.startswith("..") or self.link in (".", ".git", WORKTREES):
            raise UsageError(f"--link: must name a path inside --root, got {self.link!r}")
        for flag, path in (
            ("--password-file", self.password_file),
            ("--ssh-key-file", self.ssh_key_file),
            ("--ssh-known-hosts-file", self.ssh_known_hosts_file),
            ("--sparse-checkout-file", self.sparse_checkout_file),
            ("--sync-token-file", self.sync_token_file),
        ):
            if path and not os.path.isfile(path):
                raise UsageError(f"{flag}: no such file: {path}")
        if self.exechook_command is not None:
            try:
                argv = shlex.split(self.exechook_command)
            except ValueError as exc:
                raise UsageError(f"--exechook-command: {exc}") from None
            if not argv:
                raise UsageError("--exechook-command: empty")
        if self.stale_after is None:
            self.stale_after = 10 * self.period

    @property
    def link_path(self) -> str:
        assert self.link is not None
        return os.path.join(self.root, self.link)

    def _worktree(self, sha: str) -> str:
        return os.path.join(self.root, WORKTREES, sha)

    # -- lifecycle ------------------------------------------------------------

    async def setup(self) -> None:
        self.root = os.path.abspath(self.root)
        os.makedirs(os.path.join(self.root, WORKTREES), exist_ok=True)
        _remove_dead_private_dirs()
        self._private = tempfile.mkdtemp(prefix=f"podkit-gitsync-{os.getpid()}-")
        os.chmod(self._private, 0o700)
        askpass = os.path.join(self._private, "askpass")
        with open(askpass, "w", encoding="utf-8") as f:
            f.write(_ASKPASS)
        os.chmod(askpass, 0o700)
        self._git_url, url_password = split_password(self.repo)
        if url_password is not None:
            register_secret(url_password)
            self._url_password_file = os.path.join(self._private, "password")
            fd = os.open(self._url_password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(url_password + "\n")
        if self.password_file:
            self._password = SecretFile(self.password_file)
        self.published = _published_sha(self.link_path)
        if os.environ.get("GITSYNC_PASSWORD"):
            # A git-sync pod spec switched over: say why auth will fail, not just that it does.
            self.log.warning(
                "GITSYNC_PASSWORD is not read: secrets come from files (--password-file)"
            )

        m = self.metrics
        self.m_syncs = m.counter("syncs_total", "Sync attempts by result.", ["result"])
        for r in ("success", "error", "noop"):
            self.m_syncs.labels(r)
        self.m_duration = m.histogram(
            "sync_duration_seconds",
            "Time one sync took.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.m_last_success = m.gauge(
            "last_success_timestamp_seconds", "Unix time of the last successful sync."
        )
        self.m_fetches = m.counter("fetches_total", "git fetch runs.")
        self.m_hooks = m.counter(
            "hook_runs_total", "Hook runs by hook and result.", ["hook", "result"]
        )
        self._errors = RateLimited(self.log, 30.0)
        self.m_requests = m.counter(
            "sync_requests_total",
            "POST /sync requests by outcome.",
            ["result"],
        )
        for r in ("accepted", "coalesced", "unauthorized", "limited"):
            self.m_requests.labels(r)
        if self.sync_token_file:
            self._sync_token = SecretFile(self.sync_token_file)

        if self.webhook_url:
            self._hooks.append(
                Retrier(
                    "webhook",
                    self._webhook,
                    self._backoff(self.webhook_backoff),
                    self._hook_result("webhook"),
                )
            )
        if self.exechook_command:
            self._hooks.append(
                Retrier(
                    "exechook",
                    self._exechook,
                    self._backoff(self.exechook_backoff),
                    self._hook_result("exechook"),
                )
            )
        if not self.one_time:
            for h in self._hooks:
                h.start()

    @staticmethod
    def _backoff(seconds: float) -> Backoff:
        # git-sync's hook backoff is a fixed wait, not exponential.
        s = max(seconds, 0.001)
        return Backoff(s, s, 1.0, jitter=False)

    def _hook_result(self, hook: str) -> Any:
        def on_result(sha: str, error: str | None) -> None:
            self.m_hooks.labels(hook, "error" if error else "success").inc()
            if error is None:
                self.log.info("hook succeeded", extra={"hook": hook, "commit": sha})

        return on_result

    async def cleanup(self) -> None:
        self._runs.abort()
        for h in self._hooks:
            await h.stop()
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)

    def on_sighup(self) -> None:
        self.log.info("sync requested", extra={"by": "SIGHUP"})
        self._trigger.set()

    async def _http_sync(self, request: Request) -> Response:
        # Every outcome is logged at most once per interval: a flood of requests
        # must not become a flood of log lines.
        why = refusal(request, self._sync_token)
        if why is not None:
            self.m_requests.labels("unauthorized").inc()
            self._errors.log("sync-refused", 30, "POST /sync refused", reason=why)
            return Response(
                401, b"unauthorized\n", headers={"WWW-Authenticate": 'Bearer realm="gitsync"'}
            )
        wait = self._sync_bucket.take()
        if wait:
            self.m_requests.labels("limited").inc()
            self._errors.log("sync-limited", 30, "POST /sync rate-limited")
            return Response(
                429, b"too many sync requests\n", headers={"Retry-After": retry_after(wait)}
            )
        # One event: however many requests arrive, at most one sync waits.
        coalesced = self._trigger.is_set()
        self.m_requests.labels("coalesced" if coalesced else "accepted").inc()
        self._errors.log("sync-requested", 20, "sync requested", by="POST /sync")
        self._trigger.set()
        return Response.json(
            {"queued": True, "coalesced": coalesced, "published": self.published}, status=202
        )

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        asked = False
        while not self.stopping:
            self._trigger.clear()
            ok = await self._sync(asked)
            if self.one_time:
                if not ok:
                    # An init container stopped before it published must not
                    # exit 0: the app would start without its tree; 143/130
                    # is what the runner gives an interrupted InitTask.
                    if self.stopping:
                        self.exit_code = 128 + (self.stop_signal or signal.SIGTERM)
                    else:
                        self.exit_code = 1
                    return
                self.exit_code = await self._one_time_hooks()
                return
            if self.stopping:
                break
            if not ok and too_many_failures(self.consecutive_failures, self.max_failures):
                self.log.error(
                    "too many consecutive failures; exiting",
                    extra={
                        "failures": self.consecutive_failures,
                        "max_failures": self.max_failures,
                    },
                )
                self.exit_code = 1
                return
            asked = await self._wait_trigger(self.period)
        # Give hooks for the last publish a moment to land before the runner stops us.
        for h in self._hooks:
            await h.idle(min(5.0, self.shutdown_timeout / 2))

    async def _wait_trigger(self, seconds: float) -> bool:
        """Wait for the period, a stop, or a trigger; True when a trigger ended it."""
        stop = asyncio.ensure_future(self.wait_stopping())
        trig = asyncio.ensure_future(self._trigger.wait())
        try:
            await asyncio.wait({stop, trig}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            trig.cancel()
        return self._trigger.is_set()

    async def _sync(self, asked: bool = False) -> bool:
        start = time.monotonic()
        self._runs.reset()
        work = asyncio.ensure_future(asyncio.to_thread(self._sync_blocking, asked))
        stop = asyncio.ensure_future(self.wait_stopping())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                self._runs.abort()  # kill the git in flight; the thread returns at once
            try:
                result = await work
            except Exception as exc:
                err: BaseException | None = exc
            else:
                err = None
        finally:
            stop.cancel()
        elapsed = time.monotonic() - start
        self.m_duration.observe(elapsed)
        self.last_sync = time.time()
        self._syncs += 1
        if err is not None:
            if self.stopping:
                return False
            self.consecutive_failures += 1
            self.last_error = str(err) or type(err).__name__
            self.m_syncs.labels("error").inc()
            remote = isinstance(err, GitError) and (err.remote or err.timed_out)
            if self._needs_check != "full":
                self._needs_check = "quick" if remote else "full"
            self._errors.log(
                "sync",
                40,
                "sync failed; the last good tree stays published",
                error=self.last_error,
                failures=self.consecutive_failures,
                published=self.published,
                repo=redact_url(self.repo),
            )
            return False
        self._errors.clear("sync")
        if self.consecutive_failures:
            self.log.info("sync recovered", extra={"failures": self.consecutive_failures})
        self.consecutive_failures = 0
        self.last_error = None
        self.last_success = time.time()
        self.m_last_success.set(self.last_success)
        first = not self.ready
        self.published = result.sha
        if result.changed:
            self.m_syncs.labels("success").inc()
            self.log.info(
                "published",
                extra={"commit": result.sha, "ref": self.ref, "seconds": round(elapsed, 3)},
            )
        else:
            self.m_syncs.labels("noop").inc()
        if result.changed or first:
            # Like git-sync, hooks also run for the tree found at start-up.
            self._touch()
            if not self.one_time:
                for h in self._hooks:
                    h.submit(result.sha)
        self.set_ready()
        return True

    def _touch(self) -> None:
        if not self.touch_file:
            return
        path = (
            self.touch_file
            if os.path.isabs(self.touch_file)
            else os.path.join(self.root, self.touch_file)
        )
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a"):
                os.utime(path)
        except OSError as exc:
            self.log.warning("cannot touch --touch-file", extra={"path": path, "error": str(exc)})

    async def _one_time_hooks(self) -> int:
        """--one-time runs each hook once (as git-sync does) and fails if one fails."""
        code = 0
        assert self.published is not None
        for h in self._hooks:
            try:
                await h.action(self.published)
            except Exception as exc:
                self.m_hooks.labels(h.name, "error").inc()
                self.log.error("hook failed", extra={"hook": h.name, "error": str(exc)})
                code = 1
            else:
                self.m_hooks.labels(h.name, "success").inc()
        if code == 0:
            self.log.info("one-time sync done", extra={"commit": self.published})
        return code

    # -- hooks ----------------------------------------------------------------

    async def _webhook(self, sha: str) -> None:
        assert self.webhook_url is not None
        try:
            await call_webhook(
                self.webhook_url,
                method=self.webhook_method,
                expected_status=self.webhook_success_status,
                timeout=self.webhook_timeout,
                headers={"Gitsync-Hash": sha},
            )
        except HookError:
            if self.webhook_success_status == 0:
                return  # fire and forget
            raise

    async def _exechook(self, sha: str) -> None:
        assert self.exechook_command is not None
        argv = shlex.split(self.exechook_command)
        cwd = self._worktree(sha)
        if not os.path.isdir(cwd):
            return  # superseded and already removed: the newer commit's run follows
        try:
            code, out = await run_command(
                argv, timeout=self.exechook_timeout, env={"GITSYNC_HASH": sha}, cwd=cwd, tail=500
            )
        except OSError as exc:
            raise HookError(f"exechook: cannot run {argv[0]}: {exc.strerror or exc}") from None
        if code is None:
            raise HookError(f"exechook: timed out after {self.exechook_timeout:g}s")
        if code != 0:
            raise HookError(f"exechook: exit {code}: {out}")
        if out:
            self.log.debug("exechook output", extra={"output": out})

    # -- status ---------------------------------------------------------------

    def health(self) -> str | None:
        assert self.stale_after is not None
        since = self.last_success or self.started_at
        age = time.time() - since
        if age > self.stale_after:
            what = "last successful sync" if self.last_success else "no successful sync since start"
            return f"{what} {age:.0f}s ago (--stale-after {self.stale_after:g}s)"
        return None

    def status(self) -> dict[str, Any]:
        return {
            "repo": redact_url(self.repo),
            "ref": self.ref,
            "root": self.root,
            "link": self.link_path,
            "published": self.published,
            "last_sync": self.last_sync,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "syncs": self._syncs,
            "hooks": {h.name: h.status() for h in self._hooks},
        }

    # -- git (runs in a worker thread) ---------------------------------------

    def _git_env(self) -> dict[str, str]:
        config = [
            ("safe.directory", "*"),
            ("gc.autoDetach", "false"),
            ("gc.pruneExpire", "now"),
            ("credential.helper", ""),
            ("advice.detachedHead", "false"),
            ("fetch.recurseSubmodules", "false"),
            ("init.defaultBranch", "gitsync"),
            # Reflogs would keep every replaced commit alive (and refer to
            # objects a damaged repo lost); the published worktree is the record.
            ("core.logAllRefUpdates", "false"),
        ]
        if self.sparse_checkout_file:
            config += [("core.sparseCheckout", "true"), ("core.sparseCheckoutCone", "false")]
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": os.path.join(self._private, "askpass"),
            "SSH_ASKPASS": os.path.join(self._private, "askpass"),
            "GIT_ALLOW_PROTOCOL": _ALLOWED_PROTOCOLS + (":file" if is_local(self.repo) else ""),
            "GIT_CEILING_DIRECTORIES": os.path.dirname(self.root),
            "GIT_CONFIG_COUNT": str(len(config)),
            "PODKIT_GITSYNC_ASKPASS_USER": self.username or "",
            "PODKIT_GITSYNC_ASKPASS_FILE": self._url_password_file or "",
        }
        for i, (k, v) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = k
            env[f"GIT_CONFIG_VALUE_{i}"] = v
        if self._password is not None:
            # Re-read (one stat) before each sync: rotation takes effect now, and the
            # new value is registered for scrubbing before git can echo it anywhere.
            try:
                self._password.value()
            except OSError as exc:
                raise GitError(f"--password-file: {exc.strerror or exc}") from None
            env["PODKIT_GITSYNC_ASKPASS_FILE"] = os.path.abspath(self._password.path)
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.ssh_key_file:
            ssh += ["-i", self._ssh_key(), "-o", "IdentitiesOnly=yes"]
        if self.ssh_known_hosts:
            ssh += ["-o", "StrictHostKeyChecking=yes"]
            if self.ssh_known_hosts_file:
                ssh += ["-o", f"UserKnownHostsFile={os.path.abspath(self.ssh_known_hosts_file)}"]
        else:
            ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        env["GIT_SSH_VARIANT"] = "ssh"
        return env

    def _ssh_key(self) -> str:
        """ssh refuses a key readable by others (a Secret mounted 0644): use a 0600 copy."""
        assert self.ssh_key_file is not None
        st = os.stat(self.ssh_key_file)
        if not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return os.path.abspath(self.ssh_key_file)
        copy = os.path.join(self._private, "ssh-key")
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig != self._ssh_key_sig:
            with open(self.ssh_key_file, "rb") as src:
                data = src.read()
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._ssh_key_sig = sig
        return copy

    def _sync_blocking(self, asked: bool = False) -> SyncResult:
        deadline = time.monotonic() + self.sync_timeout
        env = self._git_env()
        if self._needs_check:
            self._check_repo(deadline, env, thorough=self._needs_check == "full")
            self._needs_check = None
        try:
            result = self._sync_repo(deadline, env, asked)
        except GitError as exc:
            if exc.timed_out or self._runs.aborted or exc.remote:
                raise
            # A local failure (missing objects, a broken worktree): repair and try once more.
            self.log.warning(
                "local git failure; checking the repository", extra={"error": str(exc)}
            )
            self._check_repo(deadline, env, thorough=True)
            result = self._sync_repo(deadline, env)
        if not result.changed and self.stale_worktree_timeout > 0:
            # Replaced worktrees expire while nothing new arrives too; a publish
            # already ran this cleanup. A listdir when there is nothing to do.
            with contextlib.suppress(GitError, OSError):
                self._cleanup(result.sha, deadline, env)
        return result

    def _init_repo(self, deadline: float, env: dict[str, str]) -> None:
        g = _git.new_git(self.root, deadline, env, self._runs)
        g.init("-q")
        g.remote("add", "origin", self._git_url)

    def _check_repo(self, deadline: float, env: dict[str, str], *, thorough: bool) -> None:
        """Remove leftover lock files; re-clone a repository git cannot use.

        `git fsck` reads every object (minutes on a big repository), so it runs
        only after a local failure or when lock files show a git was killed;
        otherwise the published commit must merely be readable.
        """
        gitdir = os.path.join(self.root, ".git")
        if not os.path.isdir(gitdir):
            if os.path.lexists(gitdir):
                os.unlink(gitdir)
            self._init_repo(deadline, env)
            return
        removed = _remove_locks(gitdir)
        if removed:
            self.log.warning("removed leftover lock files", extra={"files": removed})
            thorough = True
        try:
            g = _git.new_git(self.root, deadline, env, self._runs)
            top = g.rev_parse("--show-toplevel")
            if os.path.realpath(top) != os.path.realpath(self.root):
                raise GitError(f"repository toplevel is {top}, not --root")
            published = _published_sha(self.link_path)
            if not thorough and published is not None:
                try:
                    g.rev_parse("--verify", "-q", published + "^{commit}")
                except GitError as exc:
                    # Missing after a re-clone the remote then failed to refill is
                    # fine; only fsck can tell that from damage.
                    if exc.timed_out or self._runs.aborted:
                        raise
                    thorough = True
            if thorough:
                g.fsck("--connectivity-only", "--no-progress", "--no-dangling")
            url = g.config("--get", "remote.origin.url") if _has_origin(gitdir) else ""
            if url != self._git_url:
                if url:
                    g.remote("set-url", "origin", self._git_url)
                else:
                    g.remote("add", "origin", self._git_url)
        except GitError as exc:
            if exc.timed_out or self._runs.aborted:
                raise  # not evidence against the repository
            self.log.warning("repository unusable; re-cloning", extra={"error": str(exc)})
            self._wipe(gitdir)
            self._init_repo(deadline, env)

    def _wipe(self, gitdir: str) -> None:
        """Drop .git and every worktree but the published one (its files stay served)."""
        _rmtree(gitdir)
        keep = _published_sha(self.link_path)
        base = os.path.join(self.root, WORKTREES)
        for name in os.listdir(base):
            if name != keep:
                _rmtree(os.path.join(base, name))

    def _sync_repo(self, deadline: float, env: dict[str, str], asked: bool = False) -> SyncResult:
        published = _published_sha(self.link_path)
        if (
            published is not None
            and _SHA_RE.match(self.ref)
            and published == self.ref
            and _attached(self._worktree(published))
        ):
            return SyncResult(published, False, False)  # a commit never moves: nothing to fetch
        try:
            repo = _git.Repo(self.root)
        except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError) as exc:
            raise GitError(f"not a usable git repository: {exc}") from None
        with repo:
            g = _git.bounded(repo.git, deadline, env, self._runs)
            # One round trip (the ref advertisement) instead of a fetch that,
            # shallow, would send the same commit again every period. Skipped
            # when a push webhook or SIGHUP asked for this sync: the ref has
            # most likely moved, and going straight to the fetch saves a trip.
            if (
                not asked
                and self._fetched_once
                and published
                and _attached(self._worktree(published))
                and self._remote_sha(g) == published
            ):
                return SyncResult(published, False, False)
            # Into a ref of our own: it keeps the commit from gc and is the "have"
            # that keeps later full-history fetches small (no `reset --soft` needed).
            args = [
                "origin",
                f"+{self.ref}:{TARGET_REF}",
                "--no-tags",
                "--no-auto-gc",
                "--no-progress",
                "--no-recurse-submodules",
            ]
            if self.depth > 0:
                args += ["--depth", str(self.depth)]
            elif os.path.exists(os.path.join(self.root, ".git", "shallow")):
                args.append("--unshallow")
            self.m_fetches.inc()
            try:
                g.fetch(*args)
            except GitError as exc:
                exc.remote = True
                raise
            # The first sync of a process always fetches, so a changed --depth applies.
            self._fetched_once = True
            sha = g.rev_parse(TARGET_REF + "^{commit}")
            wt = self._worktree(sha)
            if sha == published and _nonempty_dir(wt):
                if not _attached(wt):
                    self._reattach(g, sha, wt, deadline, env)
                return SyncResult(sha, False, True)
            self._build_worktree(g, sha, wt, deadline, env)
        self._publish(wt)
        old = self._worktree(published) if published and published != sha else None
        if old and os.path.isdir(old):
            with contextlib.suppress(OSError):
                os.utime(old)  # starts its --stale-worktree-timeout clock
        with contextlib.suppress(GitError, OSError):
            self._cleanup(sha, deadline, env)
        return SyncResult(sha, True, True)

    def _remote_sha(self, g: _git.Git) -> str | None:
        """What --ref names on the remote now, resolved as git fetch would; None: ask fetch."""
        try:
            out = str(g.ls_remote("origin", self.ref))
        except GitError as exc:
            exc.remote = True
            raise
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition("\t")
            refs[name.strip()] = sha.strip()
        r = self.ref
        for name in (r, f"refs/{r}", f"refs/tags/{r}", f"refs/heads/{r}", f"refs/remotes/{r}"):
            if name in refs:
                return refs.get(name + "^{}", refs[name])  # an annotated tag peels to its commit
        return None

    def _build_worktree(
        self, g: _git.Git, sha: str, wt: str, deadline: float, env: dict[str, str]
    ) -> None:
        if os.path.lexists(wt):
            # Left by a sync that died before publishing it: never published, safe to drop.
            _rmtree(wt)
            g.worktree("prune")
        sparse = self.sparse_checkout_file
        # Checked out by `worktree add` itself unless the sparse patterns must be in
        # place first (one git process less per publish).
        g.worktree("add", "--force", "--detach", *(["--no-checkout"] if sparse else []), wt, sha)
        admin = _admin_dir(wt)
        if admin is None:
            raise GitError(f"worktree add {wt}: no .git file")
        _write_gitfile(wt, admin)
        w = _git.new_git(wt, deadline, env, self._runs)
        if sparse:
            info = os.path.join(admin, "info")
            os.makedirs(info, exist_ok=True)
            shutil.copyfile(sparse, os.path.join(info, "sparse-checkout"))
            w.reset("--hard", "-q", sha, "--")
        if self.submodules != "off" and os.path.exists(os.path.join(wt, ".gitmodules")):
            sub = ["update", "--init"]
            if self.submodules == "recursive":
                sub.append("--recursive")
            if self.depth > 0:
                sub += ["--depth", str(self.depth)]
            w.submodule(*sub)

    def _reattach(
        self, g: _git.Git, sha: str, wt: str, deadline: float, env: dict[str, str]
    ) -> None:
        """Give the published worktree a fresh admin dir after a re-clone, files untouched.

        Its `.git` file named an admin dir the re-clone removed, so git commands
        (and consumers' `git rev-parse HEAD`) in the tree failed. It cannot be
        rebuilt in place while it is served, so borrow the admin dir of a
        no-checkout worktree, point it at the published tree, and load its index.
        """
        tmp = os.path.join(self.root, WORKTREES, f".reattach-{sha}")
        if os.path.lexists(tmp):
            _rmtree(tmp)
        g.worktree("add", "--force", "--detach", "--no-checkout", tmp, sha)
        admin = _admin_dir(tmp)
        _rmtree(tmp)
        if admin is None:
            raise GitError(f"worktree add {tmp}: no .git file")
        with open(os.path.join(admin, "gitdir"), "w", encoding="utf-8") as f:
            f.write(os.path.join(wt, ".git") + "\n")
        _write_gitfile(wt, admin)
        if self.sparse_checkout_file:
            os.makedirs(os.path.join(admin, "info"), exist_ok=True)
            shutil.copyfile(
                self.sparse_checkout_file, os.path.join(admin, "info", "sparse-checkout")
            )
        # Mixed reset: the index from the commit; the served files are not written.
        _git.new_git(wt, deadline, env, self._runs).reset("-q", sha, "--")
        self.log.info("re-attached the published worktree", extra={"commit": sha})

    def _publish(self, wt: str) -> None:
        link = self.link_path
        linkdir = os.path.dirname(link)
        os.makedirs(linkdir, exist_ok=True)
        tmp = os.path.join(linkdir, f".{os.path.basename(link)}.tmp-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.relpath(wt, linkdir), tmp)
        os.replace(tmp, link)  # rename(2): readers see the old or the new link, never neither
        fd = os.open(linkdir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _cleanup(self, current: str, deadline: float, env: dict[str, str]) -> None:
        base = os.path.join(self.root, WORKTREES)
        now = time.time()
        removed = 0
        prune = False
        admins = os.path.join(self.root, ".git", "worktrees")
        for name in os.listdir(base):
            if name == current:
                continue
            path = os.path.join(base, name)
            try:
                age = now - os.lstat(path).st_mtime
            except OSError:
                continue
            if self.stale_worktree_timeout <= 0 or age > self.stale_worktree_timeout:
                admin = _admin_dir(path)
                _rmtree(path)
                # What `git worktree prune` would do for it, without a process.
                if admin is None or os.path.dirname(admin) != admins:
                    prune = True
                elif os.path.isdir(admin):
                    _rmtree(admin)
                removed += 1
        if not removed:
            return
        g = _git.new_git(self.root, deadline, env, self._runs)
        if prune:
            g.worktree("prune")
        if self.git_gc != "off":
            gc = {"auto": ["--auto"], "always": [], "aggressive": ["--aggressive"]}[self.git_gc]
            g.gc("--quiet", *gc)


def _remove_dead_private_dirs() -> None:
    """Private dirs of a gitsync that was SIGKILLed (they can hold a URL's password)."""
    base = tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not name.startswith("podkit-gitsync-") or len(parts) < 4 or not parts[2].isdigit():
            continue
        path = os.path.join(base, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _admin_dir(worktree: str) -> str | None:
    """The `.git/worktrees/<name>` directory a worktree's `.git` file names, if it says."""
    dotgit = os.path.join(worktree, ".git")
    try:
        with open(dotgit, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    return os.path.normpath(os.path.join(worktree, text.removeprefix("gitdir:").strip()))


def _attached(worktree: str) -> bool:
    """The worktree has files and its `.git` file names an admin dir that exists."""
    admin = _admin_dir(worktree)
    return admin is not None and os.path.isdir(admin) and _nonempty_dir(worktree)


def _write_gitfile(worktree: str, admin: str) -> None:
    # Relative, so the volume can be mounted at another path in other containers;
    # renamed into place, so a reader of a served tree never sees half a file.
    tmp = os.path.join(worktree, ".git.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"gitdir: {os.path.relpath(admin, worktree)}\n")
    os.replace(tmp, os.path.join(worktree, ".git"))


def _has_origin(gitdir: str) -> bool:
    try:
        with open(os.path.join(gitdir, "config"), encoding="utf-8") as f:
            return '[remote "origin"]' in f.read()
    except OSError:
        return False


def _remove_locks(gitdir: str) -> list[str]:
    """Lock files a killed git left behind; nothing else runs git in this repo."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(gitdir):
        if os.path.basename(dirpath) == "objects" and dirpath == os.path.join(gitdir, "objects"):
            dirnames[:] = [d for d in dirnames if d in ("pack", "info")]
        for name in filenames:
            if (
                name.endswith(".lock")
                or name == "gc.pid"
                or (name.startswith("tmp_") and os.path.basename(dirpath) == "pack")
            ):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed.append(os.path.relpath(path, gitdir))
    return removed


def main() -> None:
    GitSync.main()


__all__ = ["GitSync", "main"]
