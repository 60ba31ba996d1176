"""asyncio helpers that keep cancellation intact on Python 3.11.

The images run Debian's Python 3.11, whose asyncio wait_for() swallows a
cancellation that arrives in the same loop iteration as the awaited thing
finishing (CPython gh-86296, fixed in 3.12): the task carries on as if nobody
had asked it to stop, and a shutdown or a --timeout is lost. Use these
instead; tests/unit/test_cancellation.py keeps asyncio.wait_for out of the code.

`until_stopped` is the one way to "run this until it finishes or the program
stops", instead of hand-built `asyncio.wait({x, stop})` races.

`spawn` starts a task nobody awaits (a connection's coroutine, fire and forget)
and holds it until it ends: the event loop itself keeps only a weak reference.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["spawn", "until_stopped", "wait_for", "wait_or_timeout"]

# The tasks spawn() started that have not ended yet (asyncio's documented pattern).
_running: set[asyncio.Task[Any]] = set()


def spawn(
    coro: Coroutine[Any, Any, T], loop: asyncio.AbstractEventLoop | None = None
) -> asyncio.Task[T]:
    """loop.create_task() for a task whose starter does not keep it: it is held
    here until it ends. The loop's own reference is weak, so a pending task
    waiting on a future that only it holds would be garbage-collected mid-way:
    closed where it waits, whenever the collector runs, never finishing ("Task
    was destroyed but it is pending!"). The loop, when given, saves looking up
    the running one."""
    task = (loop or asyncio.get_running_loop()).create_task(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


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


async def until_stopped(aw: Awaitable[object], stop: asyncio.Event) -> bool:
    """Wait until `aw` finishes (True) or `stop` is set first (False).

    When `aw` finishes, its exception (if any) is raised here; when both
    happen at once, finishing wins (data read as the stop arrives is kept).
    A coroutine is run in a task of its own that is cancelled (and awaited)
    on stop or when the caller is cancelled. A Task or Future passed in is
    the caller's: on stop it is left running, to be drained, bounded or
    cancelled as the program's shutdown needs."""
    fut = asyncio.ensure_future(aw)
    owned = fut is not aw
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({fut, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        if owned:
            await _cancel(fut)
        raise
    finally:
        waiter.cancel()
    if fut.done():
        fut.result()
        return True
    if owned:
        await _cancel(fut)
    return False


async def _cancel(fut: asyncio.Future[object]) -> None:
    """Cancel and wait for `fut`; asyncio.wait, unlike `await fut`, lets a
    cancel of the caller itself through instead of swallowing it."""
    fut.cancel()
    await asyncio.wait({fut})
    if not fut.cancelled():
        fut.exception()  # retrieved: it ended with its own error as it was cancelled
