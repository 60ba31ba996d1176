"""gitsync the program: its options, what triggers a sync, and what it reports.

The git work runs in a worker thread (`checkout.py`) and hands back a result;
credentials are `auth.py`'s, the atomic link flip `publish.py`'s, and who may
ask for a sync `triggers.py`'s. This module is the only one that touches the
event loop. With `repos:` in --config, one `GitSync` per repository (built by
`repos.py`) holds that repository's settings and state, and this object runs
their loops side by side.

Over 600 lines because the option declarations (git-sync's whole flag surface,
each with its help) are this program's description; the git work, auth,
publishing, signatures and the multi-repository parsing live in their modules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import shlex
import signal
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from podkit import RateLimited, Sidecar, UsageError, option, redact_url
from podkit.admin import AdminServer, Handler, Request, Response
from podkit.hooks import HookError, Retrier, WebhookOptions, run_command
from podkit.logs import rfc3339
from podkit.options import split_addr
from podkit.program import writable_dir_problem
from podkit.retry import Backoff
from podkit.secrets import SecretFile

from . import auth, compat, repos
from .auth import Auth, is_ssh
from .compat import GitSyncFlags
from .errors import GitError
from .github_app import GitHubApp
from .publish import MODES, WORKTREES, published_sha, write_atomic
from .triggers import SYNC_BURST, SYNC_REFILL, TokenBucket, refusal, retry_after
from .verify import VerifyError

if TYPE_CHECKING:  # GitPython is imported when the program runs, not for --help
    from . import _git
    from .checkout import Checkout

# Remote-helper syntax `<transport>::<address>` (ext::, fd::, ...) is refused outright.
_HELPER_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")


def default_link(repo: str) -> str:
    """The repo's leaf name without `.git`, as git-sync derives --link."""
    path = urlsplit(repo).path if "://" in repo else repo.rpartition(":")[2]
    leaf = path.rstrip("/").rsplit("/", 1)[-1]
    if leaf.endswith(".git"):
        leaf = leaf[:-4]
    return leaf or "repo"


def too_many_failures(consecutive: int, max_failures: int) -> bool:
    """Counted exactly as git-sync v4 counts: failure number N exits (`failCount >= N`).

    So 0 and 1 both exit on the first failure, 3 on the third; negative never.
    """
    return max_failures >= 0 and consecutive >= max(max_failures, 1)


