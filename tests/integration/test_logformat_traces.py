"""Stack traces written by real runtimes, joined by --multiline MODE and parsed into `error`.

Python runs always (it runs the tests); the JVM and Node write their traces
when present (single-file Java source launch, `node -e`); where one is
missing, the runtime's documented sample stands in, as in test_logformat.py.
"""
# ruff: noqa: E501  (real log lines and patterns read best unwrapped)

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers import REQUIRE_ALL, missing

PY_APP = r"""
import logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG,
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
log = logging.getLogger("app.worker")
log.info("starting job %s", 7)
def lookup():
    return {}["missing"]
try:
    try:
        lookup()
    except KeyError as exc:
        raise RuntimeError("job 7 failed") from exc
except RuntimeError:
    log.exception("request failed")
log.warning("done")
"""


def logformat(args: list[str], data: bytes) -> list[dict[str, Any]]:
    res = subprocess.run(
        [sys.executable, "-m", "podkit", "logformat", "--stdin", "--admin-addr", "off", *args],
        input=data, capture_output=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode()
    return [json.loads(line) for line in res.stdout.decode().splitlines()]


def test_python_traceback_becomes_error_object() -> None:
    app = subprocess.run(
        [sys.executable, "-c", PY_APP], capture_output=True, timeout=30, check=True
    )
    recs = logformat(["--format", "python", "--multiline", "python"], app.stderr)
    assert [r["level"] for r in recs] == ["info", "error", "warning"], recs
    assert not [r for r in recs if r.get("parse_error")]
    rec = recs[1]
    assert rec["message"] == "request failed" and rec["logger"] == "app.worker"
    err = rec["error"]
    assert err["type"] == "RuntimeError" and err["message"] == "job 7 failed"
    assert err["language"] == "python"
    assert err["stack"][-1]["function"] == "<module>" and err["stack"][-1]["file"] == "<string>"
    assert isinstance(err["stack"][-1]["line"], int)
    # `raise ... from exc`: the KeyError is the cause, with its own frames
    cause = err["cause"]
    assert cause["type"] == "KeyError" and cause["message"] == "'missing'"
    assert [f.get("function") for f in cause["stack"]] == ["<module>", "lookup"]
    assert err["trace"].startswith("Traceback (most recent call last):")
    assert err["trace"].endswith("RuntimeError: job 7 failed")
    # auto finds the same
    auto = logformat(["--format", "python", "--multiline", "auto"], app.stderr)
    assert auto[1]["error"]["type"] == "RuntimeError" and len(auto) == 3


JAVA_APP = """
public class Trace {
    static void inner() { throw new IllegalStateException("inner \\"state\\""); }
    static void outer() {
        try { inner(); } catch (IllegalStateException e) { throw new RuntimeException("outer", e); }
    }
    public static void main(String[] args) {
        System.out.println("level=info msg=starting");
        try { outer(); } catch (RuntimeException e) {
            System.out.println("level=error msg=\\"request failed\\"");
            e.printStackTrace(System.out);
        }
        System.out.println("level=info msg=done");
    }
}
"""
# java.lang.Throwable#printStackTrace javadoc layout, used only where no JVM runs.
JAVA_SAMPLE = """level=info msg=starting
level=error msg="request failed"
java.lang.RuntimeException: outer
\tat Trace.outer(Trace.java:5)
\tat Trace.main(Trace.java:9)
Caused by: java.lang.IllegalStateException: inner "state"
\tat Trace.inner(Trace.java:3)
\tat Trace.outer(Trace.java:5)
\t... 1 more
level=info msg=done
"""


def test_java_trace_becomes_error_object(tmp_path: Path) -> None:
    java = shutil.which("java")
    if java is None and REQUIRE_ALL:  # CI: the real runtime, never the sample
        missing("java not installed (Debian package openjdk-17-jre-headless)")
    if java:
        src = tmp_path / "Trace.java"
        src.write_text(JAVA_APP)
        out = subprocess.run([java, "-XX:TieredStopAtLevel=1", str(src)], capture_output=True,
                             check=True, timeout=90).stdout  # fmt: skip
    else:
        out = JAVA_SAMPLE.encode()
    recs = logformat(["--format", "logfmt", "--multiline", "java"], out)
    assert [r["message"] for r in recs] == ["starting", "request failed", "done"], recs
    err = recs[1]["error"]
    assert err["type"] == "java.lang.RuntimeException" and err["message"] == "outer"
    assert err["stack"][0] == {"function": "Trace.outer", "file": "Trace.java", "line": 5}
    assert err["cause"]["type"] == "java.lang.IllegalStateException"
    assert err["cause"]["message"] == 'inner "state"'
    assert err["cause"]["frames_omitted"] >= 1
    assert err["cause"]["stack"][0]["function"] == "Trace.inner"


NODE_APP = r"""
console.log('level=info msg=starting');
function inner() { throw new TypeError('bad "input"'); }
try { inner(); } catch (e) { console.log('level=error msg="request failed"'); console.log(e.stack); }
console.log('level=info msg=done');
function later() {
  null.boom;
}
setTimeout(later, 0);
"""
NODE_SAMPLE = """level=info msg=starting
level=error msg="request failed"
TypeError: bad "input"
    at inner ([eval]:3:26)
    at [eval]:4:7
level=info msg=done
[eval]:7
  null.boom;
       ^

TypeError: Cannot read properties of null (reading 'boom')
    at Timeout.later [as _onTimeout] ([eval]:7:8)
    at listOnTimeout (node:internal/timers:569:17)

Node.js v18.19.0
"""


def test_node_traces_caught_and_uncaught() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None and REQUIRE_ALL:  # CI: the real runtime, never the sample
        missing("node not installed (Debian package nodejs)")
    if node:
        res = subprocess.run([node, "-e", NODE_APP], capture_output=True, timeout=60,
                             env={**os.environ, "NODE_OPTIONS": ""})  # fmt: skip
        assert res.returncode == 1
        out = res.stdout + res.stderr
    else:
        out = NODE_SAMPLE.encode()
    recs = logformat(["--format", "logfmt", "--multiline", "node"], out)
    assert [r["message"].split("\n")[0] for r in recs[:3]] == [
        "starting",
        "request failed",
        "done",
    ], recs
    err = recs[1]["error"]
    assert err["type"] == "TypeError" and err["message"] == 'bad "input"'
    assert err["stack"][0]["function"] == "inner" and err["stack"][0]["line"] == 3
    # the uncaught one: no log line before it (node prints `file:line`, the
    # source line and a caret first), still one record with its error
    (last,) = recs[3:]
    assert last["level"] == "error" and "parse_error" not in last
    assert last["message"] == "[eval]:7"
    assert last["error"]["type"] == "TypeError"
    assert last["error"]["message"].startswith("Cannot read properties of null")
    assert last["error"]["stack"][0]["function"] == "Timeout.later [as _onTimeout]"
    assert last["error"]["stack"][0]["line"] == 7


def test_multiline_mode_with_path_and_env(tmp_path: Path) -> None:
    """--path goes through the core tailer's joiner; PODKIT_MULTILINE sets the mode."""
    import signal

    from tests.helpers import ProgramProcess, wait_until

    app = subprocess.run(
        [sys.executable, "-c", PY_APP], capture_output=True, timeout=30, check=True
    )
    log = tmp_path / "app.log"
    log.write_bytes(app.stderr)
    out = tmp_path / "out.ndjson"
    args = ["--path", str(log), "--format", "python", "--output", f"file://{out}",
            "--state-dir", str(tmp_path / "s"), "--multiline-timeout", "300ms"]  # fmt: skip

    def records() -> list[dict[str, Any]]:
        if not out.exists():
            return []
        return [json.loads(x) for x in out.read_text().splitlines() if x.endswith("}")]

    with ProgramProcess("logformat", args, tmp=tmp_path, env={"PODKIT_MULTILINE": "python"}) as p:
        p.wait_ready()
        recs = wait_until(lambda: len(records()) >= 3 and records(), 20, 0.05, what="3 records")
        p.signal(signal.SIGTERM)
        assert p.wait(20) == 0
    assert [r["level"] for r in recs] == ["info", "error", "warning"]
    assert recs[1]["error"]["type"] == "RuntimeError" and recs[1]["source"] == str(log)


GO_APP = """package main

import (
	"log"
	"os"
)

func lookup(items []int, i int) int {
	return items[i]
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetFlags(0)
	log.Print("level=info msg=starting")
	log.Print("level=warn msg=\\"about to fail\\"")
	lookup([]int{1, 2}, len(os.Args)+5)
}
"""


def test_go_panic_from_a_real_program(tmp_path: Path) -> None:
    """A real Go runtime's panic and goroutine dump (Debian's golang-go), joined
    by --multiline go into one record with its error object."""
    from tests.helpers import need

    go = need("go")
    (tmp_path / "main.go").write_text(GO_APP)
    env = {**os.environ, "GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gopath")}
    env["GOFLAGS"] = "-mod=mod"
    subprocess.run(
        [go, "build", "-o", "app", "main.go"], cwd=tmp_path, check=True, timeout=240, env=env
    )
    res = subprocess.run([str(tmp_path / "app")], capture_output=True, timeout=60)
    assert res.returncode == 2, res.stderr[-2000:]  # what a Go panic exits with
    recs = logformat(["--format", "logfmt", "--multiline", "go"], res.stderr)
    assert [r.get("message", "").split("\n")[0] for r in recs[:2]] == [
        "starting",
        "about to fail",
    ], recs
    panic = recs[2]
    assert panic["level"] == "error" and "parse_error" not in panic, panic
    err = panic["error"]
    assert err["type"] == "panic", err
    assert err["message"].startswith("runtime error: index out of range"), err
    assert err["goroutine"] == 1 and err["goroutine_state"] == "running", err
    functions = [f["function"] for f in err["stack"]]
    assert functions[0].startswith("main.lookup") and functions[-1] == "main.main()", functions
    assert all(f["file"].endswith("main.go") for f in err["stack"]), err["stack"]
    assert err["stack"][0]["line"] == 9, err["stack"]
