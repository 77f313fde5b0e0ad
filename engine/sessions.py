"""The sessions API: open, read, change, touch, close and expire sessions.

A session is the stream ``session-<id>``; its state is a fold of its events
(:mod:`sagalog.replay.sessions`), never a row that gets updated. Every change
here is one appended event with an expected version, and every append also
sets the stream's work-index row to the session's next deadline, so a worker
(which calls :meth:`Sessions.expire_if_due`) expires idle and over-age
sessions durably, even after a crash.

Reads go through a cache keyed by ``(session id, version)``: a read asks the
journal for the stream's version (one cheap query), and only on a miss folds
the events after the cached version, or the latest snapshot plus its tail.
"""

from __future__ import annotations

import contextlib
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from cachetools import LRUCache
from sagalog.engine.observer import NULL_OBSERVER, Observer
from sagalog.replay.folding import load_state, snapshot_if_due
from sagalog.replay.sessions import (
    SESSION_FOLD,
    STREAM_PREFIX,
    Policy,
    SessionChanged,
    SessionClosed,
    SessionEvent,
    SessionExpired,
    SessionOpened,
    SessionState,
    SessionTouched,
    Status,
    WorkflowBound,
    WorkflowsNotified,
    encode_event,
    stream_id,
)
from sagalog.storage import NO_STREAM, Journal, Schedule, StreamFilter, decode_value, encode_value

from sagalog.clock import Clock
from sagalog.errors import (
    AttributesTooLargeError,
    ConcurrencyError,
    DatabaseError,
    InvalidSessionError,
    NotFoundError,
    SessionClosedError,
    SessionExpiredError,
    SessionNotFoundError,
    WorkflowError,
)

if TYPE_CHECKING:
    pass

DEFAULT_SNAPSHOT_EVERY = 100
DEFAULT_CACHE_SIZE = 10_000
DEFAULT_MAX_ATTRIBUTES_BYTES = 64 * 1024
SESSION_ENDED_SIGNAL = "session_ended"
"""Signal sent to bound workflows with policy ``signal`` when their session ends."""

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,190}$")
_KIND = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_POLICIES = ("cancel", "signal", "none")
_WRITE_ATTEMPTS = 5


class WorkflowControl(Protocol):
    """What sessions need of the engine to end their bound workflows."""

    async def cancel(self, instance_id: str, reason: str) -> None:
        """Cancel a workflow instance (a no-op for one that already ended)."""
        ...

    async def signal(self, instance_id: str, name: str, payload: object) -> None:
        """Deliver a signal to a workflow instance."""
        ...


Seconds = float | int | timedelta


