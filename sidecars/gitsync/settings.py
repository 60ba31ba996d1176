"""gitsync's settings: git-sync's whole flag surface, each with its help.

Declared on a base class of `GitSync` so that the program module reads as the
program; what they mean together is `config.py`'s, what runs `program.py`'s.
Over 300 lines only because git-sync has that many flags.
"""

from __future__ import annotations

from typing import Any

from podkit import Sidecar, option
from podkit.hooks import WebhookOptions

from . import auth
from .compat import GitSyncFlags
from .publish import MODES
from .triggers import SYNC_BURST, SYNC_REFILL


class GitSyncSettings(GitSyncFlags, Sidecar):
    """The options of `podkit gitsync` (GitSync is the program)."""

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
        min=0.01,  # git-sync's floor too
        help="wait between attempts until the first success (default: --period)",
    )
    period: float = option("10s", kind="duration", min=0.01, help="how long to wait between syncs")
    depth: int = option(1, min=0, help="commits of history to fetch; 0 = the full history")
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
        min=0.01,
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
        min=1,
        help="POST /sync requests accepted at once before 429",
        env_alias=False,
    )
    sync_interval: float = option(
        f"{SYNC_REFILL:g}s",
        kind="duration",
        min=0.001,
        help="after a burst, one more POST /sync is accepted per interval",
        env_alias=False,
    )
