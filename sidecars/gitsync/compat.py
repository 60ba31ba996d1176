"""git-sync's flags that are not podkit's own: v3-era names, deprecated ones, left-out ones.

A git-sync v4 pod spec must run unchanged, so every flag git-sync v4.7 still
accepts is accepted here too: a deprecated one is mapped onto its replacement
(as git-sync maps it) with one warning; one podkit leaves out is a one-line
usage error naming it (exit 2), never silently ignored. Environment variables
that look like git-sync's but that nothing reads get one warning each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from podkit import UsageError, option

#: Flags git-sync v4.7 has and podkit gitsync does not, with the reason (docs/gitsync.md).
LEFT_OUT = {
    "github_app_private_key": "key material in a variable: mount it and use "
    "--github-app-private-key-file",
    "git": "podkit runs the git on PATH",
    "man": "the manual is docs/gitsync.md (and podkit gitsync --help)",
    "change_permissions": "removed in git-sync v4 too; use --group-write",
}
#: Environment variables git-sync reads that are no option's env name here.
_OTHER_KNOWN_ENV: frozenset[str] = frozenset()


def _env(name: str) -> str:
    return "GITSYNC_" + name.upper()


class GitSyncFlags:
    """Options declared only so that git-sync's spellings parse (see the module doc)."""

    # -- v3 names, mapped as git-sync v4 maps them ---------------------------
    branch: str | None = option(
        None, help="DEPRECATED (git-sync v3): use --ref", env="GIT_SYNC_BRANCH", env_alias=False
    )
    rev: str | None = option(
        None, help="DEPRECATED (git-sync v3): use --ref", env="GIT_SYNC_REV", env_alias=False
    )
    dest: str | None = option(
        None, help="DEPRECATED (git-sync v3): use --link", env="GIT_SYNC_DEST", env_alias=False
    )
    wait: float | None = option(
        None,
        help="DEPRECATED (git-sync v3): seconds between syncs, use --period",
        env="GIT_SYNC_WAIT",
        env_alias=False,
    )
    timeout: int | None = option(
        None,
        help="DEPRECATED (git-sync v3): seconds per sync, use --sync-timeout",
        env="GIT_SYNC_TIMEOUT",
        env_alias=False,
    )
    max_sync_failures: int | None = option(
        None,
        help="DEPRECATED (git-sync v3): use --max-failures",
        env="GIT_SYNC_MAX_SYNC_FAILURES",
        env_alias=False,
    )
    sync_hook_command: str | None = option(
        None,
        help="DEPRECATED (git-sync v3): use --exechook-command",
        env="GIT_SYNC_HOOK_COMMAND",
        env_alias=False,
    )
    v: int | None = option(
        None, flag="--v", help="DEPRECATED (git-sync v3): use -v/--verbose", env_alias=False
    )
    ssh: bool = option(
        False, help="DEPRECATED: ssh is chosen by the --repo URL", env=_env("ssh"), env_alias=False
    )
    http_pprof: bool = option(
        False,
        help="accepted for git-sync specs; Go's pprof has no Python equivalent (logged)",
        env=_env("http_pprof"),
        also_env="GIT_SYNC_HTTP_PPROF",
        env_alias=False,
    )

    # -- left out: accepted by the parser, refused with the reason -----------
    github_app_private_key: str | None = option(
        None, help="not supported (see docs)", env=_env("github_app_private_key"), secret=True
    )
    git: str | None = option(
        None, help="not supported (see docs)", env=_env("git"), also_env="GIT_SYNC_GIT"
    )
    man: bool = option(False, help="not supported (see docs)", env_alias=False)
    change_permissions: int | None = option(
        None, help="not supported (see docs)", env="GIT_SYNC_PERMISSIONS"
    )


def apply(prog: Any) -> list[str]:
    """Map deprecated flags onto their replacements; refuse left-out ones.

    Returns the warnings to log once logging is up (validate runs before it).
    """
    for name, why in LEFT_OUT.items():
        value = getattr(prog, name)
        if value not in (None, False, []) and not (name == "change_permissions" and value == 0):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag}: not supported by podkit gitsync: {why}")
    warnings: list[str] = []

    def deprecated(old: str, new: str) -> None:
        warnings.append(f"--{old} is deprecated (git-sync v3); use --{new}")

    if prog.branch and prog.rev and prog.rev != "HEAD":
        raise UsageError("--branch and --rev: set one or the other (or --ref)")
    if prog.branch:
        deprecated("branch", "ref")
        prog.ref = prog.branch
    elif prog.rev:
        deprecated("rev", "ref")
        prog.ref = prog.rev
    if prog.dest:
        deprecated("dest", "link")
        prog.link = prog.dest
    if prog.wait:
        deprecated("wait", "period")
        prog.period = float(prog.wait)
    if prog.timeout:
        deprecated("timeout", "sync-timeout")
        prog.sync_timeout = float(prog.timeout)
    if prog.max_sync_failures:
        deprecated("max-sync-failures", "max-failures")
        prog.max_failures = prog.max_sync_failures
    if prog.sync_hook_command:
        deprecated("sync-hook-command", "exechook-command")
        prog.exechook_command = prog.sync_hook_command
    if prog.v is not None and prog.v >= 0:
        deprecated("v", "verbose")
        prog.verbose = prog.v
    if prog.ssh:
        warnings.append("--ssh is deprecated and not needed: ssh is chosen by the --repo URL")
    if prog.http_pprof:
        warnings.append("--http-pprof: no pprof endpoints in podkit gitsync (a Python program)")
    return warnings


def unknown_env(env: Mapping[str, str], known: Iterable[str]) -> list[str]:
    """git-sync-looking variables nothing reads: each gets one warning, never silence."""
    names = set(known) | _OTHER_KNOWN_ENV
    return sorted(
        k for k in env if (k.startswith("GITSYNC_") or k.startswith("GIT_SYNC_")) and k not in names
    )


def git_sync_v3_env(env: Mapping[str, str]) -> list[str]:
    """GIT_SYNC_* variables in use: read, but deprecated since git-sync v4."""
    return sorted(k for k in env if k.startswith("GIT_SYNC_"))


__all__ = ["LEFT_OUT", "GitSyncFlags", "apply", "git_sync_v3_env", "unknown_env"]
