"""Every module in tests/peers/ is a pytest plugin: one module per real peer."""

import faulthandler
import os
import pkgutil
from pathlib import Path

import pytest

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
