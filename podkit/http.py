"""HTTP setup shared by every program: client TLS, headers, tokens.

`TLSClientOptions` and `AuthOptions` are the option groups a program that
talks to a server includes (`--ca-file`, `--bearer-token-file`, ...): their
defaults and cross-checks live here once, and they hand over what
`ssl_context()` and `client_session()` / `podkit.httpclient` need.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self

from .options import OptionGroup, UsageError, option, resolve
from .secrets import SecretFile, register_secret

if TYPE_CHECKING:
    import aiohttp


def ssl_context(
    ca_file: str | None = None,
    insecure: bool = False,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client TLS context: system CAs or `ca_file`, optional client certificate."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def parse_header(text: str, flag: str = "--header") -> tuple[str, str]:
    """`Name: value` -> (name, value); raises UsageError naming the flag."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
        raise UsageError(f"{flag}: expected 'Name: value', got {text!r}")
    return name, value.strip()


def parse_headers(items: Iterable[str], flag: str = "--header") -> dict[str, str]:
    return dict(parse_header(h, flag) for h in items)


#: An HTTP field name (RFC 9110 §5.1, a token).
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")

#: Header names no program lets a file set: framing and hop-by-hop fields
#: belong to each connection (RFC 9110 §7.6.1) and the client writes them
#: itself; a second Content-Length or a Transfer-Encoding from a Secret
#: would desynchronise the connection (request smuggling).
HOP_BY_HOP = (
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
)


def parse_header_files(
    items: Iterable[str],
    flag: str = "--header-file",
    *,
    refused: Iterable[str] = HOP_BY_HOP,
    taken: Iterable[str] = (),
    taken_by: str = "",
) -> dict[str, str]:
    """`NAME=FILE` items -> {header name: file whose content is the value}.

    The one parser of the spelling issue 17 and 18 give every program (an API
    key from a mounted Secret: `--header-file X-Api-Key=/etc/secret/key`).
    Refused, with a UsageError naming the flag: an item that is not
    `NAME=FILE` with NAME a header name; a name in `refused` (the hop-by-hop
    and framing fields; a program adds those it writes itself, as the proxy
    does X-Forwarded-For); a name given twice, in any case, or already in
    `taken` (headers set another way, named by `taken_by`: the proxy's
    --set-header). Two values for one name would reach the server as two
    header lines, and the server picks one."""
    out: dict[str, str] = {}
    no = {n.lower() for n in refused}
    seen = {n.lower() for n in taken}
    for item in items:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not path or not _TOKEN.fullmatch(name):
            raise UsageError(f"{flag}: expected NAME=FILE with a header name, got {item!r}")
        if name.lower() in no:
            raise UsageError(f"{flag}: {name} cannot be set")
        if name.lower() in seen:
            also = f" (or by {taken_by})" if taken_by else ""
            raise UsageError(f"{flag}: {name} is set twice{also}")
        seen.add(name.lower())
        out[name] = path
    return out


def _check_header_file(item: str) -> None:
    """One `--header-file` item, checked where the option is parsed."""
    try:
        parse_header_files([item], "")
    except UsageError as exc:
        raise ValueError(str(exc).lstrip(": ")) from None


def bearer_token_problem(token: str) -> str | None:
    """Why `token` cannot follow `Authorization: Bearer `, or None when it can.

    RFC 6750's token is visible ASCII without spaces. A line break would end the
    header line (aiohttp refuses it at send time, naming no file), an empty token
    is most often a Secret not projected yet (a 401 would not say so), and a
    space or control character is refused or misread by servers. Every program
    that reads a bearer token from a file checks it here, and says which file.
    """
    if not token.strip():
        return "empty"
    if "\n" in token or "\r" in token:
        return "one line expected"
    if not token.isascii() or not token.isprintable() or " " in token:
        return "the token holds spaces or control characters"
    return None


def client_session(
    timeout: float | None = None,
    *,
    connect_timeout: float | None = None,
    ssl_ctx: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
    limit: int = 100,
) -> aiohttp.ClientSession:
    """An aiohttp session with podkit's defaults (no env proxies, no cookie jar)."""
    import aiohttp

    from . import __version__

    connector = aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx is not None else True, limit=limit)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout, connect=connect_timeout),
        headers={"User-Agent": f"podkit/{__version__}", **(headers or {})},
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


