"""OTLP/HTTP logs encoding with the official `opentelemetry-proto` messages.

Imported only by the `otlp+http(s)://` sink, so no other program (and no
`--help`) loads protobuf. A podkit record becomes a LogRecord:

- `time_unix_nano` and `observed_time_unix_nano`: the record's `time` (when
  the line was read);
- `body`: the `message` (a parsed JSON line without one: the other fields as
  JSON);
- `severity_text`/`severity_number`: from the first of `level`, `severity`,
  `lvl`, `loglevel`, `log.level` the record has (`warn` -> WARN, 13, ...);
- attributes: `log.file.path` (the record's `file`), `log.record.truncated`
  for a cut line, and every field parsed from a JSON line;
- resource attributes: the pod's identity (`k8s.pod.name`, ...) plus the
  record's `labels`; records with different labels go in separate
  ResourceLogs.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from . import __version__

#: Record fields that name the severity, in the order they are looked for.
LEVEL_FIELDS = ("level", "severity", "lvl", "loglevel", "log.level")
#: Severity text (lower case) -> OpenTelemetry SeverityNumber.
SEVERITY = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "information": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "err": 17,
    "critical": 21,
    "crit": 21,
    "fatal": 21,
    "alert": 22,
    "emerg": 23,
    "emergency": 23,
    "panic": 24,
}
_OWN = frozenset(
    {"time", "message", "file", "labels", "truncated", "pod_labels", "pod_annotations"}
)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int) and -(2**63) <= v < 2**63:
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=v if isinstance(v, str) else _dumps(v))


def _kv(key: str, v: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(v))


def severity(rec: dict[str, Any]) -> tuple[str, int]:
    for key in LEVEL_FIELDS:
        v = rec.get(key)
        if isinstance(v, str) and v:
            return v, SEVERITY.get(v.strip().lower(), 0)
    return "", 0


def add_log_record(out: Any, rec: dict[str, Any], ts: int, file_attr: dict[str, KeyValue]) -> None:
    """Append `rec` as a LogRecord to the repeated field `out` (built in place:
    a LogRecord made first would be copied in). `file_attr` caches the
    `log.file.path` attribute per path."""
    msg = rec.get("message")
    path = rec.get("file")
    attrs: list[KeyValue] = []
    if isinstance(path, str):
        kv = file_attr.get(path)
        if kv is None:
            kv = file_attr[path] = _kv("log.file.path", path)
        attrs.append(kv)
    if rec.get("truncated"):
        attrs.append(_kv("log.record.truncated", True))
    if rec.keys() <= _OWN and isinstance(msg, str):  # a plain line: the common case
        out.add(
            time_unix_nano=ts,
            observed_time_unix_nano=ts,
            body=AnyValue(string_value=msg),
            attributes=attrs,
        )
        return
    extra = {k: v for k, v in rec.items() if k not in _OWN}
    attrs.extend(_kv(k, v) for k, v in extra.items())
    text, number = severity(rec)
    out.add(
        time_unix_nano=ts,
        observed_time_unix_nano=ts,
        severity_text=text,
        severity_number=number,
        body=AnyValue(string_value=msg if isinstance(msg, str) else _dumps(extra)),
        attributes=attrs,
    )


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]
_fixed64 = struct.Struct("<Q").pack


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte, the length, the bytes."""
    return tag + _varint(len(payload)) + payload


