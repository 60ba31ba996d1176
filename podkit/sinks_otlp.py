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


def encode(
    records: list[dict[str, Any]], times: list[int], resource: dict[str, str], fmt: str
) -> bytes:
    """The ExportLogsServiceRequest body for `records` (protobuf or OTLP/JSON):
    one ResourceLogs per distinct `labels` (the resource: the pod plus them)."""
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
