"""The program model: what a sidecar, adapter, ambassador or init task is.

A program declares its options and implements `run()`. Everything around
`run()` (parsing, logging, the admin server, signals, the shutdown deadline,
exit codes) belongs to the runner in `podkit.runner`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .aio import until_stopped, wait_or_timeout
from .options import GroupField, Option, collect_options, option

if TYPE_CHECKING:
    from .admin import Handler
    from .metrics import Metrics


class Program:
    """Base of every podkit program. Subclass `Sidecar` or `InitTask`, not this."""

    name: ClassVar[str] = ""
    #: One line shown by `podkit` and in --help; defaults to the docstring's first line.
    summary: ClassVar[str] = ""
    #: The admin server's default address; "off" for none.
    default_admin_addr: ClassVar[str] = "127.0.0.1:9400"
    #: Command lines shown under EXAMPLES in --help, one per line ("# comment" lines allowed).
    examples: ClassVar[str] = ""
    #: When True, argv after `--` is kept as `self.command` (for exec-style programs).
    accepts_command: ClassVar[bool] = False
    #: Another tool's env prefixes (e.g. "GITSYNC_") read as fallbacks for this
    #: class's own options, so its users can switch without renaming variables.
    env_prefixes: ClassVar[tuple[str, ...]] = ()

    config: str | None = option(None, help="YAML file with settings", kind="path")
    admin_addr: str = option(
        None, help="admin server HOST:PORT (/healthz, /readyz, /metrics, /) or 'off'", kind="addr"
    )
    # The admin server's limits, TLS and auth, declared once for every program
    # (podkit.admin says why each exists; docs/custom-sidecar.md lists them).
    admin_max_connections: int = option(
        64,
        min=1,
        help="admin connections held at once (more close the longest idle; "
        "a few more are kept for /healthz and /readyz)",
        env_alias=False,
    )
    admin_tls_cert_file: str | None = option(
        None,
        help="serve the admin server over TLS with this certificate (PEM, re-read on change)",
        kind="path",
        env_alias=False,
    )
    admin_tls_key_file: str | None = option(
        None, help="the TLS certificate's private key (PEM)", kind="path", env_alias=False
    )
    admin_tls_client_ca_file: str | None = option(
        None,
        help="require admin clients to present a certificate signed by this CA (PEM); "
        "see --admin-auth-exempt-probes",
        kind="path",
        env_alias=False,
    )
    admin_auth_file: str | None = option(
        None,
        help="YAML with basic_auth_users and bearer_tokens (sha256:HEX) the admin server requires",
        kind="path",
        env_alias=False,
    )
    admin_auth_exempt_probes: bool = option(
        True,
        help="leave /healthz and /readyz open without credentials (for the kubelet)",
        env_alias=False,
    )
    log_format: str = option("json", help="log format", choices=("json", "text"))
    log_level: str = option("info", help="log level", choices=("debug", "info", "warning", "error"))
    shutdown_timeout: float = option(
        "20s", help="how long a graceful stop may take", kind="duration"
    )
    check_config: bool = option(
        False,
        help="check flags, env, the config file and the files they name; list every "
        "problem and exit 0 or 2 without starting",
    )

    def __init__(self) -> None:
        self.log = logging.getLogger(f"podkit.{self.name}")
        self._metrics: Metrics | None = None
        self.command: list[str] = []
        self.settings: dict[str, Any] = {}
        self.started_at = time.time()
        self._ready = False
        self._unhealthy: str | None = None
        self._readiness: dict[str, ReadinessCheck] = {}
        self._health_checks: dict[str, Callable[[], str | None]] = {}
        self._stopping: asyncio.Event | None = None
        self._routes: list[tuple[str, str, Handler, int | None, bool]] = []
        #: The admin server's bound port once it is up (useful with port 0).
        self.admin_port: int | None = None
        #: A Sidecar may set this before run() returns to choose its exit code
        #: (e.g. gitsync --one-time failing, or too many failures); None means 0.
        self.exit_code: int | None = None
        #: The signal that asked for the stop (SIGTERM, SIGINT), once one did.
        self.stop_signal: int | None = None
        self._last_error: dict[str, str] | None = None

    @property
    def metrics(self) -> Metrics:
        """The program's registry, created on first use.

        Lazy because importing prometheus_client costs ~50 ms and ~10 MB, which
        an init task without an admin server (waitfor) should not pay.
        """
        if self._metrics is None:
            from .metrics import Metrics

            self._metrics = Metrics(self.name)
        return self._metrics

    @metrics.setter
    def metrics(self, value: Metrics) -> None:
        self._metrics = value

    # -- declaration helpers -------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A program (a class with its own run()) needs a name: its flags' help,
        # metrics prefix and log field come from it. Caught here, not at start.
        if not cls.name and "run" in cls.__dict__ and cls.__module__ != __name__:
            raise TypeError(
                f"{cls.__qualname__}: a podkit program needs a name "
                "(name = 'my-sidecar' in the class body)"
            )
        prefixes = cls.__dict__.get("env_prefixes", ())
        for value in cls.__dict__.values():
            if isinstance(value, Option) and value.env_alias:
                extra = tuple(p + value.name.upper() for p in prefixes)
                value.also_env += tuple(e for e in extra if e not in value.also_env)
            elif isinstance(value, GroupField) and prefixes:  # an included group's too
                for opt in value.expand():
                    if opt.env_alias and opt.group is not None:
                        have = value.also_env.get(opt.group[1], ())
                        extra = tuple(p + opt.name.upper() for p in prefixes)
                        value.also_env[opt.group[1]] = have + tuple(
                            e for e in extra if e not in have
                        )

    @classmethod
    def options(cls) -> list[Option]:
        return collect_options(cls)

    @classmethod
    def describe(cls) -> str:
        if cls.summary:
            return cls.summary
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def main(cls, argv: list[str] | None = None) -> None:
        """Console-script entry: run the program and exit with its code."""
        from .runner import run

        sys.exit(run(cls, argv))

    # -- state the runner and admin server read ------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping is not None and self._stopping.is_set()

    def _stop_event(self) -> asyncio.Event:
        if self._stopping is None:
            self._stopping = asyncio.Event()
        return self._stopping

    async def wait_stopping(self) -> None:
        await self._stop_event().wait()

    def request_stop(self) -> None:
        """Ask the program to stop gracefully (what SIGTERM does)."""
        self._stop_event().set()

    async def until_stopped(self, aw: Awaitable[object]) -> bool:
        """Wait until `aw` finishes (True) or a stop is requested (False); see
        podkit.aio.until_stopped for what happens to `aw` on a stop."""
        return await until_stopped(aw, self._stop_event())

    async def sleep(self, seconds: float) -> bool:
        """Sleep, returning early (True) when a stop is requested."""
        return await wait_or_timeout(self._stop_event(), max(0.0, seconds))

    def set_ready(self, ready: bool = True) -> None:
        was = self.ready
        self._ready = ready
        if self.ready and not was:
            self.log.info("ready")

    @property
    def ready(self) -> bool:
        """set_ready() was called and every named readiness check has passed."""
        return self._ready and all(c.ok for c in self._readiness.values())

    def readiness(self, name: str, fn: Callable[[], str | None] | None = None) -> ReadinessCheck:
        """A named condition of readiness (`first-sync`, `watching`), failing until
        its `.passed()`, or, with `fn`, whenever `fn()` returns a reason (asked on
        each probe: a volume that is not mounted yet); listed on `/` and by
        `/readyz?verbose`, as Kubernetes' own `/readyz?verbose` lists its checks."""
        check = self._readiness.get(name)
        if check is None:
            check = self._readiness[name] = ReadinessCheck(name, self, fn)
        return check

    def health_check(self, name: str, fn: Callable[[], str | None]) -> None:
        """A named liveness check: `fn()` returns None when healthy, else the
        reason. Run on each `/healthz`; listed by `/healthz?verbose` and on `/`."""
        self._health_checks[name] = fn

    def checks(self) -> dict[str, dict[str, str | None]]:
        """Every check's state, None when it passes: {"ready": {"started": …,
        name: …}, "health": {name: …}} ("started": set_ready() was called)."""
        health: dict[str, str | None] = {}
        for name, fn in self._health_checks.items():
            try:
                health[name] = fn()
            except Exception as exc:  # a check that fails to run is a failing check
                health[name] = f"check raised {type(exc).__name__}: {exc}"
        ready: dict[str, str | None] = {"started": None if self._ready else "not yet"}
        ready.update({n: c.why() for n, c in self._readiness.items()})
        return {"ready": ready, "health": health}

    def set_unhealthy(self, reason: str) -> None:
        self._unhealthy = reason

    def set_healthy(self) -> None:
        self._unhealthy = None

    def health(self) -> str | None:
        """None when healthy, else the reason: set_unhealthy()'s, or the first
        failing named health check's. Override to compute it on demand."""
        if self._unhealthy:
            return self._unhealthy
        for name, reason in self.checks()["health"].items():
            if reason:
                return f"{name}: {reason}"
        return None

    def status(self) -> dict[str, Any]:
        """The program's JSON status for the admin server's `/`. Override to add to it."""
        return {}

    def record_error(self, reason: str, message: str) -> None:
        """Remember the newest failure, shown on `/` as `error` until the
        next one: `reason` a short code (the metric label, e.g. `webhook`),
        `message` what happened and, where known, what to do, for the person
        reading it at 3 a.m. Secrets are scrubbed; the caller still logs it."""
        from .logs import rfc3339
        from .secrets import scrub

        self._last_error = {
            "reason": reason,
            "message": scrub(message),
            "time": rfc3339(time.time()),
        }

    @property
    def recorded_error(self) -> dict[str, str] | None:
        """{"reason", "message", "time" (RFC 3339)} of the newest failure, or None."""
        return self._last_error

    async def before_metrics(self) -> None:
        """Called before each /metrics render: refresh what is fetched on scrape."""

    def add_route(
        self,
        method: str,
        path: str,
        handler: Handler,
        *,
        max_body: int | None = None,
        auth: bool = True,
    ) -> None:
        """Add an endpoint to the admin server (before it starts, e.g. in __init__).

        `handler(request: podkit.admin.Request) -> podkit.admin.Response` is async.
        `max_body` is the largest body it reads (None: `podkit.admin.MAX_BODY`;
        0 for none); `auth=False` exempts it from --admin-auth-file, for a route
        that checks its own credentials (a webhook signature).
        """
        self._routes.append((method, path, handler, max_body, auth))

    @property
    def routes(self) -> tuple[tuple[str, str, Handler, int | None, bool], ...]:
        """What add_route() declared: (method, path, handler, max_body, auth)."""
        return tuple(self._routes)

    # -- the lifecycle -------------------------------------------------------

    def validate(self) -> None:
        """Check option combinations after parsing; raise UsageError (exit 2)."""

    def config_problems(self) -> list[str]:
        """What `--check-config` reports beyond parsing and validate(): paths
        that do not exist, directories that cannot be written, commands not
        found. One line per problem, naming the flag; [] when all is well.
        Runs after validate(), on the machine (or in the pod) that will run
        the program, and never starts anything."""
        return []

    def static_problems(self) -> list[str]:
        """Cross-option rules that need no I/O (only the parsed values), for
        `podkit validate` to check a manifest away from the pod: a program
        whose validate() also reads files says its pure rules here too."""
        return []

    def on_sighup(self) -> None:
        """Called on SIGHUP when a program overrides it (e.g. to trigger a sync)."""

    def sighup_signals(self) -> tuple[int, ...]:
        """The signals that call on_sighup(), asked after validate() (gitsync adds
        its --sync-on-signal); never SIGTERM or SIGINT, which stop the program."""
        return (signal.SIGHUP,)

    async def setup(self) -> None:
        """Acquire resources. Runs before run(); a failure here exits 1."""

    async def cleanup(self) -> None:
        """Release resources. Runs after run(), also after a failure."""


