"""Watching a namespace for commits: what :meth:`Journal.watch` returns.

On PostgreSQL a watch reads the notifications' payloads and costs no query
(:class:`~sagalog.storage.pg_listen.NoticeWatch`). Elsewhere (SQLite,
memory) :class:`ReadWatch` reads the new events themselves and tells the
same :class:`~sagalog.storage.notices.Touch` records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import msgspec
from sagalog.storage.notices import Touch, touches_of
from sagalog.storage.records import NewEvent

from sagalog.errors import DecodingError

if TYPE_CHECKING:
    from sagalog.storage.journal import Journal

READ_PAGE = 1000
"""Events a :class:`ReadWatch` reads at most per call."""


class Watch(Protocol):
    """Tells what commits to a namespace touched, from the moment it was made."""

    async def next(self, timeout: float) -> list[Touch]:
        """The touches since the last call, waiting up to ``timeout`` seconds for one.

        ``[]`` when the time passed with none; a touch with unknown fields
        (:data:`~sagalog.storage.notices.UNKNOWN`) when something may have
        changed that the watch cannot tell: look at the store.
        """
        ...


async def head_position(journal: Journal) -> int:
    """The position of the namespace's newest event (0 when it has none).

    The journal has no "head position" query, and reading every event to find
    the end would take long on a big journal: gallop forward with one-row
    reads (an index lookup each), then narrow down; about 2 log2(head) reads.
    """
    last, step = 0, 1024
    while True:
        beyond = await journal.read_all(last + step, 1)
        if beyond:
            last, step = beyond[0].position, step * 2
            continue
        nearer = await journal.read_all(last, 1)
        if not nearer:
            return last
        last, step = nearer[0].position, max(1, step // 2)


class DecodedWatch:
    """A watch whose told last events (``Touch.last``) get their payloads back through
    the journal's codec, as reads do; one that does not decode is not told."""

    def __init__(self, watch: Watch, decode: Callable[[bytes], bytes]) -> None:
        self._watch = watch
        self._decode = decode

    async def next(self, timeout: float) -> list[Touch]:
        """See :meth:`Watch.next`."""
        return [self._decoded(t) if t.last is not None else t for t in await self._watch.next(timeout)]

    def _decoded(self, touch: Touch) -> Touch:
        last = touch.last
        assert last is not None
        try:
            payload = self._decode(last.payload)
        except (DecodingError, ValueError):
            return msgspec.structs.replace(touch, last=None)
        return msgspec.structs.replace(touch, last=NewEvent(last.type, payload, last.metadata))


class ReadWatch:
    """A watch that reads the events appended after ``position`` (backends without notices)."""

    def __init__(self, journal: Journal, position: int) -> None:
        self._journal = journal
        self.position = position
        """The last position read."""

    async def next(self, timeout: float) -> list[Touch]:
        """See :meth:`Watch.next`: one look, then one read of the new events."""
        if not await self._journal.wait_for_new(self.position, timeout):
            return []
        events = await self._journal.read_all(self.position, READ_PAGE)
        if events:
            self.position = events[-1].position
        return touches_of(events)
