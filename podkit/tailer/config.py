"""What a tailer is told: TailerConfig, and the options programs declare for it once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..multiline import MultilineOptions
from ..options import OptionGroup, UsageError, option

FOLLOW_SYMLINKS_HELP = (
    "follow symbolic links to files outside the glob's base directory; anyone who can "
    "write the volume can then make the program read any file it can read (FIFOs, "
    "devices, /proc, /sys and /dev stay refused)"
)


#: Most frequent checkpoint write. A kill -9 resends what was acknowledged since
#: the last write (plus what was in flight): at 100k lines/s, 50 ms is 5,000
#: lines, under 1% of a 10 s run (measured in docs/benchmarks.md). A write is
#: one small file, fsync'd in a worker thread: about 3 ms of disk and 0.3 ms
#: of CPU here, none of it on the event loop.
CHECKPOINT_INTERVAL = 0.05


class TailingOptions(OptionGroup):
    """The options of a program that follows log files, declared once: what it
    reads (`--path`, `--exclude`, `--follow-symlinks`), where it keeps its
    checkpoints, and the reading limits. `config()` builds the TailerConfig
    from them, so a program never copies them by hand. Each program names its
    own `--state-dir` default with `include(defaults={"state_dir": ...})`."""

    about = "the files"

    path: list[str] = option(
        repeat=True, metavar="GLOB", help="log files to follow (glob, repeatable)"
    )
    exclude: list[str] = option(repeat=True, metavar="GLOB", help="files to leave out (repeatable)")
    follow_symlinks: bool = option(False, help=FOLLOW_SYMLINKS_HELP, env_alias=False)
    state_dir: str = option(
        "/var/lib/podkit/tailer", kind="path", help="directory for checkpoints.json"
    )
    read_from: str = option(
        "head", choices=("head", "tail"), help="where to start files seen for the first time"
    )
    max_line_bytes: int = option(
        "256KiB", kind="size", min=1, help="longer lines are cut and marked truncated"
    )
    partial_flush_timeout: float = option(
        "5s", kind="duration", min=0.0, help="pass on a last line without newline after this long"
    )
    poll_interval: float = option(
        "1s",
        kind="duration",
        min=0.01,
        help="how often to look for new, rotated and grown files",
    )
    checkpoint_interval: float = option(
        f"{int(CHECKPOINT_INTERVAL * 1000)}ms",
        kind="duration",
        min=0,
        help="most frequent checkpoint write: after a kill -9, what was acknowledged "
        "within it (and what was in flight) is sent again",
    )
    buffer_max_bytes: int = option(
        "16MiB",
        kind="size",
        min=1,
        help="read but unacknowledged bytes at which reading pauses",
    )

    def check(self) -> None:
        if self.buffer_max_bytes < self.max_line_bytes:
            raise UsageError(
                f"{self.flag('buffer_max_bytes')}: must be at least {self.flag('max_line_bytes')}"
            )

    def config(self, joining: MultilineOptions | None = None, **overrides: Any) -> TailerConfig:
        """The TailerConfig these options describe; `joining` adds the multiline
        options, `overrides` the program's own (paths of a route, chunk sizes)."""
        values: dict[str, Any] = {
            "paths": list(self.path),
            "exclude": list(self.exclude),
            "state_dir": self.state_dir,
            "read_from": self.read_from,
            "max_line_bytes": self.max_line_bytes,
            "partial_flush_timeout": self.partial_flush_timeout,
            "poll_interval": self.poll_interval,
            "checkpoint_interval": self.checkpoint_interval,
            "max_buffer_bytes": self.buffer_max_bytes,
            "follow_symlinks": self.follow_symlinks,
        }
        if joining is not None:
            values.update(
                multiline_start=joining.start,
                multiline_max_lines=joining.max_lines,
                multiline_timeout=joining.timeout,
            )
        values.update(overrides)
        return TailerConfig(**values)

    def problems(self, paths: list[str] | None = None) -> list[str]:
        """--check-config: each glob's base directory exists (its volume is
        mounted) and --state-dir can be written or created."""
        from ..program import path_problem, writable_dir_problem
        from .discovery import _base_dir

        found = [path_problem("--path", _base_dir(p), "dir") for p in paths or self.path]
        found.append(writable_dir_problem("--state-dir", self.state_dir))
        return [p for p in found if p]


@dataclass
class TailerConfig:
    paths: list[str]
    exclude: list[str] = field(default_factory=list)
    #: Directory for checkpoints.json; None keeps no checkpoints.
    state_dir: str | None = None
    #: Where a file first seen at start-up (without a checkpoint) is read from.
    read_from: str = "head"
    max_line_bytes: int = 256 * 1024
    partial_flush_timeout: float = 5.0
    poll_interval: float = 1.0
    checkpoint_interval: float = CHECKPOINT_INTERVAL
    multiline_start: str | None = None
    multiline_max_lines: int = 500
    multiline_timeout: float = 3.0
    #: Unacknowledged bytes at which reading pauses.
    max_buffer_bytes: int = 16 * 1024 * 1024
    #: Read-ahead: queued chunks the consumer has not taken yet, in bytes. Reading
    #: further ahead of a slower consumer gains nothing and costs memory.
    max_queue_bytes: int = 2 * 1024 * 1024
    #: Most lines in one chunk (0: no limit). A consumer that acknowledges per
    #: batch sets its batch size here, so no chunk spans two batches and a
    #: crash re-sends no more than the batches in flight.
    max_chunk_lines: int = 0
    chunk_bytes: int = 1024 * 1024
    #: How long a renamed/deleted file idle at EOF stays open for late writes.
    rotate_wait: float = 5.0
    #: Poll instead of inotify (filesystems without inotify, tests).
    force_polling: bool = False
    #: Bytes read from one file per round before the others get a turn.
    fair_share_bytes: int = 4 * 1024 * 1024
    #: Give each chunk its file's identity (`file_key`, `file_head`), so a consumer
    #: can derive ids that are the same when a line is read again after a restart.
    identify: bool = False
    #: Follow links to targets outside the glob's base directory (see the module doc).
    follow_symlinks: bool = False
    #: How long a new file shorter than FINGERPRINT_BYTES whose bytes so far are the
    #: start of a followed file waits before it is read as a new file (a copy being
    #: written is complete well within it).
    identify_wait: float = 1.0
