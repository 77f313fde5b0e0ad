"""What the property tests share: example counts, a plan run with a fault, and what it left.

Example counts scale with the active hypothesis profile (``fast`` by default,
``thorough`` for long runs: ``HYPOTHESIS_PROFILE=thorough make test``), so
the memory backend gets many examples and SQLite/PostgreSQL a few.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from sagalog.replay import SagaFold, SagaState, apply_event, decode_event
from sagalog.replay.events import CompensationFailed, CompensationRetried, CompensationStarted, StepStarted
from sagalog.replay.executor import Executor, default_decode
from sagalog.storage import Event, Journal

from sagalog.testing import (
    NO_FAULT,
    PLAN_REGISTRY,
    Fault,
    Op,
    Run,
    SignalMode,
    StepSpec,
    check_compensations,
    decoded,
    executions_after_completion,
    histories,
    plan_saga,
    run_instance,
)
from sagalog.testing.plans import UNDO_ATTEMPTS


def examples(share: float, least: int = 1) -> settings:
    """Settings with ``share`` of the active profile's ``max_examples`` (at least ``least``)."""
    active = settings()
    return settings(
        active,
        max_examples=max(least, round(active.max_examples * share)),
        suppress_health_check=[*active.suppress_health_check, HealthCheck.function_scoped_fixture],
    )


def new_id() -> str:
    """A fresh instance id (one journal serves many examples)."""
    return f"p{uuid.uuid4().hex[:10]}"


async def run_plan(
    journal: Journal, plan: list[Op], fault: Fault = NO_FAULT, signals: SignalMode = "late"
) -> tuple[Run, dict[str, list[Event]]]:
    """Run ``plan`` to its end under ``fault``; the run and the histories of its instances."""
    run = await run_instance(
        journal, PLAN_REGISTRY, plan_saga, [plan], instance_id=new_id(), fault=fault, signals=signals
    )
    return run, await histories(journal, run.instance_id)


def fold(events: list[Event], state: SagaState | None = None) -> SagaState:
    """The SagaState of ``events`` (after ``state``, when given)."""
    fold_ = SagaFold()
    current = state if state is not None else fold_.initial(events[0].stream_id)
    for event in events:
        current = fold_.apply(current, event)
    return current


def replay(events: list[Event]) -> Executor:
    """Drive the current code of the instance's workflow against its history (no step runs)."""
    executor = executor_for(events)
    executor.feed(decoded(events))
    return executor


def executor_for(events: list[Event]) -> Executor:
    """A new executor of the instance's workflow (current code), nothing fed yet."""
    started = fold(events[:1])
    wf = PLAN_REGISTRY.workflow(started.workflow)

    def decode(kind: str, name: str, data: bytes) -> Any:
        step = PLAN_REGISTRY.steps.get(name) if kind == "step" else None
        return step.decode_result(data) if step is not None else default_decode(kind, name, data)

    return Executor(wf.fn, started.instance_id, wf.name, decode_args=wf.decode_args, decode_result=decode)


def state_of(pairs: list[tuple[int, Any]]) -> SagaState:
    """The SagaState of decoded pairs."""
    state = SagaState("x")
    for version, event in pairs:
        state = apply_event(state, event, version)
    return state


def plan_to_undo(steps: list[StepSpec]) -> list[Op]:
    """Completed steps to undo, then a step that fails for good: the saga must compensate."""
    return [*(Op("step", (s,)) for s in steps), Op("step", (StepSpec("z", ("fatal",)),))]


def assert_compensation_failed_only_when_exhausted(run: Run, found: dict[str, list[Event]]) -> None:
    """Guarantee 8 over a run of :func:`plan_to_undo` in which an operator retried what failed.

    A compensation failed only for good (a fatal error) or after all its
    attempts, and the operator's retry led to the end without running any
    compensation's recorded completion twice.
    """
    events = found[run.instance_id]
    pairs = [decode_event(e) for e in events]
    assert fold(events).status in ("compensated", "cancelled")
    base: dict[int, int] = {}
    for event in pairs:
        match event:
            case CompensationStarted(seq=seq) | CompensationRetried(seq=seq):
                base[seq] = max((e.attempt for e in pairs if isinstance(e, StepStarted) and e.seq == seq
                                 and pairs.index(e) < pairs.index(event)), default=0)
            case CompensationFailed(seq=seq, attempt=attempt, error_type=error):
                assert error.endswith("Fatal") or attempt - base[seq] >= UNDO_ATTEMPTS, event
            case _:
                pass
    assert check_compensations(run.instance_id, events) == []
    assert executions_after_completion(run.world, found, died_at=run.died_at) == []
