"""--stdin: a reader thread on fd 0, and the tailer's line rules for a pipe.

A thread, not add_reader: fd 0 may be a regular file, which epoll refuses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

from podkit.tailer import cut_long, decode_cut

#: Bytes asked of fd 0 per read: large reads keep the reader thread's GIL
#: hand-overs rare (one per few thousand lines).
STDIN_READ = 256 * 1024


class LineSplitter:
    """Bytes from a pipe in, complete decoded lines out (the tailer's rules for files).

    Invalid UTF-8 becomes U+FFFD; a line longer than `limit` bytes is cut to
    it and marked truncated, the rest skipped without buffering it.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.partial = b""
        self.skipping = False

    def feed(self, data: bytes) -> tuple[list[str], list[int]]:
        texts: list[str] = []
        trunc: list[int] = []
        cut = data.rfind(b"\n")
        if cut < 0:
            self._hold(data, texts, trunc)
            return texts, trunc
        block = self.partial + data[: cut + 1]
        self.partial = b""
        if self.skipping:  # the tail of an over-long line: drop it up to its newline
            nl = block.find(b"\n")
            block = block[nl + 1 :]
            self.skipping = False
        rest = data[cut + 1 :]
        if block:
            body = block[:-1]
            if len(body) > self.limit and max(map(len, body.split(b"\n"))) > self.limit:
                texts, trunc = cut_long(body, self.limit)
            else:  # the common case: one decode, one split
                texts = body.decode("utf-8", "replace").split("\n")
        if rest:
            self._hold(rest, texts, trunc)
        return texts, trunc

    def _hold(self, data: bytes, texts: list[str], trunc: list[int]) -> None:
        if self.skipping:
            return
        self.partial += data
        if len(self.partial) > self.limit:
            trunc.append(len(texts))
            texts.append(decode_cut(self.partial[: self.limit]))
            self.partial = b""
            self.skipping = True

    def finish(self) -> tuple[list[str], list[int]]:
        """End of input: a last line without newline is still a line."""
        if self.partial:
            text = self.partial.decode("utf-8", "replace")
            self.partial = b""
            return [text], []
        return [], []


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
        task = loop.create_task(queue.put(item))
        task.add_done_callback(lambda t: done.cancel() if t.cancelled() else done.set_result(None))

    loop.call_soon_threadsafe(put)
    return done
