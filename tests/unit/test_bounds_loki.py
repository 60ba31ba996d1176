"""The Loki sink's label-set bound forgets label sets that went idle.

A node agent sees pods come and go; each pod's label set counts against
`max_streams`. Before, a label set once seen was counted forever, so after
`max_streams` pods had ever existed every later pod's lines went to the
overflow stream. These tests drive a fake clock through N+K label sets and
check what is delivered, what the bound holds and what status/events say.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from podkit.options import UsageError
from podkit.sinks import RecordBatch, open_sink
from podkit.sinks._loki import LOKI_STREAM_IDLE
from tests.peers.receiver import Receiver


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _sink(clock: Clock, **options: Any) -> Any:
    events: list[tuple[str, int]] = []
    s: Any = open_sink(
        "loki+http://127.0.0.1:9",
        labels={"job": "j"},
        label_keys=["pod"],
        on_event=lambda k, n: events.append((k, n)),
        **options,
    )
    s._clock = clock
    s.events = events
    return s


def _streams(s: Any, pods: list[str]) -> dict[str | None, list[str]]:
    """pod label (None: the overflow stream) -> messages, for one batch of one line per pod.

    A line is sent as JSON (`pod` is not a standard field); on the overflow
    stream the pod's label goes with the entry as structured metadata.
    """
    recs = [{"time": 1, "message": f"from {p}", "pod": p} for p in pods]
    payload = json.loads(s.encode(RecordBatch(recs)))
    out: dict[str | None, list[str]] = {}
    for x in payload["streams"]:
        pod = x["stream"].get("pod")
        assert x["stream"]["job"] == "j"
        for v in x["values"]:
            line = json.loads(v[1])
            assert line["pod"] == (pod or v[2]["pod"])
            assert len(v) == (2 if pod else 3)
            out.setdefault(pod, []).append(line["message"])
    return out


def test_the_default_idle_period_is_lokis_chunk_idle_period() -> None:
    s = open_sink("loki+http://127.0.0.1:9")
    assert LOKI_STREAM_IDLE == 1800.0
    assert s.stream_idle == 1800.0  # type: ignore[attr-defined]
    assert open_sink("loki+http://127.0.0.1:9", stream_idle="5").stream_idle == 5.0
    assert open_sink("loki+http://127.0.0.1:9", stream_idle=0.5).stream_idle == 0.5  # type: ignore[attr-defined]
    for bad in (0, -1, float("nan")):
        with pytest.raises(UsageError, match=r"^loki stream_idle: must be positive$"):
            open_sink("loki+http://127.0.0.1:9", stream_idle=bad)


def test_pods_that_went_quiet_free_their_places_for_new_pods() -> None:
    clock = Clock()
    s = _sink(clock, max_streams=3, stream_idle=60)
    # Three pods fill the bound; a fourth, at the same time, overflows.
    assert _streams(s, ["a", "b", "c", "d"]) == {
        "a": ["from a"],
        "b": ["from b"],
        "c": ["from c"],
        None: ["from d"],
    }
    assert s.status()["streams"] == 3 and s.status()["label_overflow"] == 1
    assert s.events == [("loki_label_overflow", 1)]
    # 30 s later only "c" still logs; 59.9 s after the start nothing is idle yet.
    clock.t += 30
    assert _streams(s, ["c"]) == {"c": ["from c"]}
    clock.t += 29.9
    assert _streams(s, ["e"]) == {None: ["from e"]}
    assert s.label_overflow == 2 and s.status()["streams"] == 3
    # At 60 s "a" and "b" are idle: "e" and "f" get their own streams, "c" kept its place.
    clock.t += 0.1
    assert _streams(s, ["e", "f"]) == {"e": ["from e"], "f": ["from f"]}
    assert s.status()["streams"] == 3
    assert sorted(dict(k)["pod"] for k in s._streams_seen) == ["c", "e", "f"]
    # The bound still holds: a seventh pod, while c, e, f are recent, overflows.
    assert None in _streams(s, ["g"])
    assert s.label_overflow == 3 and s.status()["label_overflow"] == 3
    assert s.events == [("loki_label_overflow", 1)] * 3


def test_a_label_set_sent_again_is_kept_as_recent() -> None:
    clock = Clock()
    s = _sink(clock, max_streams=2, stream_idle=10)
    _streams(s, ["a", "b"])
    for _ in range(5):  # "a" keeps logging past several idle periods
        clock.t += 8
        assert _streams(s, ["a"]) == {"a": ["from a"]}
    # "b" went idle long ago; "a" did not: "c" takes b's place, "d" overflows.
    assert _streams(s, ["c", "d"]) == {
        "c": ["from c"],
        None: ["from d"],
    }
    assert [dict(k)["pod"] for k in s._streams_seen] == ["a", "c"]


def test_status_counts_only_label_sets_not_idle() -> None:
    clock = Clock()
    s = _sink(clock, max_streams=100, stream_idle=10)
    for i in range(50):  # fifty pods, one every second
        _streams(s, [f"p{i}"])
        clock.t += 1
    # p40 was last sent exactly 10 s ago: idle. p41..p49 are not.
    assert s.status()["streams"] == 9
    clock.t += 100
    assert s.status() | {"streams": 0} == s.status()  # all idle: none counted
    assert s.status()["label_overflow"] == 0


@pytest.mark.parametrize(("max_streams", "overflows"), [(7, False), (6, True)])
def test_many_pods_over_time_fit_a_bound_of_those_live_at_once(
    max_streams: int, overflows: bool
) -> None:
    """200 pods over ~an hour, 5 alive at a time, each forgotten 60 s after its last line.

    A step is 20 s: a pod last sent 3 steps ago is forgotten, so at most 5 + 2
    label sets count at once. A bound of 7 never overflows however many pods
    came and went (before the fix the 8th pod overflowed for good); 6 does.
    """
    clock = Clock()
    s = _sink(clock, max_streams=max_streams, stream_idle=60)
    overflowed = 0
    for i in range(200):
        live = [f"p{j}" for j in range(max(0, i - 4), i + 1)]
        got = _streams(s, live)
        overflowed += len(got.get(None, []))
        assert len(s._streams_seen) <= max_streams
        clock.t += 20
    assert (overflowed > 0) is overflows
    assert s.label_overflow == overflowed == len(s.events)
    assert s.status()["label_overflow"] == overflowed
    if not overflows:
        # status() above forgot p193 (last sent 60 s before the final tick).
        assert [dict(k)["pod"] for k in s._streams_seen] == [f"p{j}" for j in range(194, 200)]


async def test_the_fake_loki_receives_each_new_pod_under_its_own_labels() -> None:
    """Delivered over HTTP to the fake Loki, which checks the push shape."""
    rx = Receiver().start()
    try:
        clock = Clock()
        s = open_sink(
            f"loki+{rx.url}",
            labels={"job": "j"},
            label_keys=["pod"],
            max_streams=2,
            stream_idle=60,
        )
        s._clock = clock  # type: ignore[attr-defined]
        try:
            for pods in (["a", "b"], ["c"]):
                await asyncio.wait_for(
                    s.send(
                        [
                            {"time": "2026-01-01T00:00:01Z", "message": f"m {p}", "pod": p}
                            for p in pods
                        ]
                    ),
                    10,
                )
            clock.t += 61
            await asyncio.wait_for(
                s.send([{"time": "2026-01-01T00:00:02Z", "message": "m d", "pod": "d"}]), 10
            )
        finally:
            await s.close()
        assert rx.bad_requests == []
        got = [(e["labels"], e["line"]) for e in rx.loki]
        assert got == [
            ({"job": "j", "pod": "a"}, '{"message":"m a","pod":"a"}'),
            ({"job": "j", "pod": "b"}, '{"message":"m b","pod":"b"}'),
            ({"job": "j"}, '{"message":"m c","pod":"c"}'),
            ({"job": "j", "pod": "d"}, '{"message":"m d","pod":"d"}'),
        ]
        assert [e["meta"] for e in rx.loki][2] == {"pod": "c"}
    finally:
        rx.stop()
