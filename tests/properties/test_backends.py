"""The guarantees on SQLite and PostgreSQL: fewer examples than on memory, same properties.

One journal per test (a SQLite file, a fresh PostgreSQL schema) serves every
example; each run has its own instance ids.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import assert_compensation_failed_only_when_exhausted, examples, plan_to_undo, run_plan
from sagalog.storage import connect

from sagalog.testing import (
    Op,
    StepSpec,
    check_all,
    executions_after_completion,
    outcome,
    read_everything,
)
from sagalog.testing.strategies import faults, plans, signal_modes, step_specs

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest) -> str:
    """A SQLite file, then a PostgreSQL schema."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@examples(0.4, least=2)
@given(plan=plans(max_size=4, exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv1_inv2_inv7_hold_on_durable_backends(
    durable_url: str, plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal = await connect(durable_url)
    try:
        clean, _ = await run_plan(journal, plan, signals=signals)
        fault = data.draw(faults(clean.worker.appends), label="fault")
        run, found = await run_plan(journal, plan, fault, signals)
        # Guarantees 1 (one terminal state), 2 and 3 (compensations), 4's completion
        # checks, 7 (streams and the global order) over the instance and its children.
        assert check_all(found, await read_everything(journal)) == []
        assert executions_after_completion(run.world, found, died_at=run.died_at) == []
    finally:
        await journal.close()


@examples(0.4, least=2)
@given(plan=plans(max_size=4, racy=False), signals=signal_modes(), data=st.data())
async def test_inv4_crash_resume_equals_no_crash_on_durable_backends(
    durable_url: str, plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal = await connect(durable_url)
    try:
        clean, _ = await run_plan(journal, plan, signals=signals)
        expected = list((await outcome(journal, clean.instance_id)).values())
        fault = data.draw(faults(clean.worker.appends, ("crash", "takeover")), label="fault")
        run, found = await run_plan(journal, plan, fault, signals)
        assert list((await outcome(journal, run.instance_id)).values()) == expected
        assert executions_after_completion(run.world, found, died_at=run.died_at) == []
    finally:
        await journal.close()


@examples(0.4, least=2)
@given(
    steps=st.lists(step_specs(undo=True, fatal=False), min_size=1, max_size=3),
    signals=signal_modes(),
    data=st.data(),
)
async def test_inv8_operator_retry_compensates_on_durable_backends(
    durable_url: str, steps: list[StepSpec], signals: Any, data: st.DataObject
) -> None:
    journal = await connect(durable_url)
    try:
        plan = plan_to_undo(steps)
        clean, _ = await run_plan(journal, plan, signals=signals)
        fault = data.draw(faults(clean.worker.appends), label="fault")
        run, found = await run_plan(journal, plan, fault, signals)
        assert_compensation_failed_only_when_exhausted(run, found)
    finally:
        await journal.close()
