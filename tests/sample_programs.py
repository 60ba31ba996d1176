"""Small programs that exercise the runner from the outside (as real subprocesses).

Run as: python tests/sample_programs.py NAME [options]
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from podkit import InitTask, SecretFile, Sidecar, option


class Basic(Sidecar):
    """A sidecar that gets ready at once and cleans up on stop."""

    name = "basic"
    every: float = option("1s", kind="duration", help="tick interval")
    count: int = option(3, help="a number")
    label: str = option("none", help="a label")
    upstream: str = option(None, kind="url", help="an upstream URL")
    password_file: str = option(None, help="a secret file")
    marker: str = option(None, help="file written by cleanup")
    cleanup_hang: bool = option(False, help="make cleanup hang (blocking)")
    fail: bool = option(False, help="raise from run()")
    unhealthy_after: float = option(0.0, kind="duration", help="report unhealthy after this")
    ready_after: float = option(0.0, kind="duration", help="become ready after this")

    async def run(self) -> None:
        if self.password_file:
            self.secret = SecretFile(self.password_file)
            self.log.info("using secret", extra={"value": self.secret.value()})
        if self.upstream:
            from podkit import redact_url

            self.log.info("upstream", extra={"url": redact_url(self.upstream)})
        self.log.info(
            "settings", extra={"every": self.every, "count": self.count, "label": self.label}
        )
        await asyncio.sleep(self.ready_after)
        self.set_ready()
        if self.fail:
            raise RuntimeError("boom from run")
        start = time.monotonic()
        while not self.stopping:
            if self.unhealthy_after and time.monotonic() - start > self.unhealthy_after:
                self.set_unhealthy("stuck")
            await self.sleep(0.05)

    async def cleanup(self) -> None:
        if self.cleanup_hang:
            time.sleep(3600)  # noqa: ASYNC251 -- blocks the loop on purpose: only the deadline can end it
        if self.marker:
            with open(self.marker, "w") as f:
                f.write("cleaned\n")

    def status(self) -> dict[str, Any]:
        return {"label": self.label, "secret_path": self.password_file}


class Sleeper(InitTask):
    """An init task that sleeps, then exits with --code."""

    name = "sleeper"
    seconds: float = option("10s", kind="duration")
    code: int = option(0)
    accepts_command = True

    async def run(self) -> int:
        await asyncio.sleep(self.seconds)
        if self.command:
            self.exec_after = self.command
        return self.code


PROGRAMS = {p.name: p for p in (Basic, Sleeper)}

if __name__ == "__main__":
    PROGRAMS[sys.argv[1]].main(sys.argv[2:])
