"""What the property tests share: example counts, a plan run with a fault, and what it left.

Example counts scale with the active hypothesis profile (``fast`` by default,
``thorough`` for long runs: ``HYPOTHESIS_PROFILE=thorough make test``), so
the memory backend gets many examples and SQLite/PostgreSQL a few.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, settings
from sagalog.replay import SagaFold, SagaState, apply_event
from sagalog.replay.executor import Executor, default_decode
from sagalog.storage import Event, Journal

from sagalog.testing import (
    NO_FAULT,
    PLAN_REGISTRY,
    Fault,
    Op,
    Run,
    SignalMode,
    decoded,
    histories,
    plan_saga,
    run_instance,
)


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
    pairs = decoded(events)
    started = fold(events[:1])
    wf = PLAN_REGISTRY.workflow(started.workflow)

    def decode(kind: str, name: str, data: bytes) -> Any:
        step = PLAN_REGISTRY.steps.get(name) if kind == "step" else None
        return step.decode_result(data) if step is not None else default_decode(kind, name, data)

    executor = Executor(wf.fn, started.instance_id, wf.name, decode_args=wf.decode_args, decode_result=decode)
    executor.feed(pairs)
    return executor


def state_of(pairs: list[tuple[int, Any]]) -> SagaState:
    """The SagaState of decoded pairs."""
    state = SagaState("x")
    for version, event in pairs:
        state = apply_event(state, event, version)
    return state
