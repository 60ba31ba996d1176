"""StatsD's line format, as statsd_exporter reads it: `parse_line` turns one
line into its samples (name, tags in the four dialects, value, type, rate).

I/O-free and separate from the source, so the grammar can be tested on its
own (tests/unit/test_metrics_statsd.py) and read without the listeners; the
source calls it only on a parse-cache miss (the slow path).
"""

from __future__ import annotations

from .mapper import COUNTER_T, GAUGE_T, OBSERVER_T, SET_T

#: A line's type letter -> the mapper's metric type.
TYPES = {
    "c": COUNTER_T,
    "g": GAUGE_T,
    "ms": OBSERVER_T,
    "h": OBSERVER_T,
    "d": OBSERVER_T,
    "s": SET_T,
}


class BadLine(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _tags_kv(text: str, sep: str, out: dict[str, str], bad: list[int]) -> None:
    """Parse `k<sep>v,k2<sep>v2` into `out`. A tag without key or value is
    dropped and counted in `bad`; the line itself is kept (as statsd_exporter)."""
    for item in text.split(","):
        if item.startswith("#"):
            item = item[1:]
        k, s, v = item.partition(sep)
        if not s or not k or not v:
            bad[0] += 1
            continue
        out[k] = v


def parse_name(raw: str, bad: list[int]) -> tuple[str, dict[str, str]]:
    """Split the four tag dialects off a metric name (the part before ':')."""
    tags: dict[str, str] = {}
    start, end = raw.find("["), raw.find("]")
    if start >= 0 and end > start:  # SignalFX: tags in brackets anywhere in the name
        _tags_kv(raw[start + 1 : end], "=", tags, bad)
        return raw[:start] + raw[end + 1 :], tags
    if (start >= 0) != (end >= 0):
        bad[0] += 1  # one bracket only: the name stays as it is
        return raw, tags
    # InfluxDB (name,k=v,k2=v2) and Librato (name#k=v,k2=v2): whichever of
    # "," and "#" comes first starts the tags, as in statsd_exporter.
    cut = min((i for i in (raw.find(","), raw.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        _tags_kv(raw[cut + 1 :], "=", tags, bad)
        raw = raw[:cut]
    return raw, tags


class Parsed:
    """One sample of a line, fully parsed (slow path)."""

    __slots__ = ("name", "rate", "tags", "type", "value")

    def __init__(self, name: str, tags: dict[str, str], value: str, type: str, rate: float):
        self.name = name
        self.tags = tags
        self.value = value
        self.type = type
        self.rate = rate


def parse_line(
    line: str, counts: list[int] | None = None, dropped: list[str] | None = None
) -> list[Parsed]:
    """statsd_exporter's line grammar (pkg/line): `name[tags]:value|type[|@rate]
    [|#tags][|c:container][|T<unix>]`; `name:v1|t1:v2|t2` for several samples
    without DogStatsD tags; `name:v1:v2:v3|ms` (DogStatsD extended aggregation)
    for several values of one timer, histogram or distribution.

    A fault in the line as a whole (no `:`, mixed tag styles) raises BadLine.
    A fault in one sample drops only that sample, its reason appended to
    `dropped`, as statsd_exporter's `continue samples` does: a bad value or
    type, an empty or unknown `|` section, a `|c` section that is not
    `|c:<id>`. Tolerant where statsd_exporter is: a tag without key or value
    is dropped (counts[0]); an unparsable or zero sample rate is taken as 1
    (counted, counts[1]); other rates are used as given (a negative one makes
    a negative counter, dropped later; one over 1 observes int(1/rate) = 0
    times); any `|T…` section (DogStatsD 1.3 timestamp) is ignored."""
    bad = counts if counts is not None else [0, 0]
    drop = dropped if dropped is not None else []
    name_part, sep, rest = line.partition(":")
    if not sep or not name_part:
        raise BadLine("malformed")
    name, tags = parse_name(name_part, bad)
    if not name:
        raise BadLine("malformed")
    dog = "|#" in rest
    if dog and tags:
        raise BadLine("mixed_tags")
    head = rest.split("|", 2)
    if len(head) < 2:
        raise BadLine("malformed")
    if ":" in head[0]:
        if head[1] not in ("ms", "h", "d"):
            raise BadLine("bad_type")
        suffix = rest.partition("|")[2]
        samples = [f"{v}|{suffix}" for v in head[0].split(":")]
    elif dog:
        samples = [rest]
    else:
        samples = rest.split(":")
    out = []
    for sample in samples:
        comps = sample.split("|")
        if not 2 <= len(comps) <= 6 or "" in comps[2:]:
            drop.append("malformed")
            continue
        value, mtype = comps[0], comps[1]
        if mtype != "s":
            try:
                float(value)
            except ValueError:
                drop.append("bad_value")
                continue
        elif not value:
            drop.append("bad_value")
            continue
        rate = 1.0
        sample_tags = dict(tags)
        reason = None
        for comp in comps[2:]:
            c0 = comp[0]
            if c0 == "@":
                try:
                    rate = float(comp[1:])
                except ValueError:
                    rate = 0.0
                if rate == 0.0 or rate != rate:
                    # statsd_exporter: an unparsable or zero rate is 1.
                    bad[1] += 1
                    rate = 1.0
            elif c0 == "#":
                _tags_kv(comp[1:], ":", sample_tags, bad)
            elif c0 == "c":
                if not comp.startswith("c:") or len(comp) == 2:
                    reason = "bad_container_id"
                    break
                sample_tags["container_id"] = comp[2:]  # DogStatsD 1.2, as statsd_exporter
            elif c0 == "T":
                pass  # DogStatsD 1.3 timestamp: ignored unparsed, as statsd_exporter
            else:
                reason = "bad_section"
                break
        if reason is not None:
            drop.append(reason)
            continue
        if mtype not in TYPES:
            drop.append("bad_type")
            continue
        out.append(Parsed(name, sample_tags, value, mtype, rate))
    return out
