"""The records the journal stores. Storage knows nothing of workflows: only these."""

from __future__ import annotations

from datetime import datetime

import msgspec

ANY_VERSION = -1
"""Pass as ``expected_version`` to append without an optimistic-concurrency check."""

NO_STREAM = 0
"""Pass as ``expected_version`` to require that the stream does not exist yet."""

DEFAULT_NAMESPACE = "default"
"""The namespace every journal has from the start."""


class NewEvent(msgspec.Struct, frozen=True):
    """An event to append: its type name, payload bytes and metadata."""

    type: str
    """Event type name, e.g. ``StepCompleted``."""
    payload: bytes
    """Encoded payload (see :func:`sagalog.storage.encode_value`)."""
    metadata: dict[str, str] = {}
    """Who or what caused it: worker id, actor, trace id, schema version."""


class Event(msgspec.Struct, frozen=True):
    """An event as stored: a record of the journal, never changed once written."""

    position: int
    """Global total order across the journal."""
    stream_id: str
    """The stream it belongs to, e.g. ``wf-<id>`` or ``session-<id>``."""
    version: int
    """1, 2, 3, ... within its stream."""
    type: str
    """Event type name."""
    payload: bytes
    """Payload bytes, already passed back through the journal's codec."""
    metadata: dict[str, str]
    """Who or what caused it."""
    namespace: str
    """Tenant the event belongs to."""
    recorded_at: datetime
    """When the journal stored it (UTC)."""


class Snapshot(msgspec.Struct, frozen=True):
    """A folded state of a stream at a version, so readers need only the tail."""

    stream_id: str
    """The stream the state was folded from."""
    version: int
    """The last event version folded into ``state``."""
    state: bytes
    """Encoded state."""
    schema: int = 1
    """Version of the state's encoding; a reader ignores snapshots of other schemas."""


class StreamInfo(msgspec.Struct, frozen=True):
    """One stream as listed: its id, version and activity times."""

    stream_id: str
    """The stream's id."""
    version: int
    """Its current version (number of events)."""
    namespace: str
    """Tenant it belongs to."""
    created_at: datetime
    """When its first event was recorded."""
    updated_at: datetime
    """When its last event was recorded."""
    last_type: str
    """Type name of its last event."""


class StreamFilter(msgspec.Struct, frozen=True):
    """Which streams :meth:`Journal.list_streams` returns, newest activity first."""

    prefix: str | None = None
    """Only streams whose id starts with this (``wf-``, ``session-``)."""
    contains: str | None = None
    """Only streams whose id contains this text."""
    since: datetime | None = None
    """Only streams active at or after this time."""
    until: datetime | None = None
    """Only streams active before this time."""
    limit: int = 100
    """Page size."""
    offset: int = 0
    """Number of streams to skip (paging)."""


class Schedule(msgspec.Struct, frozen=True):
    """A change to a stream's row in the work index, written with an append.

    The work index is derived data (rebuildable from events): which streams
    have work to do, from when, and who holds the lease on them.
    """

    ready_at: datetime | None
    """When the stream next needs a worker; ``None`` removes it from the index."""


class Claim(msgspec.Struct, frozen=True):
    """A stream a worker leased from the work index."""

    stream_id: str
    """The claimed stream."""
    ready_at: datetime
    """When it became ready."""
    lease_owner: str
    """The worker holding the lease."""
    lease_expires_at: datetime
    """When another worker may take it over unless renewed."""
    events: tuple[Event, ...] | None = None
    """The stream's first events, read with the claim when asked (``Journal.claim(read=n)``,
    at most ``n`` of them); None when not read."""
    taken_over: bool = False
    """Another lease on it ran out rather than being released: its holder crashed,
    hung or lost the database, perhaps in the middle of a step."""


class WorkItem(msgspec.Struct, frozen=True):
    """One row of the work index, as an operator (or a rebuild check) sees it."""

    stream_id: str
    """The stream that needs a worker."""
    ready_at: datetime
    """From when."""
    lease_owner: str | None = None
    """The worker leasing it, if any."""
    lease_expires_at: datetime | None = None
    """When that lease runs out."""
