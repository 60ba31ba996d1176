"""gitsync the program: what triggers a sync, the sync loop, and what it reports.

The class is built in layers, each a module: `settings.py` declares the
options (git-sync's whole flag surface), `config.py` the rules over them
(validate, `podkit validate`'s static checks, --check-config), `hooks.py`
runs the hooks, and this module the lifecycle, the loop and the status.
The git work runs in a worker thread (`checkout.py`) and hands back a result;
credentials are `auth.py`'s, the atomic link flip `publish.py`'s, who may ask
for a sync `triggers.py`'s, git-sync's --http-bind endpoint `status.py`'s.
This module (with hooks.py) is the only one that touches the event loop. With
`repos:` in --config, one `GitSync` per repository (built by `repos.py`)
holds that repository's settings and state, and this object runs their loops
side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from podkit import RateLimited, UsageError, redact_url
from podkit.admin import Request, Response
from podkit.aio import wait_or_timeout
from podkit.hooks import Retrier
from podkit.logs import rfc3339
from podkit.secrets import SecretFile, scrub

from . import auth, compat, repos
from .auth import Auth
from .errors import GitError
from .github_app import GitHubApp
from .hooks import WithHooks
from .publish import WORKTREES, published_sha, write_atomic
from .status import GitSyncHTTP
from .triggers import TokenBucket, refusal, retry_after
from .verify import VerifyError

if TYPE_CHECKING:  # GitPython is imported when the program runs, not for --help
    from . import _git
    from .checkout import Checkout


def too_many_failures(consecutive: int, max_failures: int) -> bool:
    """Counted exactly as git-sync v4 counts: failure number N exits (`failCount >= N`).

    So 0 and 1 both exit on the first failure, 3 on the third; negative never.
    """
    return max_failures >= 0 and consecutive >= max(max_failures, 1)


class GitSync(WithHooks):
    """Keep a git checkout in a volume in sync, published atomically (--one-time: init)."""

    name = "gitsync"
    examples = """\
