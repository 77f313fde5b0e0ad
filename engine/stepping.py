"""Running step and compensation attempts for a Runner, each to an outcome it commits.

:class:`Stepper` runs the attempts a :class:`~sagalog.engine.runner.Runner`
commit started: it looks the step up, resolves its retry policy, runs one
attempt (in its span, its log fields bound, through the circuit breakers)
and hands the outcome event back to the Runner's commit path (a
:class:`Tick`). It keeps which attempts run in this process now
(:attr:`Stepper.inflight`), so a commit tells an attempt running here from
a crashed one, and a ``StepCancelled`` can cancel it.

A step whose commit starts the next one runs that one in the same task (a
:class:`~sagalog.engine.live.Handoff`): a sequence of steps costs no new
task per step.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import anyio
import anyio.abc
import msgspec
from sagalog.engine import logs
from sagalog.engine.breaker import Breakers
from sagalog.engine.live import Handoff, Live
from sagalog.engine.loader import Loader
from sagalog.engine.observer import outcome_of
from sagalog.engine.retry import DEFAULT_RETRY, RetryPolicy, resolve_policy
from sagalog.engine.sessions import Sessions
from sagalog.engine.steps import Attempt, outcome_event, run_attempt
from sagalog.engine.tracing import NO_SPAN, TRACING, SpanHandle, Tracing
from sagalog.engine.workflow import Registry, Step, StepContext, Workflow
from sagalog.replay.events import StepStarted, WorkflowEvent
from sagalog.replay.executor import StepTask
from sagalog.replay.saga import SagaState

from sagalog.clock import Clock


class Tick(Protocol):
    """Commits inputs of an instance and what follows from them (``Runner._tick``)."""

    async def __call__(
        self,
        instance_id: str,
        inputs: Sequence[WorkflowEvent],
        tg: anyio.abc.TaskGroup | None,
        *,
        own: bool = ...,
        handoff: list[Handoff] | None = ...,
    ) -> SagaState:
        """Commit ``inputs``; ``own``: a step outcome of this runner; ``handoff``: takes the next step."""
        ...


class Stepper:
    """Runs the step and compensation attempts of one Runner's instances.

    Args:
        registry: the steps this process can run.
        clock: the time of outcomes, retries and step timeouts.
        sessions: what ``ctx.session`` of a step uses.
        loader: the Runner's loader, whose ``observer`` is told of each attempt
            (read there each time: ``Runner.observer`` may replace it).
        tick: commits an attempt's outcome (``Runner._tick``).
        park: parks an instance whose step is not registered here (``Runner._park_running``).
        default_retry: retry policy of steps when neither step nor workflow names one.
        breakers: circuit breakers shared by steps that declare one.
    """

    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        sessions: Sessions,
        loader: Loader,
        tick: Tick,
        park: Callable[[str, str], Awaitable[None]],
        *,
        default_retry: RetryPolicy = DEFAULT_RETRY,
        breakers: Breakers | None = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self.sessions = sessions
        self.loader = loader
        self._tick = tick
        self._park = park
        self.default_retry = default_retry
        """Retry policy of steps when neither step nor workflow names one."""
        self.breakers = breakers or Breakers(clock)
        """Circuit breakers shared by steps that declare one."""
        self.tracing: Tracing = TRACING
        """Starts the spans of instances and attempts (a no-op without OpenTelemetry)."""
        self.steps_run = 0
        """Step and compensation attempts run to an outcome."""
        self.inflight: dict[str, dict[int, anyio.CancelScope]] = {}
        """Attempts running in this process: instance id -> {step seq: its cancel scope}."""
        self._rng = random.Random()

    def launch(
        self, live: Live, task: StepTask, tg: anyio.abc.TaskGroup, handoff: list[Handoff] | None
    ) -> None:
        """Run ``task`` in a new task of ``tg``, or hand it to the caller's task when it has none yet."""
        scope = anyio.CancelScope()
        self.inflight.setdefault(live.executor.instance_id, {})[task.seq] = scope
        snapshot = msgspec.structs.replace(task)  # the executor's copy keeps changing
        if handoff is not None and not handoff:
            handoff.append(Handoff(snapshot, scope, live.workflow))
            return
        tg.start_soon(self.run, live.executor.instance_id, live.workflow, snapshot, scope, tg)

    async def run(
        self,
        instance_id: str,
        wf: Workflow,
        task: StepTask,
        scope: anyio.CancelScope,
        tg: anyio.abc.TaskGroup,
    ) -> None:
        """Run ``task`` and commit its outcome, then each step that outcome hands to this task."""
        # A step that leads to the next one runs it in this same task: a
        # sequence of steps costs no task and no task-group bookkeeping per step.
        following: Handoff | None = Handoff(task, scope, wf)
        while following is not None:
            following = await self._run_one(instance_id, following, tg)

    def drop_handoff(self, instance_id: str, handoff: list[Handoff]) -> None:
        """Forget a handed-off step that will not run here, so the next commit restarts it."""
        running = self.inflight.get(instance_id, {})
        for taken in handoff:
            if running.get(taken.task.seq) is taken.scope:
                del running[taken.task.seq]

    async def _run_one(self, instance_id: str, current: Handoff, tg: anyio.abc.TaskGroup) -> Handoff | None:
        """Run one attempt and commit its outcome; returns the next step for this task to run."""
        wf, task, scope = current.workflow, current.task, current.scope
        step = self.registry.steps.get(task.name)
        if step is None:
            self.inflight.get(instance_id, {}).pop(task.seq, None)
            await self._park(instance_id, f"step {task.name!r} is not registered in this process")
            return None
        policy = resolve_policy(step.retry, wf.retry, self.default_retry)
        context = StepContext(
            instance_id, wf.name, task.name, task.seq, task.attempt, sessions=self.sessions
        )
        running = self.inflight.get(instance_id, {})
        handoff: list[Handoff] = []
        try:
            timeout = policy.timeout
            attempt, seconds = await self._attempt(instance_id, wf, step, task, scope, context, timeout)
            if attempt is None or scope.cancel_called:
                return None  # abandoned: the step was cancelled (a gather failed fast, or a cancel)
            self.steps_run += 1
            event = outcome_event(task, attempt, policy, self.clock.now(), self._rng)
            outcome = outcome_of(event)
            self.loader.observer.step_attempt(wf.name, task.name, task.kind, task.attempt, outcome, seconds)
            # Still marked as running here until its outcome is committed, so a
            # concurrent commit does not take it for a crashed attempt.
            # With its start: recorded with the outcome when that start was deferred
            # and a replay lost it (see ``Committer.commit``); dropped when recorded.
            started = StepStarted(task.seq, task.attempt)
            await self._tick(instance_id, [started, event], tg, own=True, handoff=handoff)
        except BaseException:
            self.drop_handoff(instance_id, handoff)
            raise
        finally:
            if running.get(task.seq) is scope:
                del running[task.seq]
        return handoff[0] if handoff else None

    async def _attempt(
        self,
        instance_id: str,
        wf: Workflow,
        step: Step,
        task: StepTask,
        scope: anyio.CancelScope,
        context: StepContext,
        timeout: float | None,
    ) -> tuple[Attempt | None, float]:
        """Run one attempt in its span, its log fields bound; (None, _) when cancelled."""
        token = logs.bind(step=task.name, attempt=task.attempt)
        attempt = None
        try:
            # The parent is the current span: the advance (``workflow <name>``) this runs in.
            with self._attempt_span(instance_id, wf, task) as span:
                # Real elapsed time for the duration metric (a measurement, not a decision).
                started = time.perf_counter()
                with scope:
                    attempt = await run_attempt(step, task, context, timeout, self.clock, self.breakers)
                seconds = time.perf_counter() - started
                if attempt is not None and attempt.error is not None:
                    span.fail(attempt.error)
            return attempt, seconds
        finally:
            logs.reset(token)

    def _attempt_span(
        self, instance_id: str, wf: Workflow, task: StepTask
    ) -> contextlib.AbstractContextManager[SpanHandle]:
        """The span of one attempt; built only when spans are recorded (this runs per attempt)."""
        if not self.tracing.recording():
            return contextlib.nullcontext(NO_SPAN)
        attributes: dict[str, str | int] = {
            "sagalog.instance_id": instance_id,
            "sagalog.workflow": wf.name,
            "sagalog.step": task.name,
            "sagalog.attempt": task.attempt,
        }
        return self.tracing.span(f"{task.kind} {task.name}", None, attributes)
