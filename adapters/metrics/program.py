"""The metrics adapter program: options, sources wiring, reload, own metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric

from podkit import Sidecar, UsageError, configfile, option
from podkit.admin import Request, Response
from podkit.metrics import Metrics

# json_source and log_source register their source types on import.
from . import json_exporter, json_source, log_source, statsd  # noqa: F401
from .exposition import Collector, own_metric
from .json_exporter import ProbeOptions
from .json_source import JsonOptions
from .series import COUNTER
from .sources import Source, build
from .statsd_compat import exporter_metrics
from .statsd_listen import StatsdOptions
from .store import Store, StoreLimits

OWN_PREFIX = "podkit_metrics_"
#: Least time between two reloads through POST /-/reload.
RELOAD_INTERVAL = 1.0
#: statsd_exporter's own metric names, offered alongside podkit's.
EXPORTER_PREFIX = "statsd_exporter_"


class AdapterMetrics(Metrics):
    """The registry's exposition (process_*, build info, podkit_metrics_*) followed
    by the adapted families, which the store renders itself for speed."""

    store: Store | None = None

    def render(self, accept: str | None) -> tuple[bytes, str]:
        body, ctype = super().render(accept)
        if self.store is None:
            return body, ctype
        openmetrics = ctype.startswith("application/openmetrics-text")
        extra = self.store.render(openmetrics).encode()
        if openmetrics and body.endswith(b"# EOF\n"):
            return body[:-6] + extra + b"# EOF\n", ctype
        return body + extra, ctype


class MetricsAdapter(Sidecar):
    """Serve an app's JSON stats, StatsD packets and log lines as Prometheus metrics.

    Sources come from the config file's `sources:` list (types: json, statsd,
    log) or, for the simple cases, from --json-url/--json-mapping and
    --statsd-udp/--statsd-tcp/--statsd-mapping. The adapted metrics are served
    on the admin server's /metrics with the adapter's own podkit_metrics_*.
    """

    name = "metrics"
    examples = """\
