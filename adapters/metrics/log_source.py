"""The log source: follow log files with the core tailer and turn lines into metrics.

Each rule is a regular expression with named groups; a matching line
increments a counter (by 1, or by the `value` group), sets a gauge or
observes a histogram, labelled from named groups. Every rule sees every
line (as in mtail). Files are followed by podkit.tailer (checkpoints,
rotation, truncation), and a chunk is acknowledged only after its lines are
counted, so with `state_dir` a restart neither loses nor double-counts lines
beyond the last checkpoint interval.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections.abc import Callable
from typing import Any

from podkit import UsageError
from podkit.aio import wait_for
from podkit.multiline import MultilineOptions
from podkit.tailer.config import TailingOptions

from .series import COUNTER, GAUGE, HISTOGRAM
from .sources import Cfg, Emit, Source, register
from .store import DEFAULT_BUCKETS, Conflict, Store, label_allowed, parse_buckets, valid_name

#: The tailer's settings (path, exclude, state_dir, read_from, poll_interval,
#: follow_symlinks, max_line_bytes, ...) are TailingOptions' keys and the joining
#: ones MultilineOptions' under `multiline_`: declared once, with the flags of
#: logship and logformat, defaults and checks included.
SOURCE_KEYS = (
    "type",
    "name",
    "rules",
    "grok_patterns_file",
    "multiline",
    "format",
    *TailingOptions.keys(),
    *MultilineOptions.keys("multiline_"),
)
RULE_KEYS = (
    "match",
    "when",
    "counter",
    "gauge",
    "histogram",
    "labels",
    "value",
    "scale",
    "buckets",
    "help",
    "ttl",
    "timestamp",
    "timestamp_format",
)


class Rule:
    __slots__ = (
        "buckets",
        "cache",
        "family",
        "groups",
        "help",
        "kind",
        "labelnames",
        "matches",
        "metric",
        "regex",
        "scale",
        "search",
        "ts_group",
        "ts_parse",
        "ttl",
        "value_group",
        "when",
    )

    def __init__(
        self, cfg: Cfg, grok_patterns: dict[str, str] | None = None, fields: bool = False
    ) -> None:
        """`fields`: the source parses each line with a `format`, so labels,
        value and when may name the parsed record's fields, and match is
        optional (without it every parsed line is a match)."""
        cfg.check_keys(RULE_KEYS)
        match = cfg.text("match", required=not fields)
        try:
            self.regex = re.compile(
                ""
                if match is None
                else _grok_regex(cfg, match, grok_patterns)
                if "%{" in match
                else match
            )
        except re.error as exc:
            raise cfg.err("match", f"invalid regex: {exc}") from None
        self.search = self.regex.search
        kinds = [k for k in (COUNTER, GAUGE, HISTOGRAM) if cfg.has(k)]
        if len(kinds) != 1:
            raise UsageError(f"{cfg.where}: give exactly one of counter, gauge, histogram")
        self.kind = kinds[0]
        self.metric = cfg.text(self.kind)
        if not valid_name(self.metric):
            raise cfg.err(self.kind, f"{self.metric!r} is not a valid metric name")
        groups: Any = set(self.regex.groupindex) if not fields else _Anything()
        raw_labels = cfg.get("labels", [])
        if isinstance(raw_labels, list):
            pairs = [(str(g), str(g)) for g in raw_labels]
        elif isinstance(raw_labels, dict):
            pairs = [(str(k), str(v)) for k, v in raw_labels.items()]
        else:
            raise cfg.err("labels", "expected a list of group names or {label: group}")
        for label, group in pairs:
            if group not in groups:
                raise cfg.err("labels", f"{group!r} is not a named group of match")
            if not label_allowed(label, self.kind):
                raise cfg.err("labels", f"{label!r} cannot be a label name here")
        pairs.sort()
        self.labelnames = tuple(p[0] for p in pairs)
        self.groups = tuple(p[1] for p in pairs)
        self.value_group = cfg.text("value")
        if self.value_group is not None and self.value_group not in groups:
            raise cfg.err("value", f"{self.value_group!r} is not a named group of match")
        if self.kind != COUNTER and self.value_group is None:
            raise cfg.err("value", f"a {self.kind} needs the named group holding its value")
        self.scale = cfg.number("scale", 1.0)
        self.buckets = DEFAULT_BUCKETS
        if cfg.has("buckets"):
            try:
                self.buckets = parse_buckets(cfg.get("buckets"))
            except ValueError as exc:
                raise cfg.err("buckets", str(exc)) from None
        self.when = _conditions(cfg, groups)
        self.ts_group = cfg.text("timestamp")
        if self.ts_group is not None and self.ts_group not in groups:
            raise cfg.err("timestamp", f"{self.ts_group!r} is not a named group of match")
        ts_format = cfg.text("timestamp_format")
        if ts_format is not None and self.ts_group is None:
            raise cfg.err("timestamp_format", "needs timestamp: (the group holding the time)")
        self.ts_parse = timestamp_parser(cfg, ts_format) if self.ts_group is not None else None
        self.help = cfg.text("help", "")
        self.ttl = cfg.duration("ttl", 0.0)
        self.cache: dict[tuple[str | None, ...], Any] = {}
        self.family: Any = None
        self.matches = 0


class _Anything:
    """Every name is a field of a parsed record (known only at run time)."""

    def __contains__(self, name: object) -> bool:
        return True


class _Fields:
    """A rule's match over a parsed record: a named group of `match` if it
    took part, else the record's field of that name (as text)."""

    __slots__ = ("m", "rec")

    def __init__(self, rec: dict[str, Any], m: re.Match[str]) -> None:
        self.rec = rec
        self.m = m

    def _one(self, name: str) -> str | None:
        v = self.m.groupdict().get(name)
        if v is not None:
            return v
        v = self.rec.get(name)
        if v is None or isinstance(v, dict | list):
            return None
        return str(v)

    def group(self, *names: str) -> Any:
        if len(names) == 1:
            return self._one(names[0])
        return tuple(self._one(n) for n in names)


