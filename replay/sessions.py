"""Sessions as events: what happened to a session, and the state folded from it.

A session lives in the stream ``session-<id>``. Nothing about it is stored
except these events; :class:`SessionFold` turns them into a
:class:`SessionState` (and into snapshots, through
:func:`sagalog.replay.folding.load_state`).

Events are tagged msgspec Structs. Each stored event carries the schema
version it was written with in its metadata (``schema``); :func:`decode_event`
upcasts older versions through :data:`UPCASTERS` before decoding. The rules
for changing an event: new fields come with defaults, existing field types
never change, and anything else is a new schema version with an upcaster.

The fold is pure and total: it applies whatever the stream holds. Refusing a
change to a closed session is the job of the writer (``sagalog.engine``),
which checks the folded state before it appends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec
from sagalog.replay.commands import StepCall
from sagalog.replay.event_codec import EventCodec, Upcaster
from sagalog.storage import Event, NewEvent, encode_value

from sagalog.errors import DecodingError, InvalidCommandError

STREAM_PREFIX = "session-"
"""Every session stream's id starts with this."""

SCHEMA_VERSION = 1
"""Schema version written into each new event's metadata (``schema``)."""

STATE_SCHEMA = 2
"""Snapshot schema of :class:`SessionState`; bump when its shape changes
(2: ``applied_keys``; older snapshots are ignored and the state refolded)."""

APPLIED_KEYS_KEPT = 1000
"""How many recent idempotency keys a session remembers (see ``SessionState.applied_keys``)."""

Status = Literal["absent", "open", "closed", "expired"]
"""Lifecycle of a session: ``absent`` until its first event."""

Policy = Literal["cancel", "signal", "none"]
"""What happens to a bound workflow when its session closes or expires."""

ExpiryReason = Literal["idle", "lifetime"]
"""Which deadline ended a session."""


def stream_id(session_id: str) -> str:
    """The stream that holds a session's events."""
    return STREAM_PREFIX + session_id


def session_id_of(stream: str) -> str:
    """The session id of a ``session-`` stream id."""
    return stream.removeprefix(STREAM_PREFIX)


# --- events ----------------------------------------------------------------


class SessionOpened(msgspec.Struct, frozen=True, tag=True):
    """A session began."""

    session_id: str
    """The session's id (its stream is ``session-<id>``)."""
    kind: str
    """What sort of session, e.g. ``checkout`` or ``chat``."""
    at: datetime
    """When it was opened (the writer's clock)."""
    attributes: dict[str, Any] = {}
    """Initial attributes."""
    lifetime: float | None = None
    """Seconds after ``at`` at which it expires whatever happens; None for never."""
    idle_timeout: float | None = None
    """Seconds without activity after which it expires; None for never."""


class SessionChanged(msgspec.Struct, frozen=True, tag=True):
    """Attributes were set and/or deleted (one change, applied as a whole)."""

    at: datetime
    """When the change was made; counts as activity."""
    updates: dict[str, Any] = {}
    """Attributes set to new values."""
    deleted: tuple[str, ...] = ()
    """Attributes removed (applied after ``updates``)."""
    replace: bool = False
    """True when ``updates`` replaced every attribute rather than merged into them."""
    key: str | None = None
    """Idempotency key of the step that made it (``<instance>:<step index>``), if any."""


class SessionTouched(msgspec.Struct, frozen=True, tag=True):
    """Activity without a change: moves the idle deadline."""

    at: datetime
    """When the session was touched."""
    key: str | None = None
    """Idempotency key of the step that made it, if any."""


class WorkflowBound(msgspec.Struct, frozen=True, tag=True):
    """A workflow instance was bound to the session."""

    at: datetime
    """When it was bound; counts as activity."""
    instance_id: str
    """The workflow instance (its stream is ``wf-<instance_id>``)."""
    policy: Policy = "cancel"
    """What to do to the workflow when the session ends."""


