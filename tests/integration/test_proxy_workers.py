"""proxy --workers N: /metrics and the access log describe every worker, not only the
one that answers the scrape (issue 18)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ProgramProcess, free_port, http, rss_bytes, wait_until
from tests.peers.nginx import start_nginx


@pytest.fixture(scope="module")
def nginx_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = start_nginx(tmp_path_factory.mktemp("nginx"))
    yield srv
    srv.stop()


@contextlib.contextmanager
def proxy(tmp: Path, *args: str) -> Iterator[ProgramProcess]:
    port = free_port()
    p = ProgramProcess("proxy", ["--listen", f"127.0.0.1:{port}", *args], tmp=tmp)
    p.port = port  # type: ignore[attr-defined]
    with p:
        p.wait_ready()
        yield p


def requests_total(metrics: bytes) -> int:
    return sum(
        int(float(n))
        for n in re.findall(rb"^podkit_proxy_requests_total\{[^}]*\} (\S+)$", metrics, re.M)
    )


def test_metrics_and_access_log_cover_every_worker(nginx_up: Any, tmp_path: Path) -> None:
    n = 300
    with proxy(tmp_path, "--upstream", nginx_up.url, "--workers", "3") as p:
        wait_until(lambda: sum(r["message"] == "listening" for r in p.records()) == 3, 10)
        port = p.port  # type: ignore[attr-defined]
        for i in range(n):  # a new connection each: SO_REUSEPORT spreads them
            assert http(f"http://127.0.0.1:{port}/?i={i}")[0] == 200
        own = json.loads(p.get("/")[2])["listeners"][0]["upstreams"][0]["requests"]
        assert 0 < own < n  # the first process answered only its share...
        # ...and /metrics adds the others' (each writes its figures every second)
        wait_until(lambda: requests_total(p.get("/metrics")[2]) == n, 10, what="all workers")
        _, _, metrics = p.get("/metrics")
        count = re.search(
            rb'^podkit_proxy_request_duration_seconds_count\{upstream="[^"]+"\} (\S+)$',
            metrics,
            re.M,
        )
        assert count is not None and int(float(count.group(1))) == n
        pids = next(r for r in p.records() if r["message"] == "workers started")["pids"]
        rss = [rss_bytes(p.pid), *(rss_bytes(pid) for pid in pids)]
        print(f"RSS per process with --workers 3: {[r // 1024 for r in rss]} KiB")
        # every request has exactly one whole access-log line, whichever worker served it
        lines = wait_until(
            lambda: (
                found
                if len(found := [r for r in p.records() if r.get("message") == "request"]) >= n
                else None
            ),
            10,
            what="access log lines",
        )
        assert sorted(int(r["path"].split("=")[1]) for r in lines) == list(range(n))