class ReadinessCheck:
    """One named condition of a program's readiness (Program.readiness)."""

    def __init__(
        self, name: str, program: Program, fn: Callable[[], str | None] | None = None
    ) -> None:
        self.name = name
        self.fn = fn
        self._ok = fn is not None
        self.reason: str | None = None if fn is not None else "not yet"
        self._program = program

    def why(self) -> str | None:
        """None when the condition holds, else the reason."""
        if self.fn is not None:
            try:
                return self.fn()
            except Exception as exc:  # a check that fails to run is a failing check
                return f"check raised {type(exc).__name__}: {exc}"
        return None if self._ok else self.reason

    @property
    def ok(self) -> bool:
        return self.why() is None

    def passed(self) -> None:
        was = self._program.ready
        self._ok, self.reason = True, None
        if self._program.ready and not was:
            self._program.log.info("ready", extra={"check": self.name})

    def failed(self, reason: str) -> None:
        self._ok, self.reason = False, reason


class Sidecar(Program):
    """A long-running helper: setup, run until stopped, cleanup.

    `run()` should return soon after `self.stopping` becomes true (use
    `await self.sleep(...)` or `await self.wait_stopping()`), after draining
    what it holds. The exit code is 0 after a graceful stop.
    """

    async def run(self) -> None:
        raise NotImplementedError


