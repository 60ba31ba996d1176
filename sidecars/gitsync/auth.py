"""How git authenticates without a secret ever reaching argv, the environment or a log.

git gets passwords through `GIT_ASKPASS`: a small helper in a private `0700`
directory that reads the password file at the moment git asks. ssh gets a key
file path (a private `0600` copy when the mounted one is readable by others,
which ssh refuses). Everything here owns files in the private directory;
`env()` runs in the worker thread before each sync, so a rotated secret takes
effect on the next sync.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

from podkit import UsageError, register_secret
from podkit.secrets import SecretFile

from . import github_app
from .errors import GitError
from .github_app import GitHubApp

#: git-sync's secret layout: a Secret mounted at /etc/git-secret works unchanged.
DEFAULT_SSH_KEY = "/etc/git-secret/ssh"
DEFAULT_KNOWN_HOSTS = "/etc/git-secret/known_hosts"
DEFAULT_COOKIE_FILE = "/etc/git-secret/cookie_file"
#: How long --askpass-url may take to answer.
ASKPASS_URL_TIMEOUT = 5.0

# git asks "Username for '<url>': " or "Password for '<url>': ". The password is
# read from a file at the moment git asks, so it is in no argv and no environment.
# With --credential, a table (url TAB username TAB password-file per line) picks
# the longest URL prefix of the one git asks about (its user@ taken out).
ASKPASS = """#!/bin/sh
user=$PODKIT_GITSYNC_ASKPASS_USER
file=$PODKIT_GITSYNC_ASKPASS_FILE
if [ -n "$PODKIT_GITSYNC_CREDENTIALS" ]; then
    url=${1#*\\'}; url=${url%\\'*}
    rest=${url#*://}
    case "${rest%%/*}" in *@*) url="${url%%://*}://${rest#*@}" ;; esac
    best=
    tab=$(printf '\\t')
    while IFS="$tab" read -r u n f; do
        case "$url" in
        "$u"*) if [ ${#u} -gt ${#best} ]; then best=$u; user=$n; file=$f; fi ;;
        esac
    done < "$PODKIT_GITSYNC_CREDENTIALS"
fi
case "$1" in
Username*) printf '%s\\n' "$user" ;;
*) p=
   if [ -n "$file" ]; then
       IFS= read -r p < "$file" || true
   fi
   printf '%s\\n' "$p" ;;
esac
"""


def is_ssh(repo: str) -> bool:
    if "://" in repo:
        return urlsplit(repo).scheme in ("ssh", "git+ssh", "ssh+git")
    # scp-like user@host:path (a local path never has a colon before the first slash)
    head = repo.split("/", 1)[0]
    return ":" in head


def is_local(repo: str) -> bool:
    """A file:// URL or a path: git's file transport."""
    if "://" in repo:
        return urlsplit(repo).scheme.lower() == "file"
    return not is_ssh(repo)


def split_password(repo: str) -> tuple[str, str | None]:
    """(URL without its password, the password) — git must never see it in argv."""
    if "://" not in repo:
        return repo, None
    parts = urlsplit(repo)
    if parts.password is None:
        return repo, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    netloc = f"{user}@{hostport}" if user else hostport
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, unquote(parts.password)


@dataclass(frozen=True)
class Credential:
    """One entry of git-sync's --credential: a URL (prefix) and who to be there."""

    url: str
    username: str
    password: str | None = None
    password_file: str | None = None


def register_url_password(url: str) -> None:
    """Scrub a URL's password (as written, and decoded) from logs: an error about the
    URL may quote it (urllib reads `user:password@host` as a host with a bad port)."""
    if "://" not in url:
        return
    try:
        raw = urlsplit(url).password
    except ValueError:
        return
    if raw:
        register_secret(raw)
        register_secret(unquote(raw))


def strip_user(url: str) -> str:
    if "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def parse_credentials(values: list[str]) -> list[Credential]:
    """git-sync's --credential values: JSON objects, or JSON lists of them (the env form)."""
    import json

    out = []
    for raw in values:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"--credential: not JSON: {exc}") from None
        for item in data if isinstance(data, list) else [data]:
            if not isinstance(item, dict):
                raise UsageError("--credential: expected a JSON object")
            extra = set(item) - {"url", "username", "password", "password-file"}
            if extra:
                raise UsageError(f"--credential: unknown field {sorted(extra)[0]!r}")
            url, user = item.get("url"), item.get("username")
            pw, pw_file = item.get("password"), item.get("password-file")
            if not isinstance(url, str) or not url:
                raise UsageError("--credential: url must be specified")
            if not isinstance(user, str) or not user:
                raise UsageError("--credential: username must be specified")
            if (pw is None) == (pw_file is None):
                raise UsageError("--credential: one of password and password-file is required")
            if pw_file is not None and not os.path.isfile(str(pw_file)):
                raise UsageError(f"--credential: no such file: {pw_file}")
            out.append(Credential(url, user, pw, pw_file))
    return out


