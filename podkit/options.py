"""Options declared once on a Program class, read from flags, env and a config file.

Precedence is flag > env (`PODKIT_<NAME>`) > `--config FILE` (YAML) > default.
Every value goes through one converter, so a bad duration is reported the same
way whether it came from `--every`, `PODKIT_EVERY` or the config file.

Longer than the 600 lines a module should have, for one reason: an option,
the groups that bundle options, the argparse parser built from them and the
precedence resolution are one mechanism with one set of private attributes
(`_Attribute`, a group's `_prefix`/`_renamed`); split, each part would reach
into the others' internals.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from .units import parse_duration, parse_size

_MISSING: Any = object()
G = TypeVar("G", bound="OptionGroup")


class UsageError(Exception):
    """A usage or configuration error: exit 2 with this one line on stderr."""


def _parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "on", "y"):
        return True
    if s in ("0", "false", "no", "off", "n", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_url(text: Any) -> str:
    from urllib.parse import urlsplit

    s = str(text).strip()
    parts = urlsplit(s)
    if not parts.scheme:
        raise ValueError(f"not a URL: {text!r}")
    return s


def _parse_addr(text: Any) -> str:
    """`HOST:PORT`, `[::1]:PORT`, `:PORT` or `off`."""
    s = str(text).strip()
    if s.lower() in ("off", "none", "disabled", ""):
        return "off"
    _host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        if s.isdigit():  # the commonest slip: a bare port
            raise ValueError(f"not HOST:PORT: {text!r} (did you mean 0.0.0.0:{s}?)")
        raise ValueError(f"not HOST:PORT: {text!r}")
    return s


def split_addr(addr: str) -> tuple[str, int]:
    """`HOST:PORT` / `[::1]:PORT` / `:PORT` -> (host, port); an empty host means all."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "str": str,
    "int": lambda v: int(str(v).strip()) if not isinstance(v, int) else v,
    "float": lambda v: float(str(v).strip()) if not isinstance(v, int | float) else float(v),
    "bool": _parse_bool,
    "duration": parse_duration,
    "size": parse_size,
    "url": _parse_url,
    "addr": _parse_addr,
    "path": lambda v: os.fspath(str(v)),
    "any": lambda v: v,
}


class _Attribute:
    """A class attribute that keeps each instance's value in its __dict__
    under `attr` (what options and option groups are on a program)."""

    attr: str

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        try:
            return obj.__dict__[self.attr]
        except KeyError:
            raise AttributeError(self.attr) from None

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.attr] = value


