"""file:///path: ready when the path exists (`?nonempty=1`: a non-empty file)."""

from __future__ import annotations

import asyncio
import os
import stat
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, flag, register
from .net import blocking


@register
class FileProbe(Probe):
    schemes = ("file",)
    network = False
    query_keys = frozenset({"nonempty"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        self.nonempty = flag(self.query.get("nonempty", "0"))
        self._stat: asyncio.Future[os.stat_result] | None = None

    async def check(self) -> None:
        # stat() in a thread: a hung network mount must not freeze the other checks.
        # A stat() still hanging from an earlier attempt is awaited again rather
        # than joined by a new thread each attempt (with --timeout 0, forever).
        if self._stat is None or self._stat.done():
            self._stat = asyncio.ensure_future(blocking(os.stat, self.path))
            # Mark its outcome seen: after a timeout nobody may await it again,
            # and asyncio would log "exception was never retrieved" at exit.
            self._stat.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            st = await asyncio.shield(self._stat)
        except FileNotFoundError:
            raise NotReady("no such file or directory") from None
        if self.nonempty:
            if not stat.S_ISREG(st.st_mode):
                raise NotReady("not a regular file")
            if st.st_size == 0:
                raise NotReady("file is empty")
