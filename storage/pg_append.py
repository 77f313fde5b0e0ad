"""How the PostgreSQL backend packs a group commit for ``sagalog_append``.

The function itself (``sql/001_journal.sql``) does the work; this module
builds its arguments and turns what it returns into events or conflicts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
from sagalog.storage.recorder import AppendOutcome, AppendRequest
from sagalog.storage.records import ANY_VERSION, Event

from sagalog.errors import ConcurrencyError

# A group commit of several requests is one call of the SQL function
# sagalog_append (see sql/001_journal.sql): in autocommit mode the call is
# the whole transaction, so an append costs one round trip. The function takes
# `LOCK TABLE events IN EXCLUSIVE MODE` first. Why: positions come from a
# sequence at INSERT time but become visible at COMMIT time, so concurrent
# appenders could commit out of position order, and a reader paging by
# position would skip the slower one's events for good. EXCLUSIVE conflicts
# with every other INSERT's ROW EXCLUSIVE lock but not with the ACCESS SHARE
# lock of SELECT: appenders allocate and commit positions one transaction at
# a time, readers are never blocked, and group commit makes the
# serialisation cheap (pyeventsourcing does the same). See
# https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES
APPEND = "SELECT previous, positions FROM sagalog_append(%s::jsonb, %s)"

# A batch of one request (the usual case when appenders are few) is one
# prepared statement instead: PL/pgSQL running four statements cost about
# 40 % more on the server than this one statement, and a function made of
# plain SQL is planned on every call. One statement cannot LOCK TABLE, so:
#
# * Global order. The INSERT holds ROW EXCLUSIVE on events from the start of
#   the statement to the commit, which already excludes sagalog_append's
#   EXCLUSIVE lock both ways. Two of these statements exclude each other with
#   a transaction-level advisory lock (key: "sagalog.events" and the table's
#   oid, so journals in other schemas do not wait for each other), taken in
#   the INSERT's FROM clause: before the first position is drawn, held until
#   the commit. Readers never wait.
# * Optimistic concurrency. The statement's snapshot is taken before it
#   waits for the advisory lock, so the version it reads may be stale by the
#   appends that committed meanwhile. A stale read never writes a wrong
#   version: its first event collides with the stored one on UNIQUE
#   (namespace, stream_id, version), the statement fails as a whole (nothing
#   written), and the recorder runs it again on a fresh snapshot
#   (RETRY_CONFLICTS). A stream that is simply not at the expected version
#   writes nothing and returns its version, as the function does.
# * The work-index change and the NOTIFY happen only when events were
#   inserted (they read the `inserted` CTE, which also makes them run after
#   the advisory lock: lock order as in sql/001_journal.sql).
APPEND_ONE = """
WITH current_version AS (
    SELECT coalesce(max(version), 0) AS v FROM events
     WHERE namespace = %(ns)s AND stream_id = %(sid)s),
appender AS (
    SELECT pg_advisory_xact_lock(610774892, 'events'::regclass::oid::integer)),
inserted AS (
    INSERT INTO events (namespace, stream_id, version, type, payload, metadata, recorded_at)
    SELECT %(ns)s, %(sid)s, c.v + j.o::integer, j.e->>0, decode(j.e->>1, 'base64'), j.e->2,
           %(at)s::timestamptz
      FROM appender, current_version c,
           jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS j(e, o)
     WHERE %(expected)s::integer IN (-1, c.v)
     ORDER BY j.o
    RETURNING position),
scheduled AS (
    INSERT INTO work_index (namespace, stream_id, ready_at)
    SELECT %(ns)s, %(sid)s, %(ready)s::timestamptz
     WHERE %(schedule)s::smallint = 1 AND EXISTS (SELECT FROM inserted)
    ON CONFLICT (namespace, stream_id) DO UPDATE SET ready_at = excluded.ready_at),
unscheduled AS (
    DELETE FROM work_index w
     WHERE %(schedule)s::smallint = 2 AND w.namespace = %(ns)s AND w.stream_id = %(sid)s
       AND EXISTS (SELECT FROM inserted))
SELECT (SELECT v FROM current_version),
       (SELECT array_agg(position ORDER BY position) FROM inserted),
       (SELECT pg_notify(%(channel)s, '') WHERE EXISTS (SELECT FROM inserted)) IS NULL"""

RETRY_CONFLICTS = 20
"""How often APPEND_ONE runs again after a stale read (each one means another append won)."""

MAX_CALL_BYTES = 32 * 1024 * 1024
"""Payload bytes per ``sagalog_append`` call before a batch is split (see :func:`chunks`)."""


def append_arguments(requests: Sequence[AppendRequest], channel: str) -> tuple[str, str]:
    """The JSON batch ``sagalog_append`` takes (see its comment), and the channel."""
    streams: dict[tuple[str, str], int] = {}
    rows: list[list[Any]] = []
    events: list[list[Any]] = []
    for r, request in enumerate(requests, start=1):
        key = (request.namespace, request.stream_id)
        schedule = request.schedule
        rows.append([
            streams.setdefault(key, len(streams) + 1),
            request.expected_version,
            len(request.events),
            request.recorded_at,
            0 if schedule is None else 1 if schedule.ready_at is not None else 2,
            None if schedule is None else schedule.ready_at,
        ])
        for offset, event in enumerate(request.events, start=1):
            events.append([r, offset, event.type, event.payload, event.metadata, *key])
    # msgspec writes bytes as base64 and datetimes as RFC 3339.
    return msgspec.json.encode([list(streams), rows, events]).decode(), channel


def append_one_arguments(request: AppendRequest, channel: str) -> dict[str, Any]:
    """The parameters of APPEND_ONE for a batch of one request."""
    schedule = request.schedule
    return {
        "ns": request.namespace,
        "sid": request.stream_id,
        "at": request.recorded_at,
        "events": msgspec.json.encode([[e.type, e.payload, e.metadata] for e in request.events]).decode(),
        "expected": request.expected_version,
        "ready": None if schedule is None else schedule.ready_at,
        "schedule": 0 if schedule is None else 1 if schedule.ready_at is not None else 2,
        "channel": channel,
    }


def chunks(requests: Sequence[AppendRequest]) -> Iterator[Sequence[AppendRequest]]:
    """``requests`` in order, cut so that no call carries much over MAX_CALL_BYTES of payload.

    A jsonb value is limited to 255 MB; 256 appends of large payloads would
    pass it. Each request keeps its own outcome either way, and the calls
    run one after the other, so positions still follow request order.
    """
    start, size = 0, 0
    for index, request in enumerate(requests):
        weight = sum(len(e.payload) for e in request.events)
        if index > start and size + weight > MAX_CALL_BYTES:
            yield requests[start:index]
            start, size = index, 0
        size += weight
    if start < len(requests):
        yield requests[start:]


def append_outcomes(
    requests: Sequence[AppendRequest], previous: list[int], positions: list[int]
) -> list[AppendOutcome]:
    """Each request's stored events (or its conflict) from what ``sagalog_append`` returned."""
    found: list[AppendOutcome] = []
    taken = iter(positions)
    for request, version in zip(requests, previous, strict=True):
        if request.expected_version not in (ANY_VERSION, version):
            found.append(ConcurrencyError(request.stream_id, request.expected_version, version))
            continue
        found.append([
            Event(
                position=next(taken),
                stream_id=request.stream_id,
                version=version + offset,
                type=event.type,
                payload=event.payload,
                metadata=dict(event.metadata),
                namespace=request.namespace,
                recorded_at=request.recorded_at,
            )
            for offset, event in enumerate(request.events, start=1)
        ])
    return found
