"""Actions that must eventually succeed: webhooks and commands after a change.

A `Retrier` runs an action for the newest submitted value, retrying with
backoff until it succeeds. A newer value supersedes a pending retry (so a
burst of changes causes one call, for the newest), and two runs never overlap.
gitsync's hooks and reloader's reloads are both this. `call_webhook` and
`run_command` are the two kinds of action they run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .aio import wait_for, wait_or_timeout
from .logs import RateLimited, rfc3339
from .options import OptionGroup, UsageError, option
from .retry import Backoff

T = TypeVar("T")
log = logging.getLogger("podkit.hooks")


class HookError(Exception):
    """The action failed; the message says why (it is logged, so no secrets)."""


class Retrier(Generic[T]):
    def __init__(
        self,
        name: str,
        action: Callable[[T], Awaitable[None]],
        backoff: Backoff,
        on_result: Callable[[T, str | None], None] | None = None,
    ) -> None:
        self.name = name
        self.action = action
        self.backoff = backoff
        self.on_result = on_result
        self._pending: T | None = None
        self._has_pending = False
        self._generation = 0
        self._wake = asyncio.Event()
        # Set while nothing is pending: idle() waits on it instead of polling.
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.last_success: float | None = None
        self.attempts = 0
        self.retry_at: float | None = None
        self._log = RateLimited(log, 30.0)

    def submit(self, value: T) -> None:
        """Run the action for `value` as soon as possible; supersedes any pending value."""
        self._pending = value
        self._has_pending = True
        self._idle.clear()
        self._generation += 1
        self.backoff.reset()
        self._wake.set()

    @property
    def pending(self) -> bool:
        return self._has_pending

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"retrier:{self.name}")

    async def __aenter__(self) -> Retrier[T]:
        """`async with Retrier(...) as r:` starts its task and stops it at the end."""
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending (e.g. at shutdown); False on timeout."""
        return await wait_or_timeout(self._idle, timeout)

    def status(self) -> dict[str, Any]:
        return {
            "pending": self._has_pending,
            "last_error": self.last_error,
            "last_success": rfc3339(self.last_success) if self.last_success else None,
            "retry_in_seconds": (
                max(0.0, round(self.retry_at - time.monotonic(), 3)) if self.retry_at else None
            ),
        }

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._has_pending:
                continue
            value, generation = self._pending, self._generation
            self.attempts += 1
            try:
                await self.action(value)  # type: ignore[arg-type]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = str(exc) or type(exc).__name__
                if self.on_result:
                    self.on_result(value, self.last_error)  # type: ignore[arg-type]
                delay = self.backoff.next()
                # A peer down for an hour must not fill the log: the same
                # error is said once per 30 s (a new error at once).
                self._log.log(
                    f"{self.name}:{self.last_error}",
                    logging.WARNING,
                    "action failed; will retry",
                    action=self.name,
                    error=self.last_error,
                    retry_in=round(delay, 3),
                    attempts=self.attempts,
                )
                self.retry_at = time.monotonic() + delay
                try:
                    # A new submit() wakes us early and resets the backoff.
                    await wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    self._wake.set()
                self.retry_at = None
                continue
            self.last_error = None
            self.last_success = time.time()
            self.backoff.reset()
            if generation == self._generation:
                self._has_pending = False
                self._idle.set()
            else:
                self._wake.set()  # superseded while running: go again for the newer one
            if self.on_result:
                self.on_result(value, None)  # type: ignore[arg-type]


def _http_method(text: str) -> str:
    method = text.strip().upper()
    if not method.isalpha():
        raise ValueError(f"not an HTTP method: {text!r}")
    return method


def _header_line(text: str) -> str:
    from .http import parse_header

    try:
        parse_header(text)
    except UsageError:
        # not quoted: --webhook-header is secret, and `Authorization Bearer <token>`
        # without its colon would be printed whole
        raise ValueError("expected 'Name: value' (not shown: the option is secret)") from None
    return text


class WebhookOptions(OptionGroup):
    """How a webhook is called: method, expected status, time limit, headers.

    Where it is called (one `--webhook-url` or several) is the program's own
    option; include this with `prefix="webhook-"`, and with
    `defaults={"method": "GET"}` where a program's calls differ."""

    about = "the webhook"

    method: str = option(
        "POST", metavar="METHOD", validator=_http_method, help="HTTP method of {about}"
    )
    status: int = option(
        200, metavar="CODE", min=0, max=599, help="expected status of {about}; 0 accepts any"
    )
    timeout: float = option(
        "5s", kind="duration", metavar="DURATION", min=0.0, help="time limit of one call of {about}"
    )
    header: list[str] = option(
        repeat=True,
        secret=True,
        metavar="'NAME: VALUE'",
        validator=_header_line,
        help="'Name: value' header sent with {about} (repeatable)",
    )

    def check(self) -> None:
        # The validator checked the spelling; the value keeps it normalised.
        self.method = self.method.strip().upper()

    def headers(self) -> dict[str, str]:
        from .http import parse_headers

        return parse_headers(self.header, self.flag("header"))

    async def call(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        ssl_ctx: ssl.SSLContext | None = None,
    ) -> None:
        """One call with these settings; HookError unless the status is as expected."""
        await call_webhook(
            url,
            method=self.method,
            expected_status=self.status,
            timeout=self.timeout,
            headers={**self.headers(), **(headers or {})},
            body=body,
            ssl_ctx=ssl_ctx,
        )


async def call_webhook(
    url: str,
    *,
    method: str = "POST",
    expected_status: int = 200,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
) -> None:
    """One webhook call; raises HookError unless the status is as expected (0: any)."""
    from .httpclient import HTTPClientError, fetch
    from .secrets import redact_url

    where = f"{method} {redact_url(url)}"
    try:
        result = await fetch(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            ssl_ctx=ssl_ctx,
            max_body=64 * 1024,
        )
    except TimeoutError:
        raise HookError(f"{where}: timed out after {timeout:g}s") from None
    except (OSError, HTTPClientError, asyncio.IncompleteReadError) as exc:
        raise HookError(f"{where}: {exc.__class__.__name__}: {exc}") from None
    if expected_status and result.status != expected_status:
        raise HookError(f"{where}: status {result.status}, expected {expected_status}")


async def run_command(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    tail: int = 2000,
) -> tuple[int | None, str]:
    """Run a hook command: (its exit code, or None when it ran past `timeout`; its output's tail).

    stdout and stderr together, stdin from /dev/null, the environment plus
    `env`. It gets its own session, so a timeout, or a cancel at shutdown,
    kills its whole process group (a shell's children too), never just the
    shell. OSError when it cannot be started.
    """
    starting = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    )
    try:
        # Shielded: the process runs (and may fork) before this await returns;
        # asyncio's own clean-up of a cancelled start kills the leader only.
        proc = await asyncio.shield(starting)
    except asyncio.CancelledError:
        starting.add_done_callback(_kill_started)
        raise
    try:
        out, _ = await wait_for(proc.communicate(), timeout)
    except TimeoutError:
        kill_group(proc.pid)
        await proc.wait()
        return None, ""
    except asyncio.CancelledError:
        kill_group(proc.pid)
        raise
    return proc.returncode, out.decode("utf-8", "replace").strip()[-tail:] if out else ""


def _kill_started(fut: asyncio.Future[asyncio.subprocess.Process]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        kill_group(fut.result().pid)


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads: a child and everything it started."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
