"""The runner from the outside: signals, deadlines, exit codes, logs, admin server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, ProgramProcess, http, wait_until
from tests.peers.prometheus import promtool_check

SAMPLES = [sys.executable, str(ROOT / "tests" / "sample_programs.py")]


def sample(name: str, args: list[str], tmp: Path, **kw: object) -> ProgramProcess:
    return ProgramProcess([*SAMPLES, name], args, tmp=tmp, **kw)  # type: ignore[arg-type]


def run_sample(
    name: str, args: list[str], env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [*SAMPLES, name, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_sigterm_runs_cleanup_and_exits_zero(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with sample("basic", ["--marker", str(marker), "--shutdown-timeout", "5s"], tmp_path) as p:
        p.wait_ready()
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert time.monotonic() - t0 < 5
        assert marker.read_text() == "cleaned\n"
        msgs = [r["message"] for r in p.records()]
        assert "stopping" in msgs and msgs[-1] == "stopped"


def test_second_signal_exits_at_once(tmp_path: Path) -> None:
    with sample("basic", ["--cleanup-hang", "--shutdown-timeout", "60s"], tmp_path) as p:
        p.wait_ready()
        p.signal(signal.SIGTERM)
        p.wait_log("stopping")  # the first signal was taken: the next one is a second
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        code = p.wait(5)
        assert time.monotonic() - t0 < 2
        assert code == 128 + signal.SIGTERM
        assert any(r["message"] == "second signal; exiting at once" for r in p.records())


def test_hung_cleanup_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    with sample("basic", ["--cleanup-hang", "--shutdown-timeout", "1s"], tmp_path) as p:
        p.wait_ready()
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 1
        elapsed = time.monotonic() - t0
        assert 0.9 < elapsed < 5
        rec = p.wait_log("shutdown deadline exceeded; exiting")
        assert rec["level"] == "error" and rec["shutdown_timeout"] == 1.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--bogus"], "--bogus"),
        (["--every", "10 parsecs"], "--every"),
        (["--count", "many"], "--count"),
        (["--log-format", "xml"], "--log-format"),
        (["--config", "/nonexistent/podkit.yaml"], "/nonexistent/podkit.yaml"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    res = run_sample("basic", args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]
    assert "Traceback" not in res.stderr


def test_missing_required_option_exits_2() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "podkit.cli", "nonexistent"], capture_output=True, text=True
    )
    assert res.returncode == 2
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_sidecar.py"), "--every", "1 fortnight"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "--every" in res.stderr


def test_required_option(tmp_path: Path) -> None:
    script = tmp_path / "req.py"
    script.write_text(
        "from podkit import Sidecar, option\n"
        "class R(Sidecar):\n"
        "    name = 'req'\n"
        "    target: str = option(required=True, help='x')\n"
        "    async def run(self) -> None: pass\n"
        "R.main()\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == "podkit req: error: --target is required [env PODKIT_TARGET]"


@pytest.mark.parametrize(
    "content",
    ["every: [1, 2\n", "- just\n- a list\n", "bogus_key: 1\n", "every: 10 parsecs\n"],
)
def test_malformed_config_exits_2(tmp_path: Path, content: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(content)
    res = run_sample("basic", ["--config", str(cfg)])
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert str(cfg) in res.stderr and "Traceback" not in res.stderr


def test_unreadable_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "dir.yaml"
    cfg.mkdir()
    res = run_sample("basic", ["--config", str(cfg)])
    assert res.returncode == 2 and str(cfg) in res.stderr


def test_precedence_flag_env_config_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("every: 3s\ncount: 7\nlabel: from-config\n")

    def settings(args: list[str], env: dict[str, str]) -> dict[str, object]:
        with sample("basic", ["--config", str(cfg), *args], tmp_path, env=env) as p:
            rec = p.wait_log("settings")
        return rec

    rec = settings([], {})
    assert (rec["every"], rec["count"], rec["label"]) == (3.0, 7, "from-config")
    rec = settings([], {"PODKIT_COUNT": "8", "PODKIT_LABEL": "from-env"})
    assert (rec["every"], rec["count"], rec["label"]) == (3.0, 8, "from-env")
    rec = settings(["--label", "from-flag"], {"PODKIT_LABEL": "from-env"})
    assert (rec["count"], rec["label"]) == (7, "from-flag")
    cfg.write_text("")
    rec = settings([], {})
    assert (rec["every"], rec["count"], rec["label"]) == (1.0, 3, "none")


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    res = run_sample("basic", [], env={"PODKIT_EVERY": "soon"})
    assert res.returncode == 2 and "PODKIT_EVERY" in res.stderr


def test_admin_endpoints(tmp_path: Path) -> None:
    with sample("basic", ["--ready-after", "1s", "--unhealthy-after", "1.5s"], tmp_path) as p:
        wait_until(lambda: _up(p), 10, what="admin server")
        assert p.get("/readyz")[0] == 503
        p.wait_ready()
        assert p.get("/healthz")[0] == 200
        wait_until(lambda: p.get("/healthz")[0] == 503, 10, what="unhealthy")
        status, _, body = p.get("/")
        data = json.loads(body)
        assert data["program"] == "basic" and data["ready"] is True and data["healthy"] is False
        assert data["label"] == "none"

        status, headers, text = p.get("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert b"podkit_build_info{" in text
        promtool_check(text)

        status, headers, om = p.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert headers["Content-Type"].startswith("application/openmetrics-text")
        assert om.endswith(b"# EOF\n")
        from prometheus_client.openmetrics.parser import text_string_to_metric_families

        names = {f.name for f in text_string_to_metric_families(om.decode())}
        assert "podkit_build" in names or "podkit_build_info" in names


def _up(p: ProgramProcess) -> bool:
    try:
        p.get("/healthz", timeout=1)
        return True
    except OSError:
        return False


def test_logs_are_json_lines_and_text_on_request(tmp_path: Path) -> None:
    with sample("basic", [], tmp_path) as p:
        p.wait_ready()
    lines = p.stderr().splitlines()
    assert lines
    for line in lines:
        rec = json.loads(line)
        assert {"time", "level", "program", "message"} <= rec.keys()
        assert rec["program"] == "basic"
        assert rec["time"].endswith("Z") and "T" in rec["time"]
    with sample("basic", ["--log-format", "text"], tmp_path) as p:
        p.wait_ready()
    text = p.stderr().splitlines()
    assert text and not any(line.startswith("{") for line in text)
    assert any(" basic: ready" in line for line in text)


def test_secret_never_in_logs_or_status(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2-very-secret\n")
    url = "http://user:pa55word-xyz@example.invalid:8080/path"
    with sample("basic", ["--password-file", str(secret), "--upstream", url], tmp_path) as p:
        p.wait_ready()
        _, _, body = p.get("/")
    logs = p.stderr()
    assert "hunter2-very-secret" not in logs and "hunter2-very-secret" not in body.decode()
    assert "pa55word-xyz" not in logs
    assert "http://user:***@example.invalid:8080/path" in logs
    assert any(r.get("value") == "***" for r in p.records())


def test_exception_in_run_is_one_json_record_with_traceback(tmp_path: Path) -> None:
    with sample("basic", ["--fail"], tmp_path) as p:
        assert p.wait(10) == 1
    recs = p.records()
    failed = [r for r in recs if r["message"] == "program failed"]
    assert len(failed) == 1
    assert "RuntimeError: boom from run" in failed[0]["exc_info"]
    assert "Traceback" in failed[0]["exc_info"]


def test_init_task_exit_codes_and_interruption(tmp_path: Path) -> None:
    assert run_sample("sleeper", ["--seconds", "0", "--code", "7"]).returncode == 7
    res = run_sample(
        "sleeper", ["--seconds", "0", "--", sys.executable, "-c", "import sys; sys.exit(42)"]
    )
    assert res.returncode == 42
    with sample("sleeper", ["--seconds", "60"], tmp_path, admin=False) as p:
        p.wait_log("starting")
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.wait(5) == 143
        assert time.monotonic() - t0 < 0.5 + 0.5
    with sample("sleeper", ["--seconds", "60"], tmp_path, admin=False) as p:
        p.wait_log("starting")
        p.signal(signal.SIGINT)
        assert p.wait(5) == 130


def test_cli_lists_programs_and_help() -> None:
    res = subprocess.run([sys.executable, "-m", "podkit"], capture_output=True, text=True)
    assert res.returncode == 0
    res = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "custom_sidecar.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and "--every" in res.stdout and "PODKIT_EVERY" in res.stdout


def test_custom_sidecar_example_runs(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    p = ProgramProcess(
        [sys.executable, str(ROOT / "examples" / "custom_sidecar.py")],
        ["--path", str(beat), "--every", "100ms"],
        tmp=tmp_path,
    )
    with p:
        p.wait_ready()
        assert beat.exists()
        _, _, body = p.get("/")
        assert json.loads(body)["path"] == str(beat)
        _, _, metrics = p.get("/metrics")
        wait_until(
            lambda: (
                b"podkit_heartbeat_beats_total 2.0" in p.get("/metrics")[2]
                or b"podkit_heartbeat_beats_total 3.0" in p.get("/metrics")[2]
            ),
            5,
        )
        assert b"podkit_heartbeat_beats_total" in metrics
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 0


def test_custom_sidecar_defaults_without_arguments(tmp_path: Path) -> None:
    """No arguments at all: the defaults are enough to run (its admin port is 9400)."""
    p = ProgramProcess(
        [sys.executable, str(ROOT / "examples" / "custom_sidecar.py")],
        [],
        tmp=tmp_path,
        admin=False,
        env={"TMPDIR": str(tmp_path)},
    )
    with p:
        wait_until(lambda: (tmp_path / "heartbeat").exists(), 10, what="heartbeat file")
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 0
    _ = http  # (helpers imported for symmetry with other tests)


# -- the admin server cannot starve the program (issue 13, class 8) ------------------

FD_WRITER = '''
import sys
from podkit import Sidecar, option


class FdWriter(Sidecar):
    """Rewrite a file every 10 ms, as a checkpointing sidecar does; count failures."""

    name = "fdwriter"
    path: str = option(required=True, help="file to rewrite")

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.failures = 0

    async def run(self) -> None:
        self.set_ready()
        while not self.stopping:
            try:
                with open(self.path, "w") as f:
                    f.write(str(self.writes))
                self.writes += 1
            except OSError as exc:
                self.failures += 1
                self.set_unhealthy(f"cannot write: {exc.strerror}")
            await self.sleep(0.01)

    def status(self) -> dict[str, int]:
        return {"writes": self.writes, "failures": self.failures}


if __name__ == "__main__":
    FdWriter.main()
'''


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_connection_flood_cannot_take_the_programs_descriptors(tmp_path: Path, loop: str) -> None:
    """RLIMIT_NOFILE lowered to 64 in the child; 300 connections to its admin port."""
    import resource
    import socket

    script = tmp_path / "fdwriter.py"
    script.write_text(FD_WRITER)
    ckpt = tmp_path / "ckpt"
    limited = [
        sys.executable,
        "-c",
        "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64));"
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
        str(script),
    ]
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 400  # room for this test's own side
    p = ProgramProcess(
        limited, ["--path", str(ckpt)], tmp=tmp_path, env={"PODKIT_EVENT_LOOP": loop}
    )
    flood: list[socket.socket] = []
    with p:
        p.wait_ready()
        assert p.admin_port
        try:
            for _ in range(300):
                flood.append(socket.create_connection(("127.0.0.1", p.admin_port), timeout=2))
            # The kubelet's probe still answers, and says the program is healthy.
            status, _, body = p.get("/healthz", timeout=3)
            assert (status, body) == (200, b"ok\n")
            # The program goes on writing its file while the flood holds.
            start = int(ckpt.read_text() or 0)
            wait_until(lambda: int(ckpt.read_text() or 0) > start + 20, 10, what="writes")
            assert p.get("/healthz", timeout=3)[0] == 200
        finally:
            for s in flood:
                s.close()
        # Once the flood's connections are gone, the other routes answer again.
        wait_until(lambda: p.get("/")[0] == 200, 10, what="/ after the flood")
        data = json.loads(p.get("/")[2])
        assert data["failures"] == 0 and data["healthy"] is True
        assert "admin connections capped to keep file descriptors" in p.stderr()


def test_admin_tls_and_auth_from_files_through_flags_and_env(tmp_path: Path) -> None:
    """The runner wires --admin-tls-*-file and PODKIT_ADMIN_AUTH_FILE into the server."""
    import hashlib
    import ssl
    import urllib.error
    import urllib.request

    from tests.unit.test_admin_hostile import make_cert

    cert, key, _ = make_cert(tmp_path, "admin")
    auth = tmp_path / "auth.yaml"
    auth.write_text(f"bearer_tokens: [sha256:{hashlib.sha256(b'scrape-token').hexdigest()}]\n")
    ctx = ssl.create_default_context(cafile=cert)
    args = ["--admin-tls-cert-file", cert, "--admin-tls-key-file", key]
    with sample("basic", args, tmp_path, env={"PODKIT_ADMIN_AUTH_FILE": str(auth)}) as p:

        def get(path: str, token: str | None = None) -> int:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            req = urllib.request.Request(f"https://127.0.0.1:{p.admin_port}{path}", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=3, context=ctx) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        def ready() -> bool:
            try:
                return get("/readyz") == 200
            except OSError:
                return False

        wait_until(ready, 15, what="HTTPS /readyz without credentials")
        assert get("/healthz") == 200
        assert get("/metrics") == 401 and get("/metrics", "wrong") == 401
        assert get("/metrics", "scrape-token") == 200
        p.signal(signal.SIGTERM)
        assert p.wait(10) == 0
    assert "scrape-token" not in p.stderr()
