"""The interface every storage backend implements: raw records in, raw records out.

A backend (memory, SQLite, PostgreSQL) is a :class:`Recorder`. It does no
validation, no encoding and no retrying: :class:`sagalog.storage.Journal`
does those once for all backends. A recorder translates its driver's errors
into :mod:`sagalog.errors` (``OperationalError`` for the transient ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

import msgspec
from sagalog.storage.records import (
    Claim,
    Event,
    NewEvent,
    Schedule,
    Snapshot,
    StreamFilter,
    StreamInfo,
    WorkItem,
)

from sagalog.errors import ConcurrencyError


class AppendRequest(msgspec.Struct, frozen=True):
    """One stream's append inside a group commit: its own check, its own outcome."""

    namespace: str
    stream_id: str
    expected_version: int
    """A version, ``ANY_VERSION`` (-1) or ``NO_STREAM`` (0)."""
    events: tuple[NewEvent, ...]
    """Payloads already passed through the journal's codec."""
    recorded_at: datetime
    schedule: Schedule | None = None
    """When set, the stream's work-index row changes in the same transaction."""
    quiet: bool = False
    """The append makes no work for anyone but its writer (who holds the stream's lease):
    workers looking for work are not woken by it (see ``Journal.append``)."""
    final: bool = False
    """The append may end what others await (a workflow's end): watchers of final
    appends are told (see ``Journal.append``)."""
    hand_off: bool = False
    """A start: when its commit holds it alone, a backend with tickets hands the
    stream to an idle worker's ticket (see ``Journal.append``)."""


def stored_events(
    request: AppendRequest, positions: Iterable[int], first_version: int, recorded_at: datetime | None = None
) -> list[Event]:
    """``request``'s events as stored: at ``positions``, versions from ``first_version`` on.

    ``recorded_at``: the time as the backend stores it, when it keeps less
    than a datetime holds (default: the request's own).
    """
    at = request.recorded_at if recorded_at is None else recorded_at
    stream, namespace = request.stream_id, request.namespace
    # Events first: zip stops at the last event without taking one position
    # too many from an iterator (a batch's positions are one iterator).
    pairs = zip(request.events, positions)  # noqa: B905 (positions may run on)
    return [
        Event(position, stream, version, new.type, new.payload, dict(new.metadata), namespace, at)
        for version, (new, position) in enumerate(pairs, start=first_version)
    ]


AppendOutcome = list[Event] | ConcurrencyError
"""What one request of a batch ends as: its stored events, or the conflict it met."""


class Recorder(Protocol):
    """A storage backend."""

    description: str
    """Where it stores, for messages (a DSN never shows its password)."""

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Write every request whose expected version holds, in one transaction.

        Requests that conflict get a ConcurrencyError in their slot and write
        nothing; the others commit together. Positions are assigned in request
        order, and a reader of :meth:`read_all` never sees a later position
        commit before an earlier one.
        """
        ...

    async def read_stream(
        self, namespace: str, stream_id: str, from_version: int, limit: int | None
    ) -> list[Event]:
        """Events of one stream with version >= ``from_version``, in version order."""
        ...

    async def read_all(self, namespace: str, after_position: int, limit: int) -> list[Event]:
        """Events with position > ``after_position`` in global order."""
        ...

    async def stream_version(self, namespace: str, stream_id: str) -> int:
        """The stream's current version, 0 when it has no events."""
        ...

    async def list_streams(self, namespace: str, query: StreamFilter) -> list[StreamInfo]:
        """Streams matching ``query``, most recently active first."""
        ...

    async def wait_for_new(self, namespace: str, after_position: int, timeout: float) -> bool:
        """Wait until an event past ``after_position`` exists; False on timeout."""
        ...

    async def save_snapshot(self, namespace: str, snapshot: Snapshot) -> None:
        """Store (or replace) the snapshot of a stream at a version."""
        ...

    async def latest_snapshot(
        self, namespace: str, stream_id: str, max_version: int | None, schema: int
    ) -> Snapshot | None:
        """The newest snapshot of ``schema`` at or below ``max_version``."""
        ...

    async def create_namespace(self, name: str) -> None:
        """Create a namespace (no-op when it exists)."""
        ...

    async def list_namespaces(self) -> list[str]:
        """Every namespace, sorted."""
        ...

    async def save_checkpoint(self, namespace: str, name: str, position: int) -> None:
        """Remember how far subscriber ``name`` has processed the global order."""
        ...

    async def load_checkpoint(self, namespace: str, name: str) -> int:
        """The position saved for subscriber ``name`` (0 when none)."""
        ...

    async def claim(
        self, namespace: str, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claim]:
        """Lease up to ``limit`` streams whose ``ready_at`` <= ``now`` and whose lease
        is free or expired (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), oldest ready first."""
        ...

    async def renew(
        self, namespace: str, owner: str, stream_ids: Sequence[str], lease_until: datetime
    ) -> list[str]:
        """Extend ``owner``'s leases; returns the ids it still held (and now renewed)."""
        ...

    async def release(self, namespace: str, owner: str, stream_ids: Sequence[str]) -> None:
        """Give up ``owner``'s leases so any worker may claim those streams at once."""
        ...

    async def next_ready_at(self, namespace: str, after: datetime | None = None) -> datetime | None:
        """The earliest ``ready_at`` in the work index (leased or not; later than ``after``
        when given), or None."""
        ...

    async def clear_work_index(self, namespace: str) -> None:
        """Delete the namespace's work index (before a rebuild from events)."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...

    async def check(self) -> None:
        """Run a real query: raise OperationalError when the store cannot be
        reached, ProgrammingError when its schema is not this code's (readiness)."""
        ...

    # -- rebuilding derived data (sagalog admin rebuild) ----------------------

    async def clear_snapshots(self, namespace: str) -> None:
        """Delete every snapshot of the namespace (derived data)."""
        ...

    async def put_work(self, namespace: str, stream_id: str, ready_at: datetime | None) -> None:
        """Set a stream's work-index time without appending (None removes its row).

        Like an append's ``Schedule``, an existing row keeps its lease.
        """
        ...

    async def work_index(self, namespace: str) -> list[WorkItem]:
        """Every work-index row of the namespace, by stream id."""
        ...
