"""One sink's pipeline: its own tailer (read and acknowledged offsets, its
checkpoint), processing, batching, delivery and metrics.

Every sink has its own `Route`, so a dead sink never stalls the others: the
files are the buffer, and only the slow sink's tailer waits (its read
position stops at `--buffer-max-bytes` unacknowledged), while the others
read on. Data flow: tailer chunks -> processing (drop, keep, route, sample,
redact) -> batcher (encodes NDJSON records, cuts batches by lines, bytes,
wait) -> sender (one batch in flight; the sink retries until delivered or
dead-lettered) -> ack of every chunk whose last line was in the batch ->
checkpoint. Nothing is checkpointed before the sink acknowledged it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from podkit import rfc3339_ns
from podkit.sinks import NdjsonBatch, Sink
from podkit.tailer import FINGERPRINT_BYTES, Chunk, Tailer

from .process import Processor, app_object

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
#: Fields podkit sets on a record; a parsed JSON line's own keep an `app_` prefix.
RESERVED = ("time", "file", "labels", "pod_labels", "pod_annotations")


class _Batch:
    """A batch being built: encoded records plus the chunks it completes."""

    __slots__ = ("count", "done", "ids", "nbytes", "parts", "raw_bytes", "started", "truncated")

    def __init__(self) -> None:
        self.parts: list[memoryview] = []
        self.ids: list[str] = []  # one per record, when the sink wants ids
        self.count = 0
        self.nbytes = 0  # encoded size of the sink's body (exact for NDJSON)
        self.raw_bytes = 0  # file bytes of the chunks completed by this batch
        self.done: list[Chunk] = []  # chunks whose last line is in this batch
        self.started = 0.0
        self.truncated = 0


def _cut(data: bytes, pos: int, lines: int, room: int, over: int) -> tuple[int, int]:
    """Where to cut `data` (NDJSON, from `pos`) to fit `lines` records in `room` bytes.

    Returns (end, records): records end at a newline, each costing its line
    plus `over` bytes. (pos, 0) when not even one fits. C-level searches
    only (rfind, count), whatever the number of lines.
    """
    limit = min(len(data), pos + room)
    while lines > 0 and limit > pos:
        end = data.rfind(b"\n", pos, limit) + 1
        if end <= pos:
            break
        k = data.count(b"\n", pos, end)
        if k > lines:  # rare: a chunk with more lines than the batch has room for
            end = pos
            for _ in range(lines):
                end = data.index(b"\n", end) + 1
            k = lines
        if end - pos + over * k <= room:
            return end, k
        # The overhead did not fit: cut before it (fits on the next round, since
        # fewer records carry less overhead).
        limit = pos + room - over * k
    return pos, 0


def line_offsets(chunk: Chunk) -> list[int]:
    """The file offset where each of the chunk's lines (records) starts.

    The tailer tells them (`Chunk.starts`, with `identify`). Failing that (the
    file changed under it), they are derived from the lines: a clean line (not
    cut, no U+FFFD) spans its UTF-8 length plus its newline, counted back from
    the chunk's end and forward from its start; a line with unclean lines on
    both sides gets an estimate. Chunk boundaries differ between runs, so
    only the exact offsets give the same id to a line read again.
    """
    if chunk.starts is not None and len(chunk.starts) == len(chunk.texts):
        return chunk.starts
    texts = chunk.texts
    n = len(texts)
    start, end = chunk.start, chunk.end
    sizes = [len(t.encode("utf-8", "surrogatepass")) + 1 for t in texts]
    clean = [i not in chunk.truncated and "\ufffd" not in t for i, t in enumerate(texts)]
    total = sum(sizes)
    if all(clean) and total - chunk.nbytes in (0, 1):
        # Exact (1: a last line handed on before its newline came).
        out = [start] * n
        for i in range(1, n):
            out[i] = out[i - 1] + sizes[i - 1]
        return out
    out = [0] * n
    known = [False] * n
    pos = end
    for i in range(n - 1, -1, -1):
        if not clean[i]:
            break
        pos -= sizes[i]
        out[i], known[i] = pos, True
    pos = start
    for i in range(n):
        if known[i]:
            break
        out[i], known[i] = pos, True
        if not clean[i]:
            # The next line's start is unknown; estimate the rest from here on.
            est = pos + sizes[i]
            for j in range(i + 1, n):
                if known[j]:
                    break
                out[j] = est
                est += sizes[j]
            break
        pos += sizes[i]
    return out


def record_ids(chunk: Chunk) -> list[str]:
    """A deterministic id per record: the same when the line is read again.

    From the file's device and inode, its first bytes up to the line (so a
    reused inode or a truncated and rewritten file gives new ids), the line's
    offset and its text (so a rewritten file never collides with an old line
    it merely shares an offset with, which would lose the new line as a 409).
    """
    dev, ino = chunk.file_key or (0, 0)
    head = chunk.file_head
    out = []
    for off, text in zip(line_offsets(chunk), chunk.texts, strict=True):
        h = hashlib.sha1(b"%d:%d:%d:" % (dev, ino, off))
        h.update(head[: min(FINGERPRINT_BYTES, off)])
        h.update(b"\0")
        h.update(text.encode("utf-8", "surrogatepass"))
        out.append(h.hexdigest())
    return out


@dataclass
class RecordShape:
    """What every record carries besides its line: labels and the pod's identity."""

    labels: dict[str, str]
    pod_labels: dict[str, str] = field(default_factory=dict)
    pod_annotations: dict[str, str] = field(default_factory=dict)
    parse_json: bool = False

    def __post_init__(self) -> None:
        # Every record of a chunk shares these, encoded once.
        tail = ',"labels":' + _dumps(self.labels)
        if self.pod_labels:
            tail += ',"pod_labels":' + _dumps(self.pod_labels)
        if self.pod_annotations:
            tail += ',"pod_annotations":' + _dumps(self.pod_annotations)
        self._tail = tail + "}"

    def encode(
        self, texts: list[str], truncated: set[int] | list[int], path: str, read_time_ns: int
    ) -> bytes:
        """The NDJSON records of `texts` (one chunk's lines, `truncated` by index)."""
        when = rfc3339_ns(read_time_ns)
        if self.parse_json:
            # A lone surrogate can only come from a "\ud800" escape inside a JSON
            # string of the app's: written back as that escape, the body stays
            # UTF-8 (surrogatepass would send bytes a strict receiver refuses).
            return "".join(
                self._json_record(t, when, path, i in truncated) for i, t in enumerate(texts)
            ).encode("utf-8", "backslashreplace")
        if not texts:
            return b""
        # Fast path: one C-level string encode per line plus one join builds them all.
        head = '{"time":"' + when + '","message":'
        tail = ',"file":' + encode_basestring(path) + self._tail
        enc = list(map(encode_basestring, texts))
        for i in truncated:
            enc[i] += ',"truncated":true'
        text = head + (tail + "\n" + head).join(enc) + tail + "\n"
        return text.encode("utf-8", "surrogatepass")

    def _json_record(self, text: str, when: str, path: str, truncated: bool) -> str:
        rec: dict[str, Any] = {"time": when, "message": text, "file": path, "labels": self.labels}
        if self.pod_labels:
            rec["pod_labels"] = self.pod_labels
        if self.pod_annotations:
            rec["pod_annotations"] = self.pod_annotations
        obj = app_object(text) if text.startswith("{") else None
        if obj is not None:
            merged = dict(rec)
            del merged["message"]
            for k, v in obj.items():
                # podkit's own fields win; the app's value is kept beside them.
                merged[f"app_{k}" if k in RESERVED else k] = v
            if truncated:
                merged["truncated"] = True
            try:
                return _dumps(merged) + "\n"
            except RecursionError:  # one level short of the decoder's limit: shipped as text
                pass
        if truncated:
            rec["truncated"] = True
        return _dumps(rec) + "\n"


