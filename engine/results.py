"""Reading an instance's state and awaiting its result (``Client.result``, ``Client.describe``).

A waiter folds the instance's history once, then watches the journal
(:meth:`~sagalog.storage.Journal.watch`) and reads the instance again only
when a commit may have ended it: on PostgreSQL the notifications say which
stream got which event types, so a waiter costs one read at the start and
one at the end, whatever else is appended meanwhile. When the notice of the
end carries the ending event itself (``Touch.last``: a small completion,
failure or cancellation), not even the read at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sagalog.replay.events import WorkflowEvent, decode_event, stream_id
from sagalog.replay.executor import default_decode
from sagalog.replay.folding import fold_events, load_state
from sagalog.replay.saga import ENDING_TYPES, SagaFold, SagaState, apply_event
from sagalog.storage import Journal, Touch, Watch

from sagalog.errors import (
    DecodingError,
    NotFoundError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowParkedError,
)

LOOK_EVERY = 1.0
"""Seconds between reads of an awaited instance at most, whatever the watch says (it is a hint)."""

TOLD_ENDINGS = frozenset({"WorkflowCompleted", "WorkflowFailed", "WorkflowCompensated", "WorkflowCancelled"})
"""Ending events whose own fields are the whole outcome: one a notice told needs no read."""


async def describe(journal: Journal, fold: SagaFold, instance_id: str) -> SagaState:
    """The instance's state, from its latest snapshot and the events after it.

    Raises:
        NotFoundError: there is no such instance.
    """
    state, version = await load_state(journal, stream_id(instance_id), fold)
    if version == 0:
        raise NotFoundError(f"no workflow instance {instance_id!r}")
    return state


async def await_result(
    journal: Journal,
    fold: SagaFold,
    instance_id: str,
    snapshot_every: int,
    known: tuple[Watch, SagaState] | None = None,
) -> Any:
    """Wait until the instance ends; its result, or the error it ended with (see ``Runner.result``).

    ``known``: a watch made before the instance's state was last seen, and that
    state (``Runner.execute``: the state its own start left), instead of a read.
    """
    current = instance_id
    if known is not None:
        watch, state = known
    else:
        # Made before the first read: nothing appended after that read is missed.
        watch = await journal.watch(final=True)
        state = await current_state(journal, fold, current, snapshot_every)
    while True:
        if state.continued_as is not None:
            current = state.continued_as
            state = await current_state(journal, fold, current, snapshot_every)
            continue
        match state.status:
            case "completed":
                return default_decode("workflow", state.workflow, state.result or b"\xc0")
            case "failed" | "compensated" | "compensation_failed":
                raise WorkflowFailedError(current, state.status, state.error_type, state.message)
            case "cancelled":
                raise WorkflowCancelledError(current, state.message)
            case "parked":
                raise WorkflowParkedError(current, state.parked_reason)
        stream = stream_id(current)
        touches = await watch.next(LOOK_EVERY)
        if not touches or any(may_end(t, stream) for t in touches):
            ending = told_ending(touches, stream)
            if ending is not None:  # the outcome is in the notice: the rest of the state is not needed
                state = apply_event(state, ending, state.version + 1)
                continue
            tail = await journal.read_stream(stream, state.version + 1)
            state = fold_events(fold, state, tail)


async def current_state(
    journal: Journal, fold: SagaFold, instance_id: str, snapshot_every: int
) -> SagaState:
    """The instance's state now.

    A history shorter than a snapshot period is read and folded in one
    query; a longer one starts from its snapshot (see :func:`describe`).
    """
    stream = stream_id(instance_id)
    limit = max(snapshot_every, 100)
    first = await journal.read_stream(stream, 1, limit)
    if not first:
        raise NotFoundError(f"no workflow instance {instance_id!r}")
    if len(first) < limit:
        return fold_events(fold, fold.initial(stream), first)
    return await describe(journal, fold, instance_id)


def told_ending(touches: Sequence[Touch], stream: str) -> WorkflowEvent | None:
    """The event that ended ``stream``, when a notice among ``touches`` told it whole."""
    for touch in touches:
        last = touch.last
        if touch.stream_id == stream and last is not None and last.type in TOLD_ENDINGS:
            with contextlib.suppress(DecodingError):  # then read it as any other end
                return decode_event(last)
    return None


def may_end(touch: Touch, stream: str) -> bool:
    """Whether a commit that ``touch`` tells of may have ended (or parked, ...) ``stream``."""
    if touch.stream_id is not None and touch.stream_id != stream:
        return False
    return touch.types is None or not ENDING_TYPES.isdisjoint(touch.types)
