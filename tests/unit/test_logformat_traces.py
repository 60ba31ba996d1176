"""Built-in multiline modes: which lines join, and the trace parsed into `error`.

Samples are the runtimes' own documented layouts (named per row); the real
Python, JVM and Node traces are in tests/integration/test_logformat_traces.py.
"""

from __future__ import annotations

import json
import re

import pytest
from podkit.adapters.logformat import Converter
from podkit.adapters.logformat.parsers import create
from podkit.adapters.logformat.timeparse import Clock

from podkit.multiline import Joiner
from podkit.stacktrace import MODES, parse_trace, start_pattern

# Go: the runtime's panic output (runtime/panic.go; `go run` adds the exit status)
GO = """panic: runtime error: index out of range [5] with length 3

goroutine 1 [running]:
main.lookup(...)
\t/app/main.go:8
main.main()
\t/app/main.go:12 +0x1d
exit status 2"""
# Ruby: Exception#full_message (3.4 quotes with ')
RUBY = """app.rb:3:in 'Integer#/': divided by 0 (ZeroDivisionError)
\tfrom app.rb:3:in 'Object#divide'
\tfrom app.rb:7:in '<main>'"""
# .NET: Exception.ToString() with an inner exception
DOTNET = """System.InvalidOperationException: outer
 ---> System.Exception: inner
   at Program.Inner() in /app/Program.cs:line 10
   at Program.Outer() in /app/Program.cs:line 5
   --- End of inner exception stack trace ---
   at Program.Outer() in /app/Program.cs:line 7
   at Program.Main() in /app/Program.cs:line 3"""
JAVA = """java.lang.RuntimeException: outer
\tat Trace.outer(Trace.java:7)
\tat java.base/java.lang.Thread.run(Thread.java:833)
Caused by: java.lang.IllegalStateException: inner
\tat Trace.inner(Native Method)
\t... 1 more"""


def test_go_panic() -> None:
    err = parse_trace(GO, "go")
    assert err is not None
    assert err["type"] == "panic" and err["message"].startswith("runtime error: index out of range")
    assert err["stack"] == [
        {"function": "main.lookup(...)", "file": "/app/main.go", "line": 8},
        {"function": "main.main()", "file": "/app/main.go", "line": 12},
    ]
    assert err["goroutine"] == 1 and err["goroutine_state"] == "running"


def test_ruby_dotnet_java() -> None:
    err = parse_trace(RUBY, "ruby")
    assert (
        err is not None and err["type"] == "ZeroDivisionError" and err["message"] == "divided by 0"
    )
    assert [f["function"] for f in err["stack"]] == ["Integer#/", "Object#divide", "<main>"]
    err = parse_trace(DOTNET, "dotnet")
    assert err is not None and err["type"] == "System.InvalidOperationException"
    assert [f["line"] for f in err["stack"]] == [7, 3]
    assert err["cause"]["type"] == "System.Exception" and [
        f["line"] for f in err["cause"]["stack"]
    ] == [10, 5]
    err = parse_trace(JAVA, "java")
    assert err is not None
    assert err["stack"][1] == {
        "function": "java.base/java.lang.Thread.run",
        "file": "Thread.java",
        "line": 833,
    }
    assert err["cause"]["stack"] == [{"function": "Trace.inner", "file": "Native Method"}]
    for text in (GO, RUBY, DOTNET, JAVA):
        auto = parse_trace(text, "auto")
        assert auto is not None and auto["stack"], text


@pytest.mark.parametrize(
    "text", ["", "just a line", "Traceback (most recent call last):", "panic: x"]
)
def test_not_a_trace(text: str) -> None:
    for mode in MODES:
        assert parse_trace(text, mode) is None


def join(mode: str, lines: list[str]) -> list[str]:
    j = Joiner(start_pattern(mode), 500, 1.0, 1 << 20)
    texts, _, _ = j.feed(lines, [len(x) + 1 for x in lines], set())
    rest, _, _ = j.flush()
    return texts + rest


@pytest.mark.parametrize(
    ("mode", "text", "records"),
    [
        ("go", "level=info msg=a\n" + GO + "\nlevel=info msg=b", 3),
        # a Ruby backtrace joins the log line before it (Rails logs the error, then the trace)
        ("ruby", "E, [x] ERROR -- : a\n" + RUBY + "\nI, [x] INFO -- : b", 2),
        ("dotnet", "info: a\n" + DOTNET + "\ninfo: b", 2),
        ("java", "12:00 ERROR failed\n" + JAVA + "\n12:01 INFO next", 2),
        ("auto", "12:00 ERROR failed\n" + JAVA + "\n12:01 INFO next", 2),
    ],
)
def test_start_pattern_joins_traces(mode: str, text: str, records: int) -> None:
    out = join(mode, text.split("\n"))
    assert len(out) == records, out
    assert re.compile(start_pattern(mode))


def test_converter_error_object_and_fallbacks() -> None:
    conv = Converter(create("logfmt", Clock()), "logfmt", "auto")
    texts = [
        "level=error msg=failed error=app-field\n" + JAVA,
        "level=info msg=x\nnot a trace at all",
        GO,
    ]
    recs = [json.loads(x) for x in conv.convert(texts, "s", 1).body.decode().splitlines()]
    assert recs[0]["message"] == "failed" and recs[0]["field_error"] == "app-field"
    assert (
        recs[0]["error"]["type"] == "java.lang.RuntimeException"
        and recs[0]["error"]["trace"] == JAVA
    )
    # continuation text that is no trace is appended to the message, as without a mode
    assert recs[1]["message"] == "x\nnot a trace at all" and "error" not in recs[1]
    # a trace on its own (no log line before it) is an error record, not a parse error
    assert recs[2]["level"] == "error" and recs[2]["error"]["language"] == "go"
    assert "parse_error" not in recs[2] and conv.parse_errors == 0


HOSTILE = ["(" * 200_000 + " x", "Error" * 40_000 + " x", "a." * 100_000 + "Error x",
           "Error" * 40_000 + ":", "\t" + "at " * 60_000]  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_start_patterns_are_linear_on_hostile_lines(mode: str) -> None:
    import time

    regex = re.compile(start_pattern(mode))
    t0 = time.process_time()
    for line in HOSTILE:
        regex.search(line)
    # a quadratic pattern took 18 s on the second line
    assert time.process_time() - t0 < 1.0