@dataclass
class Limits:
    max_lines: int
    max_bytes: int
    max_wait: float


class Route:
    """One sink with its tailer. `batcher()` and `sender()` run as tasks.

    `count(kind, n, reason)` reports to the program's metrics (labelled with
    this route's name by the program): `lines`, `bytes`, `truncated`,
    `processed` (reason: drop, keep, route, sample, redact:<name>).
    """

    def __init__(
        self,
        name: str,
        sink: Sink,
        tailer: Tailer,
        shape: RecordShape,
        processor: Processor,
        limits: Limits,
        count: Callable[[str, int, str], None],
    ) -> None:
        self.name = name
        self.sink = sink
        self.tailer = tailer
        self.shape = shape
        self.processor = processor
        self.limits = limits
        self.count = count
        self.batches: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        self.last_progress = time.monotonic()
        self.acked_lines = 0
        self.last_ack = 0.0

    # -- batching -------------------------------------------------------------------

    def _processed(self, what: str, n: int) -> None:
        self.count("processed", n, what)

    def encode_chunk(self, chunk: Chunk) -> tuple[bytes, list[str] | None, list[int]]:
        """(NDJSON records, their ids, indices of truncated records) of a chunk,
        after processing. The ids are derived before lines are dropped, from
        the lines' offsets, so a line gets the same id whatever was dropped."""
        texts = chunk.texts
        ids = record_ids(chunk) if self.sink.wants_ids else None
        truncated = sorted(chunk.truncated) if chunk.truncated else []
        kept = self.processor.apply(texts, chunk.path, self._processed)
        if kept is not None:
            texts = [texts[i] for i in kept]
            if ids is not None:
                ids = [ids[i] for i in kept]
            if truncated:
                pos = {old: new for new, old in enumerate(kept)}
                truncated = [pos[i] for i in truncated if i in pos]
        data = self.shape.encode(texts, truncated, chunk.path, chunk.read_time_ns)
        return data, ids, truncated

    async def batcher(self) -> None:
        it = self.tailer.chunks().__aiter__()
        cur = _Batch()
        nxt: asyncio.Future[Chunk] | None = None
        max_lines, max_bytes = self.limits.max_lines, self.limits.max_bytes
        over = self.sink.record_overhead  # what the sink's body adds per record
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(it.__anext__())
                timeout = None
                if cur.count:
                    timeout = max(0.0, cur.started + self.limits.max_wait - time.monotonic())
                done, _ = await asyncio.wait({nxt}, timeout=timeout)
                if not done:
                    cur = await self._flush(cur)
                    continue
                try:
                    chunk = nxt.result()
                except StopAsyncIteration:
                    break
                finally:
                    if nxt.done():
                        nxt = None
                # Encoded once, to bytes right away (the str copies go before the
                # next chunk is read); its size is measured, never estimated.
                data, ids, truncated = self.encode_chunk(chunk)
                chunk.texts = []  # encoded now; let the strings go
                view = memoryview(data)
                # Batches are filled to the cap, a chunk continuing in the next
                # batch if need be (a chunk is acknowledged with its last line's
                # batch, so a crash still re-sends only what was in flight).
                pos = i = 0  # byte and record position in data
                while pos < len(data):
                    if not cur.count:
                        cur.started = time.monotonic()
                    end, k = _cut(data, pos, max_lines - cur.count, max_bytes - cur.nbytes, over)
                    if not k:
                        if cur.count:
                            cur = await self._flush(cur)
                            continue
                        # A record larger than the cap on its own: it is sent alone.
                        end, k = data.index(b"\n", pos) + 1, 1
                    cur.parts.append(view[pos:end])  # no copy until the batch is joined
                    if ids is not None:
                        cur.ids.extend(ids[i : i + k])
                    cur.count += k
                    cur.nbytes += end - pos + over * k
                    if truncated:
                        cur.truncated += sum(1 for t in truncated if i <= t < i + k)
                    pos, i = end, i + k
                    if pos == len(data):
                        # Acknowledged with the batch that holds its last line.
                        cur.done.append(chunk)
                        cur.raw_bytes += chunk.nbytes
                    if pos < len(data) or cur.count >= max_lines or cur.nbytes >= max_bytes:
                        cur = await self._flush(cur)
                if not data:  # nothing to send, but its offset is acknowledged in order
                    cur.done.append(chunk)
                    cur.raw_bytes += chunk.nbytes
                    if not cur.count:  # no batch timer runs for an empty batch
                        cur = await self._flush(cur)
            if cur.count or cur.done:
                await self._flush(cur)
        finally:
            if nxt is not None:
                nxt.cancel()
            await self.batches.put(None)

    async def _flush(self, cur: _Batch) -> _Batch:
        if cur.count or cur.done:
            await self.batches.put(cur)
        return _Batch()

    # -- sending --------------------------------------------------------------------

    async def sender(self) -> None:
        tailer = self.tailer
        while True:
            b = await self.batches.get()
            if b is None:
                return
            if b.count:
                body = b"".join(b.parts)
                b.parts = []
                dead_before = self.sink.dead_lettered
                await self.sink.send(NdjsonBatch(body, b.count, b.ids or None))
                delivered = b.count - (self.sink.dead_lettered - dead_before)
                self.count("lines", delivered, "")
                self.count("truncated", b.truncated, "")
                self.acked_lines += delivered
                self.last_ack = time.time()
            self.count("bytes", b.raw_bytes, "")
            for c in b.done:
                tailer.ack(c)
            self.last_progress = time.monotonic()
            tailer.checkpoint()

    async def drain(self, batcher: asyncio.Task[None], sender: asyncio.Task[None]) -> None:
        await self.tailer.drain()
        await batcher
        await sender

    # -- health ---------------------------------------------------------------------

    def stalled(self, stall_timeout: float) -> str | None:
        """Why this sink is stalled (lag that has not shrunk for `stall_timeout`), or None."""
        t = self.tailer
        if t.lag_bytes == 0:
            self.last_progress = time.monotonic()
            return None
        stalled = time.monotonic() - self.last_progress
        if stalled > stall_timeout:
            why = self.sink.last_error or "no acknowledgement"
            return f"lag of {t.lag_bytes} bytes has not shrunk for {int(stalled)}s ({why})"
        return None

    def status(self) -> dict[str, Any]:
        t = self.tailer
        return {
            "name": self.name,
            **self.sink.status(),
            "lag_bytes": t.lag_bytes,
            "inflight_bytes": t.inflight_bytes,
            "lines_delivered": self.acked_lines,
        }
