"""How the PostgreSQL backend writes a group commit.

A batch of several requests is one call of ``sagalog_append_batch`` (the
function in ``sql/002_append_arrays.sql`` does the work); a batch of one request is one of
the prepared statements of APPEND_ONE. This module builds their arguments
and turns what they return into events or conflicts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from operator import floordiv, sub
from typing import Any, NamedTuple

import msgspec
from psycopg import pq
from psycopg.adapt import AdaptersMap, Dumper
from sagalog.storage.notices import encode_broad_notice, encode_notice, worker_of
from sagalog.storage.recorder import AppendOutcome, AppendRequest, stored_events
from sagalog.storage.records import ANY_VERSION, Event

from sagalog.errors import ConcurrencyError, InvalidEventError

_json = msgspec.json.Encoder()

# A group commit of several requests is one call of the SQL function
# sagalog_append_batch (see sql/002_append_arrays.sql): in autocommit mode the
# call is the whole transaction, so an append costs one round trip. The
# function takes `LOCK TABLE events IN EXCLUSIVE MODE` first. Why: positions
# come from a sequence at INSERT time but become visible at COMMIT time, so
# concurrent appenders could commit out of position order, and a reader
# paging by position would skip the slower one's events for good. EXCLUSIVE
# conflicts with every other INSERT's ROW EXCLUSIVE lock but not with the
# ACCESS SHARE lock of SELECT: appenders allocate and commit positions one
# transaction at a time, readers are never blocked, and group commit makes
# the serialisation cheap (pyeventsourcing does the same). See
# https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES
# The batch travels as typed arrays in binary (%b), one per column; the
# last two arguments are the NOTIFY channels and payload (sql/003_notices.sql).
APPEND = """
SELECT previous, positions FROM sagalog_append_batch(
    %b::text[], %b::text[], %b::integer[], %b::timestamptz[], %b::integer[], %b::integer[],
    %b::integer[], %b::integer[], %b::timestamptz[], %b::text[], %b::bytea[], %b::text[],
    %b::text[], %b)"""

# A batch of one request (the usual case when appenders are few) is one
# prepared statement instead, chosen among the texts below by the shape of the
# request (one event or several; work index untouched, set or removed). It
# costs the server about a third less CPU than calling the function (PL/pgSQL
# running four statements; a function of plain SQL is planned on every call).
# One statement cannot LOCK TABLE, so:
#
# * Global order. The INSERT holds ROW EXCLUSIVE on events from the start of
#   the statement to the commit, which already excludes sagalog_append_batch's
#   EXCLUSIVE lock both ways. Two of these statements exclude each other with
#   a transaction-level advisory lock (key: "sagalog.events" hashed, and the
#   table's oid, so journals in other schemas never wait for each other),
#   taken in the INSERT's WHERE clause: before the first position is drawn
#   (identity values are computed above the scan), held until the commit.
#   Readers never wait.
# * Optimistic concurrency. The statement's snapshot is taken before it
#   waits for the advisory lock, so the version it reads may be stale by the
#   appends that committed meanwhile. A stale read never writes a wrong
#   version: its first event collides with the stored one on UNIQUE
#   (namespace, stream_id, version) and the statement fails as a whole
#   (nothing written). A stream not at the expected version inserts nothing
#   and the statement returns no row. Either way the recorder then calls
#   sagalog_append_one (APPEND_LOCKED), which reads the version after taking
#   the events lock: it appends or reports the conflict on fresh data, in one
#   more round trip, and never has to be retried itself.
# * The work-index change reads the `inserted` CTE, so it happens only when
#   events were written, after the advisory lock (the lock order of
#   sql/001_journal.sql). pg_notify runs per returned row (PostgreSQL sends
#   one notification per transaction for identical ones), with the payload
#   of sagalog.storage.notices.
# * The version read goes no further back than a bound ($6): the expected
#   version, or for ANY_VERSION the version this process last wrote to the
#   stream (see Heads). A B-tree scan reads every entry of the stream on the
#   leaf page it lands on, so an unbounded read of a long stream costs up to
#   a page of entries, a bounded one a single entry. A stream with nothing
#   from the bound on reads as 0: with an expected version that is a
#   mismatch (the slower path below decides); with ANY_VERSION the INSERT
#   either is right (the stream is empty) or collides on version 1.
# Parameters (native placeholders, see append_one_statement): $1 namespace,
# $2 stream, $3 recorded_at, $4 expected version, $5 the NOTIFY channels
# (see Channels), $6 the bound, $7 the NOTIFY payload; then the event ($8
# type, $9 payload, $10 metadata) or the events ($8, a JSON array of [type,
# payload (base64), metadata]); last, ready_at when the work index is set.
_CURRENT = """(SELECT coalesce((SELECT version FROM events WHERE namespace = $1 AND stream_id = $2
                                    AND version >= $6::integer
                           ORDER BY version DESC LIMIT 1), 0) AS v) c"""
_GUARD = """$4::integer IN (-1, c.v)
   AND pg_advisory_xact_lock(610774892, 'events'::regclass::oid::integer) IS NOT NULL"""
_INSERT_ONE = f"""
INSERT INTO events (namespace, stream_id, version, type, payload, metadata, recorded_at)
SELECT $1, $2, c.v + 1, $8, $9, $10::jsonb, $3
  FROM {_CURRENT}
 WHERE {_GUARD}"""
_INSERT_MANY = f"""
INSERT INTO events (namespace, stream_id, version, type, payload, metadata, recorded_at)
SELECT $1, $2, c.v + j.o::integer, j.e->>0, decode(j.e->>1, 'base64'), j.e->2, $3
  FROM {_CURRENT}, jsonb_array_elements($8::jsonb) WITH ORDINALITY AS j(e, o)
 WHERE {_GUARD}
 ORDER BY j.o"""
_SCHEDULE = """
scheduled AS (
    INSERT INTO work_index (namespace, stream_id, ready_at)
    SELECT $1, $2, ${ready}::timestamptz WHERE EXISTS (SELECT FROM inserted)
    ON CONFLICT (namespace, stream_id) DO UPDATE SET ready_at = excluded.ready_at)"""
_UNSCHEDULE = """
unscheduled AS (
    DELETE FROM work_index
     WHERE namespace = $1 AND stream_id = $2 AND EXISTS (SELECT FROM inserted))"""
# A start (see sql/004_tickets.sql) takes an idle worker's ticket, if one is
# left, and writes its work-index row leased to that worker; then it notifies
# the ticket's channel in place of the work channel (${work}). The ticket
# renewed last first: a killed worker's tickets age (no heartbeat renews
# them), so they are taken only when no live worker has one left.
_HAND_OFF = """
ticket AS (
    DELETE FROM tickets
     WHERE (namespace, owner, slot) = (SELECT namespace, owner, slot FROM tickets
                                        WHERE namespace = $1 AND lease_expires_at > $3::timestamptz
                                        ORDER BY lease_expires_at DESC
                                        LIMIT 1 FOR UPDATE SKIP LOCKED)
       AND EXISTS (SELECT FROM inserted)
    RETURNING owner, channel, lease_expires_at),
