"""Follow log files: discovery, identity, checkpoints, rotation, at-least-once.

The on-disk contract, stated once:

* A file is identified by device + inode + a fingerprint (SHA-1) of its first
  `FINGERPRINT_BYTES` bytes (fewer while the file is shorter). A reused inode
  with different first bytes is a new file; a file shorter than its offset was
  truncated (copytruncate) and starts again at 0.
* The same content is the same stream: a new inode whose first
  `FINGERPRINT_BYTES` bytes are those of a followed file (copytruncate's copy
  seen before the truncation, `cp`) waits as that file's twin and takes over
  its position when it is truncated or goes; one whose first bytes are those
  of a checkpoint entry no inode claims (a copy made, or a file moved to
  another filesystem, while we were stopped) resumes from that entry's
  offset. Shorter files are never matched by content (a banner line is not
  an identity), and a new file whose bytes so far are the start of a followed
  file waits up to `identify_wait` before it is read as new. The first bytes
  are confirmed by the `TAIL_BYTES` bytes before the position (a checkpoint
  entry's `tail`, a SHA-1): a file that only starts alike (a long banner) or
  was rewritten in place with the same start is read as its own stream.
  Identities of files gone are remembered (at most `MAX_REMEMBERED`) for a
  copy that turns up late.
* Compressed files (gzip; zstd with the `zstandard` module) are known by
  their first bytes and read at uncompressed offsets with the fingerprint of
  their content (`compressed`): a rotation compressed before it was finished
  is finished from inside it.
* `<state_dir>/checkpoints.json` holds, for every open file, the offset up to
  which the consumer acknowledged every line (`ack()`): never an offset that
  was only read. It is replaced atomically (temp file, fsync, rename, fsync of
  the directory) at most once per `checkpoint_interval` and at `close()`.
* A renamed file is kept open and read to its end before its successor at the
  same path is read; it is closed once it has been idle at EOF for
  `rotate_wait` and no glob matches it any more. After a restart, a
  checkpointed file that was renamed away is looked up by inode in its old
  directory and read to its end first.
* Files are opened without following symbolic links out of the glob: every
  path component below the glob's base directory (the part of the pattern
  before its first wildcard) is opened with `O_NOFOLLOW` relative to the one
  before it, and a link is resolved and followed only when its target lies
  inside that base directory. `follow_symlinks` lifts that limit (a writer of
  the volume can then make the program read any file it can read). Either
  way, FIFOs, devices and sockets, and with `follow_symlinks` anything under
  /proc, /sys or /dev, are never opened; a link loop is reported, never
  followed, and never stops discovery. Each refused path is logged once and
  counted by reason (`skipped`).
* A checkpoint entry that is not what this module writes (wrong types,
  negative or impossible values, an offset beyond the end of the file, a
  fingerprint longer than the file) is discarded with one warning, and its
  file is read as a file seen for the first time (from 0 when the offset is
  beyond its end: the file was truncated while we were away); an unreadable
  checkpoint file likewise for all files. A checkpoint that cannot be written
  (full disk) leaves the previous one in place, is logged once, and is
  retried at the next interval.
* A last line without newline is held until the newline arrives or
  `partial_flush_timeout` passes (and at drain). A line longer than
  `max_line_bytes` is cut to that length and marked truncated; the rest of it
  is skipped without buffering it. Invalid UTF-8 is replaced (U+FFFD).

The hot path reads `chunk_bytes` (1 MiB) at a time, decodes the block once and
splits it once; per-line Python work happens only for over-long lines or when
multiline joining is on. Reading pauses while more than `max_buffer_bytes` of
read lines are unacknowledged, so memory stays bounded when the consumer
(a sink that is down) stalls: the files themselves are the buffer.

The package is split along that contract: `discovery` (globs, safe opening),
`files` and `rotation` (identity: inode, fingerprint, rename, copytruncate,
moves, hard links), `reading` (bytes to chunks of lines, with
`podkit.linesplit`), `checkpoints`, and `core` (the Tailer and its loop).
"""

from __future__ import annotations

from ..linesplit import cut_long, decode_cut
from .checkpoints import CHECKPOINT_FILE, MAX_CHECKPOINT_BYTES, checkpoint_entry_error
from .config import (
    CHECKPOINT_INTERVAL,
    FOLLOW_SYMLINKS_HELP,
    TailerConfig,
    TailingOptions,
)
from .core import Tailer, register_metrics
from .discovery import MAX_DEPTH, SKIP_REASONS, missing_bases, watch_log_volume
from .files import FINGERPRINT_BYTES, Chunk, Line, _File

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_INTERVAL",
    "FINGERPRINT_BYTES",
    "FOLLOW_SYMLINKS_HELP",
    "MAX_CHECKPOINT_BYTES",
    "MAX_DEPTH",
    "SKIP_REASONS",
    "Chunk",
    "Line",
    "Tailer",
    "TailerConfig",
    "TailingOptions",
    "_File",
    "checkpoint_entry_error",
    "cut_long",
    "decode_cut",
    "missing_bases",
    "register_metrics",
    "watch_log_volume",
]
