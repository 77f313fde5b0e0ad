"""Session analytics: projections folded from the journal's global order.

:class:`SessionAnalytics` reads every event in position order and keeps
counts: sessions open now per kind, sessions opened / closed / expired per
hour, how long ended sessions lasted, and how many events each session has.
It depends on the events alone (no clock, no I/O), so the same events always
give the same numbers, and it can be rebuilt from scratch at any time: the
stored copy (a snapshot of the pseudo-stream :data:`PROJECTION_STREAM`, whose
version is the global position it reflects) is derived data like every other
snapshot.

The reducer mutates its own tables rather than copying them per event (a
projection over a whole journal would otherwise copy a large map per event);
:meth:`SessionAnalytics.stats` hands out an immutable :class:`SessionStats`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime

import msgspec
from sagalog.replay.sessions import (
    EVENT_TYPES,
    STREAM_PREFIX,
    SessionClosed,
    SessionExpired,
    SessionOpened,
    decode_event,
    session_id_of,
)
from sagalog.storage import Event, Journal, Snapshot

from sagalog.errors import DecodingError

PROJECTION_STREAM = "projection-session-analytics"
"""Pseudo-stream under which the projection's state is saved as a snapshot."""

PROJECTION_SCHEMA = 1
"""Snapshot schema of the projection's stored state."""

DURATION_BOUNDS: tuple[float, ...] = (1, 10, 60, 300, 900, 3600, 21600, 86400, 604800)
"""Upper bounds (seconds) of the session duration histogram's buckets; +Inf is implied."""

EVENT_BOUNDS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 1000, 10000)
"""Upper bounds of the events-per-session histogram's buckets; +Inf is implied."""


class Histogram(msgspec.Struct, frozen=True):
    """A distribution in Prometheus' shape (bucket counts are not cumulative here)."""

    bounds: tuple[float, ...]
    """Upper bound of each bucket but the last (+Inf)."""
    counts: tuple[int, ...]
    """Observations per bucket: ``len(bounds) + 1`` entries."""
    sum: float = 0.0
    """Sum of every observation."""
    count: int = 0
    """Number of observations."""

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as a Prometheus histogram exports them."""
        pairs, total = [], 0
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


class HourCounts(msgspec.Struct, frozen=True):
    """Sessions opened, closed and expired within one hour (UTC)."""

    hour: datetime
    """The start of the hour."""
    opened: int = 0
    closed: int = 0
    expired: int = 0


class SessionStats(msgspec.Struct, frozen=True):
    """Every number of the session projection at one position of the journal."""

    position: int
    """The last global position folded in."""
    open_by_kind: dict[str, int]
    """Sessions open now, per kind (kinds with none open are left out)."""
    opened: int
    """Sessions opened, all time."""
    closed: int
    """Sessions closed, all time."""
    expired: int
    """Sessions expired, all time."""
    per_hour: tuple[HourCounts, ...]
    """Opened / closed / expired per hour, oldest first."""
    duration_seconds: Histogram
    """How long ended sessions lasted (opening to close or expiry)."""
    events_per_session: Histogram
    """How many events each session's stream holds."""
    undecodable: int = 0
    """Session events that could not be decoded (skipped)."""


class _Tracked(msgspec.Struct):
    """What the projection remembers about one session."""

    kind: str
    opened_at: datetime
    events: int = 1
    open: bool = True


class _Stored(msgspec.Struct, frozen=True):
    """The projection's tables as saved in its snapshot."""

    position: int
    sessions: dict[str, _Tracked]
    hours: dict[datetime, tuple[int, int, int]]
    durations: tuple[int, ...]
    duration_sum: float
    undecodable: int


def _bucket(bounds: tuple[float, ...], value: float) -> int:
    return bisect_left(bounds, value)


