"""A mypyc trap the type checker does not report, held off the compiled modules.

Compiled by mypyc, a local variable keeps the type of its first binding. Two
`except ... as exc` clauses in one function with different classes therefore
work interpreted and fail compiled: the second handler raises
`TypeError: ... A object expected; got B` instead of running (a tuple of
classes binds a plain object, so it is safe as the first). Both the TCP
listener's half-close handler and the proxy's catch-all were written that way
and passed every interpreted test.
"""

from __future__ import annotations

import ast
from pathlib import Path

from podkit.ambassadors.proxy.compiled import COMPILED

ROOT = Path(__file__).resolve().parents[2] / "ambassadors" / "proxy"


def _rebound(path: Path) -> list[str]:
    problems = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first: dict[str, ast.expr | None] = {}
        handlers = [n for n in ast.walk(fn) if isinstance(n, ast.ExceptHandler) and n.name]
        for h in sorted(handlers, key=lambda n: (n.lineno, n.col_offset)):
            assert h.name is not None
            if h.name not in first:
                first[h.name] = h.type
                continue
            was = first[h.name]
            if isinstance(was, ast.Tuple):
                continue  # bound as a plain object: any later class fits
            same = (ast.dump(was) if was else "") == (ast.dump(h.type) if h.type else "")
            if not same:
                problems.append(
                    f"{path.name}:{h.lineno} {fn.name}: `as {h.name}` was "
                    f"{ast.unparse(was) if was else 'BaseException'}, now "
                    f"{ast.unparse(h.type) if h.type else 'BaseException'}"
                )
    return problems


def test_no_compiled_function_rebinds_an_exception_name_to_another_class() -> None:
    problems = [p for name in COMPILED for p in _rebound(ROOT / f"{name}.py")]
    assert problems == []


def test_the_check_finds_the_trap(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "def f() -> None:\n"
        "    try:\n        pass\n    except KeyError as exc:\n        pass\n"
        "    try:\n        pass\n    except OSError as exc:\n        pass\n"
        "def g() -> None:\n"
        "    try:\n        pass\n    except (OSError, ValueError) as exc:\n        pass\n"
        "    except KeyError as exc:\n        pass\n"
        "def k() -> None:\n"
        "    try:\n        pass\n    except KeyError as exc:\n        pass\n"
        "    except KeyError as exc:\n        pass\n"
    )
    assert [p.split(" ", 1)[1] for p in _rebound(src)] == ["f: `as exc` was KeyError, now OSError"]
