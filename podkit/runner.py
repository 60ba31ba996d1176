"""The runner: everything around a program's `run()`.

Order of events, and the exit code each can produce:

1. parse flags, env and config; `validate()`            usage error -> 2
2. logging, event loop (uvloop when installed)
3. admin server start, `setup()`                        failure -> 1
4. `run()` until it returns or a signal asks it to stop exception -> 1
5. `cleanup()`, admin server stop                       deadline passed -> 1
6. an InitTask's code (143/130 if a signal cut it short), or exec of its command

A second SIGTERM/SIGINT exits at once; the shutdown deadline is enforced with
`os._exit`, because a cleanup stuck in a thread cannot be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import __version__
from .options import (
    Option,
    UsageError,
    assign,
    bind_bool_values,
    build_parser,
    load_config_file,
    resolve,
)
from .program import InitTask, Program
from .secrets import redact_url

log = logging.getLogger("podkit.runner")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 124


def _flush_logs() -> None:
    for h in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            h.flush()


def _hard_exit(code: int) -> None:
    _flush_logs()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    os._exit(code)


def configure(
    cls: type[Program],
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    validate: bool = True,
    errors: list[str] | None = None,
) -> Program:
    """Build a program instance from argv/env/config. Raises UsageError.

    validate=False stops after parsing and converting every value: what
    `podkit validate` checks of a manifest, where the files that the
    program's validate() would open are not on this machine. With `errors`
    (`--check-config`), every problem past the flags' syntax is appended
    there instead of raised, and the files that options name are checked."""
    env = os.environ if env is None else env
    argv = list(argv)
    command: list[str] = []
    if cls.accepts_command and "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    options = cls.options()
    parser = build_parser(
        f"podkit {cls.name}",
        _help_text(cls),
        options,
        cls.examples,
        {"admin_addr": cls.default_admin_addr},
    )
    flags = vars(parser.parse_args(bind_bool_values(argv, options)))
    config_path = flags.get("config") or env.get("PODKIT_CONFIG")
    config: dict[str, Any] = {}
    # Without validate (a manifest checked elsewhere), the file lives in the pod.
    if config_path and (validate or os.path.exists(config_path)):
        try:
            config = load_config_file(config_path)
        except UsageError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
    values = resolve(options, flags, env, config, config_path, errors)
    program = cls()
    assign(program, options, values)
    if program.admin_addr is None:
        program.admin_addr = cls.default_admin_addr
    program.settings = values
    program.command = command
    if errors is not None:
        validated = False
        if not errors:
            try:
                program.validate()
                validated = True
            except UsageError as exc:  # `problems`: a validate() that found several
                errors += getattr(exc, "problems", None) or [str(exc)]
        errors += [p for p in _unreadable_files(options, values) if p not in errors]
        if validated:
            errors += [p for p in program.config_problems() if p not in errors]
    elif validate:
        program.validate()
    return program


def _unreadable_files(options: list[Option], values: Mapping[str, Any]) -> list[str]:
    """Files the options name for reading (`--*-file`, `--config`) that cannot be read."""
    out = []
    for opt in options:
        if opt.resolve_kind() != "path" or not (opt.name.endswith("_file") or opt.name == "config"):
            continue
        value = values.get(opt.name)
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, str) and not os.access(path, os.R_OK):
                why = "no such file" if not os.path.exists(path) else "not readable"
                out.append(f"{opt.flag_name} {path}: {why}")
    return out


def check_config(
    cls: type[Program], argv: Sequence[str], env: Mapping[str, str] | None = None
) -> int:
    """`--check-config`: every problem of flags, env, config file and the files
    they name, one line each on stderr; exit 0 (and a line on stdout) or 2."""
    errors: list[str] = []
    try:
        configure(cls, [a for a in argv if not a.startswith("--check-config")], env, errors=errors)
    except UsageError as exc:  # the flags themselves do not parse
        errors.append(str(exc))
    for problem in errors:
        print(f"podkit {cls.name}: error: {problem}", file=sys.stderr)
    if not errors:
        print(f"podkit {cls.name}: configuration OK")
    return EXIT_USAGE if errors else EXIT_OK


def _asks(argv: Sequence[str], env: Mapping[str, str], flag: str) -> bool:
    """Whether a bare boolean flag (or its env variable) is on, before any `--`."""
    head = list(argv)[: list(argv).index("--")] if "--" in argv else argv
    for arg in head:
        if arg == flag:
            return True
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1].strip().lower() in ("1", "true", "yes", "on", "y")
    var = "PODKIT_" + flag.lstrip("-").replace("-", "_").upper()
    return env.get(var, "").strip().lower() in ("1", "true", "yes", "on", "y")


def _help_text(cls: type[Program]) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc or cls.describe()


def public_settings(program: Program) -> dict[str, Any]:
    """The program's settings as safe to log: URLs redacted, secrets hidden."""
    out: dict[str, Any] = {}
    for opt in program.options():
        value = program.settings.get(opt.name)
        if opt.secret and value:
            value = "***"
        elif opt.resolve_kind() == "url" and value:
            value = [redact_url(v) for v in value] if opt.repeat else redact_url(value)
        elif isinstance(value, str) and "://" in value:
            value = redact_url(value)
        elif isinstance(value, list):  # e.g. waitfor's positional target URLs
            value = [redact_url(v) if isinstance(v, str) and "://" in v else v for v in value]
        out[opt.name] = value
    return out


