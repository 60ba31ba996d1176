"""The git work of one sync, run in a worker thread.

A `Checkout` is used by one thread at a time (the program never runs two syncs
at once) and owns everything it changes: the repository state it tracks
between syncs lives here, not on the program, and a sync hands back a
`SyncResult` (or raises `GitError`) instead of setting shared attributes.

All git work goes through GitPython's `Repo.git` passthrough, with a fresh
`Repo` closed after every sync, each command bounded by what is left of
--sync-timeout (see `_git.py`).

Longer than the 600 lines a module should have, for one reason: the steps of
one sync (fetch, verify, build the worktree, publish, clean up after a crash)
share one repository state and one deadline, and their order is the
correctness argument (nothing is published before it is verified); it reads
best in one place. The git-dir helpers at the end are the only free part.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import git

from . import _git
from ._git import GitError, Runs
from .auth import Auth, is_local
from .publish import SHA_RE, WORKTREES, exchange, expire_copies, publish, published_sha
from .verify import Verifier, VerifyError

TARGET_REF = "refs/gitsync/target"
# file is added only for a local --repo: git >= 2.38.1 refuses it for submodules
# by default (CVE-2022-39253), and GIT_ALLOW_PROTOCOL would re-allow it, letting
# a hostile .gitmodules copy local repositories (other volumes) into the tree.
_ALLOWED_PROTOCOLS = "git:http:https:ssh"


@dataclass
class SyncResult:
    sha: str
    changed: bool
    fetched: bool
    #: The signature check (--verify-signatures) passed for `sha` in this sync.
    verified: bool = False


@dataclass
class Checkout:
    """One repository under `root`, synced to `ref` and published at `link_path`."""

    repo: str
    root: str
    link_path: str
    ref: str
    auth: Auth
    log: logging.Logger
    # The program's settings (settings.py holds their defaults, once), by keyword.
    depth: int = field(kw_only=True)
    submodules: str = field(kw_only=True)
    sparse_checkout_file: str | None = field(kw_only=True)
    sync_timeout: float = field(kw_only=True)
    stale_worktree_timeout: float = field(kw_only=True)
    git_gc: str = field(kw_only=True)
    #: --git-config / --git-config-add, in order.
    git_config: list[tuple[str, str]] = field(default_factory=list)
    group_write: bool = field(kw_only=True)
    #: --filter: a partial clone (blobs or trees fetched when a checkout needs them).
    filter_spec: str | None = field(kw_only=True)
    #: Called with (commit, worktree) before the link flips to it; raises to keep
    #: the old tree published (--pre-publish-exechook-command).
    pre_publish: Callable[[str, str], None] | None = None
    #: Called before each `git fetch` (a counter, thread-safe).
    on_fetch: Callable[[], None] = lambda: None
    #: --repair-check-interval: how often a no-op sync also runs `git status` in
    #: the published tree (its HEAD is read every time).
    repair_check_interval: float = field(kw_only=True)
    #: --publish-mode: "link" (a symlink flip) or "copy" (a directory swap).
    publish_mode: str = field(kw_only=True)
    #: --verify-signatures: nothing is published that this refuses.
    verifier: Verifier | None = None
    runs: Runs = field(default_factory=Runs)
    # "quick" at start and after remote failures; "full" (fsck) after a local one.
    _needs_check: str | None = "quick"
    _fetched_once: bool = False
    #: When the published tree's files were last compared with its commit.
    _files_checked: float = float("-inf")
    #: The last commit whose signature passed (a full-hash --ref is not fetched again).
    _verified: str | None = None
    #: The last commit the signature check refused (not fetched again while named).
    _refused: VerifyError | None = None
    #: The published commit, if its fresh checkout already differs from the
    #: commit (line-ending filters, case-insensitive names): only its HEAD is
    #: verified, or every sync would rebuild it.
    _dirty_on_checkout: set[str] = field(default_factory=set)

    @property
    def _git_url(self) -> str:
        return self.auth.git_url

    @property
    def _runs(self) -> Runs:
        return self.runs

    def _worktree(self, sha: str) -> str:
        return os.path.join(self.root, WORKTREES, sha)

    def _published(self) -> str | None:
        return published_sha(self.link_path, self.publish_mode)

    def _env(self) -> dict[str, str]:
        config = [
            ("safe.directory", "*"),
            ("gc.autoDetach", "false"),
            ("gc.pruneExpire", "now"),
            ("credential.helper", ""),
            ("advice.detachedHead", "false"),
            ("fetch.recurseSubmodules", "false"),
            ("init.defaultBranch", "gitsync"),
            # Reflogs would keep every replaced commit alive (and refer to
            # objects a damaged repo lost); the published worktree is the record.
            ("core.logAllRefUpdates", "false"),
        ]
        if self.sparse_checkout_file:
            config += [("core.sparseCheckout", "true"), ("core.sparseCheckoutCone", "false")]
        if self.group_write:
            config.append(("core.sharedRepository", "group"))
        if self.filter_spec:
            # origin becomes a promisor: checkouts fetch what the filter left out.
            config += [
                ("remote.origin.promisor", "true"),
                ("remote.origin.partialCloneFilter", self.filter_spec),
            ]
        if self.verifier is not None:
            config += self.verifier.config()
        # The user's (--git-config) come last, so they win over the defaults above.
        config += self.git_config
        env = {
            **self.auth.env(),
            **(self.verifier.env() if self.verifier is not None else {}),
            "GIT_ALLOW_PROTOCOL": _ALLOWED_PROTOCOLS + (":file" if is_local(self.repo) else ""),
            "GIT_CEILING_DIRECTORIES": os.path.dirname(self.root),
            "GIT_CONFIG_COUNT": str(len(config)),
        }
        for i, (k, v) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = k
            env[f"GIT_CONFIG_VALUE_{i}"] = v
        return env

    def sync(self, asked: bool = False) -> SyncResult:
        """Bring the published tree to what `ref` names now; raises GitError."""
        try:
            return self._sync(asked)
        except Exception as exc:
            if not self.runs.aborted and self._needs_check != "full":
                remote = isinstance(exc, GitError) and (exc.remote or exc.timed_out)
                self._needs_check = "quick" if remote else "full"
            raise

    def _sync(self, asked: bool) -> SyncResult:
        deadline = time.monotonic() + self.sync_timeout
        env = self._env()
        if self._needs_check:
            self._check_repo(deadline, env, thorough=self._needs_check == "full")
            self._needs_check = None
        try:
            result = self._sync_repo(deadline, env, asked)
        except GitError as exc:
            if exc.timed_out or self._runs.aborted or exc.remote:
                raise
            # A local failure (missing objects, a broken worktree): repair and try once more.
            self.log.warning(
                "local git failure; checking the repository", extra={"error": str(exc)}
            )
            self._check_repo(deadline, env, thorough=True)
            result = self._sync_repo(deadline, env)
        if not result.changed:
            # Replaced worktrees expire, and strays go, while nothing new arrives
            # too; a publish already ran this cleanup. A listdir when there is
            # nothing to do.
            with contextlib.suppress(GitError, OSError):
                self._cleanup(result.sha, deadline, env)
        return result

    def _init_repo(self, deadline: float, env: dict[str, str]) -> None:
        g = _git.new_git(self.root, deadline, env, self._runs)
        g.init("-q")
        g.remote("add", "origin", self._git_url)

    def _check_repo(self, deadline: float, env: dict[str, str], *, thorough: bool) -> None:
        """Remove leftover lock files; re-clone a repository git cannot use.

        `git fsck` reads every object (minutes on a big repository), so it runs
        only after a local failure or when lock files show a git was killed;
        otherwise the published commit must merely be readable.
        """
        gitdir = os.path.join(self.root, ".git")
        if not os.path.isdir(gitdir):
            if os.path.lexists(gitdir):
                os.unlink(gitdir)
            self._init_repo(deadline, env)
            return
        removed = _remove_locks(gitdir)
        if removed:
            self.log.warning("removed leftover lock files", extra={"files": removed})
            thorough = True
        try:
            g = _git.new_git(self.root, deadline, env, self._runs)
            top = g.rev_parse("--show-toplevel")
            if os.path.realpath(top) != os.path.realpath(self.root):
                raise GitError(f"repository toplevel is {top}, not --root")
            published = self._published()
            if not thorough and published is not None:
                try:
                    g.rev_parse("--verify", "-q", published + "^{commit}")
                except GitError as exc:
                    # Missing after a re-clone the remote then failed to refill is
                    # fine; only fsck can tell that from damage.
                    if exc.timed_out or self._runs.aborted:
                        raise
                    thorough = True
            if thorough:
                g.fsck("--connectivity-only", "--no-progress", "--no-dangling")
            url = g.config("--get", "remote.origin.url") if _has_origin(gitdir) else ""
            if url != self._git_url:
                if url:
                    g.remote("set-url", "origin", self._git_url)
                else:
                    g.remote("add", "origin", self._git_url)
        except GitError as exc:
            if exc.timed_out or self._runs.aborted:
                raise  # not evidence against the repository
            self.log.warning("repository unusable; re-cloning", extra={"error": str(exc)})
            self._wipe(gitdir)
            self._init_repo(deadline, env)

    def _wipe(self, gitdir: str) -> None:
        """Drop .git and every worktree but the published one (its files stay served)."""
        _rmtree(gitdir)
        keep = self._published()
        base = os.path.join(self.root, WORKTREES)
        for name in os.listdir(base):
            if name != keep:
                _rmtree(os.path.join(base, name))

    def _sync_repo(self, deadline: float, env: dict[str, str], asked: bool = False) -> SyncResult:
        published = self._published()
        attached = published is not None and _attached(self._worktree(published))

        checked: list[bool] = []

        def intact() -> bool:
            # The served tree must still be what its name says: checked (once)
            # whenever a sync finds the same commit, and repaired below when not.
            # Its HEAD (a file read) every time; its files (a `git status`, a
            # process) every --repair-check-interval, or when a sync was asked
            # for. A new commit replaces it anyway.
            if not checked:
                assert published is not None
                now = time.monotonic()
                files = asked or now - self._files_checked >= self.repair_check_interval
                checked.append(attached and self._intact(published, deadline, env, files=files))
                if files:
                    self._files_checked = now
            return checked[0]

        if (
            attached
            and published is not None
            and is_hash_of(self.ref, published)
            and (self.verifier is None or self._verified == published)
            and intact()
        ):
            return SyncResult(published, False, False)  # a commit never moves: nothing to fetch
        try:
            repo = _git.Repo(self.root)
        except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError) as exc:
            raise GitError(f"not a usable git repository: {exc}") from None
        with repo:
            g = _git.bounded(repo.git, deadline, env, self._runs)
            # One round trip (the ref advertisement) instead of a fetch that,
            # shallow, would send the same commit again every period. Skipped
            # when a push webhook or SIGHUP asked for this sync: the ref has
            # most likely moved, and going straight to the fetch saves a trip.
            want = self.ref
            advertised: list[str | None] = []

            def remote() -> str | None:  # one ls-remote per sync at most
                if not advertised:
                    advertised.append(self._remote_sha(g))
                return advertised[0]

            if is_abbreviated_hash(want):
                # The protocol fetches full hashes only: find the advertised one.
                want = remote() or want
            if (
                not asked
                and self._fetched_once
                and attached
                and (want == published or remote() == published)
                and intact()
            ):
                return SyncResult(published or "", False, False)
            refused = self._refused
            if not asked and refused is not None and remote() == refused.sha:
                # Still the commit the signature check refused: refused again, no fetch.
                raise VerifyError(refused.sha, refused.reason)
            # Into a ref of our own: it keeps the commit from gc and is the "have"
            # that keeps later full-history fetches small (no `reset --soft` needed).
            args = [
                "origin",
                f"+{want}:{TARGET_REF}",
                "--no-tags",
                "--no-auto-gc",
                "--no-progress",
                "--no-recurse-submodules",
            ]
            if self.filter_spec:
                args.append(f"--filter={self.filter_spec}")
            if self.depth > 0:
                args += ["--depth", str(self.depth)]
            elif os.path.exists(os.path.join(self.root, ".git", "shallow")):
                args.append("--unshallow")
            self.on_fetch()
            try:
                g.fetch(*args)
            except GitError as exc:
                exc.remote = True
                raise
            # The first sync of a process always fetches, so a changed --depth applies.
            self._fetched_once = True
            sha = g.rev_parse(TARGET_REF + "^{commit}")
            verified = False
            if self.verifier is not None:
                # Before any file of it is checked out: a refused tree never is.
                try:
                    self.verifier.check(g, sha, TARGET_REF)
                except VerifyError as exc:
                    self._refused = exc
                    raise
                self._verified = sha
                self._refused = None
                verified = True
            wt = self._worktree(sha)
            if sha == published and _nonempty_dir(wt):
                if not _attached(wt):
                    self._reattach(g, sha, wt, deadline, env)
                elif not intact():
                    self._rebuild(g, sha, wt, deadline, env)
                return SyncResult(sha, False, True, verified)
            self._build_worktree(g, sha, wt, deadline, env)
        if self.pre_publish is not None:
            self.pre_publish(sha, wt)
        publish(self.link_path, wt, self.publish_mode, keep=self.stale_worktree_timeout)
        self._files_checked = time.monotonic()  # just checked out: its files are its commit's
        old = self._worktree(published) if published and published != sha else None
        if old and os.path.isdir(old):
            with contextlib.suppress(OSError):
                os.utime(old)  # starts its --stale-worktree-timeout clock
        with contextlib.suppress(GitError, OSError):
            self._cleanup(sha, deadline, env)
        return SyncResult(sha, True, True, verified)

    def _remote_sha(self, g: _git.Git) -> str | None:
        return remote_sha(g, self.ref)

    def _intact(
        self,
        sha: str,
        deadline: float,
        env: dict[str, str],
        *,
        quiet: bool = False,
        files: bool = True,
    ) -> bool:
        """The published worktree's HEAD is its name and (`files`) no tracked file was changed."""
        wt = self._worktree(sha)
        admin = _admin_dir(wt)
        try:
            with open(os.path.join(admin or "", "HEAD"), encoding="utf-8") as f:
                head = f.read().strip()
        except OSError:
            return True  # not attached: the re-attach path handles it
        why = ""
        if head != sha:
            why = f"its HEAD is {head[:40]!r}"
        elif files and sha not in self._dirty_on_checkout:
            # Untracked files are the consumer's (caches such as __pycache__), not damage.
            # GIT_OPTIONAL_LOCKS=0: a background check must not take index.lock (git
            # status refreshes the index when it can), or a person running git in the
            # served tree at that moment gets "index.lock: File exists".
            quiet_env = {**env, "GIT_OPTIONAL_LOCKS": "0"}
            out = _git.new_git(wt, deadline, quiet_env, self._runs).status(
                "--porcelain", "--untracked-files=no", "--ignore-submodules=all"
            )
            if out.strip():
                names = [line[3:] for line in out.splitlines()[:5]]
                why = f"files changed in place: {', '.join(names)}"
        if why and not quiet:
            self.log.warning(
                "published worktree no longer matches its commit; rebuilding",
                extra={"commit": sha, "reason": why},
            )
        return not why

    def _rebuild(
        self, g: _git.Git, sha: str, wt: str, deadline: float, env: dict[str, str]
    ) -> None:
        """Replace a damaged published worktree by a fresh one of the same commit.

        Built beside it, then swapped with renameat2(RENAME_EXCHANGE): readers
        see the damaged tree or the repaired one under the same path, never
        neither. Where the kernel or filesystem cannot exchange, it is removed
        and rebuilt in place, as git-sync does (readers see a gap).
        """
        tmp = os.path.join(self.root, WORKTREES, f".rebuild-{sha}")
        self._build_worktree(g, sha, tmp, deadline, env)
        if exchange(tmp, wt):
            old_admin = _admin_dir(tmp)  # the damaged tree, now at tmp
            new_admin = _admin_dir(wt)
            if new_admin is not None:
                with open(os.path.join(new_admin, "gitdir"), "w", encoding="utf-8") as f:
                    f.write(os.path.join(wt, ".git") + "\n")
            _rmtree(tmp)
            if old_admin is not None and os.path.isdir(old_admin):
                _rmtree(old_admin)
        else:
            _rmtree(tmp)
            _rmtree(wt)
            g.worktree("prune")
            self._build_worktree(g, sha, wt, deadline, env)
        self.log.info("rebuilt the published worktree", extra={"commit": sha})
        if not self._intact(sha, deadline, env, quiet=True):
            # Only the published commit is ever checked: the others would pile
            # up, one a commit, for as long as the repository keeps its filters.
            self._dirty_on_checkout = {sha}
            self.log.warning(
                "a fresh checkout of this commit already differs from it (line-ending "
                "or other filters?); only its HEAD is verified from now on",
                extra={"commit": sha},
            )

    def _build_worktree(
        self, g: _git.Git, sha: str, wt: str, deadline: float, env: dict[str, str]
    ) -> None:
        if os.path.lexists(wt):
            # Left by a sync that died before publishing it: never published, safe to drop.
            _rmtree(wt)
            g.worktree("prune")
        sparse = self.sparse_checkout_file
        # Checked out by `worktree add` itself unless the sparse patterns must be in
        # place first (one git process less per publish).
        g.worktree("add", "--force", "--detach", *(["--no-checkout"] if sparse else []), wt, sha)
        admin = _admin_dir(wt)
        if admin is None:
            raise GitError(f"worktree add {wt}: no .git file")
        _write_gitfile(wt, admin)
        w = _git.new_git(wt, deadline, env, self._runs)
        if sparse:
            info = os.path.join(admin, "info")
            os.makedirs(info, exist_ok=True)
            shutil.copyfile(sparse, os.path.join(info, "sparse-checkout"))
            w.reset("--hard", "-q", sha, "--")
        if self.submodules != "off" and os.path.exists(os.path.join(wt, ".gitmodules")):
            sub = ["update", "--init"]
            if self.submodules == "recursive":
                sub.append("--recursive")
            if self.depth > 0:
                sub += ["--depth", str(self.depth)]
            w.submodule(*sub)

    def _reattach(
        self, g: _git.Git, sha: str, wt: str, deadline: float, env: dict[str, str]
    ) -> None:
        """Give the published worktree a fresh admin dir after a re-clone, files untouched.

        Its `.git` file named an admin dir the re-clone removed, so git commands
        (and consumers' `git rev-parse HEAD`) in the tree failed. It cannot be
        rebuilt in place while it is served, so borrow the admin dir of a
        no-checkout worktree, point it at the published tree, and load its index.
        """
        tmp = os.path.join(self.root, WORKTREES, f".reattach-{sha}")
        if os.path.lexists(tmp):
            _rmtree(tmp)
        g.worktree("add", "--force", "--detach", "--no-checkout", tmp, sha)
        admin = _admin_dir(tmp)
        _rmtree(tmp)
        if admin is None:
            raise GitError(f"worktree add {tmp}: no .git file")
        with open(os.path.join(admin, "gitdir"), "w", encoding="utf-8") as f:
            f.write(os.path.join(wt, ".git") + "\n")
        _write_gitfile(wt, admin)
        if self.sparse_checkout_file:
            os.makedirs(os.path.join(admin, "info"), exist_ok=True)
            shutil.copyfile(
                self.sparse_checkout_file, os.path.join(admin, "info", "sparse-checkout")
            )
        # Mixed reset: the index from the commit; the served files are not written.
        _git.new_git(wt, deadline, env, self._runs).reset("-q", sha, "--")
        self.log.info("re-attached the published worktree", extra={"commit": sha})

    def _cleanup(self, current: str, deadline: float, env: dict[str, str]) -> None:
        expire_copies(self.link_path, self.stale_worktree_timeout)
        base = os.path.join(self.root, WORKTREES)
        now = time.time()
        removed = 0
        prune = False
        admins = os.path.join(self.root, ".git", "worktrees")
        for name in os.listdir(base):
            if name == current:
                continue
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                # A stray file or link: never one of ours (git-sync removes them too).
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            # A directory not named by a commit is no worktree of ours to keep.
            stray = not SHA_RE.match(name)
            age = now - st.st_mtime
            if stray or self.stale_worktree_timeout <= 0 or age > self.stale_worktree_timeout:
                admin = _admin_dir(path)
                _rmtree(path)
                # What `git worktree prune` would do for it, without a process.
                if admin is None or os.path.dirname(admin) != admins:
                    prune = True
                elif os.path.isdir(admin):
                    _rmtree(admin)
                removed += 1
        if not removed:
            return
        g = _git.new_git(self.root, deadline, env, self._runs)
        if prune:
            g.worktree("prune")
        if self.git_gc != "off":
            gc = {"auto": ["--auto"], "always": [], "aggressive": ["--aggressive"]}[self.git_gc]
            g.gc("--quiet", *gc)