_WHEN = re.compile(r"\s*(\w+)\s*(==|!=|<=|>=|<|>|=~|!~)\s*(.+?)\s*$")
_OPS: dict[str, Any] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _conditions(cfg: Cfg, groups: set[str]) -> Any:
    """`when:` (one condition or a list, all must hold) on a rule's captures:
    `GROUP OP VALUE` with ==, !=, <, <=, >, >= (numbers compare as numbers,
    anything else as text) or =~, !~ (a regex). A match whose captures fail
    it is not counted. None when the rule has no condition."""
    raw = cfg.get("when")
    if raw is None:
        return None
    items = raw if isinstance(raw, list) else [raw]
    tests = []
    for item in items:
        m = _WHEN.fullmatch(str(item))
        if m is None:
            raise cfg.err(
                "when", f"{item!r}: expected GROUP OP VALUE (==, !=, <, <=, >, >=, =~, !~)"
            )
        group, op, want = m.groups()
        if group not in groups:
            raise cfg.err("when", f"{group!r} is not a named group of match")
        if len(want) >= 2 and want[0] == want[-1] and want[0] in "'\"":
            want = want[1:-1]
        if op in ("=~", "!~"):
            try:
                rx = re.compile(want)
            except re.error as exc:
                raise cfg.err("when", f"{want!r}: {exc}") from None
            tests.append(_regex_test(group, rx, op == "=~"))
            continue
        try:
            number: float | None = float(want)
        except ValueError:
            number = None
        tests.append(_compare_test(group, _OPS[op], want, number))

    def holds(m: re.Match[str]) -> bool:
        return all(t(m) for t in tests)

    return holds


def _regex_test(group: str, rx: re.Pattern[str], positive: bool) -> Any:
    def test(m: re.Match[str]) -> bool:
        value = m.group(group)
        return value is not None and (rx.search(value) is not None) == positive

    return test


def _compare_test(group: str, op: Any, want: str, number: float | None) -> Any:
    def test(m: re.Match[str]) -> bool:
        value = m.group(group)
        if value is None:
            return False
        if number is not None:
            try:
                return bool(op(float(value), number))
            except ValueError:
                return False
        return bool(op(value, want))

    return test


def timestamp_parser(cfg: Cfg, fmt: str | None) -> Callable[[str], float | None]:
    """Text → unix seconds, or None when it is not a time. `fmt`: strptime
    directives or unix / unix_ms / unix_us / unix_ns, as logformat's
    --time-format (the same converter, podkit.logparse.timeparse); without
    it ISO 8601 / RFC 3339 and epoch numbers are recognised. A time without a
    zone is UTC."""
    import calendar

    from podkit.logparse.timeparse import Clock

    if fmt is not None and not (fmt in ("unix", "unix_ms", "unix_us", "unix_ns") or "%" in fmt):
        raise cfg.err(
            "timestamp_format", f"{fmt!r}: expected strptime directives or unix, unix_ms, ..."
        )
    clock = Clock(time_format=fmt)
    # The converter answers RFC 3339 UTC; consecutive lines share their second.
    last: list[Any] = ["", 0]

    def parse(text: str) -> float | None:
        rfc = clock.any(text)
        if rfc is None:
            return None
        if rfc[:19] != last[0]:
            last[0] = rfc[:19]
            ymd = (int(rfc[0:4]), int(rfc[5:7]), int(rfc[8:10]))
            hms = (int(rfc[11:13]), int(rfc[14:16]), int(rfc[17:19]))
            last[1] = calendar.timegm((*ymd, *hms, 0, 0, 0))
        return float(last[1] + (float(rfc[19:-1]) if rfc[19] == "." else 0.0))

    return parse


