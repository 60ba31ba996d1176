"""The Elasticsearch _bulk sink."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..options import UsageError
from ._base import Outcome, Retry, _retryable_status, register_sink
from ._batch import Batch, _dumps
from ._http import _HTTPSink


@register_sink
class ElasticsearchSink(_HTTPSink):
    """The _bulk API with `create` actions; every item's result is read.

    2xx and 409 (already there: a redelivered duplicate) are delivered;
    429 and 5xx items are sent again; other 4xx items are dead-lettered.

    A 409 means "a duplicate" only because each action names the document's
    `_id` (`Batch.ids`: derived from the file's identity, the line's offset and
    its text), so a batch sent again after a crash collides with what the first
    attempt stored instead of being stored twice. Without ids (a producer that
    has none) Elasticsearch picks random ids and a redelivery is stored twice.
    """

    schemes = ("elasticsearch+http", "elasticsearch+https")
    wants_ids = True
    action = b'{"create":{}}'
    # The action line naming a 40-hex `_id` (logship's ids), and its newline.
    record_overhead = len(b'{"create":{"_id":""}}\n') + 40

    def _configure_target(self, options: dict[str, Any]) -> None:
        parts = urlsplit(self.target)
        index = parts.path.strip("/")
        if not index or "/" in index:
            raise UsageError(
                f"--sink {self.safe_url}: name the index: elasticsearch+http://HOST:PORT/INDEX"
            )
        self.index = index
        self.target = urlunsplit((parts.scheme, parts.netloc, f"/{index}/_bulk", parts.query, ""))

    def encode(self, batch: Batch) -> bytes:
        nd = batch.ndjson()
        if not nd:
            return b""
        if batch.ids is not None:
            docs = nd[:-1].split(b"\n")
            out: list[bytes] = []
            for i, doc in zip(batch.ids, docs, strict=True):
                out.append(b'{"create":{"_id":' + _dumps(i).encode() + b"}}")
                out.append(doc)
            return b"\n".join(out) + b"\n"
        sep = b"\n" + self.action + b"\n"
        # JSON documents never hold a raw newline, so this interleaves the actions safely.
        return self.action + b"\n" + nd[:-1].replace(b"\n", sep) + b"\n"

    async def _attempt(self, batch: Batch) -> Outcome:
        status, headers, body = await self._post(self.target, self._body(batch), self.content_type)
        if not 200 <= status < 300:
            return self._whole(batch, status, headers, body)
        # A malformed response (a proxy's page, a truncated body) cannot say
        # which documents were stored: send the batch again. With ids, what was
        # stored answers 409 and counts as delivered, so nothing is stored twice.
        try:
            resp = json.loads(body)
        except (ValueError, RecursionError):
            raise Retry(f"HTTP {status} with a body that is not JSON") from None
        if not isinstance(resp, dict) or not isinstance(resp.get("errors"), bool):
            raise Retry("bulk response is not a JSON object with an `errors` flag")
        if not resp["errors"]:
            return Outcome()
        items = resp.get("items")
        if not isinstance(items, list) or len(items) != len(batch):
            raise Retry("bulk response items do not match the request")
        out = Outcome()
        for i, item in enumerate(items):
            res: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            st = res.get("status") if isinstance(res, dict) else 0
            if not isinstance(st, int) or isinstance(st, bool):
                st = 0  # not a status: a malformed response, never a crash
            if 200 <= st < 300 or st == 409:
                continue
            err = res.get("error") if isinstance(res, dict) else None
            text = _dumps(err) if err is not None else f"status {st}"
            if st == 0 or _retryable_status(st):
                # 0: an item without a status (a malformed response): send it again.
                out.retry.append(i)
                out.retry_reason = f"bulk item status {st}: {text[:200]}"
            else:
                out.rejected.append((i, st, text))
        return out
