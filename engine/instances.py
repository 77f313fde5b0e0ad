"""Creating workflow instances: a first start, a child, the next run of a continue-as-new.

Each writes ``WorkflowStarted`` as the first event of a new stream, and each
must be idempotent (a crash may come between creating an instance and
recording that it was created), so each decides from the existing first
event whether a taken id is its own instance or another's.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sagalog.replay.events import (
    CHILD_ID_IN_USE,
    ChildFailed,
    ChildStarted,
    WorkflowContinuedAsNew,
    WorkflowEvent,
    WorkflowStarted,
    decode_event,
    encode_event,
    stream_id,
)
from sagalog.replay.executor import next_run_id
from sagalog.replay.saga import SagaState
from sagalog.storage import NO_STREAM, Journal, Schedule

from sagalog.errors import ConcurrencyError, WorkflowError

IN_USE_TYPE = "sagalog.errors.ChildWorkflowAlreadyStartedError"
"""The error type a parent's code sees when a child's id belongs to another instance."""


async def record_start(
    journal: Journal, instance_id: str, started: WorkflowStarted, meta: dict[str, str], now: datetime
) -> WorkflowEvent | None:
    """Append ``started`` as a new instance's first event, ready at ``now``.

    Returns None when it was written, else the first event of the instance
    that already holds the id.
    """
    stream = stream_id(instance_id)
    try:
        await journal.append(
            stream, NO_STREAM, [encode_event(started, meta)], schedule=Schedule(now), hand_off=True
        )
    except ConcurrencyError:
        return decode_event((await journal.read_stream(stream, 1, 1))[0])
    return None


async def start_instance(
    journal: Journal, instance_id: str, started: WorkflowStarted, meta: dict[str, str], now: datetime
) -> WorkflowStarted | None:
    """Create an instance; idempotent for the same workflow.

    Returns the existing ``WorkflowStarted`` when the id was taken already (by
    this same start after a crash, or by another instance of the same workflow).

    Raises:
        WorkflowError: the id belongs to an instance of another workflow.
    """
    existing = await record_start(journal, instance_id, started, meta, now)
    if isinstance(existing, WorkflowStarted) and existing.workflow != started.workflow:
        raise WorkflowError(
            f"instance {instance_id!r} already exists and runs workflow "
            f"{existing.workflow!r}, not {started.workflow!r}"
        )
    return existing if isinstance(existing, WorkflowStarted) else None


async def start_next_run(
    journal: Journal, first_id: str, started: WorkflowStarted, meta: dict[str, str], now: datetime
) -> str:
    """Create a continue-as-new run under the first id from ``first_id`` on that is free or ours.

    The id is only a proposal of the executor (replay compares decisions
    without it), so a ``c.run2`` some client started by hand moves the next
    run to ``c.run3`` rather than failing the instance. A run created before a
    crash is recognised by its ``continued_from``.
    """
    candidate = first_id
    while True:
        existing = await record_start(journal, candidate, started, meta, now)
        if existing is None or (
            isinstance(existing, WorkflowStarted) and existing.continued_from == started.continued_from
        ):
            return candidate
        candidate = next_run_id(candidate)


async def start_child(
    journal: Journal, child_id: str, started: WorkflowStarted, meta: dict[str, str], now: datetime
) -> str | None:
    """Create a child instance; why it cannot be when its id belongs to another instance.

    An instance with this id created by this same decision (a retry after a
    crash between creating the child and recording ``ChildStarted``) is the child.
    """
    first = await record_start(journal, child_id, started, meta, now)
    if first is None:
        return None
    if isinstance(first, WorkflowStarted):
        mine = (first.workflow, first.parent_id, first.parent_seq)
        if mine == (started.workflow, started.parent_id, started.parent_seq):
            return None
        owner = f"a child of {first.parent_id!r}" if first.parent_id else "not a child workflow"
        what = f"workflow {first.workflow!r}, {owner}"
    else:
        what = f"a stream starting with {type(first).__name__}"
    return (
        f"child workflow {started.workflow!r} was not started: id {child_id!r} already "
        f"belongs to another instance ({what}); give the child another id, or none "
        "to get '<parent id>-<n>'"
    )


async def create_decided(
    journal: Journal,
    parent: SagaState,
    decisions: list[WorkflowEvent],
    meta: dict[str, str],
    now: datetime,
) -> list[ChildFailed]:
    """Create the children and next runs ``decisions`` start, before ``parent`` records them.

    Idempotent and crash-safe (see :func:`start_child`). Returns a
    ``ChildFailed`` for each child whose id belongs to another instance. A
    next run whose proposed id is taken gets the next free one, written into
    its ``WorkflowContinuedAsNew`` in ``decisions``.
    """
    refused: list[ChildFailed] = []
    for i, event in enumerate(decisions):
        match event:
            case ChildStarted():
                started = WorkflowStarted(
                    event.workflow, event.args, parent_id=parent.instance_id, parent_seq=event.seq,
                    detached=event.detached, session_id=parent.session_id,
                )  # fmt: skip
                taken = await start_child(journal, event.child_id, started, meta, now)
                if taken is not None:
                    failed = ChildFailed(event.seq, event.child_id, CHILD_ID_IN_USE, IN_USE_TYPE, taken)
                    refused.append(failed)
            case WorkflowContinuedAsNew(next_id=next_id, args=args):
                next_run = WorkflowStarted(
                    parent.workflow, args, session_id=parent.session_id, continued_from=parent.instance_id
                )
                free_id = await start_next_run(journal, next_id, next_run, meta, now)
                if free_id != next_id:
                    decisions[i] = msgspec.structs.replace(event, next_id=free_id)
            case _:
                pass
    return refused
