"""The OTLP protobuf body written directly is byte for byte what the official
messages serialize to (issue 17: the fast path must change nothing)."""

from __future__ import annotations

from typing import Any

import pytest

from podkit import sinks_otlp

RECORDS: list[dict[str, Any]] = [
    {"time": "t", "message": "plain", "file": "/logs/a.log"},
    {"time": "t", "message": "cut", "file": "/logs/a.log", "truncated": True},
    {"time": "t", "message": "unicode é ☃ \U0001f600 and a long one " + "x" * 300},
    {"time": "t", "message": "labelled", "file": "/logs/b.log", "labels": {"app": "web"}},
    {"time": "t", "message": "", "file": "/logs/b.log", "labels": {"app": "web"}},
    {"time": "t", "message": "parsed", "level": "warn", "user": {"id": 7}, "n": 1.5},
    {"time": "t", "file": "/logs/c.log", "status": 200, "ok": True},  # no message
    {"time": "t", "message": "back to no labels", "file": "/logs/a.log"},
    # Lengths around the one-byte varint limit (127) of the string, its AnyValue
    # and the LogRecord.
    *({"time": "t", "message": "y" * n} for n in (83, 84, 85, 114, 125, 126, 127, 128)),
    {"time": "t", "message": "surrogate \udcff kept", "file": "/logs/a.log"},
]


@pytest.mark.parametrize("ts", [0, 1, 1_795_672_800_123_456_789])
def test_direct_encoding_equals_the_messages(ts: int) -> None:
    resource = {"k8s.pod.name": "p", "k8s.namespace.name": "ns"}
    records = [r for r in RECORDS if "\udcff" not in r.get("message", "")]
    times = [ts + i for i in range(len(records))] if ts else [0] * len(records)
    want = sinks_otlp.build_request(records, times, resource).SerializeToString()
    assert sinks_otlp.encode_protobuf(records, times, resource) == want


def test_a_lone_surrogate_is_replaced_not_an_error() -> None:
    # A proto string must be UTF-8: a collector would refuse the whole request.
    body = sinks_otlp.encode_protobuf([RECORDS[-1]], [1], {})
    assert b"surrogate ? kept" in body


def test_empty_batch() -> None:
    assert sinks_otlp.encode_protobuf([], [], {"a": "b"}) == b""
