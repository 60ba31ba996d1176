"""Sinks, chosen by URL scheme (Vector-style): where records are delivered.

    stdout://                               NDJSON on standard output
    file:///path                            NDJSON appended to a file
    http://host/path, https://...           NDJSON batches POSTed (application/x-ndjson)
    loki+http://host:port, loki+https://    the Loki push API (/loki/api/v1/push)
    elasticsearch+http://host:port/INDEX    the _bulk API with `create` actions

    sink = open_sink(url, **options); await sink.start()
    await sink.send(records)                # list[dict] or a Batch; returns once delivered
    await sink.close()

The delivery policy is the same for every sink: `send()` returns only when
each record was delivered or dead-lettered. Failures that may heal (refused
connection, timeout, 408, 429, 5xx, a full disk) are retried forever with
exponential backoff and full jitter up to `retry_max_backoff`, honouring
`Retry-After`; a batch refused with another 4xx (or an Elasticsearch item
refused that way) goes to the dead-letter file, one JSON object per record
(`{"time", "sink", "status", "error", "record"}`), and delivery goes on.
"""

from __future__ import annotations

import asyncio
import calendar
import email.utils
import gzip
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from .logs import RateLimited, rfc3339_ns
from .options import UsageError
from .retry import Backoff
from .secrets import redact_url

log = logging.getLogger("podkit.sinks")

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


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
        return [json.loads(line) for line in self.lines()]


def as_batch(records: Batch | list[dict[str, Any]]) -> Batch:
    return records if isinstance(records, Batch) else RecordBatch(list(records))


def _subset(batch: Batch, idx: list[int]) -> Batch:
    lines = batch.lines()
    picked = [lines[i] for i in idx]
    ids = [batch.ids[i] for i in idx] if batch.ids is not None else None
    return NdjsonBatch(b"\n".join(picked) + b"\n" if picked else b"", len(picked), ids)


# -- outcomes ----------------------------------------------------------------


class SinkClosed(Exception):
    """The destination is gone for good (stdout's reader closed the pipe).

    Not an OSError, so `send()` does not retry it: the caller should stop.
    """


