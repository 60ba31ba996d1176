"""Files written whole or not at all, and files opened without following links.

`atomic_write` is the one way podkit writes a state file (checkpoints, status
files): a reader, or the program after a crash or a full disk, sees either the
old content or the new one, never a torn mix. `write_all` is the loop every
raw `os.write` needs, since a write to a nearly full disk may write less than
asked and only the next one fails.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["atomic_write", "file_sig", "write_all"]


def file_sig(path: str | None) -> tuple[int, int, int, int] | None:
    """What `stat` says of a file, to tell whether it changed since: device,
    inode, size and mtime (a rotated Secret is a new inode behind a swapped
    link; an in-place edit changes size or mtime). None when there is no path
    or the file cannot be stat'ed (a rotation half done), which compares
    unequal to any signature taken while it was there."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` to `fd`, looping on short writes; OSError on failure."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # never seen from a regular file, but a zero would loop forever
            raise OSError(0, "write wrote nothing")
        view = view[n:]


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` completely, or leave it as it was and raise OSError.

    The bytes go to `<path>.tmp` in the same directory (the same filesystem,
    so the rename is atomic), looping on short writes; the temp file is
    fsynced, renamed over `path`, and the directory fsynced so the rename
    itself survives a power cut. On any error (ENOSPC, EFBIG from
    RLIMIT_FSIZE, EIO) the temp file is removed and the old `path` is
    untouched. A stale temp file, or a symbolic link planted at its name, is
    removed first and never written through. One writer per path.
    """
    tmp = f"{path}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
