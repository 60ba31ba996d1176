"""Which sinks logship ships to, and with which options.

`--sink` (repeatable) and the config file's `sinks:` entries become one spec
per sink: its name, URL, files, match, state directory, and the keyword
options `podkit.sinks.open_sink` takes. A `sinks:` entry may set any option
of `_SINK_KEYS` for its own sink, read as the flag would be; what it leaves
out is the flag's value. The TLS and credential options are the core's
groups (`podkit.http`), named as logship always named them, so an entry's
`username:` and the flag `--username` are one option. Kept apart from
`program` because it is logship's configuration language, not its running.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from podkit import OptionGroup, UsageError, option
from podkit.http import parse_header_files
from podkit.options import Option
from podkit.program import path_problem
from podkit.secrets import redact_url

if TYPE_CHECKING:
    from .program import LogShip

_SINK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
_HTTP_SCHEMES = (
    "http",
    "https",
    "loki+http",
    "loki+https",
    "elasticsearch+http",
    "elasticsearch+https",
    "otlp+http",
    "otlp+https",
)
_HTTP_FAMILIES = ("http", "loki", "elasticsearch", "otlp")
#: Where refused records go without --dead-letter: never dropped silently.
DEAD_LETTER_FILE = "dead-letter.ndjson"
#: Per-sink options a `sinks:` entry may set (else the flag's value applies),
#: with the kinds of sink they fit ("http": every HTTP-family sink).
_SINK_KEYS: dict[str, str] = {
    "header": "http",
    "header_file": "http",
    "bearer_token_file": "http",
    "username": "http",
    "password_file": "http",
    "client_cert_file": "http",
    "client_key_file": "http",
    "compress": "http",
    "ca_file": "http",
    "insecure": "http",
    "request_timeout": "http",
    "tenant": "loki",
    "loki_tenant": "loki",
    "loki_label_keys": "loki",
    "loki_metadata_keys": "loki",
    "loki_max_streams": "loki",
    "otlp_format": "otlp",
    "dead_letter": "any",
}
#: Files a sink reads credentials from: --check-config says when one cannot be read.
_CREDENTIAL_FILES = (
    "password_file",
    "bearer_token_file",
    "client_cert_file",
    "client_key_file",
    "ca_file",
)
_ROUTE_KEYS = ("name", "url", "path", "exclude", "match")


def _keys(items: list[str]) -> list[str]:
    """`a,b` and repeated flags alike: the field names, in order."""
    return [k.strip() for item in items for k in item.split(",") if k.strip()]


def _family(url: str) -> str:
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _HTTP_SCHEMES:
        return scheme
    return scheme.split("+", 1)[0] if "+" in scheme else "http"


class Destinations(OptionGroup):
    """`--sink` (repeatable) and the config file's `sinks:`: at least one."""

    sink: list[str] = option(
        repeat=True,
        kind="url",
        metavar="URL",
        help="where to ship records (repeatable: each sink gets every record)",
    )
    sinks: list[dict[str, Any]] | None = option(
        None,
        config_only=True,
        help="list of sinks with their own name, path, exclude, match and options",
    )

    def check(self) -> None:
        # Here, not in validate(): `podkit validate` checks manifests with it too.
        if not self.sink and not self.sinks:
            raise UsageError(
                "--sink is required (or `sinks:` in the config file) [env PODKIT_SINK]"
            )


_BY_CLASS: dict[type, dict[str, Option]] = {}


def _options(cls: type[LogShip]) -> dict[str, Option]:
    """logship's options by name (a group's under the name logship gives it)."""
    if cls not in _BY_CLASS:
        _BY_CLASS[cls] = {opt.name: opt for opt in cls.options()}
    return _BY_CLASS[cls]


def credential_problems(p: LogShip, specs: list[dict[str, Any]]) -> list[str | None]:
    """--check-config: the credential files each sink reads can be read (those
    of `sinks:` entries and --header-file; the runner checks the other --*-file
    flags)."""
    problems: list[str | None] = []
    flag_headers = parse_header_files(p.sink_auth.header_file)
    for spec in specs:
        opts, entry = spec["options"], f"sinks: {spec['name']}: "
        for key in _CREDENTIAL_FILES:
            path = opts.get(key)
            if path and path != option_value(p, key):  # the flag's: the runner checks it
                problems.append(path_problem(f"{entry}{key}", path, "file"))
        for name, path in parse_header_files(opts.get("header_files") or []).items():
            own = flag_headers.get(name) != path
            flag = f"{entry}header_file" if own else "--header-file"
            problems.append(path_problem(flag, path, "file"))
    return problems


