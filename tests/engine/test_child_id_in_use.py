"""A child workflow whose id belongs to another instance: the error is thrown at the child's yield.

Like Temporal's ``WorkflowAlreadyStartedError`` for a child: nothing is
started, the other instance is left alone, the parent decides.
"""

from __future__ import annotations

from typing import Any

import pytest
from saga_helpers import drive, event_types, make_runner
from sagalog.engine import Registry, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import child, sleep, wait_signal
from sagalog.replay.events import WorkflowStarted, encode_event
from sagalog.storage import NO_STREAM, Journal, Schedule, encode_value

from sagalog.clock import ManualClock
from sagalog.errors import ChildWorkflowAlreadyStartedError, StepError, WorkflowFailedError

pytestmark = pytest.mark.anyio

reg = Registry()


@step(registry=reg, name="cid.book", retry=Retry.none())
async def book(what: str) -> str:
    return f"{what}-ok"


@step(registry=reg, name="cid.unbook", retry=Retry.none())
async def unbook(confirmation: str) -> str:
    return f"undone {confirmation}"


@workflow(registry=reg, name="cid.other")
def other(ctx: Any) -> Any:
    answer = yield wait_signal("go")
    return answer


@workflow(registry=reg, name="cid.kid")
def kid(ctx: Any, n: int) -> Any:
    done = yield book(f"kid{n}")
    return done


@workflow(registry=reg, name="cid.strict")
def strict(ctx: Any, child_id: str) -> Any:
    yield book("room").compensate(unbook)
    result = yield child(kid, 1, id=child_id)
    return result


@workflow(registry=reg, name="cid.careful")
def careful(ctx: Any, child_id: str) -> Any:
    try:
        result = yield child(kid, 1, id=child_id)
    except ChildWorkflowAlreadyStartedError as exc:
        yield sleep(seconds=10)
        result = yield child(kid, 2, id=f"{exc.child_id}-retry")
    return result


async def test_an_unhandled_collision_fails_the_parent_which_compensates(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    await runner.start(other, id="taken")
    await runner.run_until_idle()
    before = await event_types(journal, "taken")
    await runner.start(strict, "taken", id="p")
    state = await drive(runner, clock, "p")
    assert state.status == "compensated"
    with pytest.raises(WorkflowFailedError, match="id 'taken' already belongs to another instance"):
        await runner.result("p")
    assert state.error_type == "sagalog.errors.ChildWorkflowAlreadyStartedError"
    assert state.message == (
        "child workflow 'cid.kid' was not started: id 'taken' already belongs to another "
        "instance (workflow 'cid.other', not a child workflow); give the child another id, "
        "or none to get '<parent id>-<n>'"
    )
    assert state.children[1].status == "already_started"
    # The other instance is untouched: not cancelled, not told anything.
    assert await event_types(journal, "taken") == before
    await runner.signal("taken", "go", "fine")
    await drive(runner, clock, "taken")
    assert await runner.result("taken") == "fine"


async def test_the_parent_catches_it_at_the_yield_and_replays_it(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    await runner.start(kid, 0, id="busy")  # the same workflow, but not this parent's child
    await runner.start(careful, "busy", id="c")
    await runner.run_until_idle()
    runner.cache.clear()  # the rest replays the refused child from the journal
    state = await drive(runner, clock, "c")
    assert state.status == "completed"
    assert await runner.result("c") == "kid2-ok"
    types = await event_types(journal, "c")
    assert types[:3] == ["WorkflowStarted", "ChildStarted", "ChildFailed"]
    assert types.count("ChildStarted") == 2
    assert await runner.result("busy") == "kid0-ok"
    assert (await runner.describe("busy")).parent_id is None


async def test_a_child_created_by_the_same_decision_before_a_crash_is_kept(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    # The parent created its child, then crashed before recording ChildStarted.
    started = WorkflowStarted("cid.kid", encode_value([1]), parent_id="p", parent_seq=0)
    await journal.append("wf-mine", NO_STREAM, [encode_event(started)], schedule=Schedule(clock.now()))
    await runner.start(careful, "mine", id="p")
    await drive(runner, clock, "p")
    assert await runner.result("p", timeout=5) == "kid1-ok"
    assert "ChildFailed" not in await event_types(journal, "p")


def test_the_error_is_a_step_error() -> None:
    error = ChildWorkflowAlreadyStartedError("cid.kid", "x", "id 'x' is taken")
    assert isinstance(error, StepError)
    assert (error.step, error.child_id, str(error)) == ("cid.kid", "x", "id 'x' is taken")
