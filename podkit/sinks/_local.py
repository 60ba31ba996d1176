"""The sinks on this machine: standard output and a file."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from ..options import UsageError
from ._appendfile import _AppendFile
from ._base import Outcome, Sink, SinkClosed, register_sink
from ._batch import Batch

log = logging.getLogger("podkit.sinks")  # one logger for every sink, as before the split


@register_sink
class StdoutSink(Sink):
    """NDJSON on standard output (the container log, read by the node's collector).

    Written from a worker thread: a slow reader of the pipe blocks that
    thread, not the event loop (the admin server and the tailer keep going).
    """

    schemes = ("stdout",)

    def _configure(self, **options: Any) -> None:
        self.stream = options.pop("stream", None)
        self._order = asyncio.Lock()  # see FileSink
        super()._configure(**options)

    def _write(self, data: bytes) -> None:
        stream = self.stream or sys.stdout.buffer
        try:
            stream.write(data)
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

    async def _attempt(self, batch: Batch) -> Outcome:
        async with self._order:
            await asyncio.to_thread(self._write, self._body(batch))
        return Outcome()


@register_sink
class FileSink(Sink):
    """NDJSON appended to a file, whole records only (`_AppendFile`), off the event loop."""

    schemes = ("file",)

    def _configure(self, **options: Any) -> None:
        parts = urlsplit(self.url)
        if parts.netloc not in ("", "localhost"):
            raise UsageError(f"--sink {self.safe_url}: use file:///absolute/path")
        self.path = parts.path
        if not self.path or self.path.endswith("/"):
            raise UsageError(f"--sink {self.safe_url}: a file path is required")
        self.fsync = bool(options.pop("fsync", False))
        self._file = _AppendFile(self.path, self.fsync)
        # Concurrent send()s write in the order they were called, as when the
        # write was synchronous (asyncio.Lock is FIFO; the worker threads are not).
        self._order = asyncio.Lock()
        super()._configure(**options)

    async def start(self) -> None:
        try:
            self._file.open()
        except OSError as exc:
            log.warning("cannot open sink file yet", extra={"path": self.path, "error": str(exc)})

    async def _attempt(self, batch: Batch) -> Outcome:
        async with self._order:
            await asyncio.to_thread(self._file.append, self._body(batch))
        return Outcome()

    async def close(self) -> None:
        await super().close()
        self._file.close()
