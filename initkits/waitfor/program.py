"""waitfor: wait until dependencies answer, then exit 0 or exec the app.

    podkit waitfor [options] TARGET [TARGET ...] [-- COMMAND [ARG ...]]

Targets are URLs, checked concurrently and re-resolved on every attempt:
tcp://host:port, http(s)://..., dns://name, file:///path, unix:///path.sock,
exec:///cmd, redis(s)://, postgres(ql)://, mysql://, amqp(s)://, grpc(s)://,
kafka://, mongodb://, k8s://kind/name. Exit 0 when ready (or exec COMMAND),
124 on --timeout, 2 for a malformed target, 143/130 on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from podkit import (
    InitTask,
    RateLimited,
    UsageError,
    format_duration,
    option,
    redact_url,
    register_secret,
)
from podkit.checks import ConditionError, JSONCondition
from podkit.http import TLSClientOptions
from podkit.program import command_problem
from podkit.retry import Backoff

# Importing the probe modules registers their schemes in REGISTRY.
from . import (  # noqa: F401
    probe_amqp,
    probe_dns,
    probe_exec,
    probe_file,
    probe_grpc,
    probe_http,
    probe_k8s,
    probe_kafka,
    probe_mongodb,
    probe_mysql,
    probe_postgres,
    probe_redis,
    probe_tcp,
    probe_unix,
)
from .base import REGISTRY, HTTPSettings, NotReady, Probe, Settings, parse_target, register
from .net import describe
from .probe_exec import ExecProbe

__all__ = ["REGISTRY", "NotReady", "Probe", "WaitFor", "main", "register"]

EXIT_TIMEOUT = 124
#: How often the "waiting" line for one target may repeat while its error stays the same.
WAITING_LOG_EVERY = 5.0
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


@dataclass
class TargetState:
    probe: Probe
    attempts: int = 0
    last_error: str | None = None
    ready_after: float | None = None


class WaitFor(InitTask):
    """Wait until dependencies answer, then exit 0 or exec the app.

    podkit waitfor [options] TARGET [TARGET ...] [-- COMMAND [ARG ...]]

    Targets (checked concurrently, re-resolved on every attempt): tcp, http(s),
    dns, file, unix, exec, redis(s), postgres(ql), mysql, amqp(s), grpc(s),
    kafka, mongodb, k8s. Exit 0 when ready (with
    COMMAND: exec it), 124 on --timeout, 2 for a malformed target or option,
    143/130 on SIGTERM/SIGINT. See docs/waitfor.md.
    """

    name = "waitfor"
    examples = """\
