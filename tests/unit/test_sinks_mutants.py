"""What mutation testing of podkit/sinks.py (since split: podkit/sinks/_base.py)
found untested (docs/testing.md): the retry policy's bookkeeping — how long a
sink has been failing, what the retry warning says, a Retry-After date in the
past — tested as a user of / and the logs would rely on it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from podkit.sinks import NdjsonBatch, Outcome, Retry, Sink, parse_retry_after


class Flaky(Sink):
    """Fails `fails` times (a Retry), then delivers."""

    schemes = ("flaky",)

    def _configure(self, **options: Any) -> None:
        self.fails = int(options.pop("fails", 0))
        self.seen_failing: list[bool] = []
        super()._configure(**options)

    async def _attempt(self, batch: Any) -> Outcome:
        if self.fails:
            self.fails -= 1
            raise Retry("HTTP 503: down", kind="http_5xx")
        return Outcome()


def test_a_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("soon") is None and parse_retry_after("") is None


async def test_failing_since_is_kept_through_an_outage_and_cleared_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    during: list[tuple[float | None, str | None, float]] = []

    async def sleep(delay: float) -> None:
        during.append((sink.failing_since, sink.last_error, sink.status()["failing_for_seconds"]))

    sink = Flaky("flaky://x", fails=3, sleep=sleep, retry_max_backoff=0.5)
    caplog.set_level(logging.INFO, logger="podkit.sinks")
    await sink.send(NdjsonBatch(b'{"message":"a"}\n', 1))
    first = during[0][0]
    assert first is not None
    # The outage started at the first failure and is not restarted by the next ones.
    assert [d[0] for d in during] == [first, first, first]
    assert all(d[1] == "HTTP 503: down" for d in during)
    assert during[-1][2] >= 0.0
    assert sink.failing_since is None and sink.last_error is None
    assert sink.status()["failing_for_seconds"] == 0 and sink.retries == 3
    warn = [r for r in caplog.records if r.getMessage() == "delivery failed; retrying"]
    assert warn, [r.getMessage() for r in caplog.records]
    assert warn[0].sink == "flaky://x"  # type: ignore[attr-defined]
    assert warn[0].error == "HTTP 503: down"  # type: ignore[attr-defined]
    assert warn[0].levelno == logging.WARNING
    assert 0 <= warn[0].retry_in_seconds <= 0.5  # type: ignore[attr-defined]
    rec = [r for r in caplog.records if r.getMessage() == "sink recovered"]
    assert len(rec) == 1 and rec[0].sink == "flaky://x"  # type: ignore[attr-defined]
    assert rec[0].down_seconds >= 0  # type: ignore[attr-defined]


class Scripted(Sink):
    """Answers each attempt from `script`: "ok", an Outcome, or an exception to raise."""

    schemes = ("scripted",)

    def _configure(self, **options: Any) -> None:
        self.script: list[Any] = list(options.pop("script", []))
        self.attempts: list[int] = []  # records per attempt
        super()._configure(**options)

    async def _attempt(self, batch: Any) -> Outcome:
        self.attempts.append(len(batch))
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return Outcome() if step == "ok" else step


def _events(sink: Sink) -> list[tuple[str, int, str]]:
    got: list[tuple[str, int, str]] = []

    def hook(kind: str, n: int) -> None:
        # The reason is only meaningful during retry, split and dead_letter events.
        got.append((kind, n, sink.reason if kind in ("retry", "split", "dead_letter") else ""))

    sink.on_event = hook
    return got


async def test_every_event_of_a_delivery_with_a_split_a_reset_a_bisection_and_a_refusal(
    tmp_path: Any,
) -> None:
    import aiohttp

    record = b'{"m":"aaaa"}\n'  # 13 bytes
    refused = Outcome(refused=(400, "HTTP 400: bad"))
    delays: list[float] = []

    async def sleep(d: float) -> None:
        delays.append(d)
        errors.append(sink.last_error)

    errors: list[str | None] = []
    sink = Scripted(
        "scripted://x",
        script=[aiohttp.ClientConnectionError("reset"), "ok", refused, "ok", refused],
        max_body_bytes=2 * len(record),  # a half of 2 records is exactly the cap: it is sent
        dead_letter=str(tmp_path / "dead"),
        sleep=sleep,
    )
    events = _events(sink)
    await sink.send(NdjsonBatch(record * 4, 4))
    assert sink.attempts == [2, 2, 2, 1, 1]
    assert events == [
        ("split", 1, "size"),
        ("batch_retry", 1, ""),
        ("retry", 1, "connect"),
        ("delivered", 2, ""),
        ("batch_ok", 1, ""),
        ("split", 1, "bad_request"),
        ("delivered", 1, ""),
        ("batch_ok", 1, ""),
        ("dead_letter", 1, "bad_request"),
        ("batch_dead_letter", 1, ""),
    ]
    assert (sink.splits, sink.retries, sink.delivered, sink.dead_lettered) == (2, 1, 3, 1)
    assert len(delays) == 1 and errors == ["ClientConnectionError: reset"]
    assert sink.last_error is None  # recovered
    assert sink.status()["dead_letter_file"] == str(tmp_path / "dead")


async def test_every_split_is_counted() -> None:
    record = b'{"m":"aaaa"}\n'
    sink = Scripted("scripted://x", script=["ok"] * 4, max_body_bytes=2 * len(record))
    events = _events(sink)
    await sink.send(NdjsonBatch(record * 8, 8))  # 8 -> 4 + 4 -> 2 + 2 + 2 + 2
    assert sink.attempts == [2, 2, 2, 2] and sink.splits == 3
    assert events.count(("split", 1, "size")) == 3


@pytest.mark.parametrize(
    ("exc", "reason", "kind"),
    [
        (TimeoutError(), "TimeoutError", "timeout"),
        (
            ConnectionRefusedError(111, "refused"),
            "ConnectionRefusedError: [Errno 111] refused",
            "connect",
        ),
        (Retry("HTTP 503: busy", kind="http_5xx"), "HTTP 503: busy", "http_5xx"),
    ],
)
async def test_a_failed_attempt_says_why_and_is_retried_whole(
    exc: BaseException, reason: str, kind: str
) -> None:
    errors: list[str | None] = []

    async def sleep(d: float) -> None:
        errors.append(sink.last_error)

    sink = Scripted("scripted://x", script=[exc, "ok"], sleep=sleep)
    events = _events(sink)
    await sink.send(NdjsonBatch(b'{"m":1}\n{"m":2}\n', 2))
    assert sink.attempts == [2, 2] and errors == [reason]
    assert ("retry", 1, kind) in events and ("delivered", 2, "") in events


async def test_a_bug_in_an_attempt_is_raised_not_retried() -> None:
    sink = Scripted("scripted://x", script=[ValueError("a bug")])
    with pytest.raises(ValueError, match="a bug"):
        await sink.send(NdjsonBatch(b'{"m":1}\n', 1))


def test_a_new_sink_status() -> None:
    sink = Scripted("scripted://user:hunter22@host/x")
    assert sink.status() == {
        "url": "scripted://user:***@host/x",
        "delivered": 0,
        "dead_lettered": 0,
        "dead_letter_file": None,
        "retries": 0,
        "splits": 0,
        "last_error": None,
        "failing_for_seconds": 0,
    }
    assert sink.retry_max_backoff == 30.0 and sink.retry_after_max == 300.0


async def test_without_a_dead_letter_file_a_refused_record_is_dropped_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Scripted("scripted://x", script=[Outcome(rejected=[(0, 403, "HTTP 403: no")])])
    await sink.send(NdjsonBatch(b'{"m":1}\n', 1))
    assert sink.dead_lettered == 1 and sink.delivered == 0
    assert any(r.getMessage() == "records refused; dropped" for r in caplog.records)
