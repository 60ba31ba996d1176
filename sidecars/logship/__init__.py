"""logship: tail log files in a shared volume and ship every line, at least once.

The file machinery (discovery, identity, checkpoints, rotation) is
`podkit.tailer`; delivery and its retry policy are `podkit.sinks`. This module
holds what makes logship logship: records, batching, the ack chain from the
sink back to the checkpoint, metrics and the drain on SIGTERM.

Data flow: tailer chunks -> batcher (encodes NDJSON records, cuts batches by
lines/bytes/wait) -> sender (one batch in flight; the sink retries until
delivered or dead-lettered) -> ack of every chunk whose last line was in the
batch -> checkpoint. Nothing is checkpointed before the sink acknowledged it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from json.encoder import encode_basestring
from typing import Any

from podkit import Sidecar, UsageError, option, rfc3339_ns
from podkit.aio import wait_for
from podkit.sinks import (
    REFUSAL_REASONS,
    RETRY_REASONS,
    SPLIT_REASONS,
    NdjsonBatch,
    Sink,
    SinkClosed,
    open_sink,
)
from podkit.tailer import (
    FINGERPRINT_BYTES,
    Chunk,
    Tailer,
    TailerConfig,
    checkpoint_interval_option,
    follow_symlinks_option,
    register_metrics,
    watch_log_volume,
)

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_HTTP_SCHEMES = (
    "http",
    "https",
    "loki+http",
    "loki+https",
    "elasticsearch+http",
    "elasticsearch+https",
)
# Downward API variables and the label each becomes.
_POD_ENV = (("POD_NAMESPACE", "namespace"), ("POD_NAME", "pod"), ("NODE_NAME", "node"))
_RESERVED = ("time", "file", "labels")
#: Where refused records go without --dead-letter: never dropped silently.
DEAD_LETTER_FILE = "dead-letter.ndjson"


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


class LogShip(Sidecar):
    """Tail log files in a shared volume and ship every line at least once.

    Sinks by URL: stdout://, file:///path, http(s)://..., loki+http(s)://host:port,
    elasticsearch+http(s)://host:port/INDEX. Offsets are checkpointed only after
    the sink acknowledged every line before them.
    """

    name = "logship"
    examples = """\
