"""reloader: whether and when to reload, in process (what `make mutate` checks).

The debounce timer, the content decision after a scan (a revert while a
failed reload is being retried must cancel it), and the reload itself (the
gating --command, the actions, --verify-url) are driven directly on a
configured Reloader, with the scan's watches and the actions replaced where
the test is about the decision, not the file system or the app.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from podkit.sidecars.reloader import Reloader
from podkit.sidecars.reloader.program import MIN_MAX_WAIT

from podkit.hooks import HookError
from podkit.runner import configure
from podkit.watch import Change


class FakeRetrier:
    """Records what the decision hands to the retrier."""

    def __init__(self) -> None:
        self.pending = False
        self.submitted: list[str] = []
        self.last_error = ""

    def submit(self, digest: str) -> None:
        self.submitted.append(digest)

    async def stop(self) -> None:
        pass


@pytest.fixture
async def reloader(tmp_path: Path) -> AsyncIterator[Reloader]:
    (tmp_path / "app.conf").write_text("v1")
    p = configure(Reloader, ["--watch", str(tmp_path), "--command", "true"], env={})
    assert isinstance(p, Reloader)
    await p.setup()
    p.retrier = FakeRetrier()  # type: ignore[assignment]
    p._reconcile = lambda plan: False  # type: ignore[method-assign]
    yield p
    await p.cleanup()


def _when(p: Reloader) -> float:
    """Seconds from now until the pending debounce fires."""
    handle = p._debounce_handle
    assert handle is not None
    return handle.when() - asyncio.get_running_loop().time()


# -- the debounce --------------------------------------------------------------


async def test_an_event_fires_one_debounce_later_and_a_new_one_restarts_it(
    reloader: Reloader,
) -> None:
    reloader.debounce = 5.0
    reloader._arm()
    first = reloader._debounce_handle
    assert first is not None
    assert 4.9 < _when(reloader) <= 5.0
    reloader._arm()
    assert first.cancelled()  # the earlier timer does not fire as well
    assert reloader._debounce_handle is not first
    assert 4.9 < _when(reloader) <= 5.0


@pytest.mark.parametrize(
    ("debounce", "burst_age", "expect"),
    [
        # max wait is 10 debounce periods...
        (1.0, 9.5, 0.5),
        (1.0, 8.0, 1.0),
        # ... but at least MIN_MAX_WAIT seconds
        (0.1, 1.95, MIN_MAX_WAIT - 1.95),
        (0.1, 1.0, 0.1),
    ],
)
async def test_a_write_storm_cannot_starve_the_debounce(
    reloader: Reloader, debounce: float, burst_age: float, expect: float
) -> None:
    reloader.debounce = debounce
    reloader._burst_start = asyncio.get_running_loop().time() - burst_age
    reloader._arm()
    assert _when(reloader) == pytest.approx(expect, abs=0.03)


async def test_the_first_event_of_a_burst_starts_it_and_firing_ends_it(
    reloader: Reloader,
) -> None:
    reloader.debounce = 0.01
    assert reloader._burst_start is None
    before = asyncio.get_running_loop().time()
    reloader._arm()
    start = reloader._burst_start
    assert start is not None and start >= before
    reloader._arm()
    assert reloader._burst_start == start  # the burst is still the same one
    reloader._reason = "start"
    await asyncio.wait_for(reloader._wake.wait(), 5)
    assert reloader._reason == "change"
    assert reloader._debounce_handle is None and reloader._burst_start is None


async def test_look_again_waits_its_delay_unless_a_debounce_is_running(
    reloader: Reloader,
) -> None:
    reloader._look_again(3.0)
    assert 2.9 < _when(reloader) <= 3.0
    first = reloader._debounce_handle
    reloader._look_again(0.0)
    assert reloader._debounce_handle is first and not first.cancelled()  # type: ignore[union-attr]


# -- the decision after a scan -------------------------------------------------


async def test_a_change_is_submitted_once(reloader: Reloader, tmp_path: Path) -> None:
    retrier: FakeRetrier = reloader.retrier  # type: ignore[assignment]
    await reloader._check("start")
    first = reloader.current
    assert first is not None and first.files == 1
    assert retrier.submitted == [first.digest]
    await reloader._check("change")  # the same content again
    assert retrier.submitted == [first.digest]
    (tmp_path / "app.conf").write_text("v2")
    await reloader._check("change")
    assert reloader.current is not None and reloader.current.digest != first.digest
    assert retrier.submitted == [first.digest, reloader.current.digest]


async def test_a_revert_during_retry_supersedes_the_pending_reload(
    reloader: Reloader, tmp_path: Path
) -> None:
    """v1 loaded, v2 failing and retried, v1 back: the retrier must get v1 (nothing to do)."""
    retrier: FakeRetrier = reloader.retrier  # type: ignore[assignment]
    await reloader._check("start")
    assert reloader.current is not None
    loaded = reloader.current.digest
    reloader.last_success_hash = loaded
    (tmp_path / "app.conf").write_text("v2")
    await reloader._check("change")
    assert reloader.current.digest != loaded
    retrier.pending = True  # v2's reload failed and waits for its retry
    (tmp_path / "app.conf").write_text("v1")
    await reloader._check("change")
    assert retrier.submitted[-1] == loaded


async def test_a_revert_with_nothing_pending_reloads_nothing(
    reloader: Reloader, tmp_path: Path
) -> None:
    """v2 rejected by --command, v1 back: the app has v1, so it is not reloaded again."""
    retrier: FakeRetrier = reloader.retrier  # type: ignore[assignment]
    await reloader._check("start")
    assert reloader.current is not None
    loaded = reloader.current.digest
    reloader.last_success_hash = loaded
    retrier.submitted.clear()
    (tmp_path / "app.conf").write_text("v2")
    await reloader._check("change")
    reloader.rejected_hash = retrier.submitted[-1]
    (tmp_path / "app.conf").write_text("v1")
    await reloader._check("change")
    assert len(retrier.submitted) == 1  # only v2
    assert reloader.rejected_hash is None  # /status no longer reports the rejection
    assert reloader._submitted == loaded
    (tmp_path / "app.conf").write_text("v2")  # and v2 again is a change again
    await reloader._check("change")
    assert len(retrier.submitted) == 2


async def test_content_in_flux_is_looked_at_again_not_submitted(
    reloader: Reloader, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = reloader._scan

    def unstable() -> Any:
        result = scan()
        result.unstable = True
        return result

    monkeypatch.setattr(reloader, "_scan", unstable)
    reloader.debounce = 0.02
    await reloader._check("change")
    assert reloader.retrier.submitted == []  # type: ignore[attr-defined]
    assert 0.05 < _when(reloader) <= 0.1  # at least 0.1 s, even with a shorter debounce
    reloader._debounce_handle.cancel()  # type: ignore[union-attr]
    reloader._debounce_handle = None
    reloader.debounce = 0.5
    await reloader._check("change")
    assert 0.4 < _when(reloader) <= 0.5


async def test_watches_that_moved_are_scanned_again(reloader: Reloader) -> None:
    moves = iter([True, True, False])
    calls: list[int] = []

    def reconcile(plan: Any) -> bool:
        calls.append(1)
        return next(moves)

    reloader._reconcile = reconcile  # type: ignore[method-assign]
    await reloader._check("change")
    assert len(calls) == 3
    endless: list[int] = []

    def always(plan: Any) -> bool:
        endless.append(1)
        return True

    reloader._reconcile = always  # type: ignore[method-assign]
    await reloader._check("change")
    assert len(endless) == 3  # bounded: MAX_PASSES


# -- the reload ----------------------------------------------------------------


def _gate(reloader: Reloader, codes: list[int | None]) -> list[dict[str, str]]:
    """--command as the gate, answering `codes` in turn; returns the envs it ran with."""
    seen: list[dict[str, str]] = []

    async def run(env: dict[str, str]) -> tuple[int | None, str]:
        seen.append(env)
        return codes.pop(0), "out"

    reloader.command_gates_reload = True
    reloader._run_command = run  # type: ignore[method-assign]
    return seen


def _actions(reloader: Reloader, failures: dict[str, list[bool]]) -> dict[str, int]:
    """Actions named after `failures`, each failing as its list says, in turn."""
    calls = dict.fromkeys(failures, 0)

    def make(key: str) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            calls[key] += 1
            if failures[key].pop(0):
                raise HookError(f"{key} failed")

        return act

    reloader._actions = lambda env: [(k, make(k)) for k in failures]  # type: ignore[method-assign]
    return calls


async def test_reload_runs_every_action_and_records_success(reloader: Reloader) -> None:
    calls = _actions(reloader, {"signal": [False], "webhook0": [False]})
    await reloader._reload("a" * 64)
    assert calls == {"signal": 1, "webhook0": 1}
    assert reloader.last_success_hash == "a" * 64
    assert reloader.last_reload is not None and reloader.last_reload["result"] == "success"
    assert reloader.last_success_time is not None
    assert reloader._failing_since is None


async def test_reload_to_what_the_app_has_does_nothing(reloader: Reloader) -> None:
    calls = _actions(reloader, {"signal": [False]})
    reloader.last_success_hash = "a" * 64
    reloader.rejected_hash = "b" * 64
    reloader._failing_since = 1.0
    await reloader._reload("a" * 64)
    assert calls == {"signal": 0}
    assert reloader.rejected_hash is None and reloader._failing_since is None
    assert reloader.last_reload is None


async def test_a_failed_action_is_retried_alone(reloader: Reloader) -> None:
    calls = _actions(reloader, {"signal": [False], "webhook0": [True, False]})
    with pytest.raises(HookError, match="webhook0 failed"):
        await reloader._reload("a" * 64)
    assert reloader.last_success_hash is None
    assert reloader.last_reload is not None and reloader.last_reload["result"] == "failure"
    since = reloader._failing_since
    assert since is not None
    await reloader._reload("a" * 64)  # the retry: the signal was sent already
    assert calls == {"signal": 1, "webhook0": 2}
    assert reloader.last_success_hash == "a" * 64 and reloader._failing_since is None


async def test_the_failing_clock_starts_at_the_first_failure(reloader: Reloader) -> None:
    _actions(reloader, {"signal": [True, True]})
    for _ in range(2):
        with pytest.raises(HookError):
            await reloader._reload("a" * 64)
        if reloader._failing_since is not None:
            first = reloader._failing_since
    assert reloader._failing_since == first  # not reset by the second failure


async def test_a_newer_digest_runs_every_action_again(reloader: Reloader) -> None:
    calls = _actions(reloader, {"signal": [False, False], "webhook0": [True, False]})
    with pytest.raises(HookError):
        await reloader._reload("a" * 64)
    await reloader._reload("b" * 64)  # superseded: the signal is for new content
    assert calls == {"signal": 2, "webhook0": 2}


async def test_the_gating_command_blocks_rejected_content(reloader: Reloader) -> None:
    seen = _gate(reloader, [3])
    calls = _actions(reloader, {"signal": [False]})
    reloader._failing_since = 5.0
    await reloader._reload("a" * 64)  # blocked is not a failure: no retry
    assert calls == {"signal": 0}
    assert seen == [{"PODKIT_RELOADER_HASH": "a" * 64}]
    assert reloader.rejected_hash == "a" * 64
    assert reloader.last_success_hash is None and reloader._failing_since is None
    assert reloader.last_reload is not None
    assert reloader.last_reload["result"] == "blocked"
    assert reloader.last_reload["error"] == "command exited 3"


async def test_a_gating_command_that_times_out_is_a_failure_retried(reloader: Reloader) -> None:
    _gate(reloader, [None, 0])
    calls = _actions(reloader, {"signal": [False]})
    reloader.command_timeout = 7.0
    with pytest.raises(HookError, match="--command timed out after 7s"):
        await reloader._reload("a" * 64)
    assert reloader.rejected_hash is None and calls == {"signal": 0}
    await reloader._reload("a" * 64)
    assert calls == {"signal": 1} and reloader.last_success_hash == "a" * 64


async def test_an_accepted_gate_is_not_asked_again_on_retry(reloader: Reloader) -> None:
    seen = _gate(reloader, [0])
    calls = _actions(reloader, {"signal": [True, False]})
    with pytest.raises(HookError):
        await reloader._reload("a" * 64)
    await reloader._reload("a" * 64)
    assert len(seen) == 1 and calls == {"signal": 2}
    assert reloader.last_success_hash == "a" * 64


class FakeVerifier:
    def __init__(self, after_fails: list[bool]) -> None:
        self.after_fails = after_fails
        self.befores = 0
        self.afters = 0

    async def before(self) -> None:
        self.befores += 1

    async def after(self) -> None:
        self.afters += 1
        if self.after_fails.pop(0):
            raise HookError("verify: not yet")


async def test_a_reload_that_does_not_verify_is_repeated_whole(reloader: Reloader) -> None:
    verifier = FakeVerifier([True, False])
    reloader._verifier = verifier  # type: ignore[assignment]
    calls = _actions(reloader, {"signal": [False, False]})
    with pytest.raises(HookError, match="verify: not yet"):
        await reloader._reload("a" * 64)
    assert reloader.last_success_hash is None
    assert reloader.last_reload is not None and reloader.last_reload["result"] == "failure"
    await reloader._reload("a" * 64)
    assert calls == {"signal": 2}  # not just the check: the signal again
    assert verifier.befores == 2 and verifier.afters == 2
    assert reloader.last_success_hash == "a" * 64


async def test_a_failed_action_is_not_verified(reloader: Reloader) -> None:
    verifier = FakeVerifier([False])
    reloader._verifier = verifier  # type: ignore[assignment]
    _actions(reloader, {"signal": [True]})
    with pytest.raises(HookError, match="signal failed"):
        await reloader._reload("a" * 64)
    assert verifier.befores == 1 and verifier.afters == 0


async def test_a_retried_action_is_verified_against_the_state_before_the_first(
    reloader: Reloader,
) -> None:
    # The signal went out (the app reloaded) and the webhook failed: the retry
    # sends only the webhook, so the check must compare with the state read
    # before the signal, not re-read it after.
    verifier = FakeVerifier([False])
    reloader._verifier = verifier  # type: ignore[assignment]
    calls = _actions(reloader, {"signal": [False], "webhook0": [True, False]})
    with pytest.raises(HookError, match="webhook0 failed"):
        await reloader._reload("a" * 64)
    await reloader._reload("a" * 64)
    assert calls == {"signal": 1, "webhook0": 2}
    assert verifier.befores == 1 and verifier.afters == 1
    assert reloader.last_success_hash == "a" * 64


# -- what the decisions tell the operator and the next event -------------------
# The log lines below are the reloader's documented events (docs/reloader.md):
# an operator greps for them, so their fields are part of the behaviour.


def _records(caplog: pytest.LogCaptureFixture, msg: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == msg]


async def test_look_again_fires_a_check(reloader: Reloader) -> None:
    reloader._reason = "start"
    reloader._look_again(0.0)
    await asyncio.wait_for(reloader._wake.wait(), 5)
    assert reloader._reason == "change"


async def test_the_scan_plan_decides_which_events_count(reloader: Reloader, tmp_path: Path) -> None:
    planned: list[Any] = []

    def reconcile(plan: Any) -> bool:
        planned.append(plan)
        return False

    reloader._reconcile = reconcile  # type: ignore[method-assign]
    await reloader._check("start")
    assert reloader.current is not None and planned == [reloader.current.plan]
    reloader._on_change(Change("modified", str(tmp_path.parent / "elsewhere")))
    assert reloader._debounce_handle is None  # outside the watched tree: ignored
    reloader._on_change(Change("modified", str(tmp_path / "app.conf")))
    assert reloader._debounce_handle is not None


async def test_change_detected_is_logged_except_at_start(
    reloader: Reloader, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await reloader._check("start")
    assert _records(caplog, "change detected") == []
    (tmp_path / "app.conf").write_text("v2")
    await reloader._check("signal")
    [rec] = _records(caplog, "change detected")
    assert reloader.current is not None
    assert rec.hash == reloader.current.digest[:16]  # type: ignore[attr-defined]
    assert rec.files == 1 and rec.reason == "signal"  # type: ignore[attr-defined]


async def test_unreadable_files_are_reported_and_flux_is_logged(
    reloader: Reloader, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    scan = reloader._scan

    def with_errors() -> Any:
        result = scan()
        result.errors = [f"/x/{i}: Permission denied" for i in range(12)]
        result.unstable = True
        return result

    monkeypatch.setattr(reloader, "_scan", with_errors)
    await reloader._check("change")
    [rec] = _records(caplog, "cannot read some watched files")
    assert rec.levelno == logging.WARNING
    assert rec.errors == [f"/x/{i}: Permission denied" for i in range(10)]  # type: ignore[attr-defined]
    [flux] = _records(caplog, "content in flux; looking again after the debounce")
    assert flux.levelno == logging.DEBUG


async def test_rendering_must_succeed_before_a_submit(
    reloader: Reloader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    retrier: FakeRetrier = reloader.retrier  # type: ignore[assignment]
    outcomes: list[bool] = []

    async def write_rendered() -> bool:
        return outcomes.pop(0)

    monkeypatch.setattr(reloader, "_write_rendered", write_rendered)
    await reloader._check("start")  # no --render: nothing to write, submitted
    assert len(retrier.submitted) == 1
    fixed = reloader._scan()
    monkeypatch.setattr(reloader, "_scan", lambda: fixed)
    reloader._specs = [object()]  # type: ignore[list-item]
    reloader._submitted = None
    outcomes[:] = [False, True]
    await reloader._check("change")
    assert len(retrier.submitted) == 1 and outcomes == [True]
    await reloader._check("change")
    assert len(retrier.submitted) == 2 and outcomes == []


async def test_every_action_gets_the_hash_and_a_failure_does_not_stop_the_others(
    reloader: Reloader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    envs: list[dict[str, str]] = []
    ran: list[str] = []

    def make(key: str, fails: bool) -> Callable[[], Awaitable[None]]:
        async def act() -> None:
            ran.append(key)
            if fails:
                raise HookError(f"{key} failed")

        return act

    def actions(env: dict[str, str]) -> list[tuple[str, Any]]:
        envs.append(env)
        return [("signal", make("signal", True)), ("webhook0", make("webhook0", True))]

    reloader._actions = actions  # type: ignore[method-assign]
    reloader.rejected_hash = "b" * 64
    with pytest.raises(HookError, match=r"^signal failed; webhook0 failed$"):
        await reloader._reload("a" * 64)
    assert ran == ["signal", "webhook0"]
    assert envs == [{"PODKIT_RELOADER_HASH": "a" * 64}]
    assert reloader.last_reload is not None
    assert reloader.last_reload["error"] == "signal failed; webhook0 failed"
    assert reloader.last_reload["hash"] == "a" * 64
    calls = _actions(reloader, {"webhook0": [False], "signal": [False]})
    await reloader._reload("a" * 64)
    assert calls == {"webhook0": 1, "signal": 1}
    assert reloader.rejected_hash is None
    assert reloader.last_reload["hash"] == "a" * 64 and reloader.last_reload["error"] is None
    [rec] = _records(caplog, "reloaded")
    assert rec.hash == "a" * 16  # type: ignore[attr-defined]
    assert rec.actions == ["signal", "webhook0"]  # type: ignore[attr-defined]
    took = rec.duration_seconds  # type: ignore[attr-defined]
    assert isinstance(took, float) and 0 <= took < 60


async def test_a_rejection_is_logged_with_the_command_output(
    reloader: Reloader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    _gate(reloader, [2])
    _actions(reloader, {"signal": [False]})
    await reloader._reload("c" * 64)
    [rec] = _records(caplog, "command rejected the new content; not reloading")
    assert rec.levelno == logging.WARNING
    assert rec.hash == "c" * 16 and rec.exit_code == 2  # type: ignore[attr-defined]
    assert rec.output == "out"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kind", "where", "dead"),
    [
        ("deleted", "placed", True),
        ("moved", "placed", True),
        ("modified", "placed", False),
        ("created", "placed", False),
        ("deleted", "other", False),
    ],
)
async def test_a_watched_directory_deleted_or_moved_is_rewatched(
    reloader: Reloader, tmp_path: Path, kind: str, where: str, dead: bool
) -> None:
    """Its watch went with it: the next reconcile must place a new one, even on the same inode."""
    placed, other = str(tmp_path / "d"), str(tmp_path / "e")
    reloader._placed_dirs = {placed}
    reloader._on_change(Change(kind, placed if where == "placed" else other))
    assert reloader._dead == ({placed} if dead else set())
