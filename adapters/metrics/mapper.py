"""prometheus/statsd_exporter's mapping format, so users bring their existing files.

Every key statsd_exporter knows is either implemented or refused at start
(exit 2, naming it): COMPAT below is the list, and docs/metrics.md's table
is checked against it. Glob templates expand as statsd_exporter's
TemplateFormatter (`$1_foo` is one reference, to nothing; `${1}_foo`
suffixes), regex templates as Go's regexp.Expand. First matching rule wins,
in file order, every glob before any regex (globs by specificity when
`glob_disable_ordering: true`).
"""

from __future__ import annotations

import re
from typing import Any

from podkit import UsageError, configfile
from podkit.units import parse_duration

from .series import DEFAULT_QUANTILES, SummaryOptions
from .store import DEFAULT_BUCKETS, escape_name, parse_buckets

#: Every key statsd_exporter's mapping format knows (and podkit's
#: `drop_unmapped`), with what podkit does with it. docs/metrics.md has the
#: same table; tests/unit/test_metrics_compat.py checks that they agree and
#: that each status is true. A key not here is refused (exit 2), as
#: statsd_exporter's strict YAML loading refuses it.
IMPLEMENTED, DEPRECATED, REFUSED = "implemented", "deprecated", "refused"
COMPAT: dict[str, str] = {
    "mappings": IMPLEMENTED,
    "drop_unmapped": IMPLEMENTED,
    "defaults.observer_type": IMPLEMENTED,
    "defaults.match_type": IMPLEMENTED,
    "defaults.glob_disable_ordering": IMPLEMENTED,
    "defaults.ttl": IMPLEMENTED,
    "defaults.summary_options": IMPLEMENTED,
    "defaults.histogram_options": IMPLEMENTED,
    "defaults.timer_type": DEPRECATED,
    "defaults.buckets": DEPRECATED,
    "defaults.quantiles": DEPRECATED,
    "match": IMPLEMENTED,
    "match_type": IMPLEMENTED,
    "name": IMPLEMENTED,
    "labels": IMPLEMENTED,
    "honor_labels": IMPLEMENTED,
    "help": IMPLEMENTED,
    "action": IMPLEMENTED,
    "match_metric_type": IMPLEMENTED,
    "observer_type": IMPLEMENTED,
    "ttl": IMPLEMENTED,
    "scale": IMPLEMENTED,
    "timer_type": DEPRECATED,
    "buckets": DEPRECATED,
    "quantiles": DEPRECATED,
    "summary_options": IMPLEMENTED,
    "summary_options.quantiles": IMPLEMENTED,
    "summary_options.max_age": IMPLEMENTED,
    "summary_options.age_buckets": IMPLEMENTED,
    "summary_options.buf_cap": IMPLEMENTED,
    "summary_options.max_summary_age": DEPRECATED,
    "summary_options.summary_age_buckets": DEPRECATED,
    "summary_options.stream_buffer_size": DEPRECATED,
    "histogram_options": IMPLEMENTED,
    "histogram_options.buckets": IMPLEMENTED,
    "histogram_options.native_histogram_bucket_factor": REFUSED,
    "histogram_options.native_histogram_max_buckets": REFUSED,
}
#: A deprecated key and the key that replaced it: with both, the new one wins.
NEW_FORM = {
    "timer_type": "observer_type",
    "buckets": "histogram_options.buckets",
    "quantiles": "summary_options.quantiles",
    "max_summary_age": "max_age",
    "summary_age_buckets": "age_buckets",
    "stream_buffer_size": "buf_cap",
}
REFUSED_WHY = "native histograms are not supported by podkit; remove it"


def _keys(prefix: str) -> set[str]:
    n = len(prefix)
    return {k[n:] for k in COMPAT if k.startswith(prefix) and "." not in k[n:]}


TOP_KEYS = {"mappings", "defaults", "drop_unmapped"}
MAPPING_KEYS = _keys("") - {"mappings", "drop_unmapped"}
DEFAULT_KEYS = _keys("defaults.")
SUMMARY_KEYS = _keys("summary_options.")
HISTOGRAM_KEYS = _keys("histogram_options.")


def check_keys(d: dict[Any, Any], allowed: set[str], where: str, compat_prefix: str) -> None:
    """Refuse (exit 2, naming it) a key statsd_exporter does not know, or one
    podkit knows and does not implement: never accept and ignore."""
    for k in d:
        if k not in allowed:
            raise UsageError(f"{where}.{k}: unknown key")
        if COMPAT.get(compat_prefix + str(k)) == REFUSED:
            raise UsageError(f"{where}.{k}: {REFUSED_WHY}")