_HEX = frozenset("0123456789abcdef")


def is_abbreviated_hash(ref: str) -> bool:
    return 4 <= len(ref) < 40 and set(ref) <= _HEX


def is_hash_of(ref: str, sha: str) -> bool:
    """`ref` names commit `sha`: the full hash, or an abbreviation of it."""
    return (bool(SHA_RE.match(ref)) and ref == sha) or (
        is_abbreviated_hash(ref) and sha.startswith(ref)
    )


def remote_sha(g: _git.Git, ref: str) -> str | None:
    """What --ref names on the remote now, resolved as git fetch would; None: ask fetch."""
    try:
        # A pattern matches a ref name's tail, and "v1" does not match the peeled
        # "refs/tags/v1^{}": ask for it by name. An abbreviated hash names no
        # ref: it needs the whole advertisement.
        patterns = [] if is_abbreviated_hash(ref) else [ref, ref + "^{}"]
        out = str(g.ls_remote("origin", *patterns))
    except GitError as exc:
        exc.remote = True
        raise
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    r = ref
    for name in (r, f"refs/{r}", f"refs/tags/{r}", f"refs/heads/{r}", f"refs/remotes/{r}"):
        if name in refs:
            return refs.get(name + "^{}", refs[name])  # an annotated tag peels to its commit
    if is_abbreviated_hash(r):
        # An abbreviated hash: the one advertised commit it abbreviates (peeled
        # values first, so an annotated tag's commit is found, not the tag).
        found = {sha for name, sha in refs.items() if sha.startswith(r)}
        peeled = {refs[n] for n in refs if n.endswith("^{}") and refs[n] in found}
        found = peeled or found
        if len(found) == 1:
            return found.pop()
    return None