def sink_specs(p: LogShip) -> list[dict[str, Any]]:
    """Every sink: its name, URL, paths, match and sink options, checked."""
    entries: list[dict[str, Any]] = [{"url": u} for u in p.destinations.sink]
    for i, raw in enumerate(p.destinations.sinks or []):
        if isinstance(raw, str):
            raw = {"url": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("url"), str):
            raise UsageError(f"sinks[{i}]: expected a mapping with a url")
        entry = {str(k).replace("-", "_"): v for k, v in raw.items()}
        unknown = set(entry) - set(_SINK_KEYS) - set(_ROUTE_KEYS)
        if unknown:
            raise UsageError(f"sinks[{i}]: unknown key(s) {', '.join(sorted(unknown))}")
        entries.append(entry)
    names: set[str] = set()
    specs = []
    for i, entry in enumerate(entries):
        url = entry["url"]
        family = _family(url)
        name = str(entry.get("name") or family.replace("elasticsearch", "es"))
        if "name" not in entry and name in names:
            name = f"{name}-{i + 1}"
        if not _SINK_NAME.match(name) or name in names:
            raise UsageError(f"sink name {name!r}: expected a unique [a-zA-Z0-9_.-] name")
        names.add(name)
        for key, fits in _SINK_KEYS.items():
            if key not in entry:
                continue
            ok = fits in ("any", family) or (fits == "http" and family in _HTTP_FAMILIES)
            if not ok:
                raise UsageError(f"sinks: {name}: {key} does not fit {redact_url(url)}")
            # Read as the flag's value is ("10s", "true", a list or one item).
            entry[key] = _options(type(p))[key].convert(entry[key], f"sinks: {name}: {key}")
        match = entry.get("match") or {}
        if not isinstance(match, dict):
            raise UsageError(f"sinks: {name}: match: expected a mapping of field: REGEX")
        paths = entry.get("path")
        paths = [paths] if isinstance(paths, str) else list(paths or p.tailing.path)
        base_dir = p.tailing.state_dir
        state_dir = base_dir if i == 0 else os.path.join(base_dir, "sinks", name)
        if not paths:
            where = "--sink" if i < len(p.destinations.sink) else f"sinks: {name}"
            raise UsageError(
                f"{where}: no files to follow: give --path [env PODKIT_PATH] "
                "or a path: on every sinks: entry"
            )
        specs.append(
            {
                "name": name,
                "url": url,
                "family": family,
                "paths": paths,
                "exclude": list(p.tailing.exclude) + list(entry.get("exclude") or []),
                "match": {str(k): str(v) for k, v in match.items()},
                "state_dir": state_dir,
                "options": _sink_options(p, family, entry, state_dir, i),
            }
        )
    _check_flags_fit(p, {s["family"] for s in specs})
    return specs


def _sink_options(
    p: LogShip, family: str, entry: dict[str, Any], state_dir: str, index: int
) -> dict[str, Any]:
    def get(key: str) -> Any:
        return entry[key] if key in entry else option_value(p, key)

    # --dead-letter names the first sink's file; each sink has its own.
    dead = entry.get("dead_letter") or (p.dead_letter if index == 0 else None)
    opts: dict[str, Any] = {
        "dead_letter": dead or os.path.join(state_dir, DEAD_LETTER_FILE),
        "retry_max_backoff": p.retry_max_backoff,
        "retry_after_max": p.retry_after_max,
        "max_body_bytes": p.batch_max_bytes,
    }
    if family not in _HTTP_FAMILIES:
        return opts
    opts.update(
        headers=list(get("header") or []),
        header_files=list(get("header_file") or []),
        bearer_token_file=get("bearer_token_file"),
        username=get("username"),
        password_file=get("password_file"),
        client_cert_file=get("client_cert_file"),
        client_key_file=get("client_key_file"),
        compress=get("compress"),
        ca_file=get("ca_file"),
        insecure=bool(get("insecure")),
        timeout=float(get("request_timeout")),
    )
    if family == "loki":
        tenant = get("loki_tenant") or get("tenant")
        if tenant:
            opts["tenant"] = tenant
        opts.update(
            label_keys=_keys(list(get("loki_label_keys") or [])),
            metadata_keys=_keys(list(get("loki_metadata_keys") or [])),
            max_streams=int(get("loki_max_streams")),
        )
    elif family == "otlp":
        opts.update(otlp_format=get("otlp_format"), resource=p.pod.resource())
    return opts


def option_value(p: LogShip, name: str) -> Any:
    """The value of logship's option `name` (a `sinks:` key), a group's option too."""
    opt = _options(type(p))[name]
    if opt.group is None:
        return getattr(p, opt.attr)
    return getattr(getattr(p, opt.group[0]), opt.group[1])


def _check_flags_fit(p: LogShip, families: set[str]) -> None:
    """A flag that fits none of the sinks is a mistake: exit 2 naming it."""
    http_flags = [
        (f"--{key.replace('_', '-')}", bool(option_value(p, key)))
        for key in (
            *("header", "header_file", "bearer_token_file", "username", "password_file"),
            *("client_cert_file", "ca_file", "insecure"),
        )
    ]
    http_flags.append(("--compress", p.compress != "none"))
    for flag, set_ in http_flags:
        if set_ and not families & set(_HTTP_FAMILIES):
            raise UsageError(f"{flag}: only for http(s), loki+, elasticsearch+ and otlp+ sinks")
    loki_flags = (
        ("--tenant", bool(p.tenant)),
        ("--loki-tenant", bool(p.loki_tenant)),
        ("--loki-label-keys", bool(p.loki_label_keys)),
        ("--loki-metadata-keys", bool(p.loki_metadata_keys)),
    )
    for flag, set_ in loki_flags:
        if set_ and "loki" not in families:
            raise UsageError(f"{flag}: only for loki+http(s) sinks")
