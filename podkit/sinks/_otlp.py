"""The OTLP/HTTP logs sink (the encoding is `podkit.sinks_otlp`)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..options import UsageError
from ._base import Outcome, register_sink
from ._batch import Batch, record_time_ns
from ._http import _HTTPSink

log = logging.getLogger("podkit.sinks")  # one logger for every sink, as before the split

#: Values of `--otlp-format`.
OTLP_FORMATS = ("protobuf", "json")


@register_sink
class OTLPSink(_HTTPSink):
    """OTLP/HTTP logs: an ExportLogsServiceRequest, protobuf (default) or JSON.

    Each record is a LogRecord (`podkit.sinks_otlp` builds them with the
    official `opentelemetry-proto` messages, imported only when such a sink is
    configured); `resource` holds the resource attributes (the pod's identity).
    A 200 with `partial_success.rejected_log_records` is logged, not retried:
    the collector has said it will never take those.
    """

    schemes = ("otlp+http", "otlp+https")

    def _configure_target(self, options: dict[str, Any]) -> None:
        self.format = options.pop("otlp_format", None) or "protobuf"
        if self.format not in OTLP_FORMATS:
            raise UsageError(f"--otlp-format: {self.format!r} is not one of protobuf, json")
        self.resource: dict[str, str] = dict(options.pop("resource", None) or {})
        try:
            from .. import sinks_otlp
        except ImportError as exc:
            raise UsageError(
                f"--sink {self.safe_url}: OTLP needs the opentelemetry-proto package "
                f"(pip install 'podkit[logship]'): {exc}"
            ) from None
        self._otlp = sinks_otlp
        self.content_type = (
            "application/json" if self.format == "json" else "application/x-protobuf"
        )
        parts = urlsplit(self.target)
        path = parts.path if parts.path not in ("", "/") else "/v1/logs"
        self.target = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self._tcache: dict[str, int] = {}

    def encode(self, batch: Batch) -> bytes:
        records = batch.records()
        times = [record_time_ns(r.get("time"), self._tcache) for r in records]
        if len(self._tcache) > 10000:
            self._tcache.clear()
        body: bytes = self._otlp.encode(records, times, self.resource, self.format)
        return body

    async def _attempt(self, batch: Batch) -> Outcome:
        status, headers, body = await self._post(self.target, self._body(batch), self.content_type)
        if 200 <= status < 300:
            rejected, why = self._otlp.partial_success(body, self.format)
            if rejected:
                self._ratelimit.log(
                    "otlp-partial",
                    logging.WARNING,
                    "collector rejected some log records",
                    sink=self.safe_url,
                    rejected=rejected,
                    error=why[:300],
                )
            return Outcome()
        return self._whole(batch, status, headers, body)