@dataclass
class Option(_Attribute):
    """One declared option. Create with :func:`option`."""

    default: Any = _MISSING
    help: str = ""
    required: bool = False
    kind: str | None = None
    choices: Sequence[Any] | None = None
    repeat: bool = False
    positional: bool = False
    flag: str | None = None
    short: str | None = None
    env: str | None = None
    #: Further env names read when `env_name` is unset (another tool's, so people can switch).
    also_env: tuple[str, ...] = ()
    #: Whether the program's `env_prefixes` add to `also_env` (off for podkit-only flags).
    env_alias: bool = True
    metavar: str | None = None
    config_only: bool = False
    secret: bool = False
    #: Range checks and a custom check, applied to every source alike (flag,
    #: env, config file, default) right after conversion.
    min: Any = None
    max: Any = None
    validator: Callable[[Any], Any] | None = None
    name: str = ""
    attr: str = ""
    annotation: Any = None
    #: (attribute of the group on the program, attribute in the group) for an
    #: option that an OptionGroup contributed (the attribute in the group is
    #: flattened for a group inside it: `tls_ca_file`).
    group: tuple[str, str] | None = None
    #: Where the value lives inside the group objects: ("hook", "tls",
    #: "ca_file") for `program.hook.tls.ca_file`; empty for an option of
    #: the class itself.
    path: tuple[str, ...] = ()
    _extra: dict[str, Any] = field(default_factory=dict)

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name
        self.name = name

    @property
    def flag_name(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or "PODKIT_" + self.name.upper()

    @property
    def config_key(self) -> str:
        return self.name.replace("_", "-")

    def resolve_kind(self) -> str:
        if self.kind:
            return self.kind
        ann = self.annotation
        if isinstance(ann, str):
            ann = ann.replace(" ", "")
            for base in ("str", "int", "float", "bool"):
                if ann in (base, f"{base}|None", f"list[{base}]"):
                    return base
            return "any"
        origin = typing.get_origin(ann)
        if origin in (list, typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = args[0] if args else str
        if ann in (str, int, float, bool):
            return str(ann.__name__)
        return "any"

    def convert(self, value: Any, source: str) -> Any:
        conv = CONVERTERS[self.resolve_kind()]
        try:
            if self.repeat:
                items = value if isinstance(value, list | tuple) else _split_env_list(value)
                out = [conv(v) for v in items]
                for v in out:
                    self._check_choice(v)
                    self._check(v)
                return out
            if value is None:
                return None
            out = conv(value)
            if self.choices is not None:
                self._check_choice(out)
            self._check(out)
            return out
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{source}: {exc}") from None

    def _check(self, v: Any) -> None:
        if self.min is not None and v < self.min:
            raise ValueError(f"{v!r} is below the minimum {self.min!r}")
        if self.max is not None and v > self.max:
            raise ValueError(f"{v!r} is above the maximum {self.max!r}")
        if self.validator is not None:
            self.validator(v)  # raises ValueError with its reason

    def _check_choice(self, v: Any) -> None:
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{v!r} is not one of {', '.join(map(str, self.choices))}")


def _split_env_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    s = str(value)
    sep = "\n" if "\n" in s else ","
    return [p.strip() for p in s.split(sep) if p.strip()]


def option(
    default: Any = _MISSING,
    *,
    help: str = "",
    required: bool = False,
    kind: str | None = None,
    choices: Sequence[Any] | None = None,
    repeat: bool = False,
    positional: bool = False,
    flag: str | None = None,
    short: str | None = None,
    env: str | None = None,
    also_env: str | Sequence[str] = (),
    env_alias: bool = True,
    metavar: str | None = None,
    config_only: bool = False,
    secret: bool = False,
    min: Any = None,
    max: Any = None,
    validator: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare an option on a Program class (or an OptionGroup).

    The attribute's annotation gives the type (str, int, float, bool, list[...]);
    `kind` refines it: duration, size, url, addr, path, any. `repeat=True` makes a
    repeatable flag collecting a list; `config_only=True` is for structured
    settings (mappings, lists of routes) that only the config file can carry.
    `also_env` names env variables read, in order, when the primary one is unset;
    a program's `env_prefixes` add `<PREFIX><NAME>` to it unless `env_alias=False`.
    `min`/`max` bound the converted value (in its unit: seconds, bytes) and
    `validator(value)` may raise ValueError; both report the source (flag, env
    variable or config key) in the one-line usage error, whatever it was.
    """
    return Option(
        default=default,
        help=help,
        required=required,
        kind=kind,
        choices=choices,
        repeat=repeat,
        positional=positional,
        flag=flag,
        short=short,
        env=env,
        also_env=(also_env,) if isinstance(also_env, str) else tuple(also_env),
        env_alias=env_alias,
        metavar=metavar,
        config_only=config_only,
        secret=secret,
        min=min,
        max=max,
        validator=validator,
    )


class OptionGroup:
    """A set of options declared once and used by every program that needs it,
    whose values arrive as one typed object (kopf's grouped settings)::

        class TLSClient(OptionGroup):
            ca_file: str | None = option(kind="path", help="CA bundle to trust")
            insecure: bool = option(False, help="skip certificate checks")

        class MyProgram(Sidecar):
            upstream_tls: TLSClient = TLSClient.include(prefix="upstream-")

        # --upstream-ca-file, PODKIT_UPSTREAM_CA_FILE, config key upstream-ca-file
        self.upstream_tls.ca_file

    `check()` may raise UsageError for rules that span the group's options
    (a client certificate without its key); it runs when the program is
    configured, with the flags already named by their prefixed spelling.
    """

    _prefix: str = ""
    _renamed: Mapping[str, str] = {}

    def __init__(self, **values: Any) -> None:
        for key, value in values.items():
            self.__dict__[key] = value

    #: What the group's options are for, filling `{about}` in their help
    #: texts ("the sink", "the webhook"); include(about=...) names it per use.
    about: str = "the server"

    @classmethod
    def include(
        cls,
        prefix: str = "",
        *,
        about: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        also_env: Mapping[str, str | Sequence[str]] | None = None,
        names: Mapping[str, str] | None = None,
        omit: Sequence[str] = (),
    ) -> Any:
        """This group's options on a program (or in another group: prefixes
        compose), under flag names starting `prefix`.

        `about` fills `{about}` in the help texts; `defaults` replaces a
        default where one program's differs (kubefiles' webhook is a GET, as
        k8s-sidecar's is); `also_env` adds another tool's env names to an
        option (keys are the group's attribute names); `names` spells an
        option another way on this program, where a tool it replaces already
        named it (gitsync's `--webhook-success-status` is the group's `status`);
        `omit` leaves options out where a program does not offer them (the
        value is then the default). For a group holding another, the keys
        are the flattened names (`tls_ca_file`)."""
        unknown = set(defaults or {}) | set(also_env or {}) | set(names or {}) | set(omit)
        unknown -= {opt.attr for opt in cls.options()}
        if unknown:
            raise TypeError(f"{cls.__name__}.include: no options {sorted(unknown)}")
        return GroupField(
            cls,
            prefix,
            about=about or cls.about,
            defaults=dict(defaults or {}),
            also_env={
                k: (v,) if isinstance(v, str) else tuple(v) for k, v in (also_env or {}).items()
            },
            names=dict(names or {}),
            omit=frozenset(omit),
        )

    @classmethod
    def options(cls) -> list[Option]:
        return collect_options(cls)

    @classmethod
    def keys(cls, prefix: str = "") -> tuple[str, ...]:
        """The keys `from_mapping(prefix=...)` reads, for the caller's own check
        of unknown keys (a mapping usually holds other settings too)."""
        return tuple(prefix + opt.attr for opt in cls.options())

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        where: str = "",
        *,
        prefix: str = "",
        defaults: Mapping[str, Any] | None = None,
        base_dir: str | None = None,
    ) -> Any:
        """The group's values from a mapping in a YAML file (a list item of a
        config file), with the options' converters, min/max/validators and
        defaults: a setting that is both a flag and a key is declared once.

        Keys are `prefix + attr` (`state_dir`, or `state-dir`); other keys are
        left to the caller (see `keys()`). A null is an absent key; a scalar
        where a list belongs is one item (YAML has lists: no comma splitting).
        `defaults` replaces a default for this use; `base_dir` anchors relative
        `kind="path"` values (the file's directory). Errors are UsageError
        ("<where>.<key>: <problem>"), which `ConfigFile.located()` turns into
        file:line: key: problem; `check()` names the keys the same way."""
        from .configfile import fill_group

        return fill_group(cls, data, where, prefix=prefix, defaults=defaults, base_dir=base_dir)

    #: Set by from_mapping: the options were keys of the mapping at this key path.
    _where: str | None = None

    def flag(self, attr: str) -> str:
        """The flag that set `attr`, for error messages: `--upstream-ca-file`
        (or the key, `sources[0].ca_file`, for a group read by from_mapping)."""
        name = self._prefix + self._renamed.get(attr, attr)
        if self._where is not None:
            return f"{self._where}.{name}" if self._where else name
        return "--" + name.replace("_", "-")

    def check(self) -> None:
        """Cross-option rules of the group; raise UsageError naming the flags."""

    def values(self) -> dict[str, Any]:
        """The options' values (not the caches a group keeps under `_names`)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.values().items())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.values() == self.values()

    __hash__ = None  # type: ignore[assignment]


@dataclass
class GroupField(_Attribute):
    """An OptionGroup placed on a program class (see OptionGroup.include)."""

    group: type[OptionGroup]
    prefix: str = ""
    attr: str = ""
    about: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    also_env: dict[str, tuple[str, ...]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    omit: frozenset[str] = frozenset()

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    @property
    def under(self) -> str:
        return self.prefix.replace("-", "_")

    def name_of(self, attr: str) -> str:
        """The name the group's (flattened) option `attr` has where it is included."""
        return self.under + self.names.get(attr, attr)

    def make(self, values: Mapping[tuple[str, ...], Any]) -> Any:
        """The group's object from its options' values (keyed by their path
        in the group), spelled in messages as this include names them."""
        renamed = {o.attr: self.names.get(o.attr, o.attr) for o in self.group.options()}
        return build_group(
            self.group, values, prefix=self.under, renamed=renamed, defaults=self.defaults
        )

    def expand(self) -> list[Option]:
        """The group's options as the program's own, named with the prefix.

        An option of a group inside the group keeps its path to the inner
        object (`hook.tls.ca_file`) and its inner name, prefixed again."""
        about = self.about or self.group.about
        return [
            dataclasses.replace(
                opt,
                name=self.under + self.names.get(opt.attr, opt.name),
                attr=self.under + self.names.get(opt.attr, opt.name),
                flag=None,
                env=None,
                default=self.defaults.get(opt.attr, opt.default),
                also_env=opt.also_env + self.also_env.get(opt.attr, ()),
                help=opt.help.replace("{about}", about),
                group=(self.attr, opt.attr),
                path=(self.attr, *(opt.path or (opt.attr,))),
                _extra=dict(opt._extra),
            )
            for opt in self.group.options()
            if opt.attr not in self.omit
        ]


def collect_options(cls: type) -> list[Option]:
    """All options of a class and its bases, base options first; an
    OptionGroup placed on the class contributes its options where it stands."""
    seen: dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        hints = getattr(klass, "__annotations__", {})
        for name, value in vars(klass).items():
            if isinstance(value, Option):
                value.name = value.name or name
                value.attr = value.attr or name
                if value.annotation is None:
                    value.annotation = hints.get(name, str)
                seen.pop(name, None)
                seen[name] = value
            elif isinstance(value, GroupField):
                value.attr = value.attr or name
                for opt in value.expand():
                    seen.pop(opt.name, None)
                    seen[opt.name] = opt
    return list(seen.values())


def assign(target: Any, options: list[Option], values: Mapping[str, Any]) -> None:
    """Set each option's value on the program; a group's values as one object,
    whose check() runs once it is complete."""
    groups: dict[str, dict[tuple[str, ...], Any]] = {}
    for opt in options:
        if not opt.path:
            setattr(target, opt.attr, values[opt.name])
        else:
            groups.setdefault(opt.path[0], {})[opt.path[1:]] = values[opt.name]
    for attr, group_values in groups.items():
        setattr(target, attr, getattr(type(target), attr).make(group_values))


def group_fields(cls: type) -> dict[str, GroupField]:
    """The groups placed inside a group class, by attribute."""
    out: dict[str, GroupField] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if isinstance(value, GroupField):
                out[name] = value
    return out


def build_group(
    cls: type[G],
    values: Mapping[tuple[str, ...], Any],
    *,
    prefix: str = "",
    renamed: Mapping[str, str] | None = None,
    where: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> G:
    """The group object from its options' values, keyed by their path in it
    (`("tls", "ca_file")`), with the groups inside it built first and every
    group's check() run, innermost first. `prefix` and `renamed` (flattened
    attribute -> name) say how the options are spelled where the group is
    used, so an inner group's check() names the outer-prefixed flag. An option
    left out (include(omit=...)) takes `defaults` or its own default."""
    renamed = dict(renamed or {})
    full = dict(values)
    for opt in cls.options():
        key = opt.path or (opt.attr,)
        if key not in full:
            default = (defaults or {}).get(opt.attr, opt.default)
            full[key] = default_value(opt, default, f"default of {opt.attr}")
    direct: dict[str, Any] = {}
    inner: dict[str, dict[tuple[str, ...], Any]] = {}
    for key, value in full.items():
        if len(key) == 1:
            direct[key[0]] = value
        else:
            inner.setdefault(key[0], {})[key[1:]] = value
    for attr, fld in group_fields(cls).items():
        # an inner option's name where the outer group is used: the inner
        # include's prefix and names, then the outer's renames
        names = {o.attr: fld.name_of(o.attr) for o in fld.group.options()}
        names = {a: renamed.get(n, n) for a, n in names.items()}
        direct[attr] = build_group(
            fld.group,
            inner.get(attr, {}),
            prefix=prefix,
            renamed=names,
            where=where,
            defaults=fld.defaults,
        )
    obj = cls(**direct)
    obj._prefix = prefix
    obj._renamed = renamed
    if where is not None:
        obj._where = where
    obj.check()
    return obj


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter sized without shutil: argparse imports shutil (and
    with it bz2, lzma, zlib: ~1 MB of RSS) for every parser it builds, only
    to ask for the terminal's width."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size() finds it: $COLUMNS,
    then standard output's terminal, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(1).columns or 80
    except OSError:
        return 80


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(
    prog: str,
    description: str,
    options: list[Option],
    examples: str = "",
    defaults: Mapping[str, str] | None = None,
) -> argparse.ArgumentParser:
    """The argparse parser; `examples` becomes an EXAMPLES section, `defaults`
    shows a default that lives elsewhere than the option (the class's
    default_admin_addr)."""
    epilog = (
        "examples:\n" + "\n".join("  " + line for line in examples.strip("\n").splitlines())
        if examples.strip()
        else None
    )
    parser = _Parser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=_Formatter,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,
    )
    common = parser.add_argument_group("common options")
    for opt in options:
        if opt.config_only:
            continue
        kind = opt.resolve_kind()
        default_txt = "" if opt.default is _MISSING or opt.default is None else opt.default
        default_txt = (defaults or {}).get(opt.name, default_txt)
        help_txt = opt.help
        if opt.required:
            help_txt += " (required)"
        if opt.choices is not None and kind != "bool":
            help_txt += f" (one of: {', '.join(map(str, opt.choices))})"
        if default_txt != "" and kind != "bool":
            help_txt += f" (default: {default_txt})"
        help_txt += f" [env {' or '.join((opt.env_name, *opt.also_env))}]"
        help_txt = help_txt.replace("%", "%%")
        group = common if getattr(opt, "_common", False) else parser
        if opt.positional:
            group.add_argument(
                opt.name,
                nargs="*" if opt.repeat else ("?" if not opt.required else None),
                help=help_txt,
                metavar=opt.metavar or opt.name.upper(),
            )
            continue
        names = [opt.flag_name] + ([opt.short] if opt.short else [])
        if kind == "bool":
            group.add_argument(
                *names,
                dest=opt.name,
                nargs="?",
                const="true",
                metavar="BOOL",
                help=help_txt,
            )
        elif opt.repeat:
            group.add_argument(
                *names, dest=opt.name, action="append", help=help_txt, metavar=opt.metavar
            )
        else:
            group.add_argument(*names, dest=opt.name, help=help_txt, metavar=opt.metavar)
    return parser


_BOOL_WORDS = frozenset(("1", "true", "yes", "on", "y", "0", "false", "no", "off", "n"))


def bind_bool_values(argv: Sequence[str], options: list[Option]) -> list[str]:
    """Keep a bare boolean flag from swallowing the positional argument after it.

    Boolean flags take an optional value (`--insecure false`), so argparse would
    read `--insecure https://host` as `--insecure=https://host`. A bare flag
    followed by anything that is not a boolean word becomes `--flag=true`; only
    for programs with positional arguments (elsewhere `--flag maybe` stays an
    error naming the flag).
    """
    if not any(opt.positional for opt in options):
        return list(argv)
    names = set()
    for opt in options:
        if not opt.config_only and not opt.positional and opt.resolve_kind() == "bool":
            names.add(opt.flag_name)
            if opt.short:
                names.add(opt.short)
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--":
            break
        nxt = out[i + 1]
        if arg in names and not nxt.startswith("-") and nxt.strip().lower() not in _BOOL_WORDS:
            out[i] = arg + "=true"
    return out


def load_yaml(path: str, flag: str) -> Any:
    """The data of a YAML file a flag or config key names; a one-line UsageError
    (flag, file, line, problem) when it cannot be read or parsed. One reader for
    every config file: podkit.configfile (duplicate keys refused, lines kept)."""
    from .configfile import load

    return load(path, flag).data


def load_config_file(path: str) -> dict[str, Any]:
    data = load_yaml(path, "--config")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping at the top level")
    return data


def resolve(
    options: list[Option],
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config: Mapping[str, Any],
    config_path: str | None,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    """Merge the four sources into one value per option, converting each.

    With `errors`, every problem is appended there and resolving goes on
    (`--check-config` lists them all); without, the first one raises."""
    by_key = {}
    for opt in options:
        by_key[opt.config_key] = opt
        by_key[opt.name] = opt
    for key in config:
        if key not in by_key:
            problem = UsageError(f"--config {config_path}: unknown setting {key!r}")
            if errors is None:
                raise problem
            errors.append(str(problem))
    values: dict[str, Any] = {}
    for opt in options:
        try:
            values[opt.name] = _resolve_one(opt, flags, env, config, config_path)
        except UsageError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            values[opt.name] = None
    return values


def _resolve_one(
    opt: Option,
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config: Mapping[str, Any],
    config_path: str | None,
) -> Any:
    """One option's value: flag > env > config file > default."""
    if opt.name in flags:
        raw, source = flags[opt.name], opt.flag_name if not opt.positional else opt.name
        if opt.positional and opt.repeat and raw == []:
            raw = _MISSING
    else:
        raw, source = _MISSING, ""
    if raw is _MISSING and not opt.config_only:
        for name in (opt.env_name, *opt.also_env):
            if name in env:
                raw, source = env[name], name
                break
    if raw is _MISSING:
        for key in (opt.config_key, opt.name):
            if key in config:
                raw, source = config[key], f"--config {config_path}: {key}"
                break
    if raw is _MISSING:
        if opt.required:
            what = opt.flag_name if not opt.positional else opt.name.upper()
            raise UsageError(f"{what} is required [env {opt.env_name}]")
        return default_value(opt, opt.default, f"default of {opt.flag_name}")
    return opt.convert(raw, source)


def default_value(opt: Option, default: Any, source: str) -> Any:
    """An option's default as a value: text ("5s", "16MiB") converted and
    checked like any other source; no default is None (or [] when repeated)."""
    if default is _MISSING:
        default = [] if opt.repeat else None
    if isinstance(default, str | int | float) and not isinstance(default, bool):
        return opt.convert(default, source)
    return default
