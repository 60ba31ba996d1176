"""logship as a real subprocess against a receiver on loopback that fails on demand.

Every test checks delivery line by line at the receiver (tests/peers/receiver.py).
Loki and Elasticsearch are fakes there (neither can run on this machine); the
fakes check the documented request shapes and answer the documented responses.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import resource
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import ProgramProcess, missing, rss_bytes, run_program, wait_until
from tests.peers.receiver import Receiver
from tests.peers.tls import TLSFiles

FAST = [
    "--poll-interval",
    "200ms",
    "--checkpoint-interval",
    "100ms",
    "--batch-max-wait",
    "100ms",
    "--retry-max-backoff",
    "1s",
    "--log-level",
    "debug",
]


def logship(tmp: Path, sink: str, *extra: str, env: dict[str, str] | None = None) -> ProgramProcess:
    args = [
        "--path",
        str(tmp / "logs" / "*.log"),
        "--sink",
        sink,
        "--state-dir",
        str(tmp / "state"),
        *FAST,
        *extra,
    ]
    return ProgramProcess("logship", args, tmp=tmp, env={**NO_POD, **(env or {})})


#: The machine running the tests may itself be a pod: no Downward API unless a test sets it.
NO_POD = {"POD_NAME": "", "POD_NAMESPACE": "", "NODE_NAME": "", "CONTAINER_NAME": ""}


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


def lines(a: int, b: int, prefix: str = "line") -> str:
    return "".join(f"{prefix} {i:07d} padding-padding-padding-padding\n" for i in range(a, b))


def expected(a: int, b: int, prefix: str = "line") -> list[str]:
    return [f"{prefix} {i:07d} padding-padding-padding-padding" for i in range(a, b)]


def wait_count(
    r: Receiver, n: int, timeout: float = 60.0, proc: ProgramProcess | None = None
) -> None:
    def done() -> bool:
        if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"logship exited {proc.proc.returncode}:\n{proc.stderr()[-3000:]}")
        return r.count() >= n

    wait_until(done, timeout, 0.05, what=f"{n} records at the receiver (have {r.count()})")


def wait_unique(r: Receiver, n: int, timeout: float = 60.0) -> None:
    """Wait for n distinct messages (redeliveries make the plain count run ahead)."""
    wait_until(lambda: len(set(r.messages())) >= n, timeout, 0.25, what=f"{n} distinct records")


def metric(proc: ProgramProcess, name: str) -> float:
    # podkit.testing's (summed over label sets): an absent series fails the test.
    return proc.metric(name)


@pytest.mark.parametrize("how", ["rename", "copytruncate"])
def test_200k_lines_with_rotation_every_20k(
    tmp_path: Path, logs: Path, receiver: Receiver, how: str
) -> None:
    app = logs / "app.log"
    app.write_text("")
    with logship(tmp_path, receiver.url, "--path", str(logs / "app.log")) as p:
        p.wait_ready()
        fh = open(app, "a")
        for block in range(200):  # 200 blocks of 1000 lines, rotated every 20 blocks
            fh.write(lines(block * 1000, (block + 1) * 1000))
            fh.flush()
            if block % 20 == 19:
                if how == "rename":
                    os.rename(app, logs / f"app.log.{block}")
                    fh.close()
                    fh = open(app, "a")
                else:
                    shutil.copyfile(app, logs / f"app.{block}.old")
                    os.truncate(app, 0)
            # 100k lines/s: a very busy app, but not faster than logship ships. A
            # writer that outruns the shipper by a whole copytruncate generation
            # loses that generation with any tailer (only its copy holds it).
            time.sleep(0.01)
        fh.close()
        wait_count(receiver, 200_000, proc=p)
        # The receiver holds the last batch before logship has read its 200 and counted it.
        wait_until(lambda: metric(p, "podkit_logship_lines_total") == 200_000, 10)
        got = receiver.messages()
        assert len(got) == 200_000, Counter(got).most_common(3)
        assert got == expected(0, 200_000)  # nothing lost, nothing twice, in order
        assert p.stop() == 0


def test_sigkill_five_times_loses_nothing(tmp_path: Path, logs: Path, receiver: Receiver) -> None:
    app = logs / "app.log"
    app.write_text("")
    total = 200_000
    done = threading.Event()

    def writer() -> None:
        with open(app, "a") as fh:
            for block in range(200):
                fh.write(lines(block * 1000, (block + 1) * 1000))
                fh.flush()
                time.sleep(0.02)
        done.set()

    # Checkpoint after every acknowledged batch, so duplicates can only come
    # from batches in flight at each kill.
    extra = ["--batch-max-lines", "2000", "--checkpoint-interval", "0s"]
    t = threading.Thread(target=writer)
    p = logship(tmp_path, receiver.url, *extra).start()
    p.wait_ready()
    t.start()
    kills = 0
    try:
        while kills < 5:
            # Killed mid-stream: once this logship has shipped a batch.
            wait_count(receiver, min(receiver.count() + 2000, total), proc=p)
            p.kill()  # SIGKILL: no drain, no final checkpoint
            kills += 1
            p = logship(tmp_path, receiver.url, *extra).start()
            p.wait_ready()
        t.join()
        wait_count(receiver, total, proc=p)
        wait_unique(receiver, total)
        # A sentinel after the last line: batches go out one after another, so
        # once it is in, no redelivery of an earlier batch is still on its way.
        with open(app, "a") as fh:
            fh.write("sentinel\n")
        wait_until(lambda: "sentinel" in receiver.messages(), 30, 0.05, what="the sentinel")
        got = Counter(m for m in receiver.messages() if m != "sentinel")
        want = expected(0, total)
        missing = [m for m in want if m not in got]
        assert not missing, f"{len(missing)} lines lost, first {missing[:3]}"
        assert set(got) == set(want)
        dups = sum(n - 1 for n in got.values())
        # At most the batches in flight at each kill: the one being sent, the one
        # queued behind it, and one acknowledged but not yet checkpointed.
        assert dups <= kills * 3 * 2000, dups
        assert max(got.values()) <= 1 + kills
        assert p.stop() == 0
    finally:
        p.stop()


def test_sink_down_then_503_retry_after_then_recovers(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    """The issue's scenario (refused, then 503 with Retry-After, then recovery).

    The outage lasts as long as it takes to write more than --buffer-max-bytes,
    see reading pause and /healthz report the stall (about 12 s), not the
    issue's nominal 30 s: after reading paused nothing changes, so waiting
    longer proves nothing more and costs CI time.
    """
    app = logs / "app.log"
    app.write_text("")
    receiver.refuse()
    buffer_max = 16 * 1024 * 1024  # the default --buffer-max-bytes
    with logship(tmp_path, receiver.url, "--retry-max-backoff", "2s", "--stall-timeout", "4s") as p:
        p.wait_ready()
        peak = 0
        n = 0
        t0 = time.monotonic()
        with open(app, "a") as fh:
            while n < 500_000:  # 22.5 MB: well over --buffer-max-bytes (16 MiB)
                fh.write(lines(n, n + 20_000))
                fh.flush()
                n += 20_000
                peak = max(peak, rss_bytes(p.pid))
                time.sleep(0.25)

        def paused() -> bool:
            nonlocal peak
            peak = max(peak, rss_bytes(p.pid))
            return p.get("/healthz")[0] == 503

        wait_until(paused, 30, 0.25, what="/healthz reporting the stall")
        down_for = time.monotonic() - t0
        assert receiver.count() == 0
        assert metric(p, "podkit_logship_retries_total") >= 3
        assert metric(p, "podkit_logship_lag_bytes") > buffer_max
        status = json.loads(p.get("/")[2])
        assert "Connect" in (status["sink"]["last_error"] or "")
        # Reading paused at --buffer-max-bytes (one read's chunk of slack at most).
        assert status["inflight_bytes"] <= buffer_max + 1024 * 1024, status["inflight_bytes"]
        code, _, why = p.get("/healthz")  # lag has not shrunk for --stall-timeout
        assert code == 503 and b"has not shrunk" in why, why
        # Then 503 with Retry-After 3 (longer than the 2 s backoff cap): honoured.
        receiver.fail(503, retry_after="3")
        receiver.accept()
        wait_until(lambda: receiver.failed >= 2, 20, what="503s answered")
        receiver.ok()
        gaps = [b - a for a, b in itertools.pairwise(receiver.fail_times)]
        assert min(gaps) >= 2.9, gaps

        def caught_up() -> bool:
            nonlocal peak
            peak = max(peak, rss_bytes(p.pid))
            return receiver.count() >= n and len(set(receiver.messages())) >= n

        wait_until(caught_up, 60, 0.5, what=f"{n} distinct records")
        assert peak < 100 * 1024 * 1024, f"RSS peaked at {peak / 2**20:.1f} MiB"
        got = receiver.messages()
        assert sorted(set(got)) == expected(0, n)
        assert metric(p, "podkit_logship_batches_total") > 0
        wait_until(lambda: metric(p, "podkit_logship_lag_bytes") == 0, 10, what="lag 0")
        assert p.get("/healthz")[0] == 200
        assert p.stop() == 0
        print(f"sink down {down_for:.1f} s, peak RSS {peak / 2**20:.1f} MiB")


def test_hostile_input(tmp_path: Path, logs: Path, receiver: Receiver) -> None:
    huge = "H" * (10 * 1024 * 1024)
    (logs / "big.log").write_text(f"before\n{huge}\nafter\n")
    (logs / "bin.log").write_bytes(b"\x00\x01\x02\xff\xfe\n\xc3\x28 bad utf8\n\n\nend\n")
    for i in range(500):
        (logs / f"many{i:03d}.log").write_text(f"many {i}\n")
    doomed = logs / "doomed.log"
    doomed.write_text(lines(0, 50_000, "doomed"))
    with logship(tmp_path, receiver.url, "--dead-letter", str(tmp_path / "dead.ndjson")) as p:
        p.wait_ready()
        os.unlink(doomed)  # deleted while being read: logship holds it open
        wait_count(receiver, 3 + 5 + 500 + 50_000, proc=p)
        recs = {}
        for r in receiver.records:
            recs.setdefault(os.path.basename(r["file"]), []).append(r)
        big = [r["message"] for r in recs["big.log"]]
        assert big[0] == "before" and big[2] == "after"
        assert big[1] == "H" * 256 * 1024 and recs["big.log"][1]["truncated"] is True
        assert [r["message"] for r in recs["bin.log"]] == [
            "\x00\x01\x02\ufffd\ufffd",
            "\ufffd( bad utf8",
            "",
            "",
            "end",
        ]
        assert sum(len(v) for k, v in recs.items() if k.startswith("many")) == 500
        assert [r["message"] for r in recs["doomed.log"]] == expected(0, 50_000, "doomed")
        # Counted when the sink acknowledges the batch, which can be just after
        # the receiver stored it.
        wait_until(lambda: metric(p, "podkit_logship_truncated_lines_total") == 1, 10)
        assert metric(p, "podkit_logship_files_watched") >= 502
        assert p.stop() == 0


def test_sigterm_drains_lines_written_just_before(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    app = logs / "app.log"
    app.write_text("")
    p = logship(tmp_path, receiver.url, "--batch-max-wait", "5s", "--poll-interval", "10s")
    with p:
        p.wait_ready()
        with open(app, "a") as fh:
            fh.write(lines(0, 30_000))
            fh.write("last line without newline")
        (logs / "late.log").write_text("a file created at the last moment\n")
        p.signal(signal.SIGTERM)
        assert p.wait(30) == 0
    got = receiver.messages()
    assert got[:30_000] == expected(0, 30_000) or sorted(got) == sorted(
        [*expected(0, 30_000), "last line without newline", "a file created at the last moment"]
    )
    assert set(got) == {
        *expected(0, 30_000),
        "last line without newline",
        "a file created at the last moment",
    }
    assert len(got) == 30_002
    # A restart resumes after the checkpoint: only new lines are shipped.
    with open(app, "a") as fh:
        fh.write("\nnew after restart\n")
    with logship(tmp_path, receiver.url) as p2:
        p2.wait_ready()
        wait_count(receiver, 30_003, proc=p2)
        # A sentinel after it: once it is in, a line shipped twice would be too.
        with open(app, "a") as fh:
            fh.write("sentinel\n")
        wait_count(receiver, 30_004, proc=p2)
        assert receiver.messages()[30_002:] == ["new after restart", "sentinel"]
        assert p2.stop() == 0


def test_http_options_dead_letter_and_metrics(
    tmp_path: Path, logs: Path, receiver: Receiver, promtool: Any
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    (logs / "a.log").write_text('{"level":"warn","msg":"json line","time":"app"}\nplain\n')
    dead = tmp_path / "dead.ndjson"
    args = [
        "--compress",
        "gzip",
        "--header",
        "X-Team: logs",
        "--bearer-token-file",
        str(token),
        "--parse",
        "json",
        "--label",
        "app=web",
        "--dead-letter",
        str(dead),
    ]
    env = {"POD_NAME": "web-0", "POD_NAMESPACE": "prod", "NODE_NAME": "n1"}
    with logship(tmp_path, receiver.url + "/ingest", *args, env=env) as p:
        p.wait_ready()
        wait_count(receiver, 2, proc=p)
        h = receiver.last_headers
        assert h["Content-Encoding"] == "gzip" and h["X-Team"] == "logs"
        assert h["Authorization"] == "Bearer s3cret-token"
        r0, r1 = receiver.records[:2]
        assert r0["level"] == "warn" and r0["msg"] == "json line" and "message" not in r0
        assert r0["app_time"] == "app" and r0["time"].endswith("Z") and len(r0["time"]) == 30
        assert r0["labels"] == {"app": "web", "pod": "web-0", "namespace": "prod", "node": "n1"}
        assert r1["message"] == "plain" and r1["file"] == str(logs / "a.log")
        # A 400 sends the batch to the dead-letter file; shipping goes on.
        receiver.fail(400, times=1)
        with open(logs / "a.log", "a") as fh:
            fh.write("refused line\n")
        wait_until(lambda: dead.exists() and dead.read_text(), 10, what="dead-letter file")
        entry = json.loads(dead.read_text().splitlines()[0])
        assert entry["status"] == 400 and entry["record"]["message"] == "refused line"
        with open(logs / "a.log", "a") as fh:
            fh.write("accepted again\n")
        wait_count(receiver, 3, proc=p)
        assert receiver.messages()[2] == "accepted again"
        assert metric(p, "podkit_logship_dead_letter_lines_total") == 1
        _, _, body = p.get("/metrics")
        promtool(body)
        for name in (
            "podkit_logship_lines_total",
            "podkit_logship_bytes_total",
            "podkit_logship_batches_total",
            "podkit_logship_retries_total",
            "podkit_logship_dead_letter_lines_total",
            "podkit_logship_truncated_lines_total",
            "podkit_logship_files_watched",
            "podkit_logship_lag_bytes",
            "podkit_logship_last_ack_timestamp_seconds",
        ):
            assert name.encode() in body, name
        assert b"s3cret-token" not in p.get("/")[2] and "s3cret-token" not in p.stderr()
        assert p.stop() == 0


def test_loki_wire_format(tmp_path: Path, logs: Path, receiver: Receiver) -> None:
    (logs / "a.log").write_text("first\nsecond\n")
    sink = "loki+" + receiver.url
    with logship(
        tmp_path, sink, "--label", "app=web", "--tenant", "team-a", env={"POD_NAMESPACE": "prod"}
    ) as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.loki) >= 2, 15, what="loki entries")
        assert receiver.bad_requests == []
        assert receiver.last_headers["X-Scope-OrgID"] == "team-a"
        e0, e1 = receiver.loki[:2]
        assert e0["line"] == "first" and e1["line"] == "second"
        assert e0["labels"] == {
            "app": "web",
            "namespace": "prod",
            "filename": str(logs / "a.log"),
        }
        assert abs(e0["ts"] / 1e9 - time.time()) < 60
        # 429 is retried (Loki's rate limit), then delivered.
        receiver.fail(429, retry_after="1", times=1)
        with open(logs / "a.log", "a") as fh:
            fh.write("third\n")
        wait_until(lambda: len(receiver.loki) >= 3, 15, what="entry after 429")
        assert receiver.loki[2]["line"] == "third"
        assert metric(p, "podkit_logship_retries_total") >= 1
        assert p.stop() == 0


def test_elasticsearch_bulk_mixed_item_statuses(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    dead = tmp_path / "dead.ndjson"
    receiver.es_plan = [[201, 409, 400, 429, 503, 201]]  # the first bulk request's items
    (logs / "a.log").write_text("".join(f"doc{i}\n" for i in range(6)))
    sink = "elasticsearch+" + receiver.url + "/logs-app"
    with logship(tmp_path, sink, "--dead-letter", str(dead), "--batch-max-wait", "1s") as p:
        p.wait_ready()
        wait_until(lambda: len(receiver.es_docs) >= 5, 15, what="documents stored")
        # Every line settled (5 delivered, 1 dead-lettered): nothing more is sent.
        wait_until(lambda: metric(p, "podkit_logship_lines_total") == 5, 10)
        assert receiver.bad_requests == []
        stored = sorted(d["message"] for d in receiver.es_docs)
        # 201 and 409 (already there) are delivered; 429 and 503 were sent again.
        assert stored == ["doc0", "doc1", "doc3", "doc4", "doc5"]
        entry = json.loads(dead.read_text())
        assert entry["status"] == 400 and entry["record"]["message"] == "doc2"
        assert "document_parsing_exception" in entry["error"]
        assert metric(p, "podkit_logship_dead_letter_lines_total") == 1
        assert p.stop() == 0


def test_elasticsearch_redelivery_after_crash_is_409_not_stored_twice(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    """Each create names a deterministic `_id`, so what a crash makes logship send
    again is refused 409 (counted as delivered), not stored a second time."""
    dead = tmp_path / "dead.ndjson"
    sink = "elasticsearch+" + receiver.url + "/logs-app"
    app = logs / "app.log"
    # Unclean lines too (invalid UTF-8, a cut line): their ids must be stable as well.
    first = (
        b"".join(b"first %d\n" % i for i in range(300)) + b"bad \xff\xfe\n" + b"x" * 3000 + b"\n"
    )
    second = b"".join(b"second %d\n" % i for i in range(300))
    app.write_bytes(first)
    # Checkpoint written once at start-up and never again before the kill: the
    # restart reads everything again, in chunks cut differently than before.
    args = ("--dead-letter", str(dead), "--max-line-bytes", "1KiB")
    p = logship(tmp_path, sink, *args, "--checkpoint-interval", "1h").start()
    try:
        p.wait_ready()
        wait_until(lambda: len(receiver.es_docs) >= 302, 20, what="first part stored")
        with open(app, "ab") as fh:
            fh.write(second)
        wait_until(lambda: len(receiver.es_docs) >= 602, 20, what="second part stored")
        p.kill()
    finally:
        p.stop()
    assert receiver.es_conflicts == 0
    with logship(tmp_path, sink, *args) as p:
        p.wait_ready()
        wait_until(lambda: receiver.es_conflicts >= 602, 20, what="redelivery answered 409")
        wait_until(lambda: metric(p, "podkit_logship_lines_total") >= 602, 10)
        assert len(receiver.es_docs) == 602  # nothing stored twice
        assert len({d["message"] for d in receiver.es_docs}) == 602
        assert metric(p, "podkit_logship_dead_letter_lines_total") == 0
        assert not dead.exists()
        assert receiver.bad_requests == []
        assert p.stop() == 0


def test_file_and_stdout_sinks_and_multiline(tmp_path: Path, logs: Path) -> None:
    (logs / "a.log").write_text("Traceback start\n  frame 1\n  frame 2\nnext record\n")
    out = tmp_path / "out.ndjson"
    with logship(
        tmp_path, f"file://{out}", "--multiline-start", r"^\S", "--multiline-timeout", "300ms"
    ) as p:
        p.wait_ready()
        wait_until(lambda: out.exists() and len(out.read_text().splitlines()) >= 2, 10)
        msgs = [json.loads(x)["message"] for x in out.read_text().splitlines()]
        assert msgs == ["Traceback start\n  frame 1\n  frame 2", "next record"]
        assert p.stop() == 0
    # The helper's own --path glob is there too: its directory must exist,
    # or logship is (rightly) not ready, waiting for the volume.
    (tmp_path / "x" / "logs").mkdir(parents=True)
    with logship(tmp_path / "x", "stdout://", "--path", str(logs / "a.log")) as p:
        p.wait_ready()
        wait_until(lambda: len(p.stdout().splitlines()) >= 4, 10)
        assert json.loads(p.stdout().splitlines()[0])["message"] == "Traceback start"
        assert p.stop() == 0


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--sink", "ftp://x"], "--sink"),
        (["--sink", "file:///tmp/x", "--tenant", "t"], "--tenant"),
        (["--sink", "stdout://", "--header", "X: y"], "--header"),
        (["--sink", "stdout://", "--label", "bad label=1"], "--label"),
        (["--sink", "stdout://", "--multiline-start", "(["], "--multiline-start"),
        (["--sink", "elasticsearch+http://127.0.0.1:9200"], "--sink"),
        (["--sink", "stdout://", "--batch-max-bytes", "lots"], "--batch-max-bytes"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    res = run_program("logship", ["--path", "/nonexistent/*.log", *args])
    assert res.returncode == 2
    err = res.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and flag in err, err


def test_unusable_state_dir_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a file where the state directory should be
    state = tmp_path / "file" / "state"
    res = run_program(
        "logship",
        ["--path", "/nonexistent/*.log", "--sink", "stdout://", "--state-dir", str(state)],
    )
    assert res.returncode == 2
    err = res.stderr.decode()
    assert f"podkit logship: error: --state-dir {state}: Not a directory" in err, err
    assert "Traceback" not in err


def test_https_sink_verifies_with_ca_file(tmp_path: Path, logs: Path, tls_files: TLSFiles) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    r = Receiver(ssl_ctx=ctx).start()
    try:
        (logs / "a.log").write_text("over tls\n")
        # Without the CA the certificate is refused: retried, never delivered.
        with logship(tmp_path, r.url, "--shutdown-timeout", "3s") as p:
            p.wait_ready()
            wait_until(lambda: metric(p, "podkit_logship_retries_total") >= 1, 15)
            assert r.count() == 0
            assert "CERTIFICATE_VERIFY_FAILED" in json.loads(p.get("/")[2])["sink"]["last_error"]
            # SIGTERM with the sink refusing: checkpoint, say what is left, exit 1.
            assert p.stop() == 1
            rec = p.wait_log(
                "shutdown deadline: not everything was delivered; it ships after a restart"
            )
            assert rec["undelivered_bytes"] == len("over tls\n")
            # An expected outcome, reported in that one line: no traceback.
            errors = [r["message"] for r in p.records() if r.get("level") == "error"]
            assert errors == [rec["message"]], errors
            assert "Traceback" not in p.stderr()
        with logship(tmp_path, r.url, "--ca-file", str(tls_files.ca)) as p:
            p.wait_ready()
            wait_count(r, 1, proc=p)
            assert r.messages() == ["over tls"]
            assert p.stop() == 0
    finally:
        r.stop()


# -- issue 13: a full disk never tears a record; a refusal loses only what was refused --


def _metric_labelled(proc: ProgramProcess, name: str, **labels: str) -> float:
    """The labelled series' value, summed over their other labels (`sink`); fails
    when no series has these labels."""
    want = [f'{k}="{v}"' for k, v in labels.items()]
    _, _, body = proc.get("/metrics")
    found = []
    for ln in body.decode().splitlines():
        head, _, value = ln.rpartition(" ")
        if head.startswith(name + "{") and all(w in head[len(name) :] for w in want):
            found.append(float(value))
    if not found:
        raise AssertionError(f"no series {name}{{{','.join(want)}}}")
    return sum(found)


def _whole_records(path: Path) -> list[str]:
    """The messages of an NDJSON file; fails on a torn or partial record."""
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), data[-200:]
    return [json.loads(x)["message"] for x in data.splitlines()]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs mounted for the test (CI runs as root)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        missing(f"mounting a tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(path: Path) -> None:
    """Write until the filesystem has not one byte left."""
    with open(path, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break


def test_file_sink_on_a_full_tmpfs_never_tears_a_record(
    tmp_path: Path, logs: Path, tmpfs: Path
) -> None:
    out = tmpfs / "out.ndjson"
    app = logs / "app.log"
    app.write_text(lines(0, 100))
    with logship(tmp_path, f"file://{out}") as p:
        p.wait_ready()
        wait_until(lambda: out.exists() and len(_whole_records(out)) >= 100, 20, what="100")
        _fill(tmpfs / "filler")  # to the last byte: the output's last page still has slack
        with open(app, "a") as fh:
            fh.write(lines(100, 250))
        wait_until(
            lambda: _metric_labelled(p, "podkit_logship_retries_total", reason="disk") >= 2,
            20,
            what="writes failing with ENOSPC",
        )
        assert _whole_records(out) == expected(0, 100)  # no partial line while stuck
        (tmpfs / "filler").unlink()  # space freed
        wait_until(lambda: len(_whole_records(out)) >= 250, 30, what="250 records")
        assert _whole_records(out) == expected(0, 250)  # each exactly once, in order
        assert p.stop() == 0


def test_file_sink_under_rlimit_fsize_never_tears_a_record(tmp_path: Path, logs: Path) -> None:
    out = tmp_path / "out.ndjson"
    app = logs / "app.log"
    app.write_text(lines(0, 100))
    with logship(tmp_path, f"file://{out}", "--log-level", "info") as p:
        p.wait_ready()
        wait_until(lambda: out.exists() and len(_whole_records(out)) >= 100, 20, what="100")
        # Not on a record boundary, so the write that crosses it is short, then EFBIG.
        limit = out.stat().st_size + 5001
        resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        with open(app, "a") as fh:
            fh.write(lines(100, 300))
        wait_until(
            lambda: _metric_labelled(p, "podkit_logship_retries_total", reason="disk") >= 2,
            20,
            what="writes failing with EFBIG",
        )
        got = _whole_records(out)
        assert got == expected(0, len(got)) and out.stat().st_size <= limit
        resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        wait_until(lambda: len(_whole_records(out)) >= 300, 30, what="300 records")
        assert _whole_records(out) == expected(0, 300)
        assert p.stop() == 0


class _Refusing(Receiver):
    """Answers 400 to a body holding the poison record, 413 to one over `limit`
    bytes and 503 to the first two holding the flaky record; records every body
    it received and what it accepted."""

    limit = 3000

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.flaky = 2

    async def _ndjson(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.sizes.append(len(body))
            if b'"message":"flaky"' in body and self.flaky:
                self.flaky -= 1
                return web.Response(status=503, text="try again")
        if b'"message":"poison"' in body:
            return web.Response(status=400, text="invalid record")
        if len(body) > self.limit:
            return web.Response(status=413, text="too large")
        recs = [json.loads(line) for line in body.split(b"\n") if line]
        with self.lock:
            self.records.extend(recs)
        return web.Response(status=200, text="ok")


@pytest.fixture
def refusing() -> Iterator[_Refusing]:
    r = _Refusing().start()
    try:
        yield r
    finally:
        r.stop()


def test_poison_record_and_413_lose_only_the_poison(
    tmp_path: Path, logs: Path, refusing: _Refusing
) -> None:
    """Default configuration (no --dead-letter): the poison record lands in
    STATE_DIR/dead-letter.ndjson, its 99 neighbours are delivered once, and no
    body exceeds --batch-max-bytes."""
    text = expected(0, 100)
    text[37] = "poison"
    text[80] = "flaky"
    (logs / "a.log").write_text("".join(t + "\n" for t in text))
    cap = 4096
    with logship(tmp_path, refusing.url, "--batch-max-bytes", str(cap)) as p:
        p.wait_ready()
        dead = tmp_path / "state" / "dead-letter.ndjson"
        wait_count(refusing, 99, proc=p)
        wait_until(dead.exists, 10, what="the dead-letter file")
        assert refusing.messages() == [t for t in text if t != "poison"]  # once, in order
        [entry] = [json.loads(x) for x in dead.read_text().splitlines()]
        assert entry["record"]["message"] == "poison" and entry["status"] == 400
        assert max(refusing.sizes) <= cap, refusing.sizes
        assert any(refusing.limit < s for s in refusing.sizes)  # some 413s were split
        assert (
            _metric_labelled(p, "podkit_logship_dead_letter_lines_total", reason="bad_request") == 1
        )
        assert (
            _metric_labelled(p, "podkit_logship_dead_letter_lines_total", reason="too_large") == 0
        )
        assert _metric_labelled(p, "podkit_logship_batch_splits_total", reason="too_large") >= 1
        assert _metric_labelled(p, "podkit_logship_batch_splits_total", reason="bad_request") >= 1
        wait_until(lambda: metric(p, "podkit_logship_lines_total") == 99, 10)
        assert refusing.flaky == 0  # the 503s were retried, not dead-lettered
        assert _metric_labelled(p, "podkit_logship_retries_total", reason="http_5xx") == 2
        assert p.stop() == 0


def test_unwritable_dead_letter_file_holds_the_checkpoint(
    tmp_path: Path, logs: Path, refusing: _Refusing
) -> None:
    """The refused record cannot be dead-lettered: nothing is acknowledged past it
    (the checkpoint stays, /healthz reports the stall), and after a restart with a
    writable file it is dead-lettered and nothing was lost."""
    (logs / "a.log").write_text("before\npoison\nafter\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # blocker/dead.ndjson: ENOTDIR, even for root
    dead = blocker / "dead.ndjson"
    args = ["--dead-letter", str(dead), "--stall-timeout", "1s", "--shutdown-timeout", "3s"]
    with logship(tmp_path, refusing.url, *args) as p:
        p.wait_ready()
        wait_until(
            lambda: (
                _metric_labelled(p, "podkit_logship_retries_total", reason="dead_letter_write") >= 2
            ),
            20,
            what="dead-letter writes failing",
        )
        wait_until(lambda: p.get("/healthz")[0] == 503, 10, what="/healthz reporting the stall")
        assert "dead-letter" in json.loads(p.get("/")[2])["sink"]["last_error"]
        assert metric(p, "podkit_logship_lines_total") == 0  # nothing acknowledged
        assert p.stop() == 1  # the shutdown deadline: not everything was delivered
    blocker.unlink()
    blocker.mkdir()
    with logship(tmp_path, refusing.url, *args) as p2:
        p2.wait_ready()
        wait_until(dead.exists, 20, what="the dead-letter file")
        wait_until(lambda: set(refusing.messages()) >= {"before", "after"}, 10, what="both")
        [entry] = [json.loads(x) for x in dead.read_text().splitlines()]
        assert entry["record"]["message"] == "poison"
        assert p2.stop() == 0


def test_stdout_sink_closed_by_its_reader_exits_1_and_loses_nothing(
    tmp_path: Path, logs: Path
) -> None:
    app = logs / "app.log"
    app.write_text("first\n")
    state = tmp_path / "state"
    cmd = [sys.executable, "-m", "podkit", "logship", "--admin-addr", "127.0.0.1:0"]
    cmd += ["--path", str(logs / "*.log"), "--sink", "stdout://", "--state-dir", str(state)]
    cmd += FAST
    with open(tmp_path / "err.log", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["message"] == "first"
        proc.stdout.close()  # the reader goes away (`logship ... | head -1`)
        with open(app, "a") as fh:
            fh.write("second\nthird\n")
        assert proc.wait(30) == 1
    assert "sink closed" in (tmp_path / "err.log").read_text()
    out = tmp_path / "out.ndjson"
    with logship(tmp_path, f"file://{out}") as p:
        p.wait_ready()
        wait_until(lambda: out.exists() and "third" in out.read_text(), 20, what="the rest")
        assert _whole_records(out)[-2:] == ["second", "third"]  # at least once
        assert p.stop() == 0


def test_a_failing_sink_is_the_error_on_the_status_page(
    tmp_path: Path, logs: Path, receiver: Receiver
) -> None:
    """Issue 23: `/` says which sink failed and why, not only the metrics."""
    (logs / "a.log").write_text("one\n")
    receiver.fail(503)
    with logship(tmp_path, receiver.url) as p:
        p.wait_ready()
        wait_until(lambda: receiver.failed >= 1, 20, what="a 503 answered")

        def error() -> dict[str, str] | None:
            found: dict[str, str] | None = json.loads(p.get("/")[2]).get("error")
            return found

        wait_until(lambda: error() is not None, 10, what="the error on /")
        err = error()
        assert err is not None
        assert err["reason"] == "sink"
        assert err["message"].startswith("sink http (")  # the sink's name, then its URL
        assert "HTTP 503" in err["message"] and "retrying" in err["message"]
        receiver.ok()
        wait_count(receiver, 1, proc=p)
