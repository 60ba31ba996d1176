"""file:///path: ready when the path exists (`?nonempty=1`: a non-empty file)."""

from __future__ import annotations

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

    async def check(self) -> None:
        # stat() in a thread: a hung network mount must not freeze the other checks.
        try:
            st = await blocking(os.stat, self.path)
        except FileNotFoundError:
            raise NotReady("no such file or directory") from None
        if self.nonempty:
            if not stat.S_ISREG(st.st_mode):
                raise NotReady("not a regular file")
            if st.st_size == 0:
                raise NotReady("file is empty")