class SessionClosed(msgspec.Struct, frozen=True, tag=True):
    """The session was closed on purpose."""

    at: datetime
    """When it was closed."""
    reason: str = ""
    """Why, as given by whoever closed it."""
    by_instance: str | None = None
    """The workflow instance that closed it (through ``ctx.session.close``), if any."""


class SessionExpired(msgspec.Struct, frozen=True, tag=True):
    """The session passed its idle or absolute deadline and ended."""

    at: datetime
    """When the expiry was recorded (at or after ``deadline``)."""
    reason: ExpiryReason
    """Which deadline passed."""
    deadline: datetime
    """The deadline that passed."""


class WorkflowsNotified(msgspec.Struct, frozen=True, tag=True):
    """The bound workflows of an ended session were cancelled or signalled per policy."""

    at: datetime
    """When the last of them was notified."""
    instance_ids: tuple[str, ...] = ()
    """The instances that were cancelled or signalled."""


SessionEvent = (
    SessionOpened
    | SessionChanged
    | SessionTouched
    | WorkflowBound
    | SessionClosed
    | SessionExpired
    | WorkflowsNotified
)
"""Every event a session stream holds."""

EVENT_TYPES: frozenset[str] = frozenset(
    cls.__name__
    for cls in (
        SessionOpened,
        SessionChanged,
        SessionTouched,
        WorkflowBound,
        SessionClosed,
        SessionExpired,
        WorkflowsNotified,
    )
)
"""Type names of the session events (as stored in ``Event.type``)."""

UPCASTERS: dict[int, Upcaster] = {}
"""``{n: f}``: ``f(type, fields)`` migrates a schema-``n`` payload to schema ``n + 1``."""

_codec: EventCodec[SessionEvent] = EventCodec(SessionEvent, "session", SCHEMA_VERSION, EVENT_TYPES, UPCASTERS)


def encode_event(event: SessionEvent, metadata: dict[str, str] | None = None) -> NewEvent:
    """A session event as a record to append (type name, payload, schema in metadata)."""
    return _codec.encode(event, metadata)


def decode_event(stored: Event) -> SessionEvent:
    """The session event a stored record holds.

    Raises:
        DecodingError: not a session event, a corrupt payload, or a schema
            newer than this code knows.
    """
    return _codec.decode(stored)


# --- state -----------------------------------------------------------------


class BoundWorkflow(msgspec.Struct, frozen=True):
    """A workflow instance bound to a session."""

    instance_id: str
    """The workflow instance."""
    policy: Policy
    """What happens to it when the session ends."""
    bound_at: datetime
    """When it was bound."""


