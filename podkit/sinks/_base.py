"""The delivery policy every sink shares: `Sink.send()`, outcomes, reasons, the registry.

See the package docstring (`podkit.sinks`) for the policy itself.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..logs import RateLimited, rfc3339_ns
from ..options import UsageError
from ..retry import Backoff
from ..secrets import redact_url, scrub
from ._appendfile import _AppendFile, _DiskError
from ._batch import Batch, _dumps, _halves, _subset, as_batch

log = logging.getLogger("podkit.sinks")  # one logger for every sink, as before the split


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
                        # the server's answer may quote a credential: scrubbed as
                        # the log is (the record itself is the app's, sent as it was)
                        "error": scrub(error)[:2000],
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