def _check_admin(program: Program) -> None:
    """The admin server's options and files (TLS, credentials): a usage error at start."""
    if program.admin_addr != "off":
        from .admin import check_admin_settings

        check_admin_settings(program)


def _fill_std_fds() -> None:
    """Open /dev/null on a closed fd 0, 1 or 2 (started with `<&-` by a supervisor).

    Otherwise the next file the program opens (the event loop's epoll fd, a
    socket) becomes fd 0: logformat --stdin would read from it, and uvloop
    aborts the process when it later closes an fd <= 2.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one


def run(
    cls: type[Program], argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> int:
    """Run a program to the end and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    _fill_std_fds()
    head = argv[: list(argv).index("--")] if "--" in argv else argv
    if "--version" in head:
        print(f"podkit {cls.name} {__version__}")
        return EXIT_OK
    if _asks(argv, os.environ if env is None else env, "--check-config"):
        return check_config(cls, argv, env)
    try:
        program = configure(cls, argv, env)
        _check_admin(program)
    except UsageError as exc:
        print(f"podkit {cls.name}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)

    from .logs import setup_logging

    setup_logging(cls.name, program.log_format, program.log_level)
    code = _run_loop(program)
    _flush_logs()
    if code == EXIT_OK and isinstance(program, InitTask) and program.exec_after:
        return _exec(program.exec_after)
    return code


def _run_loop(program: Program) -> int:
    # uvloop when installed (PODKIT_EVENT_LOOP=asyncio opts out: it costs an
    # idle sidecar about 2.5 MB of RSS and buys it nothing).
    loop_factory = None
    if os.environ.get("PODKIT_EVENT_LOOP", "auto") != "asyncio":
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            if os.environ.get("PODKIT_EVENT_LOOP") == "uvloop":
                raise
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_main(program))


def _exec(argv: list[str]) -> int:
    log.info("exec", extra={"command": argv[0]})
    _flush_logs()
    try:
        os.execvp(argv[0], argv)
    except FileNotFoundError:
        log.error("command not found", extra={"command": argv[0]})
        return 127
    except OSError as exc:
        log.error("cannot exec command", extra={"command": argv[0], "error": str(exc)})
        return 126
    return EXIT_FAILURE  # not reached


