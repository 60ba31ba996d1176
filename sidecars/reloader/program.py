"""reloader: reload the app when its mounted configuration really changes.

Events only wake the reloader up; the decision is by content. After a quiet
`--debounce`, it hashes every watched file (SHA-256 over relative name and
content, following the links that stay inside, in a thread) and reloads only when the hash differs
from the one of the last successful reload. A failed reload is retried with
backoff until it succeeds; a newer change supersedes it. Every
`--resync-interval` it hashes anyway, since inotify can drop events silently.

Longer than the 600 lines a module should have, for one reason: the
decisions (debounce, scan, submit, reload, retry, supersede) share the state
of the content being reloaded and are tested through that one object
(tests/unit/test_reloader_decisions.py). What needs none of that state lives
beside it: tree.py (hashing), render.py, actions.py, verify.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal as signal_mod
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

from podkit import RateLimited, Sidecar, UsageError, option, redact_url, rfc3339
from podkit.aio import wait_for
from podkit.checks import ConditionError, JSONCondition, MetricCondition
from podkit.hooks import HookError, Retrier, WebhookOptions, run_command
from podkit.http import AuthOptions
from podkit.program import path_problem, writable_dir_problem
from podkit.retry import RetryOptions
from podkit.watch import Change, Watcher

from . import actions
from .render import Rendered, RenderError, Spec, render, write
from .tree import LOOP, OUTSIDE, SPECIAL, Filter, Plan, Scan, scan
from .verify import Verifier

T = TypeVar("T")
ALL = Filter([], [])

#: A trailing debounce starves under a never-ending stream of writes; after
#: this many debounce periods (at least MIN_MAX_WAIT) of constant change, check anyway.
MAX_WAIT_FACTOR = 10
MIN_MAX_WAIT = 2.0
#: How often in a row the watches may move under one check before it settles.
MAX_PASSES = 3


class Reloader(Sidecar):
    """Reload the app (webhook, signal, command) when its mounted config really changes.

    Watches --watch paths (ConfigMap/Secret volumes, a gitsync link, plain
    files) with inotify, following the symlinks that stay inside them,
    decides by a content hash, and retries a failed reload until it succeeds.
    """

    name = "reloader"
    examples = """\
