"""Group commit: appends that arrive together share one transaction.

No background task. Requests join the open batch; the first request of a
batch makes its submitter the batch's leader. The leader waits for the
commit in progress (if any) to end, seals its batch and commits it; every
other member waits on the batch's one completion event and is woken once,
together with the rest of the batch. While a batch commits, newcomers fill
the next one, so batches grow with load and a lone appender pays no extra
latency (it leads a batch of one and never waits).
"""

from __future__ import annotations

import time
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

    __slots__ = ("done", "error", "outcomes", "requests")

    def __init__(self) -> None:
        self.requests: list[Req] = []
        self.outcomes: Sequence[Res] = ()
        # Until the commit returns: what members see if the leader never
        # gets that far (an error that is not an Exception went through it).
        self.error: BaseException | None = RuntimeError("the group commit was interrupted")
        # Created by the second member only: a lone appender needs no event.
        self.done: anyio.Event | None = None


class GroupCommitter(Generic[Req, Res]):
    """Batch concurrent submissions into calls of ``commit``.

    ``commit`` receives a batch and returns one outcome per request, in order.
    An exception raised by ``commit`` becomes the outcome of every request in
    that batch.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]],
        max_batch: int = 256,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._open: _Batch[Req, Res] | None = None
        # Only leaders take it, one per batch: batches commit one at a time,
        # in the order they were opened (anyio locks are fair).
        self._lock = anyio.Lock(fast_acquire=True)
        self._last_size = 0
        self.batches = 0
        """Number of commits made (for benchmarks and tests)."""
        self.observer: CommitObserver | None = None
        """Called after each commit that returned (see :data:`CommitObserver`)."""

    async def submit(self, request: Req) -> Res:
        """Queue ``request`` in the open batch, wait for that batch's commit, return its outcome."""
        if self._open is None and self._last_size <= 1 and not self._lock.locked():
            return await self._commit_alone(request)
        batch = self._open
        if batch is None or len(batch.requests) >= self._max_batch:
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
            if batch.done is None:
                batch.done = anyio.Event()
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        return batch.outcomes[index]

    async def _commit_alone(self, request: Req) -> Res:
        # Nothing is committing and no batch is open: a batch of one, sealed
        # at once (taking the lock does not yield), so nobody else can come
        # to depend on this call and it needs no shield from cancellation.
        self._lock.acquire_nowait()
        try:
            self._last_size = 1
            self.batches += 1
            outcomes = await self._timed([request])
            if len(outcomes) != 1:
                raise RuntimeError(f"commit returned {len(outcomes)} outcomes for 1 request")
            return outcomes[0]
        finally:
            self._lock.release()

    async def _timed(self, requests: Sequence[Req]) -> Sequence[Res]:
        observer = self.observer
        if observer is None:
            return await self._commit(requests)
        # Real elapsed time, not a Clock's: a measurement, no decision depends on it.
        started = time.perf_counter()
        outcomes = await self._commit(requests)
        observer(time.perf_counter() - started, len(requests))
        return outcomes

    async def _lead(self, batch: _Batch[Req, Res]) -> None:
        async with self._lock:
            if self._last_size > 1:
                # One turn of the event loop before sealing: appenders that
                # are ready to run (typically the members of the batch that
                # just committed, coming back with their next append) join
                # this batch instead of leading batches of one in turn. A lone
                # appender (batches of one) skips the turn.
                await anyio.lowlevel.cancel_shielded_checkpoint()
            if self._open is batch:
                self._open = None  # sealed: later requests open the next batch
            self._last_size = len(batch.requests)
            self.batches += 1
            try:
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
                if batch.done is not None:
                    batch.done.set()
