"""Wake-ups on PostgreSQL: LISTEN on one dedicated connection.

Every append transaction sends ``NOTIFY`` on the journal's channel, with a
payload saying what it touched (:mod:`sagalog.storage.notices`). One
connection per recorder LISTENs; whichever waiter finds it idle reads from it
(no background task), records the notice in the recorder's
:class:`~sagalog.storage.notices.NoticeLog` and wakes every waiter.

Notifications are only hints. ``wait_for_new`` re-reads the events table
after each, and never waits longer than ``poll_interval`` between reads; a
:class:`NoticeWatch` hands the touches to its owner. When the listen
connection breaks, waiters fall back to polling at that interval (a watch
then answers :data:`~sagalog.storage.notices.UNKNOWN`), and a new connection
is tried after ``retry_after`` seconds. Notifications sent while nobody
listened are lost, so every new connection records an UNKNOWN notice.
"""

from __future__ import annotations

import logging

import anyio
import msgspec
import psycopg
from psycopg import sql
from sagalog.storage.notices import UNKNOWN, NoticeLog, Touch, decode_notice

log = logging.getLogger("sagalog.storage")


class Waker:
    """Shares one LISTEN connection among all waiters of a recorder.

    It listens only on the channels someone asked for (:meth:`listen`): a
    worker looking for work listens on the work channel alone, so its own
    commits to the streams it holds (quiet ones) never wake it.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        poll_interval: float = 0.5,
        retry_after: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._channels: set[str] = set()
        self.poll_interval = poll_interval
        self._retry_after = retry_after
        self._conn: psycopg.AsyncConnection[object] | None = None
        self._broken_at: float | None = None
        self._reading = anyio.Lock()
        self.log = NoticeLog()
        """Every notification received, decoded (see :mod:`sagalog.storage.notices`)."""

    def generation(self) -> anyio.Event:
        """An event set by the next notification; take it *before* checking the table.

        Taking it first closes the race where a notification lands between
        the check and the wait.
        """
        return self.log.arrival()

    async def wait(self, seen: anyio.Event) -> bool:
        """Return once ``seen`` is set, or after at most ``poll_interval`` seconds.

        False when notifications cannot be received (the connection is down):
        the caller must look for itself.
        """
        with anyio.move_on_after(self.poll_interval):
            if self._reading.locked():
                await seen.wait()
                return True
            async with self._reading:
                if seen.is_set():
                    return True
                if await self._read_some():
                    return True
                await anyio.sleep(self.poll_interval)  # polling fallback
                return False
        return self._conn is not None

    async def listen(self, channel: str) -> None:
        """LISTEN on ``channel`` now if not yet: a watch must not miss what is appended once it exists.

        A channel added to a connection that already listens waits for the
        connection's reader to finish (at most ``poll_interval``).
        """
        if channel in self._channels and self._conn is not None and not self._conn.closed:
            return
        async with self._reading:
            added = channel not in self._channels
            self._channels.add(channel)
            conn = await self._connection()
            if conn is None or not added:
                return
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            except psycopg.Error as exc:
                log.warning("cannot LISTEN for new events, polling instead: %s", exc)
                await self._discard()

    async def _read_some(self) -> bool:
        """Block until notifications arrive and record them all; False when listening is impossible.

        Reads the connection's socket and libpq directly: psycopg's
        ``notifies()`` costs a lock, two generators and two epoll changes per
        notification (about 250 µs of CPU each, measured), and every commit
        anywhere in the store sends one.
        """
        conn = await self._connection()
        if conn is None:
            return False
        pgconn = conn.pgconn
        try:
            while not self._drain(pgconn):
                await anyio.wait_readable(pgconn.socket)
                pgconn.consume_input()
        except (psycopg.Error, OSError) as exc:
            log.warning("LISTEN connection lost, polling instead: %s", exc)
            await self._discard()
            return False
        return True

    def _drain(self, pgconn: psycopg.pq.abc.PGconn) -> bool:
        """Record the notifications libpq holds; True when there was one at least."""
        found = False
        while (notify := pgconn.notifies()) is not None:
            self.log.add(notify.relname.decode(), decode_notice(notify.extra.decode("utf-8", "replace")))
            found = True
        return found

    def _record(self, notify: psycopg.Notify) -> None:
        self.log.add(notify.channel, decode_notice(notify.payload))

    async def _connection(self) -> psycopg.AsyncConnection[object] | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        now = anyio.current_time()
        if self._broken_at is not None and now - self._broken_at < self._retry_after:
            return None
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            # Notifications that arrive while a LISTEN runs are handed to handlers.
            conn.add_notify_handler(self._record)
            for channel in sorted(self._channels):
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            log.warning("cannot LISTEN for new events, polling instead: %s", exc)
            self._broken_at = now
            return None
        self._conn, self._broken_at = conn, None
        self.log.add(None, [UNKNOWN])  # what was appended before this LISTEN went unheard
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


class NoticeWatch:
    """What commits to one namespace touched, from one channel's notifications (see ``Journal.watch``)."""

    def __init__(self, waker: Waker, namespace: str, channel: str, tickets: str | None = None) -> None:
        self._waker = waker
        self._namespace = namespace
        self._channel = channel
        self._tickets = tickets
        """The channel of hand-offs to this watcher's worker (``Touch.handed``), if any."""
        self._next = waker.log.end

    async def next(self, timeout: float) -> list[Touch]:
        """The touches of this namespace since the last call, waiting up to ``timeout`` seconds.

        ``[]`` when the time passed with none; :data:`UNKNOWN` among them when
        something may have been missed (look at the store).
        """
        waker, log = self._waker, self._waker.log
        with anyio.move_on_after(timeout):
            while True:
                arrival = log.arrival()
                touches = [
                    t for t in log.since(self._next, self._channel) if t.may_be(self._namespace)
                ]
                if self._tickets is not None:
                    touches += [
                        msgspec.structs.replace(t, handed=True)
                        for t in log.since(self._next, self._tickets)
                        if t.stream_id is not None and t.may_be(self._namespace)
                    ]
                self._next = log.end
                if touches:
                    return touches
                if not await waker.wait(arrival):
                    return [UNKNOWN]
        return []
