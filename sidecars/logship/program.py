"""logship: tail log files in a shared volume and ship every line, at least once.

The file machinery (discovery, identity, checkpoints, rotation) is
`podkit.tailer`; delivery and its retry policy are `podkit.sinks`. This module
holds what makes logship logship: its options, the sinks it ships to (each a
`route.Route`: its own tailer, checkpoint, batches and metrics; which sinks,
with which options, is `destinations`), the pod's identity added to records,
and the drain on SIGTERM.

Several sinks (`--sink` repeated, or `sinks:` in the config file) each get
their own tailer reading the same files: a sink that is down holds back only
its own read position (the files are the buffer), never the others. The
first sink keeps `STATE_DIR/checkpoints.json` (and the dead-letter file), so
a single-sink deployment's checkpoint is unchanged; each further sink keeps
its own under `STATE_DIR/sinks/NAME/`.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any

from podkit import Sidecar, UsageError, option
from podkit.aio import wait_for
from podkit.http import AuthOptions, TLSClientOptions
from podkit.multiline import MultilineOptions
from podkit.program import writable_dir_problem
from podkit.sinks import (
    AUTH_NAMES,
    COMPRESSIONS,
    LOKI_MAX_STREAMS,
    OTLP_FORMATS,
    REFUSAL_REASONS,
    RETRY_REASONS,
    SPLIT_REASONS,
    TLS_NAMES,
    Sink,
    SinkClosed,
    open_sink,
)
from podkit.tailer import (
    Tailer,
    TailingOptions,
    register_metrics,
    watch_log_volume,
)

from .destinations import DEAD_LETTER_FILE, Destinations, credential_problems, sink_specs
from .podinfo import DEFAULT_DIR, PodInfo, read_podinfo
from .process import Processor
from .route import Limits, RecordShape, Route

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class LogShip(Sidecar):
    """Tail log files in a shared volume and ship every line at least once.

    Sinks by URL: stdout://, file:///path, http(s)://..., loki+http(s)://host:port,
    elasticsearch+http(s)://host:port/INDEX, otlp+http(s)://host:port/v1/logs;
    several with --sink repeated. Offsets are checkpointed, per sink, only
    after the sink acknowledged every line before them.
    """

    name = "logship"
    examples = """\
