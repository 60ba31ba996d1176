"""What the reloader watches and hashes: link-aware resolution of the watched paths.

The content hash is SHA-256 over (relative name, content) of every watched
file, following symlinks. Names starting with `..` below a watched directory
are skipped: they are the kubelet's internals (`..data`, `..2024_01_01_...`),
whose timestamped names change on every update even when the content does
not. The user-visible files (`key -> ..data/key`) carry the content. `.git` is
skipped too: a git worktree (gitsync's `.worktrees/<sha>`) has a `.git` file
naming its own revision, which would make identical trees hash differently.

inotify does not follow symlinks: a watch on `/conf` sees `..data` being
renamed, but a watch placed through a link is a watch on the link's *old*
target. So every scan also returns a plan: which directories to watch
recursively (the real directories the content lives in) and which links
(directory + name) can redirect a path, so that the link's own directory is
watched too. The plan is recomputed on every scan, and the watches follow it.

A shared volume is not a way out: whoever can write the watched tree can
plant links in it. Unless `follow` is set, a link inside a watched directory
counts only when its target stays inside that directory's real path (the
kubelet's `key -> ..data/key -> ..2024_.../key` does); a link elsewhere (a
Secret, `/proc/self/environ`) is skipped, as is anything that is not a
regular file or a directory (a FIFO, a device, a socket). A link loop is
reported, not retried: it never makes the scan "unstable".
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import stat
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

_MAX_LINKS = 40  # the kernel's own limit on symlinks followed in one lookup
#: Small and reused: a 1 MiB read per chunk would raise glibc's mmap threshold
#: and leave that much resident in the arena after every hash.
_CHUNK = 64 * 1024


@dataclass
class Plan:
    """Where changes to the watched content can show up."""

    #: real directories whose whole subtree is content
    recursive: set[str] = field(default_factory=set)
    #: directory -> names in it whose change matters (a link, a watched file)
    names: dict[str, set[str]] = field(default_factory=dict)

    def merge(self, other: Plan) -> None:
        self.recursive |= other.recursive
        for d, names in other.names.items():
            self.names.setdefault(d, set()).update(names)

    def add_name(self, path: str) -> None:
        d, n = os.path.split(path)
        self.names.setdefault(d or "/", set()).add(n)

    def covered(self, d: str) -> bool:
        return any(d == r or d.startswith(r.rstrip("/") + "/") for r in self.recursive)

    def watches(self) -> dict[str, bool]:
        """Directory -> recursive, minimal: no directory inside a recursive one."""
        out: dict[str, bool] = {}
        for r in sorted(self.recursive):
            if not any(r.startswith(o.rstrip("/") + "/") for o in out):
                out[r] = True
        for d in self.names:
            if not self.covered(d):
                out[d] = False
        return out

    def relevant(self, path: str) -> bool:
        """Can a change at `path` change the content or the resolution?"""
        if self.covered(path):
            return True
        d, n = os.path.split(path)
        names = self.names.get(d)
        return names is not None and n in names


def resolve(path: str, plan: Plan | None = None) -> str:
    """realpath(path), recording every link it passes through in `plan`.

    Also records the final component, so creating or deleting it is seen.
    A dangling link or a missing component ends the walk at that point.
    """
    path = os.path.abspath(path)
    parts = [p for p in path.split("/") if p]
    current = "/"
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        if plan is not None and not parts:
            plan.add_name(candidate)
        try:
            st = os.lstat(candidate)
        except OSError:
            if plan is not None:
                plan.add_name(candidate)
            return os.path.join(candidate, *parts)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if plan is not None:
                plan.add_name(candidate)
            try:
                target = os.readlink(candidate)
            except OSError:
                return os.path.join(candidate, *parts)
            if links > _MAX_LINKS:
                return os.path.join(candidate, *parts)
            if target.startswith("/"):
                current = "/"
            parts = [p for p in target.split("/") if p] + parts
            continue
        current = candidate
    return current


class Filter:
    """--include/--exclude: a glob without `/` matches the base name, with `/` the relative path."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]) -> None:
        self.include = list(include)
        self.exclude = list(exclude)

    @staticmethod
    def _match(rel: str, pattern: str) -> bool:
        if "/" in pattern:
            return fnmatch.fnmatchcase(rel, pattern.lstrip("/"))
        return fnmatch.fnmatchcase(os.path.basename(rel), pattern)

    def wants(self, rel: str) -> bool:
        if self.include and not any(self._match(rel, p) for p in self.include):
            return False
        return not any(self._match(rel, p) for p in self.exclude)


#: Why a path in the watched tree was left out of the hash.
OUTSIDE = "outside"  # a link whose target leaves the watched directory
SPECIAL = "special"  # a FIFO, device or socket: reading it could block or never end
LOOP = "loop"  # a symbolic-link loop (ELOOP)


@dataclass
class Scan:
    digest: str
    files: int
    bytes: int
    plan: Plan
    #: something vanished or failed mid-scan: the content is in flux, look again
    unstable: bool = False
    errors: list[str] = field(default_factory=list)
    #: path -> OUTSIDE, SPECIAL or LOOP: left out of the hash on purpose
    skipped: dict[str, str] = field(default_factory=dict)


def inside(path: str, base: str) -> bool:
    return path == base or path.startswith(base.rstrip("/") + "/")


