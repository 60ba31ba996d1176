"""prometheus/statsd_exporter's mapping format, so users bring their existing files.

Supported: `mappings` with glob (`*` = one dot-separated part) and regex
`match` (`match_type`), `name` and `labels` with `$1` / `${1}` (regex: Go's
Expand rules, so `$1x` is the group named `1x` and `${name}` a named group),
`action: map|drop`, `match_metric_type: counter|gauge|observer` (`timer`
accepted as the old spelling), `observer_type` / `timer_type`
`histogram|summary` with `histogram_options.buckets` or `buckets`,
`summary_options` (`quantiles`, `max_age`, `age_buckets`, `buf_cap`) or
`quantiles`, `ttl`, `help`, and a `defaults:` block (`observer_type`,
`match_type`, `glob_disable_ordering`, `ttl`, `buckets`, `quantiles`,
`histogram_options`, `summary_options`). First matching rule wins, in file
order (globs by specificity when `glob_disable_ordering: true`). Keys that
statsd_exporter knows but podkit does not implement (native-histogram
options, `scale`, ...) are accepted and reported as warnings.
"""

from __future__ import annotations

import re
from typing import Any

from podkit import UsageError
from podkit.options import load_yaml
from podkit.units import parse_duration

from .store import DEFAULT_BUCKETS, DEFAULT_QUANTILES, SummaryOptions, escape_name, parse_buckets

