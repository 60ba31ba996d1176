"""Built-in multiline modes: which lines join, and the trace parsed into `error`.

Samples are the runtimes' own documented layouts (named per row); the real
Python, JVM and Node traces are in tests/integration/test_logformat_traces.py.
"""
# ruff: noqa: E501  (real traces read best unwrapped)

from __future__ import annotations

import json
import re

import pytest
from podkit.adapters.logformat import Converter

from podkit.logparse.parsers import create
from podkit.logparse.timeparse import Clock
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
        # a Ruby exception's head line starts its record (Fluent Bit's ruby rule)
        ("ruby", "E, [x] ERROR -- : a\n" + RUBY + "\nI, [x] INFO -- : b", 3),
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


# Fluent Bit's built-in multiline parser tests (tests/internal/multiline.c),
# re-expressed: the lines, and how many records they make.
FB_JAVA = [
    'Exception in thread "main" java.lang.IllegalStateException: ..null property',
    "     at com.example.myproject.Author.getBookIds(xx.java:38)",
    "     at com.example.myproject.Bootstrap.main(Bootstrap.java:14)",
    "Caused by: java.lang.NullPointerException",
    "     at com.example.myproject.Book.getId(Book.java:22)",
    "     at com.example.myproject.Author.getBookIds(Author.java:35)",
    "     ... 1 more",
    "single line",
]
FB_RUBY = [
    "/app/config/routes.rb:6:in `/': divided by 0 (ZeroDivisionError)",
    "\tfrom /app/config/routes.rb:6:in `block in <main>'",
    "\tfrom /var/lib/gems/3.0.0/gems/actionpack-7.0.4/lib/action_dispatch/routing/route_set.rb:428:in `instance_exec'",
    "\tfrom /app/config/routes.rb:1:in `<main>'",
    "hello world, not multiline",
]
FB_PYTHON = [
    "Traceback (most recent call last):",
    '  File "/base/data/home/runtimes/python27/python27_lib/versions/third_party/webapp2-2.5.2/webapp2.py", line 1535, in __call__',
    "    rv = self.handle_exception(request, response, e)",
    '  File "/base/data/home/apps/s~nearfieldspy/1.378705245900539993/nearfieldspy.py", line 5, in get',
    "    raise Exception('spam', 'eggs')",
    "Exception: ('spam', 'eggs')",
    "hello world, not multiline",
]
FB_GO = [
    "panic: my panic",
    "",
    "goroutine 4 [running]:",
    "panic(0x45cb40, 0x47ad70)",
    "\t/usr/local/go/src/runtime/panic.go:542 +0x46c fp=0xc42003f7b8 sp=0xc42003f710 pc=0x422f7c",
    "main.main.func1(0xc420024120)",
    "\tfoo.go:6 +0x39 fp=0xc42003f7d8 sp=0xc42003f7b8 pc=0x451339",
    "created by main.main",
    "\tfoo.go:5 +0x58",
    "",
    "goroutine 2 [force gc (idle)]:",
    "runtime.gopark(0x4739b8, 0x4ad720, 0x47001e, 0xf, 0x14, 0x1)",
    "\t/usr/local/go/src/runtime/proc.go:280 +0x12c fp=0xc42003e768 sp=0xc42003e738 pc=0x42503c",
    "one more line, no multiline",
]
FB_ELASTIC = [
    "[some weird test] IndexNotFoundException[no such index]",
    "    at org.elasticsearch.cluster.metadata.IndexNameExpressionResolver....",
    "    at org.elasticsearch.action.admin.indices.delete.java:75)",
    "another separate log line",
]


@pytest.mark.parametrize(
    ("mode", "lines", "first"),
    [("java", FB_JAVA, 7), ("ruby", FB_RUBY, 4), ("python", FB_PYTHON, 6), ("go", FB_GO, 13),
     ("java", FB_ELASTIC, 3)],
)  # fmt: skip
def test_fluent_bit_multiline_cases(mode: str, lines: list[str], first: int) -> None:
    for m in (mode, "auto"):
        out = join(m, lines)
        assert out == ["\n".join(lines[:first]), *lines[first:]], (m, out)


def test_fluent_bit_traces_parsed() -> None:
    err = parse_trace("\n".join(FB_JAVA[:7]), "java")
    assert err is not None and err["type"] == "java.lang.IllegalStateException"
    assert err["thread"] == "main" and err["message"] == "..null property"
    assert (
        err["cause"]["type"] == "java.lang.NullPointerException"
        and err["cause"]["frames_omitted"] == 1
    )
    err = parse_trace("\n".join(FB_RUBY[:4]), "ruby")
    assert err is not None and err["type"] == "ZeroDivisionError" and len(err["stack"]) == 4
    err = parse_trace("\n".join(FB_PYTHON[:6]), "python")
    assert err is not None and err["type"] == "Exception" and err["message"] == "('spam', 'eggs')"
    assert err["stack"][1] == {"file": "/base/data/home/apps/s~nearfieldspy/1.378705245900539993/nearfieldspy.py",
                               "line": 5, "function": "get", "code": "raise Exception('spam', 'eggs')"}  # fmt: skip
    err = parse_trace("\n".join(FB_GO[:13]), "go")
    assert err is not None and err["message"] == "my panic" and err["goroutine"] == 4
    assert err["stack"] == [
        {
            "function": "panic(0x45cb40, 0x47ad70)",
            "file": "/usr/local/go/src/runtime/panic.go",
            "line": 542,
        },
        {"function": "main.main.func1(0xc420024120)", "file": "foo.go", "line": 6},
        {"function": "main.main", "file": "foo.go", "line": 5},
    ]
    assert err["goroutines"] == 2
    # frames with no exception line of their own (the exception is in the log line)
    err = parse_trace("\n".join(FB_ELASTIC[1:3]), "java")
    assert err is not None and "type" not in err
    assert err["stack"] == [
        {"function": "org.elasticsearch.cluster.metadata.IndexNameExpressionResolver...."},
        {"function": "org.elasticsearch.action.admin.indices.delete.java:75)"},
    ]
