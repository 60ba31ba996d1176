"""Several repositories in one container: `repos:` in the --config file.

Airflow-style deployments run one git-sync container per repository; here one
gitsync can follow several. Each entry of the list is a mapping of the same
settings as the flags (`repo`, `ref`, `link`, credentials, hooks, …: the
`PER_REPO` names), plus an optional `name`; what an entry leaves out it
inherits from the top level (flags, env, the rest of the file), so shared
settings are written once. Each repository gets its own sync loop, checkout,
credentials and hooks (a `GitSync` object holding one repository's settings
and state), so one that fails never holds up the others.

Defaults that must differ per repository: `root` is `<--root>/.repos/<name>`
and `link` is `<--root>/<name>` (an absolute link, so each repository's
checkout lives apart and every link sits side by side in the volume).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from podkit import UsageError
from podkit.options import Option, assign

if TYPE_CHECKING:
    from podkit.metrics import Metrics

    from .program import GitSync

#: The settings an entry of `repos:` may set: everything about one repository.
#: The rest (admin and --http-bind servers, POST /sync's guard, --one-time,
#: logging, --add-user, --group-write) is the container's.
PER_REPO = frozenset(
    (
        "repo",
        "root",
        "ref",
        "link",
        "publish_mode",
        "init_period",
        "period",
        "depth",
        "submodules",
        "filter_spec",
        "sparse_checkout_file",
        "sync_timeout",
        "max_failures",
        "init_max_failures",
        "stale_worktree_timeout",
        "repair_check_interval",
        "git_gc",
        "touch_file",
        "error_file",
        "stale_after",
        "username",
        "password",
        "password_file",
        "ssh_key_file",
        "credential",
        "credentials",
        "github_app_private_key_file",
        "github_app_application_id",
        "github_app_client_id",
        "github_app_installation_id",
        "github_base_url",
        "askpass_url",
        "cookie_file",
        "ssh_known_hosts",
        "ssh_known_hosts_file",
        "git_config",
        "git_config_add",
        "webhook_url",
        "webhook_method",
        "webhook_success_status",
        "webhook_timeout",
        "webhook_header",
        "webhook_backoff",
        "exechook_command",
        "exechook_timeout",
        "exechook_backoff",
        "pre_publish_exechook_command",
        "pre_publish_exechook_timeout",
        "pre_publish_exechook_backoff",
        "verify_signatures",
        "allowed_signers_file",
        "gpg_keyring_file",
        "verify_tag",
    )
)
_MAPPED = ("ref", "period", "sync_timeout", "max_failures", "exechook_command", "verbose")
_V3 = ("branch", "rev", "dest", "wait", "timeout", "max_sync_failures", "sync_hook_command", "v")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def build(parent: GitSync, entries: Any, config_path: str) -> list[GitSync]:
    """One GitSync per entry, validated; a UsageError names the entry and key."""
    from .config import default_link
    from .program import GitSync

    if not isinstance(entries, list) or not entries:
        raise UsageError(f"--config {config_path}: repos: expected a non-empty list")
    options = parent.options()
    by_key: dict[str, Option] = {}
    for o in options:
        by_key[o.config_key] = by_key[o.name] = o
    out: list[GitSync] = []
    for i, entry in enumerate(entries):
        where = f"--config {config_path}: repos[{i}]"
        if not isinstance(entry, Mapping):
            raise UsageError(f"{where}: expected a mapping of settings")
        values = dict(parent.settings)
        # git-sync v3 spellings were mapped onto the parent already (compat.apply).
        values.update({k: getattr(parent, k) for k in _MAPPED})
        values.update(dict.fromkeys(_V3, None))
        # Never inherited: each repository has its own checkout and link.
        values.update(repos=None, link=None, root=None, error_file=None, touch_file=None)
        for key, raw in entry.items():
            if key == "name":
                continue
            opt = by_key.get(str(key))
            if opt is None:
                raise UsageError(f"{where}: unknown setting {key!r}")
            if opt.name not in PER_REPO:
                raise UsageError(
                    f"{where}: {key!r} is the container's setting, not one repository's "
                    "(set it at the top level)"
                )
            values[opt.name] = opt.convert(raw, f"{where}.{key}")
        if not values.get("repo"):
            raise UsageError(f"{where}: repo is required")
        name = str(entry.get("name") or default_link(str(values["repo"]).strip()))
        if not _NAME_RE.match(name):
            raise UsageError(f"{where}: name {name!r}: letters, digits, '.', '_', '-' only")
        if any(r.repo_name == name for r in out):
            raise UsageError(f"{where}: name {name!r} is used twice (set name:)")
        base = os.path.abspath(parent.root)
        values["root"] = values["root"] or os.path.join(base, ".repos", name)
        values["link"] = values["link"] or os.path.join(base, name)
        child = GitSync()
        assign(child, options, values)
        child.settings = values
        child.repo_name = name
        child._is_child = True
        child._owner = parent
        try:
            child.validate()
        except UsageError as exc:
            raise UsageError(f"{where} ({name}): {exc}") from None
        out.append(child)
    roots = [os.path.abspath(r.root) for r in out]
    links = [os.path.abspath(r.link_path) for r in out]
    for what, paths in (("root", roots), ("link", links)):
        if len(set(paths)) != len(paths):
            raise UsageError(f"--config {config_path}: repos: two repositories share a {what}")
    return out


def families(m: Metrics, *, multi: bool, verify: bool) -> dict[str, Any]:
    """The per-repository metric families, with a `repo` label when there are several."""
    repo = ["repo"] if multi else []
    fam: dict[str, Any] = {
        "syncs": m.counter("syncs_total", "Sync attempts by result.", [*repo, "result"]),
        "duration": m.histogram(
            "sync_duration_seconds",
            "Time one sync took.",
            repo,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        ),
        "last_success": m.gauge(
            "last_success_timestamp_seconds", "Unix time of the last successful sync.", repo
        ),
        "fetches": m.counter("fetches_total", "git fetch runs.", repo),
        "hooks": m.counter(
            "hook_runs_total", "Hook runs by hook and result.", [*repo, "hook", "result"]
        ),
    }
    if verify:
        fam["signatures"] = m.counter(
            "signature_checks_total",
            "Signature checks of fetched commits (--verify-signatures) by result.",
            [*repo, "result"],
        )
    return fam


class Bound:
    """A family with the `repo` label already given: `.labels(result)` and
    `.inc()` read the same with one repository or several."""

    def __init__(self, family: Any, prefix: tuple[str, ...]) -> None:
        self.family = family
        self.prefix = prefix

    def labels(self, *values: str) -> Any:
        return self.family.labels(*self.prefix, *values)

    def __getattr__(self, name: str) -> Any:
        target = self.family.labels(*self.prefix) if self.prefix else self.family
        return getattr(target, name)


def bind(fams: dict[str, Any], repo: str | None) -> dict[str, Any]:
    prefix = (repo,) if repo is not None else ()
    out = {k: Bound(f, prefix) for k, f in fams.items()}
    for r in ("success", "error", "noop"):
        out["syncs"].labels(r)  # present from the start, at 0
    if "signatures" in out:
        for r in ("good", "refused"):
            out["signatures"].labels(r)
    return out


class RepoLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The program's logger, every record carrying `repo: <name>`."""

    def __init__(self, logger: logging.Logger, name: str) -> None:
        super().__init__(logger, {"repo_name": name})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("repo_name", self.extra["repo_name"] if self.extra else "")
        kwargs["extra"] = extra
        return msg, kwargs
