"""Protocol-level fakes, for the servers that cannot run here (MySQL 8, Kafka, MongoDB).

Each fake is an asyncio server on its own event-loop thread that speaks just
the part of the protocol a probe uses, and is named as a fake wherever a test
or a doc relies on it. Where a real server installs (PostgreSQL, MariaDB,
redis, RabbitMQ, Prometheus, ...), the tests use it instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests.peers.aioapp import LoopThread

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ThreadedServer(LoopThread):
    """`handler` serving 127.0.0.1 on a free port from a loop thread of its own."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = self.call(asyncio.start_server(serve, "127.0.0.1", 0))
        self.port: int = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.close)
        super().close()