# statsd_exporter's own patterns (pkg/mapper/mapper.go): what a glob `match`
# may look like (`*` only as a whole dot-separated part).
_GLOB_MATCH = re.compile(r"(\*|[a-zA-Z_][a-zA-Z0-9_\-]*)(\.\*|\.[a-zA-Z0-9_][a-zA-Z0-9_\-]*)*\Z")
_METRIC_NAME = re.compile(r"([a-zA-Z_]|\$\{?\w+\}?)([a-zA-Z0-9_]|\$\{?\w+\}?)*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# The glob formatter's reference pattern (pkg/mapper/fsm/formatter.go): `$1_foo`
# is ONE reference, to "1_foo", which is no number, so it expands to nothing.
_GLOB_REF = re.compile(r"\$\{?([a-zA-Z0-9_$]+)\}?")
_GO_REF = re.compile(r"\$(\$|\{(\w+)\}|(\w+))")

# The statsd metric types, as match_metric_type names them.
COUNTER_T, GAUGE_T, OBSERVER_T, SET_T = "counter", "gauge", "observer", "set"


class GlobTemplate:
    """A name or label template of a glob mapping, expanded as statsd_exporter's
    TemplateFormatter does (pkg/mapper/fsm/formatter.go): each reference
    `$N`/`${N}` with 1 <= N <= the number of `*` becomes a hole for that
    capture, any other (`$0`, `$9` past the captures, `$1_foo`, `${name}`)
    becomes nothing. Go replaces every occurrence of a reference's text at
    once but records one capture per reference found, then fills the holes in
    order with fmt.Sprintf; the same here, down to Sprintf's `%!s(MISSING)`
    and `%!(EXTRA ...)` when the two counts differ."""

    __slots__ = ("indexes", "parts")

    def __init__(self, template: str, capture_count: int) -> None:
        text = template
        indexes: list[int] = []
        hole = "\x00"  # Go's `%s`; no YAML string holds a NUL
        for m in _GLOB_REF.finditer(template):
            ref = m.group(1)
            idx = int(ref) if ref.isdigit() else 0
            if 1 <= idx <= capture_count:
                text = text.replace(m.group(0), hole)
                indexes.append(idx - 1)
            else:
                text = text.replace(m.group(0), "")
        self.parts = text.split(hole)
        self.indexes = tuple(indexes)

    def format(self, captures: tuple[str, ...]) -> str:
        parts, indexes = self.parts, self.indexes
        if not indexes:
            return "%!s(MISSING)".join(parts)
        out = [parts[0]]
        for i, part in enumerate(parts[1:]):
            out.append(captures[indexes[i]] if i < len(indexes) else "%!s(MISSING)")
            out.append(part)
        extra = indexes[len(parts) - 1 :]
        if extra:
            out.append("%!(EXTRA " + ", ".join("string=" + captures[i] for i in extra) + ")")
        return "".join(out)


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


def _pick(d: dict[str, Any], new: str, old: str, where: str, warnings: list[str]) -> Any:
    """The value of `new`, or of its deprecated spelling `old`; with both, the
    new one wins (as statsd_exporter documented while it took both). An empty
    list counts as not given: `buckets: []` means the defaults' buckets."""
    nv, ov = d.get(new), d.get(old)
    if nv == []:
        nv = None
    if ov == []:
        ov = None
    if nv is not None and ov is not None:
        warnings.append(f"{where}: both {old} (deprecated) and {new} given; {new} wins")
    return nv if nv is not None else ov


def _observer(d: dict[str, Any], where: str, base: Options | None, warnings: list[str]) -> Options:
    obs = _pick(d, "observer_type", "timer_type", where, warnings)
    if not obs:
        obs = base.observer_type if base else "summary"
    if obs not in ("histogram", "summary"):
        raise UsageError(f"{where}.observer_type: {obs!r} is not histogram or summary")
    hopts = d.get("histogram_options") or {}
    if not isinstance(hopts, dict):
        raise UsageError(f"{where}.histogram_options: expected a mapping")
    check_keys(hopts, HISTOGRAM_KEYS, f"{where}.histogram_options", "histogram_options.")
    hb = "histogram_options.buckets"
    raw_buckets = _pick({hb: hopts.get("buckets"), **d}, hb, "buckets", where, warnings)
    buckets = base.buckets if base else DEFAULT_BUCKETS
    if raw_buckets is not None:
        buckets = _floats(raw_buckets, f"{where}.{hb}")
    sopts = d.get("summary_options") or {}
    if not isinstance(sopts, dict):
        raise UsageError(f"{where}.summary_options: expected a mapping")
    check_keys(sopts, SUMMARY_KEYS, f"{where}.summary_options", "summary_options.")
    bs = base.summary if base else SummaryOptions()
    sq = "summary_options.quantiles"
    raw_q = _pick({sq: sopts.get("quantiles"), **d}, sq, "quantiles", where, warnings)
    quantiles = _quantiles(raw_q, f"{where}.{sq}") if raw_q is not None else bs.quantiles
    sw = f"{where}.summary_options"
    raw_age = _pick(sopts, "max_age", "max_summary_age", sw, warnings)
    max_age = _duration(raw_age, f"{sw}.max_age") if raw_age else bs.max_age
    try:
        age_buckets = int(
            _pick(sopts, "age_buckets", "summary_age_buckets", sw, warnings) or bs.age_buckets
        )
        buf_cap = int(_pick(sopts, "buf_cap", "stream_buffer_size", sw, warnings) or bs.buf_cap)
    except (TypeError, ValueError):
        raise UsageError(f"{sw}: age buckets and buffer size are numbers") from None
    summary = SummaryOptions(quantiles or DEFAULT_QUANTILES, max_age or 600.0, age_buckets, buf_cap)
    ttl = _duration(d["ttl"], f"{where}.ttl") if d.get("ttl") is not None else None
    if ttl is None or (ttl == 0 and base is not None):
        ttl = base.ttl if base else 0.0
    return Options(obs, buckets, summary, ttl)


class Mapping:
    __slots__ = (
        "action",
        "honor_labels",
        "index",
        "label_templates",
        "labels",
        "match",
        "match_metric_type",
        "match_type",
        "name",
        "name_template",
        "opts",
        "parts",
        "regex",
        "scale",
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
        check_keys(raw, MAPPING_KEYS, where, "")
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
            # statsd_exporter wants a name even on a drop rule.
            raise UsageError(f"{where}: metric mapping didn't set a metric name")
        if not _METRIC_NAME.match(name):
            raise UsageError(f"{where}.name: {name!r} is not a valid metric name")
        self.name = name
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict):
            raise UsageError(f"{where}.labels: expected a mapping")
        for k in labels:
            if not isinstance(k, str) or not _LABEL_NAME.match(k) or k.startswith("__"):
                raise UsageError(f"{where}.labels: invalid label key {k!r}")
        self.labels = {k: str(v) for k, v in labels.items()}
        honor = raw.get("honor_labels", False)
        if not isinstance(honor, bool):
            raise UsageError(f"{where}.honor_labels: expected true or false")
        self.honor_labels = honor
        scale = raw.get("scale")
        if scale is not None:
            if isinstance(scale, bool) or not isinstance(scale, int | float):
                raise UsageError(f"{where}.scale: expected a number")
            scale = float(scale)
        self.scale: float | None = scale
        mmt = raw.get("match_metric_type")
        if mmt == "timer":
            mmt = OBSERVER_T
        if mmt not in (None, COUNTER_T, GAUGE_T, OBSERVER_T, SET_T):
            raise UsageError(
                f"{where}.match_metric_type: {mmt!r} is not counter, gauge or observer"
            )
        self.match_metric_type = mmt
        obs = raw.get("observer_type") or raw.get("timer_type")
        if obs == "histogram" and raw.get("summary_options") is not None:
            raise UsageError(f"{where}: cannot use histogram observer and summary options")
        if obs == "summary" and raw.get("histogram_options") is not None:
            raise UsageError(f"{where}: cannot use summary observer and histogram options")
        self.opts = _observer(raw, where, defaults, warnings)
        self.opts.help = str(raw.get("help") or "")
        self.parts: tuple[str, ...] = ()
        if self.match_type == "glob":
            if not _GLOB_MATCH.match(self.match):
                raise UsageError(f"{where}.match: invalid glob {self.match!r}")
            parts = self.match.split(".")
            self.parts = tuple(parts)
            pattern = r"\.".join("([^.]*)" if p == "*" else re.escape(p) for p in parts)
            self.regex = re.compile(pattern + r"\Z")
            captures = parts.count("*")
            self.name_template = GlobTemplate(name, captures)
            self.label_templates = {k: GlobTemplate(v, captures) for k, v in self.labels.items()}
        else:
            try:
                self.regex = re.compile(self.match)
            except re.error as exc:
                raise UsageError(f"{where}.match: invalid regex: {exc}") from None

    def apply(self, m: re.Match[str]) -> tuple[str, dict[str, str]]:
        if self.match_type == "glob":
            groups = m.groups()
            name = self.name_template.format(groups)
            labels = {k: t.format(groups) for k, t in self.label_templates.items()}
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
        check_keys(data, TOP_KEYS, where, "")
        raw_defaults = data.get("defaults") or {}
        if not isinstance(raw_defaults, dict):
            raise UsageError(f"{where}.defaults: expected a mapping")
        check_keys(raw_defaults, DEFAULT_KEYS, f"{where}.defaults", "defaults.")
        self.defaults = _observer(raw_defaults, f"{where}.defaults", None, self.warnings)
        match_type = raw_defaults.get("match_type") or "glob"
        if match_type not in ("glob", "regex"):
            raise UsageError(f"{where}.defaults.match_type: {match_type!r} is not glob or regex")
        ordering = raw_defaults.get("glob_disable_ordering", False)
        if not isinstance(ordering, bool):
            raise UsageError(f"{where}.defaults.glob_disable_ordering: expected true or false")
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
        if ordering:
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


def load_mapping_file(path: str, flag: str) -> Mapper:
    """A statsd_exporter mapping file; errors and warnings name file, line and key."""
    cfg = configfile.load(path, flag)
    with cfg.located():
        mapper = Mapper(cfg.data, "")
    mapper.warnings = [cfg.describe(*w.partition(": ")[::2]) for w in mapper.warnings]
    return mapper