def _grok_regex(cfg: Cfg, expression: str, patterns: dict[str, str] | None) -> str:
    """A grok `match` (`%{COMBINEDAPACHELOG}`, the same library and compiler as
    logformat's `grok:` format) as a regex whose named groups are its fields,
    so `labels` and `value` name grok fields as they name regex groups."""
    from podkit.grok import GrokError, compile_grok

    try:
        grok = compile_grok(expression, patterns)
    except GrokError as exc:
        raise cfg.err("match", str(exc)) from None
    source = grok.source
    seen: set[str] = set()
    for capture in grok.captures:
        name = re.sub(r"\W", "_", capture.name)
        if name in seen:
            raise cfg.err("match", f"grok field {capture.name!r} is captured twice")
        seen.add(name)
        source = source.replace(f"(?P<{capture.group}>", f"(?P<{name}>", 1)
    return source


@register
class LogSource(Source):
    type = "log"

    def __init__(self, cfg: Cfg, store: Store, log: Any) -> None:
        super().__init__(cfg, store, log)
        cfg.check_keys(SOURCE_KEYS)
        raw = cfg.get("path")
        if isinstance(raw, str):
            self.paths = [raw]
        elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
            self.paths = list(raw)
        else:
            raise cfg.err("path", "required: a glob or a list of globs")
        if cfg.base_dir:
            self.paths = [os.path.join(cfg.base_dir, p) for p in self.paths]
        # Without state_dir a log source keeps no checkpoints (it counts from
        # read_from again after a restart): the one default that differs here.
        data = {**cfg.data, "path": self.paths}
        self.tailing: TailingOptions = TailingOptions.from_mapping(
            data, cfg.where, defaults={"state_dir": None}, base_dir=cfg.base_dir
        )
        self.joining: MultilineOptions = MultilineOptions.from_mapping(
            data, cfg.where, prefix="multiline_"
        )
        # A stack trace is one record (podkit.stacktrace, logformat's modes):
        # rules then see the whole trace, not its frames one by one.
        self.multiline = cfg.text("multiline")
        self.multiline_start: str | None = self.joining.start
        if self.multiline is not None:
            from podkit.stacktrace import start_pattern

            if self.joining.start is not None:
                raise cfg.err("multiline", "give multiline or multiline_start, not both")
            try:
                self.multiline_start = start_pattern(self.multiline)
            except ValueError as exc:
                raise cfg.err("multiline", str(exc)) from None
        rules = cfg.list("rules", required=True)
        if not rules:
            raise cfg.err("rules", "at least one rule is needed")
        patterns_file = cfg.path("grok_patterns_file")
        patterns: dict[str, str] | None = None
        if patterns_file:
            from podkit.grok import GrokError, load_patterns

            try:
                patterns = load_patterns(patterns_file)
            except (OSError, GrokError) as exc:
                raise cfg.err("grok_patterns_file", str(exc)) from None
        # format: the lines are parsed as logformat parses them (podkit.logparse),
        # and the rules can use the record's fields.
        self.format = cfg.text("format")
        self.parser: Any = None
        if self.format is not None:
            from podkit.logparse.parsers import Settings, create
            from podkit.logparse.timeparse import Clock

            try:
                self.parser = create(self.format, Clock(), Settings(grok_patterns=patterns or {}))
            except ValueError as exc:
                raise cfg.err("format", str(exc)) from None
        self.rules = [
            Rule(cfg.sub(f"rules[{i}]", r), patterns, fields=self.parser is not None)
            for i, r in enumerate(rules)
        ]
        self.name = self.name or f"log {','.join(self.paths)}"
        self.lines = 0
        self.errors = {"bad_value": 0, "bad_timestamp": 0, "conflict": 0, "parse_error": 0}
        self._gen = -1
        self._tailer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._failed: str | None = None

    async def start(self) -> None:
        from podkit.tailer import Tailer

        self._tailer = Tailer(
            self.tailing.config(self.joining, multiline_start=self.multiline_start)
        )
        await self._tailer.start()
        self._task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        tailer = self._tailer
        try:
            async for chunk in tailer.chunks():
                self.process(chunk.texts)
                tailer.ack(chunk)
        except Exception as exc:  # a bug here must show, not silently stop counting
            self._failed = f"log source stopped: {exc}"
            self.log.exception("log source failed", extra={"source": self.name})

    def process(self, texts: list[str]) -> None:
        """Apply every rule to every line (the hot path)."""
        store = self.store
        if self._gen != store.generation:
            for rule in self.rules:
                rule.cache.clear()
                rule.family = None
            self._gen = store.generation
        now = store.now = time.monotonic()
        records: list[dict[str, Any] | None] | None = None
        if self.parser is not None:
            parse, source = self.parser.parse, self.name
            records = [parse(text, source) for text in texts]
            self.errors["parse_error"] += records.count(None)
        for rule in self.rules:
            search = rule.search
            cache = rule.cache
            groups = rule.groups
            vgroup = rule.value_group
            kind = rule.kind
            scale = rule.scale
            when = rule.when
            stamp = rule.ts_parse
            hits = 0
            for i, text in enumerate(texts):
                m: Any = search(text)
                if m is not None and records is not None:
                    rec = records[i]
                    m = None if rec is None else _Fields(rec, m)
                if m is None or (when is not None and not when(m)):
                    continue
                hits += 1
                lv = (
                    m.group(*groups) if len(groups) > 1 else (m.group(groups[0]),) if groups else ()
                )
                s = cache.get(lv)
                if s is None:
                    s = self._series(rule, lv, now)
                    if s is None:
                        continue
                if vgroup is None:
                    s.value += 1.0
                else:
                    try:
                        v = float(m.group(vgroup)) * scale
                    except (TypeError, ValueError):
                        self.errors["bad_value"] += 1
                        continue
                    if kind == COUNTER:
                        if not 0.0 <= v < math.inf:  # NaN or inf would poison the counter
                            self.errors["bad_value"] += 1
                            continue
                        s.value += v
                    elif kind == GAUGE:
                        s.value = v
                    else:
                        s.observe(v)
                s.updated = now
                if stamp is not None:
                    self._stamp(rule, s, m)
            rule.matches += hits
        self.lines += len(texts)

    def _stamp(self, rule: Rule, s: Any, m: Any) -> None:
        """The line's own time as the series' sample timestamp; never backwards,
        since Prometheus refuses a series whose timestamp goes back."""
        assert rule.ts_parse is not None and rule.ts_group is not None
        if not rule.family.timestamps:
            return  # the family was created first by a rule without timestamps
        raw = m.group(rule.ts_group)
        t = rule.ts_parse(raw) if raw is not None else None
        if t is None:
            self.errors["bad_timestamp"] += 1
        elif s.ts is None or t > s.ts:
            s.ts = t

    def _series(self, rule: Rule, lv: tuple[str | None, ...], now: float) -> Any:
        if rule.family is None:
            try:
                rule.family = self.store.family(
                    rule.metric,
                    rule.kind,
                    rule.labelnames,
                    rule.help,
                    ttl=rule.ttl,
                    buckets=rule.buckets,
                    source=self.name,
                    timestamps=rule.ts_parse is not None,
                )
            except Conflict:
                self.errors["conflict"] += 1
                return None
        # A group that did not take part in the match labels as "".
        key = tuple(v if v is not None else "" for v in lv)
        s = rule.family.get(key, now)
        if s is not None:  # None: the store's series limit (counted there)
            rule.cache[lv] = s
        return s

    async def stop(self) -> None:
        if self._tailer is None:
            return
        try:
            await wait_for(self._tailer.drain(), timeout=5.0)
        except TimeoutError:
            pass
        if self._task is not None:
            try:
                await wait_for(self._task, timeout=5.0)
            except TimeoutError:
                self._task.cancel()
        await self._tailer.close()

    def health(self) -> str | None:
        return self._failed

    def own(self, emit: Emit) -> None:
        src = (self.name,)
        emit(
            "source_up",
            "gauge",
            "1 when the source's last read worked.",
            ("source",),
            src,
            0.0 if self._failed else 1.0,
        )
        emit("log_lines", "counter", "Log lines read.", ("source",), src, self.lines)
        for rule in self.rules:
            emit(
                "log_rule_matches",
                "counter",
                "Log lines each rule matched.",
                ("source", "metric"),
                (self.name, rule.metric),
                rule.matches,
            )
        for reason, n in self.errors.items():
            emit(
                "log_errors",
                "counter",
                "Rule matches not applied, by reason.",
                ("source", "reason"),
                (self.name, reason),
                n,
            )
        t = self._tailer
        if t is not None:
            emit(
                "log_lag_bytes",
                "gauge",
                "Bytes written to followed files but not counted yet.",
                ("source",),
                src,
                t.lag_bytes,
            )
            emit("log_files", "gauge", "Files followed.", ("source",), src, t.files_watched)
            for reason, n in t.skipped.items():
                emit(
                    "log_files_skipped",
                    "counter",
                    "Matched files not followed, by reason (see podkit.tailer.SKIP_REASONS).",
                    ("source", "reason"),
                    (self.name, reason),
                    n,
                )

    def status(self) -> dict[str, Any]:
        return {
            "type": "log",
            "name": self.name,
            "paths": self.paths,
            "lines": self.lines,
            "files": self._tailer.files_watched if self._tailer else 0,
            "skipped": self._tailer.skipped_files()[:100] if self._tailer else [],
        }
