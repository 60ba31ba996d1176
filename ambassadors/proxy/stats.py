"""The proxy's metrics, for all --workers: each worker's counters are summed at scrape.

Counters live in plain attributes of the listeners and upstreams (nothing costs per
request); `snapshot()` reads them into a plain mapping at scrape time. With --workers
N the first process serves /metrics, and the others share nothing with it, so each
worker writes its snapshot to a file in a private directory every STATS_INTERVAL
seconds (and once more when it stops), and the first process adds those to its own.
A scrape is thus at most STATS_INTERVAL behind for the other workers' share. This is
prometheus_client's multiprocess idea, at the granularity the proxy already keeps.

A worker that exits keeps its counters in the sum (a counter must not go backwards);
its gauges (active requests, connections, health) are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .upstream import BUCKETS

STATS_DIR_ENV = "PODKIT_PROXY_STATS_DIR"
STATS_INTERVAL = 1.0
# per-upstream counters and gauges, in the order of a snapshot's "per_up" lists
PER_UP = ("retries", "ejections", "connections", "tcp_connections", "unsolicited")
GAUGES = ("connections",)

Snapshot = dict[str, Any]


def snapshot(servers: Iterable[Any]) -> Snapshot:
    """This process's figures, as plain JSON-able numbers."""
    codes: dict[str, dict[str, int]] = {}
    hist: dict[str, list[float]] = {}  # buckets..., sum
    health: dict[str, float] = {}
    per_up: dict[str, list[int]] = {}
    dropped = {"request": 0, "response": 0}
    held = {"request": 0, "response": 0}
    tcp_bytes = {"to_upstream": 0, "to_client": 0}
    active = 0
    for lst in servers:
        now = lst.loop.time()
        groups = [(u.label, u.codes, u.buckets, u.duration_sum) for u in lst.upstreams]
        if lst.kind == "http":
            active += lst.active
            groups.append(("none", lst.local_codes, lst.local_buckets, lst.local_sum))
            dropped["request"] += lst.head_cache.evicted
            held["request"] += lst.head_cache.held
            for u in lst.upstreams:
                dropped["response"] += u.head_cache.dropped
                held["response"] += u.head_cache.used
        else:
            for k, v in lst.bytes.items():
                tcp_bytes[k] += v
        for label, cmap, buckets, total in groups:
            row = codes.setdefault(label, {})
            for code, n in cmap.items():
                row[str(code)] = row.get(str(code), 0) + n
            h = hist.setdefault(label, [0.0] * (len(BUCKETS) + 2))
            for i, n in enumerate(buckets):
                h[i] += n
            h[-1] += total
        for u in lst.upstreams:
            health[u.label] = min(health.get(u.label, 1.0), 1.0 if u.available(now) else 0.0)
            acc = per_up.setdefault(u.label, [0] * len(PER_UP))
            for i, n in enumerate(
                (u.retries, u.ejections_total, u.nconns, u.tcp_connections, u.unsolicited)
            ):
                acc[i] += n
    return {
        "codes": codes,
        "hist": hist,
        "health": health,
        "per_up": per_up,
        "active": active,
        "tcp_bytes": tcp_bytes,
        "cache_dropped": dropped,
        "cache_bytes": held,
    }


def merge(snaps: Iterable[tuple[Snapshot, bool]]) -> Snapshot:
    """The sum of snapshots; a snapshot marked not alive adds its counters only."""
    out: Snapshot = {
        "codes": {},
        "hist": {},
        "health": {},
        "per_up": {},
        "active": 0,
        "tcp_bytes": {"to_upstream": 0, "to_client": 0},
        "cache_dropped": {"request": 0, "response": 0},
        "cache_bytes": {"request": 0, "response": 0},
    }
    for snap, alive in snaps:
        for label, row in snap["codes"].items():
            mine = out["codes"].setdefault(label, {})
            for code, n in row.items():
                mine[code] = mine.get(code, 0) + n
        for label, h in snap["hist"].items():
            mine = out["hist"].setdefault(label, [0.0] * len(h))
            for i, n in enumerate(h):
                mine[i] += n
        for label, acc in snap["per_up"].items():
            mine = out["per_up"].setdefault(label, [0] * len(PER_UP))
            for i, n in enumerate(acc):
                if alive or PER_UP[i] not in GAUGES:
                    mine[i] += n
        for key in ("tcp_bytes", "cache_dropped"):
            for k, n in snap[key].items():
                out[key][k] += n
        if alive:
            out["active"] += snap["active"]
            for k, n in snap["cache_bytes"].items():
                out["cache_bytes"][k] += n
            for label, ok in snap["health"].items():
                out["health"][label] = min(out["health"].get(label, 1.0), ok)
    return out


