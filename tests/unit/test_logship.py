"""logship's record encoding: the fast path must be exactly what json would write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from podkit.sidecars.logship import LogShip

from podkit.options import UsageError
from podkit.runner import configure
from podkit.tailer import Chunk

TRICKY = [
    "plain",
    "",
    'quote " and \\ backslash \\", "',
    "tab\tnul\x00 bell\x07 del\x7f",
    "unicode é ü ☃ \U0001f600 \u2028 \u2029",
    "replacement \ufffd",
    '{"not": "parsed without --parse json"}',
]


@pytest.fixture(autouse=True)
def _no_downward_api(monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine running the tests may itself be a pod (CONTAINER_NAME set).
    for var in ("POD_NAME", "POD_NAMESPACE", "NODE_NAME", "CONTAINER_NAME"):
        monkeypatch.delenv(var, raising=False)


def program(*args: str) -> LogShip:
    p = configure(LogShip, ["--path", "/x/*.log", "--sink", "stdout://", *args], env={})
    assert isinstance(p, LogShip)
    return p


def chunk(texts: list[str], truncated: frozenset[int] = frozenset()) -> Chunk:
    return Chunk(None, '/logs/a "b".log', list(texts), truncated, 1_795_672_800_123_456_789, 0, 0)


def encode(p: LogShip, c: Chunk) -> bytes:
    return p.record_shape().encode(c.texts, c.truncated, c.path, c.read_time_ns)


def decode(data: bytes) -> list[dict[str, object]]:
    text = data.decode()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.split("\n")[:-1]]


def test_fast_path_records_are_valid_json_line_by_line() -> None:
    p = program("--label", "app=web")
    recs = decode(encode(p, chunk(TRICKY, frozenset({2}))))
    assert [r["message"] for r in recs] == TRICKY
    assert recs[0] == {
        "time": "2026-11-26T06:00:00.123456789Z",
        "message": "plain",
        "file": '/logs/a "b".log',
        "labels": {"app": "web"},
    }
    assert [r.get("truncated", False) for r in recs] == [i == 2 for i in range(len(TRICKY))]


def test_dropped_lines_leave_the_truncated_marks_on_the_right_records() -> None:
    from podkit.sidecars.logship.process import Processor
    from podkit.sidecars.logship.route import Limits, Route

    p = program("--drop", "^b$")
    route = Route(
        "x",
        None,  # type: ignore[arg-type]  # no sink or tailer: only encode_chunk is used
        None,  # type: ignore[arg-type]
        p.record_shape(),
        Processor(drop=["^b$"]),
        Limits(10, 1000, 1.0),
        lambda *a: None,
    )
    route.sink = type("S", (), {"wants_ids": False})()  # type: ignore[assignment]
    data, _, truncated = route.encode_chunk(chunk(["a", "b", "c", "d"], frozenset({0, 3})))
    assert truncated == [0, 2]
    assert [(r["message"], r.get("truncated")) for r in decode(data)] == [
        ("a", True),
        ("c", None),
        ("d", True),
    ]


def test_parse_json_merges_objects_and_keeps_podkit_fields() -> None:
    p = program("--parse", "json")
    lines = ['{"level":"info","time":"app-time","n":1}', "not json", "[1,2]", '{"broken"']
    recs = decode(encode(p, chunk(lines, frozenset({1}))))
    assert recs[0]["level"] == "info" and recs[0]["n"] == 1 and "message" not in recs[0]
    assert recs[0]["app_time"] == "app-time" and recs[0]["time"].startswith("2026-")
    assert recs[1] == {**recs[1], "message": "not json", "truncated": True}
    assert recs[2]["message"] == "[1,2]" and recs[3]["message"] == '{"broken"'


@pytest.mark.parametrize("env", [{"POD_NAME": "p", "POD_NAMESPACE": "ns", "NODE_NAME": "n"}])
def test_downward_api_labels(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    p = program("--label", "pod=overridden")
    assert p.labels == {"pod": "overridden", "namespace": "ns", "node": "n"}


def test_sinks_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "path: ['/x/*.log']\n"
        "loki-label-keys: [level]\n"
        "sinks:\n"
        "  - http://a/x\n"
        "  - {name: errs, url: 'loki+http://l:3100', match: {level: error}, loki_tenant: t}\n"
        "  - {url: 'http://b/y', path: ['/y/*.log'], compress: gzip, request-timeout: 5s}\n"
    )
    args = ["--config", str(cfg), "--state-dir", str(tmp_path / "s"), "--sink", "stdout://"]
    p = configure(LogShip, args, env={})
    assert isinstance(p, LogShip)
    specs = {s["name"]: s for s in p._specs}
    assert list(specs) == ["stdout", "http", "errs", "http-4"]
    assert specs["stdout"]["state_dir"] == str(tmp_path / "s")  # where a single sink keeps it
    assert specs["errs"]["state_dir"] == str(tmp_path / "s" / "sinks" / "errs")
    assert specs["errs"]["options"]["tenant"] == "t"
    assert specs["errs"]["options"]["label_keys"] == ["level"]  # the flag's value
    assert specs["errs"]["match"] == {"level": "error"}
    assert specs["http-4"]["paths"] == ["/y/*.log"] and specs["http"]["paths"] == ["/x/*.log"]
    assert specs["http-4"]["options"]["compress"] == "gzip"
    assert specs["http-4"]["options"]["timeout"] == 5.0
    assert specs["http"]["options"]["dead_letter"] == str(
        tmp_path / "s" / "sinks" / "http" / "dead-letter.ndjson"
    )


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ("{url: 'stdout://', compress: gzip}", "sinks: stdout: compress does not fit"),
        ("{url: 'http://a/x', colour: red}", "sinks[0]: unknown key(s) colour"),
        ("{name: 'a b', url: 'http://a/x'}", "sink name 'a b'"),
        ("{url: 'http://a/x', username: u}", "sinks: http: --username and --password-file"),
        ("{name: x}", "sinks[0]: expected a mapping with a url"),
        ("{url: 'http://a/x', compress: lz4}", "sinks: http: compress: 'lz4' is not one of"),
    ],
)
def test_bad_sinks_entries_name_the_entry(tmp_path: Path, entry: str, error: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"path: ['/x/*.log']\nsinks:\n  - {entry}\n")
    with pytest.raises(UsageError) as exc:
        configure(LogShip, ["--config", str(cfg)], env={})
    assert error in str(exc.value)


def test_path_may_be_left_out_when_every_sinks_entry_names_its_own(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "sinks:\n"
        "  - {url: 'http://a/x', path: '/a/*.log'}\n"
        "  - {url: 'http://b/y', path: ['/b/*.log', '/c/*.log']}\n"
    )
    p = configure(LogShip, ["--config", str(cfg), "--state-dir", str(tmp_path / "s")], env={})
    assert isinstance(p, LogShip)
    assert [s["paths"] for s in p._specs] == [["/a/*.log"], ["/b/*.log", "/c/*.log"]]


@pytest.mark.parametrize(
    ("args", "config", "error"),
    [
        (["--sink", "stdout://"], "", "--sink: no files to follow: give --path"),
        (
            [],
            "sinks:\n  - {url: 'http://a/x', path: '/a/*.log'}\n  - {name: b, url: 'http://b/y'}\n",
            "sinks: b: no files to follow: give --path",
        ),
    ],
)
def test_no_path_anywhere_is_a_clear_error(
    tmp_path: Path, args: list[str], config: str, error: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config or "{}\n")
    with pytest.raises(UsageError) as exc:
        configure(LogShip, ["--config", str(cfg), *args], env={})
    assert error in str(exc.value)


def test_the_tailer_is_configured_from_the_declared_options(tmp_path: Path) -> None:
    p = program(
        "--state-dir",
        str(tmp_path),
        "--read-from",
        "tail",
        "--max-line-bytes",
        "1KiB",
        "--multiline-start",
        "^x",
        "--multiline-timeout",
        "2s",
        "--buffer-max-bytes",
        "2MiB",
        "--poll-interval",
        "250ms",
        "--checkpoint-interval",
        "1s",
        "--partial-flush-timeout",
        "7s",
        "--exclude",
        "/x/b.log",
        "--follow-symlinks",
    )
    cfg = p.tailing.config(p.joining, paths=["/y/*.log"])
    assert cfg.paths == ["/y/*.log"] and cfg.exclude == ["/x/b.log"]
    assert (cfg.state_dir, cfg.read_from, cfg.max_line_bytes) == (str(tmp_path), "tail", 1024)
    assert (cfg.multiline_start, cfg.multiline_max_lines, cfg.multiline_timeout) == ("^x", 500, 2)
    assert (cfg.max_buffer_bytes, cfg.poll_interval, cfg.checkpoint_interval) == (2 << 20, 0.25, 1)
    assert cfg.partial_flush_timeout == 7 and cfg.follow_symlinks


def test_state_dir_default_is_logships_own() -> None:
    assert program().tailing.state_dir == "/var/lib/podkit/logship"


@pytest.mark.parametrize(
    ("kind", "reason", "last_error", "want_reason", "want_text"),
    [
        ("retry", "token", "cannot read credential file /t: Permission denied",
         "sink_credentials", "sink http (http://a/x): cannot read credential file /t"),
        ("retry", "dead_letter_write", "cannot write dead-letter file /d: No space",
         "dead_letter", "sink http (http://a/x): cannot write dead-letter file /d"),
        ("dead_letter", "http_400", None, "sink_refused", "sink http: refused 3 record(s)"),
    ],
)  # fmt: skip
def test_sink_failures_are_recorded_for_the_status_page(
    kind: str, reason: str, last_error: str | None, want_reason: str, want_text: str
) -> None:
    from podkit.sinks import open_sink

    p = program()
    p._declare_metrics()
    sink = open_sink("http://a/x")
    hook = p._sink_events("http", sink)
    sink.reason, sink.last_error = reason, last_error
    hook(kind, 3)
    err = p.recorded_error
    assert err is not None and err["reason"] == want_reason
    assert err["message"].startswith(want_text), err["message"]
