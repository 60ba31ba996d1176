"""statsd_exporter's own metrics (`statsd_exporter_*`), so its dashboards and
alerts keep working: the statsd source's figures under statsd_exporter's
names, labels and help texts (a compatibility table, kept apart from the
source that counts them)."""

from __future__ import annotations

from .mapper import COUNTER_T, GAUGE_T, OBSERVER_T
from .series import COUNTER, GAUGE
from .statsd import OP_COUNT, OP_GAUGE, OP_OBSERVE, StatsdSource

#: podkit's line error reasons under statsd_exporter's sample_errors_total reasons.
SAMPLE_ERROR_NAMES = {
    "malformed": "malformed_line",
    "bad_type": "malformed_component",
    "bad_value": "malformed_value",
    "bad_sample_rate": "invalid_sample_factor",
    "mixed_tags": "mixed_tagging_styles",
    "bad_section": "invalid_sample_factor",
    "bad_container_id": "malformed_container_id",
}


def exporter_metrics(
    src: StatsdSource,
) -> list[tuple[str, str, str, tuple[str, ...], tuple[str, ...], float]]:
    """The same figures under statsd_exporter's own metric names, so its
    dashboards and alerts keep working: (name, kind, help, labelnames,
    labelvalues, value), summed over statsd sources by the caller."""
    e = src.events
    out: list[tuple[str, str, str, tuple[str, ...], tuple[str, ...], float]] = []

    def add(name: str, kind: str, help: str, value: float, **labels: str) -> None:
        out.append((name, kind, help, tuple(labels), tuple(labels.values()), value))

    ev = "The total number of StatsD events seen."
    for t, op in (("counter", OP_COUNT), ("gauge", OP_GAUGE), ("observer", OP_OBSERVE)):
        add("statsd_exporter_events_total", COUNTER, ev, e[op], type=t)
    cf = "The total number of StatsD events with conflicting names."
    for t in (COUNTER_T, GAUGE_T, OBSERVER_T):
        add(
            "statsd_exporter_events_conflict_total",
            COUNTER,
            cf,
            src.conflicts_by_type[t],
            type=t,
        )
    add(
        "statsd_exporter_events_actions_total",
        COUNTER,
        "The total number of StatsD events by action.",
        src.dropped["mapping"],
        action="drop",
    )
    er = "The total number of StatsD events discarded due to errors."
    add(
        "statsd_exporter_events_error_total",
        COUNTER,
        er,
        src.errors["negative_counter"],
        reason="illegal_negative_counter",
    )
    add(
        "statsd_exporter_events_error_total",
        COUNTER,
        er,
        src.dropped["empty_name"],
        reason="empty_metric_name",
    )
    add(
        "statsd_exporter_lines_total",
        COUNTER,
        "The total number of StatsD lines received.",
        src.lines,
    )
    add(
        "statsd_exporter_udp_packets_total",
        COUNTER,
        "The total number of StatsD packets received over UDP.",
        src.packets["udp"],
    )
    add(
        "statsd_exporter_unixgram_packets_total",
        COUNTER,
        "The total number of StatsD packets received over Unixgram.",
        src.packets["unixgram"],
    )
    add(
        "statsd_exporter_tcp_connections_total",
        COUNTER,
        "The total number of TCP connections handled.",
        src.tcp_accepted,
    )
    add(
        "statsd_exporter_tcp_too_long_lines_total",
        COUNTER,
        "The number of lines discarded due to being too long.",
        src.errors["line_too_long"],
    )
    se = "The total number of errors parsing StatsD samples."
    for ours, theirs in SAMPLE_ERROR_NAMES.items():
        add("statsd_exporter_sample_errors_total", COUNTER, se, src.errors[ours], reason=theirs)
    add(
        "statsd_exporter_tag_errors_total",
        COUNTER,
        "The number of errors parsing DogStatsD tags.",
        src.errors["bad_tag"],
    )
    for outcome, n in src.reloads.items():
        add(
            "statsd_exporter_config_reloads_total",
            COUNTER,
            "The number of configuration reloads.",
            n,
            outcome=outcome,
        )
    add(
        "statsd_exporter_loaded_mappings",
        GAUGE,
        "The current number of configured metric mappings.",
        len(src.mapper.mappings),
    )
    return out
