"""The state the parts of a Tailer share, declared once for the type checker.

Each part (discovery, rotation, reading, checkpoints) is a mixin of `Tailer`
that reads and writes this state; `Tailer.__init__` sets it. The methods
below are the calls one part makes into another, implemented there.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from ..multiline import Joiner
from .config import TailerConfig
from .files import Chunk, _File

log = logging.getLogger("podkit.tailer")

#: Identities of files gone (or rewritten) kept for copies that may turn up:
#: about 300 bytes each.
MAX_REMEMBERED = 1024


class _Base:
    cfg: TailerConfig
    paths: list[str]
    exclude: list[str]
    _files: list[_File]  # open files, predecessors before successors
    _by_key: dict[tuple[int, int], _File]
    _current: dict[str, _File]  # matched path -> the file it names now
    _retired: list[_File]  # closed, but chunks not all acknowledged
    _saved: dict[tuple[int, int], dict[str, Any]]  # loaded checkpoints
    _lost: dict[str, dict[str, Any]]
    _queue: asyncio.Queue[Chunk | None]
    _inflight: int
    _queued: int
    _wake: asyncio.Event
    _acked: asyncio.Event
    _discover_now: bool
    _watcher: Any
    _dirty_ckpt: bool
    _last_ckpt: float
    _ckpt_writer: Any  # checkpoints.CheckpointWriter
    _last_identity: float
    _multiline: re.Pattern[str] | None
    _copy_name: str
    _moves: list[tuple[str, str]]
    lines_read: int
    bytes_read: int
    truncated_lines: int
    rotations: int
    truncations: int
    read_errors: int
    skipped: dict[str, int]
    _skips: dict[str, str]
    _skips_next: dict[str, str]
    checkpoint_errors: int
    _ckpt_failing: bool
    _watch_failing: bool
    polling: bool

    def _remember(self, entry: dict[str, Any]) -> None:
        """Keep `entry` (a checkpoint entry no open file holds) for a copy of its
        content that may turn up: the furthest offset per fingerprint, the most
        recent MAX_REMEMBERED fingerprints."""
        kept = self._lost.pop(entry["fp"], None)
        if kept is not None and kept["offset"] > entry["offset"]:
            entry = kept
        self._lost[entry["fp"]] = entry
        while len(self._lost) > MAX_REMEMBERED:
            del self._lost[next(iter(self._lost))]

    def _open(self, path: str, initial: bool, base: tuple[str, str]) -> _File | None:
        raise NotImplementedError  # core

    def _full(self) -> bool:
        raise NotImplementedError  # core

    def _forget(self, f: _File) -> None:
        raise NotImplementedError  # rotation

    def _truncated(self, f: _File, copy: _File | None = None) -> None:
        raise NotImplementedError  # rotation

    def _identify(self, f: _File) -> bool:
        raise NotImplementedError  # rotation

    def _read_file(self, f: _File, budget: int) -> bool:
        raise NotImplementedError  # reading

    def _new_joiner(self) -> Joiner | None:
        raise NotImplementedError  # reading

    def _flush_partial(self, f: _File, force: bool = False, line: bool = True) -> None:
        raise NotImplementedError  # reading

    def _matches(self, path: str) -> bool:
        raise NotImplementedError  # discovery

    def _base_for(self, path: str) -> tuple[str, str]:
        raise NotImplementedError  # discovery
