"""asyncio helpers that keep cancellation intact on Python 3.11.

The images run Debian's Python 3.11, whose asyncio wait_for() swallows a
cancellation that arrives in the same loop iteration as the awaited thing
finishing (CPython gh-86296, fixed in 3.12): the task carries on as if nobody
had asked it to stop, and a shutdown or a --timeout is lost. Use these
instead; tests/unit/test_cancellation.py keeps asyncio.wait_for out of the code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["wait_for", "wait_or_timeout"]


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """asyncio.wait_for's contract (TimeoutError, the awaitable cancelled) built
    on asyncio.timeout(), which re-raises an outside cancel whatever the timing."""
    async with asyncio.timeout(timeout):
        return await aw


async def wait_or_timeout(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait for the event at most `timeout` seconds: True if it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
