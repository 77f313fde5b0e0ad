"""Session commands from workflow code apply once per step, however often the step runs.

A step runs at least once: a worker that crashes after the session change
but before recording the step's completion runs it again with the same
idempotency key (``<instance>:<step index>``). The built-in session steps
pass that key, and a key the session already holds appends nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sagalog.engine import Registry, Runner, workflow
from sagalog.engine.session_steps import session_change_step, session_touch_step
from sagalog.engine.sessions import Sessions
from sagalog.engine.workflow import CURRENT_STEP, StepContext
from sagalog.replay.events import StepScheduled, decode_event
from sagalog.replay.sessions import APPLIED_KEYS_KEPT, CHANGE_STEP, SessionState
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock
from sagalog.errors import SessionClosedError

pytestmark = pytest.mark.anyio

reg = Registry()


@workflow(registry=reg, name="tests.idem_cart", session=True)
def add_to_cart(ctx: Any, item: str) -> Any:
    state = yield ctx.session.merge({"item": item, "count": 1})
    return state.changes


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def journal_(journal_url: str, clock: ManualClock) -> AsyncIterator[Journal]:
    journal = await connect(journal_url, clock=clock)
    try:
        yield journal
    finally:
        await journal.close()


async def as_step(
    sessions: Sessions, seq: int, attempt: int, run: Callable[[], Awaitable[SessionState]]
) -> SessionState:
    """Run a built-in session step the way the runner does: inside its step context."""
    context = StepContext("wf1", "tests.idem_cart", CHANGE_STEP, seq, attempt, sessions=sessions)
    token = CURRENT_STEP.set(context)
    try:
        return await run()
    finally:
        CURRENT_STEP.reset(token)


async def types(journal: Journal, session_id: str) -> list[str]:
    return [e.type for e in await journal.read_stream(f"session-{session_id}")]


async def test_a_retried_change_step_appends_nothing(journal_: Journal, clock: ManualClock) -> None:
    sessions = Sessions(journal_, clock=clock)
    await sessions.open("s1")
    first = await as_step(sessions, 3, 1, lambda: session_change_step("s1", {"n": 1}, []))
    clock.advance(5)
    again = await as_step(sessions, 3, 2, lambda: session_change_step("s1", {"n": 1}, []))
    assert await types(journal_, "s1") == ["SessionOpened", "SessionChanged"]
    assert again == first and again.changes == 1 and again.applied_keys == ("wf1:3",)
    # Another step (another index) is another change.
    await as_step(sessions, 4, 1, lambda: session_change_step("s1", {"n": 2}, ["x"]))
    assert (await sessions.get("s1")).changes == 2


async def test_a_retried_touch_step_appends_nothing(journal_: Journal, clock: ManualClock) -> None:
    sessions = Sessions(journal_, clock=clock)
    await sessions.open("s1", idle_timeout=60)
    touched = await as_step(sessions, 1, 1, lambda: session_touch_step("s1"))
    clock.advance(30)
    again = await as_step(sessions, 1, 2, lambda: session_touch_step("s1"))
    assert again.touches == 1 and again.idle_deadline == touched.idle_deadline
    assert await types(journal_, "s1") == ["SessionOpened", "SessionTouched"]


async def test_a_retry_after_the_session_closed_returns_its_state(
    journal_: Journal, clock: ManualClock
) -> None:
    sessions = Sessions(journal_, clock=clock)
    await sessions.open("s1")
    await as_step(sessions, 2, 1, lambda: session_change_step("s1", {"n": 1}, []))
    await sessions.close("s1", "done")
    again = await as_step(sessions, 2, 2, lambda: session_change_step("s1", {"n": 1}, []))
    assert (again.status, again.attributes) == ("closed", {"n": 1})  # the change was made
    with pytest.raises(SessionClosedError, match="session 's1' was closed"):
        await as_step(sessions, 5, 1, lambda: session_change_step("s1", {"n": 2}, []))


async def test_a_workflow_step_rerun_after_a_crash_changes_the_session_once(
    journal_: Journal, clock: ManualClock
) -> None:
    runner = Runner(journal_, reg, clock=clock, worker_id="test")
    await runner.sessions.open("cart")
    await runner.start(add_to_cart, "book", id="wf1", session_id="cart")
    await runner.run_until_idle()
    assert (await runner.describe("wf1")).status == "completed"
    history = [decode_event(e) for e in await journal_.read_stream("wf-wf1")]
    seq = next(e.seq for e in history if isinstance(e, StepScheduled) and e.step == CHANGE_STEP)
    # The worker crashed before StepCompleted was recorded: the step runs again, same key.
    again = await as_step(
        runner.sessions, seq, 2, lambda: session_change_step("cart", {"item": "book", "count": 1}, [])
    )
    assert again.changes == 1 and again.applied_keys == (f"wf1:{seq}",)
    assert await types(journal_, "cart") == ["SessionOpened", "WorkflowBound", "SessionChanged"]


async def test_keys_are_remembered_from_events_and_bounded(journal_: Journal, clock: ManualClock) -> None:
    sessions = Sessions(journal_, clock=clock, snapshot_every=7)
    await sessions.open("s1")
    for seq in range(12):
        await sessions.change("s1", {"n": seq}, idempotency_key=f"k:{seq}")
    cold = await Sessions(journal_, clock=clock).get("s1")  # from a snapshot and the tail
    assert cold.applied_keys == tuple(f"k:{n}" for n in range(12))
    await Sessions(journal_, clock=clock).change("s1", {"n": 0}, idempotency_key="k:0")
    assert (await sessions.get("s1")).changes == 12


def test_only_the_latest_keys_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from sagalog.replay import sessions as fold_module

    monkeypatch.setattr(fold_module, "APPLIED_KEYS_KEPT", 3)
    state = SessionState("s1")
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for version, key in enumerate(["a", "b", None, "c", "d"], start=1):
        event = fold_module.SessionChanged(at, {"n": version}, key=key)
        state = fold_module.SESSION_FOLD.apply_event(state, event, version)
    assert state.applied_keys == ("b", "c", "d")
    assert APPLIED_KEYS_KEPT == 1000
