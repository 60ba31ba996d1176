"""A cancellation is never lost.

Python 3.11 (the images' python) has asyncio.wait_for() swallow a cancel that
arrives in the same loop iteration as the awaited thing finishing
(CPython gh-86296, fixed in 3.12): the task carries on as if nothing asked it
to stop. These tests put the cancel exactly there, deterministically.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from podkit.initkits.waitfor.net import close


class _Writer:
    """Enough of a StreamWriter for close(): wait_closed() is a future the test settles."""

    def __init__(self, fut: asyncio.Future[None]) -> None:
        self.fut = fut

    def close(self) -> None:
        pass

    def wait_closed(self) -> asyncio.Future[None]:
        return self.fut


async def _cancel_as_it_finishes(fut: asyncio.Future[None], task: asyncio.Task[Any]) -> None:
    await asyncio.sleep(0)  # the task is now waiting on fut
    await asyncio.sleep(0)
    fut.set_result(None)
    task.cancel()


async def test_waitfor_close_keeps_a_cancel_that_meets_the_close() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    carried_on = asyncio.Event()

    async def probe() -> None:
        await close(_Writer(fut))  # type: ignore[arg-type]
        carried_on.set()  # a swallowed cancel gets here
        await asyncio.sleep(30)

    task = asyncio.create_task(probe())
    await _cancel_as_it_finishes(fut, task)
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not carried_on.is_set()


async def test_podkit_wait_for_keeps_a_cancel_that_meets_the_end() -> None:
    from podkit.aio import wait_for

    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    carried_on = asyncio.Event()

    async def waiter() -> None:
        await wait_for(fut, 5)
        carried_on.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(waiter())
    await _cancel_as_it_finishes(fut, task)
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not carried_on.is_set()


async def test_podkit_wait_for_times_out_and_cancels_what_it_waited_on() -> None:
    from podkit.aio import wait_for

    inner = asyncio.ensure_future(asyncio.sleep(30))
    with pytest.raises(TimeoutError):
        await wait_for(inner, 0.01)
    await asyncio.sleep(0)
    assert inner.cancelled()


def test_no_asyncio_wait_for_in_the_code() -> None:
    """The class of bug, not one instance: every wait with a timeout goes
    through podkit.aio (asyncio.timeout underneath)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in ("podkit", "sidecars", "adapters", "ambassadors", "initkits"):
        for path in (root / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"asyncio\.wait_for\(", line.split("#")[0]):
                    found.append(f"{path.relative_to(root)}:{n}")
    assert not found, "use podkit.aio.wait_for: " + ", ".join(found)
