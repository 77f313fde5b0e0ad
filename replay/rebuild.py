"""Rebuild every derived table of a namespace from its events alone.

The journal is the only source of truth (DESIGN, "The one rule"). What this
module rebuilds, and from what:

* **work index** — a workflow stream's row is :func:`~sagalog.replay.saga.ready_at`
  of its saga fold (the same function the runner appends with); a session
  stream's row is :attr:`SessionState.ready_at` of its session fold (next
  idle or absolute deadline, or the end of a session whose workflows still
  wait to be told). Leases are not derived data of the events: rebuilt rows
  have none.
* **snapshots** — all dropped; each workflow and session stream with at least
  ``snapshot_every`` events gets one fresh snapshot at its head, and the
  session analytics projection is folded again and stored.
* **subscription checkpoints** are left alone: they record how far a
  consumer got, which no event says.

Events are read once, in global order, and folded per stream. Appends made
while a rebuild runs set their own rows (they carry a ``Schedule``); the
rebuild reads the journal again after writing its rows and rewrites the rows
of every stream that moved meanwhile, until a read finds nothing new, so a
row it wrote from an older state never stays. Workers keep working, but the
leases they held are gone; stop them first for a quiet rebuild.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sagalog.replay.events import STREAM_PREFIX as WORKFLOW_PREFIX
from sagalog.replay.saga import SagaFold, SagaState, ready_at
from sagalog.replay.session_analytics import (
    PROJECTION_SCHEMA,
    PROJECTION_STREAM,
    SessionAnalytics,
    catch_up,
)
from sagalog.replay.sessions import SESSION_FOLD, SessionState
from sagalog.replay.sessions import STREAM_PREFIX as SESSION_PREFIX
from sagalog.storage import Event, Journal, Snapshot

from sagalog.errors import DecodingError

DEFAULT_SNAPSHOT_EVERY = 100
"""Streams with at least this many events get a snapshot at their head."""

_MAX_ROUNDS = 1000
_SAGA_FOLD = SagaFold()
# A parent that got a child's outcome from a process without its code is
# marked ready at once by the runner, although its fold alone does not say so
# (the outcome waits for a decision only the workflow code can make).
_CHILD_OUTCOMES = ("ChildCompleted", "ChildFailed")


class RebuildSummary(msgspec.Struct, frozen=True):
    """What :func:`rebuild_derived` did."""

    namespace: str
    """The namespace rebuilt."""
    events: int
    """Events read."""
    workflows: int
    """Workflow streams (``wf-``) folded."""
    sessions: int
    """Session streams (``session-``) folded."""
    other_streams: int
    """Streams of other kinds (no derived rows)."""
    work_rows: int
    """Rows in the rebuilt work index."""
    snapshots: int
    """Snapshots written (the analytics projection included)."""
    undecodable: tuple[str, ...] = ()
    """Streams with an event that cannot be decoded (a workflow one is left
    ready, so a worker parks it, unless it is parked already)."""


class _Stream(msgspec.Struct):
    """One stream's fold so far."""

    kind: str
    state: SagaState | SessionState | None
    version: int = 0
    last_type: str = ""
    last_at: datetime | None = None
    broken: bool = False


def _kind(stream_id: str) -> str:
    if stream_id.startswith(WORKFLOW_PREFIX):
        return "workflow"
    if stream_id.startswith(SESSION_PREFIX):
        return "session"
    return "other"


def _apply(streams: dict[str, _Stream], event: Event) -> str:
    found = streams.get(event.stream_id)
    if found is None:
        kind = _kind(event.stream_id)
        initial: SagaState | SessionState | None = None
        if kind == "workflow":
            initial = _SAGA_FOLD.initial(event.stream_id)
        elif kind == "session":
            initial = SESSION_FOLD.initial(event.stream_id)
        found = streams[event.stream_id] = _Stream(kind, initial)
    found.version, found.last_type, found.last_at = event.version, event.type, event.recorded_at
    if found.broken or found.state is None:
        return event.stream_id
    try:
        if isinstance(found.state, SagaState):
            found.state = _SAGA_FOLD.apply(found.state, event)
        else:
            found.state = SESSION_FOLD.apply(found.state, event)
    except DecodingError:
        found.broken = True
    return event.stream_id