podkit waitfor postgres://app@db:5432/app?password_file=/secrets/db/password --timeout 2m
podkit waitfor redis://cache:6379 http://config:8080/healthz -- /app/server --port 8080
podkit waitfor 'postgres://app@db/app?query=SELECT 1 FROM schema_migrations WHERE version=42'
podkit waitfor k8s://job/migrate?condition=Complete --timeout 10m
"""
    accepts_command = True

    targets: list[str] = option(
        positional=True,
        repeat=True,
        required=True,
        metavar="TARGET",
        help="URL to wait for: tcp://host:port, http(s)://..., dns://name[?type=AAAA], "
        "file:///path[?nonempty=1], unix:///path.sock, "
        "redis(s)://[user:pw@]host:port[/db][?key=K[&value=V]], "
        "postgres://user[:pw]@host:port/db[?query=SQL], mysql://[user[:pw]@]host:port[/db][?query=SQL]",
    )
    timeout: float = option("120s", kind="duration", help="give up after this long (0: never)")
    # A zero gap or timeout would spin or never let an attempt finish: 1 ms is the floor.
    interval: float = option(
        "100ms",
        kind="duration",
        min=0.001,
        help="first gap between attempts; doubles with full jitter",
    )
    max_interval: float = option(
        "2s", kind="duration", min=0.001, help="longest gap between attempts"
    )
    attempt_timeout: float = option(
        "2s", kind="duration", min=0.001, help="time limit of one attempt"
    )
    invert: bool = option(False, help="wait until every target does NOT answer")
    any: bool = option(False, help="one ready target is enough")
    http_status: str = option(
        "200-399", help="HTTP statuses that count as ready: a list and ranges, e.g. 200,204,300-399"
    )
    http_body_regex: str | None = option(
        None, help="HTTP response body must match this regex (searched)"
    )
    http_json: list[str] = option(
        repeat=True,
        metavar="'$.PATH OP VALUE'",
        help="JSON condition on the HTTP body, e.g. '$.status == \"UP\"'; repeatable",
    )
    http_header: list[str] = option(
        repeat=True,
        metavar="NAME[=REGEX]",
        help="HTTP response must carry this header (whose value matches REGEX); repeatable",
    )
    http_request_header: list[str] = option(
        repeat=True,
        metavar="'NAME: VALUE'",
        help="header to send with HTTP requests; repeatable",
        secret=True,  # often `Authorization: Bearer ...`: never in the logs
    )
    http_method: str = option("GET", help="HTTP request method")
    http_follow_redirects: bool = option(False, help="follow HTTP redirects (up to 10)")
    tls: TLSClientOptions = TLSClientOptions.include(about="the targets (https, rediss, ...)")
    k8s_api: str | None = option(
        None,
        kind="url",
        help="Kubernetes API server for k8s:// targets (default: in-cluster, from the environment)",
    )
    k8s_token_file: str | None = option(
        None,
        kind="path",
        help="bearer token for --k8s-api (default: the pod's service-account token)",
    )

    def __init__(self) -> None:
        super().__init__()
        self.probes: list[Probe] = []
        self.states: list[TargetState] = []
        self.began = time.monotonic()
        self._ready_gauge: Any = None
        self._attempts: Any = None

    # -- options -------------------------------------------------------------

    def validate(self) -> None:
        if self.max_interval < self.interval:
            raise UsageError("--max-interval: must not be shorter than --interval")
        settings = Settings(
            http=self._http_settings(),
            tls=self.tls,
            k8s_api=self.k8s_api,
            k8s_token_file=self.k8s_token_file,
        )
        self.tls.check_files()
        errors = []
        for text in self.targets:
            try:
                self.probes.append(parse_target(text, settings))
            except ValueError as exc:
                shown = redact_url(text) if "@" in text else text
                errors.append(f"target {shown!r}: {exc}")
        if errors:
            raise UsageError("; ".join(errors))

    def config_problems(self) -> list[str]:
        """--check-config: the commands it would run exist (exec:// targets,
        the app after `--`); the targets themselves are waited for, not checked."""
        problems = [
            command_problem(f"target {p.display!r}", p.argv[0])
            for p in self.probes
            if isinstance(p, ExecProbe)
        ]
        if self.command:
            problems.append(command_problem("the command after --", self.command[0]))
        return [p for p in problems if p]

    def _http_settings(self) -> HTTPSettings:
        out = HTTPSettings(
            statuses=parse_statuses(self.http_status),
            method=self.http_method.upper(),
            follow_redirects=self.http_follow_redirects,
        )
        if out.method not in HTTP_METHODS:
            raise UsageError(f"--http-method: must be one of {', '.join(HTTP_METHODS)}")
        if self.http_body_regex is not None:
            out.body_regex = _regex(self.http_body_regex, "--http-body-regex")
        for item in self.http_json:
            try:
                out.json.append(JSONCondition.parse(item))
            except ConditionError as exc:
                raise UsageError(f"--http-json: {exc}") from None
        for item in self.http_header:
            name, sep, pattern = item.partition("=")
            name = name.strip()
            if not name or any(c in name for c in " \t:"):
                raise UsageError(f"--http-header: expected NAME or NAME=REGEX, got {item!r}")
            out.headers.append((name, _regex(pattern, "--http-header") if sep else None))
        from podkit.http import parse_header

        for item in self.http_request_header:
            try:
                name, value = parse_header(item, "--http-request-header")
            except UsageError:
                # parse_header quotes the item: `Authorization Bearer <token>` without
                # its colon would be printed whole
                raise UsageError(
                    "--http-request-header: expected 'Name: value' (not shown: the option "
                    "is secret)"
                ) from None
            # The option is secret (an API key, `Bearer <token>`): hidden from the settings
            # logged at start, and scrubbed from every line, as is the credential of a
            # `Scheme credential` value alone (an error may quote just the token).
            register_secret(value)
            if name.lower() in ("authorization", "proxy-authorization"):
                register_secret(value.partition(" ")[2])
            out.request_headers.append((name, value))
        return out

    # -- the run -------------------------------------------------------------

    async def setup(self) -> None:
        if self.admin_addr and self.admin_addr != "off":
            # Metrics only when someone can read them: prometheus_client costs start-up time.
            self._ready_gauge = self.metrics.gauge(
                "target_ready", "1 when the target answered as ready, else 0.", ["target"]
            )
            self._attempts = self.metrics.counter(
                "attempts_total", "Attempts made per target.", ["target"]
            )
            for probe in self.probes:
                self._ready_gauge.labels(probe.display).set(0)
                self._attempts.labels(probe.display)

    async def run(self) -> int:
        self.began = time.monotonic()
        self.states = [TargetState(p) for p in self.probes]
        self._waiting = RateLimited(self.log, WAITING_LOG_EVERY)
        tasks = [asyncio.create_task(self._watch(st)) for st in self.states]
        try:
            _done, pending = await asyncio.wait(
                tasks,
                timeout=self.timeout or None,
                return_when=asyncio.FIRST_COMPLETED if self.any else asyncio.ALL_COMPLETED,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = round(time.monotonic() - self.began, 3)
        ready = [st for st in self.states if st.ready_after is not None]
        attempts = sum(st.attempts for st in self.states)
        if not ready or (pending and not self.any):
            for st in self.states:
                if st.ready_after is None:
                    self.log.error(
                        "not ready",
                        extra={
                            "target": st.probe.display,
                            "last_error": st.last_error,
                            "attempts": st.attempts,
                        },
                    )
            self.log.error(
                "timed out",
                extra={
                    "timeout": format_duration(self.timeout),
                    "ready": len(ready),
                    "targets": len(self.states),
                    "elapsed": elapsed,
                    "attempts": attempts,
                },
            )
            return EXIT_TIMEOUT
        self.set_ready()
        self.log.info(
            "all targets gone" if self.invert else "all targets ready",
            extra={
                "targets": len(self.states),
                "ready": len(ready),
                "elapsed": elapsed,
                "attempts": attempts,
                "mode": "any" if self.any else "all",
            },
        )
        if self.command:
            self.exec_after = list(self.command)
        return 0

    async def _watch(self, st: TargetState) -> None:
        probe = st.probe
        backoff = Backoff(self.interval, self.max_interval)
        while True:
            st.attempts += 1
            error: str | None = None
            refused = False
            try:
                async with asyncio.timeout(self.attempt_timeout):
                    await probe.check()
            except TimeoutError:
                error = f"no answer within {format_duration(self.attempt_timeout)}"
            except ConnectionRefusedError as exc:
                error, refused = describe(exc), True
            except Exception as exc:  # every failure of one attempt is a reason to retry
                error = describe(exc)
            if self._attempts is not None:
                self._attempts.labels(probe.display).inc()
            if (error is None) != self.invert:
                st.ready_after = time.monotonic() - self.began
                st.last_error = None
                if self._ready_gauge is not None:
                    self._ready_gauge.labels(probe.display).set(1)
                self.log.info(
                    "target gone" if self.invert else "target ready",
                    extra={
                        "target": probe.display,
                        "elapsed": round(st.ready_after, 3),
                        "attempts": st.attempts,
                    },
                )
                return
            if error is None:
                error = "still answers"
            if error != st.last_error:
                # A new reason is news: say it now rather than at the next rate-limit slot.
                self._waiting.clear(probe.display)
                self.record_error("not-ready", f"{probe.display}: {error}")
            st.last_error = error
            self._waiting.log(
                probe.display,
                logging.INFO,
                "waiting",
                target=probe.display,
                error=error,
                attempts=st.attempts,
                elapsed=round(time.monotonic() - self.began, 3),
            )
            if refused:
                # Backoff spares a struggling server; a refused connection means
                # no server is listening yet, and a RST costs the peer nothing.
                # Polling stays at --interval, so the listener is seen within one.
                backoff.reset()
            await asyncio.sleep(backoff.next())

    async def cleanup(self) -> None:
        # The process ends (or execs the app) right after this. Interpreter
        # teardown runs a last collection over everything ever imported, which
        # costs tens of milliseconds between "ready" and exit; frozen objects
        # are skipped by it.
        gc.freeze()

    def status(self) -> dict[str, Any]:
        return {
            "targets": [
                {
                    "target": st.probe.display,
                    "ready": st.ready_after is not None,
                    "attempts": st.attempts,
                    "last_error": st.last_error,
                }
                for st in self.states
            ]
        }


def parse_statuses(text: str) -> list[tuple[int, int]]:
    """`200,204,300-399` -> [(200, 200), (204, 204), (300, 399)]; UsageError when malformed."""
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        lo_txt, sep, hi_txt = part.strip().partition("-")
        lo_txt, hi_txt = lo_txt.strip(), hi_txt.strip()
        if not lo_txt.isdigit() or (sep and not hi_txt.isdigit()):
            raise UsageError(f"--http-status: expected e.g. 200,204,300-399, got {text!r}")
        lo, hi = int(lo_txt), int(hi_txt if sep else lo_txt)
        if not 100 <= lo <= hi <= 599:
            raise UsageError(f"--http-status: {part.strip()!r} is not a range of 100-599")
        out.append((lo, hi))
    return out


def _regex(pattern: str, flag: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{flag}: invalid regex {pattern!r}: {exc}") from None


def main() -> None:
    WaitFor.main()
