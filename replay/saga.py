"""Saga state: a pure fold of a workflow stream's events.

:class:`SagaFold` turns the events of ``wf-<id>`` into a :class:`SagaState`
(status, each step with its attempts and result, the compensation stack,
pending timers and signal waits, result or error). It is what ``describe``
shows and what snapshots hold; ``fold(all events) == fold(snapshot, tail)``
for every split. The fold is total: it applies whatever the stream holds and
never runs workflow code (that is the executor's job).

:func:`ready_at` derives the stream's work-index time from the state alone,
so the work index can be rebuilt from the events.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec
from sagalog.replay.events import (
    DECISION_TYPES,
    TERMINAL_TYPES,
    CancelRequested,
    ChildCancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    CompensationCompleted,
    CompensationFailed,
    CompensationRetried,
    CompensationSkipped,
    CompensationStarted,
    MarkerRecorded,
    ParentNotified,
    SignalReceived,
    SignalTimedOut,
    SignalWaitStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepStarted,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompensated,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowEvent,
    WorkflowFailed,
    WorkflowParked,
    WorkflowStarted,
    WorkflowUnparked,
    decode_event,
    instance_id_of,
)
from sagalog.storage import Event

from sagalog.errors import DecodingError

STATE_SCHEMA = 1
"""Snapshot schema of :class:`SagaState`; bump when its shape changes."""

Status = Literal[
    "absent",
    "running",
    "completed",
    "failed",
    "compensating",
    "compensated",
    "compensation_failed",
    "cancelled",
    "parked",
]
"""Where an instance is. ``absent`` until its first event."""

TERMINAL: frozenset[str] = frozenset({"completed", "failed", "compensated", "cancelled"})
"""Statuses an instance never leaves (``compensation_failed`` waits for an operator)."""

_ENDING: tuple[type[WorkflowEvent], ...] = (*TERMINAL_TYPES, WorkflowParked, CompensationFailed)
ENDING_TYPES: frozenset[str] = frozenset(t.__name__ for t in _ENDING)
"""Types of the events that can leave an instance where a caller awaiting its result stops
waiting: ended, continued as new, parked or ``compensation_failed``. A client reads the
instance again only after one of these was appended to it."""

StepStatus = Literal["scheduled", "running", "retrying", "completed", "failed", "cancelled"]


class StepState(msgspec.Struct, frozen=True):
    """One step or compensation of an instance."""

    seq: int
    """Its command index."""
    name: str
    """The step's name."""
    kind: Literal["step", "compensation"] = "step"
    """A workflow step or a compensation."""
    status: StepStatus = "scheduled"
    """Where it is."""
    attempts: int = 0
    """Attempts started so far."""
    result: bytes | None = None
    """The recorded result (msgpack) once completed."""
    error_type: str = ""
    """Type name of the last error."""
    message: str = ""
    """Message of the last error."""
    retry_at: datetime | None = None
    """When the next attempt is due, while retrying."""
    compensation: str | None = None
    """The step registered to undo it."""
    for_seq: int | None = None
    """For a compensation: the step it undoes."""


class ChildState(msgspec.Struct, frozen=True):
    """A child workflow started by an instance."""

    seq: int
    """The child call's command index."""
    child_id: str
    """The child's instance id."""
    workflow: str
    """Its workflow name."""
    detached: bool = False
    """Whether the parent neither waits for it nor cancels it."""
    status: str = "running"
    """``running``, or the terminal status it reported."""


class SagaState(msgspec.Struct, frozen=True):
    """Everything known about an instance, folded from its events."""

    instance_id: str
    """The instance (its stream is ``wf-<instance_id>``)."""
    workflow: str = ""
    """The workflow name."""
    status: Status = "absent"
    """Where the instance is."""
    version: int = 0
    """The last event version folded in."""
    args: bytes = b""
    """The arguments (msgpack list)."""
    parent_id: str | None = None
    """The parent instance of a child workflow."""
    parent_seq: int | None = None
    """The child call's command index in the parent."""
    detached: bool = False
    """A detached child."""
    session_id: str | None = None
    """The session it is bound to."""
    parent_notified: bool = False
    """Whether a child's outcome reached its parent."""
    steps: dict[int, StepState] = {}
    """Steps and compensations by command index."""
    compensations: tuple[int, ...] = ()
    """Completed steps with a compensation not yet run, in registration order (a stack)."""
    timers: dict[int, datetime] = {}
    """Pending timers: command index -> fire time."""
    waits: dict[int, str] = {}
    """Pending signal waits: command index -> signal name."""
    wait_timeouts: dict[int, datetime] = {}
    """Timeouts of pending waits."""
    signals: tuple[str, ...] = ()
    """Names of buffered signals no wait has taken yet, oldest first."""
    children: dict[int, ChildState] = {}
    """Child workflows by command index."""
    cancel_requested: str | None = None
    """The reason of a cancel request (kept once made)."""
    wake: bool = False
    """An input arrived that the workflow code has not decided on yet (a cancel,
    a signal a wait takes); cleared by the next decision."""
    result: bytes | None = None
    """The result (msgpack) once completed."""
    error_type: str = ""
    """Type name of the error that failed the instance."""
    message: str = ""
    """Its message."""
    parked_reason: str = ""
    """Why it is parked."""
    parked_kind: str = ""
    """Which kind of problem parked it."""
    status_before_park: str = "running"
    """The status to return to when unparked."""
    continued_as: str | None = None
    """The next run's instance id after continue-as-new."""
    markers: int = 0
    """Recorded side effects and patch markers."""

    @property
    def terminal(self) -> bool:
        """Whether the instance has ended for good."""
        return self.status in TERMINAL