def _row_for(stream: _Stream, now: datetime | None = None) -> datetime | None:
    """The work-index time of a folded stream (None: no row)."""
    when = now or stream.last_at
    assert when is not None
    match stream.state:
        case SagaState() if stream.broken:
            return None if stream.last_type == "WorkflowParked" else when
        case SagaState() as state:
            found = ready_at(state, when)
            live = state.status in ("running", "compensating")
            if found is None and live and stream.last_type in _CHILD_OUTCOMES:
                return when
            return found
        case SessionState() as session if not stream.broken:
            return session.ready_at
        case _:
            return None


async def _read(
    journal: Journal, streams: dict[str, _Stream], after: int, batch: int
) -> tuple[int, set[str], int]:
    """Fold every event after ``after``; returns the last position, streams touched, events read."""
    touched: set[str] = set()
    read = 0
    while True:
        page = await journal.read_all(after, batch)
        for event in page:
            touched.add(_apply(streams, event))
        read += len(page)
        if page:
            after = page[-1].position
        if len(page) < batch:
            return after, touched, read


async def rebuild_derived(
    journal: Journal,
    *,
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
    now: datetime | None = None,
    batch: int = 1000,
) -> RebuildSummary:
    """Drop the namespace's work index and snapshots and rebuild them from its events.

    Args:
        journal: the journal, scoped to the namespace to rebuild.
        snapshot_every: streams with at least this many events get a snapshot
            at their head (0: none; readers fold from events and the runner
            snapshots again as they grow).
        now: the time given to rows that are ready at once; default: the
            stream's last event time (what the live append wrote, near enough,
            and the same on every rebuild).
        batch: events read per page.

    Returns:
        What was rebuilt.
    """
    await journal.clear_work_index()
    await journal.clear_snapshots()
    streams: dict[str, _Stream] = {}
    position, touched, events = await _read(journal, streams, 0, batch)
    for stream_id in sorted(touched):
        row = _row_for(streams[stream_id], now)
        if row is not None:
            await journal.put_work(stream_id, row)
    # Appends since the read set their own rows, but one of ours may have
    # landed after theirs: fold what is new and write those rows again.
    for _ in range(_MAX_ROUNDS):
        position, touched, read = await _read(journal, streams, position, batch)
        events += read
        if not touched:
            break
        for stream_id in sorted(touched):
            await journal.put_work(stream_id, _row_for(streams[stream_id], now))
    snapshots = await _snapshot(journal, streams, snapshot_every)
    analytics = SessionAnalytics()
    await catch_up(journal, analytics, batch)
    if analytics.position:
        await journal.save_snapshot(
            Snapshot(PROJECTION_STREAM, analytics.position, analytics.encode(), PROJECTION_SCHEMA)
        )
        snapshots += 1
    kinds = [s.kind for s in streams.values()]
    return RebuildSummary(
        namespace=journal.namespace,
        events=events,
        workflows=kinds.count("workflow"),
        sessions=kinds.count("session"),
        other_streams=kinds.count("other"),
        work_rows=len(await journal.work_index()),
        snapshots=snapshots,
        undecodable=tuple(sorted(sid for sid, s in streams.items() if s.broken)),
    )


async def _snapshot(journal: Journal, streams: dict[str, _Stream], every: int) -> int:
    written = 0
    if every <= 0:
        return 0
    for stream_id, stream in sorted(streams.items()):
        if stream.broken or stream.version < every:
            continue
        match stream.state:
            case SagaState() as state:
                data, schema = _SAGA_FOLD.encode(state), _SAGA_FOLD.schema
            case SessionState() as session:
                data, schema = SESSION_FOLD.encode(session), SESSION_FOLD.schema
            case _:
                continue
        await journal.save_snapshot(Snapshot(stream_id, stream.version, data, schema))
        written += 1
    return written

