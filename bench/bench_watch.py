"""podkit.watch: what a Watcher costs per watched directory, and its latency.

Before: the Watcher as it was until 2026-12-06, watchdog 7's inotify
Observer (one inotify instance per Observer, one emitter thread per
scheduled directory, events handed to the loop with call_soon_threadsafe).
It is rebuilt here as it was (`Before`), so the comparison runs in one tree.
After: podkit.watch.Watcher, its own inotify instance read by the event loop.

For 1, 100 and 300 watched directories, each in a fresh subprocess: threads
added, inotify instances (links to anon_inode:inotify in /proc/self/fd), RSS
(VmRSS) after the watches are set up and the time start() takes. Latency: a
write to a file in the last watched directory -> its "modified" change
delivered to the asyncio callback, one at a time, median and p99 over EVENTS.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

EVENTS = 1000
COUNTS = (1, 100, 300)


class Before:
    """main's Watcher before 2026-12-06: watchdog's Observer (the inotify path only)."""

    def __init__(self, dirs: list[str], callback: Callable[[Any], None]) -> None:
        self.dirs, self.callback = dirs, callback
        self.polling = False

    def start(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        from podkit.watch import Change

        loop = asyncio.get_running_loop()
        callback = self.callback

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                src = os.fsdecode(event.src_path)
                dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else None
                change = Change(event.event_type, src, dest, event.is_directory)
                loop.call_soon_threadsafe(callback, change)

        self.observer: Any = Observer()
        handler = Handler()
        for d in self.dirs:
            self.observer.schedule(handler, d, recursive=True)
        self.observer.start()

    async def stop(self) -> None:
        self.observer.stop()
        await asyncio.to_thread(self.observer.join, 5)


def inotify_instances() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            pass
    return n


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def child(kind: str, count: int, latency: bool) -> dict[str, Any]:
    import watchdog.observers  # noqa: F401  (both sides pay for the import alike)

    from podkit.watch import Change, Watcher

    root = tempfile.mkdtemp(prefix="bench-watch-")
    dirs = [os.path.join(root, f"c{i:03d}") for i in range(count)]
    for d in dirs:
        os.mkdir(d)
    target = os.path.join(dirs[-1], "0.log")
    got = asyncio.Event()

    def on_change(c: Change) -> None:
        if c.kind == "modified" and c.path == target:
            got.set()

    threads, instances, rss0 = threading.active_count(), inotify_instances(), rss_kb()
    w: Any = Before(dirs, on_change) if kind == "before" else Watcher(dirs, on_change)
    t0 = time.perf_counter()
    w.start()
    setup = time.perf_counter() - t0
    assert not w.polling
    await asyncio.sleep(0.2)  # let the threads (before) settle
    out: dict[str, Any] = {
        "threads": threading.active_count() - threads,
        "instances": inotify_instances() - instances,
        "rss_kb": rss_kb(),
        "rss_added_kb": rss_kb() - rss0,
        "setup_ms": setup * 1000,
    }
    if latency:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        await asyncio.sleep(0.2)
        lat = []
        for _ in range(EVENTS):
            got.clear()
            t = time.perf_counter()
            os.write(fd, b"x\n")
            await asyncio.wait_for(got.wait(), 5)
            lat.append((time.perf_counter() - t) * 1e3)
        os.close(fd)
        lat.sort()
        out["p50_ms"] = statistics.median(lat)
        out["p99_ms"] = lat[int(len(lat) * 0.99) - 1]
    await w.stop()
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        res = asyncio.run(child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"))
        print(json.dumps(res))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=here)
    print(
        "| watcher | dirs | threads | inotify instances | VmRSS (added) | start()"
        " | write -> callback p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|")
    for count in COUNTS:
        for kind in ("before", "after"):
            cmd = [sys.executable, __file__, "--child", kind, str(count), "1"]
            r = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)
            print(
                f"| {kind} | {count} | {r['threads']} | {r['instances']} "
                f"| {r['rss_kb'] / 1024:.1f} MB ({r['rss_added_kb'] / 1024:+.1f}) "
                f"| {r['setup_ms']:.1f} ms | {r['p50_ms']:.3f} / {r['p99_ms']:.3f} ms |"
            )


if __name__ == "__main__":
    main()
