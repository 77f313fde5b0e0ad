"""State from events: a fold over a stream, bounded by snapshots.

A :class:`Fold` says how one kind of state (a saga, a session) grows from
events. :func:`load_state` rebuilds it as *latest snapshot + tail*; the
invariant every fold must keep is ``fold(all events) == fold(snapshot, tail)``
for every split point, which the property tests check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from sagalog.storage import Event, Journal, Snapshot

from sagalog.errors import DecodingError, NotFoundError

S = TypeVar("S")


class Fold(Protocol, Generic[S]):
    """How a state is built from a stream's events and stored in snapshots."""

    schema: int
    """Snapshot schema version; bump it when the state's shape changes."""

    def initial(self, stream_id: str) -> S:
        """The state before any event."""
        ...

    def apply(self, state: S, event: Event) -> S:
        """The state after ``event`` (pure: never mutates ``state``)."""
        ...

    def encode(self, state: S) -> bytes:
        """Snapshot bytes of ``state``."""
        ...

    def decode(self, data: bytes) -> S:
        """A state back from snapshot bytes."""
        ...


def fold_events(fold: Fold[S], state: S, events: Iterable[Event]) -> S:
    """Apply ``events`` in order to ``state``."""
    for event in events:
        state = fold.apply(state, event)
    return state


async def load_state(
    journal: Journal,
    stream_id: str,
    fold: Fold[S],
    *,
    at_version: int | None = None,
    use_snapshots: bool = True,
) -> tuple[S, int]:
    """Rebuild a stream's state from its latest snapshot and the events after it.

    Args:
        at_version: fold only up to this version (time travel); None for all.
        use_snapshots: False to fold from the first event.

    Returns:
        The state and the version it reflects (0 for an empty stream).

    Raises:
        NotFoundError: ``at_version`` is past the end of the stream.
    """
    state, version = fold.initial(stream_id), 0
    if use_snapshots:
        snapshot = await journal.latest_snapshot(stream_id, at_version, fold.schema)
        if snapshot is not None:
            # Snapshots are derived data: an unreadable one is just skipped.
            with contextlib.suppress(DecodingError):
                state, version = fold.decode(snapshot.state), snapshot.version
    async for event in journal.iter_stream(stream_id, version + 1):
        if at_version is not None and event.version > at_version:
            break
        state, version = fold.apply(state, event), event.version
    if at_version is not None and version < at_version:
        raise NotFoundError(
            f"stream {stream_id!r} has {version} events; there is no version {at_version}"
        )
    return state, version


async def snapshot_if_due(
    journal: Journal, stream_id: str, fold: Fold[S], state: S, version: int, every: int
) -> bool:
    """Save a snapshot when ``version`` crossed a multiple of ``every``; True if saved."""
    if every <= 0 or version == 0 or version % every:
        return False
    await journal.save_snapshot(Snapshot(stream_id, version, fold.encode(state), fold.schema))
    return True
