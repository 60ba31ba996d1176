"""The proxy program: its options, listeners, workers and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from podkit import Sidecar, UsageError, option
from podkit.aio import wait_for
from podkit.options import Option

from .accesslog import ACCESS_LOG
from .httpproxy import HttpListener
from .listener import BaseListener
from .settings import ListenerOptions, Settings
from .tcp import TcpListener
from .upstream import BUCKETS

log = logging.getLogger("podkit.proxy")

WORKER_ENV = "PODKIT_PROXY_WORKER"


class Proxy(Sidecar):
    """Localhost HTTP/TCP proxy: load balancing, retries, timeouts, ejection, TLS, credentials."""

    name = "proxy"
    examples = """\
podkit proxy --listen 127.0.0.1:8080 --upstream https://api:443 --bearer-token-file /secrets/token
podkit proxy --listen 127.0.0.1:8080 --upstream http://a:80 --upstream http://b:80 --retries 2
podkit proxy --listen 127.0.0.1:6379 --upstream tcp://redis-0:6379 --upstream tcp://redis-1:6379
"""
    default_admin_addr = "127.0.0.1:9416"

    listener: ListenerOptions = ListenerOptions.include()
    workers: int = option(
        1,
        min=1,
        max=64,
        help="processes sharing the listen ports with SO_REUSEPORT (metrics: first only)",
    )
    listeners: Any = option(
        None,
        config_only=True,
        help="list of listeners, each a mapping of the options above (listen, upstream, ...)",
    )

    def __init__(self) -> None:
        super().__init__()
        self.listener_settings: list[Settings] = []
        self.servers: list[BaseListener] = []
        self.children: list[asyncio.subprocess.Process] = []
        self._reported: set[int] = set()  # workers whose exit was logged
        self.worker = os.environ.get(WORKER_ENV) == "1"

    # -- configuration -------------------------------------------------------------

    def validate(self) -> None:
        group = ListenerOptions.options()
        base = {o.name: self.settings.get(o.name) for o in group}
        specs: list[tuple[dict[str, Any], str]] = []
        if self.listeners is not None:
            where = f"--config {self.config}: listeners"
            if not isinstance(self.listeners, list) or not self.listeners:
                raise UsageError(f"{where}: expected a non-empty list of mappings")
            by_key: dict[str, Option] = {}
            for o in group:
                by_key[o.config_key] = o
                by_key[o.name] = o
            for i, entry in enumerate(self.listeners):
                w = f"{where}[{i}]"
                if not isinstance(entry, dict):
                    raise UsageError(f"{w}: expected a mapping")
                values = dict(base)
                values["upstream"] = []
                values["listen"] = None
                for key, raw in entry.items():
                    found = by_key.get(str(key))
                    if found is None:
                        raise UsageError(f"{w}: unknown setting {key!r}")
                    o = found
                    if o.repeat and isinstance(raw, str):
                        raw = [raw]
                    values[o.name] = o.convert(raw, f"{w}.{key}")
                if not values["listen"]:
                    raise UsageError(f"{w}: listen is required")
                specs.append((values, w))
            if self.listener.upstream:
                specs.append((base, ""))  # the flags: each error names its own flag
        else:
            if not self.listener.upstream:
                raise UsageError("--upstream is required (or listeners in --config)")
            specs.append((base, ""))
        seen: set[str] = set()
        for values, where in specs:
            s = Settings.build(values, where)
            key = f"{s.host}:{s.port}"
            if key in seen and s.port != 0:
                pre = f"{where}: " if where else ""
                raise UsageError(f"{pre}listen address {s.listen} used twice")
            seen.add(key)
            s.reuse_port = self.workers > 1 or self.worker
            self.listener_settings.append(s)

    # -- life cycle ----------------------------------------------------------------

    async def setup(self) -> None:
        for s in self.listener_settings:
            lst: BaseListener = TcpListener(s) if s.mode == "tcp" else HttpListener(s)
            try:
                await lst.start()
            except OSError as exc:
                await lst.close()
                log.error("cannot listen", extra={"listen": s.listen, "error": str(exc)})
                raise RuntimeError(f"cannot listen on {s.listen}: {exc.strerror or exc}") from None
            except UsageError:
                await lst.close()
                raise
            self.servers.append(lst)
            log.info(
                "listening",
                extra={
                    "listen": s.listen,
                    "port": lst.bound_port,
                    "mode": s.mode,
                    "upstreams": [t.label for t in s.targets],
                },
            )
        self.metrics.registry.register(_Collector(self))
        if self.workers > 1 and not self.worker:
            await self._spawn_workers()

    async def _spawn_workers(self) -> None:
        argv = sys.argv[1:]
        if argv and argv[0] == self.name:
            argv = argv[1:]
        env = {**os.environ, WORKER_ENV: "1", "PODKIT_ADMIN_ADDR": "off"}
        # Drop `--admin-addr=X` and `--admin-addr X` (both tokens: a stray value would make
        # the worker exit with a usage error); the workers get `--admin-addr off` below.
        kept: list[str] = []
        skip = False
        for a in argv:
            if skip:
                skip = False
            elif a == "--admin-addr":
                skip = True
            elif not a.startswith("--admin-addr="):
                kept.append(a)
        argv = kept
        for _ in range(self.workers - 1):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podkit.ambassadors.proxy",
                *argv,
                "--admin-addr",
                "off",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self.children.append(proc)
        log.info(
            "workers started",
            extra={"workers": self.workers, "pids": [p.pid for p in self.children]},
        )

    async def run(self) -> None:
        self.set_ready()
        parent = os.getppid()
        while not self.stopping:
            if await self.sleep(1.0):
                break
            if self.worker and os.getppid() != parent:
                log.warning("parent process gone; worker stopping")
                break
            for child in self.children:
                if child.returncode is not None and child.pid not in self._reported:
                    self._reported.add(child.pid)
                    log.error(
                        "worker exited; its share of connections now goes to the others",
                        extra={"pid": child.pid, "exit_code": child.returncode},
                    )
        await self._drain()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.5, self.shutdown_timeout - 1.0)
        for child in self.children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for lst in self.servers:
            lst.stop_accepting()
        busy = sum(lst.busy() for lst in self.servers)
        if busy:
            log.info("draining", extra={"in_flight": busy})
        cut = 0
        for lst in self.servers:
            cut += await lst.drain(deadline)
        if cut:
            log.warning("shutdown deadline: closed connections still in flight", extra={"cut": cut})
        for child in self.children:
            try:
                await wait_for(child.wait(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                child.kill()
        ACCESS_LOG.flush()

    async def cleanup(self) -> None:
        for lst in self.servers:
            await lst.close()
        for child in self.children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        ACCESS_LOG.flush()

    # -- what the admin server shows -------------------------------------------------

    def status(self) -> dict[str, Any]:
        active = sum(getattr(lst, "active", 0) for lst in self.servers)
        return {
            "active_requests": active,
            "workers": self.workers,
            # every figure below is this process's own: the workers share nothing
            "scope": f"process {os.getpid()} only" if self.workers > 1 else "the whole proxy",
            "listeners": [lst.status() for lst in self.servers],
        }

    def health(self) -> str | None:
        return self._unhealthy


class _Collector:
    """Metrics read from plain counters at scrape time: nothing costs per request."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        p = "podkit_proxy_"
        requests = CounterMetricFamily(
            p + "requests",
            "Requests answered, by upstream and status code.",
            labels=["upstream", "code"],
        )
        duration = HistogramMetricFamily(
            p + "request_duration_seconds",
            "Time from request head to response end.",
            labels=["upstream"],
        )
        healthy = GaugeMetricFamily(
            p + "upstream_healthy",
            "1 when the upstream is healthy and not ejected.",
            labels=["upstream"],
        )
        retries = CounterMetricFamily(
            p + "retries",
            "Retries after a failed try, by the upstream that failed.",
            labels=["upstream"],
        )
        ejections = CounterMetricFamily(p + "ejections", "Outlier ejections.", labels=["upstream"])
        active = GaugeMetricFamily(p + "active_requests", "Requests in flight.")
        conns = GaugeMetricFamily(
            p + "upstream_connections", "Open connections to the upstream.", labels=["upstream"]
        )
        tcp_conns = CounterMetricFamily(
            p + "tcp_connections", "TCP-mode connections brokered.", labels=["upstream"]
        )
        tcp_bytes = CounterMetricFamily(
            p + "tcp_bytes", "TCP-mode bytes passed.", labels=["direction"]
        )
        unsolicited = CounterMetricFamily(
            p + "upstream_unsolicited_closed",
            "Idle pooled connections closed because bytes arrived that no request asked for.",
            labels=["upstream"],
        )
        cache_dropped = CounterMetricFamily(
            p + "head_cache_dropped",
            "Parsed heads dropped from (or never put in) the byte-bounded head caches.",
            labels=["cache"],
        )
        cache_bytes = GaugeMetricFamily(
            p + "head_cache_bytes",
            "Estimated bytes held by the parsed-head caches (bounded per cache).",
            labels=["cache"],
        )
        dropped = {"request": 0, "response": 0}
        held = {"request": 0, "response": 0}
        codes: dict[tuple[str, str], int] = {}
        hist: dict[str, tuple[list[int], float]] = {}
        health: dict[str, float] = {}
        per_up: dict[str, list[int]] = {}
        bytes_dir = {"to_upstream": 0, "to_client": 0}
        n_active = 0
        for lst in self.proxy.servers:
            now = lst.loop.time()
            groups: list[tuple[str, dict[int, int], list[int], float]] = [
                (u.label, u.codes, u.buckets, u.duration_sum) for u in lst.upstreams
            ]
            if isinstance(lst, HttpListener):
                n_active += lst.active
                groups.append(("none", lst.local_codes, lst.local_buckets, lst.local_sum))
                dropped["request"] += lst.head_cache.dropped
                held["request"] += lst.head_cache.used
                for u in lst.upstreams:
                    dropped["response"] += u.head_cache.dropped
                    held["response"] += u.head_cache.used
            if isinstance(lst, TcpListener):
                for k, v in lst.bytes.items():
                    bytes_dir[k] += v
            for label, cmap, buckets, total in groups:
                for code, n in cmap.items():
                    codes[(label, str(code))] = codes.get((label, str(code)), 0) + n
                b, sm = hist.get(label, ([0] * (len(BUCKETS) + 1), 0.0))
                hist[label] = ([x + y for x, y in zip(b, buckets, strict=True)], sm + total)
            for u in lst.upstreams:
                ok = 1.0 if u.available(now) else 0.0
                health[u.label] = min(health.get(u.label, 1.0), ok)
                acc = per_up.setdefault(u.label, [0, 0, 0, 0, 0])
                acc[0] += u.retries
                acc[1] += u.ejections_total
                acc[2] += u.nconns
                acc[3] += u.tcp_connections
                acc[4] += u.unsolicited
        for (label, code_txt), total in sorted(codes.items()):
            requests.add_metric([label, code_txt], total)
        for label, (b, sm) in sorted(hist.items()):
            cum = 0
            pairs: list[tuple[str, float]] = []
            for le, count in zip([*(str(x) for x in BUCKETS), "+Inf"], b, strict=True):
                cum += count
                pairs.append((le, float(cum)))
            duration.add_metric([label], pairs, sm)
        for label, ok in sorted(health.items()):
            healthy.add_metric([label], ok)
        for label, acc in sorted(per_up.items()):
            retries.add_metric([label], acc[0])
            ejections.add_metric([label], acc[1])
            conns.add_metric([label], acc[2])
            tcp_conns.add_metric([label], acc[3])
            unsolicited.add_metric([label], acc[4])
        active.add_metric([], n_active)
        for d, n in bytes_dir.items():
            tcp_bytes.add_metric([d], n)
        for kind in ("request", "response"):
            cache_dropped.add_metric([kind], dropped[kind])
            cache_bytes.add_metric([kind], held[kind])
        yield from (
            requests,
            duration,
            healthy,
            retries,
            ejections,
            active,
            conns,
            tcp_conns,
            tcp_bytes,
            unsolicited,
            cache_dropped,
            cache_bytes,
        )


def main() -> None:
    Proxy.main()
