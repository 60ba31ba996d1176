"""An HTTP log receiver on loopback that can fail on demand and records every line.

It speaks three wire formats:
- NDJSON batches (any path but the two below): the plain HTTP sink's receiver;
- `POST /loki/api/v1/push`: a FAKE Loki (Loki cannot run here: no binary, no
  network to fetch one). It checks the documented JSON push shape
  (`{"streams": [{"stream": {label: value}, "values": [["<ns>", "<line>"]]}]}`,
  Content-Type application/json, optional gzip) and answers 204 as Loki does;
- `POST /v1/logs`: an OTLP/HTTP logs receiver. It decodes the body with the
  official `opentelemetry-proto` messages (protobuf for
  application/x-protobuf, the OTLP/JSON mapping for application/json) and
  keeps every LogRecord with its resource attributes (`otlp`);
- `POST /<index>/_bulk`: a FAKE Elasticsearch (same reason). It checks the
  documented bulk NDJSON (action line, then document line; final newline)
  and answers the documented response shape
  (`{"took", "errors", "items": [{"create": {"_index", "_id", "status", "error"?}}]}`)
  with per-item statuses the test chooses.

The server runs in its own thread and event loop, so tests stay synchronous.
Failure modes: `refuse()` closes the listening socket (connection refused)
until `accept()`; `fail(status, retry_after=..., times=...)` answers errors.
"""

from __future__ import annotations

import gzip
import json
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.helpers import free_port
from tests.peers.aioapp import AppServer, LoopThread


