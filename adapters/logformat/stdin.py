"""--stdin: a reader thread on fd 0; lines are split by podkit.linesplit, as files are.

A thread, not add_reader: fd 0 may be a regular file, which epoll refuses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

from podkit import linesplit
from podkit.aio import spawn

#: Bytes asked of fd 0 per read: large reads keep the reader thread's GIL
#: hand-overs rare (one per few thousand lines).
STDIN_READ = 256 * 1024


class LineSplitter:
    """podkit.linesplit's rules (the tailer's), answering what logformat's loop takes:
    (texts, indices of truncated ones)."""

    def __init__(self, limit: int) -> None:
        self._split = linesplit.LineSplitter(limit)

    def feed(self, data: bytes) -> tuple[list[str], list[int]]:
        r = self._split.feed(data)
        if self._split.head is None:
            return r.texts, r.trunc
        # A pipe has no offsets to keep: the cut start of an over-long line goes
        # out at once, not when its newline comes (the rest is still skipped).
        held = self._split.flush()
        assert held is not None
        return [*r.texts, held[0]], [*r.trunc, len(r.texts)]

    def finish(self) -> tuple[list[str], list[int]]:
        """End of input: a last line without newline is still a line."""
        return self._split.finish()


def read_stdin(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None]) -> None:
    """The reader thread: blocks in read(0); the bounded queue is the back-pressure."""
    try:
        while True:
            try:
                data = os.read(0, STDIN_READ)
            except InterruptedError:
                continue
            except OSError:
                data = b""
            hand_over(loop, queue, data or None).result()
            if not data:
                return
    except BaseException:  # the loop closed or cancelled the put at exit: nothing to hand on
        return


def hand_over(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes | None], item: bytes | None
) -> concurrent.futures.Future[None]:
    """Put `item` on the queue from another thread; the future is done once it is queued.

    The put coroutine is made on the loop, not here: when the loop stops
    before it gets to it (output closed, shutdown), no coroutine is left
    un-awaited to warn about at exit.
    """
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def put() -> None:
        task = spawn(queue.put(item), loop)  # held until queued: the loop's hold is weak
        task.add_done_callback(lambda t: done.cancel() if t.cancelled() else done.set_result(None))

    loop.call_soon_threadsafe(put)
    return done