def _seconds(value: Seconds | None, what: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidSessionError(f"{what} must be seconds (a number or timedelta), not {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidSessionError(f"{what} must be a positive number of seconds, not {value!r}")
    return float(seconds)


def check_session_id(session_id: str) -> None:
    """Refuse session ids that could not name a stream."""
    if not isinstance(session_id, str) or not _ID.match(session_id):
        raise InvalidSessionError(f"invalid session id {session_id!r}: use 1-190 letters, digits or '_.:-'")


class Sessions:
    """Event-sourced sessions over a journal.

    Args:
        journal: where the session streams live (one namespace).
        clock: the time for event stamps and deadlines (default: the journal's).
        snapshot_every: save a snapshot each time a stream's version is a multiple of this.
        cache_size: how many session states to keep in memory.
        max_attributes_bytes: the largest encoded size a session's attributes may reach.
        workflows: the engine's control over workflows, to cancel or signal the
            workflows bound to a session when it ends; None to leave them alone.
    """

    def __init__(
        self,
        journal: Journal,
        *,
        clock: Clock | None = None,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        cache_size: int = DEFAULT_CACHE_SIZE,
        max_attributes_bytes: int = DEFAULT_MAX_ATTRIBUTES_BYTES,
        workflows: WorkflowControl | None = None,
    ) -> None:
        self.journal = journal
        self.clock = clock or journal.clock
        self.snapshot_every = snapshot_every
        self.max_attributes_bytes = max_attributes_bytes
        self.workflows = workflows
        self.observer: Observer = NULL_OBSERVER
        """Told of sessions opened and ended here (a worker's metrics)."""
        self._cache: LRUCache[tuple[str, int], SessionState] = LRUCache(maxsize=cache_size)
        self._latest: LRUCache[str, int] = LRUCache(maxsize=cache_size)

    # -- reading ---------------------------------------------------------

    def _remember(self, state: SessionState) -> None:
        if state.version == 0:
            return  # an unknown id: not worth a cache slot
        old = self._latest.get(state.session_id)
        if old is not None and old != state.version:
            self._cache.pop((state.session_id, old), None)
        self._latest[state.session_id] = state.version
        self._cache[(state.session_id, state.version)] = state

    async def _current(self, session_id: str) -> SessionState:
        check_session_id(session_id)
        stream = stream_id(session_id)
        version = await self.journal.stream_version(stream)
        cached = self._cache.get((session_id, version))
        if cached is not None:
            return cached
        known = self._latest.get(session_id)
        base = None if known is None or known > version else self._cache.get((session_id, known))
        if base is not None:
            state = base
            for event in await self.journal.read_stream(stream, base.version + 1):
                state = SESSION_FOLD.apply(state, event)
        else:
            state, _ = await load_state(self.journal, stream, SESSION_FOLD)
        self._remember(state)
        return state

    async def get(self, session_id: str) -> SessionState:
        """The session's current state, folded from its events.

        Raises:
            SessionNotFoundError: no session has this id.
        """
        state = await self._current(session_id)
        if state.status == "absent":
            raise self._not_found(session_id)
        return state

    async def list_sessions(
        self,
        *,
        status: Status | None = None,
        kind: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[SessionState]:
        """Sessions, most recently active first, optionally only of one status or kind."""
        found: list[SessionState] = []
        skipped, page_offset, page = 0, 0, max(limit, 50)
        while len(found) < limit:
            infos = await self.journal.list_streams(
                StreamFilter(prefix=STREAM_PREFIX, limit=page, offset=page_offset)
            )
            for info in infos:
                state = await self._current(info.stream_id.removeprefix(STREAM_PREFIX))
                if (status and state.status != status) or (kind and state.kind != kind):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(state)
                if len(found) == limit:
                    break
            if len(infos) < page:
                break
            page_offset += page
        return found

    # -- opening ---------------------------------------------------------

    async def open(
        self,
        session_id: str | None = None,
        *,
        kind: str = "default",
        attributes: Mapping[str, Any] | None = None,
        lifetime: Seconds | None = None,
        idle_timeout: Seconds | None = None,
    ) -> SessionState:
        """Open a session, or return it when it is already open (idempotent).

        Args:
            session_id: its id; a random one when None.
            kind: what sort of session, e.g. ``checkout``.
            attributes: initial attributes (msgspec-encodable values).
            lifetime: seconds (or a timedelta) until it expires whatever happens.
            idle_timeout: seconds (or a timedelta) without activity until it expires.

        Raises:
            SessionClosedError, SessionExpiredError: the id belongs to a session
                that ended; ended sessions are never reopened.
            InvalidSessionError, EncodingError, AttributesTooLargeError: bad input;
                nothing is stored.
        """
        session_id = uuid.uuid4().hex if session_id is None else session_id
        check_session_id(session_id)
        if not isinstance(kind, str) or not _KIND.match(kind):
            raise InvalidSessionError(f"invalid session kind {kind!r}: use 1-100 letters, digits or '_.:-'")
        opened = SessionOpened(
            session_id=session_id,
            kind=kind,
            at=self.clock.now(),
            attributes=self._checked(session_id, {}, attributes or {}, ()),
            lifetime=_seconds(lifetime, "lifetime"),
            idle_timeout=_seconds(idle_timeout, "idle_timeout"),
        )
        for _ in range(_WRITE_ATTEMPTS):
            state = await self._current(session_id)
            if state.status == "absent":
                try:
                    created = await self._append(state, [opened])
                except ConcurrencyError:
                    continue  # opened by someone else meanwhile: look again
                self.observer.session_opened(kind)
                return created
            await self._require_open(state)
            if state.kind != kind:
                raise InvalidSessionError(
                    f"session {session_id!r} is already open with kind {state.kind!r}, not {kind!r}"
                )
            return state
        raise ConcurrencyError(stream_id(session_id), NO_STREAM, state.version)

    # -- changing --------------------------------------------------------

    async def set(
        self, session_id: str, name: str, value: Any, *, expected_version: int | None = None
    ) -> SessionState:
        """Set one attribute. See :meth:`change` for errors."""
        return await self.change(session_id, {name: value}, expected_version=expected_version)

    async def merge(
        self,
        session_id: str,
        values: Mapping[str, Any],
        *,
        expected_version: int | None = None,
    ) -> SessionState:
        """Set several attributes in one change. See :meth:`change` for errors."""
        return await self.change(session_id, values, expected_version=expected_version)

    async def delete(self, session_id: str, *names: str, expected_version: int | None = None) -> SessionState:
        """Remove attributes (names that are not there are ignored)."""
        return await self.change(session_id, deleted=names, expected_version=expected_version)

    async def change(
        self,
        session_id: str,
        updates: Mapping[str, Any] | None = None,
        *,
        deleted: Sequence[str] = (),
        replace: bool = False,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> SessionState:
        """Set, replace and/or delete attributes, recorded as one ``SessionChanged`` event.

        Args:
            updates: attributes to set.
            deleted: attribute names to remove.
            replace: True to drop every attribute not in ``updates``.
            expected_version: the version the session must be at; None to apply
                the change to whatever is current.
            idempotency_key: when the session already holds a change or touch
                with this key (see :attr:`SessionState.applied_keys`), nothing is
                appended and the current state is returned, even if the session
                ended since. The built-in session steps pass their step's key.

        Raises:
            SessionNotFoundError, SessionClosedError, SessionExpiredError: no open session.
            ConcurrencyError: the session is not at ``expected_version``
                (its ``actual_version`` says where it is).
            InvalidSessionError, EncodingError, AttributesTooLargeError: bad input;
                nothing is stored.
        """
        updates = dict(updates or {})
        names = tuple(deleted)

        def make(state: SessionState) -> list[SessionEvent]:
            base = {} if replace else state.attributes
            values = self._checked(session_id, base, updates, names)
            return [SessionChanged(self.clock.now(), values, names, replace, key=idempotency_key)]

        return await self._write(session_id, make, expected_version, idempotency_key)

    async def touch(
        self,
        session_id: str,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> SessionState:
        """Record activity, moving the idle deadline to now + idle timeout.

        ``idempotency_key`` works as for :meth:`change`.
        """
        return await self._write(
            session_id,
            lambda _: [SessionTouched(self.clock.now(), key=idempotency_key)],
            expected_version,
            idempotency_key,
        )

    async def bind_workflow(
        self,
        session_id: str,
        instance_id: str,
        policy: Policy = "cancel",
        *,
        expected_version: int | None = None,
    ) -> SessionState:
        """Bind a workflow instance to the session.

        When the session closes or expires, the workflow is cancelled
        (``cancel``), sent the ``session_ended`` signal (``signal``) or left
        alone (``none``). Binding it again with another policy replaces the
        policy; with the same policy it changes nothing.
        """
        if policy not in _POLICIES:
            raise InvalidSessionError(
                f"invalid policy {policy!r} for workflow {instance_id!r}: use one of {_POLICIES}"
            )
        if not isinstance(instance_id, str) or not _ID.match(instance_id):
            raise InvalidSessionError(
                f"invalid workflow instance id {instance_id!r}: use 1-190 letters, digits or '_.:-'"
            )
        state = await self.get(session_id)
        if any(w.instance_id == instance_id and w.policy == policy for w in state.workflows):
            if expected_version is not None and expected_version != state.version:
                raise ConcurrencyError(stream_id(session_id), expected_version, state.version)
            await self._require_open(state)
            return state  # bound already: starting a workflow again is idempotent
        return await self._write(
            session_id,
            lambda _: [WorkflowBound(self.clock.now(), instance_id, policy)],
            expected_version,
        )

    # -- ending ----------------------------------------------------------

    async def close(
        self,
        session_id: str,
        reason: str = "",
        *,
        expected_version: int | None = None,
        by_instance: str | None = None,
    ) -> SessionState:
        """Close the session; closing a session that already ended returns it unchanged.

        A session found past its deadline is expired instead (and returned so).
        ``by_instance`` names the workflow instance closing it, which is then not
        cancelled or signalled itself.

        Raises:
            SessionNotFoundError: no session has this id.
            ConcurrencyError: the session is not at ``expected_version``.
        """
        await self.expire_if_due(session_id)  # a session past its deadline expires, not closes
        state = await self.get(session_id)
        if state.status != "open":
            return state
        try:
            ended = await self._write(
                session_id, lambda _: [SessionClosed(self.clock.now(), reason, by_instance)], expected_version
            )
        except (SessionClosedError, SessionExpiredError):
            return await self.get(session_id)  # ended by someone else meanwhile
        self.observer.session_ended(ended.kind, "closed")
        await self._end_workflows(ended)
        return ended

    async def expire_if_due(self, session_id: str) -> bool:
        """Record ``SessionExpired`` when an idle or absolute deadline has passed.

        The worker calls this for every ``session-`` stream it claims. It is
        safe to call any time, any number of times.

        An ended session whose bound workflows were not yet cancelled or
        signalled (it ended in a process without a runner, or one that crashed)
        gets them notified here.

        Returns:
            True when this call recorded something (the expiry, or the notice to
            the bound workflows); False when there was nothing to do.
        """
        for _ in range(_WRITE_ATTEMPTS):
            state = await self._current(session_id)
            if state.notification_pending:
                return await self._end_workflows(state)  # ended earlier, workflows not yet told
            due = state.due(self.clock.now())
            if due is None:
                return False
            try:
                ended = await self._append(state, [SessionExpired(self.clock.now(), *due)])
            except ConcurrencyError:
                continue  # touched or changed meanwhile: the deadline may have moved
            self.observer.session_ended(ended.kind, "expired")
            await self._end_workflows(ended)
            return True
        return False

    # -- internals -------------------------------------------------------

    def _not_found(self, session_id: str) -> SessionNotFoundError:
        return SessionNotFoundError(f"no session {session_id!r} in namespace {self.journal.namespace!r}")

    async def _require_open(self, state: SessionState) -> None:
        """Raise unless ``state`` is open; expire it first when it is due."""
        sid = state.session_id
        if state.status == "absent":
            raise self._not_found(sid)
        if state.status == "open" and state.due(self.clock.now()) is not None:
            await self.expire_if_due(sid)
            state = await self._current(sid)
        ended = f"at {state.ended_at.isoformat()}" if state.ended_at else ""
        if state.status == "closed":
            why = f" (reason: {state.end_reason})" if state.end_reason else ""
            raise SessionClosedError(
                f"session {sid!r} was closed {ended}{why}: a closed session accepts no "
                "changes and cannot be reopened; open a new session with another id"
            )
        if state.status == "expired":
            raise SessionExpiredError(
                f"session {sid!r} expired {ended} ({state.end_reason} deadline passed): an "
                "expired session accepts no changes and cannot be reopened; open a new "
                "session with another id"
            )

    def _checked(
        self,
        session_id: str,
        base: Mapping[str, Any],
        updates: Mapping[str, Any],
        deleted: Sequence[str],
    ) -> dict[str, Any]:
        """``updates`` as they will be stored, after checking names, values and total size."""
        stored: dict[str, Any] = {}
        for name in [*updates, *deleted]:
            if not isinstance(name, str) or not name or len(name) > 200:
                raise InvalidSessionError(
                    f"invalid attribute name {name!r} for session {session_id!r}: "
                    "use a non-empty string of at most 200 characters"
                )
        for name, value in updates.items():
            data = encode_value(value, what=f"attribute {name!r} of session {session_id!r}")
            # Store what a reader will decode (tuples become lists, ...), so the
            # state a writer caches equals the state folded from the journal.
            stored[name] = decode_value(data)
        result = {**base, **stored}
        for name in deleted:
            result.pop(name, None)
        size = len(encode_value(result))
        if size > self.max_attributes_bytes:
            raise AttributesTooLargeError(
                f"attributes of session {session_id!r} would take {size} bytes; the limit "
                f"is {self.max_attributes_bytes} bytes (Sessions(max_attributes_bytes=...))"
            )
        return stored

    async def _write(
        self,
        session_id: str,
        make: Callable[[SessionState], list[SessionEvent]],
        expected_version: int | None,
        key: str | None = None,
    ) -> SessionState:
        """Append ``make(current state)`` to an open session, retrying lost races
        unless the caller fixed the version it expects. A ``key`` the session
        already holds means the write was made before: nothing is appended."""
        for _ in range(_WRITE_ATTEMPTS):
            state = await self._current(session_id)
            if key is not None and key in state.applied_keys:
                return state  # a retried step: its change is in the stream already
            if expected_version is not None and expected_version != state.version:
                raise ConcurrencyError(stream_id(session_id), expected_version, state.version)
            await self._require_open(state)
            try:
                return await self._append(state, make(state))
            except ConcurrencyError:
                if expected_version is not None:
                    raise
        raise ConcurrencyError(stream_id(session_id), state.version, state.version + 1)

    async def _append(self, state: SessionState, events: list[SessionEvent]) -> SessionState:
        """Append ``events`` at ``state.version`` with the new deadline in the work index."""
        planned = state
        for offset, event in enumerate(events, start=1):
            planned = SESSION_FOLD.apply_event(planned, event, state.version + offset)
        stream = stream_id(state.session_id)
        stored = await self.journal.append(
            stream,
            state.version,
            [encode_event(e) for e in events],
            schedule=Schedule(ready_at=planned.ready_at),
        )
        for record in stored:
            state = SESSION_FOLD.apply(state, record)
            # The change is committed and a snapshot is only derived data: failing
            # here would invite the caller to repeat a change that was made.
            with contextlib.suppress(DatabaseError):
                await snapshot_if_due(
                    self.journal, stream, SESSION_FOLD, state, record.version, self.snapshot_every
                )
        self._remember(state)
        return state

    async def _end_workflows(self, state: SessionState) -> bool:
        """Cancel or signal the workflows bound to an ended session, per their policy.

        The session's work-index row stays due until ``WorkflowsNotified`` is
        recorded, so a crash before that makes a worker do it again (at least
        once: the runner's cancel and signal must tolerate a repeat).
        """
        if self.workflows is None or not state.notification_pending:
            return False
        reason = f"session {state.session_id} {state.status}"
        if state.end_reason:
            reason += f": {state.end_reason}"
        notified = []
        payload = {"session_id": state.session_id, "status": state.status, "reason": state.end_reason}
        for bound in state.to_notify():
            try:
                if bound.policy == "cancel":
                    await self.workflows.cancel(bound.instance_id, reason)
                else:
                    await self.workflows.signal(bound.instance_id, SESSION_ENDED_SIGNAL, payload)
            except (NotFoundError, WorkflowError):
                continue  # never started, or already ended: nothing to tell it
            notified.append(bound.instance_id)
        done = WorkflowsNotified(self.clock.now(), tuple(notified))
        for _ in range(_WRITE_ATTEMPTS):
            try:
                await self._append(state, [done])
                return True
            except ConcurrencyError:
                state = await self._current(state.session_id)
                if not state.notification_pending:
                    return True  # another worker recorded it
        return True


# -- the built-in steps behind ctx.session ---------------------------------------
# A workflow changes its session through these steps (see
# sagalog.replay.sessions.SessionCommands), so each change is recorded once in
# the workflow's history and replays without touching the session again. The
# runner that runs them hands them its Sessions through the step context.
