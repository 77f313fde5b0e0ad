"""Inputs that need no workflow code: signals, cancels and operators' decisions.

Any process may append them (a client need not have the workflow's code): each
goes in at the instance's current version, with the work-index entry folded
from the state it leads to, and the worker that claims the instance runs the rest.
Appends that may lose a race harmlessly go in under :class:`ignore_conflict`.
"""

from __future__ import annotations

from sagalog.engine.results import describe
from sagalog.replay.events import (
    CompensationRetried,
    CompensationSkipped,
    WorkflowEvent,
    encode_event,
    stream_id,
)
from sagalog.replay.saga import SagaFold, SagaState, apply_event, ready_at
from sagalog.storage import Journal, Schedule

from sagalog.clock import Clock
from sagalog.errors import ConcurrencyError, WorkflowError

COMMIT_TRIES = 8
"""Appends tried at a fresh version before a race that keeps being lost is reported."""


class ignore_conflict:
    """Swallow a ConcurrencyError: another writer did the same job first."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, ConcurrencyError)


async def append_input(
    journal: Journal,
    fold: SagaFold,
    clock: Clock,
    instance_id: str,
    event: WorkflowEvent,
    *,
    refuse_ended: bool,
    meta: dict[str, str],
) -> SagaState | None:
    """Append ``event`` to a running instance, retrying lost races; the state it leads to.

    Returns None when the instance has ended and ``refuse_ended`` is false
    (nothing is appended).

    Raises:
        NotFoundError: there is no such instance.
        WorkflowError: it has ended and ``refuse_ended`` is true.
    """
    for _ in range(COMMIT_TRIES):
        state = await describe(journal, fold, instance_id)
        if state.terminal:
            if refuse_ended:
                raise WorkflowError(
                    f"workflow {instance_id!r} has ended ({state.status}); "
                    f"{type(event).__name__} was not delivered"
                )
            return None
        after = apply_event(state, event, state.version + 1)
        try:
            await journal.append(
                stream_id(instance_id),
                state.version,
                [encode_event(event, meta)],
                schedule=Schedule(ready_at(after, clock.now())),
            )
        except ConcurrencyError:
            continue
        return after
    raise ConcurrencyError(stream_id(instance_id), -1, -1)


def operator_decision(state: SagaState, actor: str, *, retry: bool) -> WorkflowEvent:
    """Retry or skip the failed compensation of a ``compensation_failed`` instance.

    Raises:
        WorkflowError: the instance is not waiting for an operator.
    """
    failed = [s for s in state.steps.values() if s.kind == "compensation" and s.status == "failed"]
    if state.status != "compensation_failed" or not failed:
        raise WorkflowError(
            f"workflow {state.instance_id!r} is {state.status}, not compensation_failed: "
            "there is no failed compensation to retry or skip"
        )
    seq = failed[-1].seq
    return CompensationRetried(seq, actor) if retry else CompensationSkipped(seq, actor)
