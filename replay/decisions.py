"""What the executor keeps per command, and helpers shared with the engine.

Kept apart from :mod:`sagalog.replay.executor` so that module holds only the
generator-driving logic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import msgspec
from sagalog.replay.events import (
    ChildCancelRequested,
    ChildStarted,
    CompensationStarted,
    MarkerRecorded,
    SignalWaitStarted,
    StepCancelled,
    StepScheduled,
    TimerStarted,
    WorkflowEvent,
    decode_event,
)
from sagalog.storage import Event

from sagalog.errors import DecodingError

_RUN_SUFFIX = re.compile(r"^(.*)\.run(\d+)$")


def default_decode(kind: str, name: str, data: bytes) -> Any:
    """Decode a recorded value without type information (plain msgpack)."""
    try:
        return msgspec.msgpack.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodingError(f"recorded {kind} result of {name!r} cannot be decoded: {exc}") from exc


def default_decode_args(data: bytes) -> tuple[Any, ...]:
    """Decode recorded workflow arguments without type information."""
    try:
        return tuple(msgspec.msgpack.decode(data, type=list))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise DecodingError(f"recorded workflow arguments cannot be decoded: {exc}") from exc


def type_name(exc: BaseException) -> str:
    """The qualified name of an exception's type (``builtins.`` left out)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def next_run_id(instance_id: str) -> str:
    """The instance id of the run after ``instance_id`` (continue-as-new)."""
    match = _RUN_SUFFIX.match(instance_id)
    if match:
        return f"{match.group(1)}.run{int(match.group(2)) + 1}"
    return f"{instance_id}.run2"


class StepTask(msgspec.Struct):
    """What the runner needs to run one step or compensation (mutable, executor-internal)."""

    seq: int
    """Command index."""
    name: str
    """The step's name."""
    args: bytes
    """Encoded ``[args, kwargs]``."""
    kind: Literal["step", "compensation"] = "step"
    """A workflow step or a compensation."""
    compensation: str | None = None
    """The step that undoes it."""
    attempt: int = 0
    """The last attempt started (0: none yet)."""
    attempt_base: int = 0
    """Attempts made before an operator's retry (compensations); policies count from here."""
    running: bool = False
    """An attempt started without a recorded outcome."""
    retry_at: datetime | None = None
    """When the next attempt is due after a failure."""
    done: bool = False
    """Completed, failed for good, or cancelled."""
    result: bytes | None = None
    """The recorded result once completed."""


class ChildTask(msgspec.Struct):
    """A child workflow the instance started."""

    seq: int
    child_id: str
    workflow: str
    args: bytes
    detached: bool
    done: bool = False


def same_decision(recorded: WorkflowEvent, yielded: WorkflowEvent) -> bool:
    """Whether a recorded decision is the one the code made now (values aside)."""
    if type(recorded) is not type(yielded):
        return False
    match recorded, yielded:
        case StepScheduled(), StepScheduled():
            return (recorded.seq, recorded.step) == (yielded.seq, yielded.step)
        case CompensationStarted(), CompensationStarted():
            return (recorded.seq, recorded.step, recorded.for_seq) == (
                yielded.seq,
                yielded.step,
                yielded.for_seq,
            )
        case ChildStarted(), ChildStarted():
            return (recorded.seq, recorded.workflow) == (yielded.seq, yielded.workflow)
        case SignalWaitStarted(), SignalWaitStarted():
            return (recorded.seq, recorded.name) == (yielded.seq, yielded.name)
        case MarkerRecorded(), MarkerRecorded():
            return (recorded.seq, recorded.kind, recorded.patch_id) == (
                yielded.seq,
                yielded.kind,
                yielded.patch_id,
            )
        case (
            (TimerStarted(), TimerStarted())
            | (StepCancelled(), StepCancelled())
            | (ChildCancelRequested(), ChildCancelRequested())
        ):
            return recorded.seq == yielded.seq  # type: ignore[union-attr]
        case _:
            return True


def to_pairs(events: Iterable[Event | tuple[int, WorkflowEvent]]) -> list[tuple[int, WorkflowEvent]]:
    """``(version, event)`` pairs from stored events (decoded) or pairs already decoded."""
    pairs: list[tuple[int, WorkflowEvent]] = []
    for item in events:
        if isinstance(item, Event):
            pairs.append((item.version, decode_event(item)))
        else:
            pairs.append(item)
    return pairs
