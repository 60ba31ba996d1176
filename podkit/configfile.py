"""One reader for YAML configuration files, with errors that name file, line and key.

A program's config file (a statsd_exporter mapping file, a json_exporter
`modules:` file, ...) is read here once: `load(path, flag)` returns a
ConfigFile with the data as plain dicts, lists and scalars, and the line of
every key and list item (PyYAML's node marks). Code that checks the data
keeps raising UsageError("<key path>: <problem>") with key paths relative to
the file's top (`mappings[2].summary_options.max_age`), inside
`with cfg.located():`, which turns each into

    --statsd-mapping /etc/mapping.yml:14: mappings[2].summary_options.max_age: <problem>

(a message naming several keys, "a.x and a.y: <problem>", gets the line of
the first).

so a user reading the message goes straight to the line. A key given twice in
one mapping is an error (PyYAML silently keeps the last; Go's yaml.v2 in
strict mode, which statsd_exporter and json_exporter use, refuses it). Syntax
errors name line and column.

Contract: `load` raises UsageError only (unreadable file, bad YAML, duplicate
key); `located` re-raises any UsageError raised inside it, located when its
message starts with a key path, else prefixed with flag and file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from podkit.options import OptionGroup, UsageError, build_group, default_value

G = TypeVar("G", bound=OptionGroup)

Key = tuple[str | int, ...]

#: A key path as check code writes it: `a.b[0].c`, optionally with a leading `.`.
_KEYPATH = re.compile(r"\.?(?:[^.\[\]:\s]+|\[\d+\])(?:\.[^.\[\]:\s]+|\[\d+\])*|")
_PART = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")


def parse_keypath(text: str) -> Key:
    """`mappings[2].labels.code` → ("mappings", 2, "labels", "code")."""
    return tuple(int(i) if i else name for i, name in _PART.findall(text))


def format_keypath(key: Key) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class ConfigFile:
    """A loaded YAML file: `data`, and the line of each key path in it."""

    def __init__(self, path: str, flag: str, data: Any, lines: dict[Key, int]) -> None:
        self.path = path
        self.flag = flag
        self.data = data
        self.lines = lines

    def line(self, key: Key | str) -> int | None:
        """Line of the key (1-based), or of its nearest ancestor the file has."""
        k = parse_keypath(key) if isinstance(key, str) else key
        while k:
            if k in self.lines:
                return self.lines[k]
            k = k[:-1]
        return self.lines.get(())

    def describe(self, key: Key | str, problem: str) -> str:
        """`flag file:line: key: problem`, for errors and warnings alike."""
        k = parse_keypath(key) if isinstance(key, str) else key
        line = self.line(k)
        where = f"{self.flag} {self.path}" + (f":{line}" if line else "")
        name = format_keypath(k)
        return f"{where}: {name}: {problem}" if name else f"{where}: {problem}"

    def error(self, key: Key | str, problem: str) -> UsageError:
        """A UsageError naming flag, file, line and key."""
        return UsageError(self.describe(key, problem))

    @contextmanager
    def located(self) -> Iterator[None]:
        """Turn UsageError("<key path>: <problem>") raised inside into one that
        names the file and line too."""
        try:
            yield
        except UsageError as exc:
            msg = str(exc)
            keypath, sep, problem = msg.partition(": ")
            if sep and _KEYPATH.fullmatch(keypath):
                raise self.error(keypath, problem) from None
            # A rule over several keys ("a.x and a.y: give both"): the first one's line.
            first = keypath.split(" ", 1)[0]
            line = self.lines.get(parse_keypath(first)) if sep and " " in keypath else None
            where = f"{self.path}:{line}" if line else self.path
            raise UsageError(f"{self.flag} {where}: {msg}") from None


def _walk(node: Any, key: Key, lines: dict[Key, int], path: str, flag: str) -> None:
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for k, v in node.value:
            line = k.start_mark.line + 1
            name = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            if name == "<<":  # a merge key: its mappings' keys are this mapping's
                _walk(v, key, lines, path, flag)
                continue
            if name in seen:
                raise UsageError(
                    f"{flag} {path}:{line}: {format_keypath((*key, name))}: given twice "
                    f"(first on line {seen[name]})"
                )
            seen[name] = line
            lines[(*key, name)] = line
            _walk(v, (*key, name), lines, path, flag)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*key, i)] = item.start_mark.line + 1
            _walk(item, (*key, i), lines, path, flag)


def load(path: str, flag: str) -> ConfigFile:
    """Read and parse the YAML file `path` that `flag` names (UsageError on failure)."""
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"{flag} {path}: cannot read: {why or exc}") from None
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        lines: dict[Key, int] = {}
        if node is not None:
            lines[()] = node.start_mark.line + 1
            _walk(node, (), lines, path, flag)
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        context = getattr(exc, "context", None)
        raise UsageError(
            f"{flag} {path}{where}: {problem}" + (f" ({context})" if context else "")
        ) from None
    finally:
        loader.dispose()
    return ConfigFile(path, flag, data, lines)


def fill_group(
    group: type[G],
    data: Mapping[str, Any],
    where: str = "",
    *,
    prefix: str = "",
    defaults: Mapping[str, Any] | None = None,
    base_dir: str | None = None,
) -> G:
    """An option group's values from a mapping of a config file: what
    `OptionGroup.from_mapping` does (see there)."""
    unknown = set(defaults or {}) - {opt.attr for opt in group.options()}
    if unknown:
        raise TypeError(f"{group.__name__}.from_mapping: no options {sorted(unknown)}")
    values: dict[tuple[str, ...], Any] = {}
    for opt in group.options():
        key = prefix + opt.attr
        raw = data.get(key, data.get(key.replace("_", "-")))
        source = f"{where}.{key}" if where else key
        path = opt.path or (opt.attr,)
        if raw is None:
            default = (defaults or {}).get(opt.attr, opt.default)
            values[path] = default_value(opt, default, source + " (default)")
            continue
        if opt.repeat and not isinstance(raw, list | tuple):
            raw = [raw]
        value = opt.convert(raw, source)
        if base_dir and opt.resolve_kind() == "path" and not os.path.isabs(value):
            value = os.path.join(base_dir, value)
        values[path] = value
    # a group inside the group is built and checked first, its keys named
    # as this mapping spells them
    return build_group(group, values, prefix=prefix, where=where)