def _hash_file(h: hashlib._Hash, path: str, nofollow: bool = False) -> int:
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    # O_NONBLOCK: a FIFO swapped in under the name would block open() forever,
    # holding the scan thread (and, at exit, the process); only regular files count.
    # O_NOFOLLOW: `path` is already resolved, so a link found there now was
    # swapped in after the check (ELOOP), not a link we decided to follow.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)
    with open(fd, "rb", buffering=0) as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file or directory", path)
        fh = hashlib.sha256()
        while n := f.readinto(buf):
            fh.update(view[:n])
            size += n
    # The per-file digest keeps the outer hash's framing unambiguous.
    h.update(fh.digest())
    return size


def scan(
    roots: Sequence[str], flt: Filter, follow: bool = False, skip: AbstractSet[str] = frozenset()
) -> Scan:
    """Hash every watched file and plan the watches. Runs in a thread.

    The links on a `--watch` path up to its last directory are the
    operator's and always followed. A watched *file* that is a link must stay
    in its real parent directory unless `follow` is set. Files whose real
    path is in `skip` (the --render templates) are not content.
    """
    h = hashlib.sha256()
    plan = Plan()
    files = total = 0
    unstable = False
    errors: list[str] = []
    skipped: dict[str, str] = {}
    for index, root in enumerate(roots):
        h.update(b"\x00root\x00%d\x00" % index)
        real = resolve(root, plan)
        try:
            st = os.stat(real)
        except FileNotFoundError:
            h.update(b"missing")
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                skipped[root] = LOOP
            else:
                errors.append(f"{root}: {exc.strerror or exc}")
            h.update(b"unreadable")
            continue
        if not stat.S_ISDIR(st.st_mode):
            # A single watched file: its name is the root's, always wanted. A
            # FIFO or device is refused by _hash_file (reading it would never end).
            plan.add_name(real)
            base = os.path.realpath(os.path.dirname(os.path.abspath(root)))
            if not follow and not inside(real, base):
                skipped[root] = OUTSIDE
                h.update(b"outside")
                continue
            try:
                total += _file_entry(h, os.path.basename(root), real, not follow)
                files += 1
            except FileNotFoundError:
                unstable = True
            except OSError as exc:
                errors.append(f"{root}: {exc.strerror or exc}")
            continue
        n, b, u = _walk(h, real, flt, plan, errors, skipped, follow, skip)
        files, total, unstable = files + n, total + b, unstable or u
    return Scan(h.hexdigest(), files, total, plan, unstable, errors, skipped)


def _file_entry(h: hashlib._Hash, rel: str, path: str, nofollow: bool = False) -> int:
    h.update(b"\x00file\x00" + os.fsencode(rel) + b"\x00")
    return _hash_file(h, path, nofollow)


def _walk(
    h: hashlib._Hash,
    top: str,
    flt: Filter,
    plan: Plan,
    errors: list[str],
    skipped: dict[str, str],
    follow: bool,
    skip: AbstractSet[str] = frozenset(),
) -> tuple[int, int, bool]:
    """Walk one watched directory tree in sorted order, following the links it may follow."""
    files = total = 0
    unstable = False
    plan.recursive.add(top)
    seen: set[tuple[int, int]] = set()
    # (real directory, relative name prefix)
    stack: list[tuple[str, str]] = [(top, "")]
    entries: list[tuple[str, str]] = []  # (relative name, path) of every file
    while stack:
        d, rel = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            unstable = True
            continue
        if (st.st_dev, st.st_ino) in seen:  # a link loop, or two links to one place
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(d) as it:
                children = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            unstable = True
            continue
        except OSError as exc:
            errors.append(f"{d}: {exc.strerror or exc}")
            continue
        for e in children:
            if e.name.startswith("..") or e.name == ".git":
                continue
            crel = f"{rel}/{e.name}" if rel else e.name
            try:
                is_link = e.is_symlink()
                # DirEntry caches this; for a link it is the target's mode.
                mode = e.stat(follow_symlinks=True).st_mode
            except FileNotFoundError:
                if not is_link:
                    unstable = True  # vanished since the listing
                # a dangling link is not content; resolve() below plans its target
                mode = 0
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    unstable = True
                    continue
                # A loop stays a loop until someone changes a link, which
                # the plan below watches for: report it, never "in flux".
                skipped[e.path] = LOOP
                resolve(e.path, plan)
                continue
            if is_link:
                target = resolve(e.path, plan)
                if not mode:
                    continue
                if not follow and not inside(target, top):
                    skipped[e.path] = OUTSIDE
                    continue
                if stat.S_ISDIR(mode):
                    if not plan.covered(target):
                        plan.recursive.add(target)
                    stack.append((target, crel))
                elif stat.S_ISREG(mode):
                    if not plan.covered(os.path.dirname(target)):
                        plan.add_name(target)
                    if flt.wants(crel):
                        entries.append((crel, target))
                else:
                    skipped[e.path] = SPECIAL
                continue
            if stat.S_ISDIR(mode):
                stack.append((e.path, crel))
            elif stat.S_ISREG(mode):
                if flt.wants(crel):
                    entries.append((crel, e.path))
            elif mode:
                skipped[e.path] = SPECIAL
    entries.sort()
    for rel, path in entries:
        if path in skip:
            continue
        try:
            total += _file_entry(h, rel, path, not follow)
            files += 1
        except FileNotFoundError:
            unstable = True
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    return files, total, unstable
