"""Workflow events: everything a ``wf-<instance id>`` stream holds.

Each event is a frozen, tagged msgspec Struct. Values the user supplied
(arguments, results, signal payloads) are kept as msgpack bytes, encoded
with :func:`sagalog.storage.encode_value`, so the events never depend on user
types. Each stored event carries the schema version it was written with in
its metadata (``schema``); :func:`decode_event` upcasts older versions
through :data:`UPCASTERS`. The rules for changing an event: new fields come
with defaults, existing field types never change, anything else is a new
schema version with an upcaster. ``docs/events.md`` describes every event.

Events come in two kinds, which matters to the executor:

* *decisions* (:data:`DECISION_TYPES`) are what the workflow code did:
  scheduling a step, starting a timer, ending. On replay the code must make
  the same decisions in the same order, or it is non-deterministic.
* *inputs* are what happened to it: a step completed or failed, a timer
  fired, a signal arrived, a cancel was requested.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec
from sagalog.replay.event_codec import EventCodec, Upcaster
from sagalog.storage import Event, NewEvent

STREAM_PREFIX = "wf-"
"""Every workflow stream's id starts with this."""

SCHEMA_VERSION = 1
"""Schema version written into each new event's metadata (``schema``)."""


def stream_id(instance_id: str) -> str:
    """The stream that holds an instance's events."""
    return STREAM_PREFIX + instance_id


def instance_id_of(stream: str) -> str:
    """The instance id of a ``wf-`` stream id."""
    return stream.removeprefix(STREAM_PREFIX)


class _Base(msgspec.Struct, frozen=True, tag=True):
    pass


# --- lifecycle -------------------------------------------------------------


class WorkflowStarted(_Base, frozen=True):
    """An instance was started."""

    workflow: str
    """The registered workflow name."""
    args: bytes
    """The arguments, a msgpack-encoded list."""
    parent_id: str | None = None
    """The parent instance when this is a child workflow."""
    parent_seq: int | None = None
    """The command index of the child call in the parent."""
    detached: bool = False
    """A detached child: its parent neither waits for it nor cancels it."""
    session_id: str | None = None
    """The session the instance is bound to, if any."""
    continued_from: str | None = None
    """The previous run when this run was started by continue-as-new."""


class WorkflowCompleted(_Base, frozen=True):
    """The workflow returned; terminal (``completed``)."""

    result: bytes
    """The returned value, msgpack-encoded."""


class WorkflowFailed(_Base, frozen=True):
    """The workflow raised and had no compensation to run; terminal (``failed``)."""

    error_type: str
    """Qualified type name of the error."""
    message: str
    """Its message."""
    traceback: str = ""
    """The formatted traceback, for operators."""


class WorkflowCompensated(_Base, frozen=True):
    """Every compensation ran after a failure; terminal (``compensated``)."""

    error_type: str
    """Qualified type name of the error that started the compensation."""
    message: str
    """Its message."""


class WorkflowCancelled(_Base, frozen=True):
    """A cancel was carried out (compensations included); terminal (``cancelled``)."""

    reason: str
    """Why, as given to ``cancel``."""


class WorkflowContinuedAsNew(_Base, frozen=True):
    """The run ended by starting a fresh one; terminal (``completed``, result None)."""

    next_id: str
    """The instance id of the next run."""
    args: bytes
    """Its arguments, a msgpack-encoded list."""


class CancelRequested(_Base, frozen=True):
    """Someone asked for the instance to be cancelled."""

    reason: str = ""
    """Why."""


class WorkflowParked(_Base, frozen=True):
    """The instance cannot run and waits for an operator (not terminal)."""

    reason: str
    """What is wrong, in words."""
    kind: Literal["unknown_workflow", "non_determinism", "undecodable"] = "non_determinism"
    """Which kind of problem."""


class WorkflowUnparked(_Base, frozen=True):
    """An operator let a parked instance run again (after deploying a fix)."""

    actor: str = ""
    """Who did it."""


class ParentNotified(_Base, frozen=True):
    """A child's outcome was delivered to its parent (so the child needs no more work)."""

    parent_id: str
    """The parent instance."""


# --- steps -----------------------------------------------------------------


