"""Wake-ups for ``wait_for_new`` on PostgreSQL: LISTEN on one dedicated connection.

Every append transaction sends ``NOTIFY`` on the journal's channel. One
connection per recorder LISTENs; whichever waiter finds it idle reads from it
(no background task), and every waiter is woken when a notification arrives.

Notifications are only hints: a waiter always re-reads the events table, and
never waits longer than ``poll_interval`` between reads. When the listen
connection breaks, waiters fall back to polling at that interval and a new
connection is tried after ``retry_after`` seconds.
"""

from __future__ import annotations

import logging

import anyio
import psycopg
from psycopg import sql

log = logging.getLogger("sagalog.storage")


class Waker:
    """Shares one LISTEN connection among all waiters of a recorder."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        *,
        poll_interval: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self.poll_interval = poll_interval
        self._retry_after = retry_after
        self._conn: psycopg.AsyncConnection[object] | None = None
        self._broken_at: float | None = None
        self._reading = anyio.Lock()
        self._arrived = anyio.Event()

    def generation(self) -> anyio.Event:
        """An event set by the next notification; take it *before* checking the table.

        Taking it first closes the race where a notification lands between
        the check and the wait.
        """
        return self._arrived

    async def wait(self, seen: anyio.Event) -> None:
        """Return once ``seen`` is set, or after at most ``poll_interval`` seconds."""
        with anyio.move_on_after(self.poll_interval):
            if self._reading.locked():
                await seen.wait()
                return
            async with self._reading:
                if seen.is_set():
                    return
                if await self._read_one():
                    self._arrived.set()
                    self._arrived = anyio.Event()
                else:
                    await anyio.sleep(self.poll_interval)  # polling fallback

    async def _read_one(self) -> bool:
        """Block until one notification arrives; False when listening is impossible."""
        conn = await self._connection()
        if conn is None:
            return False
        try:
            async for _ in conn.notifies(stop_after=1):
                pass
        except psycopg.Error as exc:
            log.warning("LISTEN connection lost, polling instead: %s", exc)
            await self._discard()
            return False
        return True

    async def _connection(self) -> psycopg.AsyncConnection[object] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        now = anyio.current_time()
        if self._broken_at is not None and now - self._broken_at < self._retry_after:
            return None
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as exc:
            log.warning("cannot LISTEN for new events, polling instead: %s", exc)
            self._broken_at = now
            return None
        self._conn, self._broken_at = conn, None
        return self._conn

    async def _discard(self) -> None:
        conn, self._conn = self._conn, None
        self._broken_at = anyio.current_time()
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def close(self) -> None:
        """Close the listen connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.close()
