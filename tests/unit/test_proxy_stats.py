"""Summing the --workers' metrics, and access-log writes that other workers cannot tear."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podkit.ambassadors.proxy.accesslog import AccessLog, seconds_txt, whole_lines
from podkit.ambassadors.proxy.stats import PER_UP, families, merge
from podkit.ambassadors.proxy.upstream import BUCKETS


def snap(requests: int, conns: int, active: int, ok: float) -> dict[str, object]:
    hist = [0.0] * (len(BUCKETS) + 2)
    hist[0], hist[-1] = float(requests), 0.001 * requests
    per = [0] * len(PER_UP)
    per[PER_UP.index("retries")] = 1
    per[PER_UP.index("connections")] = conns
    return {
        "codes": {"http://a:80": {"200": requests}},
        "hist": {"http://a:80": hist},
        "health": {"http://a:80": ok},
        "per_up": {"http://a:80": per},
        "active": active,
        "tcp_bytes": {"to_upstream": 0, "to_client": 0},
        "cache_dropped": {"request": 0, "response": 0},
        "cache_bytes": {"request": 10, "response": 0},
    }


def test_counters_add_up_and_a_gone_worker_keeps_only_its_counters() -> None:
    m = merge(
        [(snap(5, 2, 1, 1.0), True), (snap(7, 3, 2, 0.0), True), (snap(11, 4, 3, 0.0), False)]
    )
    assert m["codes"] == {"http://a:80": {"200": 23}}
    assert m["hist"]["http://a:80"][0] == 23.0
    per = dict(zip(PER_UP, m["per_up"]["http://a:80"], strict=True))
    assert per["retries"] == 3  # a counter: the exited worker's share stays
    assert per["connections"] == 5  # a gauge: only the live workers' connections
    assert m["active"] == 3 and m["cache_bytes"]["request"] == 20
    assert m["health"] == {"http://a:80": 0.0}  # unhealthy for any live worker
    text = {f.name: f for f in families(m)}
    assert text["podkit_proxy_requests"].samples[0].value == 23


@given(st.lists(st.text(alphabet="ab", max_size=12), max_size=20), st.integers(1, 30))
def test_whole_lines_pieces_keep_every_line_whole(lines: list[str], limit: int) -> None:
    ended = [line + "\n" for line in lines]
    pieces = list(whole_lines(ended, limit))
    assert "".join(pieces) == "".join(ended)
    for i, p in enumerate(pieces):
        assert p.endswith("\n")
        assert len(p) <= limit or p.count("\n") == 1  # only a line longer than the limit
        if i + 1 < len(pieces):  # as full as it can be: the next line would not fit
            assert len(p) + len(pieces[i + 1].split("\n", 1)[0]) + 1 > limit


async def test_a_flush_writes_whole_lines_in_pieces_and_scrubs_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import podkit.ambassadors.proxy.accesslog as mod

    from podkit.secrets import register_secret

    register_secret("Ak4-in-a-path")
    writes: list[str] = []

    class Err:
        def write(self, text: str) -> None:
            writes.append(text)

        def flush(self) -> None:
            writes.append("<flush>")

    monkeypatch.setattr(mod.sys, "stderr", Err())
    a = AccessLog()
    # about 330 KiB, several 64 KiB pieces; the 2000th line writes its batch at once
    for i in range(3000):
        a.append(a.start_for(0.0) + f'"path": "/{i}/Ak4-in-a-path", "pad": "{"x" * 80}"}}\n')
    a.flush()
    pieces = writes[::2]
    assert writes[1::2] == ["<flush>"] * len(pieces)  # one write(2) each
    assert len(pieces) > 3 and all(len(p) <= mod.PIECE for p in pieces)
    lines = "".join(pieces).splitlines()
    assert [json.loads(line)["path"] for line in lines] == [f"/{i}/***" for i in range(3000)]
    writes.clear()
    a.shared = True
    a.append('{"x": 1}\n')
    a.append('{"x": 2}\n')
    a.flush()
    assert len(writes) == 2 and writes[0].count("\n") == 2  # both fit one PIPE_BUF piece


def test_access_log_time_is_made_once_per_millisecond() -> None:
    a = AccessLog()
    assert a.time(0.0) == "1970-01-01T00:00:00.000Z"
    assert a.time(0.0009) == "1970-01-01T00:00:00.000Z"  # the same millisecond
    assert a.time(0.0010) == "1970-01-01T00:00:00.001Z"
    assert a.time(59.9995) == "1970-01-01T00:00:59.999Z"
    assert a.time(60.0) == "1970-01-01T00:01:00.000Z"  # a new second, a new prefix
    assert a.time(1764892800.25) == "2025-12-05T00:00:00.250Z"


def test_access_line_start_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A line's time is its request's end (monotonic) plus the wall clock's offset,
    read once a batch: the start is made once a millisecond, and a clock that
    steps shows from the next batch on."""
    import podkit.ambassadors.proxy.accesslog as mod

    a = AccessLog()
    wall = iter([1000.0, 5000.0])
    monkeypatch.setattr(mod.time, "time", lambda: next(wall))
    monkeypatch.setattr(mod.time, "monotonic", lambda: 0.0)  # offsets 1000, then 5000
    a.time(1000.0004)  # a TCP line's timestamp in between must not leave the start stale
    a.lines.append(a.start_for(0.0) + '"x": 1}\n')  # the batch's first line reads the offset
    a.scheduled = True  # within a batch from here: the offset is not read again
    first = a.start
    a.append(a.start_for(0.0009) + '"x": 2}\n')
    assert a.start is first  # the same millisecond: the same string, not made again
    a.append(a.start_for(1.5) + '"x": 3}\n')
    a.scheduled = False  # a new batch reads the offset again (the clock stepped)
    a.lines.append(a.start_for(1.5) + '"x": 4}\n')
    stamps = [json.loads(line)["time"] for line in a.lines]
    assert stamps == [
        "1970-01-01T00:16:40.000Z",
        "1970-01-01T00:16:40.000Z",
        "1970-01-01T00:16:41.500Z",
        "1970-01-01T01:23:21.500Z",
    ]
    assert all(line.endswith("}\n") for line in a.lines)


@given(st.integers(1, 10**12), st.floats(-0.45, 0.45))
def test_seconds_are_written_as_the_float_formatter_writes_them(us: int, off: float) -> None:
    """Six decimals, the same digits as f"{x:.6f}" away from a half microsecond
    (where the two roundings may differ by one in the last place)."""
    took = (us + off) / 1e6
    assert seconds_txt(took) == f"{took:.6f}"


@given(st.floats(0, 1e6, allow_nan=False))
def test_seconds_are_never_off_by_more_than_rounding(took: float) -> None:
    text = seconds_txt(took)
    whole, _, frac = text.partition(".")
    assert whole.isdigit() and len(frac) == 6 and frac.isdigit()
    assert abs(float(text) - took) <= 0.5e-6 + took * 1e-15


def test_seconds_edges() -> None:
    assert seconds_txt(0.0) == "0.000000"
    assert seconds_txt(0.000123) == "0.000123"
    assert seconds_txt(0.9999996) == "1.000000"  # carried into the seconds
    assert seconds_txt(12.5) == "12.500000"
    assert seconds_txt(3600.0000004) == "3600.000000"
