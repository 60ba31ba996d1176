"""Prometheus (Debian's prometheus package): promtool to check exposition output,
and a real Prometheus server that scrapes a target and answers queries."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, http, need, wait_until


def promtool_check(text: bytes) -> None:
    """Fail the test unless `promtool check metrics` accepts the exposition."""
    tool = need("promtool")
    res = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    # promtool exits 3 for lint warnings only (e.g. a counter without _total),
    # 1 for errors; both are failures here since our names follow the rules.
    assert res.returncode == 0, f"promtool check metrics: {res.stdout!r} {res.stderr!r}"


@pytest.fixture
def promtool() -> object:
    return promtool_check


class PrometheusServer:
    """A prometheus process scraping `targets` every second, with its own storage."""

    def __init__(self, tmp: Path, targets: list[str], scrape_interval: str = "1s") -> None:
        self.binary = need("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": scrape_interval,
            },
            "scrape_configs": [{"job_name": "target", "static_configs": [{"targets": targets}]}],
        }
        (self.dir / "prometheus.yml").write_text(json.dumps(cfg))
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 30.0) -> PrometheusServer:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.logs()}")
            try:
                return http(self.url + "/-/ready", timeout=1)[0] == 200
            except OSError:
                return False

        wait_until(ready, timeout, 0.1, what="prometheus /-/ready")
        return self

    def logs(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector: [{"metric": {...}, "value": [ts, "v"]}]."""
        q = urllib.parse.urlencode({"query": expr})
        status, _, body = http(f"{self.url}/api/v1/query?{q}", timeout=5)
        data = json.loads(body)
        assert status == 200 and data["status"] == "success", data
        return list(data["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of `expr`, or None while it has no (or several) series."""
        res = self.query(expr)
        return float(res[0]["value"][1]) if len(res) == 1 else None

    def wait_value(self, expr: str, pred: Callable[[float], bool], timeout: float = 20.0) -> float:
        def ok() -> float | None:
            v = self.value(expr)
            return v if v is not None and pred(v) else None

        try:
            return float(wait_until(ok, timeout, 0.25, what=f"prometheus: {expr}"))
        except AssertionError:
            raise AssertionError(f"{expr} = {self.query(expr)}\n{self.logs()[-2000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class ConfiguredPrometheus(PrometheusServer):
    """A prometheus reading a config file the test (or a reloader) writes, its PID in a file.

    Started with --web.enable-lifecycle, so both SIGHUP (to `pid_file`) and
    `POST /-/reload` reload it.
    """

    def __init__(self, tmp: Path, config: Path) -> None:
        self.binary = need("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.dir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=info",
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        self.pid_file = self.dir / "prometheus.pid"
        self.pid_file.write_text(f"{self.proc.pid}\n")

    def self_metric(self, name: str) -> float:
        """A sample of Prometheus' own /metrics (e.g. prometheus_config_last_reload_successful)."""
        body = http(self.url + "/metrics", timeout=5)[2].decode()
        for line in body.splitlines():
            if line.split(" ")[0] == name:
                return float(line.split()[1])
        raise AssertionError(f"{name} not in prometheus' /metrics")


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., PrometheusServer]]:
    """start(targets) -> a ready PrometheusServer scraping them every second."""
    servers: list[PrometheusServer] = []

    def start(targets: list[str], scrape_interval: str = "1s") -> PrometheusServer:
        srv = PrometheusServer(tmp_path / f"prometheus-{len(servers)}", targets, scrape_interval)
        servers.append(srv)
        return srv.wait_ready()

    yield start
    for srv in servers:
        srv.stop()


def wait_scraped(prom: PrometheusServer, job_up: str = 'up{job="target"}') -> None:
    """Wait until Prometheus has scraped the target successfully at least once."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if prom.value(job_up) == 1.0:
            return
        time.sleep(0.2)
    raise AssertionError(f"target never up: {prom.query('up')}\n{prom.logs()[-2000:]}")