async def _main(program: Program) -> int:
    loop = asyncio.get_running_loop()
    stop_signal: list[int] = []
    run_task: asyncio.Task[Any] | None = None
    deadline: list[threading.Timer] = []

    def on_deadline() -> None:
        log.error(
            "shutdown deadline exceeded; exiting",
            extra={"shutdown_timeout": program.shutdown_timeout},
        )
        _hard_exit(EXIT_FAILURE)

    def begin_stop(signum: int) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        program.stop_signal = signum
        program.request_stop()
        if isinstance(program, InitTask) and run_task is not None:
            run_task.cancel()

    # Plain signal.signal handlers, not loop.add_signal_handler: they run even
    # while the loop is blocked (a cleanup stuck in a blocking call), so a
    # second signal and the deadline (a timer thread) always end the process.
    def on_signal(signum: int, frame: object) -> None:
        if stop_signal:
            log.warning(
                "second signal; exiting at once", extra={"signal": signal.Signals(signum).name}
            )
            _hard_exit(128 + signum)
        stop_signal.append(signum)
        timer = threading.Timer(program.shutdown_timeout, on_deadline)
        timer.daemon = True
        timer.start()
        deadline.append(timer)
        loop.call_soon_threadsafe(begin_stop, signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    triggers = program.sighup_signals() if type(program).on_sighup is not Program.on_sighup else ()
    for sig in triggers:
        loop.add_signal_handler(sig, program.on_sighup)

    program._stop_event()
    log.info("starting", extra={"version": __version__, "settings": public_settings(program)})
    admin = None
    code = EXIT_OK
    try:
        if program.admin_addr and program.admin_addr != "off":
            from .admin import AdminServer

            admin = AdminServer(program, program.admin_addr)
            try:
                await admin.start()
            except OSError as exc:
                extra = {"addr": program.admin_addr, "error": str(exc)}
                if exc.errno == errno.EADDRINUSE:
                    # Two programs in one pod share its network namespace; two
                    # custom sidecars both default to 127.0.0.1:9400.
                    extra["hint"] = (
                        f"another process listens on {program.admin_addr}: give this one "
                        "--admin-addr HOST:PORT (or its class a default_admin_addr of its own)"
                    )
                log.error("cannot start admin server", extra=extra)
                admin = None
                return EXIT_FAILURE
            program.admin_port = admin.port
            host = program.admin_addr.rpartition(":")[0] or "0.0.0.0"
            log.info("admin server listening", extra={"addr": f"{host}:{admin.port}"})
        try:
            await program.setup()
            run_task = asyncio.create_task(program.run())  # type: ignore[attr-defined]
            if stop_signal and isinstance(program, InitTask):
                # The signal came while the admin server or setup() was starting,
                # when there was no task to cancel yet; an init task's run() does
                # not watch `stopping`, so it would run on until the deadline.
                run_task.cancel()
            result = await run_task
            if isinstance(program, InitTask):
                code = int(result)
            elif program.exit_code is not None:
                code = program.exit_code
            elif not program.stopping:
                # A native sidecar that exits is restarted by the kubelet: a
                # run() that ends on its own says why with exit_code.
                log.warning(
                    "run() returned while no stop was asked; a native sidecar "
                    "would be restarted (set exit_code when finishing on purpose)"
                )
        except asyncio.CancelledError:
            if not stop_signal:
                raise
            code = 128 + stop_signal[0] if isinstance(program, InitTask) else EXIT_OK
        except UsageError as exc:
            print(f"podkit {program.name}: error: {exc}", file=sys.stderr)
            code = EXIT_USAGE
        except Exception:
            log.exception("program failed")
            code = EXIT_FAILURE
        finally:
            try:
                await program.cleanup()
            except Exception:
                log.exception("cleanup failed")
                code = EXIT_FAILURE
    finally:
        if admin is not None:
            await admin.stop()
        for handle in deadline:
            handle.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in triggers:
            loop.remove_signal_handler(sig)
    log.info("stopped", extra={"exit_code": code})
    return code
