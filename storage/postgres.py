"""The PostgreSQL backend: psycopg 3 async, a connection pool, group commit.

The schema and its design (global order, lock order, the append-only
trigger) are described in ``sql/001_journal.sql``; how a one-request append
keeps the same guarantees in one statement, in ``pg_append``. Everything lives in the
first schema of the connection's ``search_path``.

This module holds :class:`PostgresRecorder` (appends, reads, snapshots,
namespaces, checkpoints) and the translation of psycopg errors. The
recorder inherits its work-index methods (claims, leases) from ``pg_work``;
the events row format both read is in ``pg_rows``; LISTEN is in ``pg_listen``.

Prepared statements: every query here is a constant string whose values
travel as parameters (a group commit travels as one array per column, see
``pg_append``, so a batch of any size uses the same text). psycopg prepares a query on the
server the second time a connection runs it (``prepare_threshold=1``), so
the hot paths are parsed and planned once per pooled connection (and on the
connection kept for appends). A pooler in transaction mode (PgBouncer < 1.21)
would need ``prepare_threshold=None``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import anyio
import psycopg
import psycopg_pool
from psycopg import pq
from psycopg.rows import TupleRow
from sagalog.storage import migrations
from sagalog.storage.notices import encode_notice
from sagalog.storage.pg_append import (
    APPEND,
    APPEND_LOCKED,
    Channels,
    Heads,
    append_locked_arguments,
    append_one_statement,
    append_outcomes,
    calls,
    one_outcome,
    register_dumpers,
)
from sagalog.storage.pg_listen import NoticeWatch, Waker
from sagalog.storage.pg_rows import EVENT_COLUMNS, to_event, utc
from sagalog.storage.pg_work import WorkIndexQueries
from sagalog.storage.recorder import AppendOutcome, AppendRequest
from sagalog.storage.records import (
    ANY_VERSION,
    Event,
    Snapshot,
    StreamFilter,
    StreamInfo,
)
from sagalog.storage.urls import redact_url

from sagalog.errors import (
    DatabaseError,
    IntegrityError,
    InvalidEventError,
    OperationalError,
    ProgrammingError,
    SagalogError,
)

Conn = psycopg.AsyncConnection[TupleRow]

READ_STREAM = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE namespace = %s AND stream_id = %s AND version >= %s
ORDER BY version LIMIT %s"""

READ_ALL = f"""
SELECT {EVENT_COLUMNS} FROM events
WHERE namespace = %s AND position > %s ORDER BY position LIMIT %s"""

# ORDER BY ... LIMIT 1 reads the last index entry whatever the planner's
# statistics say; max() scanned the whole stream on a never-analysed table.
STREAM_VERSION = """
SELECT coalesce((SELECT version FROM events WHERE namespace = %s AND stream_id = %s
                 ORDER BY version DESC LIMIT 1), 0)"""

LIST_STREAMS = """
SELECT s.stream_id, s.version, f.recorded_at, l.recorded_at, l.type
FROM (SELECT stream_id, max(version) AS version FROM events
      WHERE namespace = %(ns)s AND stream_id LIKE %(prefix)s ESCAPE '\\'
        AND stream_id LIKE %(contains)s ESCAPE '\\'
      GROUP BY stream_id) s
JOIN events f ON f.namespace = %(ns)s AND f.stream_id = s.stream_id AND f.version = 1
JOIN events l ON l.namespace = %(ns)s AND l.stream_id = s.stream_id AND l.version = s.version
WHERE (%(since)s::timestamptz IS NULL OR l.recorded_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR l.recorded_at < %(until)s)
ORDER BY l.recorded_at DESC, s.stream_id DESC
LIMIT %(limit)s OFFSET %(offset)s"""

TELL = "SELECT count(pg_notify(n, %s)) FROM unnest(%s::text[]) AS n"

HAS_AFTER = "SELECT EXISTS (SELECT 1 FROM events WHERE namespace = %s AND position > %s)"


def describe(url: str) -> str:
    """``url`` as shown in messages: no password, neither before the host nor as a parameter."""
    base, sep, query = url.partition("?")
    if sep:
        kept = [p for p in query.split("&") if not p.lower().startswith("password=")]
        base = f"{base}?{'&'.join(kept)}" if kept else base
    return redact_url(base)


