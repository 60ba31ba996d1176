"""Protocol-level fakes, for the servers that cannot run here (MySQL 8, Kafka, MongoDB).

Each fake is an asyncio server on its own event-loop thread that speaks just
the part of the protocol a probe uses, and is named as a fake wherever a test
or a doc relies on it. Where a real server installs (PostgreSQL, MariaDB,
redis, RabbitMQ, Prometheus, ...), the tests use it instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ThreadedServer:
    """`handler` serving 127.0.0.1 on a free port from a loop thread of its own."""

    def __init__(self, handler: Handler) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(serve, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port: int = self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