def _nonempty_dir(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return any(True for _ in it)
    except OSError:
        return False


def _rmtree(path: str) -> None:
    def onerror(func: Any, p: str, exc: Any) -> None:
        # Read-only files (git packs) inside a writable dir are removable; a
        # read-only dir is not: make it writable and retry once.
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o755)
            func(p)

    shutil.rmtree(path, onerror=onerror)


def _admin_dir(worktree: str) -> str | None:
    """The `.git/worktrees/<name>` directory a worktree's `.git` file names, if it says."""
    dotgit = os.path.join(worktree, ".git")
    try:
        with open(dotgit, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    return os.path.normpath(os.path.join(worktree, text.removeprefix("gitdir:").strip()))


def _attached(worktree: str) -> bool:
    """The worktree has files and its `.git` file names an admin dir that exists."""
    admin = _admin_dir(worktree)
    return admin is not None and os.path.isdir(admin) and _nonempty_dir(worktree)


def _write_gitfile(worktree: str, admin: str) -> None:
    # Relative, so the volume can be mounted at another path in other containers;
    # renamed into place, so a reader of a served tree never sees half a file.
    tmp = os.path.join(worktree, ".git.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"gitdir: {os.path.relpath(admin, worktree)}\n")
    os.replace(tmp, os.path.join(worktree, ".git"))


def _has_origin(gitdir: str) -> bool:
    try:
        with open(os.path.join(gitdir, "config"), encoding="utf-8") as f:
            return '[remote "origin"]' in f.read()
    except OSError:
        return False


def _remove_locks(gitdir: str) -> list[str]:
    """Lock files a killed git left behind; nothing else runs git in this repo."""
    removed = []
    for dirpath, dirnames, filenames in os.walk(gitdir):
        if os.path.basename(dirpath) == "objects" and dirpath == os.path.join(gitdir, "objects"):
            dirnames[:] = [d for d in dirnames if d in ("pack", "info")]
        for name in filenames:
            if (
                name.endswith(".lock")
                or name == "gc.pid"
                or (name.startswith("tmp_") and os.path.basename(dirpath) == "pack")
            ):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed.append(os.path.relpath(path, gitdir))
    return removed