class SessionState(msgspec.Struct, frozen=True):
    """A session as folded from its events."""

    session_id: str
    """The session's id."""
    status: Status = "absent"
    """``absent`` (no events), ``open``, ``closed`` or ``expired``."""
    kind: str = ""
    """What sort of session it is."""
    attributes: dict[str, Any] = {}
    """Current attributes."""
    created_at: datetime | None = None
    """When it was opened."""
    last_active_at: datetime | None = None
    """Last open, change, touch or bind; the idle deadline counts from here."""
    expires_at: datetime | None = None
    """Absolute deadline (``created_at + lifetime``); None for never."""
    idle_timeout: float | None = None
    """Seconds of inactivity before it expires; None for never."""
    lifetime: float | None = None
    """Seconds from opening to the absolute deadline; None for never."""
    ended_at: datetime | None = None
    """When it was closed or expired."""
    end_reason: str = ""
    """The close reason, or ``idle`` / ``lifetime`` for an expiry."""
    workflows: tuple[BoundWorkflow, ...] = ()
    """Workflows bound to it, in the order they were bound."""
    version: int = 0
    """The last event version folded in (the stream's version)."""
    changes: int = 0
    """How many attribute changes it has had."""
    touches: int = 0
    """How many times it was touched."""
    workflows_notified: bool = False
    """Whether the bound workflows were cancelled or signalled after it ended."""
    closed_by: str | None = None
    """The workflow instance that closed it; that one is not cancelled or signalled."""
    applied_keys: tuple[str, ...] = ()
    """Idempotency keys of the latest keyed changes and touches (at most
    :data:`APPLIED_KEYS_KEPT`, oldest first): a step retried after a crash
    finds its key here and appends nothing again."""

    def to_notify(self) -> list[BoundWorkflow]:
        """Bound workflows to cancel or signal when the session ends, per their policy."""
        return [w for w in self.workflows if w.policy != "none" and w.instance_id != self.closed_by]

    @property
    def is_open(self) -> bool:
        """Whether the session accepts changes (it may still be due to expire)."""
        return self.status == "open"

    @property
    def idle_deadline(self) -> datetime | None:
        """When it expires for inactivity, unless touched before."""
        if self.idle_timeout is None or self.last_active_at is None:
            return None
        return self.last_active_at + timedelta(seconds=self.idle_timeout)

    @property
    def next_deadline(self) -> datetime | None:
        """The earliest deadline of an open session (its work-index time), else None."""
        if self.status != "open":
            return None
        deadlines = [d for d in (self.idle_deadline, self.expires_at) if d is not None]
        return min(deadlines, default=None)

    @property
    def notification_pending(self) -> bool:
        """Ended, with bound workflows (policy other than ``none``) not yet notified."""
        return self.status in ("closed", "expired") and not self.workflows_notified and bool(self.to_notify())

    @property
    def ready_at(self) -> datetime | None:
        """When a worker should next look at the session (its work-index time).

        The next deadline of an open session; the end of an ended one whose
        bound workflows still wait to be notified; otherwise never.
        """
        if self.notification_pending:
            return self.ended_at
        return self.next_deadline

    def due(self, now: datetime) -> tuple[ExpiryReason, datetime] | None:
        """Which deadline has passed at ``now`` (absolute first), or None."""
        if self.status != "open":
            return None
        if self.expires_at is not None and self.expires_at <= now:
            return ("lifetime", self.expires_at)
        idle = self.idle_deadline
        if idle is not None and idle <= now:
            return ("idle", idle)
        return None


def _apply(state: SessionState, event: SessionEvent, version: int) -> SessionState:
    replace = msgspec.structs.replace
    match event:
        case SessionOpened():
            lifetime = event.lifetime
            return replace(
                state,
                status="open",
                kind=event.kind,
                attributes=dict(event.attributes),
                created_at=event.at,
                last_active_at=event.at,
                expires_at=None if lifetime is None else event.at + timedelta(seconds=lifetime),
                idle_timeout=event.idle_timeout,
                lifetime=lifetime,
                version=version,
            )
        case SessionChanged():
            attributes = {} if event.replace else dict(state.attributes)
            attributes.update(event.updates)
            for name in event.deleted:
                attributes.pop(name, None)
            return replace(
                state,
                attributes=attributes,
                last_active_at=event.at,
                changes=state.changes + 1,
                version=version,
                applied_keys=_remember_key(state.applied_keys, event.key),
            )
        case SessionTouched():
            return replace(
                state,
                last_active_at=event.at,
                touches=state.touches + 1,
                version=version,
                applied_keys=_remember_key(state.applied_keys, event.key),
            )
        case WorkflowBound():
            bound = BoundWorkflow(event.instance_id, event.policy, event.at)
            others = tuple(w for w in state.workflows if w.instance_id != event.instance_id)
            return replace(state, workflows=(*others, bound), last_active_at=event.at, version=version)
        case SessionClosed():
            return replace(
                state,
                status="closed",
                ended_at=event.at,
                end_reason=event.reason,
                closed_by=event.by_instance,
                version=version,
            )
        case SessionExpired():
            return replace(
                state, status="expired", ended_at=event.at, end_reason=event.reason, version=version
            )
        case WorkflowsNotified():
            return replace(state, workflows_notified=True, version=version)


