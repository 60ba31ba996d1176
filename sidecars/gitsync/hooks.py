"""gitsync's hooks: the webhook and exechook after a publish (retried until
they succeed, with git-sync's fixed backoff), the pre-publish exechook before
the link flips, and --one-time's single run of each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shlex
from typing import Any

from podkit.hooks import HookError, Retrier, run_command
from podkit.retry import Backoff

from .config import Configured
from .errors import GitError


class WithHooks(Configured):
    """Running the hooks GitSyncSettings configure."""

    # The program's state these read (set up by GitSync).
    _loop: asyncio.AbstractEventLoop
    _hooks: list[Retrier[str]]
    _pre_publish_task: asyncio.Task[None] | None
    m_hooks: Any
    published: str | None

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

    def _pre_publish(self, sha: str, worktree: str) -> None:
        """--pre-publish-exechook-command, from the worker thread, on the loop's runner."""
        fut = asyncio.run_coroutine_threadsafe(self._pre_publish_run(sha, worktree), self._loop)
        try:
            fut.result()  # the worker waits; the loop owns the task and its cancellation
        except concurrent.futures.CancelledError:
            raise GitError("pre-publish exechook: stopped") from None

    async def _pre_publish_run(self, sha: str, worktree: str) -> None:
        if self.stopping:  # the stop came before this task existed to be cancelled
            raise GitError("pre-publish exechook: stopped")
        self._pre_publish_task = asyncio.current_task()
        try:
            await self._pre_publish_hook(sha, worktree)
        finally:
            self._pre_publish_task = None

    async def _pre_publish_hook(self, sha: str, worktree: str) -> None:
        assert self.pre_publish_exechook_command is not None
        argv = shlex.split(self.pre_publish_exechook_command)
        try:
            code, out = await run_command(
                argv,
                timeout=self.pre_publish_exechook_timeout,
                env={"GITSYNC_HASH": sha},
                cwd=worktree,
                tail=500,
            )
        except OSError as exc:
            code, out = -1, f"cannot run {argv[0]}: {exc.strerror or exc}"
        self.m_hooks.labels("pre_publish_exechook", "success" if code == 0 else "error").inc()
        if code != 0:
            what = "timed out" if code is None else f"exit {code}"
            err = GitError(f"pre-publish exechook: {what}: {out}; the old tree stays published")
            err.remote = True  # not damage: no repository check follows
            raise err

    async def _webhook(self, sha: str) -> None:
        assert self.webhook_url is not None
        try:
            await self.webhook.call(self.webhook_url, headers={"Gitsync-Hash": sha})
        except HookError:
            if self.webhook.status == 0:
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
