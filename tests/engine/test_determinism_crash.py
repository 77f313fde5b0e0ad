"""Replay equals live, even when the process dies instead of any journal append, on each backend.

The crash model, the plan workflow and the checks live in ``sagalog.testing``
(the generated version of this test is
tests/properties/test_guarantees.py::test_inv4_crash_anywhere_resume_equals_no_crash).
Here one fixed plan that touches every kind of instruction is crashed at
every append point on memory, SQLite and PostgreSQL: the outcome must equal
an uninterrupted run's, no step whose completion was recorded runs again,
and each completion is recorded once.
"""

from __future__ import annotations

import pytest
from sagalog.storage import connect

from sagalog.testing import (
    PLAN_REGISTRY,
    Fault,
    Op,
    StepSpec,
    check_completions,
    executions_after_completion,
    histories,
    outcome,
    plan_saga,
    run_instance,
)

pytestmark = pytest.mark.anyio

FIXED = [
    Op("step", (StepSpec("a", undo=("retry", "ok")),)),
    Op("gather", (StepSpec("g", ("retry", "ok")), StepSpec("h", ("hang", "ok"), ("ok",)))),
    Op("sleep"),
    Op("step", (StepSpec("b", ("retry", "ok"), ("ok",)),)),
    Op("catch", (StepSpec("x", ("fatal",)),)),
    Op("child", (StepSpec("k", undo=("ok",)),)),
    Op("signal"),
    Op("step", (StepSpec("y", ("fatal",)),)),
]


async def test_crash_at_every_append_point_on_each_backend(journal_url: str) -> None:
    reference = await connect("memory://")
    clean = await run_instance(reference, PLAN_REGISTRY, plan_saga, [FIXED], instance_id="ref")
    expected = list((await outcome(reference, "ref")).values())
    assert expected[0].status == "compensated"
    assert expected[0].undone == {0: "undone A", 2: "undone H", 4: "undone B"}
    await reference.close()
    journal = await connect(journal_url)
    try:
        for at in range(1, clean.worker.appends + 1):
            iid = f"k{at}"
            run = await run_instance(journal, PLAN_REGISTRY, plan_saga, [FIXED], instance_id=iid,
                                     fault=Fault("crash", at))  # fmt: skip
            assert run.crashed, at
            assert list((await outcome(journal, iid)).values()) == expected, at
            found = await histories(journal, iid)
            assert executions_after_completion(run.world, found, died_at=run.died_at) == [], at
            assert all(check_completions(i, events) == [] for i, events in found.items()), at
    finally:
        await journal.close()