def like_escape(text: str) -> str:
    """``text`` with LIKE wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PostgresRecorder(WorkIndexQueries):
    """Stores the journal in PostgreSQL. Open with :meth:`open`; close when done.

    The work-index methods (``claim``, ``claim_next``, ``renew``, ``release``,
    ``next_ready_at``, ``clear_work_index``, ``put_work``, ``work_index``)
    come from :class:`~sagalog.storage.pg_work.WorkIndexQueries`.
    """

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Conn], url: str, channel: str):
        self._pool = pool
        self.description = describe(url)
        self._channels = Channels.of(channel)
        self._waker = Waker(url)
        self._url = url
        # Appends go through one connection of their own while it is free:
        # the Journal's group committer sends one batch at a time, and a
        # borrow from the pool costs about 30 µs of client CPU per append
        # (measured; a tenth of a one-event append). Concurrent direct
        # callers of append_batch use the pool.
        self._appender: Conn | None = None
        # A binary raw cursor of the appender connection, reused by every
        # one-request append: a cursor per call costs an adapters map and a
        # Transformer (with its dumper lookups) each time, and re-running the
        # same query text on the same cursor keeps the Transformer.
        self._appender_cursor: psycopg.AsyncRawCursor[TupleRow] | None = None
        self._appender_lock = anyio.Lock(fast_acquire=True)
        self._heads = Heads()

    overlapping_batches = 2
    """Group commits the Journal may run at once (see storage/group_commit.py):
    the second goes out on a pooled connection and waits on the server for
    the events lock, so it starts the moment the first one commits."""

    @classmethod
    async def open(
        cls, url: str, migrate: bool = True, *, pool_size: int = 8, timeout: float = 10.0
    ) -> PostgresRecorder:
        """Connect to ``url``, migrating the schema first when ``migrate``.

        Args:
            url: a ``postgresql://`` URL (libpq parameters such as
                ``options=-csearch_path=myschema`` or ``connect_timeout`` allowed).
            migrate: apply pending migrations; otherwise refuse an unmigrated schema.
            pool_size: most connections to keep open.
            timeout: seconds to wait for a pooled connection.

        Raises:
            OperationalError: the server cannot be reached (the message names
                the URL without its password).
            ProgrammingError: the schema is not migrated and ``migrate`` is False.
        """
        where = describe(url)
        with translate_errors(where):
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                if migrate:
                    await migrations.migrate(conn)
                else:
                    await migrations.require_migrated(conn, where)
                schema = await (await conn.execute("SELECT current_schema()")).fetchone()
            # Channel names are database-wide: the schema keeps journals apart.
            digest = hashlib.sha1(str(schema and schema[0]).encode()).hexdigest()[:24]
            pool: psycopg_pool.AsyncConnectionPool[Conn] = psycopg_pool.AsyncConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                open=False,
                timeout=timeout,
                kwargs={"autocommit": True, "prepare_threshold": 1},
                configure=_configure,
                name="sagalog",
            )
            try:
                await pool.open(wait=True, timeout=timeout)
            except BaseException:
                await pool.close()
                raise
        return cls(pool, url, f"sagalog_{digest}")

    def _errors(self) -> AbstractContextManager[None]:
        return translate_errors(self.description)

    # -- appending -------------------------------------------------------------

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        # try/except rather than the translate_errors context manager: this
        # is the hot path, and the generator-based manager costs a few µs.
        try:
            if self._appender_lock.locked():
                async with self._pool.connection() as conn:
                    return await self._append(conn, requests, None)
            async with self._appender_lock:
                appender, cursor = self._appender, self._appender_cursor
                if appender is None or cursor is None:
                    appender = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, prepare_threshold=1
                    )
                    register_dumpers(appender.adapters)
                    cursor = psycopg.AsyncRawCursor(appender)
                    cursor.format = pq.Format.BINARY
                    self._appender, self._appender_cursor = appender, cursor
                try:
                    return await self._append(appender, requests, cursor)
                finally:
                    # A connection that failed, or was interrupted mid-query,
                    # is not reused (the pool does the same with its own).
                    status = appender.pgconn.transaction_status
                    if appender.broken or status != pq.TransactionStatus.IDLE:
                        self._appender = self._appender_cursor = None
                        with anyio.CancelScope(shield=True):
                            await appender.close()
        except psycopg.Error as exc:
            raise translated(exc, self.description) from exc

    async def _append(
        self,
        conn: Conn,
        requests: Sequence[AppendRequest],
        cursor: psycopg.AsyncRawCursor[TupleRow] | None,
    ) -> list[AppendOutcome]:
        if len(requests) == 1:
            return [await self._append_one(conn, requests[0], cursor)]
        outcomes: list[AppendOutcome] = []
        for chunk, arguments in calls(requests, self._channels, self._heads.versions):
            if len(chunk) == 1:
                outcomes.append(await self._append_one(conn, chunk[0], None))
                continue
            cur = conn.cursor(binary=True)
            await cur.execute(APPEND, arguments)
            row = await cur.fetchone()
            assert row is not None
            found = append_outcomes(chunk, row[0], row[1])
            self._heads.update(chunk, found)
            outcomes.extend(found)
        return outcomes

    async def _append_one(
        self,
        conn: Conn,
        request: AppendRequest,
        cur: psycopg.AsyncRawCursor[TupleRow] | None,
    ) -> AppendOutcome:
        """One request in one prepared statement (APPEND_ONE); after a stale read, APPEND_LOCKED.

        ``cur``: a binary raw cursor of ``conn`` to reuse, or None for a new one.
        """
        query, params = append_one_statement(request, self._channels, self._heads.versions)
        if cur is None:
            cur = psycopg.AsyncRawCursor(conn)
            cur.format = pq.Format.BINARY
        try:
            await cur.execute(query, params)
        except psycopg.errors.UniqueViolation as exc:
            # Another append to this stream committed after the statement's
            # snapshot was taken: nothing was written.
            if exc.diag.constraint_name != "events_stream_version":
                raise
        else:
            rows = await cur.fetchall()
            if rows:
                if request.expected_version == ANY_VERSION:
                    self._heads.reached(request, rows[-1][1])
                return one_outcome(request, rows)
        # Nothing written: decide again on fresh data, under the events lock.
        locked = conn.cursor(binary=True)
        await locked.execute(APPEND_LOCKED, append_locked_arguments(request, self._channels.main))
        row = await locked.fetchone()
        assert row is not None
        outcome = append_outcomes([request], [row[0]], row[1] or [])[0]
        self._heads.update([request], [outcome])
        if row[1]:
            # sagalog_append_one (001) notifies the main channel only, with no
            # payload: tell the others now, in a transaction of their own.
            told = self._channels.told([request])[1:]
            if told:
                payload = encode_notice(
                    [(request.namespace, request.stream_id, request.events)], [request.final]
                )
                await locked.execute(TELL, (payload, told))
        return outcome

    # -- reading ---------------------------------------------------------------

    async def _events(self, query: str, params: Sequence[Any]) -> list[Event]:
        with self._errors():
            async with self._pool.connection() as conn:
                cur = conn.cursor(binary=True)
                await cur.execute(query, params)
                return [to_event(row) for row in await cur.fetchall()]

    async def _one(self, query: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        with self._errors():
            async with self._pool.connection() as conn:
                row = await (await conn.execute(query, params)).fetchone()
                return None if row is None else row[0]

    async def _all(self, query: str, params: Sequence[Any] | dict[str, Any]) -> list[TupleRow]:
        with self._errors():
            async with self._pool.connection() as conn:
                return await (await conn.execute(query, params)).fetchall()

    async def read_stream(
        self, namespace: str, stream_id: str, from_version: int, limit: int | None
    ) -> list[Event]:
        return await self._events(READ_STREAM, (namespace, stream_id, from_version, limit))

    async def read_all(self, namespace: str, after_position: int, limit: int) -> list[Event]:
        return await self._events(READ_ALL, (namespace, after_position, limit))

    async def stream_version(self, namespace: str, stream_id: str) -> int:
        return int(await self._one(STREAM_VERSION, (namespace, stream_id)))

    async def list_streams(self, namespace: str, query: StreamFilter) -> list[StreamInfo]:
        params = {
            "ns": namespace,
            "prefix": like_escape(query.prefix or "") + "%",
            "contains": "%" + like_escape(query.contains or "") + "%",
            "since": query.since,
            "until": query.until,
            "limit": query.limit,
            "offset": query.offset,
        }
        return [
            StreamInfo(
                stream_id=stream_id,
                version=version,
                namespace=namespace,
                created_at=utc(created),
                updated_at=utc(updated),
                last_type=last_type,
            )
            for stream_id, version, created, updated, last_type in await self._all(
                LIST_STREAMS, params
            )
        ]

    async def wait_for_new(self, namespace: str, after_position: int, timeout: float) -> bool:
        if timeout <= 0:
            return bool(await self._one(HAS_AFTER, (namespace, after_position)))
        await self._waker.listen(self._channels.main)
        with anyio.move_on_after(timeout):  # the loop's first look is the only one needed
            while True:
                seen = self._waker.generation()
                if await self._one(HAS_AFTER, (namespace, after_position)):
                    return True
                await self._waker.wait(seen)
        return False

    # -- snapshots, namespaces, checkpoints --------------------------------------

    async def save_snapshot(self, namespace: str, snapshot: Snapshot) -> None:
        await self._one(
            "INSERT INTO snapshots (namespace, stream_id, version, schema, state)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (namespace, stream_id, schema, version)"
            " DO UPDATE SET state = excluded.state RETURNING 1",
            (namespace, snapshot.stream_id, snapshot.version, snapshot.schema, snapshot.state),
        )

    async def latest_snapshot(
        self, namespace: str, stream_id: str, max_version: int | None, schema: int
    ) -> Snapshot | None:
        rows = await self._all(
            "SELECT version, state FROM snapshots WHERE namespace = %s AND stream_id = %s"
            " AND schema = %s AND (%s::int IS NULL OR version <= %s)"
            " ORDER BY version DESC LIMIT 1",
            (namespace, stream_id, schema, max_version, max_version),
        )
        if not rows:
            return None
        return Snapshot(stream_id, rows[0][0], bytes(rows[0][1]), schema)

    async def create_namespace(self, name: str) -> None:
        await self._all(
            "INSERT INTO namespaces (name) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1", (name,)
        )

    async def list_namespaces(self) -> list[str]:
        return [row[0] for row in await self._all("SELECT name FROM namespaces ORDER BY name", ())]

    async def save_checkpoint(self, namespace: str, name: str, position: int) -> None:
        await self._one(
            "INSERT INTO checkpoints (namespace, name, position) VALUES (%s, %s, %s)"
            " ON CONFLICT (namespace, name) DO UPDATE SET position = excluded.position RETURNING 1",
            (namespace, name, position),
        )

    async def load_checkpoint(self, namespace: str, name: str) -> int:
        found = await self._one(
            "SELECT position FROM checkpoints WHERE namespace = %s AND name = %s", (namespace, name)
        )
        return 0 if found is None else int(found)

    async def close(self) -> None:
        await self._waker.close()
        async with self._appender_lock:
            if self._appender is not None:
                await self._appender.close()
                self._appender = self._appender_cursor = None
        await self._pool.close()

    async def check(self) -> None:
        """Readiness: borrow a pooled connection and look for pending migrations."""
        with self._errors():
            async with self._pool.connection() as conn:
                todo = await migrations.pending(conn)
        if todo:
            labels = ", ".join(m.label for m in todo)
            raise ProgrammingError(
                f"the database at {self.description} is not migrated (missing {labels}): "
                "run `sagalog admin migrate --db URL`"
            )

    # -- rebuilding derived data (sagalog admin rebuild) ------------------------

    async def clear_snapshots(self, namespace: str) -> None:
        await self._all("DELETE FROM snapshots WHERE namespace = %s RETURNING 1", (namespace,))

    async def read_streams(self, namespace: str, stream_ids: Sequence[str]) -> list[Event]:
        """Every event of several streams in one query, by stream then version (worker prefetch)."""
        query = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE namespace = %s AND stream_id = ANY(%s)"
            " ORDER BY stream_id, version"
        )
        return await self._events(query, (namespace, list(stream_ids)))

    async def watch(
        self, namespace: str, *, work: bool = False, final: bool = False, handed_to: str | None = None
    ) -> NoticeWatch:
        """A watch of ``namespace`` that reads the notifications' payloads (see ``Journal.watch``)."""
        channels = self._channels
        channel = channels.final if final else channels.work if work else channels.main
        await self._waker.listen(channel)
        tickets = None if handed_to is None else self.ticket_channel(handed_to)
        if tickets is not None:
            await self._waker.listen(tickets)
        return NoticeWatch(self._waker, namespace, channel, tickets)

    def ticket_channel(self, owner: str) -> str:
        """The channel a start that took ``owner``'s ticket notifies (NOTIFY names are short)."""
        return f"{self._channels.work}_{hashlib.sha1(owner.encode()).hexdigest()[:12]}"


async def _configure(conn: Conn) -> None:
    # Pooled connections append too (when the appender connection is busy).
    register_dumpers(conn.adapters)


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Turn psycopg errors into :mod:`sagalog.errors`, naming ``where`` (no password)."""
    try:
        yield
    except psycopg.Error as exc:
        raise translated(exc, where) from exc


def translated(exc: psycopg.Error, where: str) -> SagalogError:
    """The :mod:`sagalog.errors` exception for a psycopg error, naming ``where`` (no password)."""
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return OperationalError(f"PostgreSQL at {where} failed: {_first_line(exc)}")
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return ProgrammingError(
            f"the database at {where} is not migrated ({_first_line(exc)}): "
            "run `sagalog admin migrate --db URL` with this database's URL"
        )
    if isinstance(exc, psycopg.DataError):
        return InvalidEventError(f"PostgreSQL at {where} refused a value: {_first_line(exc)}")
    if isinstance(exc, psycopg.IntegrityError):
        return IntegrityError(f"PostgreSQL at {where} refused a write: {_first_line(exc)}")
    return DatabaseError(f"PostgreSQL at {where}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
