"""Identity and rotation: rename (read the old file to its end first), copytruncate
(finish from the copy), moves and copies between directories and hard links
(the same content is the same stream), files renamed while stopped."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import time
from collections import deque

from ..linesplit import LineSplitter
from .base import _Base, log
from .compressed import compression
from .discovery import _FILE_FLAGS
from .files import FINGERPRINT_BYTES, _File, _fp_of


class _Rotation(_Base):
    """Which stream a file is, and what to read first when files rotate."""

    def _resume_rotated(self) -> None:
        """Find checkpointed files that were renamed away while we were down."""
        for key, saved in list(self._saved.items()):
            d = os.path.dirname(str(saved.get("path", "")))
            if not d or not os.path.isdir(d):
                continue
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) != key or not stat.S_ISREG(st.st_mode):
                    continue
                path = str(saved["path"])
                f = self._open(e.path, initial=False, base=self._base_for(path))
                if f is None or (f.read_pos == 0 and saved["offset"] != 0):
                    # Fingerprint mismatch: not our file after all.
                    if f is not None:
                        self._forget(f)
                    break
                f.path = path  # records keep the name the lines were written under
                f.paths.clear()
                # Read it before the file now at its old path.
                self._files.remove(f)
                self._files.insert(0, f)
                succ = self._current.get(path)
                if succ is not None and succ is not f:
                    succ.after = f
                log.info("resuming a file renamed while stopped", extra={"path": e.path})
                break

    def _resume_copies(self) -> None:
        """A checkpointed file gone or rewritten while we were stopped may live on
        next to where it was, under a name the globs do not match: copied
        (copytruncate) or compressed (logrotate compress/delaycompress, a .gz
        rollover). Found by the fingerprint of its (uncompressed) first bytes,
        it is finished from the checkpointed offset."""
        for fp, saved in list(self._lost.items()):
            path = str(saved["path"])
            try:
                entries = list(os.scandir(os.path.dirname(path)))
            except OSError:
                continue
            for e in entries:
                with contextlib.suppress(OSError):
                    st = e.stat(follow_symlinks=False)
                    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self._by_key:
                        continue
                    fd = os.open(e.path, _FILE_FLAGS)
                    try:
                        if _fp_of(fd, FINGERPRINT_BYTES).hex() != fp:
                            continue
                    finally:
                        os.close(fd)
                    f = self._open(e.path, initial=False, base=self._base_for(path))
                    if f is None:
                        continue
                    f.path = path  # records keep the name the lines were written under
                    f.paths.clear()
                    f.is_copy = True  # nobody writes to it: its last line is whole
                    self._files.remove(f)
                    self._files.insert(0, f)  # before the file now at its old path
                    succ = self._current.get(path)
                    if succ is not None and succ is not f:
                        # Its first round alone does not keep the order: the file now
                        # at the path waits until the copy is read to its end.
                        f.after, succ.after = succ.after, f
                    log.info("resuming a copy made while stopped", extra={"path": e.path})
                    break

    def _forget(self, f: _File) -> None:
        for t in self._files:
            if t.twin is f:
                # The original goes (deleted, renamed away and idle): its copy
                # continues from where it was (if it is one: else from its start).
                t.twin = None
                if t.same_before(f.read_pos, f.tail):
                    self._take_over(t, f)
        if not f.unverified and f.twin is None:
            self._remember_read(f)
        f.close()
        if f in self._files:
            self._files.remove(f)
        if self._by_key.get(f.key) is f:
            del self._by_key[f.key]
        for p in list(f.paths):
            if self._current.get(p) is f:
                del self._current[p]
        if f.outstanding:
            self._retired.append(f)
        self._dirty_ckpt = True

    def _remember_read(self, f: _File) -> None:
        """`f`'s content may turn up again (a copy seen late, compressed after a
        copytruncate): that continues from what was handed on of it. Lines in
        flight stay `f`'s (retired), with its own checkpoint entry."""
        if f.fp_len == FINGERPRINT_BYTES:
            entry = f.checkpoint()
            entry["offset"] = f.emit_pos
            entry["partial"] = f.emit_pos == f.partial_at
            # checkpoint()'s tail is of the bytes before the acknowledged offset (read
            # from the file, truncated by now perhaps); the one kept must be of those
            # before this offset, or the copy it is for is taken for another file.
            # The callers hand held lines on first: emit_pos is read_pos, f.tail's.
            entry["tail"] = hashlib.sha1(f.tail).hexdigest()
            self._remember(entry)

    def _catch_up_moves(self) -> None:
        """Open files renamed away before discovery ever saw them (fast rotation).

        Without this, a file created and rotated between two discoveries would
        never be read: its new name no longer matches the glob.
        """
        moves, self._moves = self._moves, []
        for src, dest in moves:
            try:
                st = os.lstat(dest)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in self._by_key or not stat.S_ISREG(st.st_mode):
                continue
            f = self._open(dest, initial=False, base=self._base_for(src))
            if f is None:
                continue
            f.path = src  # its lines were written under the name the glob matched
            f.paths = {src}  # stands in as src's current file until discovery runs
            old = self._current.get(src)
            if old is not None and old is not f and self._still_at(old, src):
                # Reported after discovery opened the file now at src (the
                # watcher's thread is late): f came before that one, not after.
                f.after, old.after = old.after, f
                f.paths = set()
            else:
                if old is not None and old is not f:
                    old.paths.discard(src)
                    f.after = old
                self._current[src] = f
            self.rotations += 1
            log.debug("caught a file rotated before discovery", extra={"path": dest})

    @staticmethod
    def _still_at(f: _File, path: str) -> bool:
        """`path` names `f`'s inode now (it was not renamed away in turn)."""
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == f.key

    def _check_identity(self) -> None:
        """Detect copytruncate that the file already outgrew: its first bytes changed."""
        self._last_identity = time.monotonic()
        for f in self._files:
            # Even at offset 0: first bytes we fingerprinted are gone, so the
            # content was copied away and truncated before we read any of it.
            if f.twin is not None and not self._copy_of(f, f.twin):
                # It grew into something else than a copy: its own stream after all.
                log.info("not a copy after all", extra={"path": f.path, "of": f.twin.path})
                f.twin = None
                continue
            if f.compressed:
                continue  # finished and unchanging
            if f.fp_len and not f.fingerprint_matches():
                self._truncated(f)
            else:
                f.update_fingerprint()

    def _truncated(self, f: _File, copy: _File | None = None) -> None:
        """copytruncate: finish the old content (from its copy), then start again at 0."""
        self.truncations += 1
        if copy is None:
            copy = next((t for t in self._files if t.twin is f), None) or self._find_copy(f)
        if copy is not None and not copy.same_before(f.read_pos, f.tail):
            # Its first bytes are f's, the bytes before f's position are not: not a copy.
            log.info("not a copy after all", extra={"path": copy.path, "of": f.path})
            copy.twin = None
            copy.unverified = False
            if copy.key not in self._by_key:
                copy.close()
            copy = None
        if copy is not None and copy.key in self._by_key:
            # A copy we saw before the truncation: it stops waiting and takes over.
            self._files.remove(copy)
            copy.twin = None
            copy.unverified = False
            copy.is_copy = True
            self._copy_name = copy.path
        log.info(
            "file truncated; reading it from the start",
            extra={"path": f.path, "copy": self._copy_name or None},
        )
        if copy is not None:
            self._take_over(copy, f)
            copy.path = f.path
            self._files.insert(self._files.index(f), copy)
            self._by_key[copy.key] = copy
            f.after = copy
        else:
            self._flush_partial(f, force=True)
            # Chunks still in flight belong to the old content; their acks must not
            # move the new content's offset.
            for c in f.outstanding:
                c._file = None
            f.outstanding.clear()
            if f.joiner is not None:
                f.joiner.reset()
            self._remember_read(f)  # the copy may turn up later (compressed)
        f.read_pos = f.emit_pos = f.ack_pos = 0
        f.tail = b""
        f.split = LineSplitter(self.cfg.max_line_bytes)
        f.fp_len = 0
        f.fp = b""
        f.update_fingerprint()
        self._dirty_ckpt = True

    def _take_over(self, copy: _File, f: _File) -> None:
        """`copy` holds what we had not read of `f` yet: it takes over exactly where
        we were (held line, joiner, unacknowledged chunks)."""
        copy.read_pos, copy.emit_pos, copy.ack_pos = f.read_pos, f.emit_pos, f.ack_pos
        copy.split, copy.carry_since, copy.tail = f.split, f.carry_since, f.tail
        copy.partial_at = f.partial_at
        copy.joiner, f.joiner = f.joiner, self._new_joiner()
        copy.outstanding, f.outstanding = f.outstanding, deque()
        for c in copy.outstanding:
            c._file = copy

    def _identify(self, f: _File) -> bool:
        """Before the first read of a file without checkpoint: is it a file we know
        under another inode (copytruncate's copy, a copy moved between directories
        or filesystems)? Its first FINGERPRINT_BYTES bytes tell. True when `f` was
        given a position or a role (and is read from the next round).

        Only whole fingerprints count: two files whose first few lines are the same
        (a banner) are not the same stream, and a file shorter than that is read as
        new once it stops being a prefix of a followed file (a copy being written).
        """
        head = f.read_fingerprint(FINGERPRINT_BYTES)
        if len(head) < FINGERPRINT_BYTES:
            if time.monotonic() - f.seen_at < self.cfg.identify_wait and any(
                g.read_fingerprint(FINGERPRINT_BYTES).startswith(head) for g in self._known(f)
            ):
                return False  # maybe a copy still being written: look again
            f.unverified = False
            return self._read_file(f, self.cfg.fair_share_bytes)
        f.unverified = False
        fp = hashlib.sha1(head).digest()
        g = next((g for g in self._known(f) if g.fp == fp), None)
        if g is not None:
            if g.fingerprint_matches() and not self._copy_of(f, g):
                return self._read_file(f, self.cfg.fair_share_bytes)  # only starts alike
            if g.fingerprint_matches():
                # g still holds this content: f is a copy not truncated yet (or `cp`).
                f.twin = g
                log.debug("copy of a followed file", extra={"path": f.path, "of": g.path})
            else:
                # g was truncated and we had not noticed yet: f is what g was.
                self._truncated(g, copy=f)
            return True
        saved = self._lost.pop(fp.hex(), None)
        if saved is not None and not f.matches_entry(saved, saved["offset"]):
            # Starts like a file we knew, but is not what we read of it (a long
            # banner, the same first lines): its own stream.
            log.info(
                "same first bytes as a checkpointed file, other content", extra={"path": f.path}
            )
            self._remember(saved)
            saved = None
        if saved is not None and (f.compressed or saved["offset"] <= f.size):
            # A copy of a checkpointed file whose inode is gone or rewritten.
            f.read_pos = f.emit_pos = f.ack_pos = saved["offset"]
            if saved.get("partial") and saved["offset"]:
                f.split.flushed = True
                f.partial_at = saved["offset"]
            self._dirty_ckpt = True
            log.info(
                "resuming a copy of a checkpointed file",
                extra={"path": f.path, "of": saved["path"], "offset": saved["offset"]},
            )
        return self._read_file(f, self.cfg.fair_share_bytes)

    @staticmethod
    def _copy_of(f: _File, g: _File) -> bool:
        """`f` holds what `g` holds so far: the same bytes before the end of the
        shorter (a long banner is the same at the start, not further on)."""
        if f.compressed or g.compressed:
            return True  # checked when it takes over (same_before)
        try:
            end = min(os.fstat(f.fd).st_size, os.fstat(g.fd).st_size)
        except OSError:
            return False
        return f.bytes_before(end) == g.bytes_before(end)

    def _known(self, f: _File) -> list[_File]:
        """Followed files `f` could be a copy of (whole fingerprint, read themselves)."""
        return [
            g
            for g in self._files
            if g is not f and g.twin is None and not g.unverified and g.fp_len == FINGERPRINT_BYTES
        ]

    def _find_copy(self, f: _File) -> _File | None:
        """The copy copytruncate made of `f` (same first bytes, at least as long)."""
        self._copy_name = ""
        if f.fp_len == 0:
            return None
        d = os.path.dirname(f.path)
        found: list[tuple[float, str, os.stat_result]] = []
        try:
            for e in os.scandir(d):
                with contextlib.suppress(OSError):
                    if e.is_file(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        found.append((st.st_mtime, e.path, st))
        except OSError:
            return None
        for _mtime, epath, st in sorted(found, reverse=True):  # newest first
            key = (st.st_dev, st.st_ino)
            if key == f.key:
                continue
            known = self._by_key.get(key)
            if known is not None:
                # Followed already: only a copy we have not read any of yet qualifies.
                if (
                    (known.twin is f or known.unverified)
                    and _fp_of(known.fd, f.fp_len) == f.fp
                    and known.same_before(f.read_pos, f.tail)
                ):
                    self._copy_name = epath
                    return known
                continue
            try:
                fd = os.open(epath, _FILE_FLAGS)  # a link swapped in since the scan: refused
            except OSError:
                continue
            # Shorter than what we read: not a whole copy (a compressed one may be).
            whole = st.st_size >= f.read_pos or compression(fd) is not None
            if whole and _fp_of(fd, f.fp_len) == f.fp:
                copy = _File(epath, fd, os.fstat(fd), f.read_pos, self.cfg.max_line_bytes)
                if not copy.same_before(f.read_pos, f.tail):
                    # Only starts alike (a banner): an older file may be the copy.
                    copy.close()
                    continue
                self._copy_name = epath
                # Matched by the globs (`app.log*`): not closed before discovery sees it.
                copy.paths = {epath} if self._matches(epath) else set()
                copy.is_copy = True
                return copy
            os.close(fd)
        return None
