"""Reading: bytes of a file to lines (podkit.linesplit), chunks with exact byte
spans, held partial lines, multiline joining, read-ahead bounds."""

from __future__ import annotations

import os
import time

from ..multiline import Joiner
from .base import _Base, log
from .files import FINGERPRINT_BYTES, TAIL_BYTES, Chunk, _File


class _Reader(_Base):
    """Bytes of the open files to queued chunks of lines."""

    def _ready(self, f: _File) -> bool:
        if f.twin is not None:
            return False
        a = f.after
        if a is None:
            return True
        return a.closed or a.at_eof

    def _read_round(self, now: float) -> bool:
        progressed = False
        for f in list(self._files):
            if self._full():
                return True
            if f.closed or not self._ready(f):
                continue
            if self._read_file(f, self.cfg.fair_share_bytes):
                progressed = True
        return progressed

    def _read_file(self, f: _File, budget: int) -> bool:
        """Read up to `budget` bytes of `f`; True when something was read."""
        try:
            st = os.fstat(f.fd)
        except OSError:
            return False
        if f.compressed:
            # A finished rotation: no truncation to look for, no size to compare with.
            if f.unverified:
                return self._identify(f)
        else:
            f.size = st.st_size
            if f.unverified and st.st_size:
                return self._identify(f)
            if st.st_size < f.read_pos:
                self._truncated(f)
            elif f.at_eof and st.st_size > f.read_pos and not f.fingerprint_matches():
                # Growth after idling at EOF: cheap moment to catch truncate-and-regrow.
                self._truncated(f)
        if not self._ready(f):
            return True  # its copy (copytruncate) goes first
        got = 0
        n = self.cfg.chunk_bytes
        while got < budget and not self._full():
            try:
                data = f.read_at(n, f.read_pos)
            except OSError as exc:
                if not f.read_failing:  # once until a read works again, not every round
                    f.read_failing = True
                    self.read_errors += 1
                    log.warning("read failed", extra={"path": f.path, "error": str(exc)})
                return got > 0
            f.read_failing = False
            if not data:
                break
            got += len(data)
            f.at_eof = False
            self._consume(f, data)
            if f.fp_len < FINGERPRINT_BYTES:
                f.update_fingerprint()  # while small, so identity and copies stay telling
            if len(data) < n:
                break
        if (got == 0 or (not f.compressed and f.read_pos >= f.size)) and not f.at_eof:
            f.at_eof = True
            f.eof_since = time.monotonic()
            if f.is_copy:
                # Its last line is complete as it is; hand it on before the successor's.
                self._flush_partial(f, force=True)
        if f.read_pos > f.size:
            f.size = f.read_pos
        return got > 0

    def _new_joiner(self) -> Joiner | None:
        if self._multiline is None:
            return None
        return Joiner(
            self._multiline,
            self.cfg.multiline_max_lines,
            self.cfg.multiline_timeout,
            self.cfg.max_line_bytes,
        )

    def _consume(self, f: _File, data: bytes) -> None:
        """Split freshly read bytes into lines and queue them.

        Offsets are positional: a chunk spans from the end of what was handed
        on before (plus what the joiner holds) to just after its last newline,
        so bytes skipped inside an over-long line are covered by the next chunk.
        """
        start = f.read_pos  # file offset of data[0]
        f.read_pos += len(data)
        f.tail = data[-TAIL_BYTES:] if len(data) >= TAIL_BYTES else (f.tail + data)[-TAIL_BYTES:]
        r = f.split.feed(data)
        if r.held:
            f.carry_since = time.monotonic()
        texts = r.texts
        if not texts:
            return
        end = start + r.end  # file offset just after the last newline consumed
        mcl = self.cfg.max_chunk_lines
        if f.joiner is None and mcl and len(texts) > mcl:
            self._queue_split(f, texts, r.trunc, end - f.emit_pos, r.lead, r.lengths(), mcl)
        else:
            sizes = None
            if f.joiner is not None:
                # The cut start of an over-long line gets the remainder of the span in _emit.
                sizes = [0] * r.lead + [n + 1 for n in r.lengths()]
            held = f.joiner.pending_bytes if f.joiner is not None else 0
            self._emit(f, texts, r.trunc, end - f.emit_pos - held, sizes)

    def _queue_split(
        self,
        f: _File,
        texts: list[str],
        trunc: list[int],
        span: int,
        lead: int,
        lengths: list[int],
        most: int,
    ) -> None:
        """Queue `texts` as chunks of at most `most` lines, each with its byte span.

        `lengths` are the byte lengths of texts[lead:] (summed in C). The first
        chunk takes the remainder (a skipped over-long line before the block
        belongs to it).
        """
        n = len(texts)
        starts = range(0, n, most)
        spans = [
            sum(lengths[a - lead : min(a + most, n) - lead]) + min(a + most, n) - a
            for a in starts[1:]
        ]
        spans.insert(0, span - sum(spans))
        for a, sp in zip(starts, spans, strict=True):
            b = min(a + most, n)
            self._queue_chunk(f, texts[a:b], [i - a for i in trunc if a <= i < b], sp)

    def _emit(
        self, f: _File, texts: list[str], trunc: list[int], span: int, sizes: list[int] | None
    ) -> None:
        if f.joiner is not None:
            assert sizes is not None
            # Whatever precedes the first line (skipped bytes) belongs to its record.
            sizes[0] += span - sum(sizes)
            texts, trunc, span = f.joiner.feed(texts, sizes, set(trunc))
            if not texts:
                return
            most = self.cfg.max_chunk_lines
            if most and len(texts) > most:
                rs = f.joiner.last_sizes
                for a in range(0, len(texts), most):
                    b = min(a + most, len(texts))
                    tr = [i - a for i in trunc if a <= i < b]
                    self._queue_chunk(f, texts[a:b], tr, sum(rs[a:b]), rs[a:b])
                return
            self._queue_chunk(f, texts, trunc, span, list(f.joiner.last_sizes))
            return
        self._queue_chunk(f, texts, trunc, span)

    def _queue_chunk(
        self,
        f: _File,
        texts: list[str],
        trunc: list[int],
        span: int,
        sizes: list[int] | None = None,
    ) -> None:
        begin = f.emit_pos
        f.emit_pos += span
        chunk = Chunk(f, f.path, texts, frozenset(trunc), time.time_ns(), f.emit_pos, span)
        if self.cfg.identify:
            # Read now, while the fd is surely this file's (a retired file's fd is closed).
            chunk.file_key = f.key
            chunk.file_head = f.read_fingerprint(FINGERPRINT_BYTES)
            chunk.starts = self._starts(f, texts, begin, span, sizes)
        f.outstanding.append(chunk)
        self._inflight += span
        self._queued += span
        self.lines_read += len(texts)
        self.bytes_read += span
        self.truncated_lines += len(trunc)
        self._queue.put_nowait(chunk)

    def _starts(
        self, f: _File, texts: list[str], begin: int, span: int, sizes: list[int] | None
    ) -> list[int] | None:
        """Exact start offsets of `texts` (only with `identify`: it reads the span again).

        Texts decoded with replacements or cut at max_line_bytes no longer tell
        their byte length, so the span's raw bytes are split once more (from the
        page cache); joined records bring their sizes from the joiner.
        """
        if sizes is not None and len(sizes) == len(texts) and sum(sizes) == span:
            out, pos = [], begin
            for n in sizes:
                out.append(pos)
                pos += n
            return out
        if f.joiner is not None or f.compressed:
            return None
        try:
            raw = os.pread(f.fd, span, begin)
        except OSError:
            return None
        if len(raw) != span:
            return None
        pos = begin
        if raw.startswith(b"\n") and raw.count(b"\n") == len(texts) + (raw[-1:] == b"\n"):
            # The newline of a line handed on before it came: not a line of its own.
            raw = raw[1:]
            pos += 1
        lines = raw.split(b"\n")
        if raw.endswith(b"\n"):
            lines.pop()
        if len(lines) != len(texts):
            return None
        out = []
        for line in lines:
            out.append(pos)
            pos += len(line) + 1
        return out

    def _flush_partial(self, f: _File, force: bool = False, line: bool = True) -> None:
        """Hand on a held last line (`line`) and the joiner's record (when due or `force`)."""
        texts: list[str] = []
        trunc: list[int] = []
        held = f.joiner.pending_bytes if f.joiner is not None else 0
        span = 0
        got = f.split.flush() if line else None
        if got is not None:
            texts.append(got[0])
            if got[1]:
                trunc.append(0)  # the rest of the line, if more comes, is still skipped
            else:
                f.partial_at = f.read_pos  # kept in the checkpoint: skip that newline
        if texts:
            span = f.read_pos - f.emit_pos - held
        if f.joiner is not None:
            if texts:
                texts, trunc, span = f.joiner.feed(texts, [span], set(trunc))
            if force or f.joiner.due():
                t3, tr3, s3 = f.joiner.flush()
                trunc += [len(texts) + i for i in tr3]
                texts += t3
                span += s3
        if texts:
            self._queue_chunk(f, texts, trunc, span)

    def _flush_due(self, now: float) -> None:
        timeout = self.cfg.partial_flush_timeout
        for f in self._files:
            line_due = (
                f.split.pending
                and now - f.carry_since >= timeout
                and self._at_end(f)  # not merely paused mid-file (sink down, consumer behind)
            )
            record_due = f.joiner is not None and f.joiner.due(now)
            if line_due or record_due:
                self._flush_partial(f, line=bool(line_due))

    def _at_end(self, f: _File) -> bool:
        if f.compressed:
            return f.at_eof
        try:
            return os.fstat(f.fd).st_size <= f.read_pos
        except OSError:
            return True
