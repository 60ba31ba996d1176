"""kubefiles: ConfigMaps and Secrets selected by label, written to a folder.

For each resource and namespace it lists, then watches from the list's
resourceVersion (with bookmarks). A 410 relists; the watch is reopened before
--max-watch-age; when nothing, not even a bookmark, arrived for
--watch-idle-timeout (a stream that stalled without closing) it relists; every
--resync it relists and compares the folder with the API by content, so a
missed event is repaired within one resync. /healthz fails when no list, event
or bookmark arrived for --stale-after: a dead watch cannot look healthy.

Longer than the 600 lines a module should have, for one reason: the
list/watch loop, the desired folder it feeds and the writer that applies it
share one generation counter and the dirty flag that keeps the folder and the
API in step; the API client (kubeapi.py) and the file writing (writer.py) are
already apart.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from podkit import Backoff, RateLimited, Sidecar, UsageError, option, redact_url, rfc3339
from podkit.hooks import HookError, Retrier, WebhookOptions, run_command
from podkit.program import command_problem, path_problem, writable_dir_problem
from podkit.retry import RetryOptions

from .kubeapi import SA_DIR, APIError, Gone, KubeAPI, from_kubeconfig, in_cluster
from .writer import Folder, Result, safe_name, safe_subdir

K8S_SIDECAR_ANNOTATION = "k8s-sidecar-target-directory"
#: How many refused keys /status keeps (newest last), and how many distinct
#: refusals are remembered so each is logged once.
MAX_REFUSED = 50
MAX_REFUSED_SEEN = 10_000
#: A watch that ended sooner than this did not hold: the next one waits a backoff.
MIN_WATCH = 1.0


def _file_mode(text: str) -> int:
    mode = int(str(text).strip(), 8)
    if not 0 <= mode <= 0o777:
        raise ValueError(f"not a file mode: {text!r}")
    return mode


def _check_mode(text: str) -> None:
    try:
        _file_mode(text)
    except ValueError:
        raise ValueError(f"not an octal file mode such as 0644: {text!r}") from None


@dataclass
class Scope:
    """One list+watch: a resource in a namespace (None: all namespaces)."""

    resource: str
    namespace: str | None
    state: str = "starting"
    resource_version: str = ""
    last_list: float | None = None
    last_fresh: float | None = None  # list, event or bookmark
    last_error: str | None = None
    lists: int = 0
    watch_restarts: int = 0
    objects: dict[str, tuple[str, dict[str, bytes]]] = field(default_factory=dict)
    listed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> str:
        return f"{self.resource}/{self.namespace or 'ALL'}"


class KubeFiles(Sidecar):
    """Write labelled ConfigMaps/Secrets to a folder, with a watch that cannot die silently.

    A drop-in for kiwigrid/k8s-sidecar: its LABEL, LABEL_VALUE, FOLDER,
    RESOURCE, NAMESPACE, METHOD, REQ_URL, ... variables are read as fallbacks.
    """

    name = "kubefiles"
    examples = """\