class Retry(Exception):
    """The attempt failed in a way that may heal; try again later."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Outcome:
    """What an attempt achieved: some records delivered, some to retry, some refused."""

    retry: list[int] = field(default_factory=list)  # indices to send again
    rejected: list[tuple[int, int, str]] = field(default_factory=list)  # (index, status, error)
    retry_reason: str = ""
    retry_after: float | None = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
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


class Sink:
    """Base of every sink: `_attempt()` delivers once; `send()` applies the policy.

    Events reported to `on_event(kind, n)`: `batch_ok`, `batch_retry`,
    `batch_dead_letter` (n=1 each), `retry` (one retried attempt),
    `dead_letter` (records dead-lettered), `delivered` (records delivered).
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    #: The sink uses `Batch.ids` (a producer need not compute them otherwise).
    wants_ids: ClassVar[bool] = False

    def __init__(
        self,
        url: str,
        *,
        dead_letter: str | None = None,
        retry_initial_backoff: float = 0.1,
        retry_max_backoff: float = 30.0,
        retry_after_max: float = 300.0,
        on_event: EventHook | None = None,
        **options: Any,
    ) -> None:
        self.url = url
        self.safe_url = redact_url(url)
        self.dead_letter_path = dead_letter
        self.retry_max_backoff = retry_max_backoff
        self.retry_after_max = max(retry_after_max, retry_max_backoff)
        self.backoff = Backoff(min(retry_initial_backoff, retry_max_backoff), retry_max_backoff)
        self.on_event = on_event or (lambda kind, n: None)
        self.options = options
        self.last_error: str | None = None
        self.failing_since: float | None = None
        self.delivered = 0
        self.dead_lettered = 0
        self.retries = 0
        self._ratelimit = RateLimited(log, 30.0)
        self._closing = asyncio.Event()
        self._configure(**options)

    def _configure(self, **options: Any) -> None:
        """Take sink-specific options; unknown ones are a usage error."""
        if options:
            raise UsageError(f"--sink {self.safe_url}: unsupported option(s): {', '.join(options)}")

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._closing.set()

    async def _attempt(self, batch: Batch) -> Outcome:
        raise NotImplementedError

    async def send(self, records: Batch | list[dict[str, Any]]) -> None:
        """Deliver every record (or dead-letter it). Retries for as long as it takes."""
        batch = as_batch(records)
        while len(batch):
            try:
                out = await self._attempt(batch)
            except Retry as exc:
                out = Outcome(list(range(len(batch))), [], exc.reason, exc.retry_after)
            except (OSError, TimeoutError) as exc:
                out = Outcome(list(range(len(batch))), [], _describe(exc))
            except Exception as exc:  # aiohttp errors and friends: treat as transient
                if not _is_transient(exc):
                    raise
                out = Outcome(list(range(len(batch))), [], _describe(exc))
            done = len(batch) - len(out.retry) - len(out.rejected)
            if out.rejected:
                self._dead_letter(batch, out.rejected)
            if done > 0:
                self.delivered += done
                self.on_event("delivered", done)
            if not out.retry:
                self.on_event("batch_dead_letter" if out.rejected and done == 0 else "batch_ok", 1)
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
                self.backoff.reset()
                return
            batch = batch if len(out.retry) == len(batch) else _subset(batch, out.retry)
            self.on_event("batch_retry", 1)
            await self._wait_retry(out.retry_reason, out.retry_after)

    async def _wait_retry(self, reason: str, retry_after: float | None) -> None:
        self.retries += 1
        self.on_event("retry", 1)
        self.last_error = reason
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
        await asyncio.sleep(delay)

    def _dead_letter(self, batch: Batch, rejected: list[tuple[int, int, str]]) -> None:
        n = len(rejected)
        self.dead_lettered += n
        self.on_event("dead_letter", n)
        first = rejected[0]
        log.error(
            "records refused; dead-lettered"
            if self.dead_letter_path
            else "records refused; dropped",
            extra={
                "sink": self.safe_url,
                "records": n,
                "status": first[1],
                "error": first[2][:500],
                "dead_letter": self.dead_letter_path,
            },
        )
        if not self.dead_letter_path:
            return
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
                        "error": error[:2000],
                        "record": rec,
                    }
                )
            )
        try:
            with open(self.dead_letter_path, "a", encoding="utf-8") as fh:
                fh.write("\n".join(out) + "\n")
        except OSError as exc:
            self._ratelimit.log(
                "dead-letter",
                logging.ERROR,
                "cannot write dead-letter file",
                path=self.dead_letter_path,
                error=str(exc),
            )

    def status(self) -> dict[str, Any]:
        return {
            "url": self.safe_url,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "retries": self.retries,
            "last_error": self.last_error,
            "failing_for_seconds": (
                round(time.monotonic() - self.failing_since, 3) if self.failing_since else 0
            ),
        }


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _is_transient(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError)


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
    """NDJSON on standard output (the container log, read by the node's collector)."""

    schemes = ("stdout",)

    def _configure(self, **options: Any) -> None:
        self.stream = options.pop("stream", None)
        super()._configure(**options)

    async def _attempt(self, batch: Batch) -> Outcome:
        stream = self.stream or sys.stdout.buffer
        try:
            stream.write(batch.ndjson())
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
        return Outcome()


@register_sink
class FileSink(Sink):
    """NDJSON appended to a file; reopened when someone rotates or removes it."""

    schemes = ("file",)

    def _configure(self, **options: Any) -> None:
        parts = urlsplit(self.url)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"--sink {self.safe_url}: use file:///absolute/path")
        self.path = parts.path
        if not self.path or self.path.endswith("/"):
            raise UsageError(f"--sink {self.safe_url}: a file path is required")
        self.fsync = bool(options.pop("fsync", False))
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        super()._configure(**options)

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
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        return fd

    async def start(self) -> None:
        try:
            self._open()
        except OSError as exc:
            log.warning("cannot open sink file yet", extra={"path": self.path, "error": str(exc)})

    async def _attempt(self, batch: Batch) -> Outcome:
        fd = self._open()
        view = memoryview(batch.ndjson())
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(fd)
        return Outcome()

    async def close(self) -> None:
        await super().close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# -- HTTP family -----------------------------------------------------------------