class _Standalone(OptionGroup):
    """A group a library caller builds from values rather than flags."""

    @classmethod
    def of(cls, names: Mapping[str, str] | None = None, **values: Any) -> Self:
        """The group with `values` (the rest at their defaults), checked.

        `names` spells the flags in messages as the caller's parameters are
        named (a sink's `username` is the group's `basic_auth_user`), as
        `include(names=...)` does on a program."""
        defaults = resolve(cls.options(), {}, {}, {}, None)  # each option's own default
        unknown = set(values) - set(defaults)
        if unknown:
            raise TypeError(f"{cls.__name__}.of: no options {sorted(unknown)}")
        group = cls(**{**defaults, **values})
        group._renamed = dict(names or {})
        group.check()
        return group


class TLSClientOptions(_Standalone):
    """A TLS client's settings: whom to trust, which certificate to present.

    The values are files (re-read only at start: a rotated CA takes a
    restart, as with every TLS client here). `ssl_context()` builds the
    context once per kind of check and keeps it."""

    about = "the server"

    ca_file: str | None = option(
        None,
        kind="path",
        metavar="FILE",
        help="CA bundle (PEM) to verify the TLS certificates of {about} (default: the system's)",
    )
    cert_file: str | None = option(
        None,
        kind="path",
        metavar="FILE",
        help="client certificate (PEM) presented to {about} when asked",
    )
    key_file: str | None = option(
        None,
        kind="path",
        metavar="FILE",
        help="private key of the client certificate (if not in the same file)",
    )
    insecure: bool = option(False, help="do not verify the TLS certificates of {about}")

    def check(self) -> None:
        if self.key_file and not self.cert_file:
            raise UsageError(f"{self.flag('key_file')}: needs {self.flag('cert_file')}")

    def ssl_context(self, verify: bool = True, check_hostname: bool = True) -> ssl.SSLContext:
        """The client context, built once per (verify, check_hostname).

        `check_hostname=False` verifies the chain but not the name (libpq's
        verify-ca); the client certificate is in every one."""
        cache: dict[tuple[bool, bool], ssl.SSLContext] = self.__dict__.setdefault("_ssl", {})
        key = (verify, check_hostname)
        if key not in cache:
            ctx = ssl_context(
                self.ca_file, self.insecure or not verify, self.cert_file, self.key_file
            )
            if not check_hostname and ctx.check_hostname:
                ctx.check_hostname = False
            cache[key] = ctx
        return cache[key]

    def cert_signature(self) -> tuple[tuple[int, int, int, int], ...]:
        """What `stat` says of the client certificate and key files now (empty
        without a certificate). A client that compares it with the signature
        its context was built from knows when to build a new one: kubelet
        rotates a mounted Secret by swapping a symlink. OSError when a file
        cannot be stat'ed."""
        sig = []
        for path in (self.cert_file, self.key_file) if self.cert_file else ():
            if path:
                st = os.stat(path)
                sig.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def check_files(self) -> None:
        """Load the files now, so a bad one is a usage error at start (exit 2)
        rather than a failure at the first connection."""
        for attr in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, attr)
            if path is not None:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise UsageError(f"{self.flag(attr)} {path}: {exc.strerror or exc}") from None
        if not (self.ca_file or self.cert_file):
            return  # the system's CAs: nothing of ours to check
        try:
            self.ssl_context()
        except (ssl.SSLError, OSError) as exc:
            flags = "/".join(self.flag(a) for a in ("ca_file", "cert_file", "key_file"))
            raise UsageError(f"{flags}: {exc}") from None


