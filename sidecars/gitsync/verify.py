"""Verified publishing: a commit (or an annotated tag) is published only when
its signature is good and made by a key the operator trusts.

git does the checking (`git verify-commit` / `git verify-tag`), with the trust
given to it and nothing else:

- SSH signatures: `gpg.ssh.allowedSignersFile` is `--allowed-signers-file`
  (`/dev/null` without one, so an SSH-signed commit then fails);
- OpenPGP signatures: `GNUPGHOME` is a private directory holding only the keys
  of `--gpg-keyring-file` (armored or binary), imported with
  `gpg --no-autostart` so that no agent is left running; without a keyring it
  stays empty, so the container user's own keyring is never consulted.

A key imported from the keyring counts as trusted (git's default
`gpg.minTrustLevel`): the keyring *is* the trust decision. The check runs on
the fetched commit before any worktree is built from it, so an unsigned or
forged tree is never checked out, let alone published.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from podkit.hooks import kill_group

from .errors import GitError

if TYPE_CHECKING:  # GitPython: not for `podkit --help` (the program imports VerifyError)
    from . import _git

#: What git says, mapped to one short reason for logs, `/` and the error file.
_REASONS = (
    ("No principal matched", "signed by a key not in --allowed-signers-file"),
    ("No public key", "signed by a key not in --gpg-keyring-file"),
    ("incorrect signature", "bad signature (the signed content was changed)"),
    ("BAD signature", "bad signature (the signed content was changed)"),
    ("allowedSignersFile", "SSH signature, but no --allowed-signers-file"),
    ("cannot verify a non-tag object", "--ref is not an annotated tag (--verify-tag)"),
    ("no signature found", "unsigned"),
)


class VerifyError(GitError):
    """The fetched commit or tag must not be published: why, and which commit."""

    def __init__(self, sha: str, reason: str) -> None:
        super().__init__(f"signature check refused {sha[:12]}: {reason}; not published")
        self.sha = sha
        self.reason = reason
        self.remote = True  # the repository is fine: no local repair follows


class Verifier:
    """--verify-signatures: the trust sources, and the check itself."""

    def __init__(
        self,
        home: str,
        *,
        allowed_signers_file: str | None,
        gpg_keyring_file: str | None,
        verify_tag: bool,
    ) -> None:
        self.home = home
        self.allowed_signers_file = allowed_signers_file
        self.gpg_keyring_file = gpg_keyring_file
        self.verify_tag = verify_tag
        self._imported: tuple[int, int, int] | None = None

    def setup(self) -> None:
        os.makedirs(self.home, mode=0o700, exist_ok=True)
        self._import()

    def _import(self) -> None:
        """(Re-)import the keyring when the file changed (a rotated Secret)."""
        if not self.gpg_keyring_file:
            return
        try:
            st = os.stat(self.gpg_keyring_file)
        except OSError as exc:
            raise GitError(f"--gpg-keyring-file: {exc.strerror or exc}") from None
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self._imported:
            return
        # A fresh keyring each time: a key removed from the file is no longer trusted.
        for name in ("pubring.kbx", "pubring.kbx~", "pubring.gpg", "trustdb.gpg"):
            try:
                os.unlink(os.path.join(self.home, name))
            except FileNotFoundError:
                pass
        proc = subprocess.Popen(
            [
                "gpg",
                "--batch",
                "--quiet",
                "--no-autostart",
                "--homedir",
                self.home,
                "--import",
                os.path.abspath(self.gpg_keyring_file),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.communicate()
            raise GitError("--gpg-keyring-file: gpg --import timed out") from None
        if proc.returncode != 0:
            text = err.decode("utf-8", "replace").strip()
            raise GitError(f"--gpg-keyring-file: gpg --import failed: {text[-300:]}")
        self._imported = sig

    def config(self) -> list[tuple[str, str]]:
        return [("gpg.ssh.allowedSignersFile", self._allowed())]

    def _allowed(self) -> str:
        if self.allowed_signers_file:
            return os.path.abspath(self.allowed_signers_file)
        return os.devnull

    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": self.home}

    def check(self, g: _git.Git, sha: str, target: str) -> None:
        """Raise VerifyError unless `sha` (or the tag at `target`) is signed by a trusted key."""
        self._import()
        try:
            if self.verify_tag:
                g.verify_tag(target)
            else:
                g.verify_commit(sha)
        except GitError as exc:
            if exc.timed_out:
                raise
            raise VerifyError(sha, reason(exc.stderr)) from None


def reason(stderr: str) -> str:
    for needle, why in _REASONS:
        if needle in stderr:
            return why
    # git says nothing at all for an unsigned commit.
    return "unsigned" if not stderr.strip() else stderr.strip().splitlines()[-1][:200]
