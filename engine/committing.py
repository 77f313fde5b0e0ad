"""Committing for a Runner: one batch a commit, and what that commit asks of the world.

:class:`Committer` is where a :class:`~sagalog.engine.runner.Runner`
records what an instance's inputs lead to. It feeds them to the instance's
executor, fires the timers and signal timeouts due by then, takes the
decisions the workflow code made, adds the attempts to start (due ones, and
ones recorded as started that do not run in this process: they crashed) and
appends all of it in one batch at the expected version, with the work-index
``Schedule`` folded from the result. One batch
at the expected version is what lets a crash lose at most one batch, and
makes a writer that raced another fail (the Runner then replays).

Only a commit that succeeded is counted (a first run, an end) and acted on:
the steps and children the code cancelled are cancelled and an ended
child's parent is told (through the Runner's
:class:`~sagalog.engine.family.Family`). A claim's first commit may be
deferred and appended with the next one (see :meth:`Committer.commit`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime

import anyio
import anyio.abc
import anyio.lowlevel
from sagalog.engine.family import Family
from sagalog.engine.instances import create_decided
from sagalog.engine.live import OUTCOMES, Handoff, Live, fold_pairs, valid_inputs
from sagalog.engine.loader import Loader
from sagalog.engine.stepping import Stepper
from sagalog.replay.events import (
    ChildCancelRequested,
    ChildStarted,
    SignalTimedOut,
    StepCancelled,
    StepScheduled,
    StepStarted,
    TimerFired,
    WorkflowContinuedAsNew,
    WorkflowEvent,
    encode_event,
    stream_id,
)
from sagalog.replay.executor import StepTask
from sagalog.replay.saga import ENDING_TYPES, TERMINAL, SagaState, ready_at
from sagalog.storage import Journal, NewEvent, Schedule

from sagalog.clock import Clock
from sagalog.errors import ConcurrencyError, DecodingError, NonDeterminismError

DEFERRABLE = (StepScheduled, StepStarted)
"""What a deferred commit may hold (see ``Committer.commit``): nothing the world must see yet."""

PIPELINED_INPUTS = (StepStarted, *OUTCOMES, TimerFired, SignalTimedOut)
"""Inputs a pipelined commit may take: a replay after a failed append can take the
outcomes again, and the timers fire again by themselves."""

CREATING = (ChildStarted, WorkflowContinuedAsNew)
"""Decisions that create another instance first (``create_decided``): never pipelined."""

Retick = Callable[[str, anyio.abc.TaskGroup], Awaitable[object]]
"""Commits an instance's lost outcomes and goes on with it (``Runner._tick`` with no input)."""


