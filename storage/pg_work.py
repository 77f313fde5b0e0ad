"""The PostgreSQL work index: claims, leases, and the rebuild's direct writes.

The ``work_index`` table (``sql/001_journal.sql``) holds a row for each
stream with work to do from a given time (``ready_at``), and its lease.
Claims take rows with ``FOR UPDATE SKIP LOCKED``, so concurrent workers
never wait for each other or get the same stream, and an expired lease is
claimable again. An append sets or removes its stream's row itself, in the
transaction of its events (see :mod:`sagalog.storage.pg_append`); the
queries here are the ones a worker and ``sagalog admin rebuild`` run.

:class:`WorkIndexQueries` holds them as methods of
:class:`~sagalog.storage.postgres.PostgresRecorder`, which inherits it and
provides the connection pool and query helpers it declares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import TupleRow
from sagalog.storage.pg_rows import EVENT_COLUMNS, to_event, utc
from sagalog.storage.records import Claim, Event, WorkItem

Params = Sequence[Any] | dict[str, Any]

# The claim of `claim` (below), with each claimed stream's first events read
# in the same statement (a worker replays what it claimed without another
# round trip), and one more row, with a NULL stream id, whose second column
# is the earliest ready_at still in the future: how long the worker may
# sleep. The caller orders the rows.
CLAIM_NEXT = f"""
WITH ready AS (
    SELECT stream_id, lease_owner IS NOT NULL AS taken_over FROM work_index
    WHERE namespace = %(ns)s AND ready_at <= %(now)s
      AND (lease_owner IS NULL OR lease_expires_at <= %(now)s)
    ORDER BY ready_at, stream_id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE work_index w SET lease_owner = %(owner)s, lease_expires_at = %(until)s
    FROM ready WHERE w.namespace = %(ns)s AND w.stream_id = ready.stream_id
    RETURNING w.stream_id, w.ready_at, ready.taken_over)
(SELECT c.stream_id, c.ready_at, c.taken_over, {", ".join("e." + c for c in EVENT_COLUMNS.split(", "))}
   FROM claimed c
   LEFT JOIN LATERAL (
       SELECT {EVENT_COLUMNS} FROM events
        WHERE namespace = %(ns)s AND stream_id = c.stream_id
        ORDER BY version LIMIT %(read)s) e ON true)
