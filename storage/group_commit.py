"""Group commit: appends that arrive together share one transaction.

No background task: the first appender to take the lock becomes the leader and
commits every request queued so far, its own included; the others wait on the
lock and usually find their request already done. While a leader commits,
newcomers queue up and form the next batch, so batches grow with load and a
lone appender pays no extra latency.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio

Req = TypeVar("Req")
Res = TypeVar("Res")


class _Pending(Generic[Req, Res]):
    __slots__ = ("done", "error", "request", "result")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.done = False
        self.result: Res | None = None
        self.error: BaseException | None = None


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
        self._queue: list[_Pending[Req, Res]] = []
        self._lock = anyio.Lock()
        self.batches = 0
        """Number of commits made (for benchmarks and tests)."""

    async def submit(self, request: Req) -> Res:
        """Queue ``request``, take part in committing, return its outcome."""
        pending: _Pending[Req, Res] = _Pending(request)
        self._queue.append(pending)
        while not pending.done:
            async with self._lock:
                if pending.done:
                    break
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                # Shielded: once a batch is taken, its requests belong to this
                # leader, and a cancelled leader would strand the others with
                # no way to know whether their events were written.
                with anyio.CancelScope(shield=True):
                    await self._run(batch)
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    async def _run(self, batch: list[_Pending[Req, Res]]) -> None:
        self.batches += 1
        try:
            outcomes = await self._commit([p.request for p in batch])
        except Exception as exc:
            for p in batch:
                p.error, p.done = exc, True
            return
        for p, outcome in zip(batch, outcomes, strict=True):
            p.result, p.done = outcome, True
