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


def _content_event_filter() -> list[Any]:
    """Events that can mean content changed: no opens, no read-only closes."""
    from watchdog import events as ev

    return [
        ev.FileCreatedEvent,
        ev.DirCreatedEvent,
        ev.FileDeletedEvent,
        ev.DirDeletedEvent,
        ev.FileMovedEvent,
        ev.DirMovedEvent,
        ev.FileModifiedEvent,
        ev.DirModifiedEvent,
        ev.FileClosedEvent,
    ]


class Watcher:
    """Watch directories and call `callback(change)` on the event loop for each change.

    `reads=False` leaves out opens and read-only closes, both from the inotify
    mask and from the callbacks: a program that reads the files it watches
    (to hash them, say) would otherwise wake itself up forever.
    """

    def __init__(
        self,
        dirs: Iterable[str],
        callback: Callable[[Change], None],
        *,
        recursive: bool = True,
        poll_interval: float = 1.0,
        force_polling: bool = False,
        reads: bool = True,
    ) -> None:
        self.dirs = sorted({os.path.abspath(d) for d in dirs})
        self.callback = callback
        self.recursive = recursive
        self.poll_interval = poll_interval
        self.force_polling = force_polling
        self.reads = reads
        self.polling = False
        self._observer: Any = None
        self._handler: Any = None
        self._recursive_of: dict[str, bool] = {}
        self._watches: dict[tuple[str, bool], Any] = {}

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

        self._handler = Handler()
        if not self.force_polling:
            try:
                from watchdog.observers import Observer

                self._observer = Observer()
                for d in self.dirs:
                    if os.path.isdir(d):
                        self._schedule(d, self._recursive_of.get(d, self.recursive))
                self._observer.start()
                return
            except OSError as exc:
                self._observer = None
                self._watches.clear()
                log.warning("inotify unavailable; polling instead", extra={"error": str(exc)})
        from watchdog.observers.polling import PollingObserver

        self._observer = PollingObserver(timeout=self.poll_interval)
        for d in self.dirs:
            if os.path.isdir(d):
                self._schedule(d, self._recursive_of.get(d, self.recursive))
        self._observer.start()
        self.polling = True

    def _schedule(self, d: str, recursive: bool) -> None:
        kw: dict[str, Any] = {} if self.reads else {"event_filter": _content_event_filter()}
        self._watches[(d, recursive)] = self._observer.schedule(
            self._handler, d, recursive=recursive, **kw
        )

    def add(self, directory: str, recursive: bool | None = None) -> None:
        """Watch one more directory (e.g. one created after start).

        `recursive` overrides the watcher's default for this directory. Raises
        OSError when the directory cannot be watched (gone, or inotify's
        max_user_watches reached); before start() it is only recorded.
        """
        d = os.path.abspath(directory)
        rec = self.recursive if recursive is None else recursive
        if d in self.dirs and (d, rec) in self._watches:
            return
        if d not in self.dirs:
            self.dirs.append(d)
        self._recursive_of[d] = rec
        if self._observer is None:
            return
        try:
            self._schedule(d, rec)
        except OSError:
            self.dirs.remove(d)
            self._recursive_of.pop(d, None)
            raise

    def remove(self, directory: str) -> None:
        """Stop watching a directory given to the constructor or add()."""
        d = os.path.abspath(directory)
        if d in self.dirs:
            self.dirs.remove(d)
        rec = self._recursive_of.pop(d, self.recursive)
        watch = self._watches.pop((d, rec), None)
        if watch is not None and self._observer is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError):  # its emitter already stopped (directory deleted)
                pass

    def alive(self, directory: str) -> bool:
        """Is the watch on `directory` still delivering events?

        watchdog ends a watch whose directory was deleted. A directory made
        anew under the same name may even get the same inode number back, so
        a caller cannot tell from stat() alone that it must add() it again.
        """
        d = os.path.abspath(directory)
        watch = self._watches.get((d, self._recursive_of.get(d, self.recursive)))
        if watch is None or self._observer is None:
            return False
        emitter = getattr(self._observer, "_emitter_for_watch", {}).get(watch)
        return emitter is None or bool(emitter.is_alive())

    async def __aenter__(self) -> Watcher:
        """`async with Watcher(...) as w:` starts watching and stops at the end."""
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        obs, self._observer = self._observer, None
        self._watches.clear()
        if obs is not None:
            obs.stop()
            await asyncio.to_thread(obs.join, 5)