def families(m: Snapshot) -> Iterator[Metric]:
    p = "podkit_proxy_"
    requests = CounterMetricFamily(
        p + "requests",
        "Requests answered, by upstream and status code.",
        labels=["upstream", "code"],
    )
    for label, row in sorted(m["codes"].items()):
        for code, n in sorted(row.items()):
            requests.add_metric([label, code], n)
    duration = HistogramMetricFamily(
        p + "request_duration_seconds",
        "Time from request head to response end.",
        labels=["upstream"],
    )
    for label, h in sorted(m["hist"].items()):
        cum = 0.0
        pairs: list[tuple[str, float]] = []
        for le, count in zip([*(str(x) for x in BUCKETS), "+Inf"], h[:-1], strict=True):
            cum += count
            pairs.append((le, cum))
        duration.add_metric([label], pairs, h[-1])
    healthy = GaugeMetricFamily(
        p + "upstream_healthy",
        "1 when the upstream is healthy and not ejected.",
        labels=["upstream"],
    )
    for label, ok in sorted(m["health"].items()):
        healthy.add_metric([label], ok)
    per: list[CounterMetricFamily | GaugeMetricFamily] = [
        CounterMetricFamily(
            p + "retries",
            "Retries after a failed try, by the upstream that failed.",
            labels=["upstream"],
        ),
        CounterMetricFamily(p + "ejections", "Outlier ejections.", labels=["upstream"]),
        GaugeMetricFamily(
            p + "upstream_connections", "Open connections to the upstream.", labels=["upstream"]
        ),
        CounterMetricFamily(
            p + "tcp_connections", "TCP-mode connections brokered.", labels=["upstream"]
        ),
        CounterMetricFamily(
            p + "upstream_unsolicited_closed",
            "Idle pooled connections closed because bytes arrived that no request asked for.",
            labels=["upstream"],
        ),
    ]
    for label, acc in sorted(m["per_up"].items()):
        for fam, n in zip(per, acc, strict=True):
            fam.add_metric([label], n)
    active = GaugeMetricFamily(p + "active_requests", "Requests in flight.")
    active.add_metric([], m["active"])
    tcp_bytes = CounterMetricFamily(p + "tcp_bytes", "TCP-mode bytes passed.", labels=["direction"])
    for d, n in m["tcp_bytes"].items():
        tcp_bytes.add_metric([d], n)
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
    for kind in ("request", "response"):
        cache_dropped.add_metric([kind], m["cache_dropped"][kind])
        cache_bytes.add_metric([kind], m["cache_bytes"][kind])
    retries, ejections, conns, tcp_conns, unsolicited = per
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


class Program(Protocol):
    servers: list[Any]
    worker: bool
    children: list[asyncio.subprocess.Process]


class Shared:
    """Where the workers' snapshots meet: a private directory the first process makes
    (and removes), named to the workers in their environment."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.task: asyncio.Task[None] | None = None
        self.owned = False
        if program.worker:
            self.dir = os.environ.get(STATS_DIR_ENV)
            if self.dir:
                self.task = asyncio.get_running_loop().create_task(self._export())
        else:
            self.dir = None

    def env(self) -> dict[str, str]:
        """For the workers about to be started: where to write."""
        if self.dir is None:
            self.dir = tempfile.mkdtemp(prefix="podkit-proxy-stats-")
            self.owned = True
        return {STATS_DIR_ENV: self.dir}

    def write(self) -> None:
        if not self.dir:
            return
        path = os.path.join(self.dir, f"{os.getpid()}.json")
        tmp = path + ".tmp"
        with contextlib.suppress(OSError):
            with open(tmp, "w") as f:
                json.dump(snapshot(self.program.servers), f)
            os.replace(tmp, path)

    async def _export(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(STATS_INTERVAL)

    def others(self) -> list[tuple[Snapshot, bool]]:
        out: list[tuple[Snapshot, bool]] = []
        if not self.dir or self.program.worker:
            return out
        for child in self.program.children:
            try:
                with open(os.path.join(self.dir, f"{child.pid}.json")) as f:
                    out.append((json.load(f), child.returncode is None))
            except (OSError, ValueError):
                continue  # not written yet
        return out

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
            self.write()  # the last figures, for the first process to keep
        if self.owned and self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.owned = False


class Collector:
    """Registered on the first process's registry: its own figures plus the workers'."""

    def __init__(self, program: Program, shared: Shared) -> None:
        self.program = program
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        own = snapshot(self.program.servers)
        yield from families(merge([(own, True), *self.shared.others()]))
