"""Every program that tails files, with a link to a secret planted in its log volume.

logship, logformat --path and the metrics adapter's log source share the
tailer: by default none of them reads through a link that leads out of the
glob's base directory, each counts it in files_skipped_total{reason}, and
--follow-symlinks (follow_symlinks: true for a log source) opts in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import ProgramProcess, wait_until
from tests.peers.receiver import Receiver

SECRET = "ok token=s3cr3t-value"


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """logs/app.log (real), logs/token.log -> secrets/token (a planted link)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(SECRET + "\n")
    os.symlink(tmp_path / "secrets" / "token", logs / "token.log")
    (logs / "app.log").write_text("ok app=1\n")
    return logs


def metric(p: ProgramProcess, line_start: str) -> float:
    body = p.get("/metrics")[2].decode()
    values = [float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines() if ln.startswith(line_start)]
    assert len(values) == 1, f"{line_start!r} not exactly once in /metrics"
    return values[0]


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_logship(tmp_path: Path, volume: Path, receiver: Receiver, follow: bool) -> None:
    args = [
        "--path", str(volume / "*.log"), "--sink", receiver.url,
        "--state-dir", str(tmp_path / "state"), "--batch-max-wait", "50ms",
    ] + (["--follow-symlinks"] if follow else [])  # fmt: skip
    with ProgramProcess("logship", args, tmp=tmp_path) as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.messages()) >= 1 + follow, 15, what="lines shipped")
        skipped = 'podkit_logship_files_skipped_total{reason="symlink_outside"}'
        assert metric(p, skipped) == (0 if follow else 1)
        status = json.loads(p.get("/")[2])
        assert [s["reason"] for s in status["skipped"]] == ([] if follow else ["symlink_outside"])
        assert p.stop() == 0
    assert (SECRET in receiver.messages()) is follow


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_logformat_path(tmp_path: Path, volume: Path, follow: bool) -> None:
    out = tmp_path / "out.ndjson"
    args = [
        "--path", str(volume / "*.log"), "--format", "logfmt", "--output", f"file://{out}",
        "--state-dir", str(tmp_path / "state"),
    ] + (["--follow-symlinks"] if follow else [])  # fmt: skip
    with ProgramProcess("logformat", args, tmp=tmp_path) as p:
        p.wait_ready()

        def records() -> list[dict[str, object]]:
            text = out.read_text() if out.exists() else ""
            return [json.loads(x) for x in text.splitlines()]

        wait_until(lambda: len(records()) >= 1 + follow, 15, what="records written")
        skipped = 'podkit_logformat_files_skipped_total{reason="symlink_outside"}'
        assert metric(p, skipped) == (0 if follow else 1)
        assert p.stop() == 0
    assert any(r.get("token") == "s3cr3t-value" for r in records()) is follow


@pytest.mark.parametrize("follow", [False, True], ids=["default", "follow-symlinks"])
def test_metrics_log_source(tmp_path: Path, volume: Path, follow: bool) -> None:
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(
        f"""
sources:
  - type: log
    name: app
    path: {volume}/*.log
    poll_interval: 100ms
    follow_symlinks: {str(follow).lower()}
    rules:
      - match: '^ok '
        counter: app_ok_total
"""
    )
    with ProgramProcess("metrics", ["--config", str(cfg)], tmp=tmp_path) as p:
        p.wait_ready()
        wait_until(lambda: "app_ok_total " in p.get("/metrics")[2].decode(), 15, what="the counter")
        skipped = 'podkit_metrics_log_files_skipped_total{reason="symlink_outside",source="app"}'
        wait_until(lambda: metric(p, "app_ok_total ") == 1 + follow, 15, what="lines counted")
        assert metric(p, skipped) == (0 if follow else 1)
        status = json.loads(p.get("/")[2])
        (src,) = [x for x in status["sources"] if x["type"] == "log"]
        assert [x["reason"] for x in src["skipped"]] == ([] if follow else ["symlink_outside"])
        assert p.stop() == 0
