"""gitsync's configuration rules: what validate() checks and derives, what
`podkit validate` can check from the values alone (static_problems), and what
--check-config adds where the program will run (config_problems).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from podkit import UsageError
from podkit.options import split_addr
from podkit.program import writable_dir_problem

from . import auth, compat, repos
from .auth import is_ssh
from .publish import WORKTREES
from .settings import GitSyncSettings

if TYPE_CHECKING:
    from .program import GitSync

# Remote-helper syntax `<transport>::<address>` (ext::, fd::, ...) is refused outright.
_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")


def default_link(repo: str) -> str:
    """The repo's leaf name without `.git`, as git-sync derives --link."""
    path = urlsplit(repo).path if "://" in repo else repo.rpartition(":")[2]
    leaf = path.rstrip("/").rsplit("/", 1)[-1]
    if leaf.endswith(".git"):
        leaf = leaf[:-4]
    return leaf or "repo"


#: Signals that stop the program or cannot be caught: never a sync trigger.
_NOT_TRIGGERS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGSTOP})


def parse_signal(text: str) -> int:
    """git-sync's --sync-on-signal value: a name (HUP, SIGUSR1) or a number (10)."""
    t = text.strip().upper()
    try:
        if t.isdigit():
            sig = signal.Signals(int(t))
        else:
            sig = signal.Signals["SIG" + t.removeprefix("SIG")]
    except (KeyError, ValueError):
        raise UsageError(f"--sync-on-signal: not a signal: {text!r}") from None
    if sig in _NOT_TRIGGERS:
        raise UsageError(f"--sync-on-signal: {sig.name} stops the program; choose another")
    return int(sig)


