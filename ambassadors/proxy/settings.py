"""A listener's settings, declared once: the options are the only place a default lives.

`ListenerOptions` is the option group every listener has (from the flags, or one
entry of `listeners:` in --config); `Settings` is that group plus what is derived
from it (the parsed listen address, the targets, the retry policy as sets), built
and checked by `Settings.build()`. Nothing else repeats a default: `Settings()`
with no arguments takes each option's own. The upstream TLS files are the
core's `TLSClientOptions` group inside the listener's options
(`settings.upstream_tls`, with its check), under the flag names the proxy
always had.
"""

from __future__ import annotations

import os
import re
from typing import Any

from podkit import UsageError, option
from podkit.http import TLSClientOptions, parse_header
from podkit.options import group_fields, resolve

from .credentials import NOT_SETTABLE, CredentialOptions
from .discovery import DnsOptions
from .http1 import MAX_HEADERS
from .tls_in import TlsInOptions
from .upstream import Target, parse_target

RETRY_WORDS = ("connect-failure", "reset", "timeout", "5xx")
LB_POLICIES = ("p2c-ewma", "round-robin", "least-request", "weighted")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class Routing:
    """Where requests come from and go to, and how they are retried and bounded."""

    listen: str = option(
        "127.0.0.1:8080",
        help="where the app connects: HOST:PORT for HTTP, tcp://HOST:PORT for TCP mode",
    )
    upstream: list[str] = option(
        repeat=True,
        help="upstream URL, repeatable: http(s)://HOST:PORT or tcp(s)://HOST:PORT; "
        "append ';weight=N' for --lb weighted",
        metavar="URL",
    )
    lb: str = option(
        "p2c-ewma",
        help="load balancing: p2c-ewma, round-robin, least-request, weighted or hash-header:NAME",
    )
    connect_timeout: float = option("1s", kind="duration", help="timeout to connect to an upstream")
    try_timeout: float | None = option(
        None, kind="duration", help="timeout for one try's response head (default: none)"
    )
    timeout: float = option(
        "15s",
        kind="duration",
        min=0.001,
        help="timeout for the response head, all tries included",
    )
    retries: int = option(2, min=0, help="retries per request (idempotent or not yet sent)")
    retry_on: str = option(
        "connect-failure,reset,502,503,504",
        help="what is retried: connect-failure, reset, timeout, 5xx, or 5xx status codes",
    )
    # a share as text (20% or 0.2); Settings holds it as a fraction
    retry_budget: float = option(
        "20%",
        kind="any",
        help="retries in flight at most this share of active requests (at least 3)",
    )
    max_connections: int = option(1024, min=1, help="connections per upstream")
    max_pending: int = option(1024, min=0, help="requests waiting for a connection, per upstream")
    max_requests: int = option(1024, min=1, help="requests in flight per upstream")
    eject_after: int = option(5, min=1, help="consecutive failures that eject an upstream")
    eject_time: float = option(
        "30s", kind="duration", help="ejection time, multiplied by the number of ejections"
    )
    max_eject_time: float = option("300s", kind="duration", help="the longest ejection")
    health_path: str | None = option(
        None, help="HTTP path probed on every upstream (TCP mode always probes by connecting)"
    )
    health_interval: float = option("5s", kind="duration", help="time between health checks")
    health_timeout: float = option("2s", kind="duration", help="timeout of one health check")
    # the core's TLS client group under the names the proxy has always had
    # (--ca-file, --cert-file, --key-file); no --insecure: the upstream's
    # certificate is always verified (--sni names what it must match)
    upstream_tls: TLSClientOptions = TLSClientOptions.include(
        about="the upstreams", omit=("insecure",)
    )
    sni: str | None = option(None, help="TLS server name sent to and verified on upstreams")
    set_header: list[str] = option(
        repeat=True, help="'Name: value' set on every upstream request, repeatable"
    )
    preserve_host: bool = option(
        False, help="pass the client's Host header instead of the upstream's"
    )
    max_header_bytes: int = option("8KiB", kind="size", help="largest request head (431 beyond)")
    max_headers: int = option(
        MAX_HEADERS,
        min=1,
        help="most header lines in a request (431 beyond) or a response (502 beyond)",
    )
    max_body_bytes: int | None = option(
        None, kind="size", help="largest request body (413 beyond; default: unlimited)"
    )
    idle_timeout: float = option(
        "60s", kind="duration", help="close connections (and streams) idle this long"
    )
    header_timeout: float = option(
        "10s", kind="duration", help="a client must send its request head within this time"
    )
    access_log: bool = option(True, help="one JSON line per request (TCP: per connection)")


