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

from collections.abc import Mapping, Sequence
from datetime import datetime

import anyio.abc
from sagalog.engine.family import Family
from sagalog.engine.instances import create_decided
from sagalog.engine.live import Handoff, Live, fold_pairs, valid_inputs
from sagalog.engine.loader import Loader
from sagalog.engine.stepping import Stepper
from sagalog.replay.events import (
    ChildCancelRequested,
    SignalTimedOut,
    StepCancelled,
    StepScheduled,
    StepStarted,
    TimerFired,
    WorkflowEvent,
    encode_event,
    stream_id,
)
from sagalog.replay.executor import StepTask
from sagalog.replay.saga import ENDING_TYPES, TERMINAL, SagaState, ready_at
from sagalog.storage import Journal, Schedule

from sagalog.clock import Clock
from sagalog.errors import DecodingError, NonDeterminismError

DEFERRABLE = (StepScheduled, StepStarted)
"""What a deferred commit may hold (see ``Committer.commit``): nothing the world must see yet."""


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
        self, journal: Journal, clock: Clock, loader: Loader, stepper: Stepper, family: Family
    ) -> None:
        self.journal = journal
        self.clock = clock
        self._loader = loader
        self._stepper = stepper
        self._family = family

    async def commit_all(
        self,
        live: Live,
        inputs: Sequence[WorkflowEvent],
        tg: anyio.abc.TaskGroup | None,
        handoff: list[Handoff] | None = None,
        defer: bool = False,
    ) -> list[WorkflowEvent]:
        """Commit ``inputs``, then the timers and timeouts due, until none is; run the attempts
        started in ``tg`` when given. Returns the decisions recorded (or deferred)."""
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
                live, pending, start=tg is not None, quiet=True, defer=defer
            )
            for lag in lags:  # counted once recorded (a conflict replays and fires them again)
                self._loader.observer.timer_fired(live.workflow.name, lag)
            decided += decisions
            pending = []
            if tg is not None:
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
    ) -> tuple[list[StepTask], list[WorkflowEvent]]:
        """Append ``inputs``, the decisions they lead to and the attempts to start, as one batch
        (``quiet``: see ``Journal.append``).

        ``defer``: when that batch only schedules and starts steps (a claim's
        first commit), keep it in ``live.deferred`` instead: the next commit,
        normally the first step's outcome, appends it first. A crash meanwhile
        leaves no trace of the attempt, hence not after a takeover
        (``Runner.advance``). An attempt whose deferred start a replay lost
        comes back as a ``StepStarted`` input (see ``live.valid_inputs``).
        """
        ex = live.executor
        now = self.clock.now()
        ex.now = now
        stored = ex.version - len(live.deferred)  # the stream's version in the journal
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
        if (
            defer
            and starts
            and not inputs
            and not crashed_here
            and all(isinstance(event, DEFERRABLE) for event in decisions)
        ):
            live.deferred += [*decisions, *starts]
            live.deferred_at = now
            return tasks, decisions
        refused = await create_decided(self.journal, live.state, decisions, live.meta, now)
        # From ``decisions`` after create_decided, which puts each new run's real id in it.
        events = [*live.deferred, *early, *inputs, *decisions[len(early) :], *starts]
        if refused:  # a child id in use: its ChildFailed, and what the code does about it
            extra = await self._family.after_refusals(live, refused, now)
            events += extra
            decisions += extra
        pairs = [(stored + i, event) for i, event in enumerate(events, 1)]
        state = fold_pairs(live.state, pairs)
        input_meta = {**live.meta, **metadata} if metadata else live.meta
        first_input = len(live.deferred) + len(early)
        input_at = range(first_input, first_input + len(inputs))
        next_ready = ready_at(state, now, ex.open_seqs())
        ready_now = next_ready is not None and next_ready <= now
        # While steps run or are due the row says "ready now" and a new "now" changes
        # nothing for a claim: not rewriting it spares the database an index update.
        schedule = None if ready_now and live.ready_now else Schedule(next_ready)
        try:
            await self.journal.append(
                stream_id(ex.instance_id),
                stored,
                [
                    encode_event(event, input_meta if i in input_at else live.meta)
                    for i, event in enumerate(events)
                ],
                schedule=schedule,
                quiet=quiet,
                final=any(type(event).__name__ in ENDING_TYPES for event in events),
            )
        except BaseException:
            self._loader.forget(ex.instance_id)  # its executor is ahead of the journal now
            raise
        self._observe(live, state, [*live.deferred, *decisions])
        live.state = state
        live.ready_now = ready_now
        live.deferred, live.deferred_at = [], None
        await self._loader.save_snapshot(ex.instance_id, stored, state)
        return tasks, decisions

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
