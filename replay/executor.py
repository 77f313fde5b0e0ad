"""THE executor: drives a workflow generator against a history.

There is one way to run workflow code, used for both replay and live runs.
The executor reads a stream's events in order. *Inputs* (a step completed, a
timer fired, a signal arrived, ...) resume the generator; every command the
generator yields becomes an expected *decision* (``StepScheduled``,
``TimerStarted``, ...), and each decision recorded in the history must equal
the next expected one, or :class:`~sagalog.errors.NonDeterminismError` names
the event, what was recorded and what the code yielded now.

Live execution is the same replay plus one step forward: the runner feeds
the new inputs, calls :meth:`Executor.decide` to get the decisions the code
made that the history does not hold yet, and appends inputs and decisions in
one batch. Because the generator only ever sees the events in journal order,
replaying a history reproduces exactly the states the live run went through.

Results are looked up by command index (``seq``); values recorded at
decision time (timer deadlines, ``ctx.now()``, child ids) are taken from the
history when it has them, so replay never recomputes them.

No exception is thrown into workflow code for the executor's own control
flow: a workflow suspends at its ``yield`` (the generator simply is not
resumed until its result is known), and an evicted or cancelled instance's
generator is closed (``GeneratorExit``, a BaseException). So a workflow's
``except Exception`` only ever sees step failures, signal timeouts and its
own errors.

The executor is built in layers, each a module: the fields it keeps
(:mod:`~sagalog.replay.executor_state`), how an instance ends and compensates
(:mod:`~sagalog.replay.ending`), and what each yielded command does
(:mod:`~sagalog.replay.yields`). This module feeds the history through them
and answers the runner; the ``ctx`` workflows see is in
:mod:`~sagalog.replay.context`.
"""

from __future__ import annotations

import contextlib
import random as _random
import uuid as _uuid
from collections.abc import Generator, Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec
from sagalog.replay.context import WorkflowContext
from sagalog.replay.decisions import (
    ChildTask,
    StepTask,
    default_decode,
    default_decode_args,
    next_run_id,
    same_decision,
    to_pairs,
    type_name,
)
from sagalog.replay.events import (
    DECISION_TYPES,
    CancelRequested,
    ChildCompleted,
    ChildFailed,
    CompensationCompleted,
    CompensationFailed,
    CompensationRetried,
    CompensationSkipped,
    MarkerRecorded,
    SignalReceived,
    SignalTimedOut,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepStarted,
    TimerFired,
    TimerStarted,
    WorkflowEvent,
    WorkflowStarted,
    describe,
)
from sagalog.replay.executor_state import ArgsDecoder, Outcome, ResultDecoder, WorkflowFunction
from sagalog.replay.yields import YieldHandling
from sagalog.storage import Event, encode_value

from sagalog.errors import InvalidCommandError, NonDeterminismError, SignalTimeoutError


