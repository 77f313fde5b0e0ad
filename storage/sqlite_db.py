"""The blocking half of the SQLite backend: SQL on one connection.

Nothing here is async. :class:`SqliteDatabase` has one method per recorder
call, run in a worker thread by :class:`~sagalog.storage.sqlite.SqliteRecorder`
(one thread at a time); the module functions open a journal file and bring
its schema up to date (:func:`connect_file`), check it afresh for readiness
(:func:`check_file`), convert times to the microseconds the file stores, and
turn ``sqlite3`` errors into :mod:`sagalog.errors` (:func:`translate`). Every
write takes the write lock up front with ``BEGIN IMMEDIATE`` so a transaction
never fails half-way on a lock upgrade. The schema and its reasoning are in
``sql/sqlite.sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from sagalog.storage.recorder import AppendOutcome, AppendRequest, stored_events
from sagalog.storage.records import (
    ANY_VERSION,
    Claim,
    Event,
    Snapshot,
    StreamFilter,
    StreamInfo,
    WorkItem,
)

from sagalog.errors import (
    ConcurrencyError,
    DatabaseError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)

SCHEMA_VERSION = 1
"""The schema this module writes (kept in ``PRAGMA user_version``)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TRANSIENT = ("locked", "busy", "disk i/o error")
_EVENT_COLUMNS = "position, namespace, stream_id, version, type, payload, metadata, recorded_at"
_metadata_decoder = msgspec.json.Decoder(dict[str, str])
# The MAX subquery per id, not MAX ... GROUP BY: SQLite answers the former
# with one seek to the end of the stream's index range, the latter by
# walking all of it.
_VERSIONS = (
    "SELECT ids.value, (SELECT MAX(version) FROM events"
    " WHERE namespace = ? AND stream_id = ids.value) FROM json_each(?) AS ids"
)


def to_micros(when: datetime) -> int:
    """A datetime as microseconds since the epoch (naive datetimes are taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    """Microseconds since the epoch back to a timezone-aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=value)


def _stamp(when: datetime) -> tuple[int, datetime]:
    """What the file stores for ``when`` and the datetime a reader gets back from it."""
    micros = to_micros(when)
    return micros, from_micros(micros)


def translate(exc: sqlite3.Error, path: str) -> DatabaseError:
    """The sagalog error for a ``sqlite3`` error, with a message naming the file.

    Only lock contention and I/O failures are ``OperationalError`` (retried);
    anything else would fail the same way again.
    """
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.OperationalError) and any(t in lowered for t in _TRANSIENT):
        return OperationalError(f"SQLite journal {path!r} is unavailable: {text}")
    if "not a database" in lowered:
        return DatabaseError(f"{path!r} is not a SQLite database ({text})")
    if "malformed" in lowered:
        return DatabaseError(f"SQLite journal {path!r} is corrupt ({text})")
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(f"SQLite journal {path!r} refused a write: {text}")
    return DatabaseError(f"SQLite journal {path!r}: {text}")


def _event(row: tuple[Any, ...]) -> Event:
    return Event(
        position=row[0],
        namespace=row[1],
        stream_id=row[2],
        version=row[3],
        type=row[4],
        payload=row[5],
        metadata=_metadata_decoder.decode(row[6]),
        recorded_at=from_micros(row[7]),
    )


def _row(event: Event, stamp: int) -> tuple[Any, ...]:
    metadata = msgspec.json.encode(event.metadata).decode()
    return (
        event.position,
        event.namespace,
        event.stream_id,
        event.version,
        event.type,
        event.payload,
        metadata,
        stamp,
    )


