"""The on-disk contract: `<root>/<link>` -> `.worktrees/<sha>`, flipped atomically.

A worktree is complete before the link points at it; the link is replaced by
`rename(2)` of a temporary symlink over it, so a reader sees the old target or
the new one, never neither; `basename(readlink(link))` is the published commit.

`--publish-mode copy` (for consumers that cannot follow a symlink, such as
kaniko: git-sync #799) publishes a real directory instead: a copy of the
worktree (without `.git`) is made beside `<link>` and swapped with it by
`renameat2(RENAME_EXCHANGE)`, so `<link>` is the old tree or the new one,
never neither. Where the kernel or filesystem cannot exchange, the old
directory is renamed aside and the new one renamed in: two renames, with a
window of microseconds in which `<link>` does not exist. The published commit
is recorded in `.<link>.published` beside it (written after the swap; a crash
between the two only makes the next sync copy again).
"""

from __future__ import annotations

import contextlib
import os
import re

from podkit.fsutil import atomic_write

WORKTREES = ".worktrees"
SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


MODES = ("link", "copy")


def published_sha(link: str, mode: str = "link") -> str | None:
    """The commit `link` points at (or, copied, holds), or None (nothing of ours)."""
    if mode == "copy":
        if not os.path.isdir(link) or os.path.islink(link):
            return None
        try:
            with open(_record(link), encoding="ascii") as f:
                sha = f.read().strip()
        except (OSError, UnicodeDecodeError):
            return None
        return sha if SHA_RE.match(sha) else None
    try:
        target = os.readlink(link)
    except OSError:
        return None
    sha = os.path.basename(target.rstrip("/"))
    return sha if SHA_RE.match(sha) else None


def publish(link: str, worktree: str, mode: str = "link", *, keep: float = 0.0) -> None:
    """Publish `worktree` at `link`: a symlink flip, or (copy) a directory swap.

    `keep`: seconds a replaced copy stays readable beside the link
    (--stale-worktree-timeout), for readers that opened it before the swap.
    """
    if mode == "copy":
        _publish_copy(link, worktree, keep)
        return
    linkdir = os.path.dirname(link)
    os.makedirs(linkdir, exist_ok=True)
    tmp = os.path.join(linkdir, f".{os.path.basename(link)}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(os.path.relpath(worktree, linkdir), tmp)
    if os.path.isdir(link) and not os.path.islink(link):
        # A copy published before (--publish-mode copy): now a link.
        if not exchange(tmp, link):
            # No RENAME_EXCHANGE: rename(2) cannot replace a directory by a link, so the
            # copy goes aside first (microseconds without `link`, as in _publish_copy).
            aside = f"{tmp}.aside"
            os.rename(link, aside)
            os.rename(tmp, link)
            tmp = aside
        _remove(tmp)
    else:
        os.replace(tmp, link)  # rename(2): readers see the old or the new link, never neither
    _fsync_dir(linkdir)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_record(link))  # a copy's record: the link itself says it now


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record(link: str) -> str:
    return os.path.join(os.path.dirname(link), f".{os.path.basename(link)}.published")


def _publish_copy(link: str, worktree: str, keep: float) -> None:
    import shutil
    import time

    parent, name = os.path.split(link)
    os.makedirs(parent, exist_ok=True)
    new = os.path.join(parent, f".{name}.new")
    if os.path.lexists(new):
        _remove(new)  # left by a sync that died while copying: never published
    # .git files name admin dirs by relative paths that mean nothing in the copy.
    shutil.copytree(worktree, new, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    if not os.path.lexists(link):
        os.rename(new, link)
    elif exchange(new, link):
        pass  # `new` now holds the replaced tree
    else:
        # No RENAME_EXCHANGE here: rename the old tree aside, then the new one in.
        # Between the two renames (microseconds) `link` does not exist.
        aside = os.path.join(parent, f".{name}.aside")
        if os.path.lexists(aside):
            _remove(aside)
        os.rename(link, aside)
        os.rename(new, link)
        os.rename(aside, new)
    _fsync_dir(parent)
    write_atomic(_record(link), (os.path.basename(worktree) + "\n").encode())
    # The replaced tree: kept `keep` seconds for readers inside it, then removed.
    if os.path.lexists(new):
        os.utime(new, follow_symlinks=False)
        os.rename(new, os.path.join(parent, f".{name}.old-{time.time_ns()}"))
    expire_copies(link, keep)


def expire_copies(link: str, keep: float) -> None:
    """Remove replaced copies older than `keep` seconds (at every sync, a no-op too)."""
    import time

    parent, name = os.path.split(link)
    prefix = f".{name}.old-"
    now = time.time()
    try:
        entries = [e for e in os.listdir(parent) if e.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        path = os.path.join(parent, entry)
        try:
            age = now - os.lstat(path).st_mtime
        except OSError:
            continue
        if keep <= 0 or age > keep:
            _remove(path)


def _remove(path: str) -> None:
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


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
