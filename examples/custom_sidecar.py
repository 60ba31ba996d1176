"""A custom sidecar in about 30 lines: touch a file every --every.

Run it:  python examples/custom_sidecar.py --admin-addr 127.0.0.1:9400
"""

from __future__ import annotations

import os
import time
from typing import Any

from podkit import Sidecar, option


class Heartbeat(Sidecar):
    """Touch a file every --every, so others can tell this pod is alive."""

    name = "heartbeat"
    # $TMPDIR as tempfile.gettempdir() reads it, without importing tempfile
    # (shutil, bz2, lzma: ~1 MB of RSS an idle sidecar never uses)
    path: str = option(
        os.path.join(os.environ.get("TMPDIR", "/tmp"), "heartbeat"), help="file to touch"
    )
    every: float = option("5s", kind="duration", help="how often to touch it")

    async def setup(self) -> None:
        self.beats = self.metrics.counter("beats_total", "Times the file was touched.")
        self.last_beat = 0.0

    async def run(self) -> None:
        while not self.stopping:
            with open(self.path, "a"):
                os.utime(self.path)
            self.beats.inc()
            self.last_beat = time.time()
            self.set_ready()
            await self.sleep(self.every)

    def status(self) -> dict[str, Any]:
        return {"path": self.path, "last_beat": self.last_beat}


if __name__ == "__main__":
    Heartbeat.main()