def connect_file(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Open (creating if needed) a journal file and bring its schema up to date.

    Runs in a worker thread. Raises sqlite3 errors (translated by the caller)
    or DatabaseError for a path that cannot be a database file.
    """
    if path != ":memory:":
        file = Path(path)
        if file.is_dir():
            raise DatabaseError(f"cannot open SQLite journal {path!r}: it is a directory")
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the folder of SQLite journal {path!r}: {exc}") from exc
    # isolation_level=None: no implicit transactions; this module issues
    # BEGIN IMMEDIATE / COMMIT itself.
    conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on a
        # power cut, and callers act on an acknowledged append (a worker runs
        # the next step once its decision is recorded). Group commit pays the
        # fsync once per batch instead of once per append.
        conn.execute("PRAGMA synchronous=FULL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise ProgrammingError(
            f"SQLite journal {path!r} has schema version {found}, newer than this "
            f"sagalog understands ({SCHEMA_VERSION}): upgrade sagalog"
        )
    if found == SCHEMA_VERSION:
        return
    schema = resources.files("sagalog.storage").joinpath("sql/sqlite.sql").read_text()
    # One transaction, and every statement is IF NOT EXISTS: two processes
    # opening a new file at once both run it, one after the other, harmlessly.
    try:
        conn.executescript(f"BEGIN IMMEDIATE;\n{schema}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def check_file(path: str) -> None:
    """Readiness: open ``path`` afresh (never creating it) and read its schema version.

    Runs in a worker thread, on a connection of its own: the journal's own
    connection keeps working on a file that was deleted or moved away, while
    every other process (and the next start) would find nothing there.
    """
    try:
        uri = f"file:{quote(Path(path).as_posix())}?mode=rw"  # mode=rw: never create it
        conn = sqlite3.connect(uri, uri=True, timeout=1.0)
    except sqlite3.Error as exc:
        raise OperationalError(f"SQLite journal {path!r} cannot be opened: {exc}") from exc
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise OperationalError(f"SQLite journal {path!r} cannot be read: {exc}") from exc
    finally:
        conn.close()
    if found != SCHEMA_VERSION:
        raise ProgrammingError(
            f"SQLite journal {path!r} has schema version {found}; this sagalog "
            f"runs version {SCHEMA_VERSION}"
        )


class SqliteDatabase:
    """The blocking half: SQL on one connection, called from one thread at a time.

    Its methods raise ``sqlite3`` errors; the caller translates them (:func:`translate`).
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock first (waiting up to busy_timeout), so
        # the reads inside the transaction see the latest commit and nothing
        # can slip in between a version check and the insert it guards.
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _version(self, namespace: str, stream_id: str) -> int:
        row = self.conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE namespace = ? AND stream_id = ?",
            (namespace, stream_id),
        ).fetchone()
        return int(row[0])

    def _versions(self, requests: Sequence[AppendRequest]) -> dict[tuple[str, str], int]:
        """The current version of every stream the batch writes to, in one query a namespace.

        One statement per request cost about 20 µs each, most of a batch's
        Python time; the JSON array lets one prepared statement take any
        number of ids. A lone request reads its one version directly (no JSON).
        """
        if len(requests) == 1:
            key = (requests[0].namespace, requests[0].stream_id)
            return {key: self._version(*key)}
        by_namespace: dict[str, set[str]] = {}
        for request in requests:
            by_namespace.setdefault(request.namespace, set()).add(request.stream_id)
        versions: dict[tuple[str, str], int] = {}
        for namespace, ids in by_namespace.items():
            rows = self.conn.execute(_VERSIONS, (namespace, msgspec.json.encode(list(ids)))).fetchall()
            versions.update(((namespace, stream_id), version or 0) for stream_id, version in rows)
        return versions

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        rows: list[tuple[Any, ...]] = []
        stamps: dict[datetime, tuple[int, datetime]] = {}
        with self._write() as conn:
            # Positions are allocated here, under the write lock, so they are
            # dense and commit in order: a reader never sees N+1 before N.
            position = int(conn.execute("SELECT COALESCE(MAX(position), 0) FROM events").fetchone()[0])
            # Kept up to date as the batch goes: a batch may hold two requests
            # for the same stream, and the second must see the first's events,
            # which are not inserted yet.
            versions = self._versions(requests)
            for request in requests:
                key = (request.namespace, request.stream_id)
                current = versions[key]
                if request.expected_version not in (ANY_VERSION, current):
                    outcomes.append(ConcurrencyError(request.stream_id, request.expected_version, current))
                    continue
                # Requests of one batch usually share their clock reading.
                stamp, recorded_at = stamps.get(request.recorded_at) or stamps.setdefault(
                    request.recorded_at, _stamp(request.recorded_at)
                )
                count = len(request.events)
                taken = range(position + 1, position + count + 1)
                written = stored_events(request, taken, current + 1, recorded_at)
                rows += [_row(event, stamp) for event in written]
                position += count
                current += count
                versions[key] = current
                outcomes.append(written)
                if request.schedule is not None:
                    self._schedule(request.namespace, request.stream_id, request.schedule.ready_at)
            conn.executemany(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return outcomes

    def _schedule(self, namespace: str, stream_id: str, ready_at: datetime | None) -> None:
        if ready_at is None:
            self.conn.execute(
                "DELETE FROM work WHERE namespace = ? AND stream_id = ?", (namespace, stream_id)
            )
            return
        # A new ready_at keeps the current lease: the worker holding the
        # stream is usually the one that appended.
        self.conn.execute(
            "INSERT INTO work (namespace, stream_id, ready_at) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, stream_id) DO UPDATE SET ready_at = excluded.ready_at",
            (namespace, stream_id, to_micros(ready_at)),
        )

    def read_stream(
        self, namespace: str, stream_id: str, from_version: int, limit: int | None
    ) -> list[Event]:
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE namespace = ? AND stream_id = ? "
            "AND version >= ? ORDER BY version LIMIT ?",
            (namespace, stream_id, from_version, -1 if limit is None else limit),
        )
        return [_event(row) for row in rows]

    def read_all(self, namespace: str, after_position: int, limit: int) -> list[Event]:
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE namespace = ? AND position > ? "
            "ORDER BY position LIMIT ?",
            (namespace, after_position, limit),
        )
        return [_event(row) for row in rows]

    def has_after(self, namespace: str, after_position: int) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM events WHERE namespace = ? AND position > ? LIMIT 1",
            (namespace, after_position),
        ).fetchone()
        return row is not None

    def stream_version(self, namespace: str, stream_id: str) -> int:
        return self._version(namespace, stream_id)

    def list_streams(self, namespace: str, query: StreamFilter) -> list[StreamInfo]:
        params = {
            "ns": namespace,
            "prefix": query.prefix,
            "contains": query.contains,
            "since": None if query.since is None else to_micros(query.since),
            "until": None if query.until is None else to_micros(query.until),
            "limit": query.limit,
            "offset": query.offset,
        }
        # Computed from events (the one source of truth) rather than kept in
        # a summary table: listing is an operator's tool and a scan of one
        # namespace's index is cheap next to an extra write on every append.
        # substr/instr rather than LIKE: LIKE ignores ASCII case and treats
        # '_' in stream ids as a wildcard.
        rows = self.conn.execute(
            """
            WITH last AS (
                SELECT stream_id, MAX(version) AS version FROM events
                WHERE namespace = :ns
                  AND (:prefix IS NULL OR substr(stream_id, 1, length(:prefix)) = :prefix)
                  AND (:contains IS NULL OR instr(stream_id, :contains) > 0)
                GROUP BY stream_id
            )
            SELECT e.stream_id, e.version, f.recorded_at, e.recorded_at, e.type
            FROM last
            JOIN events AS e ON e.namespace = :ns AND e.stream_id = last.stream_id
                            AND e.version = last.version
            JOIN events AS f ON f.namespace = :ns AND f.stream_id = last.stream_id AND f.version = 1
            WHERE (:since IS NULL OR e.recorded_at >= :since)
              AND (:until IS NULL OR e.recorded_at < :until)
            ORDER BY e.recorded_at DESC, e.stream_id DESC
            LIMIT :limit OFFSET :offset
            """,
            params,
        )
        return [
            StreamInfo(row[0], row[1], namespace, from_micros(row[2]), from_micros(row[3]), row[4])
            for row in rows
        ]

    def save_snapshot(self, namespace: str, snapshot: Snapshot) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (namespace, stream_id, schema, version, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (namespace, snapshot.stream_id, snapshot.schema, snapshot.version, snapshot.state),
            )

    def latest_snapshot(
        self, namespace: str, stream_id: str, max_version: int | None, schema: int
    ) -> Snapshot | None:
        row = self.conn.execute(
            "SELECT version, state FROM snapshots WHERE namespace = ? AND stream_id = ? "
            "AND schema = ? AND (? IS NULL OR version <= ?) ORDER BY version DESC LIMIT 1",
            (namespace, stream_id, schema, max_version, max_version),
        ).fetchone()
        return None if row is None else Snapshot(stream_id, row[0], row[1], schema)

    def create_namespace(self, name: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO namespaces (name) VALUES (?)", (name,))

    def list_namespaces(self) -> list[str]:
        return [row[0] for row in self.conn.execute("SELECT name FROM namespaces ORDER BY name")]

    def save_checkpoint(self, namespace: str, name: str, position: int) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (namespace, name, position) VALUES (?, ?, ?)",
                (namespace, name, position),
            )

    def load_checkpoint(self, namespace: str, name: str) -> int:
        row = self.conn.execute(
            "SELECT position FROM checkpoints WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def claim(
        self, namespace: str, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claim]:
        # SQLite has no SKIP LOCKED; BEGIN IMMEDIATE makes claimers (in any
        # process) take turns, so a row is never handed to two owners.
        stamp, until = to_micros(now), to_micros(lease_until)
        with self._write() as conn:
            rows = conn.execute(
                "SELECT stream_id, ready_at, lease_owner IS NOT NULL FROM work "
                "WHERE namespace = ? AND ready_at <= ? "
                "AND (lease_owner IS NULL OR lease_expires_at <= ?) "
                "ORDER BY ready_at, stream_id LIMIT ?",
                (namespace, stamp, stamp, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE work SET lease_owner = ?, lease_expires_at = ? WHERE namespace = ? AND stream_id = ?",
                [(owner, until, namespace, row[0]) for row in rows],
            )
        expires = from_micros(until)
        return [Claim(row[0], from_micros(row[1]), owner, expires, taken_over=bool(row[2])) for row in rows]

    def renew(
        self, namespace: str, owner: str, stream_ids: Sequence[str], lease_until: datetime
    ) -> list[str]:
        held = []
        with self._write() as conn:
            for stream_id in stream_ids:
                cursor = conn.execute(
                    "UPDATE work SET lease_expires_at = ? "
                    "WHERE namespace = ? AND stream_id = ? AND lease_owner = ?",
                    (to_micros(lease_until), namespace, stream_id, owner),
                )
                if cursor.rowcount:
                    held.append(stream_id)
        return held

    def release(self, namespace: str, owner: str, stream_ids: Sequence[str]) -> None:
        with self._write() as conn:
            conn.executemany(
                "UPDATE work SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE namespace = ? AND stream_id = ? AND lease_owner = ?",
                [(namespace, stream_id, owner) for stream_id in stream_ids],
            )

    def next_ready_at(self, namespace: str, after: datetime | None = None) -> datetime | None:
        if after is None:
            row = self.conn.execute("SELECT MIN(ready_at) FROM work WHERE namespace = ?", (namespace,))
        else:
            row = self.conn.execute(
                "SELECT MIN(ready_at) FROM work WHERE namespace = ? AND ready_at > ?",
                (namespace, to_micros(after)),
            )
        found = row.fetchone()[0]
        return None if found is None else from_micros(found)

    def clear_work_index(self, namespace: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM work WHERE namespace = ?", (namespace,))

    def clear_snapshots(self, namespace: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM snapshots WHERE namespace = ?", (namespace,))

    def put_work(self, namespace: str, stream_id: str, ready_at: datetime | None) -> None:
        with self._write():
            self._schedule(namespace, stream_id, ready_at)

    def work_index(self, namespace: str) -> list[WorkItem]:
        rows = self.conn.execute(
            "SELECT stream_id, ready_at, lease_owner, lease_expires_at FROM work "
            "WHERE namespace = ? ORDER BY stream_id",
            (namespace,),
        )
        return [
            WorkItem(row[0], from_micros(row[1]), row[2], None if row[3] is None else from_micros(row[3]))
            for row in rows
        ]
