"""The on-disk contract: `<root>/<link>` -> `.worktrees/<sha>`, flipped atomically.

A worktree is complete before the link points at it; the link is replaced by
`rename(2)` of a temporary symlink over it, so a reader sees the old target or
the new one, never neither; `basename(readlink(link))` is the published commit.
"""

from __future__ import annotations

import contextlib
import os
import re

from podkit.fsutil import atomic_write

WORKTREES = ".worktrees"
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


def published_sha(link: str) -> str | None:
    """The commit `link` points at, or None (no link, or not a worktree of ours)."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    sha = os.path.basename(target.rstrip("/"))
    return sha if SHA_RE.match(sha) else None


def publish(link: str, worktree: str) -> None:
    """Point `link` at `worktree` (a relative target, so the volume can move)."""
    linkdir = os.path.dirname(link)
    os.makedirs(linkdir, exist_ok=True)
    tmp = os.path.join(linkdir, f".{os.path.basename(link)}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.relpath(worktree, linkdir), tmp)
    os.replace(tmp, link)  # rename(2): readers see the old or the new link, never neither
    fd = os.open(linkdir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """`path` holds `data` completely or keeps what it held: a full disk never
    tears it (podkit.fsutil.atomic_write, in a directory made if missing)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, data)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: str, b: str) -> bool:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes  # only for a repair: ~1 MiB an idle sidecar need not carry

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False  # no glibc >= 2.28
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: the kernel or filesystem cannot
        return False
    raise OSError(err, os.strerror(err), a)
