"""logship's destinations and processing (issue 17) against receivers that check
the wire format: several sinks with their own offsets, routing, OTLP decoded
with the official protos, Loki labels/metadata/tenant, compression and auth
from files, drop/keep/redact/sample, the pod's identity, a slow stdout pipe.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ProgramProcess, free_port, wait_until
from tests.integration.test_logship import (
    FAST,
    NO_POD,
    expected,
    lines,
    logship,
    wait_count,
)
from tests.peers.receiver import Receiver
from tests.peers.tls import TLSFiles


def series(p: ProgramProcess, name: str, **labels: str) -> float:
    """The value of the series of `name` carrying (at least) `labels`; 0 when absent."""
    _, _, body = p.get("/metrics")
    total = 0.0
    for ln in body.decode().splitlines():
        if not ln.startswith(name + "{"):
            continue
        head, value = ln.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


@pytest.fixture
def second() -> Any:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


def with_config(
    tmp: Path, config: dict[str, Any], *extra: str, env: dict[str, str] | None = None
) -> ProgramProcess:
    cfg = tmp / "logship.yaml"
    cfg.write_text(yaml.safe_dump(config))
    args = ["--config", str(cfg), "--state-dir", str(tmp / "state"), *FAST, *extra]
    return ProgramProcess("logship", args, tmp=tmp, env={**NO_POD, **(env or {})})


# -- several sinks ---------------------------------------------------------------------


def test_a_dead_sink_never_stalls_the_other_and_catches_up(
    tmp_path: Path, logs: Path, receiver: Receiver, second: Receiver
) -> None:
    app = logs / "app.log"
    app.write_text(lines(0, 3000))
    second.refuse()  # the second sink is down from the start
    with logship(
        tmp_path,
        receiver.url,
        "--sink",
        second.url,
        "--buffer-max-bytes",
        "64KiB",
        "--max-line-bytes",
        "1KiB",
    ) as p:
        p.wait_ready()
        wait_count(receiver, 3000, proc=p)
        with app.open("a") as f:  # more than the dead sink's buffer: it must not matter
            f.write(lines(3000, 6000))
        wait_count(receiver, 6000, proc=p)
        assert receiver.messages() == expected(0, 6000)
        assert second.count() == 0
        # The receiver holds a batch before logship has read its 200 (and counted it).
        wait_until(lambda: series(p, "podkit_logship_lines_total", sink="http") == 6000, 10)
        assert series(p, "podkit_logship_lines_total", sink="http-2") == 0
        assert series(p, "podkit_logship_retries_total", sink="http-2") >= 1
        wait_until(lambda: series(p, "podkit_logship_lag_bytes", sink="http") == 0, 10)
        size = app.stat().st_size
        wait_until(lambda: series(p, "podkit_logship_lag_bytes", sink="http-2") == size, 10)
        status = json.loads(p.get("/")[2])
        assert [s["name"] for s in status["sinks"]] == ["http", "http-2"]
        assert status["sinks"][1]["last_error"]
        second.accept()
        wait_count(second, 6000, proc=p)
        assert second.messages() == expected(0, 6000)
        assert p.stop() == 0
    # Each sink has its own checkpoint: the first where a single-sink run keeps it.
    assert (tmp_path / "state" / "checkpoints.json").exists()
    assert (tmp_path / "state" / "sinks" / "http-2" / "checkpoints.json").exists()


def test_single_sink_checkpoint_keeps_working_when_a_sink_is_added(
    tmp_path: Path, logs: Path, receiver: Receiver, second: Receiver
) -> None:
    (logs / "a.log").write_text(lines(0, 500))
    with logship(tmp_path, receiver.url) as p:
        p.wait_ready()
        wait_count(receiver, 500, proc=p)
        assert p.stop() == 0
    with (logs / "a.log").open("a") as f:
        f.write(lines(500, 700))
    with logship(tmp_path, receiver.url, "--sink", second.url) as p:
        p.wait_ready()
        wait_count(receiver, 700, proc=p)
        wait_count(second, 700, proc=p)
        assert p.stop() == 0
    # The old sink resumed from the single-sink checkpoint: nothing twice.
    assert receiver.messages() == expected(0, 700)
    assert second.messages() == expected(0, 700)  # the new sink starts at --read-from


def test_per_sink_health_check_names_the_stalled_sink(
    tmp_path: Path, logs: Path, receiver: Receiver, second: Receiver
) -> None:
    (logs / "a.log").write_text(lines(0, 10))
    second.fail(503)
    with logship(tmp_path, receiver.url, "--sink", second.url, "--stall-timeout", "1s") as p:
        p.wait_ready()
        wait_count(receiver, 10, proc=p)

        def stalled() -> bool:
            code, _, body = p.get("/healthz?verbose")
            return code == 503 and b"sink:http-2" in body

        wait_until(stalled, 15, 0.2, what="/healthz naming sink:http-2")
        _, _, body = p.get("/healthz?verbose")
        assert b"[+]sink:http ok" in body and b"[-]sink:http-2 failed" in body
        second.ok()
        wait_count(second, 10, proc=p)
        wait_until(lambda: p.get("/healthz")[0] == 200, 15, 0.2, what="healthy again")


def test_routing_by_file_glob_and_by_field(
    tmp_path: Path, logs: Path, receiver: Receiver, second: Receiver
) -> None:
    (logs / "web.log").write_text('{"level":"error","msg":"boom"}\n{"level":"info","msg":"fine"}\n')
    (logs / "audit.log").write_text('{"level":"info","msg":"login"}\n')
    config = {
        "path": [str(logs / "*.log")],
        "parse": "json",
        "sinks": [
            {"name": "errors", "url": receiver.url, "match": {"level": "^(error|fatal)$"}},
            {"name": "audit", "url": second.url, "path": [str(logs / "audit*.log")]},
        ],
    }
    with with_config(tmp_path, config) as p:
        p.wait_ready()
        wait_count(receiver, 1, proc=p)
        wait_count(second, 1, proc=p)
        wait_until(
            lambda: series(p, "podkit_logship_processed_lines_total", sink="errors") >= 2, 10
        )
        assert p.stop() == 0
    assert [r["msg"] for r in receiver.records] == ["boom"]
    assert [(r["msg"], r["file"]) for r in second.records] == [("login", str(logs / "audit.log"))]


# -- OTLP ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
def test_otlp_logs_decoded_with_the_official_protos(
    tmp_path: Path, logs: Path, receiver: Receiver, fmt: str
) -> None:
    podinfo = tmp_path / "podinfo"
    podinfo.mkdir()
    (podinfo / "labels").write_text('app="web"\npod-template-hash="7d9f"\n')
    (podinfo / "annotations").write_text('team="payments \\"core\\""\n')
    (logs / "a.log").write_text(
        '{"level":"warn","msg":"slow","ms":812}\nplain line\n{"severity":"ERROR","x":true}\n'
    )
    env = {"POD_NAME": "web-0", "POD_NAMESPACE": "prod", "NODE_NAME": "n1", "CONTAINER_NAME": "app"}
    url = receiver.url.replace("http://", "otlp+http://") + "/v1/logs"
    with logship(
        tmp_path,
        url,
        "--otlp-format",
        fmt,
        "--parse",
        "json",
        "--compress",
        "gzip",
        "--podinfo-dir",
        str(podinfo),
        "--label",
        "env=test",
        env=env,
    ) as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.otlp) >= 3, 20, 0.05, what="3 OTLP log records")
        assert p.stop() == 0
    assert not receiver.bad_requests
    want_type = "application/json" if fmt == "json" else "application/x-protobuf"
    assert receiver.last_headers["Content-Type"] == want_type
    assert receiver.last_headers["Content-Encoding"] == "gzip"
    warn, plain, err = receiver.otlp
    res = warn["resource"]
    assert res["k8s.pod.name"] == "web-0" and res["k8s.namespace.name"] == "prod"
    assert res["k8s.node.name"] == "n1" and res["k8s.container.name"] == "app"
    assert res["k8s.pod.label.app"] == "web" and res["k8s.pod.label.pod-template-hash"] == "7d9f"
    assert res["k8s.pod.annotation.team"] == 'payments "core"'
    assert res["env"] == "test"
    assert warn["scope"] == "podkit.logship"
    assert warn["severity_text"] == "warn" and warn["severity_number"] == 13
    assert warn["attributes"]["log.file.path"] == str(logs / "a.log")
    assert warn["attributes"]["msg"] == "slow" and warn["attributes"]["ms"] == 812
    assert warn["time"] > 1_700_000_000 * 10**9 and warn["observed"] == warn["time"]
    assert plain["body"] == "plain line" and plain["severity_number"] == 0
    assert err["severity_number"] == 17 and err["attributes"]["x"] is True


# -- Loki --------------------------------------------------------------------------------


def test_loki_labels_metadata_tenant_and_the_stream_bound(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    (logs / "a.log").write_text(
        "".join(
            json.dumps({"level": lvl, "trace_id": f"t{i}", "msg": f"m{i}"}) + "\n"
            for i, lvl in enumerate(["info", "error", "info", "warn", "debug"])
        )
    )
    url = receiver.url.replace("http://", "loki+http://")
    with logship(
        tmp_path,
        url,
        "--parse",
        "json",
        "--loki-label-keys",
        "level",
        "--loki-metadata-keys",
        "trace_id",
        "--loki-tenant",
        "team-a",
        "--loki-max-streams",
        "2",
        "--batch-max-lines",
        "1",
        "--compress",
        "zstd",
    ) as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.loki) >= 5, 20, 0.05, what="5 Loki entries")
        assert series(p, "podkit_logship_loki_label_overflow_total", sink="loki") == 2
        assert p.stop() == 0
    assert not receiver.bad_requests
    assert receiver.last_headers["X-Scope-OrgID"] == "team-a"
    assert receiver.last_headers["Content-Encoding"] == "zstd"
    got = [(e["labels"].get("level"), e["meta"]) for e in receiver.loki]
    assert got == [
        ("info", {"trace_id": "t0"}),
        ("error", {"trace_id": "t1"}),
        ("info", {"trace_id": "t2"}),
        # Past 2 label sets: sent without the field label, its value as metadata.
        (None, {"level": "warn", "trace_id": "t3"}),
        (None, {"level": "debug", "trace_id": "t4"}),
    ]
    assert all(e["labels"]["filename"] == str(logs / "a.log") for e in receiver.loki)
    assert p.wait_log("too many Loki streams; sending records without their field labels")


# -- compression and auth from files -----------------------------------------------------


def test_basic_auth_api_key_header_files_and_zstd_reread_on_change(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    password, key = tmp_path / "password", tmp_path / "api-key"
    password.write_text("pa55word\n")
    key.write_text("k-111\n")
    (logs / "a.log").write_text("one\n")
    with logship(
        tmp_path,
        receiver.url,
        "--username",
        "shipper",
        "--password-file",
        str(password),
        "--header-file",
        f"X-Api-Key={key}",
        "--compress",
        "zstd",
    ) as p:
        p.wait_ready()
        wait_count(receiver, 1, proc=p)
        h = receiver.last_headers
        assert h["Authorization"] == "Basic c2hpcHBlcjpwYTU1d29yZA=="  # shipper:pa55word
        assert h["X-Api-Key"] == "k-111" and h["Content-Encoding"] == "zstd"
        password.write_text("rotated\n")
        key.write_text("k-222\n")
        with (logs / "a.log").open("a") as f:
            f.write("two\n")
        wait_count(receiver, 2, proc=p)
        h = receiver.last_headers
        assert h["Authorization"] == "Basic c2hpcHBlcjpyb3RhdGVk"  # shipper:rotated
        assert h["X-Api-Key"] == "k-222"
        _, _, status = p.get("/")
        _, _, metrics = p.get("/metrics")
        assert p.stop() == 0
    assert receiver.messages() == ["one", "two"]
    for secret in ("pa55word", "rotated", "k-111", "k-222", "c2hpcHBlcjpyb3RhdGVk"):
        assert secret not in p.stderr() and secret.encode() not in status + metrics


def test_client_certificate_from_files_reread_on_change(
    tmp_path: Path, logs: Path, tls_files: TLSFiles
) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls_files.ca))
    ctx.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED  # no valid client certificate, no delivery
    r = Receiver(ssl_ctx=ctx).start()
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    # First a certificate the receiver refuses (made for serving, not for clients).
    cert.write_bytes(tls_files.server_cert.read_bytes())
    key.write_bytes(tls_files.server_key.read_bytes())
    try:
        (logs / "a.log").write_text("mtls\n")
        with logship(
            tmp_path,
            r.url,
            "--ca-file",
            str(tls_files.ca),
            "--client-cert-file",
            str(cert),
            "--client-key-file",
            str(key),
        ) as p:
            p.wait_ready()
            wait_until(lambda: p.metric("podkit_logship_retries_total") >= 1, 20)
            assert r.count() == 0
            # The Secret is rotated: the next connection presents the new certificate.
            key.write_bytes(tls_files.client_key.read_bytes())
            cert.write_bytes(tls_files.client_cert.read_bytes())
            wait_count(r, 1, proc=p)
            assert p.stop() == 0
        assert r.messages() == ["mtls"]
    finally:
        r.stop()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--sink", "stdout://", "--username", "u", "--password-file", "/p"], "--username"),
        (["--sink", "http://h/x", "--username", "u"], "--password-file"),
        (["--sink", "http://h/x", "--client-cert-file", "/c"], "--client-cert-file"),
        (["--sink", "stdout://", "--loki-label-keys", "a"], "--loki-label-keys"),
        (["--sink", "http://h/x", "--redact", "nosuch"], "--redact"),
        (["--sink", "http://h/x", "--drop", "("], "--drop"),
        (["--sink", "http://h/x", "--sample", "x=0"], "--sample"),
        (["--sink", "http://h/x", "--header-file", "bad name=/f"], "--header-file"),
    ],
)
def test_new_usage_errors_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "logship", "--path", "/x/*.log", *args],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert flag in res.stderr.decode() and b"Traceback" not in res.stderr


def test_zstd_refused_clearly_without_the_package(tmp_path: Path) -> None:
    # A zstandard that cannot be imported, put first on the path.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "zstandard.py").write_text("raise ImportError('not installed')\n")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "podkit",
            "logship",
            "--path",
            "/x/*.log",
            "--sink",
            "http://127.0.0.1:9/x",
            "--compress",
            "zstd",
        ],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(fake)},
    )
    assert res.returncode == 2
    assert b"--compress zstd: the zstandard package is not installed" in res.stderr


# -- processing ------------------------------------------------------------------------------


def test_drop_keep_redact_sample_before_batching_and_counted(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    (logs / "app.log").write_text(
        "GET /healthz 200\n"
        "login alice@example.com Authorization: Bearer eyJhbGciOi.abc-def\n"
        "key AKIAABCDEFGHIJKLMNOP card 4111 1111 1111 1111 not 1234 5678 9012 3456\n"
        "debug noise\n"
        "order 42 ssn=123-45-6789\n"
    )
    (logs / "noisy.log").write_text("".join(f"n{i}\n" for i in range(100)))
    with logship(
        tmp_path,
        receiver.url,
        "--drop",
        "healthz",
        "--keep",
        "^(login|key|order|n)",
        "--redact",
        "email",
        "--redact",
        "bearer",
        "--redact",
        "aws-access-key",
        "--redact",
        "card",
        "--redact",
        r"ssn=\d{3}-\d{2}-\d{4}",  # NAME=REGEX: the name is ssn
        "--sample",
        "*/noisy.log=10",
    ) as p:
        p.wait_ready()
        wait_count(receiver, 3 + 10, proc=p)
        assert series(p, "podkit_logship_processed_lines_total", action="drop") == 1
        assert series(p, "podkit_logship_processed_lines_total", action="keep") == 1
        assert series(p, "podkit_logship_processed_lines_total", action="sample") == 90
        assert series(p, "podkit_logship_processed_lines_total", action="redact:email") == 1
        assert series(p, "podkit_logship_processed_lines_total", action="redact:card") == 1
        assert series(p, "podkit_logship_processed_lines_total", action="redact:ssn") == 1
        assert p.stop() == 0
    got = [m for m in receiver.messages() if not m.startswith("n")]
    assert got == [
        "login *** Authorization: Bearer ***",
        "key *** card *** not 1234 5678 9012 3456",  # not a Luhn number: kept
        "order 42 ssn=***",
    ]
    assert [m for m in receiver.messages() if m.startswith("n")] == [
        f"n{i}" for i in range(0, 100, 10)
    ]


def test_redaction_reaches_elasticsearch_with_the_same_ids(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    (logs / "a.log").write_text("keep me\nmail bob@example.org\n")
    url = receiver.url.replace("http://", "elasticsearch+http://") + "/logs"
    with logship(tmp_path, url, "--redact", "email", "--drop", "^keep") as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.es_docs) >= 1, 20, 0.05, what="1 ES document")
        assert p.stop() == 0
    assert [d["message"] for d in receiver.es_docs] == ["mail ***"]
    assert len(receiver.es_ids) == 1 and not receiver.bad_requests


# -- the pod's identity --------------------------------------------------------------------


def test_pod_identity_from_env_and_podinfo_files(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    podinfo = tmp_path / "podinfo"
    podinfo.mkdir()
    (podinfo / "labels").write_text('app="web"\ntier="front"\n')
    (podinfo / "annotations").write_text(
        'owner="team-a"\nkubectl.kubernetes.io/last-applied-configuration="' + "x" * 5000 + '"\n'
    )
    (logs / "a.log").write_text("hello\n")
    env = {"POD_NAME": "web-0", "POD_NAMESPACE": "prod", "NODE_NAME": "n1", "CONTAINER_NAME": "app"}
    with logship(tmp_path, receiver.url, "--podinfo-dir", str(podinfo), env=env) as p:
        p.wait_ready()
        wait_count(receiver, 1, proc=p)
        assert p.stop() == 0
    rec = receiver.records[0]
    assert rec["labels"] == {"pod": "web-0", "namespace": "prod", "node": "n1", "container": "app"}
    assert rec["pod_labels"] == {"app": "web", "tier": "front"}
    assert rec["pod_annotations"] == {"owner": "team-a"}  # the 5 KB one is left out


def test_loki_labels_from_pod_labels(tmp_path: Path, logs: Path, receiver: Receiver) -> None:
    podinfo = tmp_path / "podinfo"
    podinfo.mkdir()
    (podinfo / "labels").write_text('app="web"\n')
    (logs / "a.log").write_text("hello\n")
    url = receiver.url.replace("http://", "loki+http://")
    with logship(
        tmp_path,
        url,
        "--podinfo-dir",
        str(podinfo),
        "--loki-label-keys",
        "pod_labels.app",
        env={"POD_NAME": "web-0"},
    ) as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.loki) >= 1, 20, 0.05, what="1 Loki entry")
        assert p.stop() == 0
    e = receiver.loki[0]
    assert e["labels"]["app"] == "web" and e["labels"]["pod"] == "web-0"
    assert e["line"] == "hello"  # the pod's labels are labels, not part of the line


# -- stdout off the event loop ----------------------------------------------------------------


def test_stdout_pipe_not_read_keeps_the_admin_server_responsive(tmp_path: Path, logs: Path) -> None:
    (logs / "a.log").write_text(lines(0, 20000))  # ~2 MB: far more than a pipe holds
    port = free_port()
    cmd = [sys.executable, "-m", "podkit", "logship", "--admin-addr", f"127.0.0.1:{port}"]
    cmd += ["--path", str(logs / "*.log"), "--sink", "stdout://"]
    cmd += ["--state-dir", str(tmp_path / "state"), *FAST, "--log-level", "info"]

    def get(path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def lines_total() -> float:
        _, body = get("/metrics")
        return sum(
            float(ln.rsplit(" ", 1)[1])
            for ln in body.decode().splitlines()
            if ln.startswith("podkit_logship_lines_total{")
        )

    with open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, env={**os.environ, **NO_POD}
        )
        try:
            assert proc.stdout is not None
            wait_until(lambda: get("/readyz")[0] == 200, 30, 0.1, what="ready")
            # Nobody reads the pipe: the writer thread blocks once the pipe is full
            # (64 KiB), with most of the file still to go.
            for _ in range(20):
                t0 = time.monotonic()
                code, _ = get("/readyz")
                assert code == 200 and time.monotonic() - t0 < 1.0
            assert lines_total() < 20000  # it really is blocked on the pipe
            got = [proc.stdout.readline() for _ in range(20000)]
            assert [json.loads(x)["message"] for x in got] == expected(0, 20000)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
