"""Every module in tests/peers/ is a pytest plugin: one module per real peer."""

import pkgutil
from pathlib import Path

pytest_plugins = sorted(
    f"tests.peers.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent / "peers")])
)
