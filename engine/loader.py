"""Bringing instances into memory: the sticky cache, replay from the journal, snapshots, parking.

:class:`Loader` keeps the Runner's live instances in an LRU cache (sticky
execution). An instance that is not cached, or whose cached copy fell
behind in a way that cannot be fed forward, is read from the journal, its
state folded (from a snapshot when the history is long) and its workflow
code replayed against the history. One that cannot run is parked, not
failed: its workflow is unknown here, its code no longer matches its
history, or an event cannot be decoded. One that has ended or is parked
raises :class:`~sagalog.engine.live.Idle`. Snapshots are saved here too,
every ``snapshot_every`` events, next to the rule that decides when a load
reads one.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from sagalog.engine.live import Idle, Live, LiveCache, fold_pairs
from sagalog.engine.observer import NULL_OBSERVER, Observer
from sagalog.engine.tracing import trace_of
from sagalog.engine.workflow import Registry
from sagalog.replay.events import (
    DECISION_TYPES,
    WorkflowEvent,
    WorkflowParked,
    decode_event,
    encode_event,
    stream_id,
)
from sagalog.replay.executor import Executor, default_decode
from sagalog.replay.saga import TERMINAL, SagaFold, SagaState, apply_event
from sagalog.storage import Event, Journal, Schedule, Snapshot

from sagalog.clock import Clock
from sagalog.errors import DecodingError, NonDeterminismError, NotFoundError, UnknownWorkflowError

Pairs = list[tuple[int, WorkflowEvent]]
"""Decoded events, each with its version."""


class Loader:
    """Loads the instances a Runner advances, keeping recently used ones in memory.

    Args:
        journal: where instances live.
        registry: the workflows and steps whose code is replayed.
        clock: the time of decisions not recorded yet.
        fold: folds saga streams (shared with the Runner).
        meta: the worker's event metadata (a park's event carries it).
        snapshot_every: how often snapshots are saved (0: never); a history
            this long or longer is folded from its latest snapshot.
        cache_size: how many replayed instances to keep.
        in_use: whether an instance is being advanced now (its evicted executor is
            then left open for its holder; see ``LiveCache``).
    """

    def __init__(
        self,
        journal: Journal,
        registry: Registry,
        clock: Clock,
        fold: SagaFold,
        *,
        meta: dict[str, str],
        snapshot_every: int,
        cache_size: int,
        in_use: Callable[[str], bool] = lambda _instance_id: False,
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.clock = clock
        self.fold = fold
        self.meta = meta
        self.snapshot_every = snapshot_every
        self.cache = LiveCache(max(1, cache_size), in_use)
        """Live instances by id, the least recently used dropped first (sticky execution)."""
        self.cache_hits = 0
        """Loads that found the instance's executor in the cache."""
        self.cache_misses = 0
        """Loads that replayed the instance from the journal."""
        self.observer: Observer = NULL_OBSERVER
        """Told what is worth counting: replays and parks here, commits and steps by the
        Runner, which reads it here (``Runner.observer`` sets it)."""

    async def load(self, instance_id: str, *, trust_cache: bool = False, trust_fresh: bool = False) -> Live:
        """The instance's live executor, from the cache (caught up) or replayed.

        With ``trust_cache`` a cached executor is used as it is, without
        reading the events appended since it was cached. That is safe because
        the next append expects the cached version (the fencing token): if
        anyone else appended meanwhile, it fails with ConcurrencyError and the
        caller replays. It saves a query per step when this runner is the
        only writer, as it is between a step's start and its outcome.
        ``trust_fresh`` trusts only a copy :meth:`preload` read and nothing used since.

        Raises:
            Idle: the instance has ended or is parked, or was parked now.
            NotFoundError: there is no such instance.
        """
        live = self.cache.get(instance_id)
        if live is not None:
            fresh, live.fresh = live.fresh, False
            if fresh and trust_fresh:
                return live  # counted as a miss when preload() replayed it
            self.cache_hits += 1
            if trust_cache:
                return live
            tail = await self.journal.read_stream(stream_id(instance_id), live.state.version + 1)
            if not tail:
                return live
            if live.deferred:  # its executor is ahead of the journal and cannot take the tail
                self.cache.pop(instance_id, None)
                return await self.load(instance_id)
            if live.traceparent is None:  # another worker may have started the trace meanwhile
                live.set_trace(trace_of(tail), self.meta)
            try:
                pairs = [(event.version, decode_event(event)) for event in tail]
                live.executor.now = self.clock.now()
                live.executor.feed(pairs)
                live.state = fold_pairs(live.state, pairs)
            except (DecodingError, NonDeterminismError):
                self.cache.pop(instance_id, None)
            else:
                if live.state.status in ("parked", *TERMINAL):
                    self.cache.pop(instance_id, None)
                    raise Idle(live.state)
                return live
        self.cache_misses += 1
        try:
            pairs, trace = await read_history(self.journal, instance_id)
        except DecodingError as exc:
            raise Idle(await self.park(instance_id, "undecodable", str(exc))) from None
        return await self._replay(instance_id, pairs, park=True, trace=trace)

    async def reload(self, instance_id: str) -> Live:
        """Replay the instance from the journal whatever its status, parking nothing (to unpark it).

        Raises:
            NotFoundError: there is no such instance.
            NonDeterminismError, UnknownWorkflowError, DecodingError: it cannot run.
        """
        pairs, trace = await read_history(self.journal, instance_id)
        return await self._replay(instance_id, pairs, park=False, trace=trace)

    async def preload(self, instance_ids: Sequence[str]) -> None:
        """Replay into the cache, reading them in one query, the instances not cached yet.

        For a worker that has just claimed them: their streams are read after
        the claim, so the next load of each trusts the replayed copy without
        reading its tail again (an append by anyone since then still makes
        that advance's commit fail and replay). Instances that cannot run
        (ended, parked, unknown or undecodable) are left to :meth:`load`.
        """
        missing = [i for i in dict.fromkeys(instance_ids) if i not in self.cache]
        if len(missing) < 2:
            return  # one query either way
        found = await self.journal.read_streams([stream_id(i) for i in missing])
        await self.adopt({i: found.get(stream_id(i), []) for i in missing})

    async def adopt(
        self, histories: Mapping[str, Sequence[Event]], limit: int | None = None, *, claimed: bool = False
    ) -> None:
        """Replay into the cache instances whose events were just read (see :meth:`preload`).

        ``limit``: the histories were read up to that many events, so one that
        long may be cut short and is left to :meth:`load`. ``claimed``: they
        were just claimed from the work index as ready now (``Live.ready_now``).
        """
        for instance_id, stored in histories.items():
            if not stored or instance_id in self.cache:
                continue
            if limit is not None and len(stored) >= limit:
                continue
            if self.snapshot_every and len(stored) >= self.snapshot_every:
                continue  # long histories load through their snapshot in load()
            try:
                pairs = [(event.version, decode_event(event)) for event in stored]
                state = fold_pairs(self.fold.initial(stream_id(instance_id)), pairs)
                if state.status in ("parked", *TERMINAL):
                    continue
                trace = trace_of(stored)
                live = await self._replay(instance_id, pairs, park=False, state=state, trace=trace)
            except (UnknownWorkflowError, NonDeterminismError, DecodingError):
                continue
            live.fresh = True
            live.ready_now = claimed
            self.cache_misses += 1

    async def save_snapshot(self, instance_id: str, base: int, state: SagaState) -> None:
        """Save ``state`` as a snapshot when the commit from version ``base`` to it crossed a
        multiple of ``snapshot_every`` (a later load of a long history folds from there)."""
        every = self.snapshot_every
        if every > 0 and state.version // every > base // every:
            data = self.fold.encode(state)
            await self.journal.save_snapshot(
                Snapshot(stream_id(instance_id), state.version, data, self.fold.schema)
            )

    def forget(self, instance_id: str) -> None:
        """Drop the cached copy, if any: the next load replays from the journal."""
        self.cache.pop(instance_id, None)

    def decode(self, kind: str, name: str, data: bytes) -> Any:
        """A recorded result, decoded by its step's own decoder when the step is registered."""
        step = self.registry.steps.get(name) if kind == "step" else None
        return step.decode_result(data) if step is not None else default_decode(kind, name, data)

    async def park(
        self, instance_id: str, kind: str, reason: str, state: SagaState | None = None
    ) -> SagaState:
        """Append WorkflowParked (not terminal: an operator can fix and unpark); the state after it.

        Raises:
            ConcurrencyError: someone else appended first.
        """
        self.cache.pop(instance_id, None)
        if state is None:
            state = await readable_state(self.journal, self.fold, instance_id)
        event = WorkflowParked(reason, kind)  # type: ignore[arg-type]
        await self.journal.append(
            stream_id(instance_id),
            state.version,
            [encode_event(event, self.meta)],
            schedule=Schedule(None),
            final=True,
        )
        self.observer.workflow_parked(state.workflow, kind)
        return apply_event(state, event, state.version + 1)

    async def _replay(
        self,
        instance_id: str,
        pairs: Pairs,
        *,
        park: bool,
        state: SagaState | None = None,
        trace: str | None = None,
    ) -> Live:
        """Run the workflow code against ``pairs`` and cache the result.

        ``park``: raise Idle for an instance that has ended or is parked, and
        park one that cannot run; otherwise let its error out.
        """
        if state is None:
            state = await state_from(self.journal, self.fold, instance_id, pairs, self.snapshot_every)
        if park and (state.status in TERMINAL or state.status == "parked"):
            raise Idle(state)
        try:
            wf = self.registry.workflow(state.workflow)
            executor = Executor(
                wf.fn, instance_id, wf.name, decode_args=wf.decode_args, decode_result=self.decode
            )
            executor.now = self.clock.now()  # the time of decisions not recorded yet
            started = time.perf_counter()  # real elapsed time, for the replay duration metric
            executor.feed(pairs)
            self.observer.replayed(wf.name, len(pairs), time.perf_counter() - started)
        except (UnknownWorkflowError, NonDeterminismError, DecodingError) as exc:
            if not park:
                raise
            kind = {UnknownWorkflowError: "unknown_workflow", NonDeterminismError: "non_determinism"}
            raise Idle(
                await self.park(instance_id, kind.get(type(exc), "undecodable"), str(exc), state)
            ) from None
        decided = any(isinstance(event, DECISION_TYPES) for _, event in pairs)
        live = Live(executor, state, wf, decided=decided)
        live.set_trace(trace, self.meta)
        self.cache[instance_id] = live
        return live