podkit kubefiles --label grafana_dashboard=1 --folder /dashboards --resource both
podkit kubefiles --label app=web --namespace ALL --folder /config --webhook-url http://localhost:3000/api/admin/provisioning/dashboards/reload
podkit kubefiles --label app=web --folder /config --one-time   # an init container
"""
    default_admin_addr = "127.0.0.1:9417"

    label: str = option(
        required=True,
        metavar="SELECTOR",
        help="label selector (full syntax: 'a=1', 'a in (x,y)', '!b'); "
        "with --label-value it is the key",
        also_env="LABEL",
    )
    label_value: str | None = option(
        None,
        metavar="VALUE",
        help="value of --label (k8s-sidecar's split form)",
        also_env="LABEL_VALUE",
    )
    folder: str = option(
        required=True, kind="path", help="folder to write the files into", also_env="FOLDER"
    )
    resource: str = option(
        "configmap",
        choices=("configmap", "secret", "both"),
        help="what to watch",
        also_env="RESOURCE",
    )
    namespace: list[str] = option(
        metavar="NS",
        repeat=True,
        help="namespace to watch (repeatable, or comma-separated; ALL: every namespace; "
        "default: the pod's own)",
        also_env="NAMESPACE",
    )
    folder_annotation: str = option(
        K8S_SIDECAR_ANNOTATION,
        metavar="NAME",
        help="annotation naming an object's subfolder under --folder",
        also_env="FOLDER_ANNOTATION",
    )
    unique_filenames: bool = option(
        False,
        help="name files namespace_<ns>.<resource>_<name>.<key> so objects cannot collide",
        also_env="UNIQUE_FILENAMES",
    )
    default_file_mode: str = option(
        "0644",
        metavar="OCTAL",
        help="mode of the written files",
        also_env="DEFAULT_FILE_MODE",
        validator=_check_mode,
    )
    resync: float = option(
        "5m", kind="duration", min=0.05, help="full relist and folder check this often"
    )
    max_watch_age: float = option(
        "10m",
        kind="duration",
        min=1.0,
        help="reopen a watch this often (before the API server's own timeout)",
    )
    watch_idle_timeout: float = option(
        "90s",
        kind="duration",
        min=0.05,
        help="relist when a watch brought nothing, not even a bookmark, this long",
    )
    stale_after: float = option(
        "3m",
        kind="duration",
        min=0.05,
        help="/healthz fails when no list, event or bookmark arrived this long",
    )
    method: str = option(
        "WATCH",
        choices=("WATCH", "LIST", "SLEEP"),
        help="k8s-sidecar's mode: LIST is --one-time; SLEEP and WATCH both watch",
        also_env="METHOD",
        validator=None,
    )
    one_time: bool = option(False, help="write everything once and exit 0 (an init container)")
    script: str | None = option(
        None, metavar="CMD", help="shell command run after a change", also_env="SCRIPT"
    )
    script_timeout: float = option("60s", kind="duration", help="how long --script may run")
    webhook_url: str | None = option(
        None, kind="url", help="URL called after a change", also_env="REQ_URL"
    )
    webhook_payload: str | None = option(
        None, metavar="JSON", help="body of the webhook", also_env="REQ_PAYLOAD"
    )
    # k8s-sidecar's webhook is a GET with a 10 s limit, read from its REQ_* names.
    webhook: WebhookOptions = WebhookOptions.include(
        prefix="webhook-",
        defaults={"method": "GET", "timeout": "10s"},
        also_env={"method": "REQ_METHOD", "timeout": "REQ_TIMEOUT"},
    )
    retry: RetryOptions = RetryOptions.include(prefix="retry-", about="the API and the hooks")
    kubeconfig: str | None = option(
        None,
        kind="path",
        help="kubeconfig to use instead of the service account",
        also_env="KUBECONFIG",
    )
    context: str | None = option(None, help="kubeconfig context (default: current-context)")
    server: str | None = option(
        None, kind="url", help="API server URL (default: from the kubeconfig or the pod's env)"
    )
    # Not kind="path": the kubelet mounts it, so `podkit validate` and `podkit
    # inject` must not ask for (or add) a volume there, which would hide the token.
    service_account_dir: str = option(
        SA_DIR,
        metavar="SA_DIR",
        help="where the kubelet put the service account's token, ca.crt and namespace",
    )
    insecure_skip_tls_verify: bool = option(
        False, help="do not check the API server's certificate", also_env="SKIP_TLS_VERIFY"
    )

    def validate(self) -> None:
        if self.label_value is not None and self.label_value != "":
            self.selector = f"{self.label.strip()}={self.label_value.strip()}"
        else:
            self.selector = self.label.strip()
        if not self.selector:
            raise UsageError("--label: empty selector")
        if self.method == "LIST":
            self.one_time = True
        self.mode = _file_mode(self.default_file_mode)
        if self.stale_after <= self.watch_idle_timeout:
            # A quiet cluster without bookmarks shows nothing but the periodic
            # reopen; the bound must leave room for it.
            raise UsageError(
                f"--stale-after ({self.stale_after:g}s) must be longer than "
                f"--watch-idle-timeout ({self.watch_idle_timeout:g}s)"
            )
        if self.kubeconfig:
            self.creds = from_kubeconfig(self.kubeconfig, self.context)
            if self.server:
                self.creds.server = self.server.rstrip("/")
        else:
            self.creds = in_cluster(self.service_account_dir, self.server)
        if self.insecure_skip_tls_verify:
            self.creds.insecure = True
        try:
            self.creds.ssl()  # a bad CA or client certificate is a usage error, said now
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise UsageError(f"TLS settings for {self.creds.server}: {exc}") from None
        names: list[str] = []
        for ns in self.namespace or []:
            names += [n.strip() for n in ns.split(",") if n.strip()]
        if not names:
            if not self.creds.namespace:
                raise UsageError("--namespace: not given and the pod's namespace is unknown")
            names = [self.creds.namespace]
        self.namespaces: list[str | None] = (
            [None] if any(n.upper() == "ALL" for n in names) else list(dict.fromkeys(names))
        )
        self.resources = ["configmap", "secret"] if self.resource == "both" else [self.resource]

    # -- setup ----------------------------------------------------------------

    async def setup(self) -> None:
        m = self.metrics
        self.m_lists = m.counter("lists_total", "Full lists, by resource.", ["resource"])
        self.m_restarts = m.counter(
            "watch_restarts_total",
            "Watches reopened, by reason (max_age, closed, idle, gone, error).",
            ["reason"],
        )
        self.m_events = m.counter("watch_events_total", "Watch events by type.", ["type"])
        self.m_gone = m.counter("gone_total", "410 Gone answers (relist needed).")
        self.m_errors = m.counter(
            "api_errors_total", "Failed API calls, by status (0: network).", ["code"]
        )
        self.m_written = m.counter("files_written_total", "Files written (atomically).")
        self.m_removed = m.counter("files_removed_total", "Files removed.")
        self.m_refused = m.counter(
            "refused_total", "Keys or objects not written: unsafe names, conflicts, bad data."
        )
        self.m_objects = m.gauge("objects", "Objects selected, over all namespaces.")
        self.m_files = m.gauge("files", "Files kubefiles owns in the folder.")
        self.m_fresh = m.gauge(
            "last_fresh_timestamp_seconds",
            "Unix time of the stalest scope's last list, event or bookmark.",
        )
        for t in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            self.m_events.labels(t)
        for r in ("max_age", "closed", "idle", "gone", "error"):
            self.m_restarts.labels(r)

        self.api = KubeAPI(self.creds)
        self.out = Folder(self.folder, self.mode)
        self.scopes = [Scope(r, ns) for r in self.resources for ns in self.namespaces]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kubefiles-write")
        self._dirty = asyncio.Event()
        self._verify = False
        self._limited = RateLimited(self.log, 60.0)
        self.refused: list[dict[str, str]] = []
        self._refused_seen: set[str] = set()
        self.last_write: float | None = None
        self.last_result: dict[str, Any] = {}
        self._hooks: list[Retrier[int]] = []
        if self.webhook_url:
            self._hooks.append(Retrier("webhook", self._webhook, self._backoff(), self._hooked))
        if self.script:
            self._hooks.append(Retrier("script", self._script, self._backoff(), self._hooked))
        self._generation = 0
        if not self.one_time:
            for h in self._hooks:
                h.start()

    def config_problems(self) -> list[str]:
        """--check-config: the folder can be written and the API token read
        (validate() has already read the kubeconfig or the service account)."""
        problems = [writable_dir_problem("--folder", self.folder)]
        if self.creds.token_file:
            problems.append(path_problem("--service-account-dir", self.creds.token_file, "file"))
        if self.script:
            problems.append(command_problem("--script", "/bin/sh"))
        return [p for p in problems if p]

    def _backoff(self) -> Backoff:
        return self.retry.backoff(0.2)

    async def cleanup(self) -> None:
        for h in getattr(self, "_hooks", []):
            await h.stop()
        if hasattr(self, "_pool"):
            self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the loop ---------------------------------------------------------------

    async def run(self) -> None:
        if self.method == "SLEEP":
            self.log.info("METHOD=SLEEP: kubefiles watches and relists every --resync instead")
        if self.one_time:
            self.exit_code = await self._one_time()
            return
        tasks = [asyncio.create_task(self._follow(s), name=f"scope:{s.key}") for s in self.scopes]
        loops = [*tasks, asyncio.create_task(self._writer(), name="writer")]
        try:
            # The loops never end by themselves: one that does has failed.
            await self.until_stopped(asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED))
            for t in loops:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in loops:
                t.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        for h in self._hooks:
            await h.idle(min(5.0, self.shutdown_timeout / 2))

    async def _one_time(self) -> int:
        for scope in self.scopes:
            backoff = self._backoff()
            while True:
                try:
                    await self._list(scope)
                    break
                except APIError as exc:
                    if exc.status in (401, 403, 404):
                        self.log.error("cannot list", extra={"error": str(exc)})
                        return 1
                    if await self.sleep(self._api_failed(scope, exc, backoff)):
                        return 128 + (self.stop_signal or signal.SIGTERM)
        if self.stopping:  # asked to stop mid-way: the app must not start half-provisioned
            return 128 + (self.stop_signal or signal.SIGTERM)
        res = await self._apply(verify=True)
        if res.errors:
            return 1
        self.set_ready()
        for h in self._hooks:
            try:
                await h.action(self._generation)
            except HookError as exc:
                self.record_error("hook", str(exc))
                self.log.error("hook failed", extra={"hook": h.name, "error": str(exc)})
                return 1
        return 0

    def _api_failed(self, scope: Scope, exc: APIError, backoff: Backoff) -> float:
        self.m_errors.labels(str(exc.status)).inc()
        scope.last_error = str(exc)
        self.record_error("api", f"{scope.key}: {exc}")
        scope.state = "backoff"
        delay = backoff.next()
        self._limited.log(
            f"{scope.key}:{exc.status}:{exc}",
            logging.ERROR if exc.status in (401, 403) else logging.WARNING,
            "API call failed; will retry",
            scope=scope.key,
            error=str(exc),
            retry_in=round(delay, 3),
        )
        return delay

    async def _follow(self, scope: Scope) -> None:
        """List, then watch from the list's version; relist on 410 and every --resync."""
        backoff = self._backoff()
        need_list = True
        next_resync = 0.0
        while not self.stopping:
            watch_start: float | None = None
            try:
                if need_list or time.monotonic() >= next_resync:
                    await self._list(scope)
                    need_list = False
                    next_resync = time.monotonic() + self.resync
                    self._mark_dirty(verify=True)
                watch_start = time.monotonic()
                reason = await self._watch(scope, next_resync)
            except Gone as exc:
                self.m_gone.inc()
                scope.last_error = str(exc)
                self.log.info("resourceVersion expired; relisting", extra={"scope": scope.key})
                need_list = True
                reason = "gone"
            except APIError as exc:
                reason = "error"
                if await self.sleep(self._api_failed(scope, exc, backoff)):
                    return
                # After an outage the watch would resume from an old version;
                # a fresh list also catches a deletion while it was down.
                need_list = True
            except TimeoutError:
                # Not even a bookmark: the stream may be dead in a way TCP
                # does not show. Only a list proves what the API holds now.
                reason = "idle"
                need_list = True
                self.log.info("watch idle; relisting", extra={"scope": scope.key})
            if reason != "resync":
                scope.watch_restarts += 1
                self.m_restarts.labels(reason).inc()
            # The backoff only resets after a watch that held: a server that
            # ends every watch at once (or 410s it) must not be hammered.
            held = watch_start is not None and time.monotonic() - watch_start >= MIN_WATCH
            if held or reason in ("max_age", "resync"):
                backoff.reset()
            elif reason in ("closed", "gone") and await self.sleep(backoff.next()):
                return

    async def _list(self, scope: Scope) -> None:
        scope.state = "listing"
        items, rv = await self.api.list(scope.resource, scope.namespace, self.selector)
        self.m_lists.labels(scope.resource).inc()
        scope.objects = {}
        for obj in items:
            self._put(scope, obj)
        scope.resource_version = rv
        scope.lists += 1
        scope.last_list = scope.last_fresh = time.time()
        scope.last_error = None
        scope.listed.set()
        self.log.debug("listed", extra={"scope": scope.key, "objects": len(items)})

    async def _watch(self, scope: Scope, until: float) -> str:
        """One watch; returns why it ended (resync, max_age, closed)."""
        left = until - time.monotonic()
        if left <= 0:
            return "resync"
        # Jittered, so many replicas do not reconnect in step.
        age = min(left, self.max_watch_age * random.uniform(0.9, 1.0))
        scope.state = "watching"

        deadline = time.monotonic() + age
        events = self.api.watch(
            scope.resource,
            scope.namespace,
            self.selector,
            scope.resource_version,
            max(1, int(age)),
            self.watch_idle_timeout,
        )
        try:
            async with asyncio.timeout(age):
                async for kind, obj in events:
                    self._event(scope, kind, obj)
        except TimeoutError:
            if time.monotonic() >= deadline - 0.001:
                return "resync" if time.monotonic() >= until else "max_age"
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        return "closed"

    def _event(self, scope: Scope, kind: str, obj: dict[str, Any]) -> None:
        meta = _mapping(obj.get("metadata"))  # anything else: _put refuses the object
        rv = meta.get("resourceVersion")
        self.m_events.labels(
            kind if kind in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK") else "other"
        ).inc()
        scope.last_fresh = time.time()
        if rv:
            scope.resource_version = str(rv)
        if kind in ("ADDED", "MODIFIED"):
            self._put(scope, obj)
            self._mark_dirty()
        elif kind == "DELETED" and scope.objects.pop(_obj_key(obj), None) is not None:
            self._mark_dirty()

    def _put(self, scope: Scope, obj: dict[str, Any]) -> None:
        """Decode an object's files into the scope (what the folder should hold for it)."""
        meta = _mapping(obj.get("metadata"))
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        where = f"{scope.resource} {ns}/{name}"
        sub = ""
        annotations = meta.get("annotations") or {}
        # The API server's bytes: any other shape is refused (counted), never a crash.
        shapes = (
            obj.get("metadata"),
            annotations,
            obj.get("data") or {},
            obj.get("binaryData") or {},
        )
        if not all(isinstance(v, dict) for v in shapes):
            self._refuse(where, "", "malformed object")
            scope.objects.pop(_obj_key(obj), None)
            return
        if self.folder_annotation in annotations:
            got = safe_subdir(str(annotations[self.folder_annotation]), self.folder)
            if got is None:
                self._refuse(where, self.folder_annotation, "folder outside --folder")
                scope.objects.pop(_obj_key(obj), None)
                return
            sub = got
        files: dict[str, bytes] = {}
        secret = scope.resource == "secret"
        for section, b64 in (("data", secret), ("binaryData", True)):
            for key, value in (obj.get(section) or {}).items():
                key = str(key)
                why = safe_name(key)
                if why is not None:
                    self._refuse(where, key, f"unsafe file name ({why})")
                    continue
                try:
                    data = (
                        base64.b64decode(str(value), validate=True)
                        if b64
                        else str(value).encode("utf-8")
                    )
                except (binascii.Error, ValueError):
                    self._refuse(where, key, "not base64")
                    continue
                fname = key
                if self.unique_filenames:
                    fname = f"namespace_{ns}.{scope.resource}_{name}.{key}"
                files[f"{sub}/{fname}" if sub else fname] = data
        scope.objects[_obj_key(obj)] = (where, files)

    def _refuse(self, where: str, key: str, why: str) -> None:
        sig = f"{where}:{key}:{why}"
        if sig in self._refused_seen:
            return
        if len(self._refused_seen) >= MAX_REFUSED_SEEN:
            self._refused_seen.clear()  # bounded: at worst a refusal is logged again
        self._refused_seen.add(sig)
        self.m_refused.inc()
        self.record_error("refused", f"{where} key {key!r} not written: {why}")
        self.log.warning("refused", extra={"object": where, "key": key, "reason": why})
        self.refused.append({"object": where, "key": key, "reason": why})
        del self.refused[:-MAX_REFUSED]

    # -- writing ----------------------------------------------------------------

    def _mark_dirty(self, verify: bool = False) -> None:
        self._verify = self._verify or verify
        self._dirty.set()

    def _desired(self) -> dict[str, bytes]:
        """Every file every object wants; on a collision the first in a stable order wins."""
        out: dict[str, bytes] = {}
        owner: dict[str, str] = {}
        for scope in self.scopes:
            for _key, (where, files) in sorted(scope.objects.items()):
                for rel, data in files.items():
                    if rel in out:
                        self._refuse(where, rel, f"same file as {owner[rel]}")
                        continue
                    out[rel] = data
                    owner[rel] = where
        return out

    async def _writer(self) -> None:
        # Nothing is written until every scope has listed once: a half-known
        # state would remove the files of the namespaces not listed yet.
        for scope in self.scopes:
            await scope.listed.wait()
        backoff = self._backoff()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            verify, self._verify = self._verify, False
            try:
                await self._apply(verify)
            except OSError as exc:
                # The folder or its manifest cannot be written (disk full, a
                # read-only volume): keep the watch, try again, verify then.
                delay = backoff.next()
                self.record_error("folder", f"cannot write the folder: {exc}; will retry")
                self._limited.log(
                    f"folder:{exc}",
                    logging.ERROR,
                    "cannot write the folder; will retry",
                    error=str(exc),
                    retry_in=round(delay, 3),
                )
                await asyncio.sleep(delay)
                self._mark_dirty(verify=True)
                continue
            backoff.reset()
            self.set_ready()

    async def _apply(self, verify: bool) -> Result:
        desired = self._desired()
        loop = asyncio.get_running_loop()
        res = await loop.run_in_executor(self._pool, self.out.apply, desired, verify)
        self.m_objects.set(sum(len(s.objects) for s in self.scopes))
        self.m_files.set(len(self.out.owned))
        self.m_written.inc(len(res.written))
        self.m_removed.inc(len(res.removed))
        for rel in res.conflicts:
            self._refuse("folder", rel, "a file kubefiles did not write is there")
        for err in res.errors:
            self._limited.log(err, logging.ERROR, "write failed", error=err)
        if res.changed:
            self.last_write = time.time()
            self.last_result = {
                "written": res.written[:20],
                "removed": res.removed[:20],
                "time": rfc3339(self.last_write),
            }
            self.log.info(
                "folder updated",
                extra={"written": len(res.written), "removed": len(res.removed)},
            )
            self._generation += 1
            if not self.one_time:
                for h in self._hooks:
                    h.submit(self._generation)
        return res

    # -- hooks ------------------------------------------------------------------

    def _hooked(self, _generation: int, error: str | None) -> None:
        if error is not None:
            self.record_error("hook", f"{error}; retrying with backoff")

    async def _webhook(self, _generation: int) -> None:
        assert self.webhook_url is not None
        body = self.webhook_payload.encode() if self.webhook_payload else None
        headers = {"Content-Type": "application/json"} if body else {}
        await self.webhook.call(self.webhook_url, headers=headers, body=body)

    async def _script(self, _generation: int) -> None:
        assert self.script is not None
        code, out = await run_command(
            ["/bin/sh", "-c", self.script], timeout=self.script_timeout, cwd=self.folder
        )
        if code is None:
            raise HookError(f"--script: ran past {self.script_timeout:g}s")
        if code != 0:
            raise HookError(f"--script: exit {code}: {out[-300:]}")

    # -- what the admin server shows ----------------------------------------------

    def health(self) -> str | None:
        now = time.time()
        for scope in getattr(self, "scopes", []):
            since = scope.last_fresh or self.started_at
            if now - since > self.stale_after:
                what = "last list/watch/bookmark" if scope.last_fresh else "no list since start"
                return (
                    f"{scope.key}: {what} {now - since:.1f}s ago "
                    f"(--stale-after {self.stale_after:g}s): {scope.last_error or 'no news'}"
                )
        return None

    async def before_metrics(self) -> None:
        fresh = [s.last_fresh or 0.0 for s in getattr(self, "scopes", [])]
        self.m_fresh.set(min(fresh) if fresh else 0)

    def status(self) -> dict[str, Any]:
        def ts(t: float | None) -> str | None:
            return rfc3339(t) if t else None

        return {
            "selector": self.selector,
            "folder": self.folder,
            "server": redact_url(self.creds.server),
            "namespaces": {
                s.key: {
                    "resource": s.resource,
                    "namespace": s.namespace or "ALL",
                    "state": s.state,
                    "resource_version": s.resource_version,
                    "objects": len(s.objects),
                    "files": sum(len(f) for _w, f in s.objects.values()),
                    "lists": s.lists,
                    "watch_restarts": s.watch_restarts,
                    "last_list": ts(s.last_list),
                    "last_fresh": ts(s.last_fresh),
                    "last_error": s.last_error,
                }
                for s in getattr(self, "scopes", [])
            },
            "files": len(self.out.owned) if hasattr(self, "out") else 0,
            "last_change": self.last_result or None,
            "refused": list(getattr(self, "refused", [])),
            "hooks": {h.name: h.status() for h in getattr(self, "_hooks", [])},
        }


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _obj_key(obj: dict[str, Any]) -> str:
    meta = _mapping(obj.get("metadata"))
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def main() -> None:
    KubeFiles.main()
