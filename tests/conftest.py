"""Every module in tests/peers/ is a pytest plugin: one module per real peer."""

import faulthandler
import os
import pkgutil
import sys
from pathlib import Path

import pytest

# `make test-compiled` runs the proxy's tests a second time against the
# mypyc-compiled request path (tools/compile.py) with PODKIT_COMPILED naming the
# compiled tree. It goes first on sys.path here, before anything imports podkit
# (pytest put the repository's root, whose podkit/ is the source, in front), and
# in PYTHONPATH with PYTHONSAFEPATH for the programs the tests start (so their
# working directory is not searched first). A tree that failed to build would
# run the interpreted modules again and pass for the wrong reason: so
# pytest_configure checks that the compiled modules are the ones imported.
COMPILED = os.environ.get("PODKIT_COMPILED", "")
if COMPILED:
    COMPILED = str(Path(COMPILED).resolve())
    sys.path.insert(0, COMPILED)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (COMPILED, os.environ.get("PYTHONPATH", "")) if p
    )
    os.environ["PYTHONSAFEPATH"] = "1"

pytest_plugins = sorted(
    f"tests.peers.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "peers")])
)


# A test that waits forever (an `async for` over a tailer that never yields, a
# peer that never answers) would hold CI until its 90-minute limit and say
# nothing. Past this many seconds the process dumps every thread's stack and
# exits: under xdist the worker is reported as crashed *in that test* and
# replaced, so the run fails fast and names the culprit. Only the unit and
# integration tiers: e2e builds images and conformance builds the real
# exporters from source in one fixture, which may legitimately take minutes.
HANG_SECONDS = float(os.environ.get("PODKIT_TEST_HANG_SECONDS", "600"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    guarded = HANG_SECONDS > 0 and not {"unit", "integration"}.isdisjoint(item.path.parts)
    if guarded:
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    try:
        return (yield)
    finally:
        if guarded:
            faulthandler.cancel_dump_traceback_later()


def pytest_configure(config: pytest.Config) -> None:
    if not COMPILED:
        return
    from podkit.ambassadors.proxy.compiled import compiled_modules

    missing = [m for m, is_compiled in compiled_modules().items() if not is_compiled]
    if missing:
        raise pytest.UsageError(f"PODKIT_COMPILED={COMPILED} but interpreted: {missing}")
