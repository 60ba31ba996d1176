"""gitsync's error, apart from `_git` so that importing the program (for
`--help`, for `podkit validate`) does not import GitPython."""

from __future__ import annotations


class GitError(Exception):
    """A git command failed; the message holds the (redacted) command and its stderr."""

    def __init__(self, message: str, *, stderr: str = "", timed_out: bool = False) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.timed_out = timed_out
        #: Failed talking to the remote (unreachable, auth, missing ref): no local repair helps.
        self.remote = False
