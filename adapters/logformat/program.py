"""logformat: the app's own log format in, one JSON object per record out.

The logging adapter of a pod: the app writes nginx, syslog, klog, logfmt, JSON
or its own format (to files in a shared volume, or to a pipe); this program
presents every record to the cluster as one JSON line with one schema:

    {"time": RFC 3339 UTC, "level": debug|info|warning|error|critical,
     "message": ..., "source": file or "stdin", ...fields in snake_case}

`time` is the record's own timestamp when it has one, else the read time. A
line that does not parse is passed through whole with `"parse_error": true`:
nothing is dropped. Files are read by the core tailer (checkpoints, rotation,
multiline joining as in logship); output goes to a core sink (stdout, file).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from podkit import Sidecar, UsageError, option, rfc3339_ns
from podkit.aio import wait_for
from podkit.grok import GrokError, load_patterns
from podkit.logparse.parsers import Settings, create, names
from podkit.logparse.timeparse import Clock, parse_timezone
from podkit.multiline import MultilineOptions
from podkit.program import writable_dir_problem
from podkit.sinks import NdjsonBatch, SinkClosed
from podkit.stacktrace import MODES, start_pattern
from podkit.tailer import TailingOptions, watch_log_volume

from .convert import Converter
from .stdin import LineSplitter, read_stdin


class LogFormat(Sidecar):
    """Normalise an app's own log format (nginx, Apache, syslog, klog, grok, ...) into JSON lines.

    Reads files (--path, with checkpoints and rotation) or standard input
    (--stdin), parses each record with --format, and writes one JSON object
    per record to --output: time, level, message, source, then the parsed
    fields. Lines that do not parse pass through with parse_error: true.
    """

    name = "logformat"
    examples = """\