@dataclass
class Auth:
    """The credentials of one repository, as files git and ssh are pointed at."""

    repo: str
    username: str | None = None
    #: A password given as a value (--password, $GITSYNC_PASSWORD): kept in a private file.
    password: str | None = None
    password_file: str | None = None
    #: git-sync's --askpass-url: asked before each sync for username= / password=.
    askpass_url: str | None = None
    #: GitHub App auth: an installation token minted (and refreshed) before syncs.
    github_app: GitHubApp | None = None
    #: git-sync's --credential: per-URL (url, username, password, password-file).
    credentials: list[Credential] = field(default_factory=list)
    ssh_key_files: list[str] = field(default_factory=list)
    ssh_known_hosts: bool = True
    ssh_known_hosts_file: str | None = None
    #: The URL git is given: `repo` without its password.
    git_url: str = ""
    _private: str = ""
    _password: SecretFile | None = None
    _url_password_file: str | None = None
    _credentials: str = ""
    _github_token: str = ""
    _ssh_key_sigs: dict[str, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def setup(self) -> None:
        remove_dead_private_dirs()
        self._private = tempfile.mkdtemp(prefix=f"podkit-gitsync-{os.getpid()}-")
        os.chmod(self._private, 0o700)
        self._write_private("askpass", ASKPASS, 0o700)
        self.git_url, url_password = split_password(self.repo)
        if self.password is not None:
            url_password = self.password  # git-sync: the flag/env wins over the URL's
        if url_password is not None:
            register_secret(url_password)
            self._url_password_file = self._write_private("password", url_password + "\n")
        if self.password_file:
            self._password = SecretFile(self.password_file)
        if self.askpass_url:
            register_url_password(self.askpass_url)
        if self.credentials:
            lines = []
            for i, c in enumerate(self.credentials):
                register_url_password(c.url)  # errors name the entry by its URL
                path = c.password_file
                if c.password is not None:
                    register_secret(c.password)
                    path = self._write_private(f"credential-{i}", c.password + "\n")
                assert path is not None
                url, _ = split_password(c.url)
                url = strip_user(url)
                lines.append(f"{url}\t{c.username}\t{os.path.abspath(path)}\n")
            self._credentials = self._write_private("credentials", "".join(lines))

    def cleanup(self) -> None:
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)

    def private_path(self, name: str) -> str:
        """A path in the private 0700 directory (removed at cleanup, or by the
        next start after a SIGKILL)."""
        return os.path.join(self._private, name)

    def _write_private(self, name: str, text: str, mode: int = 0o600) -> str:
        path = os.path.join(self._private, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def env(self) -> dict[str, str]:
        """git's environment for authentication (runs in the worker thread)."""
        askpass = os.path.join(self._private, "askpass")
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": askpass,
            "SSH_ASKPASS": askpass,
            "PODKIT_GITSYNC_ASKPASS_USER": self.username or "",
            "PODKIT_GITSYNC_ASKPASS_FILE": self._url_password_file or "",
            "PODKIT_GITSYNC_CREDENTIALS": self._credentials,
        }
        for c in self.credentials:
            if c.password_file:
                try:  # registered for scrubbing before git can echo it
                    SecretFile(c.password_file).value()
                except OSError as exc:
                    raise GitError(f"--credential {c.url}: {exc.strerror or exc}") from None
        if self.askpass_url:
            user, path = self._ask_url()
            env["PODKIT_GITSYNC_ASKPASS_USER"] = user or self.username or ""
            env["PODKIT_GITSYNC_ASKPASS_FILE"] = path
        if self.github_app is not None:
            token, new = self.github_app.token()
            if new:
                # renewed hourly; a slot per repository (a `repos:` config has one
                # Auth each): one shared slot let the others' renewals evict this
                # repository's token while it was still in use
                register_secret(token, slot=("github-app token", id(self)))
                self._github_token = self._write_private("github-token", token + "\n")
            env["PODKIT_GITSYNC_ASKPASS_USER"] = github_app.USERNAME
            env["PODKIT_GITSYNC_ASKPASS_FILE"] = self._github_token
        if self._password is not None:
            # Re-read (one stat) before each sync: rotation takes effect now, and the
            # new value is registered for scrubbing before git can echo it anywhere.
            try:
                self._password.value()
            except OSError as exc:
                raise GitError(f"--password-file: {exc.strerror or exc}") from None
            env["PODKIT_GITSYNC_ASKPASS_FILE"] = os.path.abspath(self._password.path)
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
        if self.ssh_key_files:
            # Every key is offered, in order (git-sync passes them all: private
            # submodules with their own deploy keys depend on it).
            for i, key in enumerate(self.ssh_key_files):
                ssh += ["-i", self._ssh_key(key, i)]
            ssh += ["-o", "IdentitiesOnly=yes"]
        if self.ssh_known_hosts:
            ssh += ["-o", "StrictHostKeyChecking=yes"]
            if self.ssh_known_hosts_file:
                ssh += ["-o", f"UserKnownHostsFile={os.path.abspath(self.ssh_known_hosts_file)}"]
        else:
            ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        env["GIT_SSH_COMMAND"] = shlex.join(ssh)
        env["GIT_SSH_VARIANT"] = "ssh"
        return env

    def _ask_url(self) -> tuple[str | None, str]:
        """(username, password file) from --askpass-url's answer, as git-sync reads it."""
        import http.client
        import urllib.request

        assert self.askpass_url is not None
        try:
            with urllib.request.urlopen(self.askpass_url, timeout=ASKPASS_URL_TIMEOUT) as r:
                body = r.read(64 * 1024).decode("utf-8", "replace")
        # http.client's InvalidURL and BadStatusLine are neither OSError nor ValueError:
        # without them the error did not name --askpass-url
        except (OSError, ValueError, http.client.HTTPException) as exc:
            err = GitError(f"--askpass-url: {exc}")
            err.remote = True  # nothing local to repair
            raise err from None
        user = password = None
        for line in body.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "username":
                user = value.strip()
            elif key.strip() == "password":
                password = value.strip()
        if password is None:
            err = GitError("--askpass-url: the answer has no password= line")
            err.remote = True
            raise err
        # per repository too: several may ask the same URL
        register_secret(password, slot=("askpass", self.askpass_url, id(self)))
        return user, self._write_private("askpass-url-password", password + "\n")

    def _ssh_key(self, path: str, i: int) -> str:
        """ssh refuses a key readable by others (a Secret mounted 0644): use a 0600 copy."""
        st = os.stat(path)
        if not st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return os.path.abspath(path)
        copy = os.path.join(self._private, f"ssh-key-{i}")
        sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig != self._ssh_key_sigs.get(path):
            with open(path, "rb") as src:
                data = src.read()
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._ssh_key_sigs[path] = sig
        return copy


