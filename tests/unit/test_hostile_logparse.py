"""Log parsers against lines an app chooses: a line nested deeper than the
JSON decoder recurses is a parse error (json) or a plain value (logfmt, slog),
never an exception.

json.loads raises RecursionError, not ValueError, past the interpreter's
recursion limit. logformat's converter hid it (its catch-all turns a parser
exception into a parse error), but the metrics adapter's log source calls the
parser directly: one such line in the app's log stopped the source for good
("log source failed" with a traceback, and nothing counted afterwards).
"""

from __future__ import annotations

import logging

import pytest
from podkit.adapters.metrics.log_source import LogSource
from podkit.adapters.metrics.sources import build
from podkit.adapters.metrics.store import Store

from podkit.logparse.parsers import create
from podkit.logparse.timeparse import Clock

DEEP = "[" * 50_000 + "]" * 50_000
DEEP_OBJECT = '{"a":' * 50_000 + "1" + "}" * 50_000

LINES = [
    '{"msg": "x", "a": ' + DEEP + "}",
    DEEP_OBJECT,
    "level=info msg=x a=" + DEEP,
    "level=info msg=x a=" + DEEP_OBJECT,
    'time=2024-01-01T00:00:00Z level=INFO msg="x" a=' + DEEP,
]


@pytest.mark.parametrize("fmt", ["json", "logfmt", "slog", "kv", "json,logfmt"])
@pytest.mark.parametrize("line", LINES, ids=range(len(LINES)))
def test_a_line_nested_past_the_recursion_limit_does_not_raise(fmt: str, line: str) -> None:
    rec = create(fmt, Clock()).parse(line, "src")
    if rec is not None and fmt != "json":
        assert rec["a"] in (DEEP, DEEP_OBJECT)  # kept as the text the app wrote


def test_the_metrics_log_source_counts_on_after_such_a_line() -> None:
    log = logging.getLogger("test.hostile")
    store = Store(log)
    src = build(
        {
            "type": "log",
            "path": "/x/*.log",
            "format": "json",
            "rules": [{"counter": "app_lines_total", "labels": ["level"]}],
        },
        "t",
        store,
        log,
        None,
    )
    assert isinstance(src, LogSource)
    src.process(['{"level": "info", "msg": "a"}', LINES[0], DEEP_OBJECT])
    src.process(['{"level": "warn", "msg": "b"}'])
    assert src.errors["parse_error"] == 2
    assert src.lines == 4
    text = store.render()
    assert 'app_lines_total{level="info"} 1.0' in text
    assert 'app_lines_total{level="warning"} 1.0' in text  # levels are normalised


def test_a_time_before_the_year_1000_keeps_four_year_digits() -> None:
    """RFC 3339 has four: glibc's strftime('%Y') wrote '172-05-28...', which no
    RFC 3339 reader takes (and the metrics log source sliced into a crash)."""
    clock = Clock()
    assert clock.epoch(-56726592264) == "0172-05-28T05:15:36Z"
    assert clock.any("0172-05-28T05:15:36Z") == "0172-05-28T05:15:36Z"
    assert clock.any("0001-01-01T00:00:00.5Z") == "0001-01-01T00:00:00.5Z"


@pytest.mark.parametrize("fmt", ["unix", "unix_ms", "unix_ns"])
def test_an_epoch_time_is_ascii_digits_after_one_sign(fmt: str) -> None:
    clock = Clock(time_format=fmt)
    for text in ("--962", "-+5", "²", "1²", "1.²", "٣", "1.5.5", "-", ""):
        assert clock.any(text) is None, text
    assert clock.any("-1") == "1969-12-31T23:59:59Z"


def test_the_metrics_log_source_counts_a_line_whose_time_it_cannot_read() -> None:
    log = logging.getLogger("test.hostile")
    store = Store(log)
    rule = {
        "match": r"t=(?P<t>\S*) n=(?P<n>\d+)",
        "counter": "events_total",
        "timestamp": "t",
        "timestamp_format": "unix",
    }
    src = build({"type": "log", "path": "/x/*.log", "rules": [rule]}, "t", store, log, None)
    assert isinstance(src, LogSource)
    lines = ["t=--962 n=1", "t=² n=1", "t=-56726592264 n=1", "t=1700000000 n=1", "t= n=1"]
    src.process(lines)
    src.process(["t=1700000001 n=1"])
    assert src.lines == 6
    assert src.errors["bad_timestamp"] == 3
    assert "events_total 6.0" in store.render()