class StepScheduled(_Base, frozen=True):
    """Decision: the workflow called a step."""

    seq: int
    """The command index: the step's position among the workflow's commands."""
    step: str
    """The step's registered name."""
    args: bytes
    """Its arguments, a msgpack-encoded ``[args, kwargs]`` pair."""
    compensation: str | None = None
    """The step registered to undo it, if any."""


class StepStarted(_Base, frozen=True):
    """An attempt of a step (or compensation) began."""

    seq: int
    """Which command."""
    attempt: int
    """1, 2, 3, ...; a crash-interrupted attempt is followed by the next number."""


class StepCompleted(_Base, frozen=True):
    """A step returned; its result is recorded exactly once."""

    seq: int
    """Which command."""
    attempt: int
    """The attempt that succeeded."""
    result: bytes
    """The returned value, msgpack-encoded."""


class StepFailed(_Base, frozen=True):
    """An attempt of a step or compensation failed."""

    seq: int
    """Which command."""
    attempt: int
    """The attempt that failed."""
    error_type: str
    """Qualified type name of the error."""
    message: str
    """Its message."""
    retry_at: datetime | None = None
    """When the next attempt is due; None when the step failed for good."""
    error_types: tuple[str, ...] = ()
    """The qualified names of the error's class and its bases (for retry rules)."""


class StepCancelled(_Base, frozen=True):
    """Decision: a step was abandoned (a ``gather`` failed fast, or the workflow ended)."""

    seq: int
    """Which command."""


# --- timers, signals, side effects ----------------------------------------


class TimerStarted(_Base, frozen=True):
    """Decision: a durable timer was started."""

    seq: int
    """Which command."""
    fire_at: datetime
    """When it fires."""


class TimerFired(_Base, frozen=True):
    """A timer's time came."""

    seq: int
    """Which command."""


class SignalWaitStarted(_Base, frozen=True):
    """Decision: the workflow waits for a signal."""

    seq: int
    """Which command."""
    name: str
    """The signal's name."""
    timeout_at: datetime | None = None
    """When the wait times out; None for never."""


class SignalReceived(_Base, frozen=True):
    """A signal arrived (buffered until a wait takes it)."""

    name: str
    """The signal's name."""
    payload: bytes
    """Its payload, msgpack-encoded."""


class SignalTimedOut(_Base, frozen=True):
    """A signal wait reached its timeout before a signal came."""

    seq: int
    """Which command."""


class MarkerRecorded(_Base, frozen=True):
    """Decision: a recorded side effect (``now``, ``uuid``, ``random``) or a patch marker."""

    seq: int
    """Which command (-1 for patch markers, which take no command index)."""
    kind: Literal["now", "uuid", "random", "patch"]
    """What was recorded."""
    value: bytes = b""
    """The value, msgpack-encoded (empty for patches)."""
    patch_id: str = ""
    """The change id of a patch marker."""


# --- child workflows ---------------------------------------------------------


class ChildStarted(_Base, frozen=True):
    """Decision: a child workflow was started."""

    seq: int
    """Which command."""
    workflow: str
    """The child's workflow name."""
    child_id: str
    """The child's instance id."""
    args: bytes
    """Its arguments, a msgpack-encoded list."""
    detached: bool = False
    """Whether the parent neither waits for it nor cancels it."""


class ChildCompleted(_Base, frozen=True):
    """A child workflow completed."""

    seq: int
    """Which command."""
    child_id: str
    """The child's instance id."""
    result: bytes
    """Its result, msgpack-encoded."""


class ChildFailed(_Base, frozen=True):
    """A child workflow ended other than completed (failed, compensated, cancelled, ...)."""

    seq: int
    """Which command."""
    child_id: str
    """The child's instance id."""
    status: str
    """Its terminal status."""
    error_type: str
    """Qualified type name of its error."""
    message: str
    """Its message."""


CHILD_ID_IN_USE = "already_started"
"""``ChildFailed.status`` when the child was never started: its id belongs to
another instance (thrown in as ``ChildWorkflowAlreadyStartedError``)."""


class ChildCancelRequested(_Base, frozen=True):
    """Decision: the parent, being cancelled, cancels a running child."""

    seq: int
    """Which command."""
    child_id: str
    """The child's instance id."""


# --- compensation --------------------------------------------------------------