class ListenerOptions(CredentialOptions, DnsOptions, TlsInOptions, Routing):
    """Every option one listener has: the flags, or one `listeners:` entry in --config."""


def _defaults() -> dict[str, Any]:
    return resolve(ListenerOptions.options(), {}, {}, {}, None)


_OPTION_ATTRS = frozenset(o.attr for o in ListenerOptions.options())
#: The groups inside a listener's options (upstream_tls), and where each of
#: their options' values goes in them.
_GROUPS = group_fields(ListenerOptions)
_PATHS = {o.attr: o.path for o in ListenerOptions.options() if o.path}


class Settings(ListenerOptions):
    """One listener's settings: its options' values and what is derived from them."""

    # derived by build() (or given directly, as unit tests do)
    mode: str  # http or tcp
    host: str
    port: int
    targets: list[Target]
    hash_header: bytes | None
    retry_kinds: frozenset[str]  # connect-failure, reset, timeout and status codes as text
    retry_statuses: frozenset[int]
    set_headers: list[tuple[str, str]]
    reuse_port: bool

    def __init__(self, **values: Any) -> None:
        merged = _defaults()
        derived: dict[str, Any] = {
            "mode": "http",
            "host": "127.0.0.1",
            "port": 0,
            "targets": [],
            "hash_header": None,
            "reuse_port": False,
        }
        for key, value in values.items():
            if key in _OPTION_ATTRS:
                merged[key] = value
            elif key in derived or key in Settings.__annotations__:
                derived[key] = value
            else:
                raise TypeError(f"Settings: unknown setting {key!r}")
        # The options of a group inside (upstream_tls) stay plain attributes
        # too, under their flag names: values() hands them back to build().
        super().__init__(**merged)
        for attr, group in _GROUPS.items():
            inner = {p[1:]: merged[a] for a, p in _PATHS.items() if p[0] == attr}
            self.__dict__[attr] = group.make(inner)  # runs the group's check()
        if "retry_kinds" not in derived:
            derived["retry_kinds"], derived["retry_statuses"] = retry_policy(self.retry_on)
        self.__dict__["retry_budget"] = retry_share(str(self.retry_budget))
        derived.setdefault("set_headers", [])
        self.__dict__.update(derived)

    @property
    def deadline_per_try(self) -> float:
        """How long one try may wait for its response head."""
        return min(self.timeout, self.try_timeout) if self.try_timeout else self.timeout

    @classmethod
    def build(cls, values: dict[str, Any], where: str) -> Settings:
        """Check one listener's option values (from flags or a config entry) and derive the
        rest; UsageError names `where` (the config entry) or the flag."""
        v = values
        pre = f"{where}: " if where else ""  # a --config listener says where it is
        listen = str(v["listen"])
        mode, addr = "http", listen
        if listen.startswith("tcp://"):
            mode, addr = "tcp", listen[6:]
        elif listen.startswith("http://"):
            addr = listen[7:]
        host, sep, port = addr.rstrip("/").rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            hint = f" (did you mean 127.0.0.1:{addr}?)" if addr.isdigit() else ""
            raise UsageError(f"{pre}--listen {listen!r}: expected [tcp://]HOST:PORT{hint}")
        ups = v["upstream"]
        if not ups:
            raise UsageError(f"{pre}at least one upstream is needed for {listen}")
        targets = [parse_target(u, where or "--upstream", mode == "tcp") for u in ups]
        lb = str(v["lb"])
        hash_header = None
        if lb.startswith("hash-header:"):
            name = lb.split(":", 1)[1].strip()
            if not name or any(c in name for c in " \t:"):
                raise UsageError(f"{pre}--lb hash-header:NAME needs a header name")
            hash_header = name.encode().lower()
            lb = "hash-header"
        elif lb not in LB_POLICIES:
            raise UsageError(
                f"--lb: {lb!r} is not one of {', '.join(LB_POLICIES)}, hash-header:NAME"
            )
        kinds, statuses = retry_policy(str(v["retry_on"]))
        headers = [parse_header(h, "--set-header") for h in v["set_header"]]
        for name, value in headers:
            # parse_header only refuses CR/LF: the name must be a token and the value free
            # of control characters, or the head sent upstream is malformed (or worse).
            if not _TOKEN.fullmatch(name) or _CTL.search(value):
                raise UsageError(f"--set-header: {name!r} is not a valid header line")
            if name.lower() in NOT_SETTABLE:
                raise UsageError(f"--set-header: {name} cannot be set")
        for n in ("ca_file", "cert_file", "key_file"):  # --key-file alone: the group's check()
            path = v[n]
            if path and not os.path.exists(path):
                raise UsageError(f"--{n.replace('_', '-')}: {path}: no such file")
        health_path = v["health_path"]
        if health_path is not None and not str(health_path).startswith("/"):
            raise UsageError("--health-path: must start with /")
        options = {k: v[k] for k in _OPTION_ATTRS}
        options["try_timeout"] = v["try_timeout"] or None
        options["max_eject_time"] = max(v["max_eject_time"], v["eject_time"])
        options["lb"] = lb
        s = cls(
            **options,
            mode=mode,
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            targets=targets,
            hash_header=hash_header,
            retry_kinds=kinds,
            retry_statuses=statuses,
            set_headers=headers,
        )
        s.check_credentials(pre, mode, [n for n, _ in headers])
        s.check_dns()
        s.check_tls_in()
        return s


