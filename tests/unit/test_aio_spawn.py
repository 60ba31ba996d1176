"""podkit.aio.spawn: a task nobody awaits is held until it ends.

The event loop keeps only a weak reference to a task. One that waits on a future
that nothing else holds (a connection's coroutine waiting on its own waiter, once
the connection has left the listener's set) is garbage, and the collector destroys
it mid-way: it never finishes (its coroutine is closed where it waits, at whatever
moment the collector runs), and asyncio logs "Task was destroyed but it is
pending!". The first test shows that hazard on a bare create_task, the second
that spawn() prevents it, the last keeps dropped create_task / ensure_future
results out of the code.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import logging
import weakref
from pathlib import Path

import pytest

from podkit import aio
from podkit.aio import spawn

ROOT = Path(__file__).resolve().parents[2]
TREES = ("podkit", "ambassadors", "sidecars", "adapters", "initkits")


def _orphan(
    finished: list[str], holder: list[weakref.ref[asyncio.Future[None]]]
) -> asyncio.Future[None]:
    async def orphan() -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        holder.append(weakref.ref(fut))  # the test's only handle on it is weak
        await fut
        finished.append("finished")

    return orphan()  # type: ignore[return-value]


async def _after_collection(start: str) -> tuple[list[str], bool]:
    finished: list[str] = []
    holder: list[weakref.ref[asyncio.Future[None]]] = []
    coro = _orphan(finished, holder)
    if start == "spawn":
        spawn(coro)  # type: ignore[arg-type]
    else:
        asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
    del coro
    await asyncio.sleep(0)  # it runs up to its await
    assert holder, "the task started"
    gc.collect()
    fut = holder[0]()
    if fut is None:
        return finished, False  # collected with its task
    fut.set_result(None)
    async with asyncio.timeout(5):
        while not finished:
            await asyncio.sleep(0)
    return finished, True


async def test_a_dropped_task_waiting_on_its_own_future_is_collected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hazard itself: why spawn() exists."""
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        finished, alive = await _after_collection("create_task")
        gc.collect()
    assert not alive and finished == []
    assert "Task was destroyed but it is pending" in caplog.text


async def test_a_spawned_task_survives_collection_and_finishes() -> None:
    before = len(aio._running)
    finished, alive = await _after_collection("spawn")
    assert alive and finished == ["finished"]
    await asyncio.sleep(0)  # the done callbacks run
    assert len(aio._running) == before, "an ended task is let go"


async def test_spawn_returns_the_task_on_the_loop_given() -> None:
    loop = asyncio.get_running_loop()

    async def answer() -> int:
        return 42

    task = spawn(answer(), loop)
    assert task in aio._running
    assert await task == 42
    await asyncio.sleep(0)
    assert task not in aio._running


def _dropped(path: Path, root: Path = ROOT) -> list[str]:
    """create_task / ensure_future calls made as a statement of their own."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            fn = node.value.func
            name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
            if name in ("create_task", "ensure_future"):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_task_is_started_and_dropped_in_the_code() -> None:
    found = [
        hit for tree in TREES for p in sorted((ROOT / tree).rglob("*.py")) for hit in _dropped(p)
    ]
    assert found == [], "keep the task, or use podkit.aio.spawn: " + ", ".join(found)


def test_the_check_finds_a_dropped_task(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import asyncio\n"
        "async def f(loop):\n"
        "    loop.create_task(f(loop))\n"
        "    asyncio.ensure_future(f(loop))\n"
        "    t = loop.create_task(f(loop))\n"  # kept: not reported
    )
    assert _dropped(src, tmp_path) == ["m.py:3", "m.py:4"]
