"""What a tailer is told: TailerConfig, and the options programs declare for it once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..options import option

FOLLOW_SYMLINKS_HELP = (
    "follow symbolic links to files outside the glob's base directory; anyone who can "
    "write the volume can then make the program read any file it can read (FIFOs, "
    "devices, /proc, /sys and /dev stay refused)"
)


#: Most frequent checkpoint write. A kill -9 resends what was acknowledged since
#: the last write (plus what was in flight): at 100k lines/s, 50 ms is 5,000
#: lines, under 1% of a 10 s run (measured in docs/benchmarks.md). A write is
#: one small file, fsync'd: about 3 ms of disk and 0.3 ms of CPU here.
CHECKPOINT_INTERVAL = 0.05


def checkpoint_interval_option() -> Any:
    """`--checkpoint-interval`, declared once for every program that checkpoints a tailer."""
    return option(
        f"{int(CHECKPOINT_INTERVAL * 1000)}ms",
        kind="duration",
        min=0,
        help="most frequent checkpoint write: after a kill -9, what was acknowledged "
        "within it (and what was in flight) is sent again",
    )


def follow_symlinks_option() -> Any:
    """The `--follow-symlinks` option, declared once for every program that tails files."""
    return option(False, help=FOLLOW_SYMLINKS_HELP, env_alias=False)


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