def _remember_key(keys: tuple[str, ...], key: str | None) -> tuple[str, ...]:
    if key is None:
        return keys
    return (*keys, key)[-APPLIED_KEYS_KEPT:]


class SessionFold:
    """:class:`~sagalog.replay.folding.Fold` of a session stream into a :class:`SessionState`."""

    schema = STATE_SCHEMA

    def initial(self, stream_id: str) -> SessionState:
        """An absent session."""
        return SessionState(session_id=session_id_of(stream_id))

    def apply(self, state: SessionState, event: Event) -> SessionState:
        """The state after one stored event (raises DecodingError for a corrupt one)."""
        return _apply(state, decode_event(event), event.version)

    def apply_event(self, state: SessionState, event: SessionEvent, version: int) -> SessionState:
        """The state after an already decoded event at ``version``."""
        return _apply(state, event, version)

    def encode(self, state: SessionState) -> bytes:
        """Snapshot bytes."""
        return msgspec.msgpack.encode(state)

    def decode(self, data: bytes) -> SessionState:
        """A state back from snapshot bytes (DecodingError when unreadable)."""
        try:
            return msgspec.msgpack.decode(data, type=SessionState)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"session snapshot cannot be decoded: {exc}") from exc


SESSION_FOLD = SessionFold()
"""The one fold instance everyone can share (it holds no state)."""


# --- commands a workflow yields to use its session ---------------------------

GET_STEP = "sagalog.session.get"
CHANGE_STEP = "sagalog.session.change"
TOUCH_STEP = "sagalog.session.touch"
CLOSE_STEP = "sagalog.session.close"
SESSION_STEPS = (GET_STEP, CHANGE_STEP, TOUCH_STEP, CLOSE_STEP)
"""Names of the built-in steps behind :class:`SessionCommands` (``sagalog.engine.sessions``)."""


class SessionCommands:
    """``ctx.session``: commands that read or change the session a workflow runs in.

    Each method returns a command to ``yield``. It runs as a built-in step, so
    the change is an event in the session's stream and its result (the
    session's state afterwards) is recorded in the workflow's history:
    replay sends back the recorded state and never touches the session again::

        cart = yield ctx.session.get()
        state = yield ctx.session.set("status", "paying")
        yield ctx.session.close("checked out")

    A refused change (the session closed or expired) is thrown in at the
    ``yield`` as a :class:`~sagalog.errors.StepError` naming the session error.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def get(self) -> StepCall:
        """The session's state (a :class:`SessionState`)."""
        return StepCall(GET_STEP, (self.session_id,))

    def set(self, name: str, value: Any) -> StepCall:
        """Set one attribute; sends back the new state."""
        return self.change({name: value})

    def merge(self, values: dict[str, Any]) -> StepCall:
        """Set several attributes in one change; sends back the new state."""
        return self.change(values)

    def delete(self, *names: str) -> StepCall:
        """Remove attributes; sends back the new state."""
        return self.change(deleted=names)

    def change(self, updates: dict[str, Any] | None = None, deleted: tuple[str, ...] = ()) -> StepCall:
        """Set and delete attributes in one ``SessionChanged`` event; sends back the new state.

        Raises:
            InvalidCommandError: an attribute name is not a string.
            EncodingError: a value msgspec cannot encode (naming the attribute).
        """
        updates = dict(updates or {})
        for name in [*updates, *deleted]:
            if not isinstance(name, str):
                raise InvalidCommandError(f"session attribute names are strings, not {name!r}")
        for name, value in updates.items():
            encode_value(value, f"attribute {name!r} of session {self.session_id!r}")
        return StepCall(CHANGE_STEP, (self.session_id, updates, list(deleted)))

    def touch(self) -> StepCall:
        """Record activity (moves the idle deadline); sends back the new state."""
        return StepCall(TOUCH_STEP, (self.session_id,))

    def close(self, reason: str = "") -> StepCall:
        """Close the session (its bound workflows are then cancelled or signalled per policy)."""
        return StepCall(CLOSE_STEP, (self.session_id, reason))
