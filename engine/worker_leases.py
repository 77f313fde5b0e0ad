"""The bookkeeping around claims: leases held and to give back, tickets, database outages.

Kept apart from the worker's loops so each piece reads on its own: the
worker decides *when* to claim, renew and release; these classes remember
*what* is held and how long the database has been away.
"""

from __future__ import annotations

import logging
from datetime import datetime

import anyio
from sagalog.storage import Backoff, Claim, Event, Touch

from sagalog.clock import Clock

log = logging.getLogger("sagalog.worker")


class LeaseBook:
    """Streams this worker holds a lease on, each with the cancel scope of its work.

    A stream is *in flight* while its instance is being advanced, then *to
    release* until the next claim round gives all finished leases back in
    one query (one round trip per round, not per instance).
    """

    def __init__(self) -> None:
        self.in_flight: dict[str, anyio.CancelScope] = {}
        self.to_release: set[str] = set()
        self.lost: set[str] = set()

    def __len__(self) -> int:
        return len(self.in_flight)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self.in_flight

    def take(self, stream_id: str) -> anyio.CancelScope:
        """Record a fresh claim; returns the cancel scope its work must run in."""
        scope = anyio.CancelScope()
        self.in_flight[stream_id] = scope
        self.to_release.discard(stream_id)
        self.lost.discard(stream_id)
        return scope

    def finish(self, stream_id: str, *, release: bool) -> None:
        """The work on ``stream_id`` ended; give the lease back unless told not to or lost."""
        self.in_flight.pop(stream_id, None)
        if stream_id in self.lost:
            self.lost.discard(stream_id)
        elif release:
            self.to_release.add(stream_id)

    def lose(self, stream_id: str) -> bool:
        """The lease on ``stream_id`` is gone: cancel its work. False if it was not in flight."""
        scope = self.in_flight.get(stream_id)
        if scope is None or scope.cancel_called:
            return False
        self.lost.add(stream_id)
        scope.cancel()
        return True

    def pending_releases(self) -> list[str]:
        """The finished streams whose leases are still ours, and forget them."""
        ids = sorted(self.to_release)
        self.to_release.clear()
        return ids


class Tickets:
    """This worker's tickets (``Journal.offer``) and the starts handed to them.

    A start appended alone takes one ticket and leases its new instance to
    this worker; the watcher passes the notices on (:meth:`hand_over`) and
    the claim loop takes the instances (:meth:`take`).
    """

    def __init__(self) -> None:
        self.out = 0
        """Tickets out as far as this worker knows: as many next starts may come to it."""
        self._handed: list[Touch] = []

    @property
    def waiting(self) -> bool:
        """Starts were handed over and not taken yet."""
        return bool(self._handed)

    def hand_over(self, touches: list[Touch]) -> bool:
        """Note the starts among ``touches`` handed to this worker; True if there were any."""
        if any(t.namespace is None for t in touches):
            self.out = 0  # notices may be lost: offer anew (the next offer renews what is left)
        handed = [t for t in touches if t.handed and t.stream_id is not None]
        self._handed += handed
        self.out = max(0, self.out - len(handed))  # none left: the claim loop offers again
        return bool(handed)

    def take(self) -> list[Touch]:
        """The starts handed over since the last call."""
        handed, self._handed = self._handed, []
        return handed


def told_starts(handed: list[Touch], owner: str, now: datetime) -> list[Claim]:
    """Claims in form only (what ``StreamHandler.prepare`` takes) of the handed starts whose
    notice carried the start event (``Touch.last``): the handler replays from it, unread."""
    return [
        Claim(t.stream_id, now, owner, now, (Event(
            0, t.stream_id, 1, t.last.type, t.last.payload, dict(t.last.metadata), t.namespace, now
        ),))
        for t in handed
        if t.last is not None and t.stream_id is not None and t.namespace is not None
    ]  # fmt: skip


class Outage:
    """Tracks one database outage at a time: logs its start and end once each.

    The journal already retries a single operation a few times; an outage is
    what is left when those retries run out. The worker then waits
    :meth:`failed`'s delay (capped exponential backoff) and tries again.
    """

    def __init__(self, clock: Clock, backoff: Backoff | None = None) -> None:
        self._clock = clock
        self._backoff = backoff or Backoff(attempts=0, initial=0.2, maximum=5.0)
        self.since: datetime | None = None
        self.attempts = 0
        self.count = 0
        """Outages seen so far."""

    @property
    def ongoing(self) -> bool:
        """True between a failure and the next success."""
        return self.since is not None

    def failed(self, exc: BaseException) -> float:
        """Note a failed database operation; returns seconds to wait before the next try."""
        if self.since is None:
            self.since = self._clock.now()
            self.count += 1
            log.warning(
                "database unreachable (%s); the worker keeps running and reconnects with backoff",
                exc,
            )
        self.attempts += 1
        return self._backoff.delay(self.attempts)

    def recovered(self) -> None:
        """Note a successful database operation; logs the end of an outage once."""
        if self.since is None:
            return
        lasted = (self._clock.now() - self.since).total_seconds()
        log.warning("database reachable again after %.1f s; carrying on", lasted)
        self.since = None
        self.attempts = 0
