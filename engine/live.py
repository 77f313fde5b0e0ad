"""An instance in memory: its replayed executor and folded state, as the Runner caches it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import anyio
import msgspec
from cachetools import LRUCache
from sagalog.engine.tracing import TRACEPARENT
from sagalog.engine.workflow import Workflow
from sagalog.replay.events import (
    ChildCompleted,
    ChildFailed,
    CompensationCompleted,
    CompensationFailed,
    StepCompleted,
    StepFailed,
    StepStarted,
    WorkflowEvent,
)
from sagalog.replay.executor import Executor, StepTask
from sagalog.replay.saga import SagaState, apply_event

OUTCOMES = (StepCompleted, StepFailed, CompensationCompleted, CompensationFailed)
"""Events that end a step or compensation attempt."""


class Live(msgspec.Struct):
    """A cached, replayed instance: its executor and folded state."""

    executor: Executor
    state: SagaState
    workflow: Workflow
    fresh: bool = False
    """Read by ``Runner.preload`` after a claim and not used since: the next
    load trusts it without reading the tail."""
    decided: bool = False
    """The history holds a decision: the instance has run before (for metrics)."""
    meta: dict[str, str] = {}
    """Metadata of the events appended for it: the worker and the instance's trace."""
    adopted: bool = False
    """A child whose parent was seen to record starting it (see ``Family.orphaned``)."""
    ready_now: bool = False
    """Its work-index row says "ready now": this copy's last commit wrote so, or it was
    claimed as ready. A commit that leaves it ready now need not write the row again."""
    deferred: list[WorkflowEvent] = []
    """Events fed to the executor but not appended yet: a claim's first commit when it
    only schedules and starts steps, appended with the first outcome (``Committer.commit``).
    ``state`` does not include them."""
    deferred_at: datetime | None = None
    """When ``deferred`` was set aside (a heartbeat appends it once its steps run long)."""

    @property
    def traceparent(self) -> str | None:
        """The instance's trace context, once known."""
        return self.meta.get(TRACEPARENT)

    def set_trace(self, traceparent: str | None, worker_meta: dict[str, str]) -> None:
        """Carry ``traceparent`` on the events appended from now on (None: keep none)."""
        self.meta = {**worker_meta, TRACEPARENT: traceparent} if traceparent else worker_meta


class LiveCache(LRUCache[str, Live]):
    """Live instances by id, the least recently used evicted first (sticky execution).

    An evicted instance's generator is closed at once, unless ``in_use`` says
    the instance is being advanced right now (its holder keeps using the
    executor; the cycle collector frees it later). A suspended generator's
    frame refers back to its executor, so without the close every eviction
    would leave a cycle for the collector.
    """

    def __init__(self, maxsize: int, in_use: Callable[[str], bool]) -> None:
        super().__init__(maxsize)
        self._in_use = in_use

    def popitem(self) -> tuple[str, Live]:
        """Evict the least recently used instance."""
        instance_id, live = super().popitem()
        if not self._in_use(instance_id):
            live.executor.close()
        return instance_id, live


class Handoff(msgspec.Struct):
    """A step attempt just started, to be run by the task that committed its start."""

    task: StepTask
    scope: anyio.CancelScope
    workflow: Workflow


class Idle(Exception):
    """Loading an instance found it ended, or parked it: no code to run. Carries its state."""

    def __init__(self, state: SagaState) -> None:
        self.state = state


def fold_pairs(state: SagaState, pairs: Sequence[tuple[int, WorkflowEvent]]) -> SagaState:
    """``state`` with decoded events applied, each at its version."""
    for version, event in pairs:
        state = apply_event(state, event, version)
    return state


def valid_inputs(ex: Executor, inputs: Sequence[WorkflowEvent]) -> list[WorkflowEvent]:
    """The ``inputs`` that still apply after a replay (see :func:`still_valid`).

    A ``StepStarted`` among them is an attempt that ran before its start was
    recorded (``Live.deferred`` lost to a replay): it applies while the step
    waits for exactly that attempt, and then so does its outcome.
    """
    kept: list[WorkflowEvent] = []
    started: set[tuple[int, int]] = set()
    for event in inputs:
        if isinstance(event, StepStarted):
            task = ex.steps.get(event.seq)
            if (
                not ex.ended and task is not None and not task.done and not task.running
                and task.attempt == event.attempt - 1
            ):  # fmt: skip
                kept.append(event)
                started.add((event.seq, event.attempt))
        elif isinstance(event, OUTCOMES) and (event.seq, event.attempt) in started:
            kept.append(event)  # the outcome of the start kept above
        elif still_valid(ex, event):
            kept.append(event)
    return kept


def still_valid(ex: Executor, event: WorkflowEvent) -> bool:
    """Whether an outcome still applies after a replay (not recorded or abandoned meanwhile)."""
    if ex.ended:
        return False  # nothing is appended after the terminal event
    if isinstance(event, OUTCOMES):
        task = ex.steps.get(event.seq)
        return task is not None and not task.done and task.running and task.attempt == event.attempt
    if isinstance(event, ChildCompleted | ChildFailed):
        child = ex.children.get(event.seq)
        return child is None or not child.done
    return True
