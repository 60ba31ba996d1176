"""The statsd source: StatsD lines over UDP and TCP, mapped like statsd_exporter.

Speed comes from one observation: a busy app sends the same few thousand
metric keys over and over, only the value changes. So every line is cut at
its first `:` and the following `|`; name + everything after the value
(type, sample rate, tags) is the cache key, and a hit is a dict lookup plus
one float() and an attribute update on the series object itself. Parsing,
tag handling, mapping and conflict checks run once per distinct key (the
slow path). Any removal of series (TTL) bumps the store's generation and
empties the cache, so it never holds a dead series.

The line grammar is statsd_line.py's; the sockets (UDP read straight off a
non-blocking socket with loop.add_reader, a batch of datagrams per wake-up:
the recvmmsg idea without ctypes; TCP; unixgram) are statsd_listen.py's.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from podkit import UsageError

from .mapper import COUNTER_T, GAUGE_T, OBSERVER_T, SET_T, Mapper, load_mapping_file
from .series import COUNTER, GAUGE, HISTOGRAM, SUMMARY, Series
from .sources import Cfg, Emit, Source, register
from .statsd_line import TYPES, BadLine, Parsed, parse_line
from .statsd_listen import StatsdListeners, StatsdOptions
from .store import MEMBER_BYTES, Conflict, Store, escape_name

SOURCE_KEYS = (
    "type",
    "name",
    *StatsdOptions.keys(),
    "mappings",
    "defaults",
    "drop_unmapped",
    "set_interval",
    "max_line",
    "udp_buffer",
    "cache_size",
    "cache_bytes",
    "max_set_size",
    "max_connections",
)

INF = math.inf
#: A parse-cache entry besides its key: dict slot, key object header, entry tuple.
CACHE_ENTRY_BYTES = 200

# Cache entry operations.
OP_COUNT, OP_GAUGE, OP_OBSERVE, OP_SET, OP_DROP, OP_CONFLICT, OP_BAD = range(7)
ERROR_REASONS = (
    "malformed",
    "bad_type",
    "bad_value",
    "bad_sample_rate",
    "bad_tag",
    "mixed_tags",
    "negative_counter",
    "line_too_long",
    "bad_section",
    "bad_container_id",
)


class SetSeries(Series):
    """A StatsD set: its members are charged to the store's byte budget
    (`nbytes`, given back when the set resets or expires)."""

    __slots__ = ("members", "nbytes")

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.members: set[bytes] = set()
        self.nbytes = 0

    def add_member(self, member: bytes, source: StatsdSource) -> None:
        members = self.members
        if member in members:
            return
        cost = MEMBER_BYTES + len(member)
        if (
            len(members) >= source.max_set_size
            or len(member) > source.store.max_label_value_length
            or not source.store.budget.take(cost)
        ):
            source.dropped["set_member"] += 1
            return
        members.add(member)
        self.nbytes += cost
        self.value = float(len(members))


@register
class StatsdSource(StatsdListeners, Source):
    type = "statsd"

    def __init__(self, cfg: Cfg, store: Store, log: Any) -> None:
        super().__init__(cfg, store, log)
        cfg.check_keys(SOURCE_KEYS)
        listen = StatsdOptions.from_mapping(cfg.data, cfg.where, base_dir=cfg.base_dir)
        self.udp_addr: str | None = listen.udp
        self.tcp_addr: str | None = listen.tcp
        self.unixgram: str | None = listen.unixgram
        self.unixgram_mode = int(listen.unixgram_mode, 8)
        if not listen.listening:
            raise UsageError(f"{cfg.where}: give udp, tcp or unixgram")
        self.name = self.name or f"statsd {self.udp_addr or self.tcp_addr or self.unixgram}"
        mapping_file = listen.mapping_file
        self.mapping_file: str | None = mapping_file
        self.reloads = {"success": 0, "failure": 0}
        if mapping_file and (cfg.has("mappings") or cfg.has("defaults")):
            raise UsageError(f"{cfg.where}: use mapping_file or inline mappings, not both")
        if mapping_file:
            self.mapper = load_mapping_file(mapping_file, f"{cfg.where}.mapping_file")
        else:
            self.mapper = Mapper(
                {"mappings": cfg.list("mappings"), "defaults": cfg.mapping("defaults")},
                cfg.where,
            )
        self.drop_unmapped = cfg.flag("drop_unmapped", self.mapper.drop_unmapped)
        self.set_interval: float = cfg.duration("set_interval", "60s")
        self.max_line = cfg.size("max_line", "64KiB")
        self.udp_buffer = cfg.size("udp_buffer", "8MiB")
        self.cache_size = int(cfg.number("cache_size", 100000))
        self.cache_bytes = cfg.size("cache_bytes", "16MiB")
        self.max_set_size = int(cfg.number("max_set_size", 100000))
        self.max_connections = int(cfg.number("max_connections", 256))
        self.cache: dict[bytes, tuple[Any, ...]] = {}
        #: Bytes the parse cache holds (keys are input: a line's name, type and
        #: tags); at `cache_bytes` or `cache_size` entries it starts over.
        self._cache_used = 0
        self._gen = -1
        self.lines = 0
        self.packets = {"udp": 0, "tcp": 0, "unixgram": 0}
        #: StatsD events by type (counter, gauge, observer, set) that reached a
        #: series: statsd_exporter_events_total{type}.
        self.events = [0] * 7
        self.tcp_accepted = 0
        self.conflicts_by_type = dict.fromkeys((COUNTER_T, GAUGE_T, OBSERVER_T, SET_T), 0)
        self.errors = dict.fromkeys(ERROR_REASONS, 0)
        self.dropped = {
            "mapping": 0,
            "unmapped": 0,
            "empty_name": 0,
            "set_member": 0,
            "connection_limit": 0,
        }
        self._init_listeners()
        self._set_task: asyncio.Task[None] | None = None
        self._sets: list[SetSeries] = []

    # -- the line path ---------------------------------------------------------

    def ingest(self, data: bytes) -> None:
        """Apply every line of a datagram or TCP chunk. Never raises."""
        store = self.store
        if self._gen != store.generation:
            self.cache.clear()
            self._cache_used = 0
            self._gen = store.generation
        cache_get = self.cache.get
        now = store.now
        slow = self._slow
        count, gauge, observe, inf = OP_COUNT, OP_GAUGE, OP_OBSERVE, INF
        events = self.events
        lines = data.split(b"\n")
        n = len(lines)
        for line in lines:
            if not line:
                n -= 1
                continue
            c = line.find(b":")
            p = line.find(b"|", c)
            if c <= 0 or p < 0:
                slow(line, b"")
                continue
            ent = cache_get(line[:c] + line[p:])
            if ent is None:
                slow(line, line[:c] + line[p:])
                continue
            op = ent[0]
            # Counted before it is applied; a value that then fails is taken
            # back below (slow path) or counted as an error.
            events[op] += 1
            try:
                if op == count:
                    # ent[2]: the mapping's scale over the sample rate.
                    v = float(line[c + 1 : p]) * ent[2]
                    if not 0.0 <= v < inf:  # NaN or inf would poison the counter
                        self.errors["negative_counter" if v < 0 else "bad_value"] += 1
                        events[op] -= 1
                        continue
                    s = ent[1]
                    s.value += v
                    s.updated = now
                elif op == gauge:
                    raw = line[c + 1 : p]
                    s = ent[1]
                    if raw[0] in b"+-":
                        s.value += float(raw) * ent[2]
                    else:
                        s.value = float(raw) * ent[2]
                    s.updated = now
                elif op == observe:
                    v = float(line[c + 1 : p]) * ent[2]
                    s = ent[1]
                    if ent[3] == 1:
                        s.observe(v)
                    else:
                        for _ in range(ent[3]):
                            s.observe(v)
                    s.updated = now
                elif op == OP_SET:
                    s = ent[1]
                    s.add_member(line[c + 1 : p], self)
                    s.updated = now
                elif op == OP_DROP:
                    self.dropped[ent[1]] += 1
                elif op == OP_CONFLICT:
                    store.conflict(ent[1], ent[2], "cached", 1)
                    self.conflicts_by_type[ent[3]] += 1
                else:
                    self.errors[ent[1]] += 1
            except (ValueError, IndexError):
                # Several values on one line, or a bad value: the slow path
                # handles and counts it.
                events[op] -= 1
                slow(line, b"")
        self.lines += n

    def _slow(self, line: bytes, key: bytes) -> None:
        """Parse, map and resolve a line the cache did not know; cache the result
        when it depends only on the key (one sample per line)."""
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.errors["malformed"] += 1
            return
        bad_tags = [0, 0]
        dropped: list[str] = []
        try:
            samples = parse_line(text, bad_tags, dropped)
        except BadLine as exc:
            self.errors[exc.reason] += 1
            return
        finally:
            self.errors["bad_tag"] += bad_tags[0]
            self.errors["bad_sample_rate"] += bad_tags[1]
            for reason in dropped:
                self.errors[reason] += 1
        cost = len(key) + CACHE_ENTRY_BYTES
        if len(self.cache) >= self.cache_size or self._cache_used + cost > self.cache_bytes:
            self.cache.clear()
            self._cache_used = 0
        # Lines with a dropped sample or tag or a bad rate are not cached, so
        # every one is counted.
        cacheable = key and len(samples) == 1 and not dropped and not any(bad_tags)
        for sample in samples:
            ent = self._resolve(sample)
            if ent is None:
                # A negative (or NaN) counter increment, after rate and scale:
                # dropped before it creates a series, as in statsd_exporter.
                finite = math.isfinite(float(sample.value))
                self.errors["negative_counter" if finite else "bad_value"] += 1
                continue
            if cacheable:
                self.cache[key] = ent
                self._cache_used += cost
            self._apply(ent, sample.value)

    def _apply(self, ent: tuple[Any, ...], value: str) -> None:
        # The same operations as the fast path, from a parsed value.
        now = self.store.now
        op = ent[0]
        self.events[op] += 1
        if op == OP_COUNT:
            v = float(value) * ent[2]
            if not 0.0 <= v < INF:
                self.errors["negative_counter" if v < 0 else "bad_value"] += 1
                self.events[op] -= 1
                return
            ent[1].value += v
            ent[1].updated = now
        elif op == OP_GAUGE:
            if value[0] in "+-":
                ent[1].value += float(value) * ent[2]
            else:
                ent[1].value = float(value) * ent[2]
            ent[1].updated = now
        elif op == OP_OBSERVE:
            v = float(value) * ent[2]
            for _ in range(ent[3]):
                ent[1].observe(v)
            ent[1].updated = now
        elif op == OP_SET:
            ent[1].add_member(value.encode(), self)
            ent[1].updated = now
        elif op == OP_DROP:
            self.dropped[ent[1]] += 1
        elif op == OP_CONFLICT:
            self.store.conflict(ent[1], ent[2], "cached", 0)
            self.conflicts_by_type[ent[3]] += 1
        else:
            self.errors[ent[1]] += 1

    def _resolve(self, p: Parsed) -> tuple[Any, ...] | None:
        """The cache entry for a sample's key, or None for a counter whose
        increment (after rate and scale) is negative or not a number, which
        must create no series."""
        mtype = TYPES[p.type]
        mapping, name, mlabels = self.mapper.map(p.name, mtype)
        if mapping is not None and mapping.action == "drop":
            return (OP_DROP, "mapping")
        if mapping is None and self.drop_unmapped:
            return (OP_DROP, "unmapped")
        if not name:
            # A template that expands to nothing (`$1_foo`): statsd_exporter
            # drops the event and counts it (empty_metric_name).
            return (OP_DROP, "empty_name")
        opts = mapping.opts if mapping is not None else self.mapper.defaults
        scale = mapping.scale if mapping is not None and mapping.scale is not None else 1.0
        if mtype == COUNTER_T and not 0.0 <= float(p.value) * scale / p.rate < INF:
            return None
        labels: dict[str, str] = {}
        for k, v in p.tags.items():
            ek = escape_name(k)
            if not ek or ek.startswith("__"):
                return (OP_BAD, "bad_tag")
            labels[ek] = v
        if mapping is not None and mapping.honor_labels:
            # The mapping's labels are defaults; the client's tags win.
            for k, v in mlabels.items():
                labels.setdefault(k, v)
        else:
            labels.update(mlabels)
        names = tuple(sorted(labels))
        values = tuple(labels[k] for k in names)
        if mtype == OBSERVER_T:
            kind = HISTOGRAM if opts.observer_type == "histogram" else SUMMARY
        elif mtype == COUNTER_T:
            kind = COUNTER
        else:
            kind = GAUGE
        try:
            fam = self.store.family(
                name,
                kind,
                names,
                opts.help or f"StatsD {mtype} adapted by podkit metrics.",
                ttl=opts.ttl,
                buckets=opts.buckets,
                summary=opts.summary,
                source=self.name,
                # One name, several tag sets: all served, as statsd_exporter does.
                label_sets=True,
            )
        except Conflict as exc:
            return (OP_CONFLICT, name, exc.reason, mtype)
        now = self.store.now
        if mtype == SET_T:
            s = fam.series.get(values)
            if s is None:
                s = SetSeries(now)
                if not fam.add(values, s):
                    self._forget_empty(fam)
                    return (OP_CONFLICT, name, "limit", mtype)
                self._sets.append(s)
            elif not isinstance(s, SetSeries):
                self.store.conflict(name, "type", "a StatsD set and a gauge share a name")
                return (OP_CONFLICT, name, "type", mtype)
            return (OP_SET, s)
        s = fam.get(values, now)
        if s is None:
            self._forget_empty(fam)
            return (OP_CONFLICT, name, "limit", mtype)
        if mtype == GAUGE_T:
            if isinstance(s, SetSeries):
                self.store.conflict(name, "type", "a StatsD gauge and a set share a name")
                return (OP_CONFLICT, name, "type", mtype)
            return (OP_GAUGE, s, scale)
        if mtype == COUNTER_T:
            return (OP_COUNT, s, scale / p.rate)
        if p.type == "ms":
            scale *= 0.001
        # statsd_exporter counts a sampled timing int(1/rate) times (none for
        # a rate over 1 or below 0).
        return (OP_OBSERVE, s, scale, max(0, int(1.0 / p.rate)))

    def _forget_empty(self, fam: Any) -> None:
        """A family whose first series was refused holds nothing: drop it, so a
        flood of refused names leaves no empty families behind."""
        if not fam.series:
            self.store.drop_family(fam)

    # -- listeners -------------------------------------------------------------

    async def start(self) -> None:
        await self._open_listeners()
        self._set_task = asyncio.create_task(self._reset_sets())
        self.log.info(
            "statsd listening",
            extra={
                "source": self.name,
                "udp_port": self.udp_port,
                "tcp_port": self.tcp_port,
                "unixgram": self.unixgram,
            },
        )

    async def _reset_sets(self) -> None:
        while True:
            await asyncio.sleep(self.set_interval)
            alive = []
            budget = self.store.budget
            for s in self._sets:
                s.members.clear()
                s.value = 0.0
                budget.free += s.nbytes
                s.nbytes = 0
            # Drop sets whose series expired; keep the rest.
            for fam in self.store.all_families():
                for s in fam.series.values():
                    if isinstance(s, SetSeries):
                        alive.append(s)
            self._sets = alive

    async def stop(self) -> None:
        if self._set_task is not None:
            self._set_task.cancel()
        await self._close_listeners()

    def reload(self) -> bool:
        """Load the mapping file again. Series stay as they are (new lines map
        with the new rules); a bad file keeps the old rules, is logged and
        counted. Returns whether the new file is in use."""
        if not self.mapping_file:
            return True
        try:
            mapper = load_mapping_file(self.mapping_file, f"{self.cfg.where}.mapping_file")
        except UsageError as exc:
            self.reloads["failure"] += 1
            self.log.error(
                "mapping file reload failed; keeping the previous mappings",
                extra={"source": self.name, "error": str(exc)},
            )
            return False
        for w in mapper.warnings:
            self.log.warning("mapping file: %s", w)
        self.mapper = mapper
        self.drop_unmapped = self.cfg.flag("drop_unmapped", mapper.drop_unmapped)
        self.cache.clear()
        self._cache_used = 0
        self.reloads["success"] += 1
        self.log.info(
            "mapping file reloaded",
            extra={"source": self.name, "mappings": len(mapper.mappings)},
        )
        return True

    # -- reporting ---------------------------------------------------------------

    def own(self, emit: Emit) -> None:
        src = (self.name,)
        emit("source_up", "gauge", "1 when the source's last read worked.", ("source",), src, 1.0)
        emit("statsd_lines", "counter", "StatsD lines received.", ("source",), src, self.lines)
        for transport, n in self.packets.items():
            emit(
                "statsd_packets",
                "counter",
                "UDP datagrams and TCP reads received.",
                ("source", "transport"),
                (self.name, transport),
                n,
            )
        for reason, n in self.errors.items():
            emit(
                "statsd_errors",
                "counter",
                "StatsD lines rejected, by reason.",
                ("source", "reason"),
                (self.name, reason),
                n,
            )
        for reason, n in self.dropped.items():
            emit(
                "statsd_dropped",
                "counter",
                "StatsD samples dropped on purpose (action: drop, drop_unmapped).",
                ("source", "reason"),
                (self.name, reason),
                n,
            )
        drops = self.udp_kernel_drops()
        if drops is not None:
            emit(
                "statsd_udp_kernel_drops",
                "counter",
                "Datagrams the kernel dropped because the receive buffer was full.",
                ("source",),
                src,
                drops,
            )
        emit(
            "statsd_tcp_connections",
            "gauge",
            "Open StatsD TCP connections.",
            ("source",),
            src,
            len(self._tcp_conns),
        )
        emit(
            "statsd_mappings",
            "gauge",
            "Mapping rules loaded.",
            ("source",),
            src,
            len(self.mapper.mappings),
        )

    def status(self) -> dict[str, Any]:
        return {
            "type": "statsd",
            "name": self.name,
            "udp_port": self.udp_port,
            "tcp_port": self.tcp_port,
            "lines": self.lines,
            "mappings": len(self.mapper.mappings),
            "cache_entries": len(self.cache),
        }
