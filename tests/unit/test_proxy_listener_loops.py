"""The listener's background loops (`_sweeper`, `_maintenance` in
ambassadors/proxy/listener.py) under a fault that is there on every turn.

The sweeper runs up to 100 times a second. Each failed turn used to write a
traceback (`log.exception`): a fault that stays, such as a connection object in a
state the sweep cannot handle, wrote one every 10 ms. A failed turn is now logged
through the listener's RateLimited, as serve()'s catch-all is, and the loop goes
on. The faults are injected through what the loops read (a connection, the TLS
options), not by replacing methods: the compiled build's classes refuse that.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from podkit.ambassadors.proxy.httpproxy import HttpListener
from podkit.ambassadors.proxy.listener import clock
from podkit.ambassadors.proxy.settings import Settings

from podkit.logs import RateLimited
from tests.helpers import wait_until_async

DEADLINE = 5.0


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Faults:
    """An attribute that raises every time it is read (`exc`, ValueError unless
    told), counting the reads."""

    def __init__(self) -> None:
        self.n = 0
        self.exc: type[Exception] = ValueError
        self.text = "broken"

    def fail(self) -> Any:
        self.n += 1
        raise self.exc(f"{self.text} {self.n}")


class BadConn:
    """A connection the sweep cannot read the state of."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    @property
    def state(self) -> Any:
        return self.faults.fail()


class BadTls:
    """Upstream TLS options whose files cannot be looked at."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    @property
    def ca_file(self) -> Any:
        return self.faults.fail()


def listener() -> HttpListener:
    values = {**Settings().values(), "upstream": ["http://127.0.0.1:9"], "listen": "127.0.0.1:0"}
    return HttpListener(Settings.build(values, ""))


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> list[logging.LogRecord]:
    """Run `main`; what the proxy's logger got meanwhile."""
    handler = Records()
    log = logging.getLogger("podkit.proxy")
    log.addHandler(handler)
    try:
        asyncio.run(asyncio.wait_for(main(), DEADLINE * 2))
    finally:
        log.removeHandler(handler)
    return handler.records


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_sweeper_failing_every_tick_logs_once_per_interval_and_keeps_sweeping() -> None:
    faults = Faults()

    async def main() -> None:
        lst = listener()
        lst.tick = 0.002
        lst.conns.add(BadConn(faults))
        task = asyncio.create_task(lst._sweeper())
        await wait_until_async(lambda: faults.n >= 60, what="60 failed sweeps")
        assert not task.done()  # a failed turn does not end the loop
        seen = faults.n
        await wait_until_async(lambda: faults.n >= seen + 20, what="20 more sweeps")
        assert clock.now == lst.now > 0  # the clocks still advance
        faults.exc, faults.text = KeyError, "x" * 1000  # another fault: its own record
        seen = faults.n
        await wait_until_async(lambda: faults.n >= seen + 20, what="20 sweeps failing otherwise")
        await stop(task)

    records = run(main)
    # 100 failed turns within one interval (10 s), two kinds of fault: two records,
    # with no traceback
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (logging.ERROR, "sweeper failed"),
        (logging.ERROR, "sweeper failed"),
    ]
    first, second = records
    assert first.exc_info is None
    assert first.error == "ValueError: broken 1"  # type: ignore[attr-defined]
    assert first.where.endswith("test_proxy_listener_loops.py:" + str(_line_of_fail()))  # type: ignore[attr-defined]
    error = second.error  # type: ignore[attr-defined]
    assert error.startswith("KeyError: 'xxx") and len(error) == 300  # cut to 300


def test_the_sweeper_passes_the_loops_time_on() -> None:
    """A client connection idle past --idle-timeout by the loop's clock is closed."""

    class Idle:
        state = 0  # IDLE
        closed = 0

        def close(self) -> None:
            self.closed += 1

    async def main() -> None:
        lst = listener()
        lst.tick = 0.002
        c = Idle()
        c.mark = lst.loop.time() - lst.s.idle_timeout - 1  # type: ignore[attr-defined]
        lst.conns.add(c)
        task = asyncio.create_task(lst._sweeper())
        await wait_until_async(lambda: c.closed > 0, what="the idle connection closed")
        await stop(task)

    assert run(main) == []


def test_held_back_sweeper_failures_are_counted_on_the_next_record() -> None:
    faults = Faults()

    async def main() -> None:
        lst = listener()
        lst.tick = 0.002
        lst.errors = RateLimited(logging.getLogger("podkit.proxy"), 0.1)
        lst.conns.add(BadConn(faults))
        task = asyncio.create_task(lst._sweeper())
        await wait_until_async(lambda: faults.n >= 100, what="100 failed sweeps")
        await stop(task)

    records = run(main)
    assert len(records) >= 2, "the interval passed at least once"
    assert len(records) <= faults.n // 5, (len(records), faults.n)
    assert {r.getMessage() for r in records} == {"sweeper failed"}
    # every failed turn is a record or counted on the next one; at most the last
    # interval's are still held back
    told = sum(1 + getattr(r, "repeated", 0) for r in records)
    assert told <= faults.n
    assert getattr(records[-1], "repeated", 0) >= 1


def test_maintenance_failing_every_turn_logs_once_per_interval_and_goes_on() -> None:
    faults = Faults()

    async def main() -> None:
        lst = listener()
        lst.maintenance_every = 0.002
        lst.ssl_ctx = ssl.create_default_context()  # so that it looks at the TLS files
        lst.s.upstream_tls = BadTls(faults)  # type: ignore[assignment]
        task = asyncio.create_task(lst._maintenance())
        await wait_until_async(lambda: faults.n >= 50, what="50 failed maintenance turns")
        assert not task.done()
        await stop(task)

    records = run(main)
    assert [(r.levelno, r.getMessage()) for r in records] == [(logging.ERROR, "maintenance failed")]
    assert records[0].exc_info is None
    assert records[0].error == "ValueError: broken 1"  # type: ignore[attr-defined]


def _line_of_fail() -> int:
    import inspect

    lines, start = inspect.getsourcelines(Faults.fail)
    return start + next(i for i, line in enumerate(lines) if "raise" in line)