class CompensationStarted(_Base, frozen=True):
    """Decision: a compensation was scheduled (in reverse order of registration)."""

    seq: int
    """The compensation's own command index (after the workflow's)."""
    for_seq: int
    """The step it undoes."""
    step: str
    """The compensation step's name."""
    args: bytes
    """Its argument: the undone step's result, as a msgpack-encoded ``[args, kwargs]`` pair."""


class CompensationCompleted(_Base, frozen=True):
    """A compensation step returned."""

    seq: int
    """Which compensation."""
    attempt: int
    """The attempt that succeeded."""
    result: bytes = b"\xc0"
    """Its result, msgpack-encoded."""


class CompensationFailed(_Base, frozen=True):
    """A compensation exhausted its retries: the instance waits for an operator."""

    seq: int
    """Which compensation."""
    attempt: int
    """The last attempt."""
    error_type: str
    """Qualified type name of the error."""
    message: str
    """Its message."""


class CompensationRetried(_Base, frozen=True):
    """An operator asked for a failed compensation to run again (attempts start over)."""

    seq: int
    """Which compensation."""
    actor: str = ""
    """Who asked."""


class CompensationSkipped(_Base, frozen=True):
    """An operator gave up on a failed compensation; the next one runs."""

    seq: int
    """Which compensation."""
    actor: str = ""
    """Who decided."""


WorkflowEvent = (
    WorkflowStarted
    | WorkflowCompleted
    | WorkflowFailed
    | WorkflowCompensated
    | WorkflowCancelled
    | WorkflowContinuedAsNew
    | CancelRequested
    | WorkflowParked
    | WorkflowUnparked
    | ParentNotified
    | StepScheduled
    | StepStarted
    | StepCompleted
    | StepFailed
    | StepCancelled
    | TimerStarted
    | TimerFired
    | SignalWaitStarted
    | SignalReceived
    | SignalTimedOut
    | MarkerRecorded
    | ChildStarted
    | ChildCompleted
    | ChildFailed
    | ChildCancelRequested
    | CompensationStarted
    | CompensationCompleted
    | CompensationFailed
    | CompensationRetried
    | CompensationSkipped
)
"""Every event a workflow stream holds."""

EVENT_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in WorkflowEvent.__args__}
"""Event classes by their type name (as stored in ``Event.type``)."""

DECISION_TYPES: tuple[type[Any], ...] = (
    StepScheduled,
    StepCancelled,
    TimerStarted,
    SignalWaitStarted,
    MarkerRecorded,
    ChildStarted,
    ChildCancelRequested,
    CompensationStarted,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCompensated,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
)
"""Events the workflow code decides; replay must reproduce them in order."""

TERMINAL_TYPES: tuple[type[Any], ...] = (
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowCompensated,
    WorkflowCancelled,
    WorkflowContinuedAsNew,
)
"""Events that end an instance."""

UPCASTERS: dict[int, Upcaster] = {}
"""``{n: f}``: ``f(type, fields)`` migrates a schema-``n`` payload to schema ``n + 1``."""

_codec: EventCodec[WorkflowEvent] = EventCodec(
    WorkflowEvent, "workflow", SCHEMA_VERSION, EVENT_TYPES, UPCASTERS
)


def encode_event(event: WorkflowEvent, metadata: dict[str, str] | None = None) -> NewEvent:
    """A workflow event as a record to append (type name, payload, schema in metadata)."""
    return _codec.encode(event, metadata)


def decode_event(stored: Event | NewEvent) -> WorkflowEvent:
    """The workflow event a stored record holds (or a notice told: ``Touch.last``).

    Raises:
        DecodingError: not a workflow event, a corrupt payload, or a schema
            newer than this code knows.
    """
    return _codec.decode(stored)


def describe(event: WorkflowEvent) -> str:
    """A short human description of an event, for error messages (``StepScheduled(reserve)``)."""
    match event:
        case StepScheduled(step=step) | CompensationStarted(step=step):
            return f"{type(event).__name__}({step!r})"
        case ChildStarted(workflow=workflow):
            return f"ChildStarted({workflow!r})"
        case SignalWaitStarted(name=name):
            return f"SignalWaitStarted({name!r})"
        case MarkerRecorded(kind="patch", patch_id=patch_id):
            return f"MarkerRecorded(patch {patch_id!r})"
        case MarkerRecorded(kind=kind):
            return f"MarkerRecorded({kind})"
        case _:
            return type(event).__name__