podkit logship --path '/logs/*.log' --sink loki+http://loki:3100 --label app=web
podkit logship --path '/logs/**/*.log' --sink elasticsearch+https://es:9200/logs --compress gzip
podkit logship --path '/logs/*.log' --sink otlp+http://collector:4318/v1/logs --redact email
podkit logship --path '/tmp/app/*.log' --sink stdout:// --state-dir /tmp/logship   # on a laptop
"""
    default_admin_addr = "127.0.0.1:9411"

    # --path, --exclude, --state-dir, the reading limits: what every program that
    # tails declares (podkit.tailer.TailingOptions). --path may be left out when
    # every `sinks:` entry names its own.
    tailing: TailingOptions = TailingOptions.include(
        defaults={"state_dir": "/var/lib/podkit/logship"}
    )
    destinations: Destinations = Destinations.include()
    batch_max_lines: int = option(5000, min=1, help="most records in one batch")
    batch_max_bytes: int = option(
        "1MiB",
        kind="size",
        min=1,
        help="largest request body (hard cap; a larger single record is sent alone)",
    )
    batch_max_wait: float = option(
        "1s", kind="duration", help="longest a record waits for its batch"
    )
    joining: MultilineOptions = MultilineOptions.include(prefix="multiline-")
    retry_max_backoff: float = option(
        "30s", kind="duration", help="longest wait between delivery attempts"
    )
    retry_after_max: float = option(
        "5m", kind="duration", help="longest Retry-After honoured (a longer one is cut to this)"
    )
    dead_letter: str | None = option(
        None,
        kind="path",
        help=f"NDJSON file for records the sink refused (default: STATE_DIR/{DEAD_LETTER_FILE})",
    )
    stall_timeout: float = option(
        "5m", kind="duration", help="/healthz fails when lag has not shrunk for this long"
    )
    parse: str = option(
        "none", choices=("none", "json"), help="json: merge lines that are JSON objects as fields"
    )
    label: list[str] = option(repeat=True, metavar="K=V", help="label added to every record")
    # Not kind="path": the directory is optional (`podkit validate` would ask
    # every pod spec to mount a volume there).
    podinfo_dir: str | None = option(
        DEFAULT_DIR,
        metavar="PATH",
        help="Downward API volume with the pod's labels and annotations files (optional)",
    )
    # -- processing
    drop: list[str] = option(repeat=True, metavar="REGEX", help="drop lines matching (repeatable)")
    keep: list[str] = option(
        repeat=True, metavar="REGEX", help="ship only lines matching one of these (repeatable)"
    )
    redact: list[str] = option(
        repeat=True,
        metavar="NAME=REGEX|NAME",
        help="replace matches with *** (built-ins: bearer, aws-access-key, email, card)",
    )
    sample: list[str] = option(
        repeat=True, metavar="[GLOB=]N", help="ship 1 line in N of each file (matching GLOB)"
    )
    # -- HTTP sinks
    header: list[str] = option(
        repeat=True, metavar="'NAME: VALUE'", help="HTTP header sent to the sink (repeatable)"
    )
    # TLS and credentials: the core's groups (podkit.http), under the names
    # logship has always given them (pod specs set --username, PODKIT_PASSWORD_FILE,
    # client-cert-file:), which are also the sink's parameters.
    sink_auth: AuthOptions = AuthOptions.include(about="the sink", names=AUTH_NAMES)
    sink_tls: TLSClientOptions = TLSClientOptions.include(about="the sink", names=TLS_NAMES)
    compress: str = option("none", choices=COMPRESSIONS, help="compress HTTP request bodies")
    request_timeout: float = option("30s", kind="duration", help="timeout of one HTTP request")
    # -- Loki
    tenant: str | None = option(None, help="Loki tenant (X-Scope-OrgID); as --loki-tenant")
    loki_tenant: str | None = option(None, help="Loki tenant, sent as X-Scope-OrgID")
    loki_label_keys: list[str] = option(
        repeat=True, metavar="KEY[,KEY]", help="record fields that become Loki stream labels"
    )
    loki_metadata_keys: list[str] = option(
        repeat=True, metavar="KEY[,KEY]", help="record fields sent as Loki structured metadata"
    )
    loki_max_streams: int = option(
        LOKI_MAX_STREAMS,
        min=1,
        help="label sets from --loki-label-keys before new ones are refused (counted)",
    )
    # -- OTLP
    otlp_format: str = option(
        "protobuf", choices=OTLP_FORMATS, help="OTLP/HTTP body: protobuf or json"
    )

    # -- configuration -----------------------------------------------------------

    def validate(self) -> None:
        self.pod: PodInfo = read_podinfo(self.podinfo_dir)
        self.labels: dict[str, str] = dict(self.pod.names)
        for item in self.label:
            k, sep, v = item.partition("=")
            k = k.strip()
            if not sep or not _LABEL_NAME.match(k):
                raise UsageError(f"--label: expected NAME=VALUE with a label name, got {item!r}")
            self.labels[k] = v
        self._specs = sink_specs(self)
        bad = []  # every sink with a bad URL or options, not just the first
        for i, spec in enumerate(self._specs):
            spec["processor"] = self._processor(spec)
            try:
                open_sink(spec["url"], **spec["options"])  # raises UsageError for a bad URL
            except UsageError as exc:
                bad.append(
                    str(exc) if i < len(self.destinations.sink) else f"sinks: {spec['name']}: {exc}"
                )
        if bad:
            raise UsageError("\n".join(bad))

    def config_problems(self) -> list[str]:
        """--check-config: each sink's globs' directories exist (the log volume is
        mounted), its state directory can be written or created, and the
        credential files it reads can be read (those of `sinks:` entries and
        --header-file; the runner checks the other --*-file flags)."""
        problems: list[str | None] = []
        for spec in self._specs:
            problems += self.tailing.problems(spec["paths"])
            problems.append(writable_dir_problem("--state-dir", spec["state_dir"]))
        problems += credential_problems(self, self._specs)
        return list(dict.fromkeys(p for p in problems if p))

    def _processor(self, spec: dict[str, Any]) -> Processor:
        return Processor(
            drop=self.drop,
            keep=self.keep,
            redact=self.redact,
            sample=self.sample,
            match=spec["match"],
            parse_json=self.parse == "json",
            labels=self.labels,
        )

    # -- lifecycle -------------------------------------------------------------------

    def _declare_metrics(self) -> None:
        m = self.metrics
        by_sink = ["sink"]
        self.m_lines = m.counter("lines_total", "Lines delivered to the sink.", by_sink)
        self.m_bytes = m.counter("bytes_total", "Bytes of log file delivered to the sink.", by_sink)
        self.m_batches = m.counter(
            "batches_total", "Delivery attempts of batches, by result.", ["sink", "result"]
        )
        self.m_retries = m.counter(
            "retries_total",
            "Delivery attempts that will be retried, by reason.",
            ["sink", "reason"],
        )
        self.m_dead = m.counter(
            "dead_letter_lines_total",
            "Lines the sink refused, written to the dead-letter file, by reason.",
            ["sink", "reason"],
        )
        self.m_splits = m.counter(
            "batch_splits_total",
            "Batches split in halves: over --batch-max-bytes, or refused 400/413/422.",
            ["sink", "reason"],
        )
        self.m_truncated = m.counter(
            "truncated_lines_total", "Lines cut at --max-line-bytes.", by_sink
        )
        self.m_processed = m.counter(
            "processed_lines_total",
            "Lines dropped before batching (drop, keep, route, sample) and "
            "replacements made (redact:NAME).",
            ["sink", "action"],
        )
        self.m_overflow = m.counter(
            "loki_label_overflow_total",
            "Records sent without their --loki-label-keys labels: --loki-max-streams reached.",
            by_sink,
        )
        self.m_files = m.gauge("files_watched", "Files currently followed.")
        self.m_lag = m.gauge(
            "lag_bytes",
            "Bytes written to followed files but not yet acknowledged by the sink.",
            by_sink,
        )
        self.m_last_ack = m.gauge(
            "last_ack_timestamp_seconds",
            "When the sink last acknowledged a batch (Unix time).",
            by_sink,
        )

    def _route_metrics(self, name: str, route_of: dict[str, Route]) -> None:
        """Every series of sink `name` exists from the start (at 0)."""
        for r in ("ok", "retry", "dead_letter"):
            self.m_batches.labels(name, r)
        for metric, reasons in (
            (self.m_retries, RETRY_REASONS),
            (self.m_dead, REFUSAL_REASONS),
            (self.m_splits, SPLIT_REASONS),
        ):
            for reason in reasons:
                metric.labels(name, reason)
        for c in (self.m_lines, self.m_bytes, self.m_truncated):
            c.labels(name)
        self.m_lag.labels(name).set_function(
            lambda: route_of[name].tailer.lag_bytes if name in route_of else 0
        )
        self.m_last_ack.labels(name).set_function(
            lambda: route_of[name].last_ack if name in route_of else 0
        )

    async def setup(self) -> None:
        self._declare_metrics()
        self.pipelines: list[Route] = []
        route_of: dict[str, Route] = {}
        register_metrics(self.metrics, lambda: self.pipelines[0].tailer if self.pipelines else None)
        self.m_files.set_function(
            lambda: self.pipelines[0].tailer.files_watched if self.pipelines else 0
        )
        for spec in self._specs:
            self._ensure_dir(spec["state_dir"])
            self._route_metrics(spec["name"], route_of)
            route = self._route(spec)
            route_of[spec["name"]] = route
            self.pipelines.append(route)
            self.health_check(f"sink:{spec['name']}", self._stall_check(route))
        for route in self.pipelines:
            await route.sink.start()

    def _ensure_dir(self, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            # Checkpoints are the delivery guarantee: without them every restart
            # resends everything. A configuration error (read-only root, wrong
            # volume), so one line and exit 2 rather than a traceback.
            raise UsageError(f"--state-dir {path}: {exc.strerror or exc}") from None

    def _route(self, spec: dict[str, Any]) -> Route:
        name = spec["name"]
        sink = open_sink(spec["url"], **spec["options"])
        sink.on_event = self._sink_events(name, sink)
        cfg = self.tailing.config(
            self.joining,
            paths=spec["paths"],
            exclude=spec["exclude"],
            state_dir=spec["state_dir"],
            max_chunk_lines=self.batch_max_lines,
            # A chunk's records should fit one batch (encoding adds ~120 bytes a line).
            chunk_bytes=max(64 * 1024, min(1024 * 1024, self.batch_max_bytes // 2)),
            identify=sink.wants_ids,
        )
        shape = self.record_shape()
        limits = Limits(self.batch_max_lines, self.batch_max_bytes, self.batch_max_wait)
        return Route(name, sink, Tailer(cfg), shape, spec["processor"], limits, self._count(name))

    def record_shape(self) -> RecordShape:
        return RecordShape(
            self.labels, self.pod.labels, self.pod.annotations, parse_json=self.parse == "json"
        )

    def _count(self, name: str) -> Any:
        lines, size, truncated = (
            self.m_lines.labels(name),
            self.m_bytes.labels(name),
            self.m_truncated.labels(name),
        )

        def count(kind: str, n: int, reason: str) -> None:
            if kind == "lines":
                lines.inc(n)
            elif kind == "bytes":
                size.inc(n)
            elif kind == "truncated":
                truncated.inc(n)
            else:
                self.m_processed.labels(name, reason).inc(n)

        return count

    def _sink_events(self, name: str, sink: Sink) -> Any:
        """The sink's event hook: its events counted under its name (and reason)."""

        def on_event(kind: str, n: int) -> None:
            if kind in ("batch_ok", "batch_retry", "batch_dead_letter"):
                self.m_batches.labels(name, kind[6:]).inc(n)
            elif kind == "retry":
                self.m_retries.labels(name, sink.reason).inc(n)
                self._record_retry(name, sink)
            elif kind == "dead_letter":
                self.m_dead.labels(name, sink.reason).inc(n)
                where = sink.dead_letter_path or "nowhere (dropped)"
                self.record_error(
                    "sink_refused",
                    f"sink {name}: refused {n} record(s) ({sink.reason}); written to {where}",
                )
            elif kind == "split":
                self.m_splits.labels(name, sink.reason).inc(n)
            elif kind == "loki_label_overflow":
                self.m_overflow.labels(name).inc(n)

        return on_event

    def _record_retry(self, name: str, sink: Sink) -> None:
        """A failed delivery attempt, shown on `/` until the next failure: which
        sink, what went wrong, and that it is being retried (nothing is lost)."""
        reason = {"token": "sink_credentials", "dead_letter_write": "dead_letter"}.get(
            sink.reason, "sink"
        )
        self.record_error(
            reason,
            f"sink {name} ({sink.safe_url}): {sink.last_error} ({sink.reason}); retrying",
        )

    def _stall_check(self, route: Route) -> Any:
        return lambda: route.stalled(self.stall_timeout) if self.ready else None

    async def run(self) -> None:
        for route in self.pipelines:
            await route.tailer.start()
        first = self.pipelines[0].tailer
        self.log.info(
            "following files",
            extra={
                "files": first.files_watched,
                "polling": first.polling,
                "sinks": [r.name for r in self.pipelines],
            },
        )
        paths = sorted({p for spec in self._specs for p in spec["paths"]})
        watch_log_volume(self, paths, first.files_watched)
        self.set_ready()
        tasks: list[tuple[Route, asyncio.Task[None], asyncio.Task[None]]] = [
            (
                r,
                asyncio.create_task(r.batcher(), name=f"batcher:{r.name}"),
                asyncio.create_task(r.sender(), name=f"sender:{r.name}"),
            )
            for r in self.pipelines
        ]
        every = [t for _, b, s in tasks for t in (b, s)]
        try:
            await self._run(tasks)
        finally:
            # Whatever ended run() (deadline, a failed task, cancellation), nothing may
            # keep sending while cleanup() closes the sinks and the files under them.
            for t in every:
                t.cancel()
            await asyncio.gather(*every, return_exceptions=True)

    def _closed(self, name: str | None, exc: SinkClosed) -> None:
        self.record_error("sink_closed", f"sink {name}: {exc}" if name else str(exc))

    def _checkpoint_all(self) -> None:
        for r in self.pipelines:
            r.tailer.checkpoint(force=True)

    async def _run(
        self,
        tasks: list[tuple[Route, asyncio.Task[None], asyncio.Task[None]]],
    ) -> None:
        workers = {t for _, b, s in tasks for t in (b, s)}
        # Until a stop, or a worker ends (it only ends by failing: a closed sink, a bug).
        await self.until_stopped(asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED))
        for t in {t for t in workers if t.done()}:
            exc = t.exception()
            if isinstance(exc, SinkClosed):
                # Not a bug in logship: the destination went away for good. One line, exit 1.
                self._closed(next(r.name for r, b, s in tasks if t in (b, s)), exc)
                self._checkpoint_all()
                self.log.error("sink closed; stopping", extra={"error": str(exc)})
                self.exit_code = 1
                return
            if exc is not None:
                raise exc
        # Drain: read every file to its end and deliver it to every sink, within the
        # shutdown deadline (less a margin to write the final checkpoints and say what
        # was left).
        budget = max(0.5, self.shutdown_timeout - 1.5)
        lag_before = sum(r.tailer.lag_bytes for r in self.pipelines)
        try:
            await wait_for(asyncio.gather(*(r.drain(b, s) for r, b, s in tasks)), budget)
        except TimeoutError:
            self._checkpoint_all()
            # An expected outcome (a sink is down), not a crash: one clear line and
            # exit 1 through the runner, no traceback. The checkpoints keep what was
            # not acknowledged, so it ships after a restart.
            left = {r.name: r.tailer.lag_bytes for r in self.pipelines if r.tailer.lag_bytes}
            self.log.error(
                "shutdown deadline: not everything was delivered; it ships after a restart",
                extra={
                    "undelivered_bytes": sum(left.values()),
                    "sinks": sorted(left),
                    "sink_error": next(
                        (r.sink.last_error for r in self.pipelines if r.sink.last_error), None
                    ),
                },
            )
            self.exit_code = 1
            return
        except SinkClosed as exc:
            self._closed(None, exc)
            self._checkpoint_all()
            self.log.error("sink closed while draining", extra={"error": str(exc)})
            self.exit_code = 1
            return
        self.log.info(
            "drained",
            extra={
                "bytes": lag_before,
                "lines_delivered": sum(r.acked_lines for r in self.pipelines),
            },
        )

    async def cleanup(self) -> None:
        for route in getattr(self, "pipelines", []):
            await route.tailer.close()
            await route.sink.close()

    # -- admin ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        routes = getattr(self, "pipelines", [])
        if not routes:
            return {"sink": None}
        first = routes[0]
        t = first.tailer
        return {
            # The first sink as before; every sink under "sinks".
            "sink": first.sink.status(),
            "sinks": [r.status() for r in routes],
            "files_watched": t.files_watched,
            "lag_bytes": t.lag_bytes,
            "inflight_bytes": t.inflight_bytes,
            "polling": t.polling,
            "lines_delivered": first.acked_lines,
            "files": t.files()[:100],
            "skipped": t.skipped_files()[:100],
        }


def main() -> None:
    LogShip.main()