async def read_history(journal: Journal, instance_id: str) -> tuple[Pairs, str | None]:
    """The decoded history and the instance's trace context (see ``tracing.trace_of``).

    Raises:
        NotFoundError: there is no such instance.
        DecodingError: an event cannot be decoded.
    """
    stored = await journal.read_stream(stream_id(instance_id))
    if not stored:
        raise NotFoundError(f"no workflow instance {instance_id!r}")
    return [(event.version, decode_event(event)) for event in stored], trace_of(stored)


async def state_from(
    journal: Journal, fold: SagaFold, instance_id: str, pairs: Pairs, snapshot_every: int
) -> SagaState:
    """The latest snapshot plus the events after it, so a long history is not folded from event 1."""
    state, start = fold.initial(stream_id(instance_id)), 0
    # Every event is in ``pairs`` already: a snapshot only saves folding, which
    # costs less than the query for a history shorter than one snapshot period.
    if snapshot_every > 0 and pairs and pairs[-1][0] >= snapshot_every:
        stream = stream_id(instance_id)
        found = await journal.latest_snapshot(stream, pairs[-1][0], fold.schema)
        if found is not None:
            with contextlib.suppress(DecodingError):  # derived data: an unreadable one is skipped
                state, start = fold.decode(found.state), found.version
    return fold_pairs(state, [pair for pair in pairs if pair[0] > start])


async def readable_state(journal: Journal, fold: SagaFold, instance_id: str) -> SagaState:
    """The state folded from the events that decode, at the stream's real version."""
    state = fold.initial(stream_id(instance_id))
    stored = await journal.read_stream(stream_id(instance_id))
    try:
        for event in stored:
            state = fold.apply(state, event)
    except DecodingError:
        pass  # the rest cannot be read; the park records why
    return msgspec.structs.replace(state, version=len(stored))