class GitSync(GitSyncFlags, Sidecar):
    """Keep a git checkout in a volume in sync, published atomically (--one-time: init)."""

    name = "gitsync"
    examples = """\
podkit gitsync --repo https://github.com/org/config.git --root /git --ref main --one-time
podkit gitsync --repo git@github.com:org/config.git --root /git --period 30s --ssh
podkit gitsync --repo https://git.example/x.git --root /git --webhook-url http://localhost:8080/-/reload
"""
    default_admin_addr = "127.0.0.1:9412"
    # git-sync's own variables work too, v4's and (deprecated) v3's, so people can switch.
    env_prefixes = ("GITSYNC_", "GIT_SYNC_")

    repo: str = option(
        None,
        help="the git repository to sync (https, http, ssh, git, file); required unless "
        "--config lists repos:",
    )
    repos: list[dict[str, Any]] | None = option(
        None,
        kind="any",
        config_only=True,
        secret=True,  # an entry may hold a password: never in the settings logged at start
        help="several repositories, each a mapping of this program's settings (repo, ref, "
        "link, credentials, hooks, ...; the rest inherited) and an optional name",
    )
    root: str = option(
        help="working directory; holds .git, .worktrees/<sha> and the --link",
        kind="path",
        required=True,
    )
    ref: str = option(
        "HEAD",
        help="branch, tag or commit to sync (HEAD: the remote's default branch)",
    )
    link: str | None = option(
        None,
        help="symlink to the published worktree: relative to --root, or absolute anywhere "
        "(default: the repo's name)",
    )
    publish_mode: str = option(
        "link",
        choices=MODES,
        help="link: <link> is a symlink to the worktree; copy: a real directory (for "
        "consumers that cannot follow links), swapped atomically",
        env_alias=False,  # podkit's own (git-sync #799 asks for it)
    )
    init_period: float | None = option(
        None,
        kind="duration",
        help="wait between attempts until the first success (default: --period)",
    )
    period: float = option("10s", kind="duration", help="how long to wait between syncs")
    depth: int = option(1, help="commits of history to fetch; 0 = the full history")
    submodules: str = option(
        "recursive",
        choices=("recursive", "shallow", "off"),
        help="submodule behaviour",
    )
    filter_spec: str | None = option(
        None,
        flag="--filter",
        env="PODKIT_FILTER",
        also_env=("GITSYNC_FILTER",),
        env_alias=False,  # the attribute's name is not the flag's
        help="partial clone filter, e.g. blob:none or tree:0 (the server must allow it)",
    )
    sparse_checkout_file: str | None = option(
        None,
        kind="path",
        help="a git sparse-checkout file (non-cone patterns) to apply",
    )
    sync_timeout: float = option(
        "120s",
        kind="duration",
        help="the total time one sync may take",
    )
    one_time: bool = option(
        False,
        help="exit 0 once the tree is published, 1 on the first failure",
    )
    max_failures: int = option(
        -1,
        help="exit 1 at this many consecutive failed syncs, counted as git-sync counts "
        "(0 and 1: the first failure; -1: never, keep serving the last good tree)",
    )
    init_max_failures: int | None = option(
        None,
        help="--max-failures until the first success (default: --max-failures)",
    )
    stale_worktree_timeout: float = option(
        "0s",
        kind="duration",
        help="keep replaced worktrees this long (0: remove at once)",
    )
    git_gc: str = option(
        "auto",  # not git-sync's always: push-to-published latency (docs/gitsync.md)
        choices=("auto", "always", "aggressive", "off"),
        help="git gc after a sync that removed worktrees",
    )
    repair_check_interval: float = option(
        "1m",
        kind="duration",
        min=0.0,
        help="how often a sync that finds nothing new also checks the published tree's "
        "files against its commit (a git status); its HEAD is checked every sync (0: "
        "files every sync too, as git-sync)",
        env_alias=False,  # podkit's own
    )
    touch_file: str | None = option(
        None,
        kind="path",
        help="file touched after each publish (relative paths are under --root)",
    )
    stale_after: float | None = option(
        None,
        kind="duration",
        help="/healthz fails when the last good sync is older (default 10 x --period)",
        env_alias=False,  # podkit's own flag: git-sync has no GITSYNC_STALE_AFTER
    )
    username: str | None = option(None, help="username for HTTP(S) authentication")
    password: str | None = option(
        None,
        help="password or token (prefer --password-file: a flag or env var is seen by more)",
        secret=True,
    )
    password_file: str | None = option(
        None,
        kind="path",
        help="file holding the password or token (re-read before each sync)",
    )
    ssh_key_file: list[str] = option(
        kind="path",
        repeat=True,
        help=f"SSH private key for ssh repos, repeatable: every key is offered "
        f"(default: {auth.DEFAULT_SSH_KEY} when it exists)",
        also_env="GIT_SSH_KEY_FILE",
    )
    credential: list[str] = option(
        repeat=True,
        env_alias=False,  # a JSON value: the list form below is what the env carries
        secret=True,  # may hold "password": never in the settings logged at start
        help='per-URL credentials as git-sync takes them: {"url": ..., "username": ..., '
        '"password-file": ...} (or "password"); repeatable',
    )
    credentials: str | None = option(
        None,
        also_env="GITSYNC_CREDENTIAL",
        env_alias=False,
        secret=True,
        help="a JSON list of --credential objects (git-sync's $GITSYNC_CREDENTIAL)",
    )
    github_app_private_key_file: str | None = option(
        None, kind="path", help="GitHub App auth: the app's private key (PEM)"
    )
    github_app_application_id: str | None = option(
        None, help="GitHub App auth: the application id (or --github-app-client-id)"
    )
    github_app_client_id: str | None = option(
        None, help="GitHub App auth: the client id (or --github-app-application-id)"
    )
    github_app_installation_id: str | None = option(
        None, help="GitHub App auth: the installation id"
    )
    github_base_url: str = option(
        "https://api.github.com/", kind="url", help="GitHub's API for GitHub App auth"
    )
    askpass_url: str | None = option(
        None,
        kind="url",
        help="URL asked before each sync for 'username=' and 'password=' lines",
        also_env="GIT_ASKPASS_URL",
    )
    cookie_file: bool = option(
        False,
        help=f"use the git cookie file {auth.DEFAULT_COOKIE_FILE} (http.cookieFile)",
        also_env="GIT_COOKIE_FILE",
    )
    ssh_known_hosts: bool = option(
        True,
        help="check SSH host keys against --ssh-known-hosts-file",
        also_env=("GIT_SYNC_KNOWN_HOSTS", "GIT_KNOWN_HOSTS"),  # git-sync's older names
    )
    ssh_known_hosts_file: str | None = option(
        None,
        kind="path",
        help=f"known_hosts file (default: {auth.DEFAULT_KNOWN_HOSTS} when it exists, "
        "else ssh's own)",
        also_env="GIT_SSH_KNOWN_HOSTS_FILE",
    )
    http_bind: str | None = option(
        None,
        help="HOST:PORT serving git-sync's endpoint: / is 503 until the first successful "
        "sync (and while syncs are failing past --stale-after), then 200",
    )
    http_metrics: bool = option(False, help="also serve /metrics on --http-bind")
    verbose: int = option(0, short="-v", help="git-sync's log verbosity: 1 or more logs debug")
    sync_on_signal: str | None = option(
        None,
        help="a signal that triggers a sync, by name or number (USR1, SIGUSR2, 10); "
        "SIGHUP always does",
    )
    add_user: bool = option(
        False, help="add the current uid to /etc/passwd if missing (ssh needs a user)"
    )
    group_write: bool = option(False, help="make the repository and worktrees group-writable")
    git_config: str | None = option(
        None,
        help='extra git config: \'section.key:value,"section.sub.key":"value"\'',
    )
    git_config_add: list[str] = option(
        repeat=True, help="one extra git config 'section.key:value' (repeatable)"
    )
    error_file: str | None = option(
        None,
        kind="path",
        help="file holding the last sync error, written atomically, removed on success "
        "(relative paths are under --root)",
    )
    webhook_url: str | None = option(None, kind="url", help="URL called after each publish")
    # The core's webhook settings under git-sync's names: its status flag is
    # --webhook-success-status (0 there also means fire and forget, below), its
    # time limit 1s. (--webhook-header is podkit's own addition.)
    webhook: WebhookOptions = WebhookOptions.include(
        prefix="webhook-",
        about="the webhook called after each publish",
        defaults={"timeout": "1s"},
        names={"status": "success_status"},
    )
    webhook_backoff: float = option(
        "3s",
        kind="duration",
        help="fixed wait before retrying a failed webhook (git-sync's: not exponential)",
    )
    exechook_command: str | None = option(
        None,
        help="command run in the new worktree after each publish, with $GITSYNC_HASH",
    )
    exechook_timeout: float = option(
        "30s",
        kind="duration",
        help="timeout of one exechook run",
    )
    exechook_backoff: float = option(
        "3s",
        kind="duration",
        help="wait before retrying a failed exechook",
    )
    pre_publish_exechook_command: str | None = option(
        None,
        help="command run in the new worktree before the link flips to it, with "
        "$GITSYNC_HASH; a failure keeps the old tree published and fails the sync",
    )
    pre_publish_exechook_timeout: float = option(
        "30s", kind="duration", help="timeout of one pre-publish exechook run"
    )
    pre_publish_exechook_backoff: float = option(
        "3s",
        kind="duration",
        help="accepted for git-sync specs: a failed pre-publish hook is retried with the "
        "next sync (--period / --init-period)",
    )
    verify_signatures: bool = option(
        False,
        help="publish only commits signed by a trusted key (--allowed-signers-file, "
        "--gpg-keyring-file); anything else leaves the last good tree published",
        env_alias=False,  # podkit's own: git-sync has no signature checks
    )
    allowed_signers_file: str | None = option(
        None,
        kind="path",
        help="SSH signatures: the keys trusted to sign, in ssh-keygen's allowed_signers format",
        env_alias=False,
    )
    gpg_keyring_file: str | None = option(
        None,
        kind="path",
        help="OpenPGP signatures: the public keys trusted to sign (armored or binary export)",
        env_alias=False,
    )
    verify_tag: bool = option(
        False,
        help="with --verify-signatures: check the signature of the annotated tag --ref "
        "names instead of the commit's",
        env_alias=False,
    )
    sync_token_file: str | None = option(
        None,
        kind="path",
        help="file holding the secret POST /sync must carry (Bearer token, X-Gitlab-Token, "
        "or the key of GitHub's X-Hub-Signature-256); re-read when it changes",
        env_alias=False,  # podkit's own flag: git-sync has no authenticated trigger
    )
    sync_burst: int = option(
        SYNC_BURST,
        help="POST /sync requests accepted at once before 429",
        env_alias=False,
    )
    sync_interval: float = option(
        f"{SYNC_REFILL:g}s",
        kind="duration",
        help="after a burst, one more POST /sync is accepted per interval",
        env_alias=False,
    )

    def __init__(self) -> None:
        super().__init__()
        self.add_route("POST", "/sync", self._http_sync)
        self._trigger = asyncio.Event()
        self._checkout: Checkout | None = None
        self._auth: Auth | None = None
        self._syncs = 0
        self.published: str | None = None
        self.last_sync: float | None = None
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self._hooks: list[Retrier[str]] = []
        self._sync_token: SecretFile | None = None
        self._http: GitSyncHTTP | None = None
        #: The running pre-publish hook (set and cleared on the loop, never by the worker).
        self._pre_publish_task: asyncio.Task[None] | None = None
        self._warnings: list[str] = []
        self._git_config: list[tuple[str, str]] = []
        self._credentials: list[auth.Credential] = []
        self._sync_signal: int | None = None
        self.refused: dict[str, str] | None = None
        #: --config's `repos:` (each a GitSync holding one repository's settings
        #: and state), or empty: this object syncs --repo itself.
        self._repos: list[GitSync] = []
        self._is_child = False
        #: The program whose `/` shows this repository's last error: the
        #: container's GitSync for a `repos:` entry, else this object.
        self._owner: GitSync = self
        self.repo_name = ""

    # -- configuration ------------------------------------------------------

    def validate(self) -> None:
        self._warnings = compat.apply(self)
        if self.verbose > 0 and self.log_level == "info":
            self.log_level = "debug"
        problems = self.static_problems(loaded=True)
        if not problems and self.repos is not None:
            try:
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
        if self.depth < 0:
            raise UsageError("--depth: must be 0 (full history) or more")
        if self.period < 0.01:
            raise UsageError("--period: must be at least 10ms")
        if self.sync_timeout < 0.01:
            raise UsageError("--sync-timeout: must be at least 10ms")
        if not self.ref.strip() or self.ref.startswith("-"):
            raise UsageError("--ref: must name a branch, tag or commit")
        if self.init_period is not None and self.init_period < 0.01:
            raise UsageError("--init-period: must be at least 10ms")
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
        if self.sync_burst < 1:
            raise UsageError("--sync-burst: must be at least 1")
        if self.sync_interval < 0.001:
            raise UsageError("--sync-interval: must be at least 1ms")

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

    # -- lifecycle ------------------------------------------------------------

    async def setup(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._errors = RateLimited(self.log, 30.0)
        self._compat_warnings()
        if self.group_write:
            os.umask(0o002)  # as git-sync: everything it writes is group-writable
        if self.add_user:
            add_user()
        m = self.metrics
        families = repos.families(m, multi=bool(self._repos), verify=self._verifies())
        self.m_requests = m.counter(
            "sync_requests_total",
            "POST /sync requests by outcome.",
            ["result"],
        )
        for r in ("accepted", "coalesced", "unauthorized", "limited"):
            self.m_requests.labels(r)
        self._sync_bucket = TokenBucket(self.sync_burst, self.sync_interval)
        if self.sync_token_file:
            self._sync_token = SecretFile(self.sync_token_file)
        for rs in self._runners():
            rs._loop, rs._errors = self._loop, self._errors
            if rs is not self:
                rs._stopping = self._stop_event()  # one stop for every repository
                rs.log = repos.RepoLog(self.log, rs.repo_name)  # type: ignore[assignment]
                rs._errors = RateLimited(rs.log, 30.0)
            await rs._setup_repo(families)
        if self._repos:
            # Ready once every repository has synced once (each its own check on /).
            for rs in self._repos:
                self.readiness(f"first-sync:{rs.repo_name}", rs._first_sync_missing)
        if self.http_bind:
            self._http = GitSyncHTTP(self, self.http_bind, metrics=self.http_metrics)
            await self._http.start()
            self.log.info(
                "serving git-sync's HTTP endpoint",
                extra={"addr": self.http_bind, "metrics": self.http_metrics},
            )

    def _runners(self) -> list[GitSync]:
        """The repositories this process syncs: itself, or each of --config's repos."""
        return self._repos or [self]

    def _verifies(self) -> bool:
        return any(r.verify_signatures for r in self._runners())

    def _first_sync_missing(self) -> str | None:
        return None if self.last_success is not None else "no successful sync yet"

    async def _setup_repo(self, families: dict[str, Any]) -> None:
        """One repository's directories, credentials, checkout, metrics and hooks."""
        self.root = os.path.abspath(self.root)
        try:
            os.makedirs(os.path.join(self.root, WORKTREES), exist_ok=True)
        except OSError as exc:  # an environment problem: one line, not a traceback
            raise UsageError(
                f"--root {self.root}: {exc.strerror or exc} (mount a writable volume there, "
                "e.g. an emptyDir shared with the app)"
            ) from None
        self.published = published_sha(self.link_path, self.publish_mode)
        bound = repos.bind(families, self.repo_name if self._is_child else None)
        self.m_syncs = bound["syncs"]
        self.m_duration = bound["duration"]
        self.m_last_success = bound["last_success"]
        self.m_fetches = bound["fetches"]
        self.m_hooks = bound["hooks"]
        self.m_signatures: Any = bound.get("signatures")
        self._auth = Auth(
            self.repo,
            username=self.username,
            password=self.password,
            password_file=self.password_file,
            askpass_url=self.askpass_url,
            github_app=self._github_app(),
            credentials=self._credentials,
            ssh_key_files=self.ssh_key_file,
            ssh_known_hosts=self.ssh_known_hosts,
            ssh_known_hosts_file=self.ssh_known_hosts_file,
        )
        self._auth.setup()
        verifier = None
        if self.verify_signatures:
            from .verify import Verifier

            verifier = Verifier(
                self._auth.private_path("gnupg"),
                allowed_signers_file=self.allowed_signers_file,
                gpg_keyring_file=self.gpg_keyring_file,
                verify_tag=self.verify_tag,
            )
            try:
                verifier.setup()
            except GitError as exc:
                raise UsageError(str(exc)) from None
        from .checkout import Checkout  # GitPython: only when the program runs

        self._checkout = Checkout(
            self.repo,
            self.root,
            self.link_path,
            self.ref,
            self._auth,
            self.log,
            depth=self.depth,
            submodules=self.submodules,
            sparse_checkout_file=self.sparse_checkout_file,
            sync_timeout=self.sync_timeout,
            stale_worktree_timeout=self.stale_worktree_timeout,
            git_gc=self.git_gc,
            git_config=self._git_config,
            filter_spec=self.filter_spec,
            group_write=self.group_write,
            on_fetch=self.m_fetches.inc,
            pre_publish=self._pre_publish if self.pre_publish_exechook_command else None,
            verifier=verifier,
            publish_mode=self.publish_mode,
            repair_check_interval=self.repair_check_interval,
        )
        if self.webhook_url:
            self._hooks.append(
                Retrier(
                    "webhook",
                    self._webhook,
                    self._backoff(self.webhook_backoff),
                    self._hook_result("webhook"),
                )
            )
        if self.exechook_command:
            self._hooks.append(
                Retrier(
                    "exechook",
                    self._exechook,
                    self._backoff(self.exechook_backoff),
                    self._hook_result("exechook"),
                )
            )
        if not self.one_time:
            for h in self._hooks:
                h.start()

    def _github_app(self) -> GitHubApp | None:
        issuer = self.github_app_application_id or self.github_app_client_id
        if not issuer:
            return None
        assert self.github_app_private_key_file and self.github_app_installation_id
        return GitHubApp(
            self.github_app_private_key_file,
            issuer,
            self.github_app_installation_id,
            self.github_base_url,
        )

    def _compat_warnings(self) -> None:
        """One warning per deprecated spelling or unread variable, at start."""
        for text in self._warnings:
            self.log.warning(text)
        if self.password is not None:
            self.log.warning(
                "a password from a flag or variable is visible to more than a file "
                "(kubectl describe, /proc/<pid>/environ): prefer --password-file"
            )
        # Read already: keep secrets out of every child's environment (git, hooks).
        for o in self.options():
            if o.secret:
                for name in (o.env_name, *o.also_env):
                    os.environ.pop(name, None)
        env_names = {n for o in self.options() for n in (o.env_name, *o.also_env)}
        for name in compat.unknown_env(os.environ, env_names):
            self.log.warning(f"{name} is not a setting podkit gitsync reads; ignored")
        for name in compat.git_sync_v3_env(os.environ):
            if name in env_names:
                self.log.warning(f"{name} is git-sync v3's name (deprecated); use GITSYNC_*")

    @staticmethod
    def _backoff(seconds: float) -> Backoff:
        # git-sync's hook backoff is a fixed wait, not exponential.
        s = max(seconds, 0.001)
        return Backoff(s, s, 1.0, jitter=False)

    def _hook_result(self, hook: str) -> Any:
        def on_result(sha: str, error: str | None) -> None:
            self.m_hooks.labels(hook, "error" if error else "success").inc()
            if error is None:
                self.log.info("hook succeeded", extra={"hook": hook, "commit": sha})

        return on_result

    async def cleanup(self) -> None:
        if self._http is not None:
            await self._http.stop()
        for r in self._runners():
            if r._checkout is not None:
                r._checkout.runs.abort()
            for h in r._hooks:
                await h.stop()
            if r._auth is not None:
                r._auth.cleanup()

    def sighup_signals(self) -> tuple[int, ...]:
        # SIGHUP always (podkit's trigger), plus git-sync's --sync-on-signal.
        extra = () if self._sync_signal in (None, signal.SIGHUP) else (self._sync_signal,)
        return (signal.SIGHUP, *extra)

    def on_sighup(self) -> None:
        self.log.info("sync requested", extra={"by": "signal"})
        for r in self._runners():
            r._trigger.set()

    async def _http_sync(self, request: Request) -> Response:
        # Every outcome is logged at most once per interval: a flood of requests
        # must not become a flood of log lines.
        why = refusal(request, self._sync_token)
        if why is not None:
            self.m_requests.labels("unauthorized").inc()
            self._errors.log("sync-refused", 30, "POST /sync refused", reason=why)
            return Response(
                401, b"unauthorized\n", headers={"WWW-Authenticate": 'Bearer realm="gitsync"'}
            )
        wait = self._sync_bucket.take()
        if wait:
            self.m_requests.labels("limited").inc()
            self._errors.log("sync-limited", 30, "POST /sync rate-limited")
            return Response(
                429, b"too many sync requests\n", headers={"Retry-After": retry_after(wait)}
            )
        # One event per repository: however many requests arrive, at most one sync waits.
        runners = self._runners()
        wanted = request.query.get("repo")
        if wanted and self._repos:
            # A push webhook per repository: POST /sync?repo=<name> syncs that one only.
            runners = [r for r in runners if r.repo_name in wanted]
            if not runners:
                return Response(404, b"no such repository\n")
        coalesced = all(r._trigger.is_set() for r in runners)
        self.m_requests.labels("coalesced" if coalesced else "accepted").inc()
        self._errors.log("sync-requested", 20, "sync requested", by="POST /sync")
        for r in runners:
            r._trigger.set()
        body: dict[str, Any] = {"queued": True, "coalesced": coalesced}
        if self._repos:
            body["published"] = {r.repo_name: r.published for r in runners}
        else:
            body["published"] = self.published
        return Response.json(body, status=202)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> None:
        if not self._repos:
            await self._run_repo()
            return
        # Each repository in its own loop: one failing never holds up the others.
        self.set_ready()  # and every repository's first-sync check (setup)
        await asyncio.gather(*(r._run_repo() for r in self._repos))
        codes = [r.exit_code for r in self._repos if r.exit_code]
        if codes:
            self.exit_code = max(codes)

    async def _run_repo(self) -> None:
        asked = False
        while not self.stopping:
            self._trigger.clear()
            ok = await self._sync(asked)
            if self.one_time:
                if not ok:
                    # An init container stopped before it published must not
                    # exit 0: the app would start without its tree; 143/130
                    # is what the runner gives an interrupted InitTask.
                    if self.stopping:
                        self.exit_code = 128 + (self.stop_signal or signal.SIGTERM)
                    else:
                        self.exit_code = 1
                    return
                self.exit_code = await self._one_time_hooks()
                return
            if self.stopping:
                break
            # Until the first success, git-sync's --init-* settings apply.
            initial = self.last_success is None
            limit = self.max_failures
            if initial and self.init_max_failures is not None:
                limit = self.init_max_failures
            if not ok and too_many_failures(self.consecutive_failures, limit):
                self.log.error(
                    "too many consecutive failures; exiting",
                    extra={"failures": self.consecutive_failures, "max_failures": limit},
                )
                self.exit_code = 1
                if self._is_child:
                    # A container that exits restarts every repository in it: asked for
                    # explicitly (the default -1 never exits).
                    self._stopping.set()  # type: ignore[union-attr]
                return
            wait = self.period
            if initial and self.init_period is not None:
                wait = self.init_period
            asked = await self._wait_trigger(wait)
        # Give hooks for the last publish a moment to land before the runner stops us.
        for h in self._hooks:
            await h.idle(min(5.0, self.shutdown_timeout / 2))

    async def _wait_trigger(self, seconds: float) -> bool:
        """Wait for the period, a stop, or a trigger; True when a trigger ended it."""
        stop = asyncio.ensure_future(self.wait_stopping())
        trig = asyncio.ensure_future(self._trigger.wait())
        try:
            await asyncio.wait({stop, trig}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            trig.cancel()
        return self._trigger.is_set()

    async def _sync(self, asked: bool = False) -> bool:
        start = time.monotonic()
        checkout = self._checkout
        assert checkout is not None
        checkout.runs.reset()
        work = asyncio.ensure_future(asyncio.to_thread(checkout.sync, asked))
        stop = asyncio.ensure_future(self.wait_stopping())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                checkout.runs.abort()  # kill the git in flight; the thread returns at once
                if self._pre_publish_task is not None:
                    self._pre_publish_task.cancel()  # run_command kills its group
            try:
                result = await work
            except Exception as exc:
                err: BaseException | None = exc
            else:
                err = None
        finally:
            stop.cancel()
        elapsed = time.monotonic() - start
        self.m_duration.observe(elapsed)
        self.last_sync = time.time()
        self._syncs += 1
        if err is not None:
            if self.stopping:
                return False
            self.consecutive_failures += 1
            self.last_error = str(err) or type(err).__name__
            if isinstance(err, VerifyError):
                self.m_signatures.labels("refused").inc()
                self.refused = {"commit": err.sha, "reason": err.reason}
            self.m_syncs.labels("error").inc()
            self._write_error_file(self.last_error)
            named = f"{self.repo_name}: {self.last_error}" if self._is_child else self.last_error
            self._owner.record_error("sync", named)
            self._errors.log(
                "sync",
                40,
                "sync failed; the last good tree stays published"
                if self.published
                else "sync failed; nothing is published yet",
                error=self.last_error,
                failures=self.consecutive_failures,
                published=self.published,
                repo=redact_url(self.repo),
            )
            return False
        self._errors.clear("sync")
        if self.consecutive_failures or self.last_success is None:
            self._write_error_file(None)
        if self.consecutive_failures:
            self.log.info("sync recovered", extra={"failures": self.consecutive_failures})
        self.consecutive_failures = 0
        self.last_error = None
        self.last_success = time.time()
        self.m_last_success.set(self.last_success)
        first = not self.ready
        self.published = result.sha
        if result.verified:
            self.m_signatures.labels("good").inc()
            self.refused = None
        if result.changed:
            self.m_syncs.labels("success").inc()
            self.log.info(
                "published",
                extra={"commit": result.sha, "ref": self.ref, "seconds": round(elapsed, 3)},
            )
        else:
            self.m_syncs.labels("noop").inc()
        if result.changed or first:
            # Like git-sync, hooks also run for the tree found at start-up.
            self._touch()
            if not self.one_time:
                for h in self._hooks:
                    h.submit(result.sha)
        self.set_ready()
        return True

    def _write_error_file(self, error: str | None) -> None:
        """git-sync's --error-file: the last error, written whole or not at all; gone on success."""
        if not self.error_file:
            return
        path = os.path.join(self.root, self.error_file)
        try:
            if error is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return
            record = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "msg": "error syncing repo",
                "error": error,
                "failCount": self.consecutive_failures,
            }
            write_atomic(path, (json.dumps(record) + "\n").encode())
        except OSError as exc:
            # A full disk must not stop syncing: the old file (if any) stays whole.
            self._errors.log(
                "error-file", 30, "cannot write --error-file", path=path, error=str(exc)
            )

    def _touch(self) -> None:
        if not self.touch_file:
            return
        path = (
            self.touch_file
            if os.path.isabs(self.touch_file)
            else os.path.join(self.root, self.touch_file)
        )
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a"):
                os.utime(path)
        except OSError as exc:
            self.log.warning("cannot touch --touch-file", extra={"path": path, "error": str(exc)})

    async def _one_time_hooks(self) -> int:
        """--one-time runs each hook once (as git-sync does) and fails if one fails."""
        code = 0
        assert self.published is not None
        for h in self._hooks:
            try:
                await h.action(self.published)
            except Exception as exc:
                self.m_hooks.labels(h.name, "error").inc()
                self.log.error("hook failed", extra={"hook": h.name, "error": str(exc)})
                code = 1
            else:
                self.m_hooks.labels(h.name, "success").inc()
        if code == 0:
            self.log.info("one-time sync done", extra={"commit": self.published})
        return code

    # -- hooks ----------------------------------------------------------------

    def _pre_publish(self, sha: str, worktree: str) -> None:
        """--pre-publish-exechook-command, from the worker thread, on the loop's runner."""
        fut = asyncio.run_coroutine_threadsafe(self._pre_publish_run(sha, worktree), self._loop)
        try:
            fut.result()  # the worker waits; the loop owns the task and its cancellation
        except concurrent.futures.CancelledError:
            raise GitError("pre-publish exechook: stopped") from None

    async def _pre_publish_run(self, sha: str, worktree: str) -> None:
        if self.stopping:  # the stop came before this task existed to be cancelled
            raise GitError("pre-publish exechook: stopped")
        self._pre_publish_task = asyncio.current_task()
        try:
            await self._pre_publish_hook(sha, worktree)
        finally:
            self._pre_publish_task = None

    async def _pre_publish_hook(self, sha: str, worktree: str) -> None:
        assert self.pre_publish_exechook_command is not None
        argv = shlex.split(self.pre_publish_exechook_command)
        try:
            code, out = await run_command(
                argv,
                timeout=self.pre_publish_exechook_timeout,
                env={"GITSYNC_HASH": sha},
                cwd=worktree,
                tail=500,
            )
        except OSError as exc:
            code, out = -1, f"cannot run {argv[0]}: {exc.strerror or exc}"
        self.m_hooks.labels("pre_publish_exechook", "success" if code == 0 else "error").inc()
        if code != 0:
            what = "timed out" if code is None else f"exit {code}"
            err = GitError(f"pre-publish exechook: {what}: {out}; the old tree stays published")
            err.remote = True  # not damage: no repository check follows
            raise err

    async def _webhook(self, sha: str) -> None:
        assert self.webhook_url is not None
        try:
            await self.webhook.call(self.webhook_url, headers={"Gitsync-Hash": sha})
        except HookError:
            if self.webhook.status == 0:
                return  # fire and forget
            raise

    async def _exechook(self, sha: str) -> None:
        assert self.exechook_command is not None
        argv = shlex.split(self.exechook_command)
        cwd = self._worktree(sha)
        if not os.path.isdir(cwd):
            return  # superseded and already removed: the newer commit's run follows
        try:
            code, out = await run_command(
                argv, timeout=self.exechook_timeout, env={"GITSYNC_HASH": sha}, cwd=cwd, tail=500
            )
        except OSError as exc:
            raise HookError(f"exechook: cannot run {argv[0]}: {exc.strerror or exc}") from None
        if code is None:
            raise HookError(f"exechook: timed out after {self.exechook_timeout:g}s")
        if code != 0:
            raise HookError(f"exechook: exit {code}: {out}")
        if out:
            self.log.debug("exechook output", extra={"output": out})

    # -- status ---------------------------------------------------------------

    def health(self) -> str | None:
        if self._repos:
            for r in self._repos:
                reason = r.health()
                if reason:
                    return f"{r.repo_name}: {reason}"
            return None
        assert self.stale_after is not None
        since = self.last_success or self.started_at
        age = time.time() - since
        if age > self.stale_after:
            what = "last successful sync" if self.last_success else "no successful sync since start"
            return f"{what} {age:.0f}s ago (--stale-after {self.stale_after:g}s)"
        return None

    def status(self) -> dict[str, Any]:
        if self._repos:
            return {"repos": {r.repo_name: r.status() for r in self._repos}}
        return {
            "repo": redact_url(self.repo),
            "ref": self.ref,
            "root": self.root,
            "link": self.link_path,
            "published": self.published,
            # One status format across programs (issue 23): RFC 3339, UTC.
            "last_sync": rfc3339(self.last_sync) if self.last_sync else None,
            "last_success": rfc3339(self.last_success) if self.last_success else None,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "syncs": self._syncs,
            # --verify-signatures: the last fetched commit it refused, until one passes.
            **({"refused": self.refused} if self.verify_signatures else {}),
            "hooks": {h.name: h.status() for h in self._hooks},
        }

    def _remote_sha(self, g: _git.Git) -> str | None:
        from .checkout import remote_sha

        return remote_sha(g, self.ref)


class GitSyncHTTP(AdminServer):
    """git-sync's --http-bind endpoint: `/` is its health check, `/metrics` optional.

    The same small server as the admin port (its limits, its parser), with
    git-sync's routes instead of podkit's: charts point startup and liveness
    probes at `/` on this port.
    """

    def __init__(self, program: GitSync, addr: str, *, metrics: bool) -> None:
        routes: dict[tuple[str, str], Handler] = {("GET", "/"): self.health_check}
        if metrics:
            routes[("GET", "/metrics")] = self.metrics
        super().__init__(program, addr, routes=routes)
        self.gitsync = program

    async def health_check(self, request: Request) -> Response:
        p = self.gitsync
        if not p.ready:
            return Response.text("repo is not ready\n", 503)
        reason = p.health()
        if reason:
            return Response.text(f"{reason}\n", 503)
        return Response(200)


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


def add_user(passwd: str = "/etc/passwd") -> bool:
    """git-sync's --add-user: an /etc/passwd entry for a uid that has none.

    ssh refuses to run for a uid without one ("No user exists for uid"), which
    is what an arbitrary `runAsUser` gives. True when a line was added.
    """
    uid, gid = os.getuid(), os.getgid()
    try:
        with open(passwd, encoding="utf-8") as f:
            for line in f:
                fields = line.split(":")
                if len(fields) > 2 and fields[2] == str(uid):
                    return False
    except FileNotFoundError:
        pass
    home = os.environ.get("HOME") or os.getcwd()
    with open(passwd, "a", encoding="utf-8") as f:
        f.write(f"git-sync:x:{uid}:{gid}::{home}:/sbin/nologin\n")
    return True


def main() -> None:
    GitSync.main()
