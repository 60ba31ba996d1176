"""The folder kubefiles owns: what should be there, written atomically, and a manifest.

Contract on disk (docs/kubefiles.md):

- Each file is written per file: the bytes go to a temporary file beside it
  (`.<name>.kubefiles-tmp`), which is fsynced, given its mode, and renamed over
  the target. A reader sees the old file or the new one, never half of one.
  (Not the kubelet's `..data` symlink swap: that swaps a whole directory, and
  an app such as Grafana that scans `--folder` recursively would see the
  timestamped directories too.)
- `.kubefiles-manifest.json` in the folder lists every file kubefiles wrote,
  with the SHA-256 of its content. Only files in it are ever removed or
  overwritten; a file that someone else put at a target path is left alone
  and reported as a conflict. A path enters the manifest *before* its file is
  renamed into place, so a crash between the two cannot orphan a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from typing import Any

MANIFEST = ".kubefiles-manifest.json"
TMP_SUFFIX = ".kubefiles-tmp"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def safe_name(key: str) -> str | None:
    """Why `key` cannot be a file name, or None when it can.

    A ConfigMap key is already restricted by the API server to
    `[-._a-zA-Z0-9]+`, but kubefiles does not rely on that: the folder is
    what an attacker who can create a labelled object would aim at.
    """
    if not key:
        return "empty"
    if key in (".", ".."):
        return "a dot path"
    if "/" in key or "\\" in key or "\x00" in key:
        return "contains a path separator or NUL"
    if key == MANIFEST or key.endswith(TMP_SUFFIX):
        return "reserved by kubefiles"
    return None


def safe_subdir(sub: str, root: str) -> str | None:
    """A relative directory under root from a --folder-annotation value; None if it escapes.

    An absolute value is accepted when it lies under root (k8s-sidecar
    users write absolute paths there).
    """
    sub = sub.strip()
    if not sub:
        return ""
    if os.path.isabs(sub):
        norm = os.path.normpath(sub)
        rootn = os.path.normpath(root)
        if norm == rootn:
            return ""
        if not norm.startswith(rootn + os.sep):
            return None
        sub = os.path.relpath(norm, rootn)
    parts = sub.replace("\\", "/").split("/")
    if any(p in ("..",) or "\x00" in p for p in parts):
        return None
    return "/".join(p for p in parts if p not in ("", "."))


@dataclass
class Result:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed)


class Folder:
    """Brings the folder to a desired {relative path: bytes}, touching only its own files."""

    def __init__(self, root: str, mode: int) -> None:
        self.root = os.path.abspath(root)
        self.mode = mode
        self.manifest_path = os.path.join(self.root, MANIFEST)
        self.owned: dict[str, str] = {}  # relpath -> sha256 of what was written
        self._loaded = False

    def load(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        try:
            fd = os.open(self.manifest_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ValueError("not a regular file")
                data: Any = json.loads(f.read())
            files = data.get("files", {}) if isinstance(data, dict) else {}
            self.owned = {
                str(k): str(v)
                for k, v in files.items()
                if isinstance(k, str) and self._inside(k) is not None
            }
        except FileNotFoundError:
            self.owned = {}
        except (OSError, ValueError):
            # A damaged manifest: own nothing (never delete on a guess); files
            # that are wanted again are compared by content below.
            self.owned = {}
        self._loaded = True

    def _inside(self, rel: str) -> str | None:
        path = os.path.normpath(os.path.join(self.root, rel))
        if not path.startswith(self.root + os.sep):
            return None
        return path

    def _linked_parent(self, path: str) -> str | None:
        """The first directory between root and `path` that is a symlink (or not a
        directory), if any. Whoever else writes to the folder (the app) could
        otherwise point a subfolder elsewhere and have kubefiles write or
        delete there."""
        d = os.path.dirname(path)
        parts = os.path.relpath(d, self.root).split(os.sep) if d != self.root else []
        cur = self.root
        for part in parts:
            cur = os.path.join(cur, part)
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                return None  # made by makedirs below, as a real directory
            if not stat.S_ISDIR(st.st_mode):
                return cur
        return None

    def _save(self, owned: dict[str, str]) -> None:
        doc = {"version": 1, "files": dict(sorted(owned.items()))}
        _write_atomic(self.manifest_path, json.dumps(doc, indent=1).encode(), 0o644)

    def apply(self, desired: dict[str, bytes], verify: bool = False) -> Result:
        """Write what differs, remove what kubefiles wrote and is no longer wanted.

        Without `verify` a file is compared by the hash in the manifest (the
        fast path after a watch event); with it, by the bytes on disk (the
        periodic resync: a file changed or deleted behind our back is repaired).
        """
        if not self._loaded:
            self.load()
        res = Result()
        todo: dict[str, bytes] = {}
        for rel, data in desired.items():
            path = self._inside(rel)
            if path is None:
                res.errors.append(f"{rel}: outside the folder")
                continue
            linked = self._linked_parent(path)
            if linked is not None:
                res.errors.append(f"{rel}: {linked} is a symlink or not a directory; not followed")
                continue
            want = digest(data)
            if rel in self.owned:
                if self.owned[rel] == want and not verify:
                    continue
                if self.owned[rel] == want and _file_digest(path) == want:
                    continue
            elif os.path.lexists(path):
                if _file_digest(path) == want:
                    self.owned[rel] = want  # the same bytes: adopting it deletes nothing of theirs
                    continue
                res.conflicts.append(rel)
                continue
            todo[rel] = data
        gone = [rel for rel in self.owned if rel not in desired]
        if todo:
            # Intent first: a crash after a rename must not leave a file
            # that the manifest does not own.
            self._save({**self.owned, **{rel: "" for rel in todo if rel not in self.owned}})
        for rel, data in todo.items():
            path = self._inside(rel)
            assert path is not None
            try:
                _write_atomic(path, data, self.mode)
            except OSError as exc:
                res.errors.append(f"{rel}: {exc.strerror or exc}")
                self.owned.setdefault(rel, "")
                continue
            self.owned[rel] = digest(data)
            res.written.append(rel)
        for rel in gone:
            path = self._inside(rel)
            assert path is not None
            if self._linked_parent(path) is not None:
                # Its directory was swapped for a link: what is there is not ours.
                del self.owned[rel]
                res.errors.append(f"{rel}: its directory is now a symlink; not followed")
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                res.errors.append(f"{rel}: {exc.strerror or exc}")
                continue
            else:
                res.removed.append(rel)
            del self.owned[rel]
            _prune_dirs(os.path.dirname(path), self.root)
        if todo or gone or not os.path.exists(self.manifest_path):
            self._save(self.owned)
        return res


def _file_digest(path: str) -> str | None:
    """The SHA-256 of a regular file; None for anything else (never follows a
    link, never blocks on a FIFO someone put there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return digest(f.read())


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    d, name = os.path.split(path)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{name}{TMP_SUFFIX}")
    # Whatever is at the temporary name (a link the app put there, a leftover
    # of a crash) goes first; O_EXCL then never follows or reuses anything.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _prune_dirs(d: str, root: str) -> None:
    """Remove directories left empty under root (those that --folder-annotation made)."""
    while d.startswith(root + os.sep):
        try:
            os.rmdir(d)
        except OSError:
            return
        d = os.path.dirname(d)
