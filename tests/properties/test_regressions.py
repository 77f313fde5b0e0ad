"""Failures the properties found, kept as plain tests (each names the property that found it)."""

from __future__ import annotations

from typing import Any

import pytest
from props import fold, run_plan
from sagalog.engine import Registry, step, workflow
from sagalog.replay import child, sleep
from sagalog.replay.events import CancelRequested, StepStarted
from sagalog.storage import connect

from sagalog.testing import (
    Fault,
    Op,
    StepSpec,
    check_children,
    check_terminal,
    decoded,
    histories,
    run_instance,
)

pytestmark = pytest.mark.anyio


async def test_a_child_created_for_a_commit_that_lost_to_a_cancel_is_cancelled_not_orphaned() -> None:
    """Found by test_inv1_exactly_one_terminal_state (fault: cancel after append 3, now 2:
    the first step's start goes in with its outcome).

    The step before the child completed while a client's cancel was being
    appended. The worker created the child instance (children are created
    before the parent records starting them, so a crash cannot lose one),
    then its append lost the race to the cancel; the replayed parent was
    cancelled and never recorded the child. The child then ran its steps for
    nobody, and its outcome was appended to the parent after the parent's
    terminal event. Now the runner cancels such a child, and an ended parent
    takes no outcome.
    """
    journal = await connect("memory://")
    plan = [Op("step", (StepSpec("a", ("retry", "ok")),)), Op("child", (StepSpec("b", ("ok",)),))]
    run, found = await run_plan(journal, plan, Fault("cancel", 2))
    parent, kid = found[run.instance_id], found[f"{run.instance_id}-1"]
    assert (fold(parent).status, fold(kid).status) == ("cancelled", "cancelled")
    assert check_terminal(run.instance_id, parent) == [] and check_terminal("kid", kid) == []
    kid_events = [event for _, event in decoded(kid)]
    assert kid_events[1] == CancelRequested(f"parent {run.instance_id} never recorded starting it")
    assert not any(isinstance(e, StepStarted) for e in kid_events), "the orphan ran a step"
    assert [e.what for e in run.world.effects if e.instance_id == kid[0].stream_id[3:]] == []
    await journal.close()


async def test_late_signals_reach_every_wait_before_its_timeout_even_around_a_crash() -> None:
    """Found by test_inv4_crash_anywhere_resume_equals_no_crash (plan: two signal waits).

    A harness bug, not the engine's: after delivering a late signal the
    driver moved the clock to the next wait's timeout before signalling it.
    """
    journal = await connect("memory://")
    plan = [Op("signal"), Op("signal")]
    clean, _ = await run_plan(journal, plan)
    assert fold((await histories(journal, clean.instance_id))[clean.instance_id]).status == "completed"
    for at in range(1, clean.worker.appends + 1):
        run, found = await run_plan(journal, plan, Fault("crash", at))
        assert run.crashed, at
        assert fold(found[run.instance_id]).status == "completed", at
    await journal.close()


async def test_a_child_created_just_before_a_crash_and_a_cancel_does_not_run() -> None:
    """Found by test_inv3_... with the compound fault crash_cancel (check_children).

    The worker created the child, then died before recording the step's
    completion and the child's start; a cancel came before another worker
    resumed. The replayed parent, cancelled, never records the child: the
    child cancels itself on its first advance instead of running its steps.
    """
    journal = await connect("memory://")
    plan = [Op("step", (StepSpec("a", ("ok",)),)), Op("child", (StepSpec("b", ("ok",)),))]
    clean, _ = await run_plan(journal, plan)
    for at in range(1, clean.worker.appends + 1):
        run, found = await run_plan(journal, plan, Fault("crash_cancel", at))
        assert run.crashed, at
        assert check_children(found) == [], at
        assert all(fold(events).status in ("cancelled", "completed") for events in found.values()), at
    await journal.close()


ANOTHER_PATH = Registry()
FLIPS: list[int] = []


@step(registry=ANOTHER_PATH, name="another.flip")
async def flip() -> bool:
    """True the first time it runs, False after: a step whose re-run returns something else."""
    FLIPS.append(1)
    return len(FLIPS) == 1


@step(registry=ANOTHER_PATH, name="another.work")
async def work(n: int) -> int:
    """Some work (also the child's)."""
    return n


@workflow(registry=ANOTHER_PATH, name="another.kid")
def kid(ctx: Any) -> Any:
    """A child that runs one step."""
    return (yield work(1))


@workflow(registry=ANOTHER_PATH, name="another.parent")
def parent(ctx: Any) -> Any:
    """A child or a step at the same place, by what ``flip`` returns."""
    if (yield flip()):
        yield child(kid)
    else:
        yield work(2)
    yield sleep(60)  # still running when the orphan is first advanced
    return (yield work(3))


async def test_an_orphan_cancels_itself_once_its_parent_takes_another_path() -> None:
    """The case guarantees.md named as left open: a crash between creating a child and
    recording it; the re-run step returns something else and the parent, still running,
    puts another command where the child was. The child must not run its step."""
    journal = await connect("memory://")
    orphans = 0
    clean = await run_instance(journal, ANOTHER_PATH, "another.parent", [], instance_id="clean")
    for at in range(1, clean.worker.appends + 1):
        FLIPS.clear()
        run = await run_instance(journal, ANOTHER_PATH, "another.parent", [], instance_id=f"p{at}",
                                 fault=Fault("crash", at))  # fmt: skip
        found = await histories(journal, run.instance_id)
        assert check_children(found) == [], at
        assert fold(found[run.instance_id]).status == "completed", at
        recorded = any(e.type == "ChildStarted" for e in found[run.instance_id])
        for instance, events in found.items():
            if instance != run.instance_id and not recorded:  # an orphan
                assert fold(events).status == "cancelled", at
                assert not any(e.type == "StepStarted" for e in events), at
                orphans += 1
    assert orphans > 0, "no crash point left an orphan behind: the test proves nothing"
    await journal.close()