def remove_dead_private_dirs() -> None:
    """Private dirs of a gitsync that was SIGKILLed (they can hold a URL's password)."""
    base = tempfile.gettempdir()
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not name.startswith("podkit-gitsync-") or len(parts) < 4 or not parts[2].isdigit():
            continue
        path = os.path.join(base, name)
        try:
            if os.stat(path).st_uid != os.getuid():
                continue
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def parse_git_config(text: str, flag: str) -> list[tuple[str, str]]:
    """git-sync's --git-config syntax: `key:value` items separated by commas.

    A key or value may be double-quoted (then `,`, `:` and `\\"` may appear in
    it); unquoted ones end at the first `:` (key) or `,` (value).
    """
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)

    def token(stops: str) -> str:
        nonlocal i
        if i < n and text[i] == '"':
            i += 1
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            if i >= n:
                raise UsageError(f"{flag}: unterminated quote in {text!r}")
            i += 1
            return "".join(buf)
        start = i
        while i < n and text[i] not in stops:
            i += 1
        return text[start:i]

    while i < n:
        key = token(":,").strip()
        if i >= n or text[i] != ":" or not key:
            raise UsageError(f"{flag}: expected 'key:value' items, got {text!r}")
        i += 1
        value = token(",")
        out.append((key, value))
        if i < n:
            if text[i] != ",":
                raise UsageError(f"{flag}: expected ',' after a value in {text!r}")
            i += 1
    return out
