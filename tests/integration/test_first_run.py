"""First run: the answers a new user gets from any program (issue 23's core part).

Driven through podkit.testing on the custom-sidecar example, so what a user's
own sidecar gets is what is tested.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from podkit import Sidecar, __version__
from podkit.testing import ProgramProcess, run_program, wait_until

EXAMPLES = str(Path(__file__).resolve().parents[2] / "examples")
HEARTBEAT = "custom_sidecar:Heartbeat"
ENV = {"PYTHONPATH": EXAMPLES}


def test_version_on_every_program() -> None:
    res = run_program(HEARTBEAT, ["--version"], env=ENV)
    assert res.returncode == 0
    assert res.stdout.decode().strip() == f"podkit heartbeat {__version__}"
    res = run_program("logship", ["--version"])
    assert res.stdout.decode().strip() == f"podkit logship {__version__}"


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("every: soon\nnot-a-setting: 1\n")
    res = run_program(
        "proxy",
        [
            "--check-config",
            "--config",
            str(conf),
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:1",
            "--ca-file",
            str(tmp_path / "missing.pem"),
            "--timeout",
            "soon",
        ],
    )
    err = res.stderr.decode()
    assert res.returncode == 2, err
    lines = [ln for ln in err.splitlines() if ln]
    assert any("unknown setting 'every'" in ln for ln in lines), err
    assert any("--timeout" in ln for ln in lines), err
    assert len(lines) >= 3, err
    assert all(ln.startswith("podkit proxy: error: ") for ln in lines), err
    assert "Traceback" not in err


def test_check_config_passes_a_good_configuration(tmp_path: Path) -> None:
    res = run_program(HEARTBEAT, ["--check-config", "--path", str(tmp_path / "b")], env=ENV)
    assert res.returncode == 0, res.stderr
    assert b"configuration OK" in res.stdout


def test_check_config_names_an_unreadable_file(tmp_path: Path) -> None:
    res = run_program(
        "logship",
        [
            "--check-config",
            "--path",
            "/x/*.log",
            "--sink",
            "stdout://",
            "--bearer-token-file",
            str(tmp_path / "nope"),
        ],
    )
    assert res.returncode == 2
    assert f"--bearer-token-file {tmp_path / 'nope'}: no such file" in res.stderr.decode()


def test_a_program_class_without_a_name_fails_where_it_is_written() -> None:
    with pytest.raises(TypeError, match="needs a name"):

        class Nameless(Sidecar):
            async def run(self) -> None:
                pass


def test_start_log_admin_address_and_no_created_series(tmp_path: Path) -> None:
    with ProgramProcess(
        HEARTBEAT,
        ["--path", str(tmp_path / "b"), "--admin-addr", "127.0.0.1:0"],
        env=ENV,
        tmp=tmp_path,
    ) as p:
        rec = p.wait_log("admin server listening")
        host, _, port = rec["addr"].rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        p.admin_port = int(port)
        p.wait_ready()
        assert p.wait_log("starting")["version"] == __version__
        names = {name for name, _, _ in p.samples()}
        assert "podkit_heartbeat_beats_total" in names
        assert not [n for n in names if n.endswith("_created")], names


def test_two_sidecars_on_one_admin_port_say_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_program(
            HEARTBEAT,
            ["--path", str(tmp_path / "b"), "--admin-addr", f"127.0.0.1:{port}"],
            env=ENV,
        )
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "cannot start admin server" in err
    assert "--admin-addr" in err and "default_admin_addr" in err


def test_a_sidecar_whose_run_returns_on_its_own_is_warned_about(tmp_path: Path) -> None:
    mod = tmp_path / "quitter.py"
    mod.write_text(
        "from podkit import Sidecar\n"
        "class Quitter(Sidecar):\n"
        "    name = 'quitter'\n"
        "    async def run(self):\n"
        "        self.set_ready()\n"
    )
    res = run_program("quitter:Quitter", ["--admin-addr", "off"], env={"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 0
    assert b"run() returned while no stop was asked" in res.stderr


@pytest.mark.parametrize(
    ("program", "args", "made"),
    [
        ("logship", ["--path", "{d}/*.log", "--sink", "stdout://", "--state-dir", "{t}/s"], "d"),
        ("logformat", ["--path", "{d}/*.log", "--format", "json", "--state-dir", "{t}/s"], "d"),
        ("reloader", ["--watch", "{d}", "--command", "true"], "d"),
    ],
)
def test_nothing_to_do_is_not_ready(
    tmp_path: Path, program: str, args: list[str], made: str
) -> None:
    """A log or config volume that is not mounted keeps the program not ready,
    saying which path, until it appears (a native sidecar's startupProbe then
    holds the app back instead of starting it with nothing shipped or watched)."""
    volume = tmp_path / "volume"
    argv = [a.format(d=volume, t=tmp_path) for a in args]
    with ProgramProcess(program, argv, tmp=tmp_path) as p:
        p.wait_log("admin server listening")

        def not_ready_because() -> str | None:
            code, _, body = p.get("/readyz?verbose")
            text = body.decode()
            return text if code == 503 and f"{volume} does not exist" in text else None

        wait_until(not_ready_because, 15, what="/readyz?verbose naming the missing path")
        assert str(volume) in json.dumps(p.status()["checks"]["ready"])
        assert p.get("/readyz")[0] == 503
        volume.mkdir()
        p.wait_ready()


def test_errors_name_the_right_flag_and_say_what_to_do(tmp_path: Path) -> None:
    res = run_program("proxy", ["--listen", "8080", "--upstream", "http://127.0.0.1:1"])
    err = res.stderr.decode()
    assert res.returncode == 2
    assert err.startswith("podkit proxy: error: --listen '8080'"), err
    assert "did you mean 127.0.0.1:8080?" in err
    res = run_program(
        "logship", ["--path", "/x/*.log", "--sink", "stdout://", "--admin-addr", "9411"]
    )
    assert res.returncode == 2
    assert "did you mean 0.0.0.0:9411?" in res.stderr.decode()


def test_an_unwritable_root_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # /sys refuses even root: what a read-only root filesystem does to an image.
    res = run_program(
        "gitsync",
        ["--repo", "https://git.invalid/x.git", "--root", "/sys/podkit-git", "--one-time"],
    )
    err = res.stderr.decode()
    assert res.returncode == 2, err
    assert "Traceback" not in err
    assert "podkit gitsync: error: --root /sys/podkit-git:" in err and "mount a writable" in err


def test_one_time_failure_does_not_talk_of_a_published_tree(tmp_path: Path) -> None:
    res = run_program(
        "gitsync",
        ["--repo", "https://git.invalid/x.git", "--root", str(tmp_path / "g"), "--one-time"],
    )
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "nothing is published yet" in err
    assert "stays published" not in err
