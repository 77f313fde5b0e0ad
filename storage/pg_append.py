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

# One group commit is one call of the SQL function sagalog_append (see
# sql/001_journal.sql): in autocommit mode the call is the whole transaction,
# so an append costs one round trip. The function takes
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
APPEND_ONE = """
SELECT previous, positions FROM sagalog_append_one(
    %s, %s, %s::integer, %s::timestamptz, %s::smallint, %s::timestamptz, %s::jsonb, %s)"""

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


def append_one_arguments(request: AppendRequest, channel: str) -> tuple[Any, ...]:
    """The arguments of ``sagalog_append_one`` for a batch of one request."""
    schedule = request.schedule
    events = [[e.type, e.payload, e.metadata] for e in request.events]
    return (
        request.namespace,
        request.stream_id,
        request.expected_version,
        request.recorded_at,
        0 if schedule is None else 1 if schedule.ready_at is not None else 2,
        None if schedule is None else schedule.ready_at,
        msgspec.json.encode(events).decode(),
        channel,
    )


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
