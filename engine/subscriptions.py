"""Session event handlers, fed by a catch-up subscription on the global order.

A :class:`SessionSubscription` reads the journal from its stored checkpoint
on, in position order, calls the handlers registered for each session event
(``opened``, ``changed``, ``touched``, ``bound``, ``closed``, ``expired``,
``notified``),
and saves the checkpoint *after* the handlers returned. Delivery is therefore
at least once: a crash between a handler and the checkpoint delivers the same
events again to the next run, and a handler sees every event once per saved
checkpoint. Handlers that must not act twice should be idempotent (the
notice's ``position`` is a natural key).

Run it inside a task group; it catches up, then sleeps in
``journal.wait_for_new`` until more events arrive::

    subscription = SessionSubscription(journal, "emails")

    @subscription.on("expired")
    async def remind(notice: SessionNotice) -> None: ...

    async with anyio.create_task_group() as tg:
        await tg.start(subscription.run)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, NoReturn

import anyio
import msgspec
from anyio.abc import TaskStatus
from sagalog.replay.sessions import (
    EVENT_TYPES,
    STREAM_PREFIX,
    SessionChanged,
    SessionClosed,
    SessionEvent,
    SessionExpired,
    SessionOpened,
    SessionTouched,
    WorkflowBound,
    WorkflowsNotified,
    decode_event,
    session_id_of,
)
from sagalog.storage import Event, Journal

from sagalog.errors import DecodingError, InvalidSessionError

NoticeName = Literal["opened", "changed", "touched", "bound", "closed", "expired", "notified"]
"""The names handlers register for, one per session event type."""

NOTICE_NAMES: dict[type[SessionEvent], NoticeName] = {
    SessionOpened: "opened",
    SessionChanged: "changed",
    SessionTouched: "touched",
    WorkflowBound: "bound",
    SessionClosed: "closed",
    SessionExpired: "expired",
    WorkflowsNotified: "notified",
}


class SessionNotice(msgspec.Struct, frozen=True):
    """One session event, as handed to a handler."""

    name: NoticeName
    """Which kind of event: ``opened``, ``changed``, ``touched``, ``bound``, ``closed``,
    ``expired`` or ``notified`` (its bound workflows were told it ended)."""
    session_id: str
    """The session it happened to."""
    event: SessionEvent
    """The decoded event."""
    position: int
    """Its global position (unique: a key for idempotent handlers)."""
    version: int
    """Its version within the session's stream."""
    recorded_at: datetime
    """When the journal stored it."""


Handler = Callable[[SessionNotice], Awaitable[None]]
"""An async function called with each notice it registered for."""


class SessionSubscription:
    """Calls registered handlers for session events, resuming from a stored checkpoint.

    Args:
        journal: the journal (one namespace) to follow.
        name: the checkpoint's name; each name keeps its own place.
        batch: events read (and handled) between two checkpoint saves.
        wake_timeout: longest wait for new events before looking again (seconds).
    """

    def __init__(
        self,
        journal: Journal,
        name: str = "session-handlers",
        *,
        batch: int = 100,
        wake_timeout: float = 5.0,
    ) -> None:
        if not name or not isinstance(name, str):
            raise InvalidSessionError(f"invalid subscription name {name!r}: use a non-empty string")
        self.journal = journal
        self.name = name
        self.batch = batch
        self.wake_timeout = wake_timeout
        self.skipped: list[int] = []
        """Positions of session events that could not be decoded (not delivered)."""
        self._handlers: dict[NoticeName, list[Handler]] = {n: [] for n in NOTICE_NAMES.values()}

    def add_handler(self, handler: Handler, *names: NoticeName) -> None:
        """Call ``handler`` for the events named (every session event when none are)."""
        for name in names or tuple(self._handlers):
            if name not in self._handlers:
                raise InvalidSessionError(
                    f"unknown session event {name!r}: use one of {', '.join(self._handlers)}"
                )
            self._handlers[name].append(handler)

    def on(self, *names: NoticeName) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_handler`."""

        def register(handler: Handler) -> Handler:
            self.add_handler(handler, *names)
            return handler

        return register

    def _notice(self, event: Event) -> SessionNotice | None:
        if not event.stream_id.startswith(STREAM_PREFIX) or event.type not in EVENT_TYPES:
            return None
        try:
            decoded = decode_event(event)
        except DecodingError:
            self.skipped.append(event.position)
            return None
        return SessionNotice(
            NOTICE_NAMES[type(decoded)],
            session_id_of(event.stream_id),
            decoded,
            event.position,
            event.version,
            event.recorded_at,
        )

    async def run_once(self) -> int:
        """Deliver every event past the checkpoint, saving it after each batch.

        Returns:
            How many notices were delivered.

        Raises:
            Whatever a handler raised; the checkpoint then stands just before
            the event that handler failed on, so it is delivered again next time.
        """
        position = await self.journal.load_checkpoint(self.name)
        delivered = 0
        while True:
            page = await self.journal.read_all(position, self.batch)
            saved = position
            try:
                for event in page:
                    notice = self._notice(event)
                    if notice is not None:
                        for handler in self._handlers[notice.name]:
                            await handler(notice)
                        delivered += 1
                    position = event.position
            except Exception:
                if position > saved:
                    await self.journal.save_checkpoint(self.name, position)
                raise
            if position > saved:
                await self.journal.save_checkpoint(self.name, position)
            if len(page) < self.batch:
                return delivered

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> NoReturn:
        """Catch up, report started, then deliver new events as they arrive, forever.

        Start it with ``await task_group.start(subscription.run)``; cancel the
        task group (or its scope) to stop it.
        """
        await self.run_once()
        task_status.started()
        while True:
            position = await self.journal.load_checkpoint(self.name)
            await self.journal.wait_for_new(position, self.wake_timeout)
            await self.run_once()
