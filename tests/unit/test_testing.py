"""podkit.testing, the public harness, on the custom-sidecar example of docs/custom-sidecar.md."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from podkit import testing
from podkit.testing import ProgramProcess, parse_metrics, run_program

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")


def test_heartbeat_beats_and_stops_cleanly(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    with ProgramProcess(
        "custom_sidecar:Heartbeat",
        ["--path", str(beat), "--every", "100ms"],
        env={"PYTHONPATH": EXAMPLES},
        tmp=tmp_path,
    ) as p:
        p.wait_ready()
        assert beat.exists()
        assert p.metric("podkit_heartbeat_beats_total") >= 1
        assert p.status()["path"] == str(beat)
        p.signal(signal.SIGTERM)
        assert p.wait() == 0
        assert p.wait_log("stopping")["signal"] == "SIGTERM"


def test_metric_fails_on_an_absent_series_unless_told(tmp_path: Path) -> None:
    with ProgramProcess(
        "custom_sidecar:Heartbeat",
        ["--path", str(tmp_path / "beat")],
        env={"PYTHONPATH": EXAMPLES},
        tmp=tmp_path,
    ) as p:
        p.wait_ready()
        with pytest.raises(AssertionError, match="no sample podkit_heartbeat_nope_total"):
            p.metric("podkit_heartbeat_nope_total")
        assert p.metric("podkit_heartbeat_nope_total", missing=0.0) == 0.0


def test_a_failed_block_shows_what_the_program_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test that fails inside the block gets the program's state and last log
    lines on stderr (shown with the failure): an admin port that refuses may be
    a program that died, and its log is the only witness."""
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        ProgramProcess(
            "custom_sidecar:Heartbeat",
            ["--path", str(tmp_path / "beat")],
            env={"PYTHONPATH": EXAMPLES},
            tmp=tmp_path,
        ) as p,
    ):
        p.wait_ready()
        p.kill()
        raise RuntimeError("the test failed")
    err = capsys.readouterr().err
    assert "had exited -9 when the test failed" in err, err
    assert '"message": "ready"' in err, err
    with ProgramProcess(
        "custom_sidecar:Heartbeat",
        ["--path", str(tmp_path / "beat")],
        env={"PYTHONPATH": EXAMPLES},
        tmp=tmp_path,
    ) as p:
        p.wait_ready()
    assert capsys.readouterr().err == ""  # a block that passed prints nothing


def test_parse_metrics_and_label_subset() -> None:
    text = 'a_total{x="1",y="2"} 3\na_total{x="1",y="3"} 4\nb 1\n'
    samples = parse_metrics(text)
    assert ("b", {}, 1.0) in samples
    assert sum(v for n, lab, v in samples if n == "a_total" and lab["x"] == "1") == 7


def test_run_program_reports_a_usage_error() -> None:
    res = run_program("custom_sidecar:Heartbeat", ["--every", "soon"], env={"PYTHONPATH": EXAMPLES})
    assert res.returncode == 2
    assert b"--every" in res.stderr


def test_named_checks_on_readyz_verbose_healthz_verbose_and_status(tmp_path: Path) -> None:
    mod = tmp_path / "gated.py"
    go = tmp_path / "go"
    mod.write_text(
        "import os\n"
        "from podkit import Sidecar\n"
        "class Gated(Sidecar):\n"
        "    name = 'gated'\n"
        "    async def run(self):\n"
        "        sync = self.readiness('first-sync')\n"
        "        self.sink_down = 'connection refused'\n"
        "        self.health_check('sink', lambda: self.sink_down)\n"
        "        self.set_ready()\n"
        "        while not self.stopping:\n"
        f"            if os.path.exists({str(go)!r}):\n"
        "                sync.passed()\n"
        "                self.sink_down = None\n"
        "            await self.sleep(0.05)\n"
    )
    with ProgramProcess("gated:Gated", [], env={"PYTHONPATH": str(tmp_path)}, tmp=tmp_path) as p:
        p.wait_log("starting")
        # set_ready() was called, but a named check still fails: not ready.
        code, _, body = p.get("/readyz?verbose")
        text = body.decode()
        assert code == 503, text
        assert "[+]started ok" in text and "[-]first-sync failed: not yet" in text
        assert text.rstrip().endswith("readyz check failed")
        code, _, body = p.get("/healthz?verbose")
        assert code == 503 and "[-]sink failed: connection refused" in body.decode()
        assert p.get("/healthz")[0] == 503
        st = p.status()
        assert st["checks"]["ready"]["first-sync"] == "not yet"
        assert st["checks"]["health"]["sink"] == "connection refused"
        assert st["started_at"].endswith("Z") and "T" in st["started_at"]
        go.touch()
        p.wait_ready()
        code, _, body = p.get("/readyz?verbose")
        assert code == 200 and "[+]first-sync ok" in body.decode()
        assert p.get("/healthz?verbose")[0] == 200


def test_free_port_is_outside_the_ephemeral_range_and_per_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CI failure this guards: a port from bind(0), bound by its server a
    moment later, had been taken meanwhile as another test's client port."""
    lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = [testing.free_port() for _ in range(50)]
    assert all(not lo <= p <= hi for p in ports), ports
    assert len(set(ports)) == 50  # round-robin: never the same port twice in a row
    # An outgoing connection's local port is never in the window.
    with (
        socket.create_server(("127.0.0.1", 0)) as srv,
        socket.create_connection(srv.getsockname()) as c,
    ):
        assert c.getsockname()[1] not in testing._port_window()
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    first = testing._port_window()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    second = testing._port_window()
    assert len(first) >= 2048 and len(second) == len(first)
    assert not set(first) & set(second)
    assert all(not lo <= p <= hi for p in [*first, *second])
