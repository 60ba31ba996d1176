"""Option combinations: every usage error names its flag (exit 2, one line)."""

from __future__ import annotations

import pytest
from podkit.adapters.logformat import LogFormat

from podkit import UsageError
from podkit.runner import configure


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--format", "nginx"], "--path or --stdin"),
        (["--stdin", "--path", "/x", "--format", "nginx"], "--path or --stdin"),
        (["--stdin"], "--format is required"),
        (["--stdin", "--format", "gork"], "--format: unknown format"),
        (["--stdin", "--format", "grok"], "--format: format 'grok' needs an argument"),
        (["--stdin", "--format", "grok:%{NOPE:x}"], "--format: grok: %{NOPE}: no such pattern"),
        (["--stdin", "--format", "grok:%{IP}"], "--format: grok:%{IP}: no named capture"),
        (["--stdin", "--format", "grok:%{WORD:w:bool}"], "type must be int or float"),
        (["--stdin", "--format", "nginx,"], "--format: unknown format ''"),
        (["--stdin", "--format", "nginx,nope,json"], "--format: unknown format 'nope'"),
        (
            ["--stdin", "--format", "grok:%{WORD:x}", "--grok-patterns-file", "/nonexistent/p"],
            "--grok-patterns-file: /nonexistent/p",
        ),
        (["--stdin", "--format", "regex:(?P<x>"], "--format: regex"),
        (["--stdin", "--format", "nginx", "--timezone", "Mars/Base"], "--timezone"),
        (["--stdin", "--format", "nginx", "--time-format", "yyyy-mm-dd"], "--time-format"),
        (["--stdin", "--format", "nginx", "--time-format", "unix_fortnights"], "--time-format"),
        (["--stdin", "--format", "nginx", "--multiline-start", "("], "--multiline-start"),
        (["--stdin", "--format", "nginx", "--multiline-max-lines", "0"], "--multiline-max-lines"),
        (["--stdin", "--format", "nginx", "--output", "http://x/"], "--output"),
        (["--stdin", "--format", "nginx", "--output", "file://host/x"], "--output"),
        (["--stdin", "--format", "nginx", "--max-line-bytes", "10"], "--max-line-bytes"),
        (["--stdin", "--format", "nginx", "--read-from", "middle"], "--read-from"),
    ],
)
def test_usage_errors(argv: list[str], flag: str) -> None:
    with pytest.raises(UsageError) as exc:
        configure(LogFormat, argv, env={})
    assert flag in str(exc.value)
    assert "\n" not in str(exc.value)


def test_env_and_defaults() -> None:
    p = configure(
        LogFormat,
        ["--format", "logfmt"],
        env={"PODKIT_PATH": "/logs/a.log,/logs/b*.log", "PODKIT_TIMEZONE": "+02:00"},
    )
    assert isinstance(p, LogFormat)
    assert p.tailing.path == ["/logs/a.log", "/logs/b*.log"]
    assert p.admin_addr == "127.0.0.1:9415"
    assert p.sink_url == "stdout://"
    assert p.tailing.state_dir == "/var/lib/podkit/logformat"
    assert p.joining.timeout == 3.0 and p.tailing.max_line_bytes == 256 * 1024
    p = configure(LogFormat, ["--stdin", "--format", "json", "--output", "file:///tmp/o.ndjson"])
    assert isinstance(p, LogFormat) and p.sink_url == "file:///tmp/o.ndjson"