class InitTask(Program):
    """Runs to completion and returns its exit code.

    An init task interrupted by SIGTERM/SIGINT before it finished exits
    143/130. Set `self.exec_after` to an argv to have the runner replace the
    process with it after a zero exit (the way `waitfor -- app` starts the app).
    """

    default_admin_addr: ClassVar[str] = "off"

    def __init__(self) -> None:
        super().__init__()
        self.exec_after: list[str] | None = None

    async def run(self) -> int:
        raise NotImplementedError


# -- what config_problems() checks, one line per problem ----------------------


def path_problem(flag: str, path: str, kind: str = "any") -> str | None:
    """`path` must exist (as a directory with kind="dir", a readable file with
    kind="file"); else the line --check-config prints."""
    if not os.path.exists(path):
        return f"{flag} {path}: does not exist (is its volume mounted?)"
    if kind == "dir" and not os.path.isdir(path):
        return f"{flag} {path}: not a directory"
    if kind == "file" and (os.path.isdir(path) or not os.access(path, os.R_OK)):
        return f"{flag} {path}: not a readable file"
    return None


def writable_dir_problem(flag: str, path: str) -> str | None:
    """`path` must be a directory the program can write, or one it can create
    (its nearest existing parent writable); else the line --check-config prints."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{flag} {path}: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "not writable" if probe == os.path.abspath(path) else f"cannot be created in {probe}"
        return f"{flag} {path}: {what} (mount a writable volume there, e.g. an emptyDir)"
    return None


def command_problem(flag: str, argv0: str) -> str | None:
    """`argv0` must be an executable on PATH (or a path to one)."""
    import shutil

    if shutil.which(argv0) is None:
        return f"{flag}: command {argv0!r} not found or not executable"
    return None
