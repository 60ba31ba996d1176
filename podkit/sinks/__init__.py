"""Sinks, chosen by URL scheme (Vector-style): where records are delivered.

    stdout://                               NDJSON on standard output
    file:///path                            NDJSON appended to a file
    http://host/path, https://...           NDJSON batches POSTed (application/x-ndjson)
    loki+http://host:port, loki+https://    the Loki push API (/loki/api/v1/push)
    elasticsearch+http://host:port/INDEX    the _bulk API with `create` actions
    otlp+http://host:port/v1/logs, otlp+https://   OTLP/HTTP logs (protobuf or JSON)

    sink = open_sink(url, **options); await sink.start()
    await sink.send(records)                # list[dict] or a Batch; returns once delivered
    await sink.close()

An HTTP-family sink takes its credentials and TLS as the core's option
groups: a program that includes `podkit.http.AuthOptions` and
`TLSClientOptions` passes them whole (`open_sink(url, auth=self.auth,
tls=self.tls)`), and every message names the program's own flags.

The delivery policy is the same for every sink: `send()` returns only when
each record was delivered or dead-lettered. Failures that may heal (refused
connection, timeout, 408, 429, 5xx, a full disk) are retried forever with
exponential backoff and full jitter up to `retry_max_backoff`, honouring
`Retry-After` up to `retry_after_max` (5 minutes: a hostile or mistaken
`Retry-After: 86400` must not stall delivery for a day).

A refusal loses only what was refused. A request refused for its content
(400, 413, 422) is split in halves and each half sent again, down to single
records, so one poison record costs its neighbours a few extra requests, not
their delivery; a single record refused, or any request refused with another
4xx (401, 403, 404: nothing to isolate), or an Elasticsearch item refused with
a 4xx, goes to the dead-letter file, one JSON object per record
(`{"time", "sink", "status", "reason", "error", "record"}`), and delivery goes
on. `max_body_bytes` is a hard cap on the encoded body (before compression):
a batch whose body exceeds it is split before it is sent (a single record
larger than the cap is sent alone). A dead-letter file that cannot be written
is retried like a failed delivery: `send()` does not return, so nothing is
acknowledged and nothing is lost.

Files (the `file://` sink and the dead-letter file) hold whole records only:
a write that fails part-way (ENOSPC, EFBIG from RLIMIT_FSIZE) is cut back to
the last complete record before it is retried.

The package's modules are internal; this one is the public API (what
`from podkit.sinks import ...` names): the policy and the registry are
`_base`, batches `_batch`, whole-record files `_appendfile`, stdout and
file `_local`, the HTTP family's client and the NDJSON sink `_http`, then
one module per protocol (`_loki`, `_elasticsearch`, `_otlp`).
"""

from __future__ import annotations

# `asyncio` stays a name of this package: tests patch `podkit.sinks.asyncio.sleep`.
import asyncio as asyncio

from ._base import (
    REFUSAL_REASONS,
    RETRY_REASONS,
    SPLIT_REASONS,
    EventHook,
    Outcome,
    Retry,
    Sink,
    SinkClosed,
    Sleep,
    open_sink,
    parse_retry_after,
    refusal_reason,
    register_sink,
)
from ._batch import Batch, NdjsonBatch, RecordBatch, as_batch
from ._elasticsearch import ElasticsearchSink
from ._http import AUTH_NAMES, COMPRESSIONS, TLS_NAMES, HTTPSink
from ._local import FileSink, StdoutSink
from ._loki import LOKI_MAX_STREAMS, LokiSink, loki_label_name, record_field
from ._otlp import OTLP_FORMATS, OTLPSink

__all__ = [
    "AUTH_NAMES",
    "COMPRESSIONS",
    "LOKI_MAX_STREAMS",
    "OTLP_FORMATS",
    "REFUSAL_REASONS",
    "RETRY_REASONS",
    "SPLIT_REASONS",
    "TLS_NAMES",
    "Batch",
    "ElasticsearchSink",
    "EventHook",
    "FileSink",
    "HTTPSink",
    "LokiSink",
    "NdjsonBatch",
    "OTLPSink",
    "Outcome",
    "RecordBatch",
    "Retry",
    "Sink",
    "SinkClosed",
    "Sleep",
    "StdoutSink",
    "as_batch",
    "loki_label_name",
    "open_sink",
    "parse_retry_after",
    "record_field",
    "refusal_reason",
    "register_sink",
]
