"""logship's processing (drop, keep, redact, sample, match), the pod's identity
files, and what the OTLP and Loki sinks encode, without a process."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from podkit.sidecars.logship.podinfo import parse_downward_file, read_podinfo
from podkit.sidecars.logship.process import Processor

from podkit.options import UsageError
from podkit.sinks import RecordBatch, open_sink


def run(p: Processor, texts: list[str], path: str = "/l/a.log") -> tuple[list[str], dict[str, int]]:
    counts: dict[str, int] = {}

    def count(what: str, n: int) -> None:
        counts[what] = counts.get(what, 0) + n

    texts = list(texts)
    kept = p.apply(texts, path, count)
    return [texts[i] for i in (kept if kept is not None else range(len(texts)))], counts


def test_builtin_redactions() -> None:
    p = Processor(redact=["bearer", "aws-access-key", "email", "card"])
    got, counts = run(
        p,
        [
            "Authorization: Bearer abc.DEF-123_x/y+z== rest",
            "id AKIAIOSFODNN7EXAMPLE and ASIA1234567890ABCDEF",
            "to: a.b+c@mail.example.co.uk, x@y",
            "visa 4111-1111-1111-1111 amex 378282246310005 order 1234567890123",
        ],
    )
    assert got == [
        "Authorization: Bearer *** rest",
        "id *** and ***",
        "to: ***, x@y",
        "visa *** amex *** order 1234567890123",  # 13 digits failing Luhn: not a card
    ]
    assert counts == {
        "redact:bearer": 1,
        "redact:aws-access-key": 2,
        "redact:email": 1,
        "redact:card": 2,
    }


def test_drop_keep_sample_and_counts() -> None:
    p = Processor(drop=["^DEBUG"], keep=["^(INFO|DEBUG|WARN)"], sample=["*/noisy*=3"])
    got, counts = run(p, ["DEBUG x", "INFO a", "ERROR b", "WARN c"])
    assert got == ["INFO a", "WARN c"] and counts == {"drop": 1, "keep": 1}
    got, counts = run(p, [f"INFO {i}" for i in range(7)], path="/l/noisy.log")
    assert got == ["INFO 0", "INFO 3", "INFO 6"] and counts == {"sample": 4}
    # Per file, and continued across chunks.
    got, _ = run(p, [f"INFO {i}" for i in range(7, 10)], path="/l/noisy.log")
    assert got == ["INFO 9"]


def test_match_routes_by_field() -> None:
    p = Processor(match={"level": "error", "file": "app"}, parse_json=True)
    got, counts = run(
        p, ['{"level":"error"}', '{"level":"info"}', "plain error"], path="/l/app.log"
    )
    assert got == ['{"level":"error"}'] and counts == {"route": 2}
    assert run(Processor(match={"message": "^x"}), ["x1", "y"])[0] == ["x1"]
    assert run(Processor(match={"labels.app": "web"}, labels={"app": "web"}), ["a"])[0] == ["a"]


@pytest.mark.parametrize(
    "kwargs", [{"redact": ["nope"]}, {"redact": ["=x"]}, {"drop": ["("]}, {"sample": ["0"]}]
)
def test_bad_processing_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UsageError):
        Processor(**kwargs)


def test_downward_api_files(tmp_path: Any) -> None:
    assert parse_downward_file('a="1"\nb="x \\"q\\" \\n"\ngarbage\nc=unquoted\n') == {
        "a": "1",
        "b": 'x "q" \n',
        "c": "unquoted",
    }
    (tmp_path / "labels").write_text('app="web"\n')
    info = read_podinfo(str(tmp_path), env={"POD_NAME": "p", "CONTAINER_NAME": "c"})
    assert info.names == {"pod": "p", "container": "c"} and info.labels == {"app": "web"}
    assert info.annotations == {}  # no annotations file: optional
    assert info.resource() == {
        "k8s.pod.name": "p",
        "k8s.container.name": "c",
        "k8s.pod.label.app": "web",
    }
    assert read_podinfo(str(tmp_path / "absent"), env={}).labels == {}


RECS = [
    {"time": "2026-01-01T00:00:00.000000001Z", "message": "m", "file": "/a", "labels": {"x": "1"}},
    {"time": "2026-01-01T00:00:00Z", "level": "ERROR", "n": 2, "file": "/b", "labels": {"x": "2"}},
]


def test_otlp_encoding_with_the_official_protos() -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    sink = open_sink("otlp+https://c:4318", resource={"k8s.pod.name": "p"})
    assert sink.target == "https://c:4318/v1/logs"
    req = ExportLogsServiceRequest.FromString(sink.encode(RecordBatch(RECS)))
    assert len(req.resource_logs) == 2  # one per label set
    a, b = (rl.scope_logs[0].log_records[0] for rl in req.resource_logs)
    attrs = {kv.key: kv.value.string_value for kv in req.resource_logs[0].resource.attributes}
    assert attrs == {"k8s.pod.name": "p", "x": "1"}
    assert a.time_unix_nano == 1767225600000000001 and a.body.string_value == "m"
    assert {kv.key: kv.value.string_value for kv in a.attributes} == {"log.file.path": "/a"}
    assert b.severity_number == 17 and b.severity_text == "ERROR"
    assert json.loads(b.body.string_value) == {"level": "ERROR", "n": 2}
    js = open_sink("otlp+http://c:4318/v1/logs", otlp_format="json")
    assert js.content_type == "application/json"
    assert json.loads(js.encode(RecordBatch(RECS)))["resourceLogs"][0]["scopeLogs"]


def test_loki_stream_bound_moves_labels_to_metadata() -> None:
    events: list[str] = []
    sink = open_sink(
        "loki+http://l:3100",
        label_keys=["level"],
        metadata_keys=["n"],
        max_streams=1,
        on_event=lambda kind, n: events.append(kind),
    )
    body = json.loads(sink.encode(RecordBatch([{**RECS[0], "level": "info"}, RECS[1]])))
    streams = {s["stream"].get("level"): s["values"] for s in body["streams"]}
    assert streams["info"][0][1] == '{"message":"m","file":"/a","level":"info"}'
    assert streams[None][0][2] == {"level": "ERROR", "n": "2"}
    assert events == ["loki_label_overflow"]


def test_help_and_other_sinks_do_not_import_protobuf() -> None:
    code = (
        "import sys\n"
        "from podkit.runner import configure\n"
        "from podkit.sidecars.logship import LogShip\n"
        "configure(LogShip, ['--path', '/x/*.log', '--sink', 'loki+http://l:3100'], env={})\n"
        "assert 'google.protobuf' not in sys.modules, 'protobuf imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "podkit", "logship", "--help"],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0 and b"google.protobuf" not in res.stderr