class Executor(YieldHandling):
    """Drives one workflow instance's generator against its history.

    Args:
        fn: the workflow generator function ``fn(ctx, *args)``.
        instance_id: the instance.
        workflow: the workflow's name.
        decode_args: recorded arguments back to values.
        decode_result: recorded results back to values (typed by the engine).
    """

    def __init__(
        self,
        fn: WorkflowFunction,
        instance_id: str,
        workflow: str = "",
        *,
        decode_args: ArgsDecoder = default_decode_args,
        decode_result: ResultDecoder = default_decode,
    ) -> None:
        super().__init__(fn, instance_id, workflow, decode_args, decode_result)

    # -- feeding the history -------------------------------------------------

    def feed(self, events: Iterable[tuple[int, WorkflowEvent]]) -> None:
        """Process events in journal order (``(version, event)`` pairs).

        Raises:
            NonDeterminismError: a recorded decision differs from what the code does now.
            DecodingError: a recorded value cannot be decoded.
        """
        self._history.extend(events)
        while self._cursor < len(self._history):
            version, event = self._history[self._cursor]
            self._cursor += 1
            self.version = version
            self._process(version, event)

    def decide(self, now: datetime | None = None) -> list[WorkflowEvent]:
        """The decisions the code made that the history does not hold yet (to append).

        Side effects the generator waits for (``ctx.now()``, ``ctx.uuid()``,
        ``ctx.random()``) are generated here, so a live run moves on without
        an extra round trip. The decisions count as recorded from now on: if
        they cannot be appended, drop this executor and replay.
        """
        if now is not None:
            self.now = now
        decided: list[WorkflowEvent] = []
        while self._expected:
            event = self._expected.popleft()
            if isinstance(event, MarkerRecorded) and event.seq >= 0 and event.seq == self._marker_wait:
                event = msgspec.structs.replace(event, value=self._side_effect(event.kind))
                decided.append(event)
                self._on_marker(event)
            else:
                decided.append(event)
        self.version += len(decided)
        self._cursor = len(self._history)
        return decided

    def _side_effect(self, kind: str) -> bytes:
        match kind:
            case "now":
                return encode_value(self.now)
            case "uuid":
                return encode_value(str(_uuid.uuid4()))
            case _:
                return encode_value(_random.random())

    # -- one event -----------------------------------------------------------

    def _process(self, version: int, event: WorkflowEvent) -> None:
        if isinstance(event, DECISION_TYPES):
            self._match(version, event)
            return
        match event:
            case WorkflowStarted():
                self._start(event)
            case StepStarted(seq=seq, attempt=attempt):
                task = self.steps.get(seq)
                if task is not None and not task.done:
                    task.attempt, task.running, task.retry_at = attempt, True, None
            case StepCompleted(seq=seq, result=result):
                task = self.steps.get(seq)
                if task is not None and not task.done:
                    task.done, task.running, task.result = True, False, result
                    if task.compensation is not None:
                        self._comp_stack.append(seq)
                    self._deliver(seq, Outcome(self.decode_result("step", task.name, result)))
            case StepFailed(seq=seq):
                self._step_failed(event)
            case TimerFired(seq=seq):
                if self.timers.pop(seq, None) is not None:
                    self._deliver(seq, Outcome(None))
            case SignalReceived(name=name, payload=payload):
                self._signal(name, payload)
            case SignalTimedOut(seq=seq):
                wait = self.waits.pop(seq, None)
                if wait is not None:
                    self._deliver(seq, Outcome(error=SignalTimeoutError(wait[0], wait[1] or 0.0)))
            case ChildCompleted(seq=seq) | ChildFailed(seq=seq):
                self._child_done(event)
            case CancelRequested(reason=reason):
                self._cancel(reason)
            case CompensationCompleted(seq=seq):
                task = self.steps.get(seq)
                if task is not None and not task.done and seq == self._comp_current:
                    task.done, task.running = True, False
                    self._next_compensation()
            case CompensationFailed(seq=seq):
                task = self.steps.get(seq)
                if task is not None and seq == self._comp_current:
                    task.running, task.retry_at = False, None
                    self.status = "compensation_failed"
            case CompensationRetried(seq=seq):
                task = self.steps.get(seq)
                if task is not None and seq == self._comp_current:
                    task.attempt_base, task.retry_at = task.attempt, None
                    self.status = "compensating"
            case CompensationSkipped(seq=seq):
                task = self.steps.get(seq)
                if task is not None and seq == self._comp_current:
                    task.done, task.running = True, False
                    self.status = "compensating"
                    self._next_compensation()
            case _:
                pass  # parking, unparking, parent notices: the runner's business

    def _start(self, event: WorkflowStarted) -> None:
        if self._gen is not None:
            return
        self.workflow = event.workflow
        self.session_id = event.session_id
        args = self.decode_args(event.args)
        self.status = "running"
        try:
            # Only the generator's frame holds the context: once the generator is
            # closed (ended, or evicted: see close()) no cycle is left to collect.
            gen = self.fn(WorkflowContext(self), *args)
        except Exception as exc:
            self._finish_error(exc)
            return
        if not isinstance(gen, Generator):
            self._finish_error(
                InvalidCommandError(f"workflow {self.workflow!r} is not a generator function")
            )
            return
        self._gen = gen
        self._resume()

    # -- matching decisions ------------------------------------------------

    def _match(self, version: int, recorded: WorkflowEvent) -> None:
        if not self._expected:
            doing = "nothing new (it is waiting)" if not self.ended else "nothing (it has ended)"
            raise NonDeterminismError(version, describe(recorded), doing)
        yielded = self._expected.popleft()
        if not same_decision(recorded, yielded):
            raise NonDeterminismError(version, describe(recorded), describe(yielded))
        # The history holds the values decided at the time; replay uses those.
        match recorded:
            case TimerStarted(seq=seq, fire_at=fire_at) if seq in self.timers:
                self.timers[seq] = fire_at
            case SignalWaitStarted(seq=seq, timeout_at=timeout_at) if seq in self.waits:
                name, timeout, _ = self.waits[seq]
                self.waits[seq] = (name, timeout, timeout_at)
            case StepScheduled(seq=seq, compensation=compensation) if seq in self.steps:
                self.steps[seq].compensation = compensation
            case MarkerRecorded(seq=seq) if seq >= 0:
                self._on_marker(recorded)
            case _:
                pass

    def _on_marker(self, marker: MarkerRecorded) -> None:
        if marker.seq != self._marker_wait:
            return
        self._marker_wait = None
        value = self.decode_result("marker", marker.kind, marker.value)
        if marker.kind == "now" and isinstance(value, str):
            value = datetime.fromisoformat(value)
        self._resume(value)

    # -- patches ---------------------------------------------------------------

    def _next_recorded_decision(self) -> WorkflowEvent | None:
        """The recorded decision the next yielded one will be matched against, if any."""
        skip = len(self._expected)
        for _, event in self._history[self._cursor :]:
            if isinstance(event, DECISION_TYPES):
                if skip == 0:
                    found: WorkflowEvent = event
                    return found
                skip -= 1
        return None

    def patched(self, change_id: str) -> bool:
        """See :meth:`WorkflowContext.patched`."""
        if change_id in self._patches:
            return self._patches[change_id]
        upcoming = self._next_recorded_decision()
        marker = MarkerRecorded(-1, "patch", patch_id=change_id)
        if upcoming is None or same_decision(upcoming, marker):
            self._expected.append(marker)
            self._patches[change_id] = True
        else:
            self._patches[change_id] = False
        return self._patches[change_id]

    def deprecate_patch(self, change_id: str) -> None:
        """See :meth:`WorkflowContext.deprecate_patch`."""
        marker = MarkerRecorded(-1, "patch", patch_id=change_id)
        upcoming = self._next_recorded_decision()
        if change_id not in self._patches and upcoming is not None and same_decision(upcoming, marker):
            self._expected.append(marker)
        self._patches[change_id] = True

    # -- what the runner asks -----------------------------------------------

    def open_steps(self) -> list[StepTask]:
        """Steps and compensations not done yet, by command index."""
        return [task for task in self._unfinished() if self._step_live(task)]

    @property
    def caught_up(self) -> bool:
        """Every decision the code has made is in the history fed so far (as after a commit)."""
        return not self._expected

    def open_seqs(self) -> list[int]:
        """The command indexes of the steps and compensations not done yet (live or not)."""
        return [task.seq for task in self._unfinished()]

    def _unfinished(self) -> list[StepTask]:
        found: list[StepTask] = []
        for task in list(self._open.values()):
            if task.done:
                del self._open[task.seq]  # for good: a done step never reopens
            else:
                found.append(task)
        return found

    def _step_live(self, task: StepTask) -> bool:
        if task.kind == "compensation":
            return task.seq == self._comp_current and self.status == "compensating"
        return True

    def open_children(self) -> list[ChildTask]:
        """Child workflows whose outcome the instance still waits for."""
        return [c for c in self.children.values() if not c.done]

    def due_timers(self, now: datetime) -> list[int]:
        """Timers whose time has come."""
        if not self.timers:
            return []  # the usual case, asked after every commit
        return [seq for seq, at in self.timers.items() if at <= now]

    def due_timeouts(self, now: datetime) -> list[int]:
        """Signal waits whose timeout has passed."""
        if not self.waits:
            return []
        return [seq for seq, (_, _, at) in self.waits.items() if at is not None and at <= now]

    def close(self) -> None:
        """Close the workflow generator of an instance dropped from memory (evicted).

        Its frame, and the context and executor it refers to, are freed at once
        rather than by the cycle collector; its ``finally`` blocks run, as they
        would when the collector closed it. Nothing may be fed afterwards.
        """
        if self._gen is not None:
            gen, self._gen = self._gen, None
            # Workflow code that raises or yields while closing only hurts itself:
            # the instance is out of memory already and replays when next needed.
            with contextlib.suppress(Exception):
                gen.close()

    def wake_at(self) -> datetime | None:
        """The earliest retry, timer or timeout ahead (None when none)."""
        times = [t.retry_at for t in self.open_steps() if t.retry_at is not None and not t.running]
        times.extend(self.timers.values())
        times.extend(at for _, _, at in self.waits.values() if at is not None)
        return min(times, default=None)


