"""Reading: bytes of a file to lines (podkit.linesplit), chunks with exact byte
spans, held partial lines, multiline joining, read-ahead bounds."""

from __future__ import annotations

import os
import time

from ..linesplit import cut_long, decode_cut
from ..multiline import Joiner
from .base import _Base, log
from .files import FINGERPRINT_BYTES, Chunk, _File


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
                data = os.pread(f.fd, n, f.read_pos)
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
        if (got == 0 or f.read_pos >= f.size) and not f.at_eof:
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
        if f.flushed_partial:
            f.flushed_partial = False
            if data[:1] == b"\n" and not f.skipping:
                # The newline that ends the line already handed on: not an empty line.
                data = data[1:]
                start += 1
        texts: list[str] = []
        trunc: list[int] = []
        sizes: list[int] | None = [] if f.joiner is not None else None
        end = -1  # file offset just after the last newline seen
        limit = self.cfg.max_line_bytes
        if f.skipping:
            i = data.find(b"\n")
            if i < 0:
                return  # still inside the over-long line: discard without buffering
            if f.head is not None:
                trunc.append(0)
                texts.append(decode_cut(f.head))
                if sizes is not None:
                    sizes.append(0)  # gets the remainder of the span below
                f.head = None
            f.skipping = False
            end = start + i + 1
            data = data[i + 1 :]
            start = end
        if f.carry:
            start -= len(f.carry)
            data = f.carry + data
            f.carry = b""
        cut = data.rfind(b"\n")
        exact = False  # str lengths of `parts` are their byte lengths
        parts: list[str] = []
        if cut >= 0:
            block = memoryview(data)[:cut]  # no copy of the (1 MiB) block
            rest = data[cut + 1 :]
            end = start + cut + 1
            text = str(block, "utf-8", "replace")
            parts = text.split("\n")
            # Equal lengths mean one byte per character, so str lengths are byte lengths.
            exact = len(text) == len(block)
            if len(block) > limit:
                if exact:
                    too_long = max(map(len, parts)) > limit
                else:
                    too_long = max(map(len, data[:cut].split(b"\n"))) > limit
                if too_long:
                    exact = False
                    parts, cut_idx = cut_long(data[:cut], limit)
                    trunc.extend(len(texts) + i for i in cut_idx)
            if texts:
                texts.extend(parts)
            else:
                texts = parts
            if sizes is not None:
                sizes.extend(len(b) + 1 for b in data[:cut].split(b"\n"))
        else:
            rest = data
        if len(rest) > limit:
            f.head = rest[:limit]
            f.skipping = True
            f.carry_since = time.monotonic()
            rest = b""
        elif rest:
            f.carry_since = time.monotonic()
        f.carry = rest
        if not texts:
            return
        mcl = self.cfg.max_chunk_lines
        if f.joiner is None and mcl and len(texts) > mcl:
            self._queue_split(f, texts, trunc, end - f.emit_pos, parts, exact, data[:cut], mcl)
        else:
            held = f.joiner.pending_bytes if f.joiner is not None else 0
            self._emit(f, texts, trunc, end - f.emit_pos - held, sizes)

    def _queue_split(
        self,
        f: _File,
        texts: list[str],
        trunc: list[int],
        span: int,
        parts: list[str],
        exact: bool,
        block: bytes,
        most: int,
    ) -> None:
        """Queue `texts` as chunks of at most `most` lines, each with its byte span.

        `parts` are the block's lines (the tail of `texts`); spans are summed in C
        over their str lengths when those equal byte lengths, else over the
        block's byte lines. The first chunk takes the remainder (a skipped
        over-long line before the block belongs to it).
        """
        src: list[str] | list[bytes] = parts if exact else block.split(b"\n")
        off = len(texts) - len(parts)
        starts = range(0, len(texts), most)
        spans = [
            sum(map(len, src[a - off : min(a + most, len(texts)) - off]))
            + min(a + most, len(texts))
            - a
            for a in starts[1:]
        ]
        spans.insert(0, span - sum(spans))
        for a, sp in zip(starts, spans, strict=True):
            b = min(a + most, len(texts))
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
        if f.joiner is not None:
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
        if not line:
            pass
        elif f.head is not None:
            trunc.append(0)
            texts.append(decode_cut(f.head))
            f.head = None  # the rest of the line, if more comes, is still skipped
        elif f.carry:
            texts.append(f.carry.decode("utf-8", "replace"))
            f.carry = b""
            f.flushed_partial = True
            f.partial_at = f.read_pos
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
                (f.carry or f.head is not None)
                and now - f.carry_since >= timeout
                and self._at_end(f)  # not merely paused mid-file (sink down, consumer behind)
            )
            record_due = f.joiner is not None and f.joiner.due(now)
            if line_due or record_due:
                self._flush_partial(f, line=bool(line_due))

    def _at_end(self, f: _File) -> bool:
        try:
            return os.fstat(f.fd).st_size <= f.read_pos
        except OSError:
            return True
