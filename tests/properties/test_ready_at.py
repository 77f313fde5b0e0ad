"""The runner's shortcut for when an instance is next ready agrees with the full fold."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import examples, executor_for, run_plan
from sagalog.replay import SagaFold, ready_at
from sagalog.storage import connect

from sagalog.testing import Op, decoded
from sagalog.testing.strategies import faults, plans, signal_modes

pytestmark = pytest.mark.anyio


@examples(1.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_ready_at_over_the_executors_unfinished_steps_is_the_full_scans_at_every_event(
    plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    """``Committer.commit`` asks ``ready_at`` about the steps the executor has not seen
    finish only (so long histories cost nothing); over every prefix of generated
    histories, faults included, that must give what looking at every step gives
    wherever a commit may end (the executor holds no decision the history lacks)."""
    journal = await connect("memory://")
    clean, _ = await run_plan(journal, plan, signals=signals)
    fault = data.draw(faults(clean.worker.appends, ("none", "crash", "cancel", "takeover")), label="fault")
    _, found = await run_plan(journal, plan, fault, signals)
    fold = SagaFold()
    for events in found.values():
        executor = executor_for(events)
        state = fold.initial(events[0].stream_id)
        for event, pair in zip(events, decoded(events), strict=True):
            executor.feed([pair])
            state = fold.apply(state, event)
            if not executor.caught_up:
                continue  # the code decided more than is recorded yet: no commit ends here
            for now in (event.recorded_at, event.recorded_at + timedelta(days=30)):
                assert ready_at(state, now, executor.open_seqs()) == ready_at(state, now)
    await journal.close()