def _step(state: SagaState, seq: int, **changes: object) -> SagaState:
    steps = dict(state.steps)
    current = steps.get(seq) or StepState(seq, "?")
    steps[seq] = msgspec.structs.replace(current, **changes)
    return msgspec.structs.replace(state, steps=steps)


def _without(mapping: dict[int, object], key: int) -> dict[int, object]:
    return {k: v for k, v in mapping.items() if k != key}


def apply_event(state: SagaState, event: WorkflowEvent, version: int) -> SagaState:
    """The state after ``event`` (pure)."""
    state = _apply(state, event)
    if state.wake and isinstance(event, DECISION_TYPES):
        return msgspec.structs.replace(state, version=version, wake=False)
    return msgspec.structs.replace(state, version=version)


def _apply(s: SagaState, event: WorkflowEvent) -> SagaState:
    """Start, steps, timers, signals, markers, children."""
    replace = msgspec.structs.replace
    match event:
        case WorkflowStarted():
            return replace(
                s, workflow=event.workflow, status="running", args=event.args,
                parent_id=event.parent_id, parent_seq=event.parent_seq,
                detached=event.detached, session_id=event.session_id, wake=True,
            )  # fmt: skip
        case StepScheduled(seq=seq):
            step_state = StepState(seq, event.step, compensation=event.compensation)
            return replace(s, steps={**s.steps, seq: step_state})
        case StepStarted(seq=seq, attempt=attempt):
            return _step(s, seq, status="running", attempts=attempt, retry_at=None)
        case StepCompleted(seq=seq):
            state = _step(s, seq, status="completed", result=event.result)
            if state.steps[seq].compensation is not None:
                state = replace(state, compensations=(*state.compensations, seq))
            return state
        case StepFailed(seq=seq):
            status: StepStatus = "retrying" if event.retry_at is not None else "failed"
            return _step(
                s, seq, status=status, error_type=event.error_type,
                message=event.message, retry_at=event.retry_at, attempts=event.attempt,
            )  # fmt: skip
        case StepCancelled(seq=seq):
            return _step(s, seq, status="cancelled", retry_at=None)
        case TimerStarted(seq=seq, fire_at=fire_at):
            return replace(s, timers={**s.timers, seq: fire_at})
        case TimerFired(seq=seq):
            return replace(s, timers=_without(s.timers, seq))  # type: ignore[arg-type]
        case SignalWaitStarted(seq=seq, name=name):
            if name in s.signals:
                signals = list(s.signals)
                signals.remove(name)
                return replace(s, signals=tuple(signals))
            timeouts = s.wait_timeouts
            if event.timeout_at is not None:
                timeouts = {**timeouts, seq: event.timeout_at}
            return replace(s, waits={**s.waits, seq: name}, wait_timeouts=timeouts)
        case SignalReceived(name=name):
            for seq, waiting in s.waits.items():
                if waiting == name:
                    return replace(_end_wait(s, seq), wake=True)
            return replace(s, signals=(*s.signals, name))
        case SignalTimedOut(seq=seq):
            return replace(_end_wait(s, seq), wake=True)
        case MarkerRecorded():
            return replace(s, markers=s.markers + 1)
        case ChildStarted(seq=seq):
            child = ChildState(seq, event.child_id, event.workflow, event.detached)
            return replace(s, children={**s.children, seq: child})
        case ChildCompleted(seq=seq) | ChildFailed(seq=seq):
            status_ = "completed" if isinstance(event, ChildCompleted) else event.status
            if seq not in s.children:
                return s
            child = replace(s.children[seq], status=status_)
            return replace(s, children={**s.children, seq: child})
        case ChildCancelRequested():
            return s
    return _apply_ending(s, event)


