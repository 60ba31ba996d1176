"""The proxy program: its options, listeners, workers and metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

from podkit import Sidecar, UsageError, option
from podkit.aio import wait_for
from podkit.options import Option

from .accesslog import ACCESS_LOG
from .compiled import compiled_modules
from .httpproxy import HttpListener
from .listener import BaseListener
from .settings import ListenerOptions, Settings
from .stats import Collector, Shared
from .tcp import TcpListener

log = logging.getLogger("podkit.proxy")

WORKER_ENV = "PODKIT_PROXY_WORKER"


class Proxy(Sidecar):
    """Localhost HTTP/TCP proxy: load balancing, retries, timeouts, ejection, TLS, credentials."""

    name = "proxy"
    examples = """\
podkit proxy --listen 127.0.0.1:8080 --upstream https://api:443 --bearer-token-file /secrets/token
podkit proxy --listen 127.0.0.1:8080 --upstream http://a:80 --upstream http://b:80 --retries 2
podkit proxy --listen 127.0.0.1:6379 --upstream tcp://redis-0:6379 --upstream tcp://redis-1:6379
"""
    default_admin_addr = "127.0.0.1:9416"

    listener: ListenerOptions = ListenerOptions.include()
    workers: int = option(
        1,
        min=1,
        max=64,
        help="processes sharing the listen ports with SO_REUSEPORT (metrics: summed)",
    )
    listeners: Any = option(
        None,
        config_only=True,
        help="list of listeners, each a mapping of the options above (listen, upstream, ...)",
    )

    def __init__(self) -> None:
        super().__init__()
        self.listener_settings: list[Settings] = []
        self.servers: list[BaseListener] = []
        self.children: list[asyncio.subprocess.Process] = []
        self._reported: set[int] = set()  # workers whose exit was logged
        self.worker = os.environ.get(WORKER_ENV) == "1"
        self.shared: Shared | None = None

    # -- configuration -------------------------------------------------------------

    def validate(self) -> None:
        group = ListenerOptions.options()
        base = {o.name: self.settings.get(o.name) for o in group}
        specs: list[tuple[dict[str, Any], str]] = []
        if self.listeners is not None:
            where = f"--config {self.config}: listeners"
            if not isinstance(self.listeners, list) or not self.listeners:
                raise UsageError(f"{where}: expected a non-empty list of mappings")
            by_key: dict[str, Option] = {}
            for o in group:
                by_key[o.config_key] = o
                by_key[o.name] = o
            for i, entry in enumerate(self.listeners):
                w = f"{where}[{i}]"
                if not isinstance(entry, dict):
                    raise UsageError(f"{w}: expected a mapping")
                values = dict(base)
                values["upstream"] = []
                values["listen"] = None
                for key, raw in entry.items():
                    found = by_key.get(str(key))
                    if found is None:
                        raise UsageError(f"{w}: unknown setting {key!r}")
                    o = found
                    if o.repeat and isinstance(raw, str):
                        raw = [raw]
                    values[o.name] = o.convert(raw, f"{w}.{key}")
                if not values["listen"]:
                    raise UsageError(f"{w}: listen is required")
                specs.append((values, w))
            if self.listener.upstream:
                specs.append((base, ""))  # the flags: each error names its own flag
        else:
            if not self.listener.upstream:
                raise UsageError("--upstream is required (or listeners in --config)")
            specs.append((base, ""))
        seen: set[str] = set()
        for values, where in specs:
            s = Settings.build(values, where)
            key = f"{s.host}:{s.port}"
            if key in seen and s.port != 0:
                pre = f"{where}: " if where else ""
                raise UsageError(f"{pre}listen address {s.listen} used twice")
            seen.add(key)
            s.reuse_port = self.workers > 1 or self.worker
            self.listener_settings.append(s)

    # -- life cycle ----------------------------------------------------------------

    async def setup(self) -> None:
        for s in self.listener_settings:
            lst: BaseListener = TcpListener(s) if s.mode == "tcp" else HttpListener(s)
            lst.on_error = self.record_error
            try:
                await lst.start()
            except OSError as exc:
                await lst.close()
                log.error("cannot listen", extra={"listen": s.listen, "error": str(exc)})
                raise RuntimeError(f"cannot listen on {s.listen}: {exc.strerror or exc}") from None
            except UsageError:
                await lst.close()
                raise
            self.servers.append(lst)
            log.info(
                "listening",
                extra={
                    "listen": s.listen,
                    "port": lst.bound_port,
                    "mode": s.mode,
                    "upstreams": [t.label for t in s.targets],
                },
            )
        self.shared = Shared(self)  # the workers' metrics reach the first process
        self.metrics.registry.register(Collector(self, self.shared))
        ACCESS_LOG.shared = self.workers > 1 or self.worker
        if self.workers > 1 and not self.worker:
            await self._spawn_workers()

    async def _spawn_workers(self) -> None:
        argv = sys.argv[1:]
        if argv and argv[0] == self.name:
            argv = argv[1:]
        assert self.shared is not None
        env = {**os.environ, WORKER_ENV: "1", "PODKIT_ADMIN_ADDR": "off", **self.shared.env()}
        # Drop `--admin-addr=X` and `--admin-addr X` (both tokens: a stray value would make
        # the worker exit with a usage error); the workers get `--admin-addr off` below.
        kept: list[str] = []
        skip = False
        for a in argv:
            if skip:
                skip = False
            elif a == "--admin-addr":
                skip = True
            elif not a.startswith("--admin-addr="):
                kept.append(a)
        argv = kept
        for _ in range(self.workers - 1):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "podkit.ambassadors.proxy",
                *argv,
                "--admin-addr",
                "off",
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self.children.append(proc)
        log.info(
            "workers started",
            extra={"workers": self.workers, "pids": [p.pid for p in self.children]},
        )

    async def run(self) -> None:
        self.set_ready()
        parent = os.getppid()
        while not self.stopping:
            if await self.sleep(1.0):
                break
            if self.worker and os.getppid() != parent:
                log.warning("parent process gone; worker stopping")
                break
            for child in self.children:
                if child.returncode is not None and child.pid not in self._reported:
                    self._reported.add(child.pid)
                    log.error(
                        "worker exited; its share of connections now goes to the others",
                        extra={"pid": child.pid, "exit_code": child.returncode},
                    )
        await self._drain()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.5, self.shutdown_timeout - 1.0)
        for child in self.children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for lst in self.servers:
            lst.stop_accepting()
        busy = sum(lst.busy() for lst in self.servers)
        if busy:
            log.info("draining", extra={"in_flight": busy})
        cut = 0
        for lst in self.servers:
            cut += await lst.drain(deadline)
        if cut:
            log.warning("shutdown deadline: closed connections still in flight", extra={"cut": cut})
        for child in self.children:
            try:
                await wait_for(child.wait(), max(0.1, deadline - loop.time()))
            except TimeoutError:
                child.kill()
        ACCESS_LOG.flush()

    async def cleanup(self) -> None:
        if self.shared is not None:
            await self.shared.close()
        for lst in self.servers:
            await lst.close()
        for child in self.children:
            if child.returncode is None:
                child.kill()
                await child.wait()
        ACCESS_LOG.flush()

    # -- what the admin server shows -------------------------------------------------

    def status(self) -> dict[str, Any]:
        active = sum(getattr(lst, "active", 0) for lst in self.servers)
        return {
            "active_requests": active,
            "workers": self.workers,
            # every figure below is this process's own: the workers share nothing
            "scope": f"process {os.getpid()} only" if self.workers > 1 else "the whole proxy",
            "listeners": [lst.status() for lst in self.servers],
            # the request path's modules run compiled by mypyc (the image), or not
            "compiled": all(compiled_modules().values()),
        }

    def health(self) -> str | None:
        return self._unhealthy


def main() -> None:
    Proxy.main()
