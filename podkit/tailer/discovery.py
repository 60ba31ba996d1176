"""Discovery: which paths the globs match, and opening them safely (links,
FIFOs, devices, /proc, loops and depth refused; each refusal counted once)."""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import re
import stat
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..program import Program

from .base import _Base, log

_GLOB_CHARS = re.compile(r"[*?\[]")
#: Why a matched path was not followed (the `reason` label of files_skipped_total).
SKIP_REASONS = (
    "symlink_outside",
    "symlink_loop",
    "not_regular",
    "special_file",
    "open_failed",
    "too_deep",
)
#: Directories below a glob's base directory that `**` descends at most: a tree
#: made deeper than this (to exhaust the stack) is cut there and reported.
MAX_DEPTH = 64
#: Pseudo-filesystems a followed link may not lead into, even with follow_symlinks:
#: /proc/self/environ holds the program's environment, /dev and /sys devices.
_SPECIAL_DIRS = ("/proc", "/sys", "/dev")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


def _split_glob(pattern: str) -> tuple[str, list[str]]:
    """(base, components): the longest directory prefix of a glob without glob
    characters, and the components of the pattern below it."""
    parts = pattern.split(os.sep)
    out: list[str] = []
    for p in parts[:-1]:
        if _GLOB_CHARS.search(p):
            break
        out.append(p)
    base = os.sep.join(out) or (os.sep if pattern.startswith(os.sep) else ".")
    return base, [p for p in parts[len(out) :] if p]


def _base_dir(pattern: str) -> str:
    return _split_glob(pattern)[0]


def watch_log_volume(program: Program, patterns: list[str], files: int) -> None:
    """What "ready" means for a program that tails (logship, logformat --path):
    every glob's base directory exists. Named `log-volume` on `/readyz?verbose`
    and `/`; a missing one and no matching file are also said once at start."""
    patterns = list(patterns)
    program.readiness("log-volume", lambda: missing_bases(patterns))
    why = missing_bases(patterns)
    if why:
        program.log.warning("not ready until the log volume exists", extra={"reason": why})
    elif not files:
        program.log.warning("no file matches yet", extra={"path": patterns})


def missing_bases(patterns: list[str]) -> str | None:
    """None when every glob's base directory (the part before its first
    wildcard) exists, else a reason naming the first that does not: the log
    volume is not mounted. A readiness check of the programs that tail: files
    that do not exist yet are normal (the app writes them), a directory that
    does not exist is a pod spec that forgot the volume."""
    for pattern in patterns:
        base = _base_dir(os.path.abspath(pattern))
        if not os.path.isdir(base):
            return f"{base} does not exist (is the volume that holds {pattern} mounted?)"
    return None


def _within(path: str, base: str) -> bool:
    """`path` (resolved) is `base` or below it."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _special(path: str) -> bool:
    return any(_within(path, d) for d in _SPECIAL_DIRS)


class _Skip(Exception):
    """A matched path that must not be opened, and why (one of SKIP_REASONS)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class _Link(Exception):
    """A component below the base directory is a symbolic link."""


def _open_regular_at(name: str, dir_fd: int | None) -> tuple[int, os.stat_result]:
    """Open a regular file without following a link at its last component.

    Checked before opening (opening a device can have effects: a tape rewinds,
    a watchdog arms) and after (it may have been swapped in between).
    """
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise _Link(name)
    if not stat.S_ISREG(st.st_mode):
        raise _Skip("not_regular", stat.filemode(st.st_mode))
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Link(name) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _Skip("not_regular", stat.filemode(st.st_mode))
    return fd, st


