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
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
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


def log_record(rec: dict[str, Any], ts: int) -> LogRecord:
    lr = LogRecord(time_unix_nano=ts, observed_time_unix_nano=ts)
    msg = rec.get("message")
    extra = {k: v for k, v in rec.items() if k not in _OWN}
    if isinstance(msg, str):
        lr.body.string_value = msg
    else:
        lr.body.string_value = _dumps(extra)
    text, number = severity(rec)
    if text:
        lr.severity_text = text
        lr.severity_number = number  # type: ignore[assignment]
    attrs = [_kv("log.file.path", rec["file"])] if isinstance(rec.get("file"), str) else []
    if rec.get("truncated"):
        attrs.append(_kv("log.record.truncated", True))
    attrs.extend(_kv(k, v) for k, v in extra.items())
    lr.attributes.extend(attrs)
    return lr


def encode(
    records: list[dict[str, Any]], times: list[int], resource: dict[str, str], fmt: str
) -> bytes:
    """The ExportLogsServiceRequest body for `records` (protobuf or OTLP/JSON)."""
    groups: dict[str, list[LogRecord]] = {}
    labels_of: dict[str, dict[str, Any]] = {}
    for rec, ts in zip(records, times, strict=True):
        raw = rec.get("labels")
        labels: dict[str, Any] = raw if isinstance(raw, dict) else {}
        key = _dumps(labels)
        labels_of.setdefault(key, labels)
        groups.setdefault(key, []).append(log_record(rec, ts))
    req = ExportLogsServiceRequest()
    scope = InstrumentationScope(name="podkit.logship", version=__version__)
    for key, lrs in groups.items():
        attrs = {**resource, **{str(k): v for k, v in labels_of[key].items()}}
        rl = ResourceLogs(resource=Resource(attributes=[_kv(k, v) for k, v in attrs.items()]))
        rl.scope_logs.append(ScopeLogs(scope=scope, log_records=lrs))
        req.resource_logs.append(rl)
    if fmt == "json":
        # OTLP/JSON: the proto3 JSON mapping with enums as integers.
        text: str = json_format.MessageToJson(req, use_integers_for_enums=True, indent=None)
        return text.encode("utf-8")
    body: bytes = req.SerializeToString()
    return body


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