scheduled AS (
    INSERT INTO work_index (namespace, stream_id, ready_at, lease_owner, lease_expires_at)
    SELECT $1, $2, ${ready}::timestamptz, t.owner, t.lease_expires_at
      FROM (SELECT) AS one LEFT JOIN ticket AS t ON true
     WHERE EXISTS (SELECT FROM inserted)
    ON CONFLICT (namespace, stream_id) DO UPDATE
       SET ready_at = excluded.ready_at, lease_owner = excluded.lease_owner,
           lease_expires_at = excluded.lease_expires_at)"""
_RETURNING = "position, version, (SELECT count(pg_notify(n, $7)) FROM unnest($5::text[]) AS n)"
_RETURNING_HANDED = """position, version,
       (SELECT count(pg_notify(n, $7)) FROM unnest($5::text[]) AS n
         WHERE n <> ${work}::text OR NOT EXISTS (SELECT FROM ticket))
       + (SELECT count(pg_notify(channel, $7)) FROM ticket)"""


def _append_one_text(insert: str, work: str | None, many: bool) -> str:
    if work is None:
        return f"{insert}\nRETURNING {_RETURNING}"
    ready, work_channel = ("9", "10") if many else ("11", "12")
    returning = _RETURNING_HANDED if work is _HAND_OFF else _RETURNING
    return (
        f"WITH inserted AS ({insert}\nRETURNING position, version),{work}\n"
        f"SELECT {returning} FROM inserted ORDER BY position"
    ).replace("{ready}", ready).replace("{work}", work_channel)


APPEND_ONE = {
    (many, kind): _append_one_text(insert, work, many)
    for many, insert in ((False, _INSERT_ONE), (True, _INSERT_MANY))
    for kind, work in ((0, None), (1, _SCHEDULE), (2, _UNSCHEDULE), (3, _HAND_OFF))
}
"""The statement for one request: by (several events?, schedule 0 none / 1 set / 2 remove /
3 set, handing the stream to an idle worker's ticket)."""

APPEND_LOCKED = """
SELECT previous, positions FROM sagalog_append_one(
    %s, %s, %s::integer, %s::timestamptz, %s::smallint, %s::timestamptz, %s::jsonb, %s)"""
"""The slower path for one request, taken after APPEND_ONE wrote nothing (see above)."""

MAX_CALL_BYTES = 32 * 1024 * 1024
"""Payload bytes per ``sagalog_append_batch`` call before a batch is split (see :func:`chunks`)."""


class Channels(NamedTuple):
    """The NOTIFY channels of one journal (names are database-wide: derived from the schema)."""

    main: str
    """Every commit (``wait_for_new``, a plain ``Journal.watch()``)."""
    work: str
    """Commits with an append that is not ``quiet``: they may make work for a worker."""
    final: str
    """Commits with a ``final`` append: they may end what someone awaits."""

    @classmethod
    def of(cls, main: str) -> Channels:
        """The channels named after ``main``."""
        return cls(main, f"{main}_w", f"{main}_f")

    def told(self, requests: Sequence[AppendRequest]) -> list[str]:
        """The channels a commit of ``requests`` notifies."""
        told = [self.main]
        if not all(r.quiet for r in requests):
            told.append(self.work)
        if any(r.final for r in requests):
            told.append(self.final)
        return told


class BinaryArray(bytes):
    """A one-dimensional array without NULLs, already in PostgreSQL's binary format.

    psycopg's list dumper handles the elements in Python, a function call
    each (0.3 - 0.6 µs): for every column of every event of a group commit.
    The builders below (:func:`int4_array`, :func:`text_array`,
    :func:`bytea_array`, :func:`timestamptz_array`) do a whole list with
    loops that stay in C (``struct.pack``, ``map``, ``bytes.join``). Each
    subclass is sent as its own array type by the dumpers
    :func:`register_dumpers` installs.
    """

    oid = 0
    """The array type's oid."""


class Int4Array(BinaryArray):
    """An ``integer[]``."""

    oid = 1007


class TextArray(BinaryArray):
    """A ``text[]`` (UTF-8: the client encoding psycopg uses)."""

    oid = 1009


class ByteaArray(BinaryArray):
    """A ``bytea[]``."""

    oid = 1001


class TimestamptzArray(BinaryArray):
    """A ``timestamptz[]``."""

    oid = 1185


def _dumper(array: type[BinaryArray]) -> type[Dumper]:
    class ArrayDumper(Dumper):
        format = pq.Format.BINARY
        oid = array.oid

        def dump(self, obj: Any) -> bytes:
            return bytes(obj)  # the bytes are the wire format

    ArrayDumper.__name__ = ArrayDumper.__qualname__ = f"{array.__name__}Dumper"
    return ArrayDumper


_HEADER = struct.Struct("!5i")
_LENGTH = struct.Struct("!i").pack
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _header(element_oid: int, n: int) -> bytes:
    # ndim 1, no NULLs, the element type, n elements from index 1.
    return _HEADER.pack(1, 0, element_oid, n, 1)


def _elements(items: list[bytes]) -> bytes:
    # Each element as its length and its bytes.
    return b"".join(chain.from_iterable(zip(map(_LENGTH, map(len, items)), items, strict=True)))


def int4_array(values: Sequence[int]) -> Int4Array:
    """``values`` (at least one, each fitting 32 bits) as a binary ``integer[]``."""
    n = len(values)
    # Each element as its length (4) and its value: one struct.pack for all.
    flat = chain.from_iterable(zip(repeat(4), values))
    try:
        return Int4Array(struct.pack(f"!5i{2 * n}i", 1, 0, 23, n, 1, *flat))
    except struct.error:
        # Only an expected version can be that large (versions are integers).
        raise InvalidEventError(
            f"an expected version is out of range: {max(values, key=abs)} (versions fit 32 bits)"
        ) from None


def text_array(values: Sequence[str]) -> TextArray:
    """``values`` as a binary ``text[]``."""
    return TextArray(_header(25, len(values)) + _elements(list(map(str.encode, values))))


def json_text_array(values: list[bytes]) -> TextArray:
    """JSON documents, as msgspec encodes them (UTF-8 bytes), as a binary ``text[]``."""
    return TextArray(_header(25, len(values)) + _elements(values))


def bytea_array(values: Sequence[bytes]) -> ByteaArray:
    """``values`` as a binary ``bytea[]``."""
    items = values if isinstance(values, list) else list(values)
    return ByteaArray(_header(17, len(items)) + _elements(items))


def timestamptz_array(values: Sequence[datetime]) -> TimestamptzArray | list[datetime]:
    """Timezone-aware ``values`` as a binary ``timestamptz[]`` (microseconds since 2000).

    A naive datetime has no place on the timeline: the list is returned as
    it is, for psycopg to send (as ``timestamp[]``, read in the session's
    time zone, as before).
    """
    try:
        micros = list(map(floordiv, map(sub, values, repeat(_PG_EPOCH)), repeat(_MICROSECOND)))
    except TypeError:
        return list(values)
    n = len(micros)
    flat = chain.from_iterable(zip(repeat(8), micros))  # each element: its length, its value
    return TimestamptzArray(struct.pack("!5i" + "iq" * n, 1, 0, 1184, n, 1, *flat))


def payload_bytes(array: BinaryArray) -> int:
    """The bytes of the elements of ``array``, without the array's framing."""
    n: int = _HEADER.unpack_from(array)[3]
    return len(array) - _HEADER.size - 4 * n


def register_dumpers(adapters: AdaptersMap) -> None:
    """Teach a connection's adapters the types :func:`append_arguments` uses."""
    for array in (Int4Array, TextArray, ByteaArray, TimestamptzArray):
        adapters.register_dumper(array, _dumper(array))


PAYLOADS = 10
"""Where :func:`append_arguments` puts the payloads."""


class Heads:
    """The last version of streams this process appended to with ``ANY_VERSION``.

    Only a hint for the server's version read (see ``p_hint`` in
    sql/002_append_arrays.sql): reading a stream's last version costs up to
    a leaf page of index entries, reading down to a version known to exist
    costs one. A stale or wrong hint costs a full read, never a wrong
    version. Streams appended with an expected version carry their own hint
    and are not kept.
    """

    LIMIT = 100_000
    """Entries kept at most; past that the map starts over (hints are optional)."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], int] = {}

    def update(self, requests: Sequence[AppendRequest], outcomes: Sequence[AppendOutcome]) -> None:
        """Remember the versions the ``ANY_VERSION`` requests of a batch reached."""
        versions = self.versions
        if len(versions) + len(requests) > self.LIMIT:
            versions.clear()
        # One comprehension for the batch: a method call per request cost as
        # much as building its arguments.
        versions.update([
            ((request.namespace, request.stream_id), outcome[-1].version)
            for request, outcome in zip(requests, outcomes, strict=True)
            if request.expected_version == ANY_VERSION and not isinstance(outcome, ConcurrencyError)
        ])

    def reached(self, request: AppendRequest, version: int) -> None:
        """Remember that ``request``'s stream reached ``version``."""
        versions = self.versions
        if len(versions) >= self.LIMIT:
            versions.clear()
        versions[request.namespace, request.stream_id] = version


def append_arguments(
    requests: Sequence[AppendRequest],
    channels: Channels,
    heads: Mapping[tuple[str, str], int] | None = None,
) -> tuple[Any, ...]:
    """The arguments of ``sagalog_append_batch`` (see sql/002_append_arrays.sql), in order.

    Typed arrays in binary (:class:`BinaryArray`); arrays the batch does not
    need are None. This runs for every event of every group commit: the
    lists are built with comprehensions, and the shape checks (one
    namespace? each stream once? one event per request?) are counts and
    sets rather than loops in Python.

    ``heads``: versions streams are known to have reached (see
    :class:`Heads`), used as hints for the ``ANY_VERSION`` requests.
    """
    n = len(requests)
    namespace = requests[0].namespace
    sids = [r.stream_id for r in requests]
    namespaces = [r.namespace for r in requests]
    same = namespaces.count(namespace) == n
    keyed = set(sids) if same else set(zip(namespaces, sids, strict=True))
    once = len(keyed) == n
    stream: Int4Array | None = None
    keys: list[tuple[str, str]] | None = None
    if once:  # every stream once: request r is stream r
        sid = sids
        ns = [namespace] if same else namespaces
    else:
        streams: dict[tuple[str, str], int] = {}
        index = [streams.setdefault(key, len(streams) + 1) for key in zip(namespaces, sids, strict=True)]
        stream = int4_array(index)
        keys = list(streams)
        sid = [key[1] for key in keys]
        ns = [namespace] if same else [key[0] for key in keys]
    counts: Int4Array | None = None
    sizes = [len(r.events) for r in requests]
    if sizes.count(1) == n:
        events = [r.events[0] for r in requests]
    else:
        counts = int4_array(sizes)
        events = [e for r in requests for e in r.events]
    schedule: Int4Array | None = None
    ready_at: list[datetime | None] | None = None
    works = [r.schedule for r in requests]
    if works.count(None) != n:
        schedule = int4_array([0 if w is None else 1 if w.ready_at is not None else 2 for w in works])
        ready_at = [None if w is None else w.ready_at for w in works]
    expected = [r.expected_version for r in requests]
    hint: Int4Array | None = None
    if heads and ANY_VERSION in expected:
        if keys is None:
            hint = int4_array([
                heads.get(key, 0) if version == ANY_VERSION else version
                for key, version in zip(zip(namespaces, sids, strict=True), expected, strict=True)
            ])
        else:
            hint = int4_array([heads.get(key, 0) for key in keys])
    return (
        text_array(ns),
        text_array(sid),
        int4_array(expected),
        timestamptz_array([r.recorded_at for r in requests]),
        stream,
        counts,
        hint,
        schedule,
        ready_at,
        text_array([e.type for e in events]),
        bytea_array([e.payload for e in events]),
        json_text_array(list(map(_json.encode, [e.metadata for e in events]))),
        channels.told(requests),
        notice(requests),
    )


LISTED = 48
"""Requests a commit's notice lists stream by stream at most (beyond, namespaces only)."""


def notice(requests: Sequence[AppendRequest]) -> str:
    """The NOTIFY payload of a commit of ``requests`` (see :mod:`sagalog.storage.notices`).

    A big batch would not fit one notification stream by stream anyway: it
    is told by namespace and worker without building the long list first.
    """
    if len(requests) <= LISTED:
        appends = [(r.namespace, r.stream_id, r.events) for r in requests]
        return encode_notice(appends, [r.final for r in requests])
    # One event per request (the usual batch): its worker, read inline.
    return encode_broad_notice({
        (r.namespace, r.events[0].metadata.get("worker", "") if len(r.events) == 1 else worker_of(r.events))
        for r in requests
    })


def calls(
    requests: Sequence[AppendRequest], channels: Channels, heads: Mapping[tuple[str, str], int]
) -> Iterator[tuple[Sequence[AppendRequest], tuple[Any, ...]]]:
    """The calls of ``sagalog_append_batch`` for ``requests``: (requests, arguments) each.

    One call unless the payloads pass MAX_CALL_BYTES; then :func:`chunks`.
    """
    arguments = append_arguments(requests, channels, heads)
    if payload_bytes(arguments[PAYLOADS]) <= MAX_CALL_BYTES:
        yield requests, arguments
        return
    for chunk in chunks(requests):
        yield chunk, append_arguments(chunk, channels, heads)


def append_one_statement(
    request: AppendRequest, channels: Channels, heads: Mapping[tuple[str, str], int]
) -> tuple[str, tuple[Any, ...]]:
    """The statement (from APPEND_ONE) and parameters for a batch of one request.

    The statement uses native ``$n`` placeholders: run it with a raw cursor
    (psycopg then has no query to convert on every call). ``heads``: see
    :class:`Heads`.
    """
    schedule = request.schedule
    events = request.events
    expected = request.expected_version
    common = (
        request.namespace,
        request.stream_id,
        request.recorded_at,
        expected,
        channels.told([request]),
        heads.get((request.namespace, request.stream_id), 0) if expected == ANY_VERSION else expected,
        # A start's notice carries its event: the worker it is handed to replays from it.
        encode_notice([(request.namespace, request.stream_id, events)], [request.final or request.hand_off]),
    )
    params: tuple[Any, ...]
    if len(events) == 1:
        event = events[0]
        params = (*common, event.type, event.payload, _json.encode(event.metadata).decode())
    else:
        params = (*common, _json.encode([[e.type, e.payload, e.metadata] for e in events]).decode())
    if schedule is None:
        return APPEND_ONE[len(events) != 1, 0], params
    if schedule.ready_at is None:
        return APPEND_ONE[len(events) != 1, 2], params
    if request.hand_off:
        return APPEND_ONE[len(events) != 1, 3], (*params, schedule.ready_at, channels.work)
    return APPEND_ONE[len(events) != 1, 1], (*params, schedule.ready_at)


def append_locked_arguments(request: AppendRequest, channel: str) -> tuple[Any, ...]:
    """The arguments of ``sagalog_append_one`` (APPEND_LOCKED) for one request."""
    schedule = request.schedule
    events = [[e.type, e.payload, e.metadata] for e in request.events]
    return (
        request.namespace,
        request.stream_id,
        request.expected_version,
        request.recorded_at,
        0 if schedule is None else 1 if schedule.ready_at is not None else 2,
        None if schedule is None else schedule.ready_at,
        _json.encode(events).decode(),
        channel,
    )


def one_outcome(request: AppendRequest, rows: Sequence[Sequence[Any]]) -> list[Event]:
    """The stored events of an accepted request from APPEND_ONE's rows (position, version)."""
    return stored_events(request, [row[0] for row in rows], rows[0][1])


def chunks(requests: Sequence[AppendRequest]) -> Iterator[Sequence[AppendRequest]]:
    """``requests`` in order, cut so that no call carries much over MAX_CALL_BYTES of payload.

    A value (here the bytea[] of payloads) is limited to 1 GB, and one call
    holds the whole batch in the server's memory several times over; 256
    appends of large payloads would pass that. Each request keeps its own outcome either way, and the calls
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
    """Each request's stored events (or its conflict) from what ``sagalog_append_batch`` returned."""
    n = len(requests)
    if len(positions) == n and [len(r.events) for r in requests].count(1) == n:
        # The usual group commit: one event per request, every request
        # accepted (a refused request writes nothing). Positional arguments:
        # keywords cost msgspec a lookup each, for every event.
        return [
            [Event(p, r.stream_id, v + 1, e.type, e.payload, dict(e.metadata), r.namespace, r.recorded_at)]
            for r, v, p, e in zip(requests, previous, positions, [r.events[0] for r in requests], strict=True)
        ]
    found: list[AppendOutcome] = []
    taken = iter(positions)
    for request, version in zip(requests, previous, strict=True):
        if request.expected_version not in (ANY_VERSION, version):
            found.append(ConcurrencyError(request.stream_id, request.expected_version, version))
            continue
        found.append(stored_events(request, taken, version + 1))
    return found
