"""logship --parse json against what an app may write to its log, byte for byte.

The app chooses every byte of its log file. A line nested deeper than
Python's JSON decoder recurses made json.loads raise RecursionError (no
ValueError), which ended the batcher and with it logship (exit 1, "program
failed" and a traceback), and the line was never delivered. A number that
overflows (1e999) or a bare NaN came back as Python's inf/nan and was written
to the sink as `Infinity`/`NaN`, which is no JSON: a strict receiver refuses
the whole batch. Each such line must be delivered, the first as its text, the
others with the values as the app wrote them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tests.helpers import ProgramProcess, wait_until
from tests.peers.receiver import Receiver, receiver  # noqa: F401

NO_POD = {"POD_NAME": "", "POD_NAMESPACE": "", "NODE_NAME": "", "CONTAINER_NAME": ""}


def finite(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(finite(x) for x in v.values())
    if isinstance(v, list):
        return all(finite(x) for x in v)
    return True


def ship(tmp_path: Path, rcv: Receiver, lines: list[str]) -> list[dict[str, Any]]:
    """Every record `lines` became at the receiver; logship must run on, with no error record."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("".join(line + "\n" for line in lines))
    args = [
        "--path", str(logs / "*.log"),
        "--sink", rcv.url + "/ingest",
        "--state-dir", str(tmp_path / "state"),
        "--parse", "json",
        "--poll-interval", "200ms",
        "--batch-max-wait", "100ms",
        "--retry-max-backoff", "1s",
    ]  # fmt: skip
    with ProgramProcess("logship", args, tmp=tmp_path, env=NO_POD) as p:

        def delivered() -> bool:
            assert p.proc is not None and p.proc.poll() is None, p.stderr()[-3000:]
            return rcv.count() >= len(lines)

        wait_until(delivered, 30, 0.05, what="every line at the receiver")
        bad = [r for r in p.records() if r["level"] in ("error", "critical") or "exc_info" in r]
        assert bad == [], bad
    assert len(rcv.records) == len(lines)
    return rcv.records


def test_a_line_nested_deeper_than_the_decoder_recurses_is_shipped_as_text(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    deep = '{"a":' + "[" * 50_000 + "]" * 50_000 + "}"
    deep_obj = '{"a":' + "[" * 5_000 + "]" * 5_000 + ', "b": 1}'
    recs = ship(tmp_path, receiver, [deep, deep_obj, '{"ok": 1}', "plain after"])
    assert recs[0]["message"] == deep
    assert recs[1]["message"] == deep_obj
    assert recs[2]["ok"] == 1 and "message" not in recs[2]
    assert recs[3]["message"] == "plain after"


def test_numbers_json_cannot_hold_are_kept_as_the_text_the_app_wrote(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    recs = ship(
        tmp_path,
        receiver,
        ['{"v": 1e999, "w": -1e999, "n": NaN, "i": Infinity, "ok": 1.5}', '{"x": [1e400]}'],
    )
    assert all(finite(r) for r in recs), recs
    assert recs[0]["ok"] == 1.5
    assert [recs[0][k] for k in ("v", "w", "n", "i")] == ["1e999", "-1e999", "NaN", "Infinity"]
    assert recs[1]["x"] == ["1e400"]
