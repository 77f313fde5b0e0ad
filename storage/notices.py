"""Notices: what a commit touched, told to listeners without a query (PostgreSQL NOTIFY).

Every append transaction on PostgreSQL sends one notification whose payload
lists, for each stream it appended to, the namespace, the stream, the event
types and the ``worker`` metadata of its events (:func:`encode_notice`).
Listeners decode it into :class:`Touch` records and look at the store only
when a commit concerns them: a worker skips its own commits, a client
awaiting a result reads its instance only when an event that may end it was
appended.

A notice is a hint: a payload that says nothing (empty, from a client of an
earlier version, or too big to list its streams) decodes to touches with
unknown fields, and whoever receives one looks for itself. It carries data
in one case only: the last event of a ``final`` append, when its payload is
small (``Touch.last``), and of a start (``AppendRequest.hand_off``). NOTIFY is
sent only if the transaction commits, so that is the stored event itself: a
client awaiting an instance's end takes its outcome from there instead of
reading it, and the worker a start is handed to replays from it.
:class:`NoticeLog` keeps the last notices received for cursors to page
through, in bounded memory: a cursor that fell behind gets :data:`UNKNOWN`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import anyio
import msgspec
from sagalog.storage.records import Event, NewEvent


class Touch(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """A stream (or a part of the store) a commit appended to. ``None``: unknown."""

    namespace: str | None
    stream_id: str | None
    """None: some streams of ``namespace``, not listed."""
    types: tuple[str, ...] | None
    """The types of the events appended to the stream (None: not listed)."""
    worker: str | None
    """The ``worker`` metadata of those events ("" when they have none; None:
    unknown, or different among them)."""
    last: NewEvent | None = None
    """The last of those events, when the append was ``final`` and its payload
    is :data:`LAST_PAYLOAD` bytes at most (None: not told). Its payload is as
    stored (through the journal's codec): ``Journal.watch`` passes it back."""
    handed: bool = False
    """The stream was handed to the watching worker's ticket (see ``Journal.offer``):
    its lease is that worker's already. Set by the watch, never sent."""

    def may_be(self, namespace: str, stream_id: str | None = None) -> bool:
        """True when this touch may concern ``namespace`` (and ``stream_id``, if given)."""
        if self.namespace is not None and self.namespace != namespace:
            return False
        return stream_id is None or self.stream_id is None or self.stream_id == stream_id


UNKNOWN = Touch(None, None, None, None)
"""A commit (or several) about which nothing is known: look."""

MAX_PAYLOAD = 7900
"""Bytes of payload at most (PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more)."""

LAST_PAYLOAD = 1024
"""Bytes of an event's payload at most for a notice to carry it (``Touch.last``)."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(list[Touch]).decode


def worker_of(events: Sequence[NewEvent]) -> str | None:
    """The ``worker`` metadata the events share ("" none), or None when they differ."""
    first = events[0].metadata.get("worker", "")
    if len(events) == 1 or all(e.metadata.get("worker", "") == first for e in events[1:]):
        return first
    return None


def encode_broad_notice(pairs: Iterable[tuple[str, str | None]]) -> str:
    """The NOTIFY payload of a commit told by (namespace, worker) ``pairs`` only: what
    :func:`encode_notice` falls back to; a big group commit's, without listing first."""
    payload = _encode([Touch(namespace, None, None, worker) for namespace, worker in dict.fromkeys(pairs)])
    return payload.decode() if len(payload) <= MAX_PAYLOAD else ""


def encode_notice(
    appends: Iterable[tuple[str, str, Sequence[NewEvent]]], final: Sequence[bool] = ()
) -> str:
    """The NOTIFY payload of a commit of ``appends``: (namespace, stream, events) each;
    ``final[i]``: append ``i`` was final, so its last event may be told (``Touch.last``).

    When the list would not fit a notification, the last events are left out;
    when it still would not, each namespace is told once per worker, without
    streams or types (:func:`encode_broad_notice`); when even that does not
    fit, the payload says nothing.
    """
    appends = list(appends)
    told = [
        Touch(namespace, stream_id, tuple(e.type for e in events), worker_of(events),
              last_of(events) if i < len(final) and final[i] else None)
        for i, (namespace, stream_id, events) in enumerate(appends)
    ]  # fmt: skip
    payload = _encode(_distinct(told))
    if len(payload) > MAX_PAYLOAD and any(t.last is not None for t in told):
        payload = _encode(_distinct([msgspec.structs.replace(t, last=None) for t in told]))
    if len(payload) <= MAX_PAYLOAD:
        return payload.decode()
    return encode_broad_notice((namespace, worker_of(events)) for namespace, _, events in appends)


def _distinct(touches: list[Touch]) -> list[Touch]:
    """``touches`` without repeats, in order (a ``Touch`` with a last event is not hashable)."""
    seen: dict[tuple[object, ...], Touch] = {}
    for t in touches:
        last = None if t.last is None else (t.last.type, t.last.payload)
        seen.setdefault((t.namespace, t.stream_id, t.types, t.worker, last), t)
    return list(seen.values())


def last_of(events: Sequence[NewEvent] | Sequence[Event]) -> NewEvent | None:
    """``Touch.last`` of an append of ``events``: its last event, if its payload is small."""
    last = events[-1]
    if len(last.payload) > LAST_PAYLOAD:
        return None
    return last if isinstance(last, NewEvent) else NewEvent(last.type, last.payload, last.metadata)


def decode_notice(payload: str) -> list[Touch]:
    """The touches a payload lists; ``[UNKNOWN]`` for one that says nothing or cannot be read."""
    if not payload:
        return [UNKNOWN]
    try:
        touches = _decode(payload)
    except msgspec.DecodeError:
        return [UNKNOWN]
    return touches or [UNKNOWN]


def touches_of(events: Iterable[Event]) -> list[Touch]:
    """What reading ``events`` tells, as touches (one per event)."""
    return [
        Touch(e.namespace, e.stream_id, (e.type,), e.metadata.get("worker", ""), last_of([e]))
        for e in events
    ]


class NoticeLog:
    """The last notices received, numbered in arrival order, for cursors to page through.

    Keeps at most ``keep`` notices: a cursor that has not looked for longer
    gets :data:`UNKNOWN` in place of what it missed.
    """

    def __init__(self, keep: int = 4096) -> None:
        self._keep = keep
        self._notices: deque[tuple[str | None, list[Touch]]] = deque()
        self._first = 0
        """The number of the oldest notice kept."""
        self._arrived = anyio.Event()

    @property
    def end(self) -> int:
        """The number the next notice will get: a new cursor starts here."""
        return self._first + len(self._notices)

    def arrival(self) -> anyio.Event:
        """An event set by the next notice; take it *before* looking at the log."""
        return self._arrived

    def add(self, channel: str | None, touches: list[Touch]) -> None:
        """Record a notice of ``channel`` (None: of every channel) and wake whoever waits."""
        self._notices.append((channel, touches))
        if len(self._notices) > self._keep:
            self._notices.popleft()
            self._first += 1
        self._arrived.set()
        self._arrived = anyio.Event()

    def since(self, number: int, channel: str) -> list[Touch]:
        """The touches of ``channel``'s notices from ``number`` on (``[UNKNOWN]`` first if some are gone)."""
        if number >= self.end:
            return []
        if number < self._first:
            missed = [UNKNOWN]
            number = self._first
        else:
            missed = []
        for index in range(number - self._first, len(self._notices)):
            told, touches = self._notices[index]
            if told is None or told == channel:
                missed.extend(touches)
        return missed
