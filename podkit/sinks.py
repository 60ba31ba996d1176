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
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import email.utils
import gzip
import json
import logging
import os
import random
import re
import ssl
import stat
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .logs import RateLimited, rfc3339_ns
from .options import UsageError
from .retry import Backoff
from .secrets import redact_url

log = logging.getLogger("podkit.sinks")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


#: Values of `--compress` (zstd needs the optional `zstandard` package).
COMPRESSIONS = ("none", "gzip", "zstd")


def _header_files(items: list[str] | dict[str, str]) -> dict[str, str]:
    """`NAME=FILE` items (or a `sinks:` entry's mapping): a header whose value is read from FILE."""
    if isinstance(items, dict):
        return {str(k): str(v) for k, v in items.items()}
    from .http import parse_header_files

    return parse_header_files(items)


# -- batches -----------------------------------------------------------------


class Batch:
    """Records delivered together. Each sink asks for the form it needs.

    `ids`, when set, holds one deterministic id per record (the same when the
    record is read and sent again after a restart); sinks that can refuse a
    duplicate by id (Elasticsearch's `create`) use it, the others ignore it.
    """

    ids: list[str] | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def ndjson(self) -> bytes:
        """One JSON object per line, each line ending in a newline."""
        raise NotImplementedError

    def records(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def lines(self) -> list[bytes]:
        """The NDJSON lines without their newlines (to pick items out of a batch)."""
        body = self.ndjson()
        return body.split(b"\n")[:-1] if body else []


class RecordBatch(Batch):
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records
        self._ndjson: bytes | None = None

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[dict[str, Any]]:
        return self._records

    def ndjson(self) -> bytes:
        if self._ndjson is None:
            if not self._records:
                self._ndjson = b""
            else:
                text = "\n".join(map(_dumps, self._records)) + "\n"
                self._ndjson = text.encode("utf-8", "surrogatepass")
        return self._ndjson


class NdjsonBatch(Batch):
    """A batch already encoded as NDJSON (the fast path: no dict per record)."""

    def __init__(self, body: bytes, count: int, ids: list[str] | None = None) -> None:
        if ids is not None and len(ids) != count:
            raise ValueError("one id per record")
        self.body = body
        self.count = count
        self.ids = ids

    def __len__(self) -> int:
        return self.count

    def ndjson(self) -> bytes:
        return self.body

    def records(self) -> list[dict[str, Any]]:
        if not self.body:
            return []
        # One C-level parse of the lines as a JSON array (2.5x faster than one
        # json.loads per line): a JSON document never holds a raw newline.
        body = self.body[:-1] if self.body.endswith(b"\n") else self.body
        recs: list[dict[str, Any]] = json.loads(b"[" + body.replace(b"\n", b",") + b"]")
        return recs


def as_batch(records: Batch | list[dict[str, Any]]) -> Batch:
    return records if isinstance(records, Batch) else RecordBatch(list(records))


def _subset(batch: Batch, idx: list[int]) -> Batch:
    lines = batch.lines()
    picked = [lines[i] for i in idx]
    ids = [batch.ids[i] for i in idx] if batch.ids is not None else None
    return NdjsonBatch(b"\n".join(picked) + b"\n" if picked else b"", len(picked), ids)


def _halves(batch: Batch) -> list[Batch]:
    mid = len(batch) // 2
    return [_subset(batch, list(range(mid))), _subset(batch, list(range(mid, len(batch))))]


# -- outcomes ----------------------------------------------------------------


class SinkClosed(Exception):
    """The destination is gone for good (stdout's reader closed the pipe).

    Not an OSError, so `send()` does not retry it: the caller should stop.
    """


class Retry(Exception):
    """The attempt failed in a way that may heal; try again later."""

    def __init__(
        self, reason: str, retry_after: float | None = None, kind: str = "response"
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.kind = kind  # the metrics' `reason` label (RETRY_REASONS)


@dataclass
class Outcome:
    """What an attempt achieved: some records delivered, some to retry, some refused."""

    retry: list[int] = field(default_factory=list)  # indices to send again
    rejected: list[tuple[int, int, str]] = field(default_factory=list)  # (index, status, error)
    retry_reason: str = ""
    retry_after: float | None = None
    retry_kind: str = "item"
    #: The whole request was refused for its content (status, error): split it.
    refused: tuple[int, str] | None = None


#: Values of the `reason` of `retry` events (Sink.reason) and their metrics.
RETRY_REASONS = (
    "connect",  # refused, reset, DNS, TLS: the peer cannot be reached
    "timeout",
    "http_408",
    "http_429",
    "http_5xx",
    "item",  # an Elasticsearch item answered 429/5xx
    "response",  # a response that cannot be read (malformed bulk response)
    "token",  # a credential file (token, password, header, client cert) cannot be read
    "disk",  # the file sink's write failed (ENOSPC, EFBIG, EIO)
    "dead_letter_write",  # the dead-letter file cannot be written
)
#: Values of the `reason` of `dead_letter` and `split` events.
REFUSAL_REASONS = ("too_large", "bad_request", "refused")
#: `split` only: a body over max_body_bytes, split before it was sent.
SPLIT_REASONS = ("size", "too_large", "bad_request")
#: Statuses that refuse a request for its content: another split may pass.
_SPLIT_STATUSES = (400, 413, 422)


def refusal_reason(status: int) -> str:
    if status == 413:
        return "too_large"
    return "bad_request" if status in (400, 422) else "refused"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), uncapped."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return max(0.0, dt.timestamp() - (time.time() if now is None else now))


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


# -- the sink base -----------------------------------------------------------

EventHook = Callable[[str, int], None]
Sleep = Callable[[float], Awaitable[None]]


class Sink:
    """Base of every sink: `_attempt()` delivers once; `send()` applies the policy.

    Events reported to `on_event(kind, n)`: `batch_ok`, `batch_retry`,
    `batch_dead_letter` (n=1 each), `retry` (one retried attempt), `split` (a
    batch split in halves), `dead_letter` (records dead-lettered), `delivered`
    (records delivered). During a `retry`, `split` or `dead_letter` event,
    `self.reason` names why (RETRY_REASONS, SPLIT_REASONS, REFUSAL_REASONS),
    for a hook that counts by reason.

    `sleep` and `rng` are for tests: the delays asked for, and the jitter.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    #: The sink uses `Batch.ids` (a producer need not compute them otherwise).
    wants_ids: ClassVar[bool] = False
    #: Bytes the body adds per record beyond its NDJSON line (a producer cutting
    #: batches by size counts them; the cap itself is enforced by `send()`).
    record_overhead: ClassVar[int] = 0

    def __init__(
        self,
        url: str,
        *,
        dead_letter: str | None = None,
        max_body_bytes: int | None = None,
        retry_initial_backoff: float = 0.1,
        retry_max_backoff: float = 30.0,
        retry_after_max: float = 300.0,
        on_event: EventHook | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.dead_letter_path = dead_letter
        self._dead_file = _AppendFile(dead_letter) if dead_letter else None
        self.max_body_bytes = max_body_bytes
        self.retry_max_backoff = retry_max_backoff
        # A server may ask for a longer pause than the backoff (it knows its
        # load), never for longer than retry_after_max.
        self.retry_after_max = max(retry_after_max, retry_max_backoff)
        self.backoff = Backoff(
            min(retry_initial_backoff, retry_max_backoff), retry_max_backoff, rng=rng
        )
        self.on_event = on_event or (lambda kind, n: None)
        self.reason = ""
        self._sleep = sleep
        self.options = options
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.delivered = 0
        self.dead_lettered = 0
        self.retries = 0
        self.splits = 0
        self._ratelimit = RateLimited(log, 30.0)
        self._closing = asyncio.Event()
        self._encoded: tuple[Batch, bytes] | None = None
        self._configure(**options)

    def _configure(self, **options: Any) -> None:
        """Take sink-specific options; unknown ones are a usage error."""
        if options:
            raise UsageError(f"--sink {self.safe_url}: unsupported option(s): {', '.join(options)}")

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._closing.set()

    def encode(self, batch: Batch) -> bytes:
        """The request body for `batch`, before compression (NDJSON unless overridden)."""
        return batch.ndjson()

    def _body(self, batch: Batch) -> bytes:
        """`encode(batch)`, encoded once although both the size check and the send need it."""
        if self._encoded is None or self._encoded[0] is not batch:
            self._encoded = (batch, self.encode(batch))
        return self._encoded[1]

    async def _attempt(self, batch: Batch) -> Outcome:
        raise NotImplementedError

    def _event(self, kind: str, n: int, reason: str = "") -> None:
        self.reason = reason
        self.on_event(kind, n)

    async def send(self, records: Batch | list[dict[str, Any]]) -> None:
        """Deliver every record (or dead-letter it). Retries for as long as it takes."""
        todo = [as_batch(records)]
        try:
            while todo:
                halves = await self._deliver(todo.pop())
                todo.extend(reversed(halves))  # the first half goes next: order is kept
        finally:
            self._encoded = None  # do not hold the last body between sends

    async def _deliver(self, batch: Batch) -> list[Batch]:
        """Deliver or dead-letter `batch`, or return its halves to deliver instead."""
        while len(batch):
            cap = self.max_body_bytes
            if cap and len(batch) > 1 and len(self._body(batch)) > cap:
                self.splits += 1
                self._event("split", 1, "size")
                return _halves(batch)
            try:
                out = await self._attempt(batch)
            except Retry as exc:
                out = Outcome(list(range(len(batch))), [], exc.reason, exc.retry_after, exc.kind)
            except (OSError, TimeoutError) as exc:
                out = Outcome(list(range(len(batch))), [], _describe(exc), None, _os_kind(exc))
            except Exception as exc:  # aiohttp errors and friends: treat as transient
                if not _is_transient(exc):
                    raise
                out = Outcome(list(range(len(batch))), [], _describe(exc), None, _os_kind(exc))
            if out.refused is not None:
                status, error = out.refused
                if len(batch) > 1:
                    # The peer answered, and only some records may be at fault:
                    # bisect so that only the poison record is dead-lettered.
                    self.splits += 1
                    self._event("split", 1, refusal_reason(status))
                    return _halves(batch)
                out.rejected = [(0, status, error)]
            if out.rejected:
                await self._dead_letter(batch, out.rejected)
            done = len(batch) - len(out.retry) - len(out.rejected)
            if done > 0:
                self.delivered += done
                self.on_event("delivered", done)
            if not out.retry:
                self.on_event("batch_dead_letter" if out.rejected and done == 0 else "batch_ok", 1)
                self._recovered()
                return []
            batch = batch if len(out.retry) == len(batch) else _subset(batch, out.retry)
            self.on_event("batch_retry", 1)
            await self._wait_retry(out.retry_reason, out.retry_after, out.retry_kind)
        return []

    def _recovered(self) -> None:
        if self.failing_since is not None:
            log.info(
                "sink recovered",
                extra={
                    "sink": self.safe_url,
                    "down_seconds": round(time.monotonic() - self.failing_since, 3),
                },
            )
        self.failing_since = None
        self.last_error = None
        # The next failure starts from the initial backoff again, not from
        # where the last outage left it.
        self.backoff.reset()

    async def _wait_retry(self, reason: str, retry_after: float | None, kind: str) -> None:
        self.retries += 1
        # Set before the event: its hook reports what went wrong (logship's `/`).
        self.last_error = reason
        self._event("retry", 1, kind)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        delay = self.backoff.next()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max))
        self._ratelimit.log(
            "retry",
            logging.WARNING,
            "delivery failed; retrying",
            sink=self.safe_url,
            error=reason,
            retry_in_seconds=round(delay, 3),
        )
        await (self._sleep or asyncio.sleep)(delay)

    async def _dead_letter(self, batch: Batch, rejected: list[tuple[int, int, str]]) -> None:
        """Write the refused records to the dead-letter file; retry until written.

        Until they are written, `send()` does not return, so the batch is not
        acknowledged and the checkpoint does not move past it: a dead-letter
        file that cannot be written stalls delivery (visible in /healthz and
        the `dead_letter_write` retries), it never loses the records.
        """
        n = len(rejected)
        first = rejected[0]
        if self._dead_file is not None:
            data = self._dead_letter_entries(batch, rejected)
            while True:
                try:
                    self._dead_file.append(data)
                    break
                except OSError as exc:
                    await self._wait_retry(
                        f"cannot write dead-letter file {self.dead_letter_path}: {_describe(exc)}",
                        None,
                        "dead_letter_write",
                    )
        self.dead_lettered += n
        by_reason: dict[str, int] = {}
        for _, status, _ in rejected:
            reason = refusal_reason(status)
            by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, count in by_reason.items():
            self._event("dead_letter", count, reason)
        log.error(
            "records refused; dead-lettered" if self._dead_file else "records refused; dropped",
            extra={
                "sink": self.safe_url,
                "records": n,
                "status": first[1],
                "error": first[2][:500],
                "dead_letter": self.dead_letter_path,
            },
        )

    def _dead_letter_entries(self, batch: Batch, rejected: list[tuple[int, int, str]]) -> bytes:
        lines = batch.lines()
        now = rfc3339_ns()
        out: list[str] = []
        for i, status, error in rejected:
            try:
                rec: Any = json.loads(lines[i])
            except (ValueError, IndexError):
                rec = lines[i].decode("utf-8", "replace") if i < len(lines) else None
            out.append(
                _dumps(
                    {
                        "time": now,
                        "sink": self.safe_url,
                        "status": status,
                        "reason": refusal_reason(status),
                        "error": error[:2000],
                        "record": rec,
                    }
                )
            )
        return ("\n".join(out) + "\n").encode("utf-8", "surrogatepass")

    def status(self) -> dict[str, Any]:
        return {
            "url": self.safe_url,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "dead_letter_file": self.dead_letter_path,
            "retries": self.retries,
            "splits": self.splits,
            "last_error": self.last_error,
            "failing_for_seconds": (
                round(time.monotonic() - self.failing_since, 3) if self.failing_since else 0
            ),
        }


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _os_kind(exc: BaseException) -> str:
    """The retry reason of an exception raised by an attempt."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, _DiskError):
        return "disk"
    return "connect"


def _is_transient(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


# -- append-only files -----------------------------------------------------------


class _DiskError(OSError):
    """A write to a sink's file failed (after it was cut back to whole records)."""


class _AppendFile:
    """An NDJSON file appended to in whole records: a failed write leaves nothing.

    A write can fail part-way: ENOSPC on a full filesystem, EFBIG past
    RLIMIT_FSIZE (after a short write up to the limit), EIO. The bytes written
    so far would be a torn record, glued to the next one when the write is
    retried; so the file is truncated back to its size before the write. If
    even that fails, the cut is made before the next write. A file found with
    a torn last record when opened (a kill during a write) is cut back too:
    the record was not acknowledged, so it is written again. Only regular
    files are cut (a FIFO or /dev/stdout cannot be). Reopened when someone
    rotates or removes it. Thread-safe, so writes can run off the event loop.
    """

    def __init__(self, path: str, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._cut: int | None = None  # truncate to this size before the next write
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is not None:
            try:
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) == self._ino:
                    return self._fd
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._ino, self._cut = fd, (st.st_dev, st.st_ino), None
        if stat.S_ISREG(st.st_mode) and st.st_size:
            self._cut = _last_newline_end(self.path, st.st_size)
            if self._cut != st.st_size:
                log.warning(
                    "file ended in a torn record; cutting it off",
                    extra={"path": self.path, "bytes": st.st_size - self._cut},
                )
            else:
                self._cut = None
        return fd

    def open(self) -> None:
        with self._lock:
            self._open()

    def append(self, data: bytes) -> None:
        with self._lock:
            try:
                self._append(data)
            except OSError as exc:
                raise _DiskError(exc.errno, f"{self.path}: {exc.strerror or exc}") from None

    def _append(self, data: bytes) -> None:
        fd = self._open()
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
        size = st.st_size
        if regular and self._cut is not None:
            os.ftruncate(fd, self._cut)
            size, self._cut = self._cut, None
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)  # short writes happen (RLIMIT_FSIZE, a full disk)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            if regular:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    self._cut = size
            raise

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _last_newline_end(path: str, size: int) -> int:
    """The size of `path` up to and including its last newline (0 if none)."""
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            i = block.rfind(b"\n")
            if i >= 0:
                return start + i + 1
            end = start
    return 0


# -- registry ----------------------------------------------------------------

_SINKS: dict[str, type[Sink]] = {}


def register_sink(cls: type[Sink]) -> type[Sink]:
    for scheme in cls.schemes:
        _SINKS[scheme] = cls
    return cls


def open_sink(url: str, **options: Any) -> Sink:
    """The sink for `url`'s scheme; UsageError (naming --sink) when there is none."""
    scheme = urlsplit(url).scheme.lower()
    cls = _SINKS.get(scheme)
    if cls is None:
        known = ", ".join(f"{s}://" for s in sorted(_SINKS))
        raise UsageError(f"--sink {redact_url(url)}: unsupported scheme {scheme!r} (use {known})")
    return cls(url, **options)


# -- stdout and file -----------------------------------------------------------


@register_sink
class StdoutSink(Sink):
    """NDJSON on standard output (the container log, read by the node's collector).

    Written from a worker thread: a slow reader of the pipe blocks that
    thread, not the event loop (the admin server and the tailer keep going).
    """

    schemes = ("stdout",)

    def _configure(self, **options: Any) -> None:
        self.stream = options.pop("stream", None)
        self._order = asyncio.Lock()  # see FileSink
        super()._configure(**options)

    def _write(self, data: bytes) -> None:
        stream = self.stream or sys.stdout.buffer
        try:
            stream.write(data)
            stream.flush()
        except BrokenPipeError:
            # EPIPE: the reader closed its end (`... | head`). No new reader can
            # ever appear on this pipe, so retrying would spin until SIGTERM.
            if self.stream is None:
                # Python's own recipe: point fd 1 at /dev/null, so the flush at
                # interpreter exit does not fail again (exit status 120).
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                os.close(devnull)
            raise SinkClosed("stdout: the reader closed the pipe") from None

    async def _attempt(self, batch: Batch) -> Outcome:
        async with self._order:
            await asyncio.to_thread(self._write, self._body(batch))
        return Outcome()


@register_sink
class FileSink(Sink):
    """NDJSON appended to a file, whole records only (`_AppendFile`), off the event loop."""

    schemes = ("file",)

    def _configure(self, **options: Any) -> None:
        parts = urlsplit(self.url)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"--sink {self.safe_url}: use file:///absolute/path")
        self.path = parts.path
        if not self.path or self.path.endswith("/"):
            raise UsageError(f"--sink {self.safe_url}: a file path is required")
        self.fsync = bool(options.pop("fsync", False))
        self._file = _AppendFile(self.path, self.fsync)
        # Concurrent send()s write in the order they were called, as when the
        # write was synchronous (asyncio.Lock is FIFO; the worker threads are not).
        self._order = asyncio.Lock()
        super()._configure(**options)

    async def start(self) -> None:
        try:
            self._file.open()
        except OSError as exc:
            log.warning("cannot open sink file yet", extra={"path": self.path, "error": str(exc)})

    async def _attempt(self, batch: Batch) -> Outcome:
        async with self._order:
            await asyncio.to_thread(self._file.append, self._body(batch))
        return Outcome()

    async def close(self) -> None:
        await super().close()
        self._file.close()


