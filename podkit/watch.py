"""File-system change notification: watchdog (inotify) bridged into asyncio.

watchdog calls back on its own thread; `Watcher` hands each event to the
event loop thread-safely. Where inotify cannot be used (no instances left,
a filesystem without it), it falls back to watchdog's polling observer and
says so once in the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("podkit.watch")


@dataclass(frozen=True)
class Change:
    kind: str  # created, modified, deleted, moved, closed, opened
    path: str
    dest: str | None = None
    is_dir: bool = False


class Watcher:
    """Watch directories and call `callback(change)` on the event loop for each change."""

    def __init__(
        self,
        dirs: Iterable[str],
        callback: Callable[[Change], None],
        *,
        recursive: bool = True,
        poll_interval: float = 1.0,
        force_polling: bool = False,
    ) -> None:
        self.dirs = sorted({os.path.abspath(d) for d in dirs})
        self.callback = callback
        self.recursive = recursive
        self.poll_interval = poll_interval
        self.force_polling = force_polling
        self.polling = False
        self._observer: Any = None

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        loop = asyncio.get_running_loop()
        callback = self.callback

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                src = os.fsdecode(event.src_path)
                dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else None
                change = Change(event.event_type, src, dest, event.is_directory)
                try:
                    loop.call_soon_threadsafe(callback, change)
                except RuntimeError:  # loop closed during shutdown
                    pass

        handler = Handler()
        if not self.force_polling:
            try:
                from watchdog.observers import Observer

                obs = Observer()
                for d in self.dirs:
                    if os.path.isdir(d):
                        obs.schedule(handler, d, recursive=self.recursive)
                obs.start()
                self._observer = obs
                return
            except OSError as exc:
                log.warning("inotify unavailable; polling instead", extra={"error": str(exc)})
        from watchdog.observers.polling import PollingObserver

        pobs = PollingObserver(timeout=self.poll_interval)
        for d in self.dirs:
            if os.path.isdir(d):
                pobs.schedule(handler, d, recursive=self.recursive)
        pobs.start()
        self._observer = pobs
        self.polling = True

    def add(self, directory: str) -> None:
        """Watch one more directory (e.g. one created after start)."""
        from watchdog.events import FileSystemEventHandler

        d = os.path.abspath(directory)
        if d in self.dirs or self._observer is None:
            return
        self.dirs.append(d)
        handlers = {h for hs in self._observer._handlers.values() for h in hs}
        handler = next(iter(handlers)) if handlers else FileSystemEventHandler()
        self._observer.schedule(handler, d, recursive=self.recursive)

    async def stop(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            obs.stop()
            await asyncio.to_thread(obs.join, 5)