podkit reloader --watch /etc/prometheus --webhook-url http://127.0.0.1:9090/-/reload
podkit reloader --watch /etc/nginx/conf.d --pid-file /run/nginx/nginx.pid --signal HUP
podkit reloader --render /etc/tpl/app.yml:/etc/app/app.yml --one-time
"""
    default_admin_addr = "127.0.0.1:9413"

    watch: list[str] = option(
        metavar="PATH",
        repeat=True,
        kind="path",
        help="file or directory to watch (repeatable; required unless --render)",
    )
    render: list[str] = option(
        metavar="SRC:DEST",
        repeat=True,
        help="render SRC ($(ENV), ${ENV}, $(file:/path); *.gz gunzipped) to DEST before reloading",
    )
    render_files_from: list[str] = option(
        metavar="DIR",
        repeat=True,
        kind="path",
        help="directory whose files $(file:/path) may read (repeatable; none by default)",
    )
    one_time: bool = option(False, help="render every --render once and exit (an init container)")
    verify_url: str | None = option(
        None, metavar="URL", kind="url", help="after a reload, GET this URL to check it took"
    )
    verify_json: list[str] = option(
        metavar="'$.PATH OP VALUE'",
        repeat=True,
        help="condition on the --verify-url JSON body, e.g. '$.status == \"success\"'",
    )
    verify_metric: list[str] = option(
        metavar="'NAME OP NUMBER'",
        repeat=True,
        help="condition on a --verify-url metric, e.g. 'up{job=\"app\"} == 1'",
    )
    verify_timestamp: str | None = option(
        None,
        metavar="$.PATH|METRIC",
        help="a timestamp at --verify-url that must advance past its value before the reload",
    )
    verify_timeout: float = option(
        "10s",
        metavar="DURATION",
        kind="duration",
        min=0.001,
        help="how long the app may take to apply it",
    )
    unhealthy_after: float = option(
        "5m",
        metavar="DURATION",
        kind="duration",
        min=0.0,
        help="/healthz fails when a reload has not taken for this long",
    )
    webhook_url: list[str] = option(
        metavar="URL", repeat=True, kind="url", help="URL to call on change (repeatable)"
    )
    webhook: WebhookOptions = WebhookOptions.include(prefix="webhook-")
    auth: AuthOptions = AuthOptions.include(about="the webhook")
    signal: str | None = option(
        None,
        metavar="SIGNAL",
        help="signal to send on change, e.g. HUP (default HUP with --process/--pid-file)",
    )
    process: str | None = option(
        None,
        metavar="NAME",
        help="signal the processes with this executable name (shared process namespace)",
    )
    pid_file: str | None = option(
        None, metavar="FILE", kind="path", help="signal the process whose PID is in this file"
    )
    reload_command: str | None = option(
        None,
        metavar="CMD",
        flag="--command",
        env="PODKIT_COMMAND",
        help="shell command to run on change",
    )
    command_gates_reload: bool = option(
        False, help="run --command first; a non-zero exit blocks the reload of that content"
    )
    command_timeout: float = option(
        "60s", metavar="DURATION", kind="duration", min=0.0, help="how long --command may run"
    )
    debounce: float = option(
        "1s",
        metavar="DURATION",
        kind="duration",
        min=0.0,
        help="quiet time after the last change before reloading (trailing)",
    )
    resync_interval: float = option(
        "3m",
        metavar="DURATION",
        kind="duration",
        min=0.001,
        help="re-hash this often even without events",
    )
    retry: RetryOptions = RetryOptions.include(prefix="retry-", about="a failed reload")
    reload_on_start: bool = option(False, help="reload once at start-up")
    include: list[str] = option(
        metavar="GLOB", repeat=True, help="only files matching this glob count (repeatable)"
    )
    exclude: list[str] = option(
        metavar="GLOB", repeat=True, help="files matching this glob do not count (repeatable)"
    )
    follow_symlinks: bool = option(
        False,
        help="follow links in a watched directory that lead outside it (a risk: see the docs)",
    )

    def validate(self) -> None:
        self.watch = [os.path.abspath(w) for w in self.watch]
        self._specs: list[Spec] = []
        for text in self.render:
            try:
                self._specs.append(Spec.parse(text))
            except ValueError as exc:
                raise UsageError(f"--render: {exc}") from None
        if not self.watch and not self._specs:
            raise UsageError("--watch is required (or --render SRC:DEST)")
        if self.one_time:
            if not self._specs:
                raise UsageError("--one-time: needs --render SRC:DEST")
            return  # renders and exits: no action, no watching
        self._verifier: Verifier | None = None
        if (
            self.verify_json or self.verify_metric or self.verify_timestamp
        ) and not self.verify_url:
            raise UsageError("--verify-json/--verify-metric/--verify-timestamp: need --verify-url")
        if self.verify_url:
            if not (self.verify_json or self.verify_metric or self.verify_timestamp):
                raise UsageError(
                    "--verify-url: give --verify-json, --verify-metric or --verify-timestamp"
                )
            try:
                self._verifier = Verifier(
                    self.verify_url,
                    [JSONCondition.parse(t) for t in self.verify_json],
                    [MetricCondition.parse(t) for t in self.verify_metric],
                    self.verify_timestamp,
                    self.verify_timeout,
                    {},
                )
            except ConditionError as exc:
                raise UsageError(f"--verify-*: {exc}") from None
        self._signal: signal_mod.Signals | None = None
        if self.signal is not None:
            try:
                self._signal = actions.parse_signal(self.signal)
            except ValueError as exc:
                raise UsageError(f"--signal: {exc}") from None
        if self.process is not None and (not self.process.strip() or "/" in self.process):
            # Neither could ever match /proc/PID/comm or argv[0]'s base name:
            # every reload would fail and be retried forever.
            raise UsageError(f"--process: an executable name such as nginx, not {self.process!r}")
        if self.process and self.pid_file:
            raise UsageError("--process and --pid-file: give one of them, not both")
        if self.process or self.pid_file:
            self._signal = self._signal or signal_mod.SIGHUP
        elif self._signal is not None:
            raise UsageError("--signal: needs --process NAME or --pid-file PATH")
        if not (self.webhook_url or self._signal or self.reload_command):
            raise UsageError(
                "no action: give --webhook-url, --process/--pid-file (with --signal) or --command"
            )
        if self.command_gates_reload and not self.reload_command:
            raise UsageError("--command-gates-reload: needs --command")
        if (self.auth.configured or self.webhook.header) and not self.webhook_url:
            raise UsageError(
                "--bearer-token-file/--basic-auth-user/--header-file/--webhook-header: "
                "need --webhook-url"
            )
        for url in self.webhook_url:
            if urlsplit(url).scheme.lower() not in ("http", "https"):
                # aiohttp refuses it at every call: a reload that can never succeed.
                raise UsageError(f"--webhook-url: not http or https: {redact_url(url)}")

    def config_problems(self) -> list[str]:
        """--check-config: what is watched and rendered is there, and the
        rendered files can be written."""
        problems = [path_problem("--watch", p) for p in self.watch]
        for spec in self._specs:
            problems.append(path_problem("--render", spec.src, "file"))
            problems.append(writable_dir_problem("--render", os.path.dirname(spec.dest) or "."))
        problems += [path_problem("--render-files-from", d, "dir") for d in self.render_files_from]
        return [p for p in problems if p]

    # -- setup ---------------------------------------------------------------

    async def setup(self) -> None:
        m = self.metrics
        self.m_reloads = m.counter(
            "reloads_total", "Reload attempts by result (success, failure, blocked).", ["result"]
        )
        for result in ("success", "failure", "blocked"):
            self.m_reloads.labels(result)
        self.m_last_ts = m.gauge(
            "last_reload_success_timestamp_seconds", "Unix time of the last successful reload."
        )
        self.m_last_ok = m.gauge(
            "last_reload_successful", "1 if the last reload attempt succeeded, else 0."
        )
        self.m_last_ok.set(1)
        self.m_events = m.counter(
            "watch_events_total", "File-system events that could change the watched content."
        )
        self.m_resyncs = m.counter(
            "resyncs_total", "Periodic re-hashes (--resync-interval) done without an event."
        )
        self.m_renders = m.counter(
            "renders_total", "--render passes by result (success, failure).", ["result"]
        )
        for result in ("success", "failure"):
            self.m_renders.labels(result)
        self.m_files = m.gauge("watched_files", "Files in the content hash.")
        self.m_bytes = m.gauge("watched_bytes", "Bytes in the content hash.")
        self.m_skipped = m.counter(
            "skipped_paths_total",
            "Paths in a watched tree left out of the hash, counted once each when first seen"
            " (outside: a link leaving the watched directory; special: FIFO, device, socket;"
            " loop: a symbolic-link loop).",
            ["reason"],
        )
        for reason in (OUTSIDE, SPECIAL, LOOP):
            self.m_skipped.labels(reason)

        self.filter = Filter(self.include, self.exclude)
        self.retrier: Retrier[str] = Retrier("reload", self._reload, self.retry.backoff(0.5))
        self.watcher = Watcher([], self._on_change, reads=False)
        # One worker thread for all file-system work: scans never overlap, and
        # one thread keeps one malloc arena (the default pool would grow to six).
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="reloader-scan")
        self._plan = Plan()
        self._placed: dict[tuple[str, bool], tuple[int, int]] = {}
        self._placed_dirs: set[str] = set()
        self._dead: set[str] = set()
        self._watch_errors: list[str] = []
        self._skipped: dict[str, str] = {}
        self._rendered: list[Rendered] = []
        self._render_files: set[str] = set()
        self.render_error: str | None = None
        self._failing_since: float | None = None
        self._wake = asyncio.Event()
        self._limited = RateLimited(self.log, 60.0)
        self._reason = "start"
        self._debounce_handle: asyncio.TimerHandle | None = None
        self._burst_start: float | None = None
        self.current: Scan | None = None
        self.last_success_hash: str | None = None
        self.last_success_time: float | None = None
        self.rejected_hash: str | None = None
        self.last_reload: dict[str, Any] | None = None
        self._submitted: str | None = None
        self._done_for: str | None = None
        self._done: set[str] = set()

    async def cleanup(self) -> None:
        if self._debounce_handle is not None:
            self._debounce_handle.cancel()
        if hasattr(self, "retrier"):
            await self.retrier.stop()
        if hasattr(self, "watcher"):
            await self.watcher.stop()
        if hasattr(self, "_pool"):
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- the main loop -------------------------------------------------------

    async def run(self) -> None:
        if self.one_time:
            await self._in_thread(self._scan)
            ok = await self._write_rendered()
            self.exit_code = 0 if ok else 1
            return
        loop = asyncio.get_running_loop()
        self.watcher.start()
        if self.watcher.polling:
            self.log.warning("inotify unavailable: polling the watched paths")
        self.retrier.start()
        await self._check("start")
        assert self.current is not None
        if self.reload_on_start:
            self._submit(self.current.digest)
        else:
            # The app started with this content: it is what it has loaded.
            self.last_success_hash = self._submitted = self.current.digest
        # Ready means every watched path exists: a missing one is a volume the
        # pod spec forgot (a ConfigMap is mounted before any container starts).
        self.readiness("watch-paths", self._missing_watch)
        if why := self._missing_watch():
            self.log.warning("not ready until the watched path exists", extra={"reason": why})
        self.set_ready()
        self.log.info(
            "watching",
            extra={
                "watch": self.watch,
                "hash": self.current.digest[:16],
                "files": self.current.files,
                "watches": len(self._placed),
            },
        )

        async def stop_waker() -> None:
            await self.wait_stopping()
            self._wake.set()

        waker = asyncio.create_task(stop_waker())
        try:
            next_resync = loop.time() + self.resync_interval
            while not self.stopping:
                try:
                    await wait_for(self._wake.wait(), max(0.0, next_resync - loop.time()))
                except TimeoutError:
                    pass
                if self.stopping:
                    break
                if self._wake.is_set():
                    self._wake.clear()
                    reason = self._reason
                else:
                    reason = "resync"
                    self.m_resyncs.inc()
                if reason == "resync" or loop.time() >= next_resync:
                    next_resync = loop.time() + self.resync_interval
                try:
                    await self._check(reason)
                except Exception as exc:  # never let one bad scan end the sidecar
                    self._limited.log(
                        "check", logging.ERROR, "scan failed; retrying", error=repr(exc)
                    )
                    self._look_again(max(self.debounce, 1.0))
        finally:
            waker.cancel()

    def on_sighup(self) -> None:
        """SIGHUP to the reloader itself: look at the content now."""
        self._request("signal")

    def _request(self, reason: str) -> None:
        self._reason = reason
        self._wake.set()

    def _on_change(self, change: Change) -> None:
        if change.kind in ("deleted", "moved") and change.path in self._placed_dirs:
            # Its watch is gone with it, even if a new directory gets the same inode.
            self._dead.add(change.path)
        if not any(self._plan.relevant(p) for p in (change.path, change.dest) if p):
            return
        self.m_events.inc()
        self._arm()

    def _arm(self) -> None:
        """(Re)start the trailing debounce timer, bounded so a write storm cannot starve it."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._burst_start is None:
            self._burst_start = now
        max_wait = max(MIN_MAX_WAIT, MAX_WAIT_FACTOR * self.debounce)
        fire_at = min(now + self.debounce, self._burst_start + max_wait)
        if self._debounce_handle is not None:
            self._debounce_handle.cancel()
        self._debounce_handle = loop.call_at(fire_at, self._fire)

    def _look_again(self, delay: float) -> None:
        """Scan again after `delay`, unless a debounce is already running."""
        if self._debounce_handle is None:
            loop = asyncio.get_running_loop()
            self._debounce_handle = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._debounce_handle = None
        self._burst_start = None
        self._request("change")

    async def _check(self, reason: str) -> None:
        """Hash the content, move the watches to where it lives now, and reload if it changed."""
        result: Scan | None = None
        for _ in range(MAX_PASSES):
            result = await self._in_thread(self._scan)
            self._plan = result.plan
            moved = await self._in_thread(self._reconcile, result.plan)
            if not moved:
                break
            # Changes between the scan and the new watches would be missed: scan again.
        assert result is not None
        self.current = result
        self.m_files.set(result.files)
        self.m_bytes.set(result.bytes)
        if result.errors:
            self._limited.log(
                "unreadable",
                logging.WARNING,
                "cannot read some watched files",
                errors=result.errors[:10],
            )
        self._report_skipped(result.skipped)
        if result.unstable:
            # Caught mid-update (a file vanished under us): wait for it to settle.
            self.log.debug("content in flux; looking again after the debounce")
            self._look_again(max(self.debounce, 0.1))
            return
        digest = result.digest
        if digest == self._submitted:
            return
        if self._specs and not await self._write_rendered():
            return
        if digest == self.last_success_hash and not self.retrier.pending:
            # Back to what the app has loaded (e.g. a rejected change reverted).
            self._submitted = digest
            self.rejected_hash = None
            return
        if reason != "start":
            self.log.info(
                "change detected",
                extra={"hash": digest[:16], "files": result.files, "reason": reason},
            )
        self._submit(digest)

    def _scan(self) -> Scan:
        """Hash the --watch trees and the --render outputs; plan watches for both. In the thread.

        The digest covers what the app reads: the rendered output, not its
        template, so a template change that renders the same reloads nothing.
        """
        result = scan(self.watch, self.filter, self.follow_symlinks, skip=self._sources())
        if not self._specs:
            return result
        h = hashlib.sha256(result.digest.encode())
        rendered: list[Rendered] = []
        error: str | None = None
        files: set[str] = set()
        for spec in self._specs:
            try:
                r = render(spec, dict(os.environ), self.render_files_from, self.follow_symlinks)
            except (RenderError, OSError) as exc:
                error = str(exc) if isinstance(exc, RenderError) else f"{spec.src}: {exc.strerror}"
                h.update(b"\x00error\x00" + error.encode())
                continue
            rendered.append(r)
            files.update(r.files)
            h.update(b"\x00render\x00" + os.fsencode(spec.dest) + b"\x00")
            h.update(hashlib.sha256(r.data).digest())
        # The templates and the files they read are watched (not hashed as such).
        sources = scan([s.src for s in self._specs] + sorted(files), ALL, self.follow_symlinks)
        result.plan.merge(sources.plan)
        result.skipped.update(sources.skipped)
        result.unstable = result.unstable or sources.unstable
        result.digest = h.hexdigest()
        self._rendered, self._render_files, self.render_error = rendered, files, error
        return result

    def _sources(self) -> set[str]:
        """Templates and rendered files are not --watch content: the rendered output counts once."""
        return {os.path.realpath(p) for s in self._specs for p in (s.src, s.dest)}

    async def _write_rendered(self) -> bool:
        """Write every DEST (unchanged ones are left alone); False if the reload must wait."""
        if self.render_error is not None:
            self.m_renders.labels("failure").inc()
            self.m_last_ok.set(0)
            self.record_error("render", f"cannot render, old files kept: {self.render_error}")
            self._limited.log(
                "render:" + self.render_error,
                logging.ERROR,
                "cannot render; keeping the old files, not reloading",
                error=self.render_error,
            )
            return False
        try:
            written = [r.spec.dest for r in self._rendered if await self._in_thread(write, r)]
        except OSError as exc:
            self.m_renders.labels("failure").inc()
            self.record_error(
                "render", f"cannot write {exc.filename}: {exc.strerror or exc}; trying again"
            )
            self._limited.log(
                "render-write",
                logging.ERROR,
                "cannot write a rendered file; trying again",
                error=f"{exc.filename}: {exc.strerror or exc}",
            )
            self._look_again(max(self.debounce, 1.0))
            return False
        self.m_renders.labels("success").inc()
        if written:
            self.log.info("rendered", extra={"files": written})
        return True

    def _report_skipped(self, skipped: dict[str, str]) -> None:
        """One warning and one count per path newly left out; loops also make /healthz fail."""
        new = {p: r for p, r in skipped.items() if self._skipped.get(p) != r}
        for reason in sorted(set(new.values())):
            paths = sorted(p for p, r in new.items() if r == reason)
            self.m_skipped.labels(reason).inc(len(paths))
            self.log.warning(_SKIP_MESSAGE[reason], extra={"paths": paths[:10], "reason": reason})
        self._skipped = dict(skipped)

    def _submit(self, digest: str) -> None:
        self._submitted = digest
        self.retrier.submit(digest)

    def _reconcile(self, plan: Plan) -> bool:
        """Make the inotify watches match the plan. Runs in a thread; True if any moved."""
        want = plan.watches()
        moved = False
        errors: list[str] = []
        dead, self._dead = self._dead, set()
        for (d, rec), ino in list(self._placed.items()):
            if d in dead or want.get(d) != rec or _inode(d) != ino or not self.watcher.alive(d):
                # Gone, replaced (a new inode under the same name) or no longer wanted.
                self.watcher.remove(d)
                del self._placed[(d, rec)]
                moved = True
        for d, rec in sorted(want.items()):
            if (d, rec) in self._placed:
                continue
            here = _inode(d)
            if here is None:
                continue  # not there yet: its parent's watch sees it appear
            try:
                self.watcher.add(d, recursive=rec)
            except OSError as exc:
                errors.append(f"{d}: {exc.strerror or exc}")
                continue
            self._placed[(d, rec)] = here
            moved = True
        self._placed_dirs = {d for d, _ in self._placed}
        if errors != self._watch_errors and errors:
            self.log.warning(
                "cannot watch some directories; relying on --resync-interval",
                extra={"errors": errors[:10]},
            )
        self._watch_errors = errors
        return moved

    # -- the reload ----------------------------------------------------------

    async def _reload(self, digest: str) -> None:
        if digest == self.last_success_hash:
            self.rejected_hash = None
            self._failing_since = None
            return  # the content went back to what the app has: nothing to do
        if digest != self._done_for:
            self._done_for, self._done = digest, set()
        started = time.monotonic()
        env = {"PODKIT_RELOADER_HASH": digest}
        if self.reload_command and self.command_gates_reload and "command" not in self._done:
            code, out = await self._run_command(env)
            if code is None:
                # No verdict on the content (a loaded node, a stuck check):
                # blocking it for good would be a failed reload never retried.
                self._fail(digest, f"--command timed out after {self.command_timeout:g}s")
            if code != 0:
                self._failing_since = None  # a verdict on the content, not a reload that failed
                self.rejected_hash = digest
                self._result("blocked", digest, f"command exited {code}")
                self.log.warning(
                    "command rejected the new content; not reloading",
                    extra={"hash": digest[:16], "exit_code": code, "output": out},
                )
                return
            self._done.add("command")
        if self._verifier is not None and "verify" not in self._done:
            # The app's state before the *first* action for this content: a
            # retry after the signal went out must not take the signalled
            # state as its baseline, or the check waits for a second reload
            # that nothing sends.
            await self._verifier.before()
            self._done.add("verify")
        errors: list[str] = []
        for key, action in self._actions(env):
            if key in self._done:
                continue
            try:
                await action()
            except HookError as exc:
                errors.append(str(exc))
                continue
            self._done.add(key)
        if errors:
            self._fail(digest, "; ".join(errors))
        if self._verifier is not None:
            try:
                await self._verifier.after()
            except HookError as exc:
                # It did not take: the retry repeats the whole reload, not just the check.
                self._done = set()
                self._fail(digest, str(exc))
        self._failing_since = None
        self.last_success_hash = digest
        self.last_success_time = time.time()
        self.rejected_hash = None
        self.m_last_ts.set(self.last_success_time)
        self._result("success", digest, None)
        self.log.info(
            "reloaded",
            extra={
                "hash": digest[:16],
                "actions": sorted(self._done - {"verify"}),
                "duration_seconds": round(time.monotonic() - started, 3),
            },
        )

    def _fail(self, digest: str, error: str) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        self._result("failure", digest, error)
        raise HookError(error)

    def _actions(self, env: dict[str, str]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if self.reload_command and not self.command_gates_reload:

            async def command() -> None:
                code, tail = await self._run_command(env)
                if code is None:
                    raise HookError(f"--command timed out after {self.command_timeout:g}s")
                if code != 0:
                    raise HookError(f"--command exited {code}: {tail[-300:]}")

            out.append(("command", command))
        if self._signal is not None:
            out.append(("signal", self._send_signal))
        for i, url in enumerate(self.webhook_url):

            async def hook(url: str = url) -> None:
                await actions.webhook(url, self.webhook, self.auth)

            out.append((f"webhook{i}", hook))
        return out

    async def _run_command(self, env: dict[str, str]) -> tuple[int | None, str]:
        assert self.reload_command is not None
        argv = ["/bin/sh", "-c", self.reload_command]
        try:
            return await run_command(argv, timeout=self.command_timeout, env=env)
        except OSError as exc:
            raise HookError(f"--command: cannot start /bin/sh: {exc.strerror or exc}") from None

    async def _send_signal(self) -> None:
        sig = self._signal
        assert sig is not None
        if self.process:
            pids = await self._in_thread(
                actions.find_processes, self.process, "/proc", {os.getpid()}
            )
            what = f"--process {self.process}"
        else:
            assert self.pid_file is not None
            pids = [actions.read_pid_file(self.pid_file)]
            what = f"--pid-file {self.pid_file}"
        sent = actions.send_signal(pids, sig, what)
        self.log.info("signalled", extra={"signal": sig.name, "pids": sent})

    def _result(self, result: str, digest: str, error: str | None) -> None:
        if error is not None:
            self.record_error(result, f"reload of {digest[:16]}: {error}")
        self.m_reloads.labels(result).inc()
        self.m_last_ok.set(1 if result == "success" else 0)
        self.last_reload = {
            "hash": digest,
            "time": rfc3339(time.time()),
            "result": result,
            "error": error,
        }

    # -- status --------------------------------------------------------------

    def health(self) -> str | None:
        loops = sorted(p for p, r in getattr(self, "_skipped", {}).items() if r == LOOP)
        if loops:
            return f"symbolic-link loop in the watched tree: {', '.join(loops[:3])}"
        since = getattr(self, "_failing_since", None)
        if since is not None and self.retrier.pending:
            failing = time.monotonic() - since
            if failing >= self.unhealthy_after:
                return (
                    f"the reload has not taken for {failing:.0f}s"
                    f" (--unhealthy-after {self.unhealthy_after:g}s): {self.retrier.last_error}"
                )
        return None

    def _missing_watch(self) -> str | None:
        for path in self.watch:
            if not os.path.lexists(path):
                return f"{path} does not exist (is its volume mounted?)"
        return None

    def status(self) -> dict[str, Any]:
        if not hasattr(self, "retrier"):
            return {"watch": self.watch}
        cur = self.current
        return {
            "watch": self.watch,
            "current_hash": cur.digest if cur else None,
            "files": cur.files if cur else None,
            "bytes": cur.bytes if cur else None,
            "last_success_hash": self.last_success_hash,
            "last_success_time": (
                rfc3339(self.last_success_time) if self.last_success_time else None
            ),
            "last_reload": self.last_reload,
            "rejected_hash": self.rejected_hash,
            "retry": self.retrier.status() if self.retrier.pending else None,
            "watches": {d: ("recursive" if r else "entries") for d, r in sorted(self._placed)},
            "watch_errors": self._watch_errors,
            "skipped": dict(sorted(self._skipped.items())),
            "render": [{"src": r.src, "dest": r.dest} for r in self._specs],
            "render_error": self.render_error,
            "polling": self.watcher.polling,
        }


_SKIP_MESSAGE = {
    OUTSIDE: "links leading outside the watched directory are not followed (--follow-symlinks)",
    SPECIAL: "not a regular file or directory; not read",
    LOOP: "symbolic-link loop in the watched tree; left out until it is fixed",
}


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def main() -> None:
    Reloader.main()
