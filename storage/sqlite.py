"""The SQLite backend: the embedded default, one file in WAL mode.

This module holds the async shell, :class:`SqliteRecorder`. The blocking
half (the SQL it runs, opening and migrating the file, translating
``sqlite3`` errors) is :mod:`sagalog.storage.sqlite_db`.

The stdlib ``sqlite3`` module blocks, so every call runs in a worker thread
(``anyio.to_thread.run_sync``) behind a ``CapacityLimiter(1)``: one
connection, used by one thread at a time, and the event loop never waits on
the disk. Other processes may open the same file; SQLite's own locks (and
``busy_timeout``) serialise the writers, and every write takes the write lock
up front with ``BEGIN IMMEDIATE`` so a transaction never fails half-way on a
lock upgrade. The schema and its reasoning are in ``sql/sqlite.sql``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
from sagalog.storage.recorder import AppendOutcome, AppendRequest
from sagalog.storage.records import (
    Claim,
    Event,
    Snapshot,
    StreamFilter,
    StreamInfo,
    WorkItem,
)
from sagalog.storage.sqlite_db import SqliteDatabase, check_file, connect_file, translate

from sagalog.errors import ConcurrencyError, ProgrammingError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

POLL_SECONDS = 0.05
"""How often :meth:`SqliteRecorder.wait_for_new` looks for other processes' appends."""


