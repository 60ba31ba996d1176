"""Shared test helpers: free ports, required tools, and a podkit program as a subprocess."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The harness is public (podkit.testing): podkit's tests use what users use.
from podkit.testing import ProgramProcess as ProgramProcess
from podkit.testing import free_port as free_port
from podkit.testing import http as http
from podkit.testing import run_program as run_program
from podkit.testing import stays as stays
from podkit.testing import wait_until as wait_until

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_ALL = os.environ.get("PODKIT_REQUIRE_ALL") == "1"


def missing(reason: str) -> None:
    """Skip on a laptop; fail in CI (PODKIT_REQUIRE_ALL=1), where every tool must be present."""
    if REQUIRE_ALL:
        pytest.fail(f"required for this test but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def need(tool: str, *extra_dirs: str) -> str:
    """The path of an external binary, or skip/fail the test when it is missing."""
    path = shutil.which(
        tool,
        path=os.pathsep.join(
            [
                *extra_dirs,
                os.environ.get("PATH", ""),
                "/usr/sbin",
                "/sbin",
                "/usr/lib/postgresql/15/bin",
            ]
        ),
    )
    if path is None:
        missing(f"{tool} not installed (see .ci/run for the package)")
    assert path is not None
    return path


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    def up() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(up, timeout, what=f"{host}:{port} to accept connections")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# In-process (unit) tests run on the event loop: these poll without blocking it.


async def wait_until_async(
    pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01, what: str = "condition"
) -> Any:
    """wait_until for a coroutine: poll pred until it returns something true, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def stays_async(pred: Callable[[], Any], seconds: float, interval: float = 0.01) -> bool:
    """stays() for a coroutine: True if pred() holds at every look for `seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        if not pred():
            return False
        if loop.time() >= deadline:
            return True
        await asyncio.sleep(interval)


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP: a DNS server (dnsmasq) binds both."""
    for _ in range(100):
        port = free_port(host, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            try:
                t.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")
