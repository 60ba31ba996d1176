"""The reload actions: signal a process, call a webhook (a command is podkit.hooks.run_command).

Each raises HookError with a message fit for the log (no secrets) when it
fails; the Retrier around them retries until they succeed.
"""

from __future__ import annotations

import os
import signal
import stat

from podkit.hooks import HookError, WebhookOptions
from podkit.http import AuthOptions
from podkit.options import UsageError


def parse_signal(text: str) -> signal.Signals:
    """`HUP`, `SIGHUP`, `hup` or `1` -> signal.SIGHUP; ValueError otherwise."""
    s = text.strip().upper()
    if s.isdigit():
        try:
            return signal.Signals(int(s))
        except ValueError:
            raise ValueError(f"unknown signal {text!r}") from None
    if not s.startswith("SIG"):
        s = "SIG" + s
    try:
        return signal.Signals[s]
    except KeyError:
        raise ValueError(f"unknown signal {text!r}") from None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def find_processes(name: str, proc: str = "/proc", exclude: set[int] | None = None) -> list[int]:
    """PIDs whose executable name is `name`, in a shared process namespace.

    Matches /proc/PID/comm (the kernel truncates it to 15 bytes; a script run
    through its shebang has the script's name there) or the base name of
    argv[0] from /proc/PID/cmdline. Zombies and the excluded PIDs (this
    process) are skipped.
    """
    exclude = exclude or set()
    want_comm = name.encode()[:15]
    want = name.encode()
    found: list[int] = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid in exclude:
            continue
        base = os.path.join(proc, entry)
        try:
            comm = _read(os.path.join(base, "comm")).rstrip(b"\n")
            cmdline = _read(os.path.join(base, "cmdline"))
            stat_line = _read(os.path.join(base, "stat"))
        except OSError:  # exited meanwhile, or not ours to read
            continue
        # The state follows the parenthesised comm, which may itself hold ") ".
        state = stat_line[stat_line.rfind(b")") + 2 : stat_line.rfind(b")") + 3]
        if state in (b"Z", b"X"):
            continue
        argv0 = cmdline.split(b"\x00", 1)[0]
        if comm == want_comm or (argv0 and os.path.basename(argv0) == want):
            found.append(pid)
    return sorted(found)


def read_pid_file(path: str) -> int:
    """The PID in a pid file, which may sit on a volume the app writes.

    Opened without blocking and read only if it is a regular file (at most
    64 bytes): a FIFO or device put in its place must not hang the reloader
    (this runs on the event loop) or feed it without end.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb", buffering=0) as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise HookError(f"pid file {path}: not a regular file")
            text = f.read(64).decode("ascii", "replace").strip()
    except OSError as exc:
        raise HookError(f"pid file {path}: {exc.strerror or exc}") from None
    try:
        pid = int(text.split()[0]) if text else 0
    except ValueError:
        pid = 0
    if pid <= 0:
        raise HookError(f"pid file {path}: no process id in it")
    return pid


def send_signal(pids: list[int], sig: signal.Signals, what: str) -> list[int]:
    """Signal every PID; raises unless at least one got it and none refused it."""
    if not pids:
        raise HookError(f"{what}: no such process")
    sent: list[int] = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            continue
        except PermissionError:
            raise HookError(
                f"{what}: {sig.name} to pid {pid} refused (permission denied)"
            ) from None
    if not sent:
        raise HookError(f"{what}: process exited before it could be signalled")
    return sent


async def webhook(url: str, how: WebhookOptions, auth: AuthOptions) -> None:
    try:
        credentials = auth.headers()
    except UsageError as exc:  # a credentials file that cannot be read now
        raise HookError(str(exc)) from None
    await how.call(url, headers=credentials)
