"""proxy: a localhost ambassador for the app's outbound HTTP and TCP connections.

The app talks to 127.0.0.1; the proxy brokers each request (or TCP connection)
to the real upstreams, adding what the app should not have to know: which
replicas exist, retries, timeouts, outlier ejection, TLS and credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
from typing import Any

from podkit import Sidecar, UsageError, option
from podkit.aio import wait_for
from podkit.http import parse_header
from podkit.options import Option

from .discovery import DnsOptions
from .http1 import MAX_HEADERS
from .httpproxy import ACCESS_LOG, HttpListener
from .listener import BaseListener, Settings, group_for
from .stats import Collector, Shared
from .tcp import TcpListener
from .tls_in import TlsInOptions
from .upstream import Target, parse_target

log = logging.getLogger("podkit.proxy")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# framing and hop-by-hop headers belong to each connection; the proxy writes these itself
_NOT_SETTABLE = (
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
)

RETRY_WORDS = ("connect-failure", "reset", "timeout", "5xx")
LB_POLICIES = ("p2c-ewma", "round-robin", "least-request", "weighted")
# Options that describe the program, not a listener (a listener entry may not set them).
PROGRAM_LEVEL = {
    "config",
    "admin_addr",
    "log_format",
    "log_level",
    "shutdown_timeout",
    "listeners",
    "workers",
}
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

    listen: str = option(
        "127.0.0.1:8080",
        help="where the app connects: HOST:PORT for HTTP, tcp://HOST:PORT for TCP mode",
    )
    upstream: list[str] = option(
        repeat=True,
        help="upstream URL, repeatable: http(s)://HOST:PORT or tcp(s)://HOST:PORT; "
        "append ';weight=N' for --lb weighted",
        metavar="URL",
    )
    lb: str = option(
        "p2c-ewma",
        help="load balancing: p2c-ewma, round-robin, least-request, weighted or hash-header:NAME",
    )
    connect_timeout: float = option("1s", kind="duration", help="timeout to connect to an upstream")
    try_timeout: float | None = option(
        None, kind="duration", help="timeout for one try's response head (default: none)"
    )
    timeout: float = option(
        "15s", kind="duration", help="timeout for the response head, all tries included"
    )
    retries: int = option(2, help="retries per request (idempotent or not yet sent)")
    retry_on: str = option(
        "connect-failure,reset,502,503,504",
        help="what is retried: connect-failure, reset, timeout, 5xx, or 5xx status codes",
    )
    retry_budget: str = option(
        "20%", help="retries in flight at most this share of active requests (at least 3)"
    )
    max_connections: int = option(1024, help="connections per upstream")
    max_pending: int = option(1024, help="requests waiting for a connection, per upstream")
    max_requests: int = option(1024, help="requests in flight per upstream")
    eject_after: int = option(5, help="consecutive failures that eject an upstream")
    eject_time: float = option(
        "30s", kind="duration", help="ejection time, multiplied by the number of ejections"
    )
    max_eject_time: float = option("300s", kind="duration", help="the longest ejection")
    health_path: str | None = option(
        None, help="HTTP path probed on every upstream (TCP mode always probes by connecting)"
    )
    health_interval: float = option("5s", kind="duration", help="time between health checks")
    health_timeout: float = option("2s", kind="duration", help="timeout of one health check")
    ca_file: str | None = option(None, kind="path", help="CA bundle for upstream TLS")
    cert_file: str | None = option(
        None, kind="path", help="client certificate for upstream TLS (reloaded on change)"
    )
    key_file: str | None = option(
        None, kind="path", help="client key for upstream TLS (reloaded on change)"
    )
    sni: str | None = option(None, help="TLS server name sent to and verified on upstreams")
    bearer_token_file: str | None = option(
        None,
        kind="path",
        help="file with a token sent as 'Authorization: Bearer' (re-read on change)",
    )
    set_header: list[str] = option(
        repeat=True, help="'Name: value' set on every upstream request, repeatable"
    )
    preserve_host: bool = option(
        False, help="pass the client's Host header instead of the upstream's"
    )
    max_header_bytes: int = option("8KiB", kind="size", help="largest request head (431 beyond)")
    max_headers: int = option(
        MAX_HEADERS, help="most header lines in a request (431 beyond) or a response (502 beyond)"
    )
    max_body_bytes: int | None = option(
        None, kind="size", help="largest request body (413 beyond; default: unlimited)"
    )
    idle_timeout: float = option(
        "60s", kind="duration", help="close connections (and streams) idle this long"
    )
    header_timeout: float = option(
        "10s", kind="duration", help="a client must send its request head within this time"
    )
    access_log: bool = option(True, help="one JSON line per request (TCP: per connection)")
    dns: DnsOptions = DnsOptions.include()
    tls_in: TlsInOptions = TlsInOptions.include()
    workers: int = option(
        1, help="processes sharing the listen ports with SO_REUSEPORT (metrics: summed)"
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
        opts = {o.name: o for o in self.options()}
        base = {n: self.settings.get(n) for n in opts if n not in PROGRAM_LEVEL}
        specs: list[tuple[dict[str, Any], str]] = []
        if self.listeners is not None:
            where = f"--config {self.config}: listeners"
            if not isinstance(self.listeners, list) or not self.listeners:
                raise UsageError(f"{where}: expected a non-empty list of mappings")
            by_key: dict[str, Option] = {}
            for o in opts.values():
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
                    if found is None or found.name in PROGRAM_LEVEL:
                        raise UsageError(f"{w}: unknown setting {key!r}")
                    o = found
                    if o.repeat and isinstance(raw, str):
                        raw = [raw]
                    values[o.name] = o.convert(raw, f"{w}.{key}")
                if not values["listen"]:
                    raise UsageError(f"{w}: listen is required")
                specs.append((values, w))
            if self.upstream:
                specs.append((base, ""))  # the flags: each error names its own flag
        else:
            if not self.upstream:
                raise UsageError("--upstream is required (or listeners in --config)")
            specs.append((base, ""))
        if self.workers < 1 or self.workers > 64:
            raise UsageError("--workers: must be 1..64")
        seen: set[str] = set()
        for values, where in specs:
            s = self._settings(values, where)
            key = f"{s.host}:{s.port}"
            if key in seen and s.port != 0:
                pre = f"{where}: " if where else ""
                raise UsageError(f"{pre}listen address {s.listen} used twice")
            seen.add(key)
            s.reuse_port = self.workers > 1 or self.worker
            self.listener_settings.append(s)

    def _settings(self, v: dict[str, Any], where: str) -> Settings:
        listen = str(v["listen"])
        mode = "http"
        addr = listen
        if listen.startswith("tcp://"):
            mode, addr = "tcp", listen[6:]
        elif listen.startswith("http://"):
            addr = listen[7:]
        # A listener from --config says where it is; the flags name themselves.
        pre = f"{where}: " if where else ""
        host, sep, port = addr.rstrip("/").rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            hint = f" (did you mean 127.0.0.1:{addr}?)" if addr.isdigit() else ""
            raise UsageError(f"{pre}--listen {listen!r}: expected [tcp://]HOST:PORT{hint}")
        host = host.strip("[]") or "127.0.0.1"
        ups = v["upstream"]
        if not ups:
            raise UsageError(f"{pre}at least one upstream is needed for {listen}")
        targets: list[Target] = [parse_target(u, where or "--upstream", mode == "tcp") for u in ups]
        lb = str(v["lb"])
        hash_header = None
        if lb.startswith("hash-header:"):
            name = lb.split(":", 1)[1].strip()
            if not name or any(c in name for c in " \t:"):
                raise UsageError(f"{pre}--lb hash-header:NAME needs a header name")
            hash_header = name.encode().lower()
        elif lb not in LB_POLICIES:
            raise UsageError(
                f"--lb: {lb!r} is not one of {', '.join(LB_POLICIES)}, hash-header:NAME"
            )
        on: set[str] = set()
        statuses: set[int] = set()
        for word in str(v["retry_on"]).split(","):
            word = word.strip().lower()
            if not word:
                continue
            if word == "5xx":
                codes = range(500, 600)
            elif word.isdigit() and 500 <= int(word) <= 599:
                codes = range(int(word), int(word) + 1)
            elif word in RETRY_WORDS:
                on.add(word)
                continue
            else:
                raise UsageError(
                    f"--retry-on: {word!r} is not connect-failure, reset, timeout, 5xx "
                    "or a 5xx code"
                )
            for c in codes:
                statuses.add(c)
                on.add(str(c))
        budget_txt = str(v["retry_budget"]).strip()
        try:
            budget = float(budget_txt[:-1]) / 100 if budget_txt.endswith("%") else float(budget_txt)
        except ValueError:
            raise UsageError(
                f"--retry-budget: {budget_txt!r} is not a share like 20% or 0.2"
            ) from None
        if not 0 <= budget <= 1:
            raise UsageError("--retry-budget: must be between 0% and 100%")
        headers = [parse_header(h, "--set-header") for h in v["set_header"]]
        for name, value in headers:
            # parse_header only refuses CR/LF: the name must be a token and the value free
            # of control characters, or the head sent upstream is malformed (or worse).
            if not _TOKEN.fullmatch(name) or _CTL.search(value):
                raise UsageError(f"--set-header: {name!r} is not a valid header line")
            if name.lower() in _NOT_SETTABLE:
                raise UsageError(f"--set-header: {name} cannot be set")
            if name.lower() == "authorization" and v["bearer_token_file"]:
                # two Authorization lines would reach the upstream, which picks one
                raise UsageError("--set-header: Authorization conflicts with --bearer-token-file")
        for n in (
            "retries",
            "max_connections",
            "max_pending",
            "max_requests",
            "eject_after",
            "max_headers",
        ):
            least = 0 if n in ("retries", "max_pending") else 1
            if int(v[n]) < least:
                raise UsageError(f"--{n.replace('_', '-')}: must be at least {least}")
        if bool(v["cert_file"]) != bool(v["key_file"]) and v["cert_file"] is None:
            raise UsageError("--key-file needs --cert-file")
        for n in ("ca_file", "cert_file", "key_file", "bearer_token_file"):
            path = v[n]
            if path and not os.path.exists(path):
                raise UsageError(f"--{n.replace('_', '-')}: {path}: no such file")
        health_path = v["health_path"]
        if health_path is not None and not str(health_path).startswith("/"):
            raise UsageError("--health-path: must start with /")
        if float(v["timeout"]) <= 0:
            raise UsageError("--timeout: must be positive")
        return Settings(
            listen=listen,
            mode=mode,
            host=host,
            port=int(port),
            targets=targets,
            lb="hash-header" if hash_header else lb,
            hash_header=hash_header,
            connect_timeout=float(v["connect_timeout"]),
            try_timeout=float(v["try_timeout"]) if v["try_timeout"] else None,
            timeout=float(v["timeout"]),
            retries=int(v["retries"]),
            retry_on=frozenset(on),
            retry_statuses=frozenset(statuses),
            retry_budget=budget,
            max_connections=int(v["max_connections"]),
            max_pending=int(v["max_pending"]),
            max_requests=int(v["max_requests"]),
            eject_after=int(v["eject_after"]),
            eject_time=float(v["eject_time"]),
            max_eject_time=max(float(v["max_eject_time"]), float(v["eject_time"])),
            health_path=health_path,
            health_interval=float(v["health_interval"]),
            health_timeout=float(v["health_timeout"]),
            ca_file=v["ca_file"],
            cert_file=v["cert_file"],
            key_file=v["key_file"],
            sni=v["sni"],
            bearer_token_file=v["bearer_token_file"],
            set_headers=headers,
            preserve_host=bool(v["preserve_host"]),
            max_header_bytes=int(v["max_header_bytes"]),
            max_headers=int(v["max_headers"]),
            max_body_bytes=int(v["max_body_bytes"]) if v["max_body_bytes"] is not None else None,
            idle_timeout=float(v["idle_timeout"]),
            header_timeout=float(v["header_timeout"]),
            access_log=bool(v["access_log"]),
            dns=group_for(DnsOptions, v),
            tls_in=group_for(TlsInOptions, v),
        )

    # -- life cycle ----------------------------------------------------------------

    async def setup(self) -> None:
        for s in self.listener_settings:
            lst: BaseListener = TcpListener(s) if s.mode == "tcp" else HttpListener(s)
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
        }

    def health(self) -> str | None:
        return self._unhealthy


def main() -> None:
    Proxy.main()