podkit gitsync --repo https://github.com/org/config.git --root /git --ref main --one-time
podkit gitsync --repo git@github.com:org/config.git --root /git --period 30s --ssh
podkit gitsync --repo https://git.example/x.git --root /git --webhook-url http://localhost:8080/-/reload
"""
    default_admin_addr = "127.0.0.1:9412"

    def __init__(self) -> None:
        super().__init__()
        self.add_route("POST", "/sync", self._http_sync)
        self._trigger = asyncio.Event()
        self._checkout: Checkout | None = None
        self._auth: Auth | None = None
        self._syncs = 0
        self.published: str | None = None
        self.last_sync: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self._hooks: list[Retrier[str]] = []
        self._sync_token: SecretFile | None = None
        self._http: GitSyncHTTP | None = None
        #: The running pre-publish hook (set and cleared on the loop, never by the worker).
        self._pre_publish_task: asyncio.Task[None] | None = None
        self._warnings: list[str] = []
        self._git_config: list[tuple[str, str]] = []
        self._credentials: list[auth.Credential] = []
        self._sync_signal: int | None = None
        self.refused: dict[str, str] | None = None
        #: --config's `repos:` (each a GitSync holding one repository's settings
        #: and state), or empty: this object syncs --repo itself.
        self._repos: list[GitSync] = []
        self._is_child = False
        #: The program whose `/` shows this repository's last error: the
        #: container's GitSync for a `repos:` entry, else this object.
        self._owner: GitSync = self
        self.repo_name = ""

    # -- lifecycle ------------------------------------------------------------

    async def setup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._errors = RateLimited(self.log, 30.0)
        self._compat_warnings()
        if self.group_write:
            os.umask(0o002)  # as git-sync: everything it writes is group-writable
        if self.add_user:
            add_user()
        m = self.metrics
        families = repos.families(m, multi=bool(self._repos), verify=self._verifies())
        self.m_requests = m.counter(
            "sync_requests_total",
            "POST /sync requests by outcome.",
            ["result"],
        )
        for r in ("accepted", "coalesced", "unauthorized", "limited"):
            self.m_requests.labels(r)
        self._sync_bucket = TokenBucket(self.sync_burst, self.sync_interval)
        if self.sync_token_file:
            self._sync_token = SecretFile(self.sync_token_file)
        for rs in self._runners():
            rs._loop, rs._errors = self._loop, self._errors
            if rs is not self:
                rs._stopping = self._stop_event()  # one stop for every repository
                rs.log = repos.RepoLog(self.log, rs.repo_name)  # type: ignore[assignment]
                rs._errors = RateLimited(rs.log, 30.0)
            await rs._setup_repo(families)
        if self._repos:
            # Ready once every repository has synced once (each its own check on /).
            for rs in self._repos:
                self.readiness(f"first-sync:{rs.repo_name}", rs._first_sync_missing)
        if self.http_bind:
            self._http = GitSyncHTTP(self, self.http_bind, metrics=self.http_metrics)
            await self._http.start()
            self.log.info(
                "serving git-sync's HTTP endpoint",
                extra={"addr": self.http_bind, "metrics": self.http_metrics},
            )

    def _runners(self) -> list[GitSync]:
        """The repositories this process syncs: itself, or each of --config's repos."""
        return self._repos or [self]

    def _verifies(self) -> bool:
        return any(r.verify_signatures for r in self._runners())

    def _first_sync_missing(self) -> str | None:
        return None if self.last_success is not None else "no successful sync yet"

    async def _setup_repo(self, families: dict[str, Any]) -> None:
        """One repository's directories, credentials, checkout, metrics and hooks."""
        self.root = os.path.abspath(self.root)
        try:
            os.makedirs(os.path.join(self.root, WORKTREES), exist_ok=True)
        except OSError as exc:  # an environment problem: one line, not a traceback
            raise UsageError(
                f"--root {self.root}: {exc.strerror or exc} (mount a writable volume there, "
                "e.g. an emptyDir shared with the app)"
            ) from None
        self.published = published_sha(self.link_path, self.publish_mode)
        bound = repos.bind(families, self.repo_name if self._is_child else None)
        self.m_syncs = bound["syncs"]
        self.m_duration = bound["duration"]
        self.m_last_success = bound["last_success"]
        self.m_fetches = bound["fetches"]
        self.m_hooks = bound["hooks"]
        self.m_signatures: Any = bound.get("signatures")
        self._auth = Auth(
            self.repo,
            username=self.username,
            password=self.password,
            password_file=self.password_file,
            askpass_url=self.askpass_url,
            github_app=self._github_app(),
            credentials=self._credentials,
            ssh_key_files=self.ssh_key_file,
            ssh_known_hosts=self.ssh_known_hosts,
            ssh_known_hosts_file=self.ssh_known_hosts_file,
        )
        self._auth.setup()
        verifier = None
        if self.verify_signatures:
            from .verify import Verifier

            verifier = Verifier(
                self._auth.private_path("gnupg"),
                allowed_signers_file=self.allowed_signers_file,
                gpg_keyring_file=self.gpg_keyring_file,
                verify_tag=self.verify_tag,
            )
            try:
                verifier.setup()
            except GitError as exc:
                raise UsageError(str(exc)) from None
        from .checkout import Checkout  # GitPython: only when the program runs

        self._checkout = Checkout(
            self.repo,
            self.root,
            self.link_path,
            self.ref,
            self._auth,
            self.log,
            depth=self.depth,
            submodules=self.submodules,
            sparse_checkout_file=self.sparse_checkout_file,
            sync_timeout=self.sync_timeout,
            stale_worktree_timeout=self.stale_worktree_timeout,
            git_gc=self.git_gc,
            git_config=self._git_config,
            filter_spec=self.filter_spec,
            group_write=self.group_write,
            on_fetch=self.m_fetches.inc,
            pre_publish=self._pre_publish if self.pre_publish_exechook_command else None,
            verifier=verifier,
            publish_mode=self.publish_mode,
            repair_check_interval=self.repair_check_interval,
        )
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

    def _github_app(self) -> GitHubApp | None:
        issuer = self.github_app_application_id or self.github_app_client_id
        if not issuer:
            return None
        assert self.github_app_private_key_file and self.github_app_installation_id
        return GitHubApp(
            self.github_app_private_key_file,
            issuer,
            self.github_app_installation_id,
            self.github_base_url,
        )

    def _compat_warnings(self) -> None:
        """One warning per deprecated spelling or unread variable, at start."""
        for text in self._warnings:
            self.log.warning(text)
        if self.password is not None:
            self.log.warning(
                "a password from a flag or variable is visible to more than a file "
                "(kubectl describe, /proc/<pid>/environ): prefer --password-file"
            )
        # Read already: keep secrets out of every child's environment (git, hooks).
        for o in self.options():
            if o.secret:
                for name in (o.env_name, *o.also_env):
                    os.environ.pop(name, None)
        env_names = {n for o in self.options() for n in (o.env_name, *o.also_env)}
        for name in compat.unknown_env(os.environ, env_names):
            self.log.warning(f"{name} is not a setting podkit gitsync reads; ignored")
        for name in compat.git_sync_v3_env(os.environ):
            if name in env_names:
                self.log.warning(f"{name} is git-sync v3's name (deprecated); use GITSYNC_*")

    async def cleanup(self) -> None:
        if self._http is not None:
            await self._http.stop()
        for r in self._runners():
            if r._checkout is not None:
                r._checkout.runs.abort()
            for h in r._hooks:
                await h.stop()
            if r._auth is not None:
                r._auth.cleanup()

    def sighup_signals(self) -> tuple[int, ...]:
        # SIGHUP always (podkit's trigger), plus git-sync's --sync-on-signal.
        extra = () if self._sync_signal in (None, signal.SIGHUP) else (self._sync_signal,)
        return (signal.SIGHUP, *extra)

    def on_sighup(self) -> None:
        self.log.info("sync requested", extra={"by": "signal"})
        for r in self._runners():
            r._trigger.set()

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
        # One event per repository: however many requests arrive, at most one sync waits.
        runners = self._runners()
        wanted = request.query.get("repo")
        if wanted and self._repos:
            # A push webhook per repository: POST /sync?repo=<name> syncs that one only.
            runners = [r for r in runners if r.repo_name in wanted]
            if not runners:
                return Response(404, b"no such repository\n")
        coalesced = all(r._trigger.is_set() for r in runners)
        self.m_requests.labels("coalesced" if coalesced else "accepted").inc()
        self._errors.log("sync-requested", 20, "sync requested", by="POST /sync")
        for r in runners:
            r._trigger.set()
        body: dict[str, Any] = {"queued": True, "coalesced": coalesced}
        if self._repos:
            body["published"] = {r.repo_name: r.published for r in runners}
        else:
            body["published"] = self.published
        return Response.json(body, status=202)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        if not self._repos:
            await self._run_repo()
            return
        # Each repository in its own loop: one failing never holds up the others.
        self.set_ready()  # and every repository's first-sync check (setup)
        await asyncio.gather(*(r._run_repo() for r in self._repos))
        codes = [r.exit_code for r in self._repos if r.exit_code]
        if codes:
            self.exit_code = max(codes)

    async def _run_repo(self) -> None:
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
            # Until the first success, git-sync's --init-* settings apply.
            initial = self.last_success is None
            limit = self.max_failures
            if initial and self.init_max_failures is not None:
                limit = self.init_max_failures
            if not ok and too_many_failures(self.consecutive_failures, limit):
                self.log.error(
                    "too many consecutive failures; exiting",
                    extra={"failures": self.consecutive_failures, "max_failures": limit},
                )
                self.exit_code = 1
                if self._is_child:
                    # A container that exits restarts every repository in it: asked for
                    # explicitly (the default -1 never exits).
                    self._stopping.set()  # type: ignore[union-attr]
                return
            wait = self.period
            if initial and self.init_period is not None:
                wait = self.init_period
            asked = await self._wait_trigger(wait)
        # Give hooks for the last publish a moment to land before the runner stops us.
        for h in self._hooks:
            await h.idle(min(5.0, self.shutdown_timeout / 2))

    async def _wait_trigger(self, seconds: float) -> bool:
        """Wait for the period, a stop, or a trigger; True when a trigger ended it."""
        await self.until_stopped(wait_or_timeout(self._trigger, seconds))
        return self._trigger.is_set()

    async def _sync(self, asked: bool = False) -> bool:
        start = time.monotonic()
        checkout = self._checkout
        assert checkout is not None
        checkout.runs.reset()
        work = asyncio.ensure_future(asyncio.to_thread(checkout.sync, asked))
        # A stop leaves `work` running (it is ours): abort the git in flight, so the
        # thread returns at once, and collect its outcome below either way.
        with contextlib.suppress(Exception):  # work's own failure: read from it below
            if not await self.until_stopped(work):
                checkout.runs.abort()
                if self._pre_publish_task is not None:
                    self._pre_publish_task.cancel()  # run_command kills its group
        try:
            result = await work
        except Exception as exc:
            err: BaseException | None = exc
        else:
            err = None
        elapsed = time.monotonic() - start
        self.m_duration.observe(elapsed)
        self.last_sync = time.time()
        self._syncs += 1
        if err is not None:
            if self.stopping:
                return False
            self.consecutive_failures += 1
            self.last_error = str(err) or type(err).__name__
            if isinstance(err, VerifyError):
                self.m_signatures.labels("refused").inc()
                self.refused = {"commit": err.sha, "reason": err.reason}
            self.m_syncs.labels("error").inc()
            self._write_error_file(self.last_error)
            named = f"{self.repo_name}: {self.last_error}" if self._is_child else self.last_error
            self._owner.record_error("sync", named)
            self._errors.log(
                "sync",
                40,
                "sync failed; the last good tree stays published"
                if self.published
                else "sync failed; nothing is published yet",
                error=self.last_error,
                failures=self.consecutive_failures,
                published=self.published,
                repo=redact_url(self.repo),
            )
            return False
        self._errors.clear("sync")
        if self.consecutive_failures or self.last_success is None:
            self._write_error_file(None)
        if self.consecutive_failures:
            self.log.info("sync recovered", extra={"failures": self.consecutive_failures})
        self.consecutive_failures = 0
        self.last_error = None
        self.last_success = time.time()
        self.m_last_success.set(self.last_success)
        first = not self.ready
        self.published = result.sha
        if result.verified:
            self.m_signatures.labels("good").inc()
            self.refused = None
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

    def _write_error_file(self, error: str | None) -> None:
        """git-sync's --error-file: the last error, written whole or not at all; gone on success."""
        if not self.error_file:
            return
        path = os.path.join(self.root, self.error_file)
        try:
            if error is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return
            record = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "msg": "error syncing repo",
                # a file other processes read, like the log: scrubbed as the log is
                "error": scrub(error),
                "failCount": self.consecutive_failures,
            }
            write_atomic(path, (json.dumps(record) + "\n").encode())
        except OSError as exc:
            # A full disk must not stop syncing: the old file (if any) stays whole.
            self._errors.log(
                "error-file", 30, "cannot write --error-file", path=path, error=str(exc)
            )

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

    # -- status ---------------------------------------------------------------

    def health(self) -> str | None:
        if self._repos:
            for r in self._repos:
                reason = r.health()
                if reason:
                    return f"{r.repo_name}: {reason}"
            return None
        assert self.stale_after is not None
        since = self.last_success or self.started_at
        age = time.time() - since
        if age > self.stale_after:
            what = "last successful sync" if self.last_success else "no successful sync since start"
            return f"{what} {age:.0f}s ago (--stale-after {self.stale_after:g}s)"
        return None

    def status(self) -> dict[str, Any]:
        if self._repos:
            return {"repos": {r.repo_name: r.status() for r in self._repos}}
        return {
            "repo": redact_url(self.repo),
            "ref": self.ref,
            "root": self.root,
            "link": self.link_path,
            "published": self.published,
            # One status format across programs (issue 23): RFC 3339, UTC.
            "last_sync": rfc3339(self.last_sync) if self.last_sync else None,
            "last_success": rfc3339(self.last_success) if self.last_success else None,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "syncs": self._syncs,
            # --verify-signatures: the last fetched commit it refused, until one passes.
            **({"refused": self.refused} if self.verify_signatures else {}),
            "hooks": {h.name: h.status() for h in self._hooks},
        }

    def _remote_sha(self, g: _git.Git) -> str | None:
        from .checkout import remote_sha

        return remote_sha(g, self.ref)


def add_user(passwd: str = "/etc/passwd") -> bool:
    """git-sync's --add-user: an /etc/passwd entry for a uid that has none.

    ssh refuses to run for a uid without one ("No user exists for uid"), which
    is what an arbitrary `runAsUser` gives. True when a line was added.
    """
    uid, gid = os.getuid(), os.getgid()
    try:
        with open(passwd, encoding="utf-8") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(uid):
                    return False
    except FileNotFoundError:
        pass
    home = os.environ.get("HOME") or os.getcwd()
    with open(passwd, "a", encoding="utf-8") as f:
        f.write(f"git-sync:x:{uid}:{gid}::{home}:/sbin/nologin\n")
    return True


def main() -> None:
    GitSync.main()