class Receiver:
    def __init__(self, port: int | None = None, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.ssl_ctx = ssl_ctx
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []  # every NDJSON record accepted
        self.loki: list[dict[str, Any]] = []  # {"labels", "ts", "line", "meta"} per Loki entry
        self.otlp: list[dict[str, Any]] = []  # one per LogRecord, see _otlp
        self.all_headers: list[dict[str, str]] = []  # of every request that was not injected
        self.es_docs: list[dict[str, Any]] = []  # documents the fake ES stored
        self.es_ids: set[str] = set()  # `_id`s given in create actions and stored
        self.es_conflicts = 0  # creates refused 409 because the `_id` was stored already
        self.requests = 0
        self.failed = 0
        self.fail_times: list[float] = []  # time.monotonic() of each injected failure
        self.last_headers: dict[str, str] = {}
        self.bad_requests: list[str] = []  # protocol violations seen (must stay empty)
        self._fail: tuple[int, str | None, int | None] | None = None
        self.es_plan: list[list[int]] = []  # per bulk request: item statuses to answer
        self._loop: LoopThread | None = None  # from start() to stop()
        self._server: AppServer | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_ctx is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    # -- control (from the test thread) ------------------------------------------

    def start(self) -> Receiver:
        app = web.Application(client_max_size=1024**3)
        app.router.add_post("/loki/api/v1/push", self._loki)
        app.router.add_post("/v1/logs", self._otlp)
        app.router.add_post("/{index}/_bulk", self._bulk)
        app.router.add_route("POST", "/{tail:.*}", self._ndjson)
        self._loop = LoopThread()
        # Bodies are inflated in _body (gzip and zstd: aiohttp's own zstd support
        # needs a package this machine need not have).
        self._server = self._loop.serve(
            app,
            self.port,
            ssl_context=self.ssl_ctx,
            reuse_address=True,
            handle_signals=False,
            auto_decompress=False,
        )
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.close()

    def refuse(self) -> None:
        """Close the listening socket: connections are refused until accept()."""
        assert self._loop is not None and self._server is not None, "start() first"
        self._loop.call(self._server.shut())

    def accept(self) -> None:
        assert self._loop is not None and self._server is not None, "start() first"
        self._loop.call(self._server.open())

    def fail(self, status: int, retry_after: str | None = None, times: int | None = None) -> None:
        """Answer `status` (with Retry-After) to the next `times` requests (None: until ok())."""
        with self.lock:
            self._fail = (status, retry_after, times)

    def ok(self) -> None:
        with self.lock:
            self._fail = None

    def messages(self) -> list[str]:
        with self.lock:
            return [r.get("message", "") for r in self.records]

    def count(self) -> int:
        with self.lock:
            return len(self.records)

    # -- server (in the receiver's loop) ---------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        # aiohttp already inflates a gzip Content-Encoding; the header is checked by tests.
        raw = await request.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        if raw[:4] == b"\x28\xb5\x2f\xfd":  # zstd frame (if aiohttp did not inflate it)
            import zstandard

            raw = zstandard.ZstdDecompressor().decompressobj().decompress(raw)
        elif request.headers.get("Content-Encoding") not in (None, "gzip"):
            raise web.HTTPBadRequest(text="unknown Content-Encoding")
        with self.lock:
            self.all_headers.append(dict(request.headers))
        return raw

    def _injected(self) -> web.Response | None:
        with self.lock:
            self.requests += 1
            if self._fail is None:
                return None
            status, retry_after, times = self._fail
            if times is not None:
                times -= 1
                self._fail = (status, retry_after, times) if times > 0 else None
            self.failed += 1
            self.fail_times.append(time.monotonic())
        headers = {"Retry-After": retry_after} if retry_after else {}
        return web.Response(status=status, text=f"injected {status}\n", headers=headers)

    def _violation(self, what: str) -> web.Response:
        with self.lock:
            self.bad_requests.append(what)
        return web.Response(status=400, text=what)

    async def _ndjson(self, request: web.Request) -> web.Response:
        injected = self._injected()
        body = await self._body(request)
        if injected is not None:
            return injected
        self.last_headers = dict(request.headers)
        if request.content_type != "application/x-ndjson":
            return self._violation(f"content type {request.content_type}")
        if body and not body.endswith(b"\n"):
            return self._violation("NDJSON body without final newline")
        recs = [json.loads(line) for line in body.split(b"\n") if line]
        with self.lock:
            self.records.extend(recs)
        return web.Response(status=200, text="ok")

    async def _loki(self, request: web.Request) -> web.Response:
        injected = self._injected()
        body = await self._body(request)
        if injected is not None:
            return injected
        self.last_headers = dict(request.headers)
        if request.content_type != "application/json":
            return self._violation(f"loki content type {request.content_type}")
        try:
            payload = json.loads(body)
            entries = []
            for stream in payload["streams"]:
                labels = stream["stream"]
                assert isinstance(labels, dict) and labels
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())
                for value in stream["values"]:
                    # [ts, line] or [ts, line, {structured metadata}] (push API v1).
                    assert len(value) in (2, 3), value
                    ts, line = value[0], value[1]
                    assert isinstance(ts, str) and ts.isdigit() and len(ts) >= 19, ts
                    assert isinstance(line, str)
                    meta = value[2] if len(value) == 3 else {}
                    assert isinstance(meta, dict) and (meta or len(value) == 2), value
                    assert all(isinstance(v, str) for v in meta.values()), meta
                    entries.append({"labels": labels, "ts": int(ts), "line": line, "meta": meta})
        except (ValueError, KeyError, TypeError, IndexError, AssertionError) as exc:
            return self._violation(f"loki push shape: {exc!r}")
        with self.lock:
            self.loki.extend(entries)
        return web.Response(status=204)

    async def _otlp(self, request: web.Request) -> web.Response:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceRequest,
            ExportLogsServiceResponse,
        )

        injected = self._injected()
        body = await self._body(request)
        if injected is not None:
            return injected
        self.last_headers = dict(request.headers)
        req = ExportLogsServiceRequest()
        try:
            if request.content_type == "application/x-protobuf":
                req.ParseFromString(body)
            elif request.content_type == "application/json":
                json_format.Parse(body, req)
            else:
                return self._violation(f"otlp content type {request.content_type}")
        except Exception as exc:
            return self._violation(f"otlp body: {exc!r}")
        got = []
        for rl in req.resource_logs:
            resource = {kv.key: _any(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    got.append(
                        {
                            "resource": resource,
                            "scope": sl.scope.name,
                            "time": lr.time_unix_nano,
                            "observed": lr.observed_time_unix_nano,
                            "severity_number": int(lr.severity_number),
                            "severity_text": lr.severity_text,
                            "body": _any(lr.body),
                            "attributes": {kv.key: _any(kv.value) for kv in lr.attributes},
                        }
                    )
        with self.lock:
            self.otlp.extend(got)
        resp = ExportLogsServiceResponse()
        if request.content_type == "application/json":
            return web.Response(
                status=200, text=json_format.MessageToJson(resp), content_type="application/json"
            )
        return web.Response(
            status=200, body=resp.SerializeToString(), content_type="application/x-protobuf"
        )

    async def _bulk(self, request: web.Request) -> web.Response:
        injected = self._injected()
        body = await self._body(request)
        if injected is not None:
            return injected
        index = request.match_info["index"]
        if request.content_type not in ("application/x-ndjson", "application/json"):
            return self._violation(f"bulk content type {request.content_type}")
        if not body.endswith(b"\n"):
            return self._violation("bulk body must end with a newline")
        lines = body.split(b"\n")[:-1]
        if len(lines) % 2:
            return self._violation("bulk body: action without document")
        with self.lock:
            plan = self.es_plan.pop(0) if self.es_plan else []
        items = []
        errors = False
        for n in range(len(lines) // 2):
            action = json.loads(lines[2 * n])
            doc = json.loads(lines[2 * n + 1])
            if list(action) != ["create"]:
                return self._violation(f"bulk action {action}")
            status = plan[n] if n < len(plan) else 201
            doc_id = action["create"].get("_id")
            conflict = False
            with self.lock:
                if status == 201 and doc_id is not None and doc_id in self.es_ids:
                    # What Elasticsearch does with a create for an _id it holds.
                    status, conflict = 409, True
                    self.es_conflicts += 1
            item: dict[str, Any] = {"_index": index, "_id": doc_id or f"id{n}", "status": status}
            if status == 201:
                item.update(_version=1, result="created", _seq_no=n, _primary_term=1)
                with self.lock:
                    self.es_docs.append(doc)
                    if doc_id is not None:
                        self.es_ids.add(doc_id)
            else:
                errors = True
                kind = {
                    409: "version_conflict_engine_exception",
                    429: "es_rejected_execution_exception",
                    400: "document_parsing_exception",
                }.get(status, "exception")
                item["error"] = {"type": kind, "reason": f"injected {status}"}
                if status == 409 and not conflict:
                    with self.lock:
                        self.es_docs.append(doc)  # a conflict means it is already stored
            items.append({"create": item})
        return web.json_response({"took": 3, "errors": errors, "items": items})


def _any(v: Any) -> Any:
    """An OTLP AnyValue as Python."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: _any(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [_any(x) for x in v.array_value.values]
    return getattr(v, kind)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()
