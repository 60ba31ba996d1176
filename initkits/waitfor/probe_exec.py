"""exec:///path/to/command?args=...: ready when the command exits 0.

For what no URL scheme covers (`pg_isready`, a CLI health check, a script):
`exec:///usr/bin/pg_isready?args=-h+db+-p+5432`. `args` is split as a shell
would split words (quotes work; no expansion, no shell). The command runs
once per attempt in its own process group with stdin from /dev/null; the
attempt's time limit (--attempt-timeout) kills the group. Its exit code and
last output line are the reason it is not ready.
"""

from __future__ import annotations

import shlex
from urllib.parse import SplitResult

from .base import NotReady, Probe, Settings, register

#: The attempt timeout bounds the run; this only keeps run_command's own cap out of the way.
NO_LIMIT = 24 * 3600.0


@register
class ExecProbe(Probe):
    schemes = ("exec",)
    network = False
    query_keys = frozenset({"args"})

    def __init__(self, url: str, parts: SplitResult, settings: Settings) -> None:
        super().__init__(url, parts, settings)
        try:
            self.argv = [self.path, *shlex.split(self.query.get("args", ""))]
        except ValueError as exc:
            raise ValueError(f"args: {exc}") from None

    async def check(self) -> None:
        from podkit.hooks import run_command

        try:
            code, out = await run_command(self.argv, timeout=NO_LIMIT, tail=300)
        except FileNotFoundError:
            raise NotReady(f"no such command {self.path}") from None
        except PermissionError:
            raise NotReady(f"{self.path} is not executable") from None
        if code != 0:
            last = out.strip().splitlines()[-1][:200] if out.strip() else ""
            raise NotReady(f"exited {code}" + (f": {last}" if last else ""))
