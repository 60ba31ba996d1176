"""Stack traces: which lines continue one, and the trace as a structured error.

Built-in multiline modes, as Fluent Bit's built-in multiline parsers have
them, for java, python, go (panics, goroutine dumps), ruby, node and .NET,
plus `auto` (all of them). Two parts:

- `start_pattern(mode)`: a regex that matches a line which *starts* a record,
  i.e. one that is not a continuation of a trace (`\\tat ...`, `Caused by:`,
  `Traceback (most recent call last):`, indented lines, `goroutine 1
  [running]:`, ...). It plugs into podkit.multiline's Joiner (and so the
  tailer's `multiline_start`) unchanged.
- `parse_trace(text, mode)`: the joined continuation text as
  `{"type", "message", "stack": [{"function", "file", "line", ...}], "cause": {...}}`,
  or None when it is not a trace of that language.

Frames keep what the runtime printed (file paths, line numbers as ints);
frames a runtime elided are counted in `frames_omitted`.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

__all__ = ["MODES", "parse_trace", "start_pattern"]

MODES = ("java", "python", "go", "ruby", "node", "dotnet", "auto")


# Lines that continue a trace, per language (matched at the start of a line).
def _ends_with(*words: str) -> str:
    """`(?:(?<=Error)|...)`: the identifier just read ends with one of `words`.

    Read possessively, then checked from behind: one pass over a hostile
    200 KB line, where a suffix after a backtracking `\\w*` is quadratic.
    """
    return "(?:" + "|".join(f"(?<={w})" for w in words) + ")"


_EXC_CLASS = r"(?:[A-Za-z_$][\w$]*+\.)*+[A-Z][\w$]*+" + _ends_with(
    "Exception", "Error", "Throwable", "Failure", "Fault"
)
_CONTINUATIONS: dict[str, tuple[str, ...]] = {
    "java": (
        r"\s+at\s",
        r"\s*\.\.\. \d+ (?:more|common frames omitted)",
        r"\s*Caused by: ",
        r"\s*Suppressed: ",
        # an exception logged after its message; the JVM's own `Exception in
        # thread "main" ...` (uncaught) starts a record, as in Fluent Bit
        rf"{_EXC_CLASS}(?::.*)?$",
    ),
    "python": (
        r"Traceback \(most recent call last\):",
        r"\s",
        r"$",
        r"During handling of the above exception, another exception occurred:",
        r"The above exception was the direct cause of the following exception:",
        r"[A-Za-z_][\w.]*+"
        + _ends_with("Error", "Exception", "Interrupt", "Exit", "Warning", "Iteration", "Group")
        + r"(?::.*)?$",
    ),
    "go": (
        r"$",
        r"\s",
        r"goroutine \d+ \[",
        r"created by ",
        r"\[recovered\]",
        r"(?=.{1,1024}$)[\w.*/()\[\]{}-]+\(.*\)$",  # a function line; bounded: linear
        r"exit status \d+$",
    ),
    # the `file:line:in 'm': msg (Class)` head starts a record (Fluent Bit's ruby rule)
    "ruby": (r"\s+from ",),
    "node": (
        r"\s",  # frames, and the source line and caret of an uncaught exception
        r"$",
        r"Node\.js v\d",
        r"(?:Uncaught )?[A-Z]\w*+" + _ends_with("Error", "Exception") + r"(?: \[[\w-]+\])?: ",
    ),
    "dotnet": (
        r"\s+at\s",
        r"\s*--- End of ",
        r"\s*---> ",
        rf"(?:Unhandled exception\. )?{_EXC_CLASS}(?::.*)?$",
    ),
}


def start_pattern(mode: str) -> str:
    """The regex of a line that starts a record in `mode` (searched; anchored with ^)."""
    if mode not in MODES:
        raise ValueError(f"unknown multiline mode {mode!r}; known: {', '.join(MODES)}")
    langs = _CONTINUATIONS if mode == "auto" else {mode: _CONTINUATIONS[mode]}
    alts = sorted({c for cs in langs.values() for c in cs})
    return r"^(?!" + "|".join(f"(?:{a})" for a in alts) + ")"


# -- parsing -------------------------------------------------------------------------

_JAVA_HEAD = re.compile(
    r"\s*(?:Caused by: |Suppressed: )?(?:Exception in thread \"(?P<thread>.*?)\" )?"
    r"(?P<type>[A-Za-z_$][\w$.]*)(?:: (?P<message>.*))?"
)
_JAVA_FRAME = re.compile(r"\s+at (?P<function>[^\s(]+)(?:\((?P<loc>[^)]*)\))?")
_JAVA_MORE = re.compile(r"\s*\.\.\. (\d+) (?:more|common frames omitted)")
_PY_FRAME = re.compile(r'\s+File "(?P<file>[^"]*)", line (?P<line>\d+)(?:, in (?P<function>.*))?')
_PY_EXC = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?:: (?P<message>.*))?")
_GO_HEAD = re.compile(r"(?P<type>panic|fatal error): (?P<message>.*?)(?: \[recovered\])?")
_GO_GOROUTINE = re.compile(r"goroutine (\d+) \[([^\]]*)\]:")
_GO_LOC = re.compile(r"\s+(?P<file>\S+?):(?P<line>\d+)(?: \+0x[0-9a-f]+)?(?: fp=.*)?")
_RUBY_HEAD = re.compile(
    r"(?P<file>\S+?):(?P<line>\d+):in [`'](?P<function>[^']*)': "
    r"(?P<message>.*) \((?P<type>[\w:]+)\)"
)
_RUBY_FRAME = re.compile(r"\s*(?:from )?(?P<file>\S+?):(?P<line>\d+):in [`'](?P<function>[^']*)'")
_NODE_HEAD = re.compile(r"(?:Uncaught )?(?P<type>[A-Z]\w*)(?: \[[\w-]+\])?: (?P<message>.*)")
_NODE_FRAME = re.compile(r"\s+at (?:(?P<function>.+?) \((?P<loc>[^()]*)\)|(?P<bare>\S+))")
_LOC = re.compile(r"(?P<file>.*?):(?P<line>\d+)(?::(?P<column>\d+))?")
_NET_HEAD = re.compile(
    r"\s*(?:---> |Unhandled exception\. )?(?P<type>[A-Za-z_][\w.`]*): (?P<message>.*)"
)
_NET_FRAME = re.compile(r"\s+at (?P<function>.+?)(?: in (?P<file>.+):line (?P<line>\d+))?")


def _loc(text: str) -> dict[str, Any]:
    m = _LOC.fullmatch(text)
    if m is None:
        return {"file": text}
    out: dict[str, Any] = {"file": m["file"], "line": int(m["line"])}
    if m["column"]:
        out["column"] = int(m["column"])
    return out


def _java(lines: list[str]) -> dict[str, Any] | None:
    chain: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in lines:
        f = _JAVA_FRAME.fullmatch(line)
        if f is not None and current is None:
            # Frames right after the log line (Elasticsearch logs the exception
            # in its message): a stack without a type of its own.
            current = {"stack": []}
            chain.append(current)
        if f is not None and current is not None:
            frame: dict[str, Any] = {"function": f["function"]}
            loc = f["loc"]
            if loc is not None:
                frame.update(_loc(loc) if ":" in loc else {"file": loc})
            current["stack"].append(frame)
            continue
        more = _JAVA_MORE.fullmatch(line)
        if more is not None and current is not None:
            current["frames_omitted"] = int(more.group(1))
            continue
        h = _JAVA_HEAD.fullmatch(line)
        if h is not None and (
            current is None or line.lstrip().startswith(("Caused by:", "Suppressed:"))
        ):
            current = {"type": h["type"], "message": h["message"] or "", "stack": []}
            if h["thread"]:
                current["thread"] = h["thread"]
            if line.lstrip().startswith("Suppressed:") and chain:
                chain[-1].setdefault("suppressed", []).append(current)
            else:
                chain.append(current)
            continue
        if current is None:
            return None
        current["message"] += "\n" + line  # a message that spans lines
    return _nest(chain)


def _nest(chain: list[dict[str, Any]]) -> dict[str, Any] | None:
    """[outer, cause, cause of cause] -> outer with nested `cause`."""
    if not chain or not any(e["stack"] for e in chain):
        return None
    for outer, inner in itertools.pairwise(chain):
        outer["cause"] = inner
    return chain[0]


def _python(lines: list[str]) -> dict[str, Any] | None:
    sections: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in lines:
        if line == "Traceback (most recent call last):":
            current = {"type": "", "message": "", "stack": []}
            sections.append(current)
            continue
        if current is None:
            continue
        f = _PY_FRAME.fullmatch(line)
        if f is not None:
            frame: dict[str, Any] = {"file": f["file"], "line": int(f["line"])}
            if f["function"]:
                frame["function"] = f["function"]
            current["stack"].append(frame)
            continue
        if line[:1].isspace():
            code = line.strip()
            if current["stack"] and "code" not in current["stack"][-1] and code.strip("^~ "):
                current["stack"][-1]["code"] = code
            continue
        if not line or line.startswith(("During handling", "The above exception")):
            continue
        e = _PY_EXC.fullmatch(line)
        if e is not None and not current["type"]:
            current["type"], current["message"] = e["type"], e["message"] or ""
        elif current["type"]:
            current["message"] += "\n" + line
    sections = [s for s in sections if s["type"]]
    if not sections:
        return None
    # The last traceback is the exception raised; each earlier one caused the next.
    return _nest(sections[::-1])


def _go(lines: list[str]) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    stack: list[dict[str, Any]] = []
    goroutines = 0
    for i, line in enumerate(lines):
        if out is None:
            h = _GO_HEAD.fullmatch(line)
            if h is not None:
                out = {"type": h["type"], "message": h["message"], "stack": stack}
            continue
        g = _GO_GOROUTINE.fullmatch(line)
        if g is not None:
            goroutines += 1
            if goroutines == 1:
                out["goroutine"] = int(g.group(1))
                out["goroutine_state"] = g.group(2)
            continue
        if goroutines != 1 or not line or line[0].isspace():
            continue
        nxt = _GO_LOC.fullmatch(lines[i + 1]) if i + 1 < len(lines) else None
        if nxt is not None:
            fn = line[len("created by ") :] if line.startswith("created by ") else line
            stack.append({"function": fn, "file": nxt["file"], "line": int(nxt["line"])})
    if out is None or not stack:
        return None
    if goroutines > 1:
        out["goroutines"] = goroutines
    return out


def _ruby(lines: list[str]) -> dict[str, Any] | None:
    h = _RUBY_HEAD.fullmatch(lines[0])
    if h is None:
        return None
    stack = [{"function": h["function"], "file": h["file"], "line": int(h["line"])}]
    for line in lines[1:]:
        f = _RUBY_FRAME.fullmatch(line)
        if f is not None:
            stack.append({"function": f["function"], "file": f["file"], "line": int(f["line"])})
    return {"type": h["type"], "message": h["message"], "stack": stack}


def _node(lines: list[str]) -> dict[str, Any] | None:
    out: dict[str, Any] | None = None
    for line in lines:
        if out is None:
            h = _NODE_HEAD.fullmatch(line)
            if h is not None:
                out = {"type": h["type"], "message": h["message"], "stack": []}
            continue
        f = _NODE_FRAME.fullmatch(line)
        if f is not None:
            if f["bare"]:
                out["stack"].append(_loc(f["bare"]))
            else:
                out["stack"].append({"function": f["function"], **_loc(f["loc"])})
    return out if out is not None and out["stack"] else None


def _dotnet(lines: list[str]) -> dict[str, Any] | None:
    chain: list[dict[str, Any]] = []
    cur = -1  # the exception whose frames are being listed
    for line in lines:
        stripped = line.lstrip()
        f = _NET_FRAME.fullmatch(line)
        if f is not None and cur >= 0 and not stripped.startswith("--->"):
            frame: dict[str, Any] = {"function": f["function"]}
            if f["file"]:
                frame["file"], frame["line"] = f["file"], int(f["line"])
            chain[cur]["stack"].append(frame)
            continue
        if stripped.startswith("--- End of inner exception stack trace"):
            cur = max(cur - 1, 0)  # back to the frames of the exception around it
            continue
        if stripped.startswith("--- End of"):
            continue
        h = _NET_HEAD.fullmatch(line)
        if h is not None:
            # .NET writes the outer exception first, then ` ---> Inner: msg` lines;
            # an inner exception's frames come first, closed by `--- End of inner`.
            parts = h["message"].split(" ---> ")
            chain.append({"type": h["type"], "message": parts[0], "stack": []})
            for part in parts[1:]:
                i = _NET_HEAD.fullmatch(part)
                if i is not None:
                    chain.append({"type": i["type"], "message": i["message"], "stack": []})
            cur = len(chain) - 1
    return _nest(chain)


_PARSERS = {
    "java": _java,
    "python": _python,
    "go": _go,
    "ruby": _ruby,
    "node": _node,
    "dotnet": _dotnet,
}


def _guess(lines: list[str]) -> list[str]:
    """Languages to try for `auto`, likeliest first."""
    text = "\n".join(lines[:50])
    order = []
    if "Traceback (most recent call last):" in text:
        order.append("python")
    if "goroutine " in text or text.startswith(("panic: ", "fatal error: ")):
        order.append("go")
    if ":in `" in text or ":in '" in text:
        order.append("ruby")
    if (" in " in text and ":line " in text) or "--- End of" in text:
        order.append("dotnet")
    if re.search(r"\n\s+at .*\.java:\d+\)|\n\s+at .*\(Native Method\)|Caused by: ", text):
        order.append("java")
    order += [lang for lang in ("node", "java", "dotnet") if lang not in order]
    return order


def parse_trace(text: str, mode: str = "auto") -> dict[str, Any] | None:
    """A trace's text as {type, message, stack, [cause]}; None when it is not one."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        return None
    for lang in _guess(lines) if mode == "auto" else [mode]:
        try:
            out = _PARSERS[lang](lines)
        except (ValueError, IndexError, KeyError):  # a malformed trace is text, never a crash
            out = None
        if out is not None:
            out["language"] = lang
            return out
    return None
