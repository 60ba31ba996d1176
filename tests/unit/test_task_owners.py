"""Task owners start and stop their tasks as async context managers, and
wait on events rather than polling (issue 20)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from podkit import Backoff
from podkit.hooks import Retrier
from podkit.watch import Change, Watcher


async def test_retrier_idle_wakes_the_moment_the_action_succeeds() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def action(v: str) -> None:
        await release.wait()
        done.append(v)

    async with Retrier("t", action, Backoff(0.01, 0.02)) as r:
        r.submit("v")
        waiter = asyncio.create_task(r.idle(5))
        await asyncio.sleep(0)
        assert not waiter.done() and r.pending
        release.set()
        # No 20 ms poll: idle() returns within a few loop turns of the success.
        for _ in range(10):
            if waiter.done():
                break
            await asyncio.sleep(0)
        assert waiter.done() and waiter.result() is True and done == ["v"]
    assert r._task is None  # stopped on leaving the block


async def test_retrier_idle_times_out_while_pending_and_is_true_when_nothing_is() -> None:
    async def never(_: int) -> None:
        raise RuntimeError("down")

    async with Retrier("t", never, Backoff(0.01, 0.02)) as r:
        assert await r.idle(0) is True  # nothing submitted yet
        r.submit(1)
        assert await r.idle(0.05) is False
        assert r.pending


async def test_retrier_context_stops_its_task_even_on_error() -> None:
    async def ok(_: int) -> None:
        pass

    r: Retrier[int] = Retrier("t", ok, Backoff(0.01, 0.02))
    with pytest.raises(RuntimeError):
        async with r:
            task = r._task
            assert task is not None and not task.done()
            raise RuntimeError("body failed")
    assert task.cancelled() and r._task is None


async def test_watcher_context_starts_and_stops_the_observer(tmp_path: Path) -> None:
    seen = asyncio.Event()
    changes: list[Change] = []

    def on_change(c: Change) -> None:
        changes.append(c)
        seen.set()

    async with Watcher([str(tmp_path)], on_change) as w:
        assert w._observer is not None
        (tmp_path / "f").write_text("x")
        async with asyncio.timeout(10):
            await seen.wait()
    assert w._observer is None
    assert any(c.path.endswith("/f") for c in changes)


async def test_retrier_status_gives_rfc3339_times() -> None:
    import re

    async def ok(_: int) -> None:
        pass

    async with Retrier("t", ok, Backoff(0.01, 0.02)) as r:
        assert r.status()["last_success"] is None
        r.submit(1)
        assert await r.idle(5)
        when = r.status()["last_success"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", when), when