class AuthOptions(_Standalone):
    """Credentials sent to a server, every one from a file re-read when it
    changes (a rotated Secret needs no restart): a bearer token, a basic-auth
    user and password, or headers whose values are files (`NAME=FILE`)."""

    about = "the server"

    bearer_token_file: str | None = option(
        None,
        kind="path",
        metavar="FILE",
        help="file with a bearer token for {about}, re-read when it changes",
    )
    basic_auth_user: str | None = option(
        None,
        metavar="USER",
        help="basic-auth user for {about} (its password from the password file)",
    )
    basic_auth_password_file: str | None = option(
        None,
        kind="path",
        metavar="FILE",
        help="file with the basic-auth password for {about}, re-read when it changes",
    )
    header_file: list[str] = option(
        repeat=True,
        metavar="NAME=FILE",
        validator=lambda item: _check_header_file(item),
        help="header NAME sent to {about} with FILE's content as its value "
        "(an API key; repeatable, re-read on change)",
    )

    def check(self) -> None:
        user = self.flag("basic_auth_user")
        if self.basic_auth_user and ":" in self.basic_auth_user:
            # RFC 7617: the user-id ends at the first colon; the server would
            # read the rest as the password.
            raise UsageError(f"{user}: basic auth user names cannot hold ':'")
        # Duplicates and hop-by-hop names across every item (each item alone
        # was checked as it was read).
        named = parse_header_files(self.header_file, self.flag("header_file"))
        scheme = "bearer_token_file" if self.bearer_token_file else "basic_auth_user"
        if getattr(self, scheme) and any(n.lower() == "authorization" for n in named):
            # Two Authorization lines would reach the server, which picks one.
            raise UsageError(
                f"{self.flag('header_file')}: Authorization conflicts with {self.flag(scheme)}"
            )
        if bool(self.basic_auth_user) != bool(self.basic_auth_password_file):
            raise UsageError(
                f"{self.flag('basic_auth_user')} and {self.flag('basic_auth_password_file')}: "
                "give both or neither"
            )
        if self.bearer_token_file and self.basic_auth_user:
            raise UsageError(
                f"{self.flag('bearer_token_file')} and {self.flag('basic_auth_user')}: "
                "give one of them, not both"
            )

    @property
    def configured(self) -> bool:
        return bool(self.bearer_token_file or self.basic_auth_user or self.header_file)

    def _file(self, attr: str) -> SecretFile:
        files: dict[str, SecretFile] = self.__dict__.setdefault("_files", {})
        if attr not in files:
            files[attr] = SecretFile(getattr(self, attr))
        return files[attr]

    def headers(self) -> dict[str, str]:
        """The headers to send now, read from the files (cheap when unchanged).

        Raises UsageError naming the flag and file when one cannot be read or
        a header line is malformed: the caller reports it as its failure."""
        out: dict[str, str] = {}
        attr = ""
        try:
            named = parse_header_files(self.header_file, self.flag("header_file"))
            for name, path in named.items():
                attr = f"header_file:{path}"
                files: dict[str, SecretFile] = self.__dict__.setdefault("_files", {})
                secret = files.setdefault(attr, SecretFile(path))
                value = secret.value()
                if "\n" in value or "\r" in value:
                    raise UsageError(f"{self.flag('header_file')} {name}={path}: one line expected")
                out[name] = value
            if self.bearer_token_file:
                attr = "bearer_token_file"
                token = self._file(attr).value()
                problem = bearer_token_problem(token)
                if problem:
                    raise UsageError(f"{self.flag(attr)} {self.bearer_token_file}: {problem}")
                out["Authorization"] = f"Bearer {token}"
            elif self.basic_auth_user and self.basic_auth_password_file:
                import base64

                attr = "basic_auth_password_file"
                password = self._file(attr).value()
                last: tuple[str, str] | None = self.__dict__.get("_basic")
                if last is None or last[0] != password:
                    pair = f"{self.basic_auth_user}:{password}".encode()
                    token = base64.b64encode(pair).decode("ascii")
                    # the encoded form is as secret as the password; a rotated one
                    # replaces its old encoding
                    register_secret(token, slot=("basic", self.basic_auth_password_file))
                    last = self.__dict__["_basic"] = (password, f"Basic {token}")
                out["Authorization"] = last[1]
        except OSError as exc:
            if attr.startswith("header_file:"):
                flag, path = self.flag("header_file"), attr.partition(":")[2]
            else:
                flag, path = self.flag(attr), getattr(self, attr)
            raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None
        return out