podkit metrics --config /etc/metrics/adapter.yaml
podkit metrics --statsd-udp 127.0.0.1:9125 --statsd-mapping /etc/metrics/mapping.yml
podkit metrics --json-exporter-config /etc/json_exporter/config.yml   # then GET /probe?target=
"""
    default_admin_addr = "127.0.0.1:9414"

    sources: Any = option(
        None, config_only=True, help="list of sources (json, statsd, log); config file only"
    )
    json: JsonOptions = JsonOptions.include(prefix="json-")
    statsd: StatsdOptions = StatsdOptions.include(
        prefix="statsd-", about="the StatsD listener", names=StatsdOptions.FLAG_NAMES
    )
    probe: ProbeOptions = ProbeOptions.include()
    check_config: bool = option(
        False, help="validate the configuration and mapping files, then exit 0 (or 2)"
    )
    limits: StoreLimits = StoreLimits.include()

    def __init__(self) -> None:
        super().__init__()
        self.metrics = AdapterMetrics(self.name)

    def validate(self) -> None:
        self.store = self.limits.store(self.log)
        self._sources: list[Source] = []
        base_dir = os.path.dirname(os.path.abspath(self.config)) if self.config else None
        raw = self.sources
        if raw is not None:
            # Read again for its lines: an error names file:line: sources[i].key.
            where = configfile.load(self.config, "--config") if self.config else None
            if not isinstance(raw, list):
                raise UsageError(f"--config {self.config}: sources: expected a list")
            with where.located() if where else contextlib.nullcontext():
                for i, item in enumerate(raw):
                    self._sources.append(
                        build(item, f"sources[{i}]", self.store, self.log, base_dir)
                    )
        if self.json.url and self.json.mapping:
            jm = configfile.load(self.json.mapping, self.json.flag("mapping"))
            with jm.located():
                cfg = jm.data
                if isinstance(cfg, list):
                    cfg = {"metrics": cfg}
                elif not isinstance(cfg, dict):
                    raise UsageError(": expected a list or mapping")
                cfg = {**cfg, "type": "json", "url": self.json.url}
                base = os.path.dirname(os.path.abspath(self.json.mapping))
                self._sources.append(build(cfg, "", self.store, self.log, base))
        if self.statsd.listening:
            cfg = {k: v for k, v in self.statsd.values().items() if v is not None}
            for key in ("unixgram", "mapping_file"):
                if key in cfg:
                    cfg[key] = os.path.abspath(cfg[key])
            self._sources.append(
                build({**cfg, "type": "statsd"}, "--statsd-*", self.store, self.log, None)
            )
        self._prober = self.probe.prober()
        if self._prober is not None:
            self.add_route("GET", "/probe", self._http_probe)
        if not self._sources and self._prober is None:
            raise UsageError(
                "no sources: give --config FILE with sources:, --json-url with --json-mapping, "
                "--statsd-udp/--statsd-tcp, or --json-exporter-config"
            )
        names = [s.name for s in self._sources]
        for n in names:
            if names.count(n) > 1:
                raise UsageError(f"two sources are named {n!r}; give one of them a name:")
        if self.check_config:
            # Everything above loaded and checked every file: nothing to serve.
            self.admin_addr = "off"
        self.add_route("POST", "/-/reload", self._http_reload)
        self.add_route("PUT", "/-/reload", self._http_reload)

    async def setup(self) -> None:
        if self.check_config:
            self.log.info("configuration is valid", extra={"sources": len(self._sources)})
            self._started = []
            return
        for src in self._sources:
            src.on_error = self.record_error
            for w in getattr(getattr(src, "mapper", None), "warnings", []):
                self.log.warning("mapping file: %s", w)
        # Names the registry already serves (process_*, podkit_build_info) and
        # our own prefix are off limits for adapted metrics: sample names, and
        # family names too, which is what OpenMetrics compares (a gauge
        # `process_cpu_seconds` next to the counter family of that name makes
        # the whole exposition unparseable).
        reserved = set()
        for m in self.metrics.registry.collect():
            reserved.add(m.name)
            reserved.update(s.name for s in m.samples)
        self.store.reserve(reserved)
        self.store.reserved_prefix = (OWN_PREFIX, EXPORTER_PREFIX)
        self.metrics.registry.register(Collector(self._own_metrics))
        if isinstance(self.metrics, AdapterMetrics):
            self.metrics.store = self.store
        started: list[Source] = []
        try:
            for src in self._sources:
                await src.start()
                started.append(src)
        except OSError as exc:
            for src in started:
                await src.stop()
            raise RuntimeError(f"cannot start source {src.name!r}: {exc}") from None
        self._started = started

    async def run(self) -> None:
        if self.check_config:
            return
        self.set_ready()
        store = self.store
        while not self.stopping:
            store.now = time.monotonic()
            store.expire(store.now)
            await self.sleep(store.next_expiry_check())

    async def cleanup(self) -> None:
        for src in getattr(self, "_started", []):
            try:
                await src.stop()
            except Exception:
                self.log.exception("stopping source failed", extra={"source": src.name})

    async def before_metrics(self) -> None:
        started = getattr(self, "_started", [])
        results = await asyncio.gather(*(s.refresh() for s in started), return_exceptions=True)
        for src, res in zip(started, results, strict=True):
            if isinstance(res, Exception):
                self.log.error(
                    "source refresh failed",
                    exc_info=res,
                    extra={"source": src.name},
                )
        self.store.now = time.monotonic()
        self.store.expire(self.store.now)

    def _own_metrics(self) -> Iterable[Metric]:
        fams: dict[str, tuple[str, str, Sequence[str], list[tuple[Sequence[str], float]]]] = {}

        def emit(
            name: str,
            kind: str,
            help: str,
            labelnames: Sequence[str],
            labelvalues: Sequence[str],
            value: float,
        ) -> None:
            fam = fams.get(name)
            if fam is None:
                fam = fams[name] = (kind, help, labelnames, [])
            fam[3].append((labelvalues, value))

        for src in getattr(self, "_started", []):
            src.own(emit)
        store = self.store
        emit("series", "gauge", "Adapted series currently served.", (), (), store.series_count())
        for reason, n in store.conflicts.items():
            emit(
                "conflicts",
                COUNTER,
                "Samples dropped because their name was taken by another type or label set.",
                ("reason",),
                (reason,),
                n,
            )
        emit("expired_series", COUNTER, "Series removed by their ttl.", (), (), store.expired)
        prober = getattr(self, "_prober", None)
        if prober is not None:
            for what, n in (("probes", prober.probes), ("probe_failures", prober.failures)):
                emit(what, COUNTER, f"json_exporter-style {what.replace('_', ' ')}.", (), (), n)
            emit(
                "probe_skipped_series",
                COUNTER,
                "Series a probe skipped: missing path or value, or a conflicting label set.",
                (),
                (),
                prober.skipped,
            )
        budget = store.budget
        emit(
            "budget_bytes",
            "gauge",
            "Bytes of input-chosen data held (--max-series-bytes is the limit).",
            (),
            (),
            budget.used,
        )
        emit(
            "budget_refused_samples",
            COUNTER,
            "Summary samples not kept in a quantile window because the budget was spent.",
            (),
            (),
            budget.starved,
        )
        for name, (kind, help, labelnames, values) in fams.items():
            yield own_metric(OWN_PREFIX + name, kind, help, labelnames, values)
        yield from self._exporter_metrics()

    def _exporter_metrics(self) -> Iterable[Metric]:
        """statsd_exporter's own figures, summed over the statsd sources."""
        sums: dict[str, tuple[str, str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}
        for src in getattr(self, "_started", []):
            if isinstance(src, statsd.StatsdSource):
                for name, kind, help, lnames, lvalues, v in exporter_metrics(src):
                    fam = sums.setdefault(name, (kind, help, lnames, {}))
                    fam[3][lvalues] = fam[3].get(lvalues, 0.0) + v
        for name, (kind, help, lnames, values) in sums.items():
            base = name[: -len("_total")] if kind == COUNTER else name
            yield own_metric(base, kind, help, lnames, list(values.items()))

    def reload(self) -> bool:
        """Reload every statsd source's mapping file (SIGHUP, POST /-/reload)."""
        ok = True
        for src in getattr(self, "_started", []):
            if isinstance(src, statsd.StatsdSource):
                ok = src.reload() and ok
        return ok

    def on_sighup(self) -> None:
        self.reload()

    async def _http_probe(self, request: Request) -> Response:
        assert self._prober is not None
        status, text = await self._prober.probe(request.query)
        ctype = "text/plain; version=0.0.4; charset=utf-8" if status == 200 else "text/plain"
        return Response(status, text.encode(), ctype)

    async def _http_reload(self, request: Request) -> Response:
        # A state-changing endpoint on the admin port: at most one reload per
        # second, so a flood of requests cannot keep the program re-reading.
        now = time.monotonic()
        if now - getattr(self, "_last_reload", -RELOAD_INTERVAL) < RELOAD_INTERVAL:
            return Response.text("reloaded less than a second ago; try again\n", 429)
        self._last_reload = now
        if self.reload():
            return Response.text("mapping files reloaded\n")
        return Response.text("reload failed; previous mappings kept (see the log)\n", 500)

    def status(self) -> dict[str, Any]:
        store = getattr(self, "store", None)
        if store is None:
            return {}
        return {
            "sources": [s.status() for s in getattr(self, "_started", [])],
            "families": len(store.families),
            "series": store.series_count(),
            "conflicts": dict(store.conflicts),
            "budget_bytes": store.budget.used,
            "budget_limit": store.budget.limit,
        }

    def health(self) -> str | None:
        for src in getattr(self, "_started", []):
            reason: str | None = src.health()
            if reason:
                return reason
        return None


def main() -> None:
    MetricsAdapter.main()