MAPPING_KEYS = {
    "match",
    "match_type",
    "name",
    "labels",
    "action",
    "match_metric_type",
    "observer_type",
    "timer_type",
    "buckets",
    "quantiles",
    "histogram_options",
    "summary_options",
    "ttl",
    "help",
}
DEFAULT_KEYS = {
    "observer_type",
    "timer_type",
    "match_type",
    "glob_disable_ordering",
    "ttl",
    "buckets",
    "quantiles",
    "histogram_options",
    "summary_options",
}
_KNOWN_UNSUPPORTED = {
    "native_histogram_bucket_factor",
    "native_histogram_max_buckets",
    "scale",
    "honor_labels",
}
_METRIC_NAME = re.compile(r"([a-zA-Z_]|\$\{?\w+\}?)([a-zA-Z0-9_]|\$\{?\w+\}?)*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_GLOB_PART = re.compile(r"[a-zA-Z0-9_*-]+\Z")
_GLOB_REF = re.compile(r"\$\{?(\d+)\}?")
_GO_REF = re.compile(r"\$(\$|\{(\w+)\}|(\w+))")

# The statsd metric types, as match_metric_type names them.
COUNTER_T, GAUGE_T, OBSERVER_T, SET_T = "counter", "gauge", "observer", "set"


def _expand_glob(template: str, groups: tuple[str, ...]) -> str:
    def sub(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return groups[i - 1] if 0 < i <= len(groups) else ""

    return _GLOB_REF.sub(sub, template)


def _expand_go(template: str, m: re.Match[str]) -> str:
    """Go's regexp.Expand: `$1x` means the group named `1x` (empty), not `$1` + x."""

    def sub(r: re.Match[str]) -> str:
        if r.group(1) == "$":
            return "$"
        ref = r.group(2) or r.group(3)
        try:
            if ref.isdigit():
                return m.group(int(ref)) or ""
            return m.group(ref) or ""
        except IndexError:  # no such group: Go expands it to nothing
            return ""

    return _GO_REF.sub(sub, template)


def _duration(value: Any, where: str) -> float:
    try:
        return parse_duration(value if not isinstance(value, int | float) else float(value))
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _floats(value: Any, where: str) -> tuple[float, ...]:
    try:
        return parse_buckets(value)
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None


def _quantiles(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise UsageError(f"{where}: expected a list of {{quantile, error}}")
    out = []
    for i, q in enumerate(value):
        raw = q.get("quantile") if isinstance(q, dict) else q
        try:
            f = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UsageError(f"{where}[{i}]: expected a quantile between 0 and 1") from None
        if not 0 <= f <= 1:
            raise UsageError(f"{where}[{i}]: quantile {f} is not between 0 and 1")
        out.append(f)
    return tuple(sorted(set(out)))


class Options:
    """The observer and ttl settings a mapping resolves to (or the defaults)."""

    __slots__ = ("buckets", "help", "observer_type", "summary", "ttl")

    def __init__(
        self, observer_type: str, buckets: tuple[float, ...], summary: SummaryOptions, ttl: float
    ) -> None:
        self.observer_type = observer_type
        self.buckets = buckets
        self.summary = summary
        self.ttl = ttl
        self.help = ""


def _observer(d: dict[str, Any], where: str, base: Options | None, warnings: list[str]) -> Options:
    obs = d.get("observer_type") or d.get("timer_type")
    if obs is None:
        obs = base.observer_type if base else "summary"
    if obs not in ("histogram", "summary"):
        raise UsageError(f"{where}.observer_type: {obs!r} is not histogram or summary")
    buckets = base.buckets if base else DEFAULT_BUCKETS
    hopts = d.get("histogram_options") or {}
    if not isinstance(hopts, dict):
        raise UsageError(f"{where}.histogram_options: expected a mapping")
    for k in hopts:
        if k != "buckets":
            warnings.append(f"{where}.histogram_options.{k}: not supported, ignored")
    if d.get("buckets") is not None and hopts.get("buckets") is not None:
        raise UsageError(f"{where}: buckets given both at the top and in histogram_options")
    if d.get("buckets") is not None:
        buckets = _floats(d["buckets"], f"{where}.buckets")
    elif hopts.get("buckets") is not None:
        buckets = _floats(hopts["buckets"], f"{where}.histogram_options.buckets")
    sopts = d.get("summary_options") or {}
    if not isinstance(sopts, dict):
        raise UsageError(f"{where}.summary_options: expected a mapping")
    bs = base.summary if base else SummaryOptions()
    quantiles = bs.quantiles
    if d.get("quantiles") is not None and sopts.get("quantiles") is not None:
        raise UsageError(f"{where}: quantiles given both at the top and in summary_options")
    if d.get("quantiles") is not None:
        quantiles = _quantiles(d["quantiles"], f"{where}.quantiles")
    elif sopts.get("quantiles") is not None:
        quantiles = _quantiles(sopts["quantiles"], f"{where}.summary_options.quantiles")
    # statsd_exporter has spelled these two ways over its versions; take both.
    raw_age = sopts.get("max_age") or sopts.get("max_summary_age")
    max_age = _duration(raw_age, f"{where}.summary_options.max_age") if raw_age else bs.max_age
    try:
        age_buckets = int(
            sopts.get("age_buckets") or sopts.get("summary_age_buckets") or bs.age_buckets
        )
        buf_cap = int(sopts.get("buf_cap") or sopts.get("stream_buffer_size") or bs.buf_cap)
    except (TypeError, ValueError):
        raise UsageError(
            f"{where}.summary_options: age buckets and buffer size are numbers"
        ) from None
    summary = SummaryOptions(quantiles or DEFAULT_QUANTILES, max_age or 600.0, age_buckets, buf_cap)
    ttl = _duration(d["ttl"], f"{where}.ttl") if d.get("ttl") is not None else None
    if ttl is None or (ttl == 0 and base is not None):
        ttl = base.ttl if base else 0.0
    return Options(obs, buckets, summary, ttl)


class Mapping:
    __slots__ = (
        "action",
        "index",
        "labels",
        "match",
        "match_metric_type",
        "match_type",
        "name",
        "opts",
        "parts",
        "regex",
    )

    def __init__(
        self,
        raw: Any,
        where: str,
        defaults: Options,
        default_match_type: str,
        warnings: list[str],
    ) -> None:
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: expected a mapping")
        for k in raw:
            if k not in MAPPING_KEYS:
                warnings.append(f"{where}.{k}: unknown key, ignored")
        self.match = raw.get("match")
        if not isinstance(self.match, str) or not self.match:
            raise UsageError(f"{where}.match: required")
        self.match_type = raw.get("match_type") or default_match_type
        if self.match_type not in ("glob", "regex"):
            raise UsageError(f"{where}.match_type: {self.match_type!r} is not glob or regex")
        self.action = raw.get("action") or "map"
        if self.action not in ("map", "drop"):
            raise UsageError(f"{where}.action: {self.action!r} is not map or drop")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            if self.action == "map":
                raise UsageError(f"{where}: metric mapping didn't set a metric name")
            name = "dropped"
        if self.action == "map" and not _METRIC_NAME.match(name):
            raise UsageError(f"{where}.name: {name!r} is not a valid metric name")
        self.name = name
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise UsageError(f"{where}.labels: expected a mapping")
        for k in labels:
            if not isinstance(k, str) or not _LABEL_NAME.match(k) or k.startswith("__"):
                raise UsageError(f"{where}.labels: invalid label key {k!r}")
        self.labels = {k: str(v) for k, v in labels.items()}
        mmt = raw.get("match_metric_type")
        if mmt == "timer":
            mmt = OBSERVER_T
        if mmt not in (None, COUNTER_T, GAUGE_T, OBSERVER_T, SET_T):
            raise UsageError(
                f"{where}.match_metric_type: {mmt!r} is not counter, gauge or observer"
            )
        self.match_metric_type = mmt
        obs = raw.get("observer_type") or raw.get("timer_type")
        if obs == "histogram" and raw.get("summary_options"):
            raise UsageError(f"{where}: cannot use histogram observer and summary options")
        if obs == "summary" and raw.get("histogram_options"):
            raise UsageError(f"{where}: cannot use summary observer and histogram options")
        self.opts = _observer(raw, where, defaults, warnings)
        self.opts.help = str(raw.get("help") or "")
        self.parts: tuple[str, ...] = ()
        if self.match_type == "glob":
            parts = self.match.split(".")
            if not all(_GLOB_PART.match(p) for p in parts):
                raise UsageError(f"{where}.match: invalid glob {self.match!r}")
            self.parts = tuple(parts)
            pattern = r"\.".join(re.escape(p).replace(r"\*", "([^.]*)") for p in parts)
            self.regex = re.compile(pattern + r"\Z")
        else:
            try:
                self.regex = re.compile(self.match)
            except re.error as exc:
                raise UsageError(f"{where}.match: invalid regex: {exc}") from None

    def apply(self, m: re.Match[str]) -> tuple[str, dict[str, str]]:
        if self.match_type == "glob":
            groups = m.groups()
            name = _expand_glob(self.name, groups)
            labels = {k: _expand_glob(v, groups) for k, v in self.labels.items()}
        else:
            name = _expand_go(self.name, m)
            labels = {k: _expand_go(v, m) for k, v in self.labels.items()}
        return escape_name(name), labels


class Mapper:
    """A loaded mapping file: `map(name, type)` -> (mapping or None, name, labels)."""

    def __init__(self, data: Any, where: str) -> None:
        self.warnings: list[str] = []
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a mapping with 'mappings:'")
        for k in data:
            if k not in ("mappings", "defaults", "drop_unmapped"):
                self.warnings.append(f"{where}.{k}: unknown key, ignored")
        raw_defaults = data.get("defaults") or {}
        if not isinstance(raw_defaults, dict):
            raise UsageError(f"{where}.defaults: expected a mapping")
        for k in raw_defaults:
            if k not in DEFAULT_KEYS:
                self.warnings.append(f"{where}.defaults.{k}: unknown key, ignored")
        self.defaults = _observer(raw_defaults, f"{where}.defaults", None, self.warnings)
        match_type = raw_defaults.get("match_type") or "glob"
        if match_type not in ("glob", "regex"):
            raise UsageError(f"{where}.defaults.match_type: {match_type!r} is not glob or regex")
        drop = data.get("drop_unmapped", False)
        if not isinstance(drop, bool):
            raise UsageError(f"{where}.drop_unmapped: expected true or false")
        self.drop_unmapped = drop
        raw = data.get("mappings") or []
        if not isinstance(raw, list):
            raise UsageError(f"{where}.mappings: expected a list")
        self.mappings = [
            Mapping(m, f"{where}.mappings[{i}]", self.defaults, match_type, self.warnings)
            for i, m in enumerate(raw)
        ]
        if raw_defaults.get("glob_disable_ordering"):
            # Without ordering, statsd_exporter's FSM prefers a literal part over
            # `*` at each position, left to right; a stable sort by that key
            # keeps file order among equally specific globs.
            globs = sorted(
                (m for m in self.mappings if m.match_type == "glob"),
                key=lambda m: tuple(p == "*" for p in m.parts),
            )
            self.mappings = globs + [m for m in self.mappings if m.match_type != "glob"]
        else:
            # statsd_exporter tries every glob (its FSM) before any regex.
            self.mappings = [m for m in self.mappings if m.match_type == "glob"] + [
                m for m in self.mappings if m.match_type != "glob"
            ]

    def map(self, name: str, mtype: str) -> tuple[Mapping | None, str, dict[str, str]]:
        for mp in self.mappings:
            if mp.match_metric_type is not None and mp.match_metric_type != mtype:
                continue
            m = mp.regex.match(name) if mp.match_type == "glob" else mp.regex.search(name)
            if m is None:
                continue
            new_name, labels = mp.apply(m)
            return mp, new_name, labels
        return None, escape_name(name), {}


def load_mapping_file(path: str, where: str) -> Mapper:
    return Mapper(load_yaml(path, where), f"{where} {path}")
