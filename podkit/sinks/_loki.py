"""The Loki push API sink."""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..options import UsageError
from ._base import Outcome, register_sink
from ._batch import Batch, _dumps, record_time_ns
from ._http import _HTTPSink

#: Record fields that are not the app's: a record with only these is a plain line.
_STANDARD = frozenset(
    {"time", "message", "file", "labels", "truncated", "pod_labels", "pod_annotations"}
)
#: Left out of a record sent as JSON (Loki's line): they are the stream's labels.
_NOT_IN_LINE = ("time", "labels", "pod_labels", "pod_annotations")
#: Default of `--loki-max-streams`: distinct label sets before labels from
#: fields are refused (Loki's own default per-tenant limit is 5,000 streams).
LOKI_MAX_STREAMS = 1000
#: A label set not sent for this long (seconds) no longer counts against
#: `max_streams`: Loki's ingester flushes a stream's chunk after
#: `chunk_idle_period` (30m by default) of silence and then drops the stream
#: from memory, so it no longer counts against Loki's own stream limit either.
#: Without it a node agent that sees pods come and go would overflow for good
#: once `max_streams` label sets had ever existed.
LOKI_STREAM_IDLE = 30 * 60.0
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def record_field(rec: dict[str, Any], key: str) -> Any:
    """A record's field by name; `a.b` also reaches into objects (`labels.app`)."""
    if key in rec:
        return rec[key]
    cur: Any = rec
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def loki_label_name(key: str) -> str:
    """The Loki label a field becomes: its last dotted part, in label characters."""
    name = _LABEL_CHARS.sub("_", key.rsplit(".", 1)[-1])
    return name if name and not name[0].isdigit() else "_" + name


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else _dumps(value)


@register_sink
class LokiSink(_HTTPSink):
    """The Loki push API: JSON streams, one per label set, nanosecond timestamps as strings.

    Stream labels are the record's `labels` plus `filename` (the record's
    `file`) plus the fields named by `label_keys`. The log line is the record's
    `message`; a record with other fields too (parsed JSON) is sent as JSON
    without its time and labels. Fields named by `metadata_keys` go with each
    entry as structured metadata (`[ts, line, {name: value}]`), where a
    high-cardinality value (a trace id, a user id) belongs.

    Labels from fields are bounded: once `max_streams` distinct label sets
    were sent, a record that would open a new one is sent without its field
    labels (their values become structured metadata instead), counted as a
    `loki_label_overflow` event and logged: a runaway label (a request id in
    `--loki-label-keys`) cannot make Loki refuse every push. A label set not
    sent for `stream_idle` seconds (default `LOKI_STREAM_IDLE`, Loki's
    `chunk_idle_period`) is forgotten and frees its place.
    """

    schemes = ("loki+http", "loki+https")
    content_type = "application/json"

    def _configure_target(self, options: dict[str, Any]) -> None:
        self.tenant: str | None = options.pop("tenant", None) or None
        self.static_labels: dict[str, str] = dict(options.pop("labels", None) or {})
        self.label_keys: list[str] = list(options.pop("label_keys", None) or [])
        self.metadata_keys: list[str] = list(options.pop("metadata_keys", None) or [])
        self.max_streams = int(options.pop("max_streams", LOKI_MAX_STREAMS))
        if self.max_streams <= 0:
            raise UsageError("--loki-max-streams: must be positive")
        self.stream_idle = float(options.pop("stream_idle", LOKI_STREAM_IDLE))
        if not self.stream_idle > 0:  # also refuses NaN
            raise UsageError("loki stream_idle: must be positive")
        #: Label set -> when it was last sent, least recently sent first.
        self._streams_seen: OrderedDict[tuple[tuple[str, str], ...], float] = OrderedDict()
        #: Monotonic seconds; a test gives a fake clock.
        self._clock: Callable[[], float] = time.monotonic
        self._now = 0.0
        self.label_overflow = 0
        parts = urlsplit(self.target)
        path = parts.path if parts.path not in ("", "/") else "/loki/api/v1/push"
        self.target = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self._tcache: dict[str, int] = {}

    def _dynamic(self, rec: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """(labels, structured metadata) from the record's chosen fields."""
        labels: dict[str, str] = {}
        for key in self.label_keys:
            v = record_field(rec, key)
            if v is not None:
                labels[loki_label_name(key)] = _scalar(v)
        meta: dict[str, str] = {}
        for key in self.metadata_keys:
            v = record_field(rec, key)
            if v is not None:
                meta[loki_label_name(key)] = _scalar(v)
        if labels:
            seen = tuple(sorted(labels.items()))
            if seen in self._streams_seen:
                self._streams_seen[seen] = self._now
                self._streams_seen.move_to_end(seen)
            else:
                if len(self._streams_seen) >= self.max_streams:
                    self.label_overflow += 1
                    self._event("loki_label_overflow", 1, "max_streams")
                    self._ratelimit.log(
                        "loki-overflow",
                        logging.ERROR,
                        "too many Loki streams; sending records without their field labels",
                        sink=self.safe_url,
                        max_streams=self.max_streams,
                        labels=sorted(labels),
                    )
                    return {}, {**labels, **meta}
                self._streams_seen[seen] = self._now
        return labels, meta

    def _forget_idle(self) -> None:
        """Drop the label sets not sent for `stream_idle`: oldest first, so O(forgotten)."""
        self._now = now = self._clock()
        seen = self._streams_seen
        while seen:
            _key, last = next(iter(seen.items()))
            if now - last < self.stream_idle:
                break
            seen.popitem(last=False)

    def encode(self, batch: Batch) -> bytes:
        streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
        dynamic = bool(self.label_keys or self.metadata_keys)
        if self.label_keys:
            self._forget_idle()
        for rec in batch.records():
            labels = {**self.static_labels}
            lab = rec.get("labels")
            if isinstance(lab, dict):
                labels.update({str(k): str(v) for k, v in lab.items()})
            if "file" in rec:
                labels["filename"] = str(rec["file"])
            meta: dict[str, str] = {}
            if dynamic:
                extra, meta = self._dynamic(rec)
                labels.update(extra)
            key = tuple(sorted(labels.items()))
            ts = record_time_ns(rec.get("time"), self._tcache)
            msg = rec.get("message")
            if isinstance(msg, str) and rec.keys() <= _STANDARD:
                line = msg
            else:
                line = _dumps({k: v for k, v in rec.items() if k not in _NOT_IN_LINE})
            streams.setdefault(key, []).append([str(ts), line, meta] if meta else [str(ts), line])
        if len(self._tcache) > 10000:
            self._tcache.clear()
        payload = {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}
        return _dumps(payload).encode("utf-8", "surrogatepass")

    async def _attempt(self, batch: Batch) -> Outcome:
        extra = {"X-Scope-OrgID": self.tenant} if self.tenant else None
        status, headers, body = await self._post(
            self.target, self._body(batch), self.content_type, extra
        )
        return self._whole(batch, status, headers, body)

    def status(self) -> dict[str, Any]:
        out = super().status()
        if self.label_keys:
            self._forget_idle()
            out.update(streams=len(self._streams_seen), label_overflow=self.label_overflow)
        return out