def _open_beneath(base_real: str, rel: str) -> tuple[int, os.stat_result]:
    """Open `base_real/rel`, every component with O_NOFOLLOW relative to the one
    before it, so that nothing, not even a link swapped in meanwhile, leads out."""
    parts = [p for p in rel.split(os.sep) if p and p != "."]
    if not parts or ".." in parts:
        raise _Skip("symlink_outside", rel)
    dfd = os.open(base_real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Link(part) from None
                raise
            os.close(dfd)
            dfd = nfd
        return _open_regular_at(parts[-1], dfd)
    finally:
        os.close(dfd)


class _Discovery(_Base):
    """The matched paths, and opening them without being led out of the globs."""

    def _excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        for pat in self.exclude:
            if fnmatch.fnmatchcase(path, pat) or (
                "/" not in pat and fnmatch.fnmatchcase(name, pat)
            ):
                return True
        return False

    def _match(self) -> dict[str, tuple[str, str]]:
        """Matched paths, each with its glob's base directory (as given, and resolved)."""
        seen: dict[str, tuple[str, str]] = {}
        for pat in self.paths:
            base, parts = _split_glob(pat)
            try:
                base_real = os.path.realpath(base, strict=True)
                st = os.stat(base_real)
            except OSError:
                continue
            found: list[str] = []
            key = (st.st_dev, st.st_ino)
            self._walk(base, base_real, parts, 0, found, {key}, set())
            for p in sorted(found):
                if p not in seen and not self._excluded(p):
                    seen[p] = (base, base_real)
        return seen

    def _walk(
        self,
        d: str,
        base_real: str,
        parts: list[str],
        i: int,
        out: list[str],
        chain: set[tuple[int, int]],
        visited: set[tuple[int, int, int]],
    ) -> None:
        """glob.glob(recursive=True), but safe in a tree someone else writes.

        glob follows every link to a directory, so `a -> .` and `b -> .` make it
        walk 2^40 paths; here each directory is walked once per pattern
        component, a link back to a directory being walked is reported as a
        loop, and links leading out of the base directory are not entered
        unless `follow_symlinks`. Hidden names match only a pattern that starts
        with a dot, as in glob.
        """
        part = parts[i]
        last = i == len(parts) - 1
        if part == "**":
            if not last:
                self._walk(d, base_real, parts, i + 1, out, chain, visited)
            names = [n for n in self._listdir(d) if not n.startswith(".")]
            for n in names:
                p = os.path.join(d, n)
                if last:
                    out.append(p)
                key = self._enter(p, base_real, chain, visited, i)
                if key is not None:
                    self._walk(p, base_real, parts, i, out, chain | {key}, visited)
            return
        if glob.has_magic(part):
            hidden = part.startswith(".")
            names = [
                n
                for n in self._listdir(d)
                if fnmatch.fnmatchcase(n, part) and (hidden or not n.startswith("."))
            ]
        else:
            names = [part] if os.path.lexists(os.path.join(d, part)) else []
        for n in names:
            p = os.path.join(d, n)
            if last:
                out.append(p)
                continue
            key = self._enter(p, base_real, chain, visited, i + 1)
            if key is not None:
                self._walk(p, base_real, parts, i + 1, out, chain | {key}, visited)

    @staticmethod
    def _listdir(d: str) -> list[str]:
        try:
            with os.scandir(d) as it:
                return [e.name for e in it]
        except OSError:
            return []

    def _enter(
        self,
        p: str,
        base_real: str,
        chain: set[tuple[int, int]],
        visited: set[tuple[int, int, int]],
        i: int,
    ) -> tuple[int, int] | None:
        """The directory `p` to walk next (its key), or None: not a directory,
        a link that may not be followed, a loop, too deep, or walked already."""
        try:
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(p, strict=True)
                st = os.stat(real)
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if not self.cfg.follow_symlinks and not _within(real, base_real):
                    self._skip(p, "symlink_outside", real)
                    return None
                if _special(real) and not _within(real, base_real):  # a base in /dev is chosen
                    self._skip(p, "special_file", real)
                    return None
                if (st.st_dev, st.st_ino) in chain:
                    self._skip(p, "symlink_loop", real)
                    return None
            elif not stat.S_ISDIR(st.st_mode):
                return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._skip(p, "symlink_loop")
            return None
        if len(chain) > MAX_DEPTH:
            self._skip(p, "too_deep")
            return None
        key = (st.st_dev, st.st_ino)
        if (*key, i) in visited:
            return None
        visited.add((*key, i))
        return key

    def _skip(self, path: str, reason: str, detail: str = "") -> None:
        """Refuse `path`: one warning and one count per path (discovery repeats)."""
        if self._skips.get(path) != reason and self._skips_next.get(path) != reason:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
            if reason == "open_failed":
                self.read_errors += 1
            log.warning(
                "not following file: %s",
                reason.replace("_", " "),
                extra={"path": path, "reason": reason, "detail": detail or None},
            )
        self._skips_next[path] = reason

    def _base_for(self, path: str) -> tuple[str, str]:
        """The base directory (given, resolved) of the glob whose tree holds `path`."""
        best: tuple[str, str] | None = None
        for pat in self.paths:
            base, _ = _split_glob(pat)
            if _within(path, base) and (best is None or len(base) > len(best[0])):
                best = (base, base)
        if best is None:
            best = (os.path.dirname(path), os.path.dirname(path))
        try:
            return best[0], os.path.realpath(best[0], strict=True)
        except OSError:
            return best

    def _open_checked(self, path: str, base: tuple[str, str]) -> tuple[int, os.stat_result]:
        """Open the regular file `path` matched under `base`; _Skip when it may not be read."""
        if self.cfg.follow_symlinks:
            real = os.path.realpath(path, strict=True)
            if _special(real) and not _within(real, base[1]):  # a base in /dev is chosen
                raise _Skip("special_file", real)
            return _open_regular_at(real, None)
        try:
            return _open_beneath(base[1], os.path.relpath(path, base[0]))
        except _Link:
            pass
        # A link below the base directory: follow it only if it stays inside.
        real = os.path.realpath(path, strict=True)
        if not _within(real, base[1]):
            raise _Skip("symlink_outside", real) from None
        try:
            return _open_beneath(base[1], os.path.relpath(real, base[1]))
        except _Link:
            # Resolved, then a link again: it is being swapped under us.
            raise _Skip("symlink_outside", real) from None

    def _start_watcher(self) -> None:
        from ..watch import Watcher

        dirs = {_base_dir(p) for p in self.paths} | {os.path.dirname(f.path) for f in self._files}
        recursive = any("**" in p for p in self.paths)
        self._watcher = Watcher(
            [d for d in dirs if os.path.isdir(d)],
            self._on_change,
            recursive=recursive,
            poll_interval=self.cfg.poll_interval,
            force_polling=self.cfg.force_polling,
        )
        try:
            self._watcher.start()
            self.polling = self._watcher.polling
        except Exception as exc:  # watching is an optimisation; polling always runs
            log.warning("cannot watch directories; polling only", extra={"error": str(exc)})
            self._watcher = None
            self.polling = True

    def _sync_watches(self) -> None:
        """Watch the directory of every followed file, and no other besides the
        globs' bases (watched from the start).

        A directory whose files are all gone and closed (a day's directory, a
        deleted pod's under /var/log/pods) is unwatched: kept, the watcher and
        watchdog's observer held one entry (and a thread object) for every
        directory that ever held a file. A watch that died with its directory
        (deleted, perhaps made again under the same name) is placed anew, as
        the reloader does: otherwise add() sees it known and new files there
        wait for the next poll.
        """
        w = self._watcher
        want = {os.path.dirname(f.path) for f in self._files}
        bases = {_base_dir(p) for p in self.paths}
        for d in list(w.dirs):
            if d in want:
                if not w.alive(d):
                    w.remove(d)
            elif d not in bases:
                w.remove(d)
        for d in sorted(want):
            self._watch(d)

    def _watch(self, d: str) -> None:
        """Watch `d` too (a followed file's directory). Watching only hastens
        discovery, which polling does anyway: a directory that cannot be
        watched (gone, or inotify's limits on watches and instances reached)
        must not end the tailer. Said once."""
        try:
            self._watcher.add(d)
        except OSError as exc:
            if not self._watch_failing and os.path.isdir(d):
                self._watch_failing = True
                log.warning(
                    "cannot watch a directory; its new files are found by polling",
                    extra={"path": d, "error": str(exc)},
                )

    def _on_change(self, change: Any) -> None:
        # events_lost: inotify's queue overflowed, so a create may be among the
        # lost; look now rather than at the next poll
        if change.kind in ("created", "moved", "deleted", "events_lost"):
            self._discover_now = True
            if change.kind == "moved" and change.dest and self._matches(change.path):
                self._moves.append((change.path, change.dest))
        self._wake.set()

    def _matches(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in self.paths) and not self._excluded(path)