# The proxy reads its settings on every request, and an option is a data descriptor on
# its group (a Python-level __get__ per read, ~70 ns against ~12 ns for a plain
# attribute). Settings shadows each with a plain class attribute, so a read finds the
# value in the instance's __dict__ directly; __init__ sets every option there.
for _o in ListenerOptions.options():
    setattr(Settings, _o.attr, None)
for _g in _GROUPS:
    setattr(Settings, _g, None)


def retry_policy(text: str) -> tuple[frozenset[str], frozenset[int]]:
    """--retry-on: the failure kinds retried, and the status codes among them."""
    on: set[str] = set()
    statuses: set[int] = set()
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word == "5xx":
            codes = range(500, 600)
        elif word.isdigit() and 500 <= int(word) <= 599:
            codes = range(int(word), int(word) + 1)
        elif word in RETRY_WORDS:
            on.add(word)
            continue
        else:
            raise UsageError(
                f"--retry-on: {word!r} is not connect-failure, reset, timeout, 5xx or a 5xx code"
            )
        for c in codes:
            statuses.add(c)
            on.add(str(c))
    return frozenset(on), frozenset(statuses)


def retry_share(text: str) -> float:
    """--retry-budget: `20%` or `0.2` as a fraction."""
    txt = text.strip()
    try:
        share = float(txt[:-1]) / 100 if txt.endswith("%") else float(txt)
    except ValueError:
        raise UsageError(f"--retry-budget: {txt!r} is not a share like 20% or 0.2") from None
    if not 0 <= share <= 1:
        raise UsageError("--retry-budget: must be between 0% and 100%")
    return share
