"""podkit.watch as its users see it: what an inotify queue overflow makes them do.

watchdog left its "events_lost" out of a `reads=False` watcher, so the
reloader heard nothing of an overflow and waited for its resync (minutes).
The backend reports it whatever `reads` is, on each watched directory.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from podkit.sidecars.reloader import Reloader

from podkit import watch
from podkit.runner import configure
from tests.helpers import wait_until_async


@pytest.fixture
async def reloader(tmp_path: Path) -> AsyncIterator[Reloader]:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.conf").write_text("v1")
    p = configure(Reloader, ["--watch", str(tmp_path / "conf"), "--command", "true"], env={})
    assert isinstance(p, Reloader)
    await p.setup()
    yield p
    await p.cleanup()


async def test_an_overflow_makes_the_reloader_look_again(reloader: Reloader) -> None:
    p = reloader
    p.watcher.start()
    if p.watcher.polling:
        pytest.skip("no inotify here")
    await p._check("start")
    assert p._placed and p._debounce_handle is None
    overflow = struct.pack("iIII", -1, watch.IN_Q_OVERFLOW, 0, 0)
    p.watcher._observer.feed(overflow)
    await wait_until_async(lambda: p._debounce_handle is not None, what="a scan armed")
