"""The metrics adapter under a hostile StatsD flood (issue 13, class 4).

Raw UDP and TCP sockets, not a client library: unique names, unique and
over-long tag values, over-long names, sets with unique members, timers with
endless samples, more TCP connections than allowed. With the default limits
the adapter's peak RSS stays under the ceiling docs/metrics.md documents, and
every refused sample is counted.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ProgramProcess, free_port, wait_until

#: The ceiling docs/metrics.md and docs/security.md promise for the defaults
#: (64 MiB budget, 16 MiB parse cache, 256 TCP connections of 64 KiB).
RSS_CEILING_MB = 192


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _status(proc: ProgramProcess) -> dict[str, Any]:
    # The JSON status, not /metrics: rendering every flooded series on each
    # poll would cost more than the flood.
    return json.loads(proc.get("/")[2])  # type: ignore[no-any-return]


def _values(proc: ProgramProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = proc.get("/metrics")[2].decode()
    out = {}
    for fam in text_string_to_metric_families(body):
        if fam.name.startswith("podkit_metrics_"):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _conflicts(v: dict[tuple[str, tuple[tuple[str, str], ...]], float], reason: str) -> float:
    return v.get(("podkit_metrics_conflicts_total", (("reason", reason),)), 0.0)


@pytest.mark.parametrize(
    "shape",
    [
        "flood{b}.n{i}:1|c|#tag:{pad}{i}",  # long unique tag values
        "flood{b}.name{i}:1|c",  # short unique names: one family each
    ],
)
def test_statsd_flood_stays_under_the_rss_ceiling(tmp_path, shape):
    port = free_port(kind=socket.SOCK_DGRAM)
    tport = free_port()
    args = ["--statsd-udp", f"127.0.0.1:{port}", "--statsd-tcp", f"127.0.0.1:{tport}"]
    with ProgramProcess("metrics", args, tmp=tmp_path) as proc:
        proc.wait_ready()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dest = ("127.0.0.1", port)
        pad = "v" * 1000

        def send(lines: list[str]) -> None:
            # Datagrams of up to 60 KB; a short pause per datagram keeps the
            # kernel buffer from shedding most of the flood before the adapter
            # sees it.
            buf: list[bytes] = []
            size = 0
            for line in [*lines, None]:
                data = line.encode() if line is not None else b""
                if buf and (line is None or size + len(data) > 60000):
                    sock.sendto(b"\n".join(buf), dest)
                    time.sleep(0.0005)
                    buf, size = [], 0
                buf.append(data)
                size += len(data) + 1

        # 1. Over-long names and label values: refused (too_long), no series.
        send([f"{'n' * 300}{i}:1|c" for i in range(200)])
        send([f"long.value:1|c|#k:{'x' * 2000}{i}" for i in range(200)])
        wait_until(
            lambda: _status(proc)["conflicts"]["too_long"] >= 400,
            timeout=20,
            what="over-long names and values counted",
        )
        # 2. Unique names with 1000-byte tag values until the budget is spent.
        batch = 0
        while not ((st := _status(proc))["conflicts"]["bytes"] or st["conflicts"]["limit"]):
            assert batch < 60, "the byte budget never filled"
            send([shape.format(b=batch, i=i, pad=pad) for i in range(10000)])
            batch += 1
        # 3. Sets with unique long members and timers with endless samples on
        # names that already exist: they must not grow past the budget either.
        send([f"flood0.n{i % 50}.set:{pad}{i}|s" for i in range(3000)])
        send([f"flood0.n0:{i}|c" for i in range(3000)])
        send(["t.timer:" + ":".join(str(i) for i in range(400)) + "|ms"] * 200)
        # 4. More TCP connections than allowed, each holding a partial line.
        conns = []
        for _ in range(300):
            c = socket.create_connection(("127.0.0.1", tport))
            c.sendall(b"partial.line:1|c" + b"x" * 60000)
            conns.append(c)
        v = wait_until(
            lambda: (
                (x := _values(proc))
                and x.get(
                    (
                        "podkit_metrics_statsd_dropped_total",
                        (("reason", "connection_limit"), ("source", f"statsd 127.0.0.1:{port}")),
                    ),
                    0,
                )
                >= 44
                and x
            ),
            timeout=20,
            what="TCP connections beyond the limit refused",
        )
        budget = v[("podkit_metrics_budget_bytes", ())]
        hwm = _hwm_mb(proc.pid)
        print(
            f"flood {shape!r}: {batch * 10000} lines sent, budget used {budget / 2**20:.1f} MiB, "
            f"series {v[('podkit_metrics_series', ())]:.0f}, peak RSS {hwm:.1f} MB"
        )
        assert budget <= 64 * 2**20
        assert _conflicts(v, "bytes") + _conflicts(v, "limit") > 0
        assert hwm < RSS_CEILING_MB, f"peak RSS {hwm:.1f} MB over the {RSS_CEILING_MB} MB ceiling"
        for c in conns:
            c.close()
        # Still serving, and healthy.
        assert proc.get("/healthz")[0] == 200
        assert os.path.exists(f"/proc/{proc.pid}")