def _apply_ending(s: SagaState, event: WorkflowEvent) -> SagaState:
    """Cancels, compensations, terminal events, parking."""
    replace = msgspec.structs.replace
    match event:
        case CancelRequested(reason=reason):
            if s.status != "running" or s.cancel_requested is not None:
                return s  # ended, parked or already unwinding: nothing left to cancel
            return replace(s, cancel_requested=reason, wake=True)
        case CompensationStarted(seq=seq):
            step = StepState(seq, event.step, kind="compensation", for_seq=event.for_seq)
            stack = tuple(x for x in s.compensations if x != event.for_seq)
            return replace(
                s, status="compensating", steps={**s.steps, seq: step}, compensations=stack,
                timers={}, waits={}, wait_timeouts={},
            )  # fmt: skip
        case CompensationCompleted(seq=seq):
            return _step(s, seq, status="completed", result=event.result, attempts=event.attempt)
        case CompensationFailed(seq=seq):
            state = _step(
                s, seq, status="failed", error_type=event.error_type,
                message=event.message, attempts=event.attempt,
            )  # fmt: skip
            return replace(state, status="compensation_failed")
        case CompensationRetried(seq=seq):
            return replace(_step(s, seq, status="scheduled", attempts=0), status="compensating")
        case CompensationSkipped(seq=seq):
            # Nothing is scheduled by the skip itself: the next compensation is a decision to make.
            return replace(_step(s, seq, status="cancelled"), status="compensating", wake=True)
        case WorkflowCompleted(result=result):
            return _end(replace(s, result=result), "completed")
        case WorkflowContinuedAsNew(next_id=next_id):
            return _end(replace(s, result=b"\xc0", continued_as=next_id), "completed")
        case WorkflowFailed() | WorkflowCompensated():
            kind: Status = "failed" if isinstance(event, WorkflowFailed) else "compensated"
            return _end(replace(s, error_type=event.error_type, message=event.message), kind)
        case WorkflowCancelled(reason=reason):
            return _end(replace(s, message=reason, error_type="cancelled"), "cancelled")
        case WorkflowParked(reason=reason, kind=kind_):
            before = s.status if s.status != "parked" else s.status_before_park
            return replace(
                s, status="parked", parked_reason=reason, parked_kind=kind_, status_before_park=before
            )
        case WorkflowUnparked():
            back: Status = s.status_before_park  # type: ignore[assignment]
            return replace(s, status=back, parked_reason="", parked_kind="")
        case ParentNotified():
            return replace(s, parent_notified=True)
    return s


def _end_wait(s: SagaState, seq: int) -> SagaState:
    return msgspec.structs.replace(
        s,
        waits=_without(s.waits, seq),  # type: ignore[arg-type]
        wait_timeouts=_without(s.wait_timeouts, seq),  # type: ignore[arg-type]
    )


def _end(s: SagaState, status: Status) -> SagaState:
    # Pending work of an ended instance is moot; clearing it keeps ready_at simple.
    return msgspec.structs.replace(s, status=status, timers={}, waits={}, wait_timeouts={})


def ready_at(state: SagaState, now: datetime, unfinished: Iterable[int] | None = None) -> datetime | None:
    """When the instance next needs a worker, from its state alone (None: not by itself).

    Ready ``now`` when a step or compensation can run or a cancel is pending;
    at the earliest retry, timer or signal timeout otherwise; None when it
    ended (and any parent was told), is parked, waits for an operator, or
    waits only for signals or child workflows. ``unfinished``: the steps not
    completed, failed for good or cancelled (at least), when the caller knows
    them (the executor does): only those are looked at, so a long history of
    done steps costs nothing here.
    """
    if state.status in TERMINAL:
        needs_parent = state.parent_id is not None and not state.detached and not state.parent_notified
        return now if needs_parent else None
    if state.status in ("absent", "parked", "compensation_failed"):
        return None
    if state.wake:
        return now
    times: list[datetime] = []
    steps = state.steps
    candidates = steps.values() if unfinished is None else [steps[s] for s in unfinished if s in steps]
    for step in candidates:
        if step.status in ("scheduled", "running"):
            return now
        if step.status == "retrying" and step.retry_at is not None:
            times.append(step.retry_at)
    times.extend(state.timers.values())
    times.extend(state.wait_timeouts.values())
    return min(times, default=None)


class SagaFold:
    """The :class:`~sagalog.replay.folding.Fold` of workflow streams into :class:`SagaState`."""

    schema = STATE_SCHEMA

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(SagaState)

    def initial(self, stream_id: str) -> SagaState:
        """The state of a stream with no events."""
        return SagaState(instance_id_of(stream_id))

    def apply(self, state: SagaState, event: Event) -> SagaState:
        """The state after a stored event (decoded here; a corrupt one raises DecodingError)."""
        return apply_event(state, decode_event(event), event.version)

    def encode(self, state: SagaState) -> bytes:
        """Snapshot bytes."""
        return self._encoder.encode(state)

    def decode(self, data: bytes) -> SagaState:
        """A state back from snapshot bytes."""
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"saga snapshot cannot be decoded: {exc}") from exc
