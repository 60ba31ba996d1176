"""logship: tail log files in a shared volume and ship every line, at least once.

The program is `program.LogShip`; one sink's pipeline is `route.Route`;
processing is `process`, the pod's identity `podinfo`, which sinks with
which options `destinations`. This file only re-exports.
"""

from __future__ import annotations

from .destinations import DEAD_LETTER_FILE
from .program import LogShip, main
from .route import _cut, line_offsets, record_ids

__all__ = ["DEAD_LETTER_FILE", "LogShip", "_cut", "line_offsets", "main", "record_ids"]