# -- HTTP family -----------------------------------------------------------------


class _HTTPSink(Sink):
    """Shared by the HTTP, Loki, Elasticsearch and OTLP sinks: session, TLS,
    headers, compression and auth.

    Every credential comes from a file re-read when it changes (a rotated
    Secret): the bearer token, the basic-auth password, `header_files` values
    and the client certificate (a new session is made when its files change).
    The values are registered as secrets, so they never reach a log line.
    """

    content_type = "application/x-ndjson"

    def _configure(self, **options: Any) -> None:
        from .http import parse_headers

        headers = options.pop("headers", None) or {}
        if isinstance(headers, list | tuple):
            headers = parse_headers(headers)
        self.headers: dict[str, str] = dict(headers)
        self.bearer_token_file: str | None = options.pop("bearer_token_file", None)
        self.username: str | None = options.pop("username", None) or None
        self.password_file: str | None = options.pop("password_file", None) or None
        self.header_files: dict[str, str] = _header_files(options.pop("header_files", None) or [])
        self.client_cert_file: str | None = options.pop("client_cert_file", None) or None
        self.client_key_file: str | None = options.pop("client_key_file", None) or None
        self.compress: str | None = options.pop("compress", None) or None
        if self.compress not in (None, *COMPRESSIONS):
            raise UsageError(
                f"--compress: {self.compress!r} is not one of {', '.join(COMPRESSIONS)}"
            )
        if self.compress == "none":
            self.compress = None
        self._zstd: Any = None
        if self.compress == "zstd":
            try:
                import zstandard
            except ImportError:
                raise UsageError(
                    "--compress zstd: the zstandard package is not installed "
                    "(pip install zstandard, or use --compress gzip)"
                ) from None
            self._zstd = zstandard.ZstdCompressor(level=1)
        self.ca_file: str | None = options.pop("ca_file", None)
        self.insecure = bool(options.pop("insecure", False))
        self.timeout = float(options.pop("timeout", 30.0))
        self._token: Any = None
        self._password: Any = None
        self._basic: tuple[str, str] | None = None  # (password, header) last built
        self._header_secrets: dict[str, Any] = {}
        self._cert_sig: tuple[Any, ...] | None = None
        self._session: Any = None
        scheme, _, rest = self.url.partition("://")
        base = scheme.split("+", 1)[-1]
        if base not in ("http", "https"):
            raise UsageError(f"--sink {self.safe_url}: expected http or https after '+'")
        self.target = f"{base}://{rest}"
        if bool(self.username) != bool(self.password_file):
            raise UsageError("--username and --password-file: give both for basic auth")
        if self.username and self.bearer_token_file:
            raise UsageError("--username and --bearer-token-file: choose one way to authenticate")
        if ":" in (self.username or ""):
            raise UsageError("--username: basic auth user names cannot hold ':'")
        if self.client_key_file and not self.client_cert_file:
            raise UsageError("--client-key-file: needs --client-cert-file")
        if self.client_cert_file and base != "https":
            raise UsageError(f"--client-cert-file: only for https sinks, not {self.safe_url}")
        self._configure_target(options)
        super()._configure(**options)

    def _configure_target(self, options: dict[str, Any]) -> None:
        pass

    def _cert_signature(self) -> tuple[Any, ...] | None:
        if not self.client_cert_file:
            return None
        sig: list[Any] = []
        for path in (self.client_cert_file, self.client_key_file):
            if path:
                st = os.stat(path)
                sig.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    async def start(self) -> None:
        from .http import BearerToken, client_session, ssl_context
        from .secrets import SecretFile

        ctx = None
        if self.target.startswith("https://"):
            self._cert_sig = self._cert_signature()
            ctx = ssl_context(
                self.ca_file, self.insecure, self.client_cert_file, self.client_key_file
            )
        if self.bearer_token_file:
            self._token = BearerToken(self.bearer_token_file)
        if self.password_file:
            self._password = SecretFile(self.password_file)
        self._header_secrets = {k: SecretFile(v) for k, v in self.header_files.items()}
        self._session = client_session(
            self.timeout, connect_timeout=min(10.0, self.timeout), ssl_ctx=ctx, limit=4
        )

    def _auth_headers(self) -> dict[str, str]:
        """Headers read from files now (each file costs one stat when unchanged)."""
        out: dict[str, str] = {}
        if self._token is not None:
            out.update(self._token.header())
        if self._password is not None:
            password = self._password.value()
            if self._basic is None or self._basic[0] != password:
                from .secrets import register_secret

                cred = base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
                register_secret(cred)  # the encoded form is as secret as the password
                self._basic = (password, f"Basic {cred}")
            out["Authorization"] = self._basic[1]
        for name, secret in self._header_secrets.items():
            out[name] = secret.value()
        return out

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(
        self, url: str, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is not None and self.client_cert_file:
            try:
                renewed = self._cert_signature() != self._cert_sig
            except OSError as exc:
                raise Retry(
                    f"cannot read client certificate: {exc.strerror or exc}", kind="token"
                ) from None
            if renewed:  # a rotated certificate: the next connections present it
                await self._session.close()
                self._session = None
        if self._session is None:
            try:
                await self.start()
            except (OSError, ssl.SSLError) as exc:
                raise Retry(
                    f"cannot load client certificate: {_describe(exc)}", kind="token"
                ) from None
        headers = {"Content-Type": content_type, **self.headers, **(extra or {})}
        try:
            headers.update(self._auth_headers())
        except OSError as exc:
            raise Retry(
                f"cannot read credential file {exc.filename}: {exc.strerror or exc}", kind="token"
            ) from None
        if self.compress == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        elif self._zstd is not None:
            body = self._zstd.compress(body)
            headers["Content-Encoding"] = "zstd"
        async with self._session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            return resp.status, dict(resp.headers), data

    def _whole(self, batch: Batch, status: int, headers: dict[str, str], body: bytes) -> Outcome:
        """The verdict on a whole request from its status code."""
        if 200 <= status < 300:
            return Outcome()
        text = body[:300].decode("utf-8", "replace").strip()
        reason = f"HTTP {status}" + (f": {text}" if text else "")
        if _retryable_status(status):
            kind = f"http_{status}" if status < 500 else "http_5xx"
            raise Retry(reason, parse_retry_after(headers.get("Retry-After")), kind)
        if status in _SPLIT_STATUSES:
            return Outcome(refused=(status, reason))
        # 401, 403, 404...: every record would be refused alike; nothing to isolate.
        return Outcome([], [(i, status, reason) for i in range(len(batch))])


@register_sink
class HTTPSink(_HTTPSink):
    """NDJSON batches POSTed to any HTTP endpoint."""

    schemes = ("http", "https")

    async def _attempt(self, batch: Batch) -> Outcome:
        status, headers, body = await self._post(self.target, self._body(batch), self.content_type)
        return self._whole(batch, status, headers, body)


def _parse_time_ns(value: Any, cache: dict[str, int]) -> int:
    """Nanoseconds since the epoch from an RFC 3339 UTC string (podkit's record time)."""
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        return time.time_ns()
    ns = cache.get(value)
    if ns is not None:
        return ns
    try:
        base, _, frac = value.rstrip("Z").partition(".")
        secs = calendar.timegm(time.strptime(base[:19], "%Y-%m-%dT%H:%M:%S"))
        ns = secs * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
    except ValueError:
        ns = time.time_ns()
    cache[value] = ns
    return ns


#: Record fields that are not the app's: a record with only these is a plain line.
_STANDARD = frozenset(
    {"time", "message", "file", "labels", "truncated", "pod_labels", "pod_annotations"}
)
#: Left out of a record sent as JSON (Loki's line): they are the stream's labels.
_NOT_IN_LINE = ("time", "labels", "pod_labels", "pod_annotations")
#: Default of `--loki-max-streams`: distinct label sets before labels from
#: fields are refused (Loki's own default per-tenant limit is 5,000 streams).
LOKI_MAX_STREAMS = 1000
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
    `--loki-label-keys`) cannot make Loki refuse every push.
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
        self._streams_seen: set[tuple[tuple[str, str], ...]] = set()
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
            if seen not in self._streams_seen:
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
                self._streams_seen.add(seen)
        return labels, meta

    def encode(self, batch: Batch) -> bytes:
        streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
        dynamic = bool(self.label_keys or self.metadata_keys)
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
            ts = _parse_time_ns(rec.get("time"), self._tcache)
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
            out.update(streams=len(self._streams_seen), label_overflow=self.label_overflow)
        return out


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
            from . import sinks_otlp
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
        times = [_parse_time_ns(r.get("time"), self._tcache) for r in records]
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


#: Values of `--otlp-format`.
OTLP_FORMATS = ("protobuf", "json")


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
