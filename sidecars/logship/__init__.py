"""logship: tail log files in a shared volume and ship every line, at least once.

The program is `program.LogShip`; this file only re-exports.
"""

from __future__ import annotations

from .program import DEAD_LETTER_FILE, LogShip, _cut, line_offsets, main, record_ids

__all__ = ["DEAD_LETTER_FILE", "LogShip", "_cut", "line_offsets", "main", "record_ids"]