class _HTTPSink(Sink):
    """Shared by the HTTP, Loki and Elasticsearch sinks: session, TLS, headers, auth."""

    content_type = "application/x-ndjson"

    def _configure(self, **options: Any) -> None:
        from .http import parse_headers

        headers = options.pop("headers", None) or {}
        if isinstance(headers, list | tuple):
            headers = parse_headers(headers)
        self.headers: dict[str, str] = dict(headers)
        self.bearer_token_file: str | None = options.pop("bearer_token_file", None)
        self.compress: str | None = options.pop("compress", None) or None
        if self.compress not in (None, "none", "gzip"):
            raise UsageError(f"--compress: {self.compress!r} is not one of none, gzip")
        if self.compress == "none":
            self.compress = None
        self.ca_file: str | None = options.pop("ca_file", None)
        self.insecure = bool(options.pop("insecure", False))
        self.timeout = float(options.pop("timeout", 30.0))
        self._token: Any = None
        self._session: Any = None
        scheme, _, rest = self.url.partition("://")
        base = scheme.split("+", 1)[-1]
        if base not in ("http", "https"):
            raise UsageError(f"--sink {self.safe_url}: expected http or https after '+'")
        self.target = f"{base}://{rest}"
        self._configure_target(options)
        super()._configure(**options)

    def _configure_target(self, options: dict[str, Any]) -> None:
        pass

    async def start(self) -> None:
        from .http import BearerToken, client_session, ssl_context

        ctx = None
        if self.target.startswith("https://"):
            ctx = ssl_context(self.ca_file, self.insecure)
        if self.bearer_token_file:
            self._token = BearerToken(self.bearer_token_file)
        self._session = client_session(
            self.timeout, connect_timeout=min(10.0, self.timeout), ssl_ctx=ctx, limit=4
        )

    async def close(self) -> None:
        await super().close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(
        self, url: str, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            await self.start()
        headers = {"Content-Type": content_type, **self.headers, **(extra or {})}
        if self._token is not None:
            try:
                headers.update(self._token.header())
            except OSError as exc:
                raise Retry(f"cannot read bearer token file: {exc.strerror or exc}") from None
        if self.compress == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
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
            raise Retry(reason, parse_retry_after(headers.get("Retry-After")))
        return Outcome([], [(i, status, reason) for i in range(len(batch))])


@register_sink
class HTTPSink(_HTTPSink):
    """NDJSON batches POSTed to any HTTP endpoint."""

    schemes = ("http", "https")

    async def _attempt(self, batch: Batch) -> Outcome:
        status, headers, body = await self._post(self.target, batch.ndjson(), self.content_type)
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


_STANDARD = frozenset({"time", "message", "file", "labels", "truncated"})


@register_sink
class LokiSink(_HTTPSink):
    """The Loki push API: JSON streams, one per label set, nanosecond timestamps as strings.

    Stream labels are the record's `labels` plus `filename` (the record's
    `file`). The log line is the record's `message`; a record with other
    fields too (parsed JSON) is sent as JSON without its time and labels.
    """

    schemes = ("loki+http", "loki+https")
    content_type = "application/json"

    def _configure_target(self, options: dict[str, Any]) -> None:
        self.tenant: str | None = options.pop("tenant", None) or None
        self.static_labels: dict[str, str] = dict(options.pop("labels", None) or {})
        parts = urlsplit(self.target)
        path = parts.path if parts.path not in ("", "/") else "/loki/api/v1/push"
        self.target = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self._tcache: dict[str, int] = {}

    def encode(self, batch: Batch) -> bytes:
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for rec in batch.records():
            labels = {**self.static_labels}
            lab = rec.get("labels")
            if isinstance(lab, dict):
                labels.update({str(k): str(v) for k, v in lab.items()})
            if "file" in rec:
                labels["filename"] = str(rec["file"])
            key = tuple(sorted(labels.items()))
            ts = _parse_time_ns(rec.get("time"), self._tcache)
            msg = rec.get("message")
            if isinstance(msg, str) and rec.keys() <= _STANDARD:
                line = msg
            else:
                line = _dumps({k: v for k, v in rec.items() if k not in ("time", "labels")})
            streams.setdefault(key, []).append([str(ts), line])
        if len(self._tcache) > 10000:
            self._tcache.clear()
        payload = {"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}
        return _dumps(payload).encode("utf-8", "surrogatepass")

    async def _attempt(self, batch: Batch) -> Outcome:
        extra = {"X-Scope-OrgID": self.tenant} if self.tenant else None
        status, headers, body = await self._post(
            self.target, self.encode(batch), self.content_type, extra
        )
        return self._whole(batch, status, headers, body)


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
        status, headers, body = await self._post(self.target, self.encode(batch), self.content_type)
        if not 200 <= status < 300:
            return self._whole(batch, status, headers, body)
        try:
            resp = json.loads(body)
        except ValueError:
            raise Retry(f"HTTP {status} with a body that is not JSON") from None
        if not isinstance(resp, dict):
            raise Retry("bulk response is not a JSON object")
        if not resp.get("errors"):
            return Outcome()
        items = resp.get("items")
        if not isinstance(items, list) or len(items) != len(batch):
            raise Retry("bulk response items do not match the request")
        out = Outcome()
        for i, item in enumerate(items):
            res: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
            st = int(res.get("status", 0)) if isinstance(res, dict) else 0
            if 200 <= st < 300 or st == 409:
                continue
            err = res.get("error") if isinstance(res, dict) else None
            text = _dumps(err) if err is not None else f"status {st}"
            if st == 0 or _retryable_status(st):
                out.retry.append(i)
                out.retry_reason = f"bulk item status {st}: {text[:200]}"
            else:
                out.rejected.append((i, st, text))
        return out