class Configured(GitSyncSettings):
    """The rules over GitSyncSettings' values, and what they derive."""

    _warnings: list[str]
    _repos: list[GitSync]
    _is_child: bool
    _sync_signal: int | None
    _credentials: list[auth.Credential]
    _git_config: list[tuple[str, str]]

    def validate(self) -> None:
        self._warnings = compat.apply(self)
        if self.verbose > 0 and self.log_level == "info":
            self.log_level = "debug"
        problems = self.static_problems(loaded=True)
        if not problems and self.repos is not None:
            try:
                from .program import GitSync

                assert isinstance(self, GitSync)  # the one class built on these rules
                self._repos = repos.build(self, self.repos, self.config or "")
            except UsageError as exc:
                problems.append(str(exc))
            else:
                return
        if self.repo and not any(p.startswith("--repo") for p in problems):
            problems += self._file_problems()
        if problems:
            # The first stops the program; --check-config lists them all, the
            # I/O checks too (the runner asks config_problems() only of a
            # configuration that validated).
            error = UsageError(problems[0])
            error.problems = problems + self.config_problems()  # type: ignore[attr-defined]
            raise error
        self.repo = self.repo.strip()
        self.link = self.link or default_link(self.repo)
        self._credentials = auth.parse_credentials(
            self.credential + ([self.credentials] if self.credentials else [])
        )
        self._git_config = (
            [("http.cookieFile", auth.DEFAULT_COOKIE_FILE)] if self.cookie_file else []
        )
        if self._credentials:
            # The path is part of the URL git asks about, so a submodule on the
            # same host can have its own credential (git-sync's per-URL rule).
            self._git_config.append(("credential.useHttpPath", "true"))
        self._git_config += auth.parse_git_config(self.git_config or "", "--git-config")
        for item in self.git_config_add:
            self._git_config += auth.parse_git_config(item, "--git-config-add")
        if self.stale_after is None:
            self.stale_after = 10 * self.period

    def static_problems(self, loaded: bool = False) -> list[str]:
        """Every rule on the parsed values alone, one line each (`podkit
        validate` checks a manifest with them, away from the pod's files).
        `loaded`: --config has been read, so a missing `repos:` is missing."""
        if self.repos is not None:
            checks = [self._check_repos, self._check_container]
        elif not self.repo:
            if self.config and not loaded:
                return []  # repos: may be in the file, read in the pod
            return ["--repo is required [env PODKIT_REPO] (or repos: in --config)"]
        else:
            checks = [
                self._check_repo,
                self._check_numbers,
                self._check_link,
                self._check_commands,
                self._check_credentials,
                self._check_github_app,
                self._check_verify,
                self._check_container,
            ]
        out = []
        for check in checks:
            try:
                check()
            except UsageError as exc:
                out.append(str(exc))
                if check == self._check_repo:
                    break  # the rest would read a URL that does not parse
        return out

    def config_problems(self) -> list[str]:
        """--check-config: the volume the checkouts go to can be written."""
        problem = writable_dir_problem("--root", self.root)
        return [problem] if problem else []

    def _check_repos(self) -> None:
        if self.repo:
            raise UsageError("--repo and repos: in --config: one or the other")

    def _check_repo(self) -> None:
        repo = self.repo.strip()
        if _HELPER_RE.match(repo):
            raise UsageError(
                f"--repo: remote-helper transports ({repo.split('::')[0]}::) are refused"
            )
        if "://" in repo:
            try:
                scheme = urlsplit(repo).scheme.lower()
            except ValueError as exc:
                raise UsageError(f"--repo: not a URL: {exc}") from None
            if scheme not in ("http", "https", "ssh", "git", "file", "git+ssh", "ssh+git"):
                raise UsageError(f"--repo: unsupported scheme {scheme!r}")

    def _check_numbers(self) -> None:
        if not self.ref.strip() or self.ref.startswith("-"):
            raise UsageError("--ref: must name a branch, tag or commit")
        if self.filter_spec is not None and (
            not self.filter_spec.strip() or self.filter_spec.startswith("-")
        ):
            raise UsageError(f"--filter: not a filter: {self.filter_spec!r}")

    def _check_commands(self) -> None:
        for flag, command in (
            ("--exechook-command", self.exechook_command),
            ("--pre-publish-exechook-command", self.pre_publish_exechook_command),
        ):
            if command is None:
                continue
            try:
                argv = shlex.split(command)
            except ValueError as exc:
                raise UsageError(f"{flag}: {exc}") from None
            if not argv:
                raise UsageError(f"{flag}: empty")

    def _check_credentials(self) -> None:
        auth.parse_credentials(self.credential + ([self.credentials] if self.credentials else []))
        auth.parse_git_config(self.git_config or "", "--git-config")
        for item in self.git_config_add:
            auth.parse_git_config(item, "--git-config-add")
        if self.password is not None and self.password_file:
            raise UsageError("--password and --password-file: set one or the other")

    def _file_problems(self) -> list[str]:
        """The files the settings name exist (git-sync's default secret layout
        filled in first: a Secret mounted at /etc/git-secret just works)."""
        if is_ssh(self.repo.strip()):
            if not self.ssh_key_file and os.path.isfile(auth.DEFAULT_SSH_KEY):
                self.ssh_key_file = [auth.DEFAULT_SSH_KEY]
            if (
                self.ssh_known_hosts
                and not self.ssh_known_hosts_file
                and os.path.isfile(auth.DEFAULT_KNOWN_HOSTS)
            ):
                self.ssh_known_hosts_file = auth.DEFAULT_KNOWN_HOSTS
        named: list[tuple[str, str | None]] = [("--ssh-key-file", k) for k in self.ssh_key_file]
        named += [
            ("--password-file", self.password_file),
            ("--ssh-known-hosts-file", self.ssh_known_hosts_file),
            ("--sparse-checkout-file", self.sparse_checkout_file),
            ("--allowed-signers-file", self.allowed_signers_file),
            ("--gpg-keyring-file", self.gpg_keyring_file),
        ]
        if not self._is_child:
            named.append(("--sync-token-file", self.sync_token_file))
        # Worded as the core's check of every --*-file, so --check-config says it once.
        out = [
            f"{flag} {path}: no such file"
            for flag, path in named
            if path and not os.path.isfile(path)
        ]
        if self.cookie_file and not os.path.isfile(auth.DEFAULT_COOKIE_FILE):
            out.append(f"--cookie-file: no such file: {auth.DEFAULT_COOKIE_FILE}")
        return out

    def _check_container(self) -> None:
        """The settings of the container, not of one repository."""
        if self._is_child:
            return
        self._sync_signal = (
            None if self.sync_on_signal is None else parse_signal(self.sync_on_signal)
        )
        if self.http_bind is not None:
            try:
                split_addr(self.http_bind)
            except ValueError:
                raise UsageError(
                    f"--http-bind: expected HOST:PORT, got {self.http_bind!r}"
                ) from None
        elif self.http_metrics:
            raise UsageError("--http-metrics: needs --http-bind")

    def _check_verify(self) -> None:
        trust = self.allowed_signers_file or self.gpg_keyring_file
        if self.verify_signatures and not trust:
            raise UsageError(
                "--verify-signatures: needs --allowed-signers-file or --gpg-keyring-file "
                "(the keys trusted to sign)"
            )
        if not self.verify_signatures:
            for flag, value in (
                ("--allowed-signers-file", self.allowed_signers_file),
                ("--gpg-keyring-file", self.gpg_keyring_file),
                ("--verify-tag", self.verify_tag),
            ):
                if value:
                    raise UsageError(f"{flag}: needs --verify-signatures")

    def _check_github_app(self) -> None:
        """git-sync's rules for its GitHub App flags, with its messages' meaning."""
        app_id = self.github_app_application_id
        if app_id in ("0", ""):
            app_id = self.github_app_application_id = None
        if not (app_id or self.github_app_client_id):
            for flag, value in (
                ("--github-app-installation-id", self.github_app_installation_id),
                ("--github-app-private-key-file", self.github_app_private_key_file),
            ):
                if value:
                    raise UsageError(f"{flag}: needs --github-app-application-id or -client-id")
            return
        if app_id and self.github_app_client_id:
            raise UsageError("--github-app-application-id and --github-app-client-id: one only")
        if not self.github_app_installation_id:
            raise UsageError("--github-app-installation-id: required for GitHub App auth")
        if not self.github_app_private_key_file:
            raise UsageError("--github-app-private-key-file: required for GitHub App auth")
        if self.username or self.password is not None or self.password_file:
            raise UsageError("--username/--password: not with GitHub App auth")

    def _check_link(self) -> None:
        """Anywhere (git-sync's rule), but never over the repository or its worktrees."""
        given = self.link or default_link(self.repo.strip())
        if not os.path.isabs(given) and os.path.normpath(given).startswith(".."):
            raise UsageError(
                f"--link: a relative link must stay inside --root (write it absolute), "
                f"got {given!r}"
            )
        root = os.path.abspath(self.root)
        link = os.path.normpath(os.path.join(root, given))
        for inner in (root, os.path.join(root, ".git"), os.path.join(root, WORKTREES)):
            if link == inner or (link.startswith(inner + os.sep) and inner != root):
                raise UsageError(f"--link: must not be --root, .git or {WORKTREES}: {given!r}")
        if root.startswith(link + os.sep):
            raise UsageError(f"--link: must not contain --root: {given!r}")

    @property
    def link_path(self) -> str:
        assert self.link is not None
        return os.path.join(self.root, self.link)

    def _worktree(self, sha: str) -> str:
        return os.path.join(self.root, WORKTREES, sha)