def encode_protobuf(
    records: list[dict[str, Any]], times: list[int], resource: dict[str, str]
) -> bytes:
    """The same bytes as `encode(..., "protobuf")`, written directly for the
    common record (a plain line: a message, its file, maybe `truncated`)
    instead of building a LogRecord message per record: a third of the CPU.
    Other records are built as messages and serialized one by one. Fields go
    in field-number order, as protobuf's own serializer writes them."""
    scope = _field(
        b"\x0a",
        InstrumentationScope(name="podkit.logship", version=__version__).SerializeToString(),
    )
    groups: dict[str, list[bytes]] = {}  # labels as JSON -> ScopeLogs bytes so far
    resources: dict[str, bytes] = {}
    file_attr: dict[str, bytes] = {}
    truncated = _field(b"\x32", _kv("log.record.truncated", True).SerializeToString())
    last: Any = None
    out: list[bytes] = []
    last_ts, head, tail = -1, b"", b""
    for rec, ts in zip(records, times, strict=True):
        raw = rec.get("labels")
        labels: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if last is None or labels != last:
            last, key = labels, _dumps(labels)
            got = groups.get(key)
            if got is None:
                attrs = {**resource, **{str(k): v for k, v in labels.items()}}
                res = Resource(attributes=[_kv(k, v) for k, v in attrs.items()])
                resources[key] = _field(b"\x0a", res.SerializeToString())
                got = groups[key] = [scope]
            out = got
        msg = rec.get("message")
        if rec.keys() <= _OWN and isinstance(msg, str):
            path = rec.get("file")
            attr = b""
            if isinstance(path, str):
                attr = file_attr.get(path, b"")
                if not attr:
                    kv = _kv("log.file.path", path).SerializeToString()
                    attr = file_attr[path] = _field(b"\x32", kv)
            if rec.get("truncated"):
                attr += truncated
            if ts != last_ts:  # a chunk's records share their read time
                last_ts = ts
                head = (b"\x09" + _fixed64(ts)) if ts else b""
                tail = (b"\x59" + _fixed64(ts)) if ts else b""
            text = msg.encode("utf-8", "replace")  # proto strings are UTF-8: no lone surrogate
            n = len(text)
            if n < 0x7E:  # the AnyValue and its string both fit a one-byte length
                lr = b"".join((head, b"\x2a", _SMALL[n + 2], b"\x0a", _SMALL[n], text, attr, tail))
            else:
                body = b"\x0a" + _varint(n) + text
                lr = b"".join((head, b"\x2a", _varint(len(body)), body, attr, tail))
        else:
            one = ScopeLogs()
            add_log_record(one.log_records, rec, ts, {})
            lr = one.log_records[0].SerializeToString()
        n = len(lr)
        out.append((b"\x12" + _SMALL[n] if n < 0x80 else b"\x12" + _varint(n)) + lr)
    parts = []
    for key, scope_logs in groups.items():
        rl = resources[key] + _field(b"\x12", b"".join(scope_logs))
        parts.append(_field(b"\x0a", rl))
    return b"".join(parts)


def encode(
    records: list[dict[str, Any]], times: list[int], resource: dict[str, str], fmt: str
) -> bytes:
    """The ExportLogsServiceRequest body for `records` (protobuf or OTLP/JSON):
    one ResourceLogs per distinct `labels` (the resource: the pod plus them)."""
    if fmt != "json":
        return encode_protobuf(records, times, resource)
    # OTLP/JSON: the proto3 JSON mapping with enums as integers.
    req = build_request(records, times, resource)
    text: str = json_format.MessageToJson(req, use_integers_for_enums=True, indent=None)
    return text.encode("utf-8")


def build_request(records: list[dict[str, Any]], times: list[int], resource: dict[str, str]) -> Any:
    """`records` as an ExportLogsServiceRequest message (what encode_protobuf's
    bytes decode to)."""
    req = ExportLogsServiceRequest()
    scope = InstrumentationScope(name="podkit.logship", version=__version__)
    groups: dict[str, Any] = {}  # labels as JSON -> the ScopeLogs' log_records
    file_attr: dict[str, KeyValue] = {}
    last: Any = None
    out: Any = None
    for rec, ts in zip(records, times, strict=True):
        raw = rec.get("labels")
        labels: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if out is None or labels != last:  # records mostly share their labels
            last, key = labels, _dumps(labels)
            out = groups.get(key)
            if out is None:
                attrs = {**resource, **{str(k): v for k, v in labels.items()}}
                rl = req.resource_logs.add(
                    resource=Resource(attributes=[_kv(k, v) for k, v in attrs.items()])
                )
                out = groups[key] = rl.scope_logs.add(scope=scope).log_records
        add_log_record(out, rec, ts, file_attr)
    return req


def partial_success(body: bytes, fmt: str) -> tuple[int, str]:
    """(rejected log records, the collector's message) from a 2xx response."""
    if not body:
        return 0, ""
    resp = ExportLogsServiceResponse()
    try:
        if fmt == "json":
            json_format.Parse(body, resp, ignore_unknown_fields=True)
        else:
            resp.ParseFromString(body)
    except Exception:  # a collector's odd 2xx body is not a delivery failure
        return 0, ""
    ps = resp.partial_success
    return int(ps.rejected_log_records), ps.error_message
