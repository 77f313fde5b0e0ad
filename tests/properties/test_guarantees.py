"""The saga guarantees, each its own property, over generated sagas and faults (memory journal).

docs/guarantees.md states each guarantee and names the property here that
proves it. Every run is a plan (sagalog.testing.plans) run to its end by
sagalog.testing.run_instance with one fault: the worker dies instead of an
append, a cancel arrives right after one, or another runner takes the
instance over before one (lease lost). Signals arrive early, late or never;
an operator retries any compensation that failed for good.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from props import (
    assert_compensation_failed_only_when_exhausted,
    examples,
    fold,
    plan_to_undo,
    replay,
    run_plan,
)
from sagalog.engine import Runner
from sagalog.replay import TERMINAL, SagaFold, decode_event
from sagalog.replay.events import CompensationStarted
from sagalog.storage import connect

from sagalog.testing import (
    PLAN_REGISTRY,
    Fault,
    Op,
    StepSpec,
    check_children,
    check_compensations,
    check_completions,
    check_global,
    check_terminal,
    check_versions,
    executions_after_completion,
    outcome,
    read_everything,
)
from sagalog.testing.strategies import crash_points, faults, plans, signal_modes, step_specs

pytestmark = pytest.mark.anyio

ANY_FAULT = ("none", "crash", "cancel", "takeover", "crash_cancel")
KINDS = ["crash", "takeover"]


async def faulted_run(data: st.DataObject, plan: list[Op], signals: Any) -> Any:
    """A clean run (to count the worker's appends), then one with a fault drawn among them."""
    journal = await connect("memory://")
    clean, _ = await run_plan(journal, plan, signals=signals)
    fault = data.draw(faults(clean.worker.appends, ANY_FAULT), label="fault")
    run, found = await run_plan(journal, plan, fault, signals)
    return journal, run, found


@examples(5.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv1_exactly_one_terminal_state(plan: list[Op], signals: Any, data: st.DataObject) -> None:
    journal, _, found = await faulted_run(data, plan, signals)
    for instance, events in found.items():
        assert check_terminal(instance, events) == []
        assert fold(events).status in TERMINAL
    await journal.close()


@examples(5.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv2_compensations_are_the_completed_steps_in_reverse(
    plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal, _, found = await faulted_run(data, plan, signals)
    for instance, events in found.items():
        assert check_compensations(instance, events) == []
        assert check_completions(instance, events) == []
    await journal.close()


@examples(5.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv3_no_compensation_without_completion_no_step_after_compensation_began(
    plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal, run, found = await faulted_run(data, plan, signals)
    assert check_children(found) == []
    # What really ran (the world's log), against the journal.
    for instance, events in found.items():
        undoes: dict[int, int] = {}
        completed: set[int] = set()
        began: int | None = None
        for event in events:
            decoded = decode_event(event)
            if isinstance(decoded, CompensationStarted):
                undoes[decoded.seq] = decoded.for_seq
                began = event.position if began is None else began
            elif event.type == "StepCompleted":
                completed.add(decoded.seq)  # type: ignore[union-attr]
        for effect in run.world.effects:
            if effect.instance_id != instance:
                continue
            if effect.what.startswith("undo"):
                assert undoes.get(effect.seq) in completed, effect
            elif began is not None:
                assert effect.watermark < began, f"{effect} began after compensation began"
    await journal.close()


@examples(5.0)
@given(plan=plans(racy=False), signals=signal_modes(), data=st.data(), kind=st.sampled_from(KINDS))
async def test_inv4_crash_anywhere_resume_equals_no_crash(
    plan: list[Op], signals: Any, data: st.DataObject, kind: str
) -> None:
    journal = await connect("memory://")
    clean, _ = await run_plan(journal, plan, signals=signals)
    expected = list((await outcome(journal, clean.instance_id)).values())
    # Every append point of a small saga, a sample of a big one's.
    for at in data.draw(crash_points(clean.worker.appends), label="points"):
        run, found = await run_plan(journal, plan, Fault(kind, at), signals)  # type: ignore[arg-type]
        assert run.worker.fired, at
        assert list((await outcome(journal, run.instance_id)).values()) == expected, (kind, at)
        assert executions_after_completion(run.world, found, died_at=run.died_at) == [], (kind, at)
        for instance, events in found.items():
            assert check_completions(instance, events) == [], (kind, at)
    await journal.close()


@examples(5.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv5_replaying_a_final_history_yields_the_recorded_commands(
    plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal, _, found = await faulted_run(data, plan, signals)
    for instance, events in found.items():
        executor = replay(events)  # raises NonDeterminismError on any other command
        assert executor.decide() == [], "the code yields commands the history does not hold"
        state = fold(events)
        assert executor.status == state.status
        assert executor.result == state.result


        # Snapshots were taken every 5 events: describe() reads the latest one and the tail.
        assert await Runner(journal, PLAN_REGISTRY, snapshot_every=5).describe(instance) == state
    await journal.close()


@examples(5.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv6_fold_of_snapshot_and_tail_equals_fold_of_all(
    plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal, _, found = await faulted_run(data, plan, signals)
    fold_ = SagaFold()
    for events in found.values():
        whole = fold(events)
        for k in range(len(events) + 1):
            before = fold(events[:k]) if k else fold_.initial(events[0].stream_id)
            snapshot = fold_.decode(fold_.encode(before))
            assert (fold(events[k:], snapshot) if k < len(events) else snapshot) == whole, k
    await journal.close()


@examples(5.0)
@given(plan=plans(exhaust=True), signals=signal_modes(), data=st.data())
async def test_inv7_streams_contiguous_global_order_complete(
    plan: list[Op], signals: Any, data: st.DataObject
) -> None:
    journal, _, found = await faulted_run(data, plan, signals)
    for instance, events in found.items():
        assert check_versions(f"wf-{instance}", events) == []
    everything = await read_everything(journal)
    streams = {e.stream_id for e in everything}
    assert check_global(everything, {s: await journal.read_stream(s) for s in streams}) == []
    await journal.close()


undoable = st.lists(step_specs(undo=True, fatal=False), min_size=1, max_size=3)


@examples(5.0)
@given(
    steps=undoable,
    signals=signal_modes(),
    data=st.data(),
)
async def test_inv8_compensation_failed_only_when_exhausted_operator_retry_compensates(
    steps: list[StepSpec], signals: Any, data: st.DataObject
) -> None:
    journal, run, found = await faulted_run(data, plan_to_undo(steps), signals)
    assert_compensation_failed_only_when_exhausted(run, found)
    await journal.close()
