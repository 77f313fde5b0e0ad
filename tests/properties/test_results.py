"""A client awaiting a result reads its instance only after an ENDING_TYPES event: that must be enough.

``Client.result()`` on PostgreSQL skips the commits whose notices list no
event type of ``ENDING_TYPES`` for its instance. The property: over generated
sagas and faults, every event that turns an instance into one a waiter stops
for (ended, continued as new, parked, ``compensation_failed``) has one of
those types, so no answer waits for the once-a-second look.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from props import examples, run_plan
from sagalog.engine.results import may_end
from sagalog.replay import SagaFold, SagaState, apply_event, decode_event
from sagalog.replay.saga import ENDING_TYPES
from sagalog.storage import UNKNOWN, Touch, connect

from sagalog.testing import NO_FAULT, Op, StepSpec
from sagalog.testing.strategies import faults, plans, signal_modes

pytestmark = pytest.mark.anyio

ANSWERED = frozenset({"completed", "failed", "compensated", "compensation_failed", "cancelled", "parked"})


def answered(state: SagaState) -> bool:
    """Whether a waiter stops at ``state`` (see ``engine.results.await_result``)."""
    return state.continued_as is not None or state.status in ANSWERED


# A compensation that fails for good leaves the saga compensation_failed (then an operator retries it).
UNDO_FAILS = [
    Op("step", (StepSpec("a", ("ok",), ("fatal", "ok")),)),
    Op("step", (StepSpec("z", ("fatal",)),)),
]


@examples(3.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
@example(plan=UNDO_FAILS, signals="late", data=None).via("compensation_failed")
async def test_only_ending_types_answer_a_waiter(
    plan: list[Op], signals: Any, data: st.DataObject | None
) -> None:
    journal = await connect("memory://")
    clean, _ = await run_plan(journal, plan, signals=signals)
    fault = NO_FAULT
    if data is not None:
        fault = data.draw(faults(clean.worker.appends, ("none", "crash", "cancel", "crash_cancel")))
    _, found = await run_plan(journal, plan, fault, signals)
    for instance, events in found.items():
        fold = SagaFold()
        state = fold.initial(events[0].stream_id)
        for event in events:
            before = answered(state)
            state = apply_event(state, decode_event(event), event.version)
            if answered(state) and not before:
                assert event.type in ENDING_TYPES, (instance, event.type, state.status)
    await journal.close()


def test_a_waiter_reads_after_an_ending_event_of_its_stream_or_an_unknown_one() -> None:
    assert may_end(Touch("ns", "wf-a", ("StepCompleted", "WorkflowCompleted"), "w"), "wf-a")
    assert not may_end(Touch("ns", "wf-a", ("StepStarted", "StepCompleted"), "w"), "wf-a")
    assert not may_end(Touch("ns", "wf-b", ("WorkflowCompleted",), "w"), "wf-a")
    assert may_end(Touch("ns", None, None, "w"), "wf-a")  # a big commit: streams not listed
    assert may_end(UNKNOWN, "wf-a")