class SessionAnalytics:
    """The session projection: feed it events in global order, read :meth:`stats`."""

    def __init__(self) -> None:
        self.position = 0
        self._sessions: dict[str, _Tracked] = {}
        self._hours: dict[datetime, tuple[int, int, int]] = {}
        self._durations = [0] * (len(DURATION_BOUNDS) + 1)
        self._duration_sum = 0.0
        self._undecodable = 0

    def apply(self, event: Event) -> None:
        """Fold one event in (events of other streams only move the position)."""
        self.position = max(self.position, event.position)
        if not event.stream_id.startswith(STREAM_PREFIX) or event.type not in EVENT_TYPES:
            return
        session_id = session_id_of(event.stream_id)
        try:
            decoded = decode_event(event)
        except DecodingError:
            self._undecodable += 1
            return
        tracked = self._sessions.get(session_id)
        if isinstance(decoded, SessionOpened):
            if tracked is None:
                self._sessions[session_id] = _Tracked(decoded.kind, decoded.at)
                self._count(decoded.at, 0)
            return
        if tracked is None:
            return  # a stream without its opening event: nothing to attribute it to
        if isinstance(decoded, SessionClosed | SessionExpired) and tracked.open:
            tracked.open = False
            self._count(decoded.at, 1 if isinstance(decoded, SessionClosed) else 2)
            lasted = max(0.0, (decoded.at - tracked.opened_at).total_seconds())
            self._durations[_bucket(DURATION_BOUNDS, lasted)] += 1
            self._duration_sum += lasted
        tracked.events += 1

    def apply_all(self, events: Iterable[Event]) -> None:
        """Fold events in, in the order given."""
        for event in events:
            self.apply(event)

    def _count(self, when: datetime, column: int) -> None:
        hour = when.replace(minute=0, second=0, microsecond=0)
        counts = list(self._hours.get(hour, (0, 0, 0)))
        counts[column] += 1
        self._hours[hour] = (counts[0], counts[1], counts[2])

    def stats(self) -> SessionStats:
        """Every number, as an immutable record (easy to print, serialise or export)."""
        open_by_kind: dict[str, int] = {}
        events = [0] * (len(EVENT_BOUNDS) + 1)
        total_events = 0
        for tracked in self._sessions.values():
            if tracked.open:
                open_by_kind[tracked.kind] = open_by_kind.get(tracked.kind, 0) + 1
            events[_bucket(EVENT_BOUNDS, tracked.events)] += 1
            total_events += tracked.events
        hours = tuple(HourCounts(h, *self._hours[h]) for h in sorted(self._hours))
        return SessionStats(
            position=self.position,
            open_by_kind=dict(sorted(open_by_kind.items())),
            opened=sum(h.opened for h in hours),
            closed=sum(h.closed for h in hours),
            expired=sum(h.expired for h in hours),
            per_hour=hours,
            duration_seconds=Histogram(
                DURATION_BOUNDS, tuple(self._durations), self._duration_sum, sum(self._durations)
            ),
            events_per_session=Histogram(
                EVENT_BOUNDS, tuple(events), float(total_events), len(self._sessions)
            ),
            undecodable=self._undecodable,
        )

    def encode(self) -> bytes:
        """The projection's tables as bytes (for its snapshot)."""
        stored = _Stored(
            self.position,
            self._sessions,
            self._hours,
            tuple(self._durations),
            self._duration_sum,
            self._undecodable,
        )
        return msgspec.msgpack.encode(stored)

    @classmethod
    def decode(cls, data: bytes) -> SessionAnalytics:
        """A projection back from :meth:`encode` bytes (DecodingError when unreadable)."""
        try:
            stored = msgspec.msgpack.decode(data, type=_Stored)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise DecodingError(f"session analytics snapshot cannot be decoded: {exc}") from exc
        analytics = cls()
        analytics.position = stored.position
        analytics._sessions = dict(stored.sessions)
        analytics._hours = dict(stored.hours)
        analytics._durations = list(stored.durations)
        analytics._duration_sum = stored.duration_sum
        analytics._undecodable = stored.undecodable
        return analytics


async def catch_up(journal: Journal, analytics: SessionAnalytics, batch: int = 1000) -> int:
    """Fold every event after ``analytics.position`` in; returns how many were read."""
    read = 0
    while True:
        page = await journal.read_all(analytics.position, batch)
        analytics.apply_all(page)
        read += len(page)
        if len(page) < batch:
            return read


async def rebuild(journal: Journal) -> SessionAnalytics:
    """The projection folded from the first event on (ignores anything stored)."""
    analytics = SessionAnalytics()
    await catch_up(journal, analytics)
    return analytics


async def load(journal: Journal, *, save: bool = True) -> SessionAnalytics:
    """The stored projection brought up to date (rebuilt when none is stored).

    Args:
        save: store the result when it moved, so the next reader starts from there.
    """
    analytics = SessionAnalytics()
    snapshot = await journal.latest_snapshot(PROJECTION_STREAM, schema=PROJECTION_SCHEMA)
    if snapshot is not None:
        try:
            analytics = SessionAnalytics.decode(snapshot.state)
        except DecodingError:
            analytics = SessionAnalytics()  # derived data: an unreadable copy is rebuilt
    if await catch_up(journal, analytics) and save:
        await journal.save_snapshot(
            Snapshot(PROJECTION_STREAM, analytics.position, analytics.encode(), PROJECTION_SCHEMA)
        )
    return analytics