def replay_history(
    fn: WorkflowFunction,
    args: Sequence[Any] | None,
    events: Iterable[Event | tuple[int, WorkflowEvent]],
    *,
    instance_id: str = "replay",
    workflow: str = "",
    decode_result: ResultDecoder = default_decode,
) -> Executor:
    """Drive ``fn`` against a recorded history without running any step.

    Args:
        fn: the workflow generator function, as the code is now.
        args: its arguments; None to decode them from ``WorkflowStarted``.
        events: the history, stored events or ``(version, event)`` pairs.

    Returns:
        The executor after the last event (its ``status``, ``result``, ...).

    Raises:
        NonDeterminismError: the code does not make the recorded decisions.
        DecodingError: a recorded event or value cannot be decoded.
    """
    fixed = None if args is None else tuple(args)
    executor = Executor(
        fn,
        instance_id,
        workflow,
        decode_args=default_decode_args if fixed is None else (lambda _data: fixed),
        decode_result=decode_result,
    )
    executor.feed(to_pairs(events))
    return executor


__all__ = [  # the helpers from sagalog.replay.decisions are re-exported for the engine and tools
    "ArgsDecoder",
    "ChildTask",
    "Executor",
    "ResultDecoder",
    "StepTask",
    "WorkflowContext",
    "WorkflowFunction",
    "default_decode",
    "default_decode_args",
    "next_run_id",
    "replay_history",
    "to_pairs",
    "type_name",
]
