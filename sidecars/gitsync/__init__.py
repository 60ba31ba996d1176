"""Keep a git checkout in a shared volume in sync, published atomically.

The on-disk contract is kubernetes/git-sync v4's, so consumers can switch:
`<root>/<link>` is a relative symlink to `.worktrees/<sha>`, replaced by an
atomic rename once that worktree is completely checked out, and
`basename(readlink(<root>/<link>))` is the published commit. Everything else
under `<root>` (the `.git` directory, other worktrees) is an implementation
detail.

The package, by dependency direction: `program` (triggers, the loop, status;
the event loop) is built on `hooks` on `config` (the rules) on `settings`
(the options); it uses `checkout` (the git work, in a worker thread), which
uses `auth` (askpass, ssh, credentials) and `publish` (the link flip);
`triggers` guards `POST /sync`; `status` serves --http-bind; `_git` bounds and
kills git processes. This file only re-exports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import ASKPASS as _ASKPASS
from .auth import is_local, is_ssh, split_password
from .auth import remove_dead_private_dirs as _remove_dead_private_dirs
from .config import default_link
from .program import GitSync, main, too_many_failures

if TYPE_CHECKING:
    from .checkout import SyncResult
    from .checkout import _remove_locks as _remove_locks


def __getattr__(name: str) -> Any:
    # checkout imports GitPython (~70 ms, ~6 MB): loaded when the program runs
    # or a caller asks for it, not for `podkit --help` or `podkit validate`.
    if name in ("SyncResult", "_remove_locks"):
        from . import checkout

        return getattr(checkout, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "_ASKPASS",
    "GitSync",
    "SyncResult",
    "_remove_dead_private_dirs",
    "_remove_locks",
    "default_link",
    "is_local",
    "is_ssh",
    "main",
    "split_password",
    "too_many_failures",
]
