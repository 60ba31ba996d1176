"""Which of the proxy's modules run compiled by mypyc (tools/compile.py, issue 18).

The proxy image carries the request path compiled; a plain `pip install` runs
the same source interpreted. `/` says which, and the test run against the
compiled tree checks it before any test (tests/conftest.py).
"""

from __future__ import annotations

import importlib
import importlib.machinery

# The request path, compiled together (interpreted classes cannot inherit from
# compiled ones, so tcp.py, whose classes extend http1's and listener's, is in).
COMPILED = ("accesslog", "http1", "httpproxy", "listener", "tcp", "upstream")


def compiled_modules() -> dict[str, bool]:
    """Each module of COMPILED, and whether it was loaded from an extension module."""
    out = {}
    for name in COMPILED:
        module = importlib.import_module(f"{__package__}.{name}")
        out[name] = isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader)
    return out