class Committer:
    """The commit path of one Runner: appends what an instance's inputs lead to, then acts on it.

    Args:
        journal: where the batches are appended.
        clock: the time of decisions, fired timers and due attempts.
        loader: the Runner's loader: its observer is told what a commit recorded,
            it forgets an executor ahead of the journal and saves snapshots.
        stepper: runs the attempts a commit starts and knows which run here now.
        family: children whose id was in use, children to cancel, parents to tell.
    """

    def __init__(
        self,
        journal: Journal,
        clock: Clock,
        loader: Loader,
        stepper: Stepper,
        family: Family,
        retick: Retick,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self._loader = loader
        self._stepper = stepper
        self._family = family
        self._retick = retick
        self.lost: dict[str, list[list[WorkflowEvent]]] = {}
        """Step outcomes (each after its start) of a pipelined append that failed, by
        instance: the next commit of the instance takes them again first (``Runner._tick``)."""

    async def commit_all(
        self,
        live: Live,
        inputs: Sequence[WorkflowEvent],
        tg: anyio.abc.TaskGroup | None,
        handoff: list[Handoff] | None = None,
        defer: bool = False,
    ) -> list[WorkflowEvent]:
        """Commit ``inputs``, then the timers and timeouts due, until none is; run the attempts
        started in ``tg`` when given. Returns the decisions recorded (a pipelined commit's
        are acted on by :meth:`send` once recorded)."""
        ex = live.executor
        pending = valid_inputs(ex, inputs)
        decided: list[WorkflowEvent] = []
        while True:
            now = self.clock.now()
            fired = ex.due_timers(now)
            lags = [(now - ex.timers[seq]).total_seconds() for seq in fired]
            pending += [TimerFired(seq) for seq in fired]
            pending += [SignalTimedOut(seq) for seq in ex.due_timeouts(now)]
            # Quiet: this runner holds the instance and goes on with it; no other worker is woken.
            started, decisions = await self.commit(
                live, pending, start=tg is not None, quiet=True, defer=defer, pipeline=tg is not None
            )
            for lag in lags:  # counted once recorded or queued (a failure replays and fires them again)
                self._loader.observer.timer_fired(live.workflow.name, lag)
            decided += decisions
            pending = []
            if tg is not None:
                if live.sending is None and any(not isinstance(e, DEFERRABLE) for e in live.deferred):
                    live.sending = anyio.Event()
                    tg.start_soon(self.send, live, tg)
                    # Let the append go out before the attempts run: each starts while the
                    # outcome before it is on its way to the journal, never before.
                    await anyio.lowlevel.checkpoint()
                for task in started:
                    self._stepper.launch(live, task, tg, handoff)
            if not (ex.due_timers(now) or ex.due_timeouts(now)) or ex.ended:
                return decided

    async def commit(
        self,
        live: Live,
        inputs: Sequence[WorkflowEvent],
        *,
        start: bool,
        metadata: Mapping[str, str] | None = None,
        quiet: bool = False,
        defer: bool = False,
        pipeline: bool = False,
    ) -> tuple[list[StepTask], list[WorkflowEvent]]:
        """Append ``inputs``, the decisions they lead to and the attempts to start, as one batch
        (``quiet``: see ``Journal.append``).

        ``defer``: when that batch only schedules and starts steps (a claim's
        first commit), keep it in ``live.deferred`` instead: the next commit,
        normally the first step's outcome, appends it first. A crash meanwhile
        leaves no trace of the attempt, hence not after a takeover
        (``Runner.advance``). An attempt whose deferred start a replay lost
        comes back as a ``StepStarted`` input (see ``live.valid_inputs``).

        ``pipeline``: for a ``live.pipelined`` instance, queue a batch of step
        outcomes in ``live.deferred`` and return at once; :meth:`send` appends
        the queue, one append in flight at a time, so the attempts this batch
        starts run while it is sent, and what they lead to meanwhile goes with
        the next append. Any other commit waits for the append in flight first.
        """
        ex = live.executor
        now = self.clock.now()
        ex.now = now
        # An attempt's start recorded with its outcome follows the decision that scheduled it.
        early = ex.decide(now) if any(isinstance(e, StepStarted) for e in inputs) else []
        try:
            ex.feed([(ex.version + i, event) for i, event in enumerate(inputs, 1)])
        except (DecodingError, NonDeterminismError):
            self._loader.forget(ex.instance_id)
            raise
        decisions = [*early, *ex.decide(now)]
        starts, crashed_here = self._attempts_to_start(live, now) if start else ([], 0)
        ex.feed([(ex.version + i, event) for i, event in enumerate(starts, 1)])
        if not (inputs or decisions or starts or live.deferred):
            return [], []
        tasks = [ex.steps[e.seq] for e in starts if isinstance(e, StepStarted)]
        held = not inputs and all(isinstance(event, DEFERRABLE) for event in decisions)
        if defer and starts and not crashed_here and held:
            live.deferred += [*decisions, *starts]
            live.deferred_decided += decisions
            live.deferred_at = now
            return tasks, decisions
        if (
            pipeline
            and live.pipelined
            and not crashed_here
            and metadata is None
            and all(isinstance(e, PIPELINED_INPUTS) for e in inputs)
            and not any(isinstance(d, CREATING) for d in decisions)
        ):
            live.deferred += [*early, *inputs, *decisions[len(early) :], *starts]
            live.deferred_decided += decisions
            outcomes = [e for e in inputs if isinstance(e, OUTCOMES)]
            if outcomes:
                live.queued.append([x for e in outcomes for x in (StepStarted(e.seq, e.attempt), e)])
            return tasks, []
        await self._settled(live)
        refused = await create_decided(self.journal, live.state, decisions, live.meta, now)
        # From ``decisions`` after create_decided, which puts each new run's real id in it.
        events = [*live.deferred, *early, *inputs, *decisions[len(early) :], *starts]
        if refused:  # a child id in use: its ChildFailed, and what the code does about it
            extra = await self._family.after_refusals(live, refused, now)
            events += extra
            decisions += extra
        input_meta = {**live.meta, **metadata} if metadata else live.meta
        first_input = len(live.deferred) + len(early)
        input_at = range(first_input, first_input + len(inputs))
        encoded = [
            encode_event(event, input_meta if i in input_at else live.meta) for i, event in enumerate(events)
        ]
        await self._append(live, events, encoded, [*live.deferred_decided, *decisions], quiet, now)
        live.deferred, live.deferred_decided, live.deferred_at = [], [], None
        return tasks, decisions

    async def _settled(self, live: Live) -> None:
        """Wait for the pipelined append in flight, if any; ConcurrencyError if it failed."""
        if live.sending is None:
            return
        await live.sending.wait()
        if self._loader.cache.get(live.executor.instance_id) is not live:
            raise ConcurrencyError(stream_id(live.executor.instance_id), -1, -1)  # replay

    async def _append(
        self,
        live: Live,
        events: Sequence[WorkflowEvent],
        encoded: list[NewEvent],
        decided: Sequence[WorkflowEvent],
        quiet: bool,
        now: datetime,
    ) -> None:
        """Append ``events`` at the stream's version with the work-index row they lead to,
        then fold them into ``live.state``; a failure forgets ``live`` (it is ahead)."""
        ex = live.executor
        stored = live.state.version
        pairs = [(stored + i, event) for i, event in enumerate(events, 1)]
        state = fold_pairs(live.state, pairs)
        next_ready = ready_at(state, now, ex.open_seqs())
        ready_now = next_ready is not None and next_ready <= now
        # While steps run or are due the row says "ready now" and a new "now" changes
        # nothing for a claim: not rewriting it spares the database an index update.
        schedule = None if ready_now and live.ready_now else Schedule(next_ready)
        try:
            await self.journal.append(
                stream_id(ex.instance_id),
                stored,
                encoded,
                schedule=schedule,
                quiet=quiet,
                final=any(type(event).__name__ in ENDING_TYPES for event in events),
            )
        except BaseException:
            self._loader.forget(ex.instance_id)  # its executor is ahead of the journal now
            raise
        self._observe(live, state, decided)
        live.state = state
        live.ready_now = ready_now
        await self._loader.save_snapshot(ex.instance_id, stored, state)

    async def send(self, live: Live, tg: anyio.abc.TaskGroup) -> None:
        """Append ``live.deferred`` as long as pipelined commits queue more (see :meth:`commit`),
        acting on each batch once recorded. When an append fails on a concurrent one, the
        instance replays and its lost outcomes are committed again (:attr:`lost`)."""
        instance_id = live.executor.instance_id
        failed = False
        try:
            while any(not isinstance(e, DEFERRABLE) for e in live.deferred):
                batch, decided = live.deferred, live.deferred_decided
                live.in_flight, live.queued = live.queued, []
                live.deferred, live.deferred_decided, live.deferred_at = [], [], None
                encoded = [encode_event(event, live.meta) for event in batch]
                await self._append(live, batch, encoded, decided, True, self.clock.now())
                live.in_flight = []
                await self.after_commit(instance_id, live.state, decided)
        except ConcurrencyError:
            failed = True
            self.lost[instance_id] = [*live.in_flight, *live.queued]
            self._loader.forget(instance_id)
        finally:
            sending, live.sending = live.sending, None
            if sending is not None:
                sending.set()
        if failed:
            await self._retick(instance_id, tg)

    def _attempts_to_start(self, live: Live, now: datetime) -> tuple[list[WorkflowEvent], int]:
        """The starts of the attempts due now, and how many of them replace an attempt left
        running by no one here (it crashed); an attempt running in this process is left alone."""
        running_here = self._stepper.inflight.get(live.executor.instance_id, {})
        starts: list[WorkflowEvent] = []
        crashed_here = 0
        for task in live.executor.open_steps():
            if task.seq in running_here:
                continue
            crashed = task.running
            if crashed or task.retry_at is None or task.retry_at <= now:
                starts.append(StepStarted(task.seq, task.attempt + 1))
            crashed_here += crashed
        return starts, crashed_here

    def _observe(self, live: Live, after: SagaState, decisions: Sequence[WorkflowEvent]) -> None:
        """Count a first run and a reached end (the commit that recorded them succeeded)."""
        name = live.workflow.name
        if decisions and not live.decided:
            live.decided = True
            self._loader.observer.workflow_started(name)
        status = after.status
        if status != live.state.status and (status in TERMINAL or status == "compensation_failed"):
            self._loader.observer.workflow_ended(name, status)

    async def after_commit(self, instance_id: str, state: SagaState, decided: list[WorkflowEvent]) -> None:
        """What a commit asks of the world: cancel steps and children, tell a parent."""
        running = self._stepper.inflight.get(instance_id, {})
        for event in decided:
            match event:
                case StepCancelled(seq=seq) if seq in running:
                    running[seq].cancel()
                case ChildCancelRequested(child_id=child_id):
                    await self._family.cancel_child(instance_id, child_id)
                case _:
                    pass
        await self._family.after_end(state)