podkit logformat --path '/var/log/nginx/*.log' --format nginx --state-dir /tmp/logformat
podkit logformat --stdin --format nginx,json,logfmt < app.log
podkit logformat --path '/logs/app*.log' --format python --multiline python
"""
    default_admin_addr = "127.0.0.1:9415"

    # --path, --exclude, --state-dir, the reading limits: what every program that
    # tails declares (podkit.tailer.TailingOptions).
    tailing: TailingOptions = TailingOptions.include(
        defaults={"state_dir": "/var/lib/podkit/logformat"}
    )
    stdin: bool = option(False, help="read records from standard input instead of files")
    format: str = option(
        required=True,
        metavar="FORMAT",
        help="nginx, apache-combined, apache-common, apache-error, logfmt, syslog, klog, json, "
        "grok:EXPRESSION, regex:PATTERN, ... (see docs/logformat.md); a comma-separated chain "
        "such as nginx,json,logfmt tries each in order per line",
    )
    grok_patterns_file: list[str] = option(
        repeat=True,
        kind="path",
        metavar="FILE",
        help="extra grok patterns (`NAME regex` per line, Logstash's syntax); repeatable",
    )
    kv_field_delimiter: str = option(
        " ", metavar="TEXT", help="key_value: between pairs (a space means any whitespace)"
    )
    kv_value_delimiter: str = option("=", metavar="TEXT", help="key_value: between key and value")
    csv_delimiter: str = option(",", metavar="CHAR", help="csv: between columns")
    output: str = option("stdout", metavar="URL", help="stdout, or file:///path to append to")
    multiline: str | None = option(
        None,
        choices=MODES,
        metavar="MODE",
        help="stack traces: join java, python, go, ruby, node or dotnet traces (or auto) to "
        "the record before them and parse them into an `error` object",
    )
    joining: MultilineOptions = MultilineOptions.include(prefix="multiline-")
    time_format: str | None = option(
        None,
        metavar="STRPTIME",
        help="format of the record's timestamp (strptime, e.g. '%d/%m/%Y %H:%M:%S'), "
        "or unix, unix_ms, unix_us, unix_ns",
    )
    timezone: str = option(
        "UTC",
        metavar="ZONE",
        help="zone of timestamps that carry none: UTC, local, +02:00, Europe/Berlin",
    )

    def __init__(self) -> None:
        super().__init__()
        # The admin server answers `/` before setup() has run: start from "nothing yet".
        self.tailer: Any = None
        self.last_output_ns = 0

    # -- configuration -------------------------------------------------------

    def validate(self) -> None:
        if bool(self.tailing.path) == bool(self.stdin):
            raise UsageError("--path or --stdin: give exactly one of them")
        try:
            self.clock = Clock(parse_timezone(self.timezone), self.time_format)
        except ValueError as exc:
            raise UsageError(f"--timezone: {exc}") from None
        if (
            self.time_format
            and not self.time_format.startswith("unix")
            and "%" not in self.time_format
        ):
            raise UsageError(f"--time-format: {self.time_format!r} has no % directive")
        if self.time_format and self.time_format.startswith("unix") and self.time_format not in (
            "unix", "unix_ms", "unix_us", "unix_ns",
        ):  # fmt: skip
            raise UsageError("--time-format: unix, unix_ms, unix_us or unix_ns")
        settings = Settings(
            kv_field_delimiter=self.kv_field_delimiter,
            kv_value_delimiter=self.kv_value_delimiter,
            csv_delimiter=self.csv_delimiter,
        )
        for path in self.grok_patterns_file:
            try:
                settings.grok_patterns.update(load_patterns(path))
            except GrokError as exc:
                raise UsageError(f"--grok-patterns-file: {exc}") from None
        try:
            self.parser = create(self.format, self.clock, settings)
        except ValueError as exc:
            raise UsageError(f"--format: {exc}") from None
        self.converter = Converter(self.parser, self.format, self.multiline)
        # --multiline-start, when given, decides the joining; else the mode's own rule.
        self.start_regex = self.joining.start or (
            start_pattern(self.multiline) if self.multiline else None
        )
        if self.tailing.max_line_bytes < 64:
            raise UsageError("--max-line-bytes: must be at least 64 bytes")
        out = self.output.strip()
        if out in ("stdout", "-", "stdout://"):
            self.sink_url = "stdout://"
        elif out.startswith("file:"):
            self.sink_url = out
        else:
            raise UsageError(f"--output: {self.output!r} is neither stdout nor file:///path")
        from podkit.sinks import open_sink

        try:
            self.sink = open_sink(self.sink_url, on_event=self._sink_event)
        except UsageError as exc:
            raise UsageError(str(exc).replace("--sink", "--output", 1)) from None

    def config_problems(self) -> list[str]:
        """--check-config: each --path glob's directory is there (its volume is
        mounted), the state and output directories can be written."""
        problems: list[str | None] = []
        if self.tailing.path:
            problems += self.tailing.problems()
        if self.sink_url.startswith("file:"):
            target = urlsplit(self.sink_url).path
            problems.append(writable_dir_problem("--output", os.path.dirname(target) or "/"))
        return [p for p in problems if p]

    # -- lifecycle -------------------------------------------------------------

    async def setup(self) -> None:
        fmt = self.format.partition(":")[0]
        self.m_records = self.metrics.counter(
            "records_total", "Records written, by input format (parse errors included).", ["format"]
        ).labels(fmt)
        self.m_errors = self.metrics.counter(
            "parse_errors_total", "Records that did not parse and were passed through whole."
        )
        self.m_lag = self.metrics.gauge(
            "lag_bytes",
            "Bytes written to the followed files but not yet converted and written out.",
        )
        self.m_lag.set_function(self._lag)
        await self.sink.start()

    def _lag(self) -> float:
        return float(self.tailer.lag_bytes) if self.tailer is not None else 0.0

    async def cleanup(self) -> None:
        if self.tailer is not None:
            await self.tailer.close()
        await self.sink.close()

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": self.format,
            "input": "stdin" if self.stdin else self.tailing.path,
            "output": self.sink_url,
            "records": self.converter.records,
            "parse_errors": self.converter.parse_errors,
            "last_output": rfc3339_ns(self.last_output_ns) if self.last_output_ns else None,
        }
        if self.tailer is not None:
            data["lag_bytes"] = self.tailer.lag_bytes
            data["files"] = self.tailer.files()
            data["skipped"] = self.tailer.skipped_files()
        return data

    async def _write(self, records: NdjsonBatch) -> None:
        # The sink retries transient failures itself (a full disk, a closed
        # pipe reader coming back) for as long as it takes; meanwhile the input
        # is not acknowledged, so nothing read is lost and nothing is buffered
        # beyond this batch.
        await self.sink.send(records)
        self.m_records.inc(len(records))
        self.last_output_ns = time.time_ns()

    def _sink_event(self, kind: str, _n: int) -> None:
        if kind == "retry":
            # The sink sets last_error right after announcing the retry.
            asyncio.get_running_loop().call_soon(self._sink_failing)

    def _sink_failing(self) -> None:
        self.record_error(
            "output", f"writing to {self.output} failed: {self.sink.last_error}; retrying"
        )

    def health(self) -> str | None:
        sink = getattr(self, "sink", None)
        if sink is not None and sink.failing_since is not None:
            return f"output failing: {sink.last_error}"
        return None

    def _count_errors(self, before: int) -> None:
        n = self.converter.parse_errors - before
        if n:
            self.m_errors.inc(n)

    async def _emit(
        self, texts: list[str], source: str, read_ns: int, truncated: Any = frozenset()
    ) -> None:
        if not texts:
            return
        before = self.converter.parse_errors
        records = self.converter.convert(texts, source, read_ns, truncated)
        self._count_errors(before)
        await self._write(records)

    async def run(self) -> None:
        try:
            await (self._run_files() if not self.stdin else self._run_stdin_bounded())
            if self.stdin and self.exit_code is None:
                # The end of the piped input is a finish on purpose, not the
                # sidecar dying (the runner warns about a run() that just ends).
                self.exit_code = 0
        except SinkClosed as exc:
            # Permanent (`logformat --stdin ... | head`): stop rather than retry
            # forever. With --path the unwritten chunk was not acknowledged, so
            # the checkpoint written at cleanup resumes from it.
            self.record_error("output", f"output closed: {exc}")
            self.log.error("output closed; stopping", extra={"error": str(exc)})
            self.exit_code = 1

    async def _run_stdin_bounded(self) -> None:
        reader = asyncio.create_task(self._run_stdin(), name="logformat-stdin")
        if not await self.until_stopped(reader):
            # Stopping: _run_stdin writes what it has read and returns, unless
            # the output is stuck (the sink retries forever); bound that, so
            # the runner's deadline never has to shoot the process.
            try:
                await wait_for(asyncio.shield(reader), self.shutdown_timeout * 0.8)
            except TimeoutError:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
                # Unlike files there is no checkpoint to resume from: say so, exit 1.
                self.log.error("shutdown: output blocked; lines read from stdin were lost")
                self.exit_code = 1
                return
        reader.result()

    # -- files -----------------------------------------------------------------

    async def _run_files(self) -> None:
        from podkit.tailer import Tailer, register_metrics

        try:
            os.makedirs(self.tailing.state_dir, exist_ok=True)
        except OSError as exc:
            where = self.tailing.state_dir
            raise UsageError(f"--state-dir {where}: {exc.strerror or exc}") from None
        self.tailer = Tailer(self.tailing.config(self.joining, multiline_start=self.start_regex))
        register_metrics(self.metrics, lambda: self.tailer)
        await self.tailer.start()
        watch_log_volume(self, self.tailing.path, self.tailer.files_watched)
        self.set_ready()
        consumer = asyncio.create_task(self._consume(), name="logformat-consume")
        if await self.until_stopped(consumer):
            return  # the input ended (its error, if any, raised)
        # SIGTERM: the app has stopped (native sidecars stop after it), so read
        # what it wrote last to the end, write it out, then checkpoint in
        # cleanup(). Bounded, so the runner's deadline never has to shoot us.
        try:
            await wait_for(self.tailer.drain(), max(0.5, self.shutdown_timeout * 0.5))
            await wait_for(consumer, max(0.5, self.shutdown_timeout * 0.2))
        except TimeoutError:
            self.log.warning("shutdown: input not fully drained; the checkpoint resumes it")
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    async def _consume(self) -> None:
        assert self.tailer is not None
        async for chunk in self.tailer.chunks():
            await self._emit(chunk.texts, chunk.path, chunk.read_time_ns, chunk.truncated)
            self.tailer.ack(chunk)

    # -- stdin -----------------------------------------------------------------

    async def _run_stdin(self) -> None:
        """Read fd 0 until EOF (then exit 0) or SIGTERM (flush what was read, exit 0)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=16)
        reader = threading.Thread(
            target=read_stdin, args=(loop, queue), name="logformat-stdin", daemon=True
        )
        # A thread, not add_reader: fd 0 may be a regular file, which epoll
        # refuses. Daemon, because a read blocked on a silent pipe cannot be
        # interrupted, and it must not hold the process at exit.
        reader.start()
        # The same limits as the tailer gives a file's joiner: a joined record
        # is cut at --max-line-bytes too.
        joiner = self.joining.joiner(self.start_regex, self.tailing.max_line_bytes)
        lines = LineSplitter(self.tailing.max_line_bytes)
        self.set_ready()
        get: asyncio.Task[bytes | None] | None = None
        eof = False
        while True:
            if get is None:
                get = asyncio.create_task(queue.get())
            timeout = self.joining.timeout if joiner is not None and joiner.pending else None
            try:
                async with asyncio.timeout(timeout):
                    got = await self.until_stopped(get)  # data first, even with a stop
            except TimeoutError:  # a held record waited long enough
                if joiner is not None and joiner.due():
                    texts, trunc, _ = joiner.flush()
                    await self._emit(texts, "stdin", time.time_ns(), trunc)
                continue
            if not got:
                break
            data, get = get.result(), None
            if data is None:
                eof = True
                break
            await self._stdin_block(lines.feed(data), joiner)
        if get is not None:
            get.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await get
        # SIGTERM: write what the pipe already handed over, nothing more.
        while not eof and not queue.empty():
            data = queue.get_nowait()
            if data is None:
                break
            await self._stdin_block(lines.feed(data), joiner)
        await self._stdin_block(lines.finish(), joiner)
        if joiner is not None:
            texts, trunc, _ = joiner.flush()
            await self._emit(texts, "stdin", time.time_ns(), trunc)
        if eof:
            self.log.info("end of input", extra={"records": self.converter.records})

    async def _stdin_block(self, block: tuple[list[str], list[int]], joiner: Any) -> None:
        texts, trunc = block
        if not texts:
            return
        now = time.time_ns()
        if joiner is not None:
            texts, out_trunc, _ = joiner.feed(texts, [len(t) + 1 for t in texts], set(trunc))
            trunc = out_trunc
        await self._emit(texts, "stdin", now, trunc)


def main() -> None:
    LogFormat.main()


__all__ = ["Converter", "LogFormat", "main", "names"]