podkit logship --path '/logs/*.log' --sink loki+http://loki:3100 --label app=web
podkit logship --path '/logs/**/*.log' --sink elasticsearch+https://es:9200/logs --compress gzip
podkit logship --path '/tmp/app/*.log' --sink stdout:// --state-dir /tmp/logship   # on a laptop
"""
    default_admin_addr = "127.0.0.1:9411"

    path: list[str] = option(
        repeat=True, required=True, metavar="GLOB", help="log files to follow (glob, repeatable)"
    )
    sink: str = option(required=True, kind="url", metavar="URL", help="where to ship records")
    exclude: list[str] = option(repeat=True, metavar="GLOB", help="files to leave out (repeatable)")
    follow_symlinks: bool = follow_symlinks_option()
    state_dir: str = option(
        "/var/lib/podkit/logship", kind="path", help="directory for checkpoints.json"
    )
    read_from: str = option(
        "head", choices=("head", "tail"), help="where to start files seen for the first time"
    )
    batch_max_lines: int = option(5000, help="most records in one batch")
    batch_max_bytes: int = option(
        "1MiB",
        kind="size",
        help="largest request body (hard cap; a larger single record is sent alone)",
    )
    batch_max_wait: float = option(
        "1s", kind="duration", help="longest a record waits for its batch"
    )
    max_line_bytes: int = option(
        "256KiB", kind="size", help="longer lines are cut and marked truncated"
    )
    multiline_start: str | None = option(
        None, metavar="REGEX", help="a line matching this starts a record; others continue it"
    )
    multiline_max_lines: int = option(500, help="most lines joined into one record")
    multiline_timeout: float = option(
        "3s", kind="duration", help="a record with no continuation for this long is complete"
    )
    partial_flush_timeout: float = option(
        "5s", kind="duration", help="ship a last line without newline after this long"
    )
    retry_max_backoff: float = option(
        "30s", kind="duration", help="longest wait between delivery attempts"
    )
    retry_after_max: float = option(
        "5m", kind="duration", help="longest Retry-After honoured (a longer one is cut to this)"
    )
    buffer_max_bytes: int = option(
        "16MiB", kind="size", help="read but unacknowledged bytes at which reading pauses"
    )
    dead_letter: str | None = option(
        None,
        kind="path",
        help=f"NDJSON file for records the sink refused (default: STATE_DIR/{DEAD_LETTER_FILE})",
    )
    poll_interval: float = option(
        "1s", kind="duration", help="how often to look for new, rotated and grown files"
    )
    checkpoint_interval: float = checkpoint_interval_option()
    stall_timeout: float = option(
        "5m", kind="duration", help="/healthz fails when lag has not shrunk for this long"
    )
    parse: str = option(
        "none", choices=("none", "json"), help="json: merge lines that are JSON objects as fields"
    )
    label: list[str] = option(repeat=True, metavar="K=V", help="label added to every record")
    header: list[str] = option(
        repeat=True, metavar="'NAME: VALUE'", help="HTTP header sent to the sink (repeatable)"
    )
    bearer_token_file: str | None = option(
        None, kind="path", help="file holding a bearer token for the sink (re-read on change)"
    )
    compress: str = option("none", choices=("none", "gzip"), help="compress HTTP request bodies")
    ca_file: str | None = option(None, kind="path", help="CA bundle to verify the sink's TLS")
    insecure: bool = option(False, help="do not verify the sink's TLS certificate")
    tenant: str | None = option(None, help="Loki tenant (X-Scope-OrgID)")
    request_timeout: float = option("30s", kind="duration", help="timeout of one HTTP request")

    # -- configuration -----------------------------------------------------------

    def validate(self) -> None:
        self.labels: dict[str, str] = {}
        for env, key in _POD_ENV:
            value = os.environ.get(env)
            if value:
                self.labels[key] = value
        for item in self.label:
            k, sep, v = item.partition("=")
            k = k.strip()
            if not sep or not _LABEL_NAME.match(k):
                raise UsageError(f"--label: expected NAME=VALUE with a label name, got {item!r}")
            self.labels[k] = v
        for name in ("batch_max_lines", "batch_max_bytes", "max_line_bytes", "buffer_max_bytes"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')}: must be positive")
        if self.multiline_max_lines <= 0:
            raise UsageError("--multiline-max-lines: must be positive")
        if self.multiline_start:
            try:
                re.compile(self.multiline_start)
            except re.error as exc:
                raise UsageError(f"--multiline-start: invalid regex: {exc}") from None
        if self.buffer_max_bytes < self.max_line_bytes:
            raise UsageError("--buffer-max-bytes: must be at least --max-line-bytes")
        scheme = self.sink.split("://", 1)[0].lower()
        http = scheme in _HTTP_SCHEMES
        for flag, set_ in (
            ("--header", bool(self.header)),
            ("--bearer-token-file", bool(self.bearer_token_file)),
            ("--compress", self.compress != "none"),
            ("--ca-file", bool(self.ca_file)),
            ("--insecure", self.insecure),
        ):
            if set_ and not http:
                raise UsageError(f"{flag}: only for http(s), loki+ and elasticsearch+ sinks")
        if self.tenant and not scheme.startswith("loki+"):
            raise UsageError("--tenant: only for loki+http(s) sinks")
        self._sink_options: dict[str, Any] = {
            "dead_letter": self.dead_letter or os.path.join(self.state_dir, DEAD_LETTER_FILE),
            "retry_max_backoff": self.retry_max_backoff,
            "retry_after_max": self.retry_after_max,
            "max_body_bytes": self.batch_max_bytes,
        }
        if http:
            self._sink_options.update(
                headers=list(self.header),
                bearer_token_file=self.bearer_token_file,
                compress=self.compress,
                ca_file=self.ca_file,
                insecure=self.insecure,
                timeout=self.request_timeout,
            )
        if self.tenant:
            self._sink_options["tenant"] = self.tenant
        open_sink(self.sink, **self._sink_options)  # raises UsageError for a bad URL

    # -- lifecycle -------------------------------------------------------------------

    async def setup(self) -> None:
        m = self.metrics
        self.m_lines = m.counter("lines_total", "Lines delivered to the sink.")
        self.m_bytes = m.counter("bytes_total", "Bytes of log file delivered to the sink.")
        self.m_batches = m.counter(
            "batches_total", "Delivery attempts of batches, by result.", ["result"]
        )
        for r in ("ok", "retry", "dead_letter"):
            self.m_batches.labels(r)
        self.m_retries = m.counter(
            "retries_total", "Delivery attempts that will be retried, by reason.", ["reason"]
        )
        self.m_dead = m.counter(
            "dead_letter_lines_total",
            "Lines the sink refused, written to the dead-letter file, by reason.",
            ["reason"],
        )
        self.m_splits = m.counter(
            "batch_splits_total",
            "Batches split in halves: over --batch-max-bytes, or refused 400/413/422.",
            ["reason"],
        )
        for metric, reasons in (
            (self.m_retries, RETRY_REASONS),
            (self.m_dead, REFUSAL_REASONS),
            (self.m_splits, SPLIT_REASONS),
        ):
            for reason in reasons:
                metric.labels(reason)
        self.m_truncated = m.counter("truncated_lines_total", "Lines cut at --max-line-bytes.")
        self.m_files = m.gauge("files_watched", "Files currently followed.")
        self.m_lag = m.gauge(
            "lag_bytes", "Bytes written to followed files but not yet acknowledged by the sink."
        )
        self.m_last_ack = m.gauge(
            "last_ack_timestamp_seconds", "When the sink last acknowledged a batch (Unix time)."
        )
        self.tailer: Tailer | None = None
        register_metrics(m, lambda: self.tailer)
        self.m_files.set_function(lambda: self.tailer.files_watched if self.tailer else 0)
        self.m_lag.set_function(lambda: self.tailer.lag_bytes if self.tailer else 0)
        self._sink: Sink = open_sink(self.sink, on_event=self._on_sink_event, **self._sink_options)
        self._batches: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=1)
        self._last_progress = time.monotonic()
        self._acked_lines = 0
        try:
            os.makedirs(self.state_dir, exist_ok=True)
            if not os.access(self.state_dir, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
        except OSError as exc:
            # Checkpoints are the delivery guarantee: without them every restart
            # resends everything. A configuration error (read-only root, wrong
            # volume), so one line and exit 2 rather than a traceback.
            raise UsageError(f"--state-dir {self.state_dir}: {exc.strerror or exc}") from None
        cfg = TailerConfig(
            paths=list(self.path),
            exclude=list(self.exclude),
            state_dir=self.state_dir,
            read_from=self.read_from,
            max_line_bytes=self.max_line_bytes,
            partial_flush_timeout=self.partial_flush_timeout,
            poll_interval=self.poll_interval,
            checkpoint_interval=self.checkpoint_interval,
            multiline_start=self.multiline_start,
            multiline_max_lines=self.multiline_max_lines,
            multiline_timeout=self.multiline_timeout,
            max_buffer_bytes=self.buffer_max_bytes,
            max_chunk_lines=self.batch_max_lines,
            # A chunk's records should fit one batch (encoding adds ~120 bytes a line).
            chunk_bytes=max(64 * 1024, min(1024 * 1024, self.batch_max_bytes // 2)),
            identify=self._sink.wants_ids,
            follow_symlinks=self.follow_symlinks,
        )
        self.tailer = Tailer(cfg)
        await self._sink.start()

    async def run(self) -> None:
        assert self.tailer is not None
        tailer = self.tailer
        await tailer.start()
        self.log.info(
            "following files",
            extra={"files": tailer.files_watched, "polling": tailer.polling},
        )
        watch_log_volume(self, self.path, tailer.files_watched)
        self.set_ready()
        batcher = asyncio.create_task(self._batcher(), name="batcher")
        sender = asyncio.create_task(self._sender(), name="sender")
        stop = asyncio.create_task(self.wait_stopping())
        try:
            await self._run(batcher, sender, stop)
        finally:
            # Whatever ended run() (deadline, a failed task, cancellation), nothing may
            # keep sending while cleanup() closes the sink and the files under it.
            for t in (batcher, sender, stop):
                t.cancel()
            await asyncio.gather(batcher, sender, stop, return_exceptions=True)

    async def _run(
        self, batcher: asyncio.Task[None], sender: asyncio.Task[None], stop: asyncio.Task[None]
    ) -> None:
        assert self.tailer is not None
        tailer = self.tailer
        done, _ = await asyncio.wait({batcher, sender, stop}, return_when=asyncio.FIRST_COMPLETED)
        for t in (batcher, sender):
            exc = t.exception() if t in done else None
            if isinstance(exc, SinkClosed):
                # Not a bug in logship: the destination went away for good. One line, exit 1.
                tailer.checkpoint(force=True)
                self.log.error("sink closed; stopping", extra={"error": str(exc)})
                self.exit_code = 1
                return
            if exc is not None:
                raise exc
        # Drain: read every file to its end and deliver it, within the shutdown deadline
        # (less a margin to write the final checkpoint and say what was left).
        budget = max(0.5, self.shutdown_timeout - 1.5)
        lag_before = tailer.lag_bytes
        try:
            await wait_for(self._drain(batcher, sender), budget)
        except TimeoutError:
            left = tailer.lag_bytes
            tailer.checkpoint(force=True)
            # An expected outcome (the sink is down), not a crash: one clear line and
            # exit 1 through the runner, no traceback. The checkpoint keeps what was
            # not acknowledged, so it ships after a restart.
            self.log.error(
                "shutdown deadline: not everything was delivered; it ships after a restart",
                extra={"undelivered_bytes": left, "sink_error": self._sink.last_error},
            )
            self.exit_code = 1
            return
        except SinkClosed as exc:
            tailer.checkpoint(force=True)
            self.log.error("sink closed while draining", extra={"error": str(exc)})
            self.exit_code = 1
            return
        self.log.info(
            "drained",
            extra={"bytes": lag_before, "lines_delivered": self._acked_lines},
        )

    async def _drain(self, batcher: asyncio.Task[None], sender: asyncio.Task[None]) -> None:
        assert self.tailer is not None
        await self.tailer.drain()
        await batcher
        await sender

    async def cleanup(self) -> None:
        if self.tailer is not None:
            await self.tailer.close()
        await self._sink.close()

    # -- batching -------------------------------------------------------------------

    def _record_parts(self, chunk: Chunk, start: int, end: int) -> list[str]:
        """Encoded records (JSON objects as str) for chunk.texts[start:end]."""
        when = rfc3339_ns(chunk.read_time_ns)
        texts = chunk.texts[start:end] if start or end != len(chunk.texts) else chunk.texts
        if self.parse == "json":
            return [
                self._json_record(t, when, chunk.path, (start + i) in chunk.truncated)
                for i, t in enumerate(texts)
            ]
        # Fast path: every record of a chunk shares time, file and labels, so one
        # C-level string encode per line plus one join builds them all.
        head = '{"time":"' + when + '","message":'
        tail = ',"file":' + encode_basestring(chunk.path) + ',"labels":' + _dumps(self.labels) + "}"
        enc = list(map(encode_basestring, texts))
        if chunk.truncated:
            for i in chunk.truncated:
                if start <= i < end:
                    enc[i - start] += ',"truncated":true'
        return [head + (tail + "\n" + head).join(enc) + tail + "\n"]

    def _json_record(self, text: str, when: str, path: str, truncated: bool) -> str:
        rec: dict[str, Any] = {"time": when, "message": text, "file": path, "labels": self.labels}
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                del rec["message"]
                for k, v in obj.items():
                    # podkit's own fields win; the app's value is kept beside them.
                    rec[f"app_{k}" if k in _RESERVED else k] = v
        if truncated:
            rec["truncated"] = True
        return _dumps(rec) + "\n"

    async def _batcher(self) -> None:
        assert self.tailer is not None
        it = self.tailer.chunks().__aiter__()
        cur = _Batch()
        nxt: asyncio.Future[Chunk] | None = None
        max_lines, max_bytes = self.batch_max_lines, self.batch_max_bytes
        over = self._sink.record_overhead  # what the sink's body adds per record
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(it.__anext__())
                timeout = None
                if cur.count:
                    timeout = max(0.0, cur.started + self.batch_max_wait - time.monotonic())
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
                n = len(chunk.texts)
                ids = record_ids(chunk) if self._sink.wants_ids else None
                # Encoded once, to bytes right away (the str copies go before the
                # next chunk is read); its size is measured, never estimated.
                data = b"".join(
                    x.encode("utf-8", "surrogatepass") for x in self._record_parts(chunk, 0, n)
                )
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
                    if chunk.truncated:
                        cur.truncated += sum(1 for t in chunk.truncated if i <= t < i + k)
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
            await self._batches.put(None)

    async def _flush(self, cur: _Batch) -> _Batch:
        if cur.count or cur.done:
            await self._batches.put(cur)
        return _Batch()

    # -- sending --------------------------------------------------------------------

    async def _sender(self) -> None:
        assert self.tailer is not None
        tailer = self.tailer
        while True:
            b = await self._batches.get()
            if b is None:
                return
            if b.count:
                body = b"".join(b.parts)
                b.parts = []
                dead_before = self._sink.dead_lettered
                await self._sink.send(NdjsonBatch(body, b.count, b.ids or None))
                delivered = b.count - (self._sink.dead_lettered - dead_before)
                self.m_lines.inc(delivered)
                self.m_truncated.inc(b.truncated)
                self._acked_lines += delivered
                self.m_last_ack.set(time.time())
            self.m_bytes.inc(b.raw_bytes)
            for c in b.done:
                tailer.ack(c)
            self._last_progress = time.monotonic()
            tailer.checkpoint()

    def _on_sink_event(self, kind: str, n: int) -> None:
        if kind == "batch_ok":
            self.m_batches.labels("ok").inc(n)
        elif kind == "batch_retry":
            self.m_batches.labels("retry").inc(n)
        elif kind == "batch_dead_letter":
            self.m_batches.labels("dead_letter").inc(n)
        elif kind == "retry":
            self.m_retries.labels(self._sink.reason).inc(n)
        elif kind == "dead_letter":
            self.m_dead.labels(self._sink.reason).inc(n)
        elif kind == "split":
            self.m_splits.labels(self._sink.reason).inc(n)

    # -- admin ----------------------------------------------------------------------

    def health(self) -> str | None:
        t = self.tailer
        if t is None or not self.ready:
            return None
        if t.lag_bytes == 0:
            self._last_progress = time.monotonic()
            return None
        stalled = time.monotonic() - self._last_progress
        if stalled > self.stall_timeout:
            why = self._sink.last_error or "no acknowledgement"
            return f"lag of {t.lag_bytes} bytes has not shrunk for {int(stalled)}s ({why})"
        return None

    def status(self) -> dict[str, Any]:
        t = self.tailer
        out: dict[str, Any] = {"sink": self._sink.status() if hasattr(self, "_sink") else None}
        if t is not None:
            out.update(
                files_watched=t.files_watched,
                lag_bytes=t.lag_bytes,
                inflight_bytes=t.inflight_bytes,
                polling=t.polling,
                lines_delivered=self._acked_lines,
                files=t.files()[:100],
                skipped=t.skipped_files()[:100],
            )
        return out


def main() -> None:
    LogShip.main()