UNION ALL
SELECT NULL, (SELECT min(ready_at) FROM work_index WHERE namespace = %(ns)s AND ready_at > %(now)s),
       NULL, {", ".join(["NULL"] * 8)}"""


def _version(event: Event) -> int:
    return event.version


class WorkIndexQueries:
    """The work-index methods of :class:`~sagalog.storage.postgres.PostgresRecorder`.

    A mixin: its queries go through the pool and helpers declared below,
    which the recorder provides.
    """

    # Provided by PostgresRecorder (storage/postgres.py).
    _pool: psycopg_pool.AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]
    _errors: Callable[[], AbstractContextManager[None]]
    _one: Callable[[str, Params], Awaitable[Any]]
    _all: Callable[[str, Params], Awaitable[list[TupleRow]]]
    ticket_channel: Callable[[str], str]

    async def claim(
        self, namespace: str, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claim]:
        rows = await self._all(
            """
            WITH ready AS (
                SELECT stream_id, lease_owner IS NOT NULL AS taken_over FROM work_index
                WHERE namespace = %(ns)s AND ready_at <= %(now)s
                  AND (lease_owner IS NULL OR lease_expires_at <= %(now)s)
                ORDER BY ready_at, stream_id LIMIT %(limit)s
                FOR UPDATE SKIP LOCKED)
            UPDATE work_index w SET lease_owner = %(owner)s, lease_expires_at = %(until)s
            FROM ready WHERE w.namespace = %(ns)s AND w.stream_id = ready.stream_id
            RETURNING w.stream_id, w.ready_at, ready.taken_over""",
            {"ns": namespace, "now": now, "limit": limit, "owner": owner, "until": lease_until},
        )
        claims = [
            Claim(stream_id, utc(ready), owner, lease_until, taken_over=taken_over)
            for stream_id, ready, taken_over in rows
        ]
        return sorted(claims, key=lambda c: (c.ready_at, c.stream_id))

    async def claim_next(
        self, namespace: str, owner: str, now: datetime, lease_until: datetime, limit: int, read: int
    ) -> tuple[list[Claim], datetime | None]:
        """:meth:`claim`, the first ``read`` events of each claimed stream, and the next
        ``ready_at`` after ``now`` in the namespace (None: none), in one query."""
        params = {"ns": namespace, "now": now, "limit": limit, "owner": owner, "until": lease_until,
                  "read": read}  # fmt: skip
        with self._errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(CLAIM_NEXT, params)
                rows = await cur.fetchall()
        next_due: datetime | None = None
        claims: dict[str, tuple[datetime, bool, list[Event]]] = {}
        for stream_id, ready, taken_over, *event in rows:
            if stream_id is None:  # the row that says when the next stream is due
                next_due = ready
                continue
            _, _, events = claims.setdefault(stream_id, (utc(ready), taken_over, []))
            if event[0] is not None:
                events.append(to_event(event))
        found = [
            Claim(stream_id, ready, owner, lease_until,
                  tuple(sorted(events, key=_version)) if read > 0 else None, taken_over)
            for stream_id, (ready, taken_over, events) in claims.items()
        ]  # fmt: skip
        found.sort(key=lambda c: (c.ready_at, c.stream_id))
        return found, None if next_due is None else utc(next_due)

    async def renew(
        self, namespace: str, owner: str, stream_ids: Sequence[str], lease_until: datetime
    ) -> list[str]:
        rows = await self._all(
            """
            WITH held AS (
                SELECT stream_id FROM work_index
                WHERE namespace = %(ns)s AND lease_owner = %(owner)s AND stream_id = ANY(%(ids)s)
                ORDER BY stream_id FOR UPDATE)
            UPDATE work_index w SET lease_expires_at = %(until)s
            FROM held WHERE w.namespace = %(ns)s AND w.stream_id = held.stream_id
            RETURNING w.stream_id""",
            {"ns": namespace, "owner": owner, "ids": list(stream_ids), "until": lease_until},
        )
        renewed = {row[0] for row in rows}
        return [s for s in dict.fromkeys(stream_ids) if s in renewed]

    async def offer(self, namespace: str, owner: str, slots: int, lease_until: datetime) -> None:
        """Leave (or renew) ``slots`` tickets of ``owner``: each of the next starts appended
        alone takes one (see ``sql/004_tickets.sql``); 0 renews those left. Written without
        waiting for the flush: a ticket lost to a crash only costs a claim."""
        if slots == 0:
            await self._all(
                """
                WITH quick AS (SELECT set_config('synchronous_commit', 'off', true))
                UPDATE tickets SET lease_expires_at = %(until)s FROM quick
                 WHERE namespace = %(ns)s AND owner = %(owner)s
                RETURNING 1""",
                {"ns": namespace, "owner": owner, "until": lease_until},
            )
            return
        await self._all(
            """
            WITH quick AS (SELECT set_config('synchronous_commit', 'off', true))
            INSERT INTO tickets (namespace, owner, slot, channel, lease_expires_at)
            SELECT %(ns)s, %(owner)s, slot, %(channel)s, %(until)s
              FROM quick, generate_series(1, %(slots)s) AS slot
            ON CONFLICT (namespace, owner, slot) DO UPDATE
               SET channel = excluded.channel, lease_expires_at = excluded.lease_expires_at
            RETURNING 1""",
            {"ns": namespace, "owner": owner, "slots": slots, "channel": self.ticket_channel(owner),
             "until": lease_until},
        )

    async def withdraw(self, namespace: str, owner: str) -> None:
        """Delete the tickets of ``owner`` that no start took."""
        await self._all(
            "DELETE FROM tickets WHERE namespace = %(ns)s AND owner = %(owner)s RETURNING 1",
            {"ns": namespace, "owner": owner},
        )

    async def release(self, namespace: str, owner: str, stream_ids: Sequence[str]) -> None:
        await self._all(
            """
            WITH held AS (
                SELECT stream_id FROM work_index
                WHERE namespace = %(ns)s AND lease_owner = %(owner)s AND stream_id = ANY(%(ids)s)
                ORDER BY stream_id FOR UPDATE)
            UPDATE work_index w SET lease_owner = NULL, lease_expires_at = NULL
            FROM held WHERE w.namespace = %(ns)s AND w.stream_id = held.stream_id
            RETURNING 1""",
            {"ns": namespace, "owner": owner, "ids": list(stream_ids)},
        )

    async def next_ready_at(self, namespace: str, after: datetime | None = None) -> datetime | None:
        if after is None:
            found = await self._one(
                "SELECT min(ready_at) FROM work_index WHERE namespace = %s", (namespace,)
            )
        else:
            found = await self._one(
                "SELECT min(ready_at) FROM work_index WHERE namespace = %s AND ready_at > %s",
                (namespace, after),
            )
        return None if found is None else utc(found)

    async def clear_work_index(self, namespace: str) -> None:
        await self._all("DELETE FROM work_index WHERE namespace = %s RETURNING 1", (namespace,))

    async def put_work(self, namespace: str, stream_id: str, ready_at: datetime | None) -> None:
        if ready_at is None:
            await self._all(
                "DELETE FROM work_index WHERE namespace = %s AND stream_id = %s RETURNING 1",
                (namespace, stream_id),
            )
            return
        # Same upsert as an append's Schedule: an existing row keeps its lease.
        await self._all(
            "INSERT INTO work_index (namespace, stream_id, ready_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (namespace, stream_id) DO UPDATE SET ready_at = excluded.ready_at"
            " RETURNING 1",
            (namespace, stream_id, ready_at),
        )

    async def work_index(self, namespace: str) -> list[WorkItem]:
        rows = await self._all(
            "SELECT stream_id, ready_at, lease_owner, lease_expires_at FROM work_index"
            " WHERE namespace = %s ORDER BY stream_id",
            (namespace,),
        )
        return [
            WorkItem(sid, utc(ready), owner, None if expires is None else utc(expires))
            for sid, ready, owner, expires in rows
        ]
