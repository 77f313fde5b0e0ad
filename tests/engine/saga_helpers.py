"""Helpers for the workflow engine tests: a runner on a ManualClock, driven to the end."""

from __future__ import annotations

from sagalog.engine import Registry, Runner
from sagalog.replay.events import decode_event
from sagalog.replay.saga import TERMINAL, SagaState
from sagalog.storage import Journal

from sagalog.clock import ManualClock


def make_runner(journal: Journal, registry: Registry, clock: ManualClock, **options: object) -> Runner:
    """A runner with a fixed worker id, so event metadata is stable."""
    return Runner(journal, registry, clock=clock, worker_id="test", **options)  # type: ignore[arg-type]


async def drive(runner: Runner, clock: ManualClock, instance_id: str, max_rounds: int = 50) -> SagaState:
    """Run until the instance ends (or parks), moving the clock to each next wake-up."""
    clock_ = clock
    for _ in range(max_rounds):
        await runner.run_until_idle()
        state = await runner.describe(instance_id)
        if state.status in TERMINAL or state.status in ("parked", "compensation_failed"):
            return state
        wake = await runner.journal.next_ready_at()
        if wake is None:
            return state  # waits for a signal or an operator
        clock_.set(max(wake, clock_.now()))
    raise AssertionError(f"{instance_id} did not settle in {max_rounds} rounds")


async def event_types(journal: Journal, instance_id: str) -> list[str]:
    """The type names of an instance's events, in order."""
    return [e.type for e in await journal.read_stream(f"wf-{instance_id}")]


async def events(journal: Journal, instance_id: str) -> list[object]:
    """An instance's decoded events, in order."""
    return [decode_event(e) for e in await journal.read_stream(f"wf-{instance_id}")]
