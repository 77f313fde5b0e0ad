"""Group commit: appends that arrive together share one transaction.

No background task. Requests join the open batch; the first request of a
batch makes its submitter the batch's leader. The leader waits for its turn
to commit (see below), seals its batch and commits it; every other member
waits until the leader has the batch's outcomes and is woken once, together
with the rest of the batch. While a batch commits, newcomers fill the next
one, so batches grow with load and a lone appender pays no extra latency (it
leads a batch of one and never waits).

Overlap. With one batch committing at a time, the appenders' own work
(returning from one append, preparing the next) and the commit alternate:
while the database works, the client idles, and the other way round. A
committer built with ``depth`` 2 (the PostgreSQL recorder asks for it: its
second batch waits on the server for the first one's lock, with its
arguments already there) lets a second batch start while one commits, and
when many appenders wait (at least ``2 * min_split``) it caps batches at
half of them, so they settle into two groups: one group's batch commits
while the other group runs and forms the next batch. Fewer appenders keep
one batch at a time, as do batches smaller than ``min_split``: a commit has
a fixed cost, and splitting a few appenders in two pays it twice for
little overlap.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

Req = TypeVar("Req")
Res = TypeVar("Res")

CommitObserver = Callable[[float, int], None]
"""Told of every commit: (seconds it took, requests in the batch). For metrics;
storage itself knows nothing of Prometheus."""


class _Batch(Generic[Req, Res]):
    """Requests committed together, and what became of them."""

    __slots__ = ("error", "outcomes", "requests", "waiters")

    def __init__(self) -> None:
        self.requests: list[Req] = []
        self.outcomes: Sequence[Res] = ()
        # Until the commit returns: what members see if the leader never
        # gets that far (an error that is not an Exception went through it).
        self.error: BaseException | None = RuntimeError("the group commit was interrupted")
        # One future per member other than the leader, set when the batch is
        # done. A future of its own, not a shared event: an anyio Event is an
        # asyncio Event underneath, and each of its waiters costs two more
        # coroutine levels and a deque removal (4.0 µs a wake-up against 2.3,
        # measured with 256 waiters, uvloop); cancelling a member cancels
        # only its own future.
        self.waiters: list[asyncio.Future[None]] = []


class GroupCommitter(Generic[Req, Res]):
    """Batch concurrent submissions into calls of ``commit``.

    ``commit`` receives a batch and returns one outcome per request, in order.
    An exception raised by ``commit`` becomes the outcome of every request in
    that batch. Batches start committing in the order they were opened;
    with ``depth`` > 1, up to that many commit at once (``commit`` must
    allow concurrent calls then).
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]],
        max_batch: int = 256,
        *,
        depth: int = 1,
        min_split: int = 64,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._depth = depth
        self._min_split = min_split
        self._cap = max_batch
        """Requests per batch now: ``max_batch``, or half the waiting appenders (see _seal)."""
        self._split = False
        """Many appenders wait: batches may commit beside each other (see _seal)."""
        self._open: _Batch[Req, Res] | None = None
        self._pending = 0
        """Requests submitted and not yet answered (open, queued and committing batches)."""
        self._committing = 0
        """Batches between the start of their commit and the wake-up of their members."""
        # Leaders waiting for their turn, in the order their batches were
        # opened; each is handed its turn (``_committing`` counted for it).
        self._queue: deque[tuple[_Batch[Req, Res], anyio.Event]] = deque()
        self._last_size = 0
        self.batches = 0
        """Number of commits made (for benchmarks and tests)."""
        self.observer: CommitObserver | None = None
        """Called after each commit that returned (see :data:`CommitObserver`)."""

    async def submit(self, request: Req) -> Res:
        """Queue ``request`` in the open batch, wait for that batch's commit, return its outcome."""
        self._pending += 1
        try:
            if self._open is None and self._last_size <= 1 and self._committing == 0:
                return await self._commit_alone(request)
            batch = self._open
            if batch is None or len(batch.requests) >= self._cap:
                batch = self._open = _Batch()
            index = len(batch.requests)
            batch.requests.append(request)
            if index == 0:
                # Shielded: the other members rely on this leader, and a leader
                # cancelled before or during the commit would strand them with
                # no way to know whether their events were written.
                with anyio.CancelScope(shield=True):
                    await self._lead(batch)
            else:
                done = asyncio.get_running_loop().create_future()
                batch.waiters.append(done)
                await done
        finally:
            self._pending -= 1
        if batch.error is not None:
            raise batch.error
        return batch.outcomes[index]

    async def _commit_alone(self, request: Req) -> Res:
        # Nothing is committing and no batch is open: a batch of one, sealed
        # at once, so nobody else can come to depend on this call and it
        # needs no shield from cancellation.
        self._committing += 1
        try:
            self._last_size = 1
            self.batches += 1
            outcomes = await self._timed([request])
            if len(outcomes) != 1:
                raise RuntimeError(f"commit returned {len(outcomes)} outcomes for 1 request")
            return outcomes[0]
        finally:
            self._finished()

    async def _timed(self, requests: Sequence[Req]) -> Sequence[Res]:
        observer = self.observer
        if observer is None:
            return await self._commit(requests)
        # Real elapsed time, not a Clock's: a measurement, no decision depends on it.
        started = time.perf_counter()
        outcomes = await self._commit(requests)
        observer(time.perf_counter() - started, len(requests))
        return outcomes

    def _may_start(self, size: int) -> bool:
        """Whether a batch of ``size`` requests may start committing now."""
        committing = self._committing
        if committing == 0:
            return True
        # Beside another commit: only when many appenders wait and the batch
        # is worth a commit of its own.
        return committing < self._depth and self._split and size >= self._min_split

    def _finished(self) -> None:
        """A commit ended: hand turns to the leaders that may start now, oldest first."""
        self._committing -= 1
        queue = self._queue
        while queue and self._may_start(len(queue[0][0].requests)):
            self._committing += 1
            queue.popleft()[1].set()

    def _seal(self, batch: _Batch[Req, Res]) -> None:
        if self._open is batch:
            self._open = None  # sealed: later requests open the next batch
        self._last_size = len(batch.requests)
        self.batches += 1
        # Split the appenders in two groups when there are many of them (see
        # the module docstring): the next batches hold half of those waiting
        # now, this batch included. Recomputed at every seal, so the split
        # follows the load.
        pending = self._pending
        self._split = self._depth > 1 and pending >= 2 * self._min_split
        self._cap = min(self._max_batch, (pending + 1) // 2) if self._split else self._max_batch

    async def _lead(self, batch: _Batch[Req, Res]) -> None:
        if self._last_size > 1 and len(batch.requests) < self._cap:
            # One turn of the event loop before sealing: appenders that are
            # ready to run (typically the members of the batch that just
            # committed, coming back with their next append) join this batch
            # instead of leading batches of one in turn. A lone appender
            # (batches of one) skips the turn.
            await anyio.lowlevel.cancel_shielded_checkpoint()
        if self._queue or not self._may_start(len(batch.requests)):
            # The batch stays open while it waits, and fills.
            turn = anyio.Event()
            self._queue.append((batch, turn))
            await turn.wait()
        else:
            self._committing += 1
        try:
            self._seal(batch)
            outcomes = await self._timed(batch.requests)
        except Exception as exc:
            batch.error = exc
        else:
            if len(outcomes) == len(batch.requests):
                batch.outcomes, batch.error = outcomes, None
            else:
                batch.error = RuntimeError(
                    f"commit returned {len(outcomes)} outcomes for {len(batch.requests)} requests"
                )
        finally:
            # The next leader's turn first, then the members: the next batch
            # is on its way to the database while these members run.
            self._finished()
            for waiter in batch.waiters:
                if not waiter.done():  # a cancelled member's is
                    waiter.set_result(None)