class SqliteRecorder:
    """A journal in one SQLite file (WAL mode), safe to share between processes.

    Open it with :meth:`open`, usually through ``connect("sqlite:///path.db")``.
    """

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self.description = f"sqlite:///{path}"
        self._db = SqliteDatabase(conn)
        self._closed = False
        # One connection, so one thread at a time may use it. The limiter
        # queues this event loop's callers; the lock is what guarantees it.
        # An asyncio task cancelled natively (task.cancel(), asyncio.wait_for)
        # stops waiting for its worker thread and releases the limiter while
        # that thread is still inside its transaction; without the lock the
        # next call ran a second transaction on the same connection at once
        # (BEGIN refused, or the other's transaction rolled back under it, and
        # both inserting the same positions: "UNIQUE constraint failed:
        # events.position").
        self._limiter = anyio.CapacityLimiter(1)
        self._lock = threading.Lock()
        # Wakes this process's waiters at once; other processes' appends are
        # found by polling every POLL_SECONDS.
        self._appended = anyio.Event()

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout: float = 5.0) -> SqliteRecorder:
        """Open or create the journal file at ``path`` (and its parent folders).

        Args:
            path: the database file.
            busy_timeout: seconds to wait for another process's write lock
                before failing with ``OperationalError``.

        Raises:
            DatabaseError: ``path`` is a folder or a file that is not a SQLite database.
            ProgrammingError: the file was written by a newer sagalog.
        """
        name = str(path)
        try:
            conn = await anyio.to_thread.run_sync(connect_file, name, busy_timeout)
        except sqlite3.Error as exc:
            raise translate(exc, name) from exc
        return cls(name, conn)

    async def _call(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        if self._closed:
            raise ProgrammingError(f"SQLite journal {self.path!r} is closed")
        try:
            return await anyio.to_thread.run_sync(self._locked, func, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc

    def _locked(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        # In the worker thread: wait for a thread that was abandoned mid-call.
        with self._lock:
            return func(*args)

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        """Write every request whose expected version holds, in one transaction."""
        outcomes = await self._call(self._db.append_batch, requests)
        if any(not isinstance(o, ConcurrencyError) for o in outcomes):
            self._appended.set()
            self._appended = anyio.Event()
        return outcomes

    async def read_stream(
        self, namespace: str, stream_id: str, from_version: int, limit: int | None
    ) -> list[Event]:
        """Events of one stream with version >= ``from_version``, in version order."""
        return await self._call(self._db.read_stream, namespace, stream_id, from_version, limit)

    async def read_all(self, namespace: str, after_position: int, limit: int) -> list[Event]:
        """Events with position > ``after_position`` in global order."""
        return await self._call(self._db.read_all, namespace, after_position, limit)

    async def stream_version(self, namespace: str, stream_id: str) -> int:
        """The stream's current version, 0 when it has no events."""
        return await self._call(self._db.stream_version, namespace, stream_id)

    async def list_streams(self, namespace: str, query: StreamFilter) -> list[StreamInfo]:
        """Streams matching ``query``, most recently active first."""
        return await self._call(self._db.list_streams, namespace, query)

    async def wait_for_new(self, namespace: str, after_position: int, timeout: float) -> bool:
        """Wait until an event past ``after_position`` exists; False on timeout."""
        deadline = anyio.current_time() + timeout
        while True:
            # Take the event before looking, so an append landing between the
            # look and the wait still wakes us.
            appended = self._appended
            if await self._call(self._db.has_after, namespace, after_position):
                return True
            if anyio.current_time() >= deadline:
                return False
            with anyio.move_on_after(min(POLL_SECONDS, deadline - anyio.current_time())):
                await appended.wait()

    async def save_snapshot(self, namespace: str, snapshot: Snapshot) -> None:
        """Store (or replace) the snapshot of a stream at a version."""
        await self._call(self._db.save_snapshot, namespace, snapshot)

    async def latest_snapshot(
        self, namespace: str, stream_id: str, max_version: int | None, schema: int
    ) -> Snapshot | None:
        """The newest snapshot of ``schema`` at or below ``max_version``."""
        return await self._call(self._db.latest_snapshot, namespace, stream_id, max_version, schema)

    async def create_namespace(self, name: str) -> None:
        """Create a namespace (no-op when it exists)."""
        await self._call(self._db.create_namespace, name)

    async def list_namespaces(self) -> list[str]:
        """Every namespace, sorted."""
        return await self._call(self._db.list_namespaces)

    async def save_checkpoint(self, namespace: str, name: str, position: int) -> None:
        """Remember how far subscriber ``name`` has processed the global order."""
        await self._call(self._db.save_checkpoint, namespace, name, position)

    async def load_checkpoint(self, namespace: str, name: str) -> int:
        """The position saved for subscriber ``name`` (0 when none)."""
        return await self._call(self._db.load_checkpoint, namespace, name)

    async def claim(
        self, namespace: str, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claim]:
        """Lease up to ``limit`` ready streams whose lease is free or expired, oldest first."""
        return await self._call(self._db.claim, namespace, owner, now, lease_until, limit)

    async def renew(
        self, namespace: str, owner: str, stream_ids: Sequence[str], lease_until: datetime
    ) -> list[str]:
        """Extend ``owner``'s leases; returns the ids it still held (and now renewed)."""
        return await self._call(self._db.renew, namespace, owner, stream_ids, lease_until)

    async def release(self, namespace: str, owner: str, stream_ids: Sequence[str]) -> None:
        """Give up ``owner``'s leases so any worker may claim those streams at once."""
        await self._call(self._db.release, namespace, owner, stream_ids)

    async def next_ready_at(self, namespace: str, after: datetime | None = None) -> datetime | None:
        """The earliest ``ready_at`` in the work index (leased or not; later than ``after``
        when given), or None."""
        return await self._call(self._db.next_ready_at, namespace, after)

    async def clear_work_index(self, namespace: str) -> None:
        """Delete the namespace's work index (before a rebuild from events)."""
        await self._call(self._db.clear_work_index, namespace)

    async def close(self) -> None:
        """Close the connection once the call in progress (if any) is done."""
        if self._closed:
            return
        self._closed = True
        await anyio.to_thread.run_sync(self._locked, self._db.conn.close, limiter=self._limiter)

    async def check(self) -> None:
        """Open the file afresh and check its schema version (see :func:`check_file`)."""
        if self._closed:
            raise ProgrammingError(f"SQLite journal {self.path!r} is closed")
        if self.path == ":memory:":
            await self._call(self._db.stream_version, "", "")
            return
        await anyio.to_thread.run_sync(check_file, self.path)

    async def clear_snapshots(self, namespace: str) -> None:
        """Delete every snapshot of the namespace (derived data)."""
        await self._call(self._db.clear_snapshots, namespace)

    async def put_work(self, namespace: str, stream_id: str, ready_at: datetime | None) -> None:
        """Set a stream's work-index time without appending (None removes its row)."""
        await self._call(self._db.put_work, namespace, stream_id, ready_at)

    async def work_index(self, namespace: str) -> list[WorkItem]:
        """Every work-index row of the namespace, by stream id."""
        return await self._call(self._db.work_index, namespace)
