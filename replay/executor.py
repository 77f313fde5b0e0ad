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
"""

from __future__ import annotations

import contextlib
import random as _random
import traceback
import uuid as _uuid
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from sagalog.replay.commands import (
    ChildCall,
    ContinueAsNew,
    Gather,
    Now,
    Random,
    Sleep,
    SleepUntil,
    StepCall,
    Uuid,
    WaitSignal,
)
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
    CHILD_ID_IN_USE,
    DECISION_TYPES,
    CancelRequested,
    ChildCancelRequested,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    CompensationCompleted,
    CompensationFailed,
    CompensationRetried,
    CompensationSkipped,
    CompensationStarted,
    MarkerRecorded,
    SignalReceived,
    SignalTimedOut,
    SignalWaitStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepStarted,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowCompensated,
    WorkflowCompleted,
    WorkflowContinuedAsNew,
    WorkflowEvent,
    WorkflowFailed,
    WorkflowStarted,
    describe,
)
from sagalog.replay.sessions import SessionCommands  # issue 5: ctx.session
from sagalog.storage import Event, encode_value

from sagalog.errors import (
    ChildWorkflowAlreadyStartedError,
    EncodingError,
    InvalidCommandError,
    NonDeterminismError,
    SignalTimeoutError,
    StepError,
    WorkflowError,
)

WorkflowGenerator = Generator[Any, Any, Any]
WorkflowFunction = Callable[..., WorkflowGenerator]
ResultDecoder = Callable[[str, str, bytes], Any]
"""``decode(kind, name, data)``: a recorded result back to a value (kind: step, child, marker)."""
ArgsDecoder = Callable[[bytes], tuple[Any, ...]]
"""``decode(data)``: a workflow's recorded arguments back to values."""

Status = Literal[
    "new", "running", "compensating", "compensation_failed",
    "completed", "failed", "compensated", "cancelled",
]  # fmt: skip

_NIL = b"\xc0"  # msgpack None


class _Outcome(msgspec.Struct, frozen=True):
    value: Any = None
    error: BaseException | None = None


class _Waiting(msgspec.Struct):
    seqs: list[int]
    kind: Literal["one", "gather"] = "one"
    fail_fast: bool = True


class WorkflowContext:
    """The ``ctx`` a workflow receives: recorded time and randomness, patches, its identity."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    @property
    def instance_id(self) -> str:
        """This instance's id."""
        return self._executor.instance_id

    @property
    def workflow(self) -> str:
        """This workflow's name."""
        return self._executor.workflow

    def now(self) -> Now:
        """A command: ``t = yield ctx.now()`` gives the current time, recorded for replay."""
        return Now()

    def uuid(self) -> Uuid:
        """A command: ``u = yield ctx.uuid()`` gives a random UUID string, recorded."""
        return Uuid()

    def random(self) -> Random:
        """A command: ``x = yield ctx.random()`` gives a float in [0, 1), recorded."""
        return Random()

    # -- sessions (issue 5) ----------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The session this instance was started in (None when none)."""
        return self._executor.session_id

    @property
    def session(self) -> SessionCommands:
        """Commands on this instance's session: ``state = yield ctx.session.set("k", v)``.

        Raises:
            WorkflowError: the instance was not started in a session.
        """
        if self._executor.session_id is None:
            raise WorkflowError(
                f"workflow {self.workflow!r} (instance {self.instance_id!r}) was not started in "
                "a session: start it with session_id=... to use ctx.session"
            )
        return SessionCommands(self._executor.session_id)

    def patched(self, change_id: str) -> bool:
        """True where the instance runs the new code of change ``change_id``.

        Instances that reached this point before the change was deployed
        replay with False (their history has no marker here); all others get
        True and a marker is journaled. Not a command: call it without yield.
        """
        return self._executor.patched(change_id)

    def deprecate_patch(self, change_id: str) -> None:
        """Mark ``change_id`` as no longer branching (the old code path is gone).

        Histories that hold the patch marker replay through this call; new
        runs record nothing. Remove the call once no instance with the marker
        is left.
        """
        self._executor.deprecate_patch(change_id)


class Executor:
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
        self.fn = fn
        self.instance_id = instance_id
        self.workflow = workflow or getattr(fn, "__qualname__", "workflow")
        self.decode_args = decode_args
        self.decode_result = decode_result
        self.ctx = WorkflowContext(self)
        self.status: Status = "new"
        self.version = 0
        """The last event version seen (fed, or decided)."""
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        """The time new decisions are stamped with; the runner sets it before feeding."""
        self.steps: dict[int, StepTask] = {}
        self.children: dict[int, ChildTask] = {}
        self.timers: dict[int, datetime] = {}
        self.waits: dict[int, tuple[str, float | None, datetime | None]] = {}
        self.result: bytes | None = None
        self.error: tuple[str, str] | None = None
        self.cancel_reason: str | None = None
        self.session_id: str | None = None
        """The session the instance runs in, from ``WorkflowStarted`` (issue 5)."""
        self._gen: WorkflowGenerator | None = None
        self._seq = 0
        self._expected: deque[WorkflowEvent] = deque()
        self._outcomes: dict[int, _Outcome] = {}
        self._waiting: _Waiting | None = None
        self._marker_wait: int | None = None
        self._signals: dict[str, deque[bytes]] = {}
        self._comp_stack: list[int] = []
        self._comp_current: int | None = None
        self._history: list[tuple[int, WorkflowEvent]] = []
        self._cursor = 0
        self._patches: dict[str, bool] = {}
        self._early_children: dict[int, ChildCompleted | ChildFailed] = {}

    # -- feeding the history -------------------------------------------------

    @property
    def ended(self) -> bool:
        """Whether the instance reached a terminal status."""
        return self.status in ("completed", "failed", "compensated", "cancelled")

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
                    self._deliver(seq, _Outcome(self.decode_result("step", task.name, result)))
            case StepFailed(seq=seq):
                self._step_failed(event)
            case TimerFired(seq=seq):
                if self.timers.pop(seq, None) is not None:
                    self._deliver(seq, _Outcome(None))
            case SignalReceived(name=name, payload=payload):
                self._signal(name, payload)
            case SignalTimedOut(seq=seq):
                wait = self.waits.pop(seq, None)
                if wait is not None:
                    self._deliver(seq, _Outcome(error=SignalTimeoutError(wait[0], wait[1] or 0.0)))
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
            gen = self.fn(self.ctx, *args)
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

    # -- running the generator -------------------------------------------------

    def _resume(self, value: Any = None, error: BaseException | None = None) -> None:
        gen = self._gen
        if gen is None:
            return
        self._waiting = None
        while True:
            try:
                command = gen.send(value) if error is None else gen.throw(error)
            except StopIteration as stop:
                self._finish_ok(stop.value)
                return
            except Exception as exc:
                self._finish_error(exc)
                return
            value, error = None, None
            try:
                outcome = self._command(command)
            except (EncodingError, InvalidCommandError) as exc:
                error = exc
                continue
            if outcome is None:
                return
            value, error = outcome.value, outcome.error

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _command(self, command: object) -> _Outcome | None:
        """Turn a yielded command into expected decisions; an outcome if it resolves at once."""
        match command:
            case StepCall() | ChildCall():
                seq, immediate = self._call(command)
                if immediate is not None:
                    return immediate
                return self._wait(_Waiting([seq]))
            case Gather(calls=calls, fail_fast=fail_fast):
                seqs: list[int] = []
                for call in calls:
                    seq, immediate = self._call(call)
                    seqs.append(seq)
                    if immediate is not None:
                        self._outcomes[seq] = immediate
                return self._wait(_Waiting(seqs, "gather", fail_fast))
            case Sleep(seconds=seconds):
                return self._timer(self.now + timedelta(seconds=seconds))
            case SleepUntil(when=when):
                return self._timer(when)
            case WaitSignal(name=name, timeout=timeout):
                return self._wait_signal(name, timeout)
            case Now() | Uuid() | Random():
                seq = self._next_seq()
                kind: Literal["now", "uuid", "random"] = (
                    "now" if isinstance(command, Now) else "uuid" if isinstance(command, Uuid) else "random"
                )
                self._expected.append(MarkerRecorded(seq, kind))
                self._marker_wait = seq
                return None
            case ContinueAsNew(args=args):
                data = encode_value(list(args), f"continue_as_new arguments of {self.workflow}")
                self._end(WorkflowContinuedAsNew(next_run_id(self.instance_id), data), "completed")
                return None
        hint = ""
        if callable(command):
            hint = " (did you yield a step or workflow without calling it?)"
        raise InvalidCommandError(
            f"workflow {self.workflow!r} yielded {command!r}, which is not a command{hint}: "
            "yield a step call, a child workflow call, sleep(), wait_signal(), gather(), "
            "ctx.now(), ctx.uuid(), ctx.random() or continue_as_new()"
        )

    def _call(self, call: StepCall | ChildCall) -> tuple[int, _Outcome | None]:
        seq = self._next_seq()
        if isinstance(call, StepCall):
            data = encode_value([list(call.args), call.kwargs], f"arguments of step {call.step!r}")
            self.steps[seq] = StepTask(seq, call.step, data, compensation=call.compensation)
            self._expected.append(StepScheduled(seq, call.step, data, call.compensation))
            return seq, None
        data = encode_value(list(call.args), f"arguments of child workflow {call.workflow!r}")
        child_id = call.id or f"{self.instance_id}-{seq}"
        self.children[seq] = ChildTask(seq, child_id, call.workflow, data, call.detached)
        self._expected.append(ChildStarted(seq, call.workflow, child_id, data, call.detached))
        if call.detached:
            self.children[seq].done = True
            return seq, _Outcome(child_id)
        early = self._early_children.pop(seq, None)
        if early is not None:
            self._child_done(early)
        return seq, self._outcomes.pop(seq, None)

    def _wait(self, waiting: _Waiting) -> _Outcome | None:
        self._waiting = waiting
        return self._settled()

    def _timer(self, fire_at: datetime) -> _Outcome | None:
        seq = self._next_seq()
        self.timers[seq] = fire_at
        self._expected.append(TimerStarted(seq, fire_at))
        self._waiting = _Waiting([seq])
        return None

    def _wait_signal(self, name: str, timeout: float | None) -> _Outcome | None:
        seq = self._next_seq()
        buffered = self._signals.get(name)
        if buffered:
            self._expected.append(SignalWaitStarted(seq, name))
            return _Outcome(self.decode_result("signal", name, buffered.popleft()))
        timeout_at = None if timeout is None else self.now + timedelta(seconds=timeout)
        self.waits[seq] = (name, timeout, timeout_at)
        self._expected.append(SignalWaitStarted(seq, name, timeout_at))
        self._waiting = _Waiting([seq])
        return None

    # -- outcomes --------------------------------------------------------------

    def _deliver(self, seq: int, outcome: _Outcome) -> None:
        self._outcomes[seq] = outcome
        if self._waiting is not None and seq in self._waiting.seqs:
            settled = self._settled()
            if settled is not None:
                self._resume(settled.value, settled.error)

    def _settled(self) -> _Outcome | None:
        """The outcome the generator waits for, once it is known."""
        waiting = self._waiting
        assert waiting is not None
        if waiting.kind == "one":
            outcome = self._outcomes.pop(waiting.seqs[0], None)
            if outcome is not None:
                self._waiting = None
            return outcome
        found = [self._outcomes.get(seq) for seq in waiting.seqs]
        failed = [o for o in found if o is not None and o.error is not None]
        if waiting.fail_fast and failed:
            # The first failure in journal order wins; the calls still open are abandoned.
            self._abandon([s for s, o in zip(waiting.seqs, found, strict=True) if o is None])
            outcome = failed[0] if len(failed) == 1 else self._first_failure(waiting.seqs)
        elif all(o is not None for o in found):
            outcome = failed[0] if failed else _Outcome([o.value for o in found if o is not None])
        else:
            return None
        for seq in waiting.seqs:
            self._outcomes.pop(seq, None)
        self._waiting = None
        return outcome

    def _first_failure(self, seqs: Sequence[int]) -> _Outcome:
        return next(o for s in seqs if (o := self._outcomes.get(s)) is not None and o.error is not None)

    def _abandon(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            task = self.steps.get(seq)
            if task is not None and not task.done:
                task.done, task.running = True, False
                self._expected.append(StepCancelled(seq))
            child = self.children.get(seq)
            if child is not None and not child.done and not child.detached:
                child.done = True
                self._expected.append(ChildCancelRequested(seq, child.child_id))

    def _step_failed(self, event: StepFailed) -> None:
        task = self.steps.get(event.seq)
        if task is None or task.done:
            return
        task.running, task.attempt = False, event.attempt
        if event.retry_at is not None:
            task.retry_at = event.retry_at
            return
        if task.kind == "compensation":
            return  # a compensation's final failure is recorded as CompensationFailed
        task.done = True
        error = StepError(task.name, event.error_type, event.message, event.attempt)
        self._deliver(event.seq, _Outcome(error=error))

    def _signal(self, name: str, payload: bytes) -> None:
        for seq, (waiting, _, _) in self.waits.items():
            if waiting == name:
                del self.waits[seq]
                self._deliver(seq, _Outcome(self.decode_result("signal", name, payload)))
                return
        self._signals.setdefault(name, deque()).append(payload)

    def _child_done(self, event: ChildCompleted | ChildFailed) -> None:
        child = self.children.get(event.seq)
        if child is None:
            # The child finished before this run recorded starting it (a crash in between).
            self._early_children[event.seq] = event
            return
        child.done = True
        if child.detached:
            return
        if isinstance(event, ChildCompleted):
            outcome = _Outcome(self.decode_result("child", child.workflow, event.result))
        elif event.status == CHILD_ID_IN_USE:
            error = ChildWorkflowAlreadyStartedError(child.workflow, child.child_id, event.message)
            outcome = _Outcome(error=error)
        else:
            message = f"{event.message} (child {child.child_id!r} ended {event.status})"
            outcome = _Outcome(error=StepError(child.workflow, event.error_type, message))
        self._deliver(event.seq, outcome)

    # -- ending ------------------------------------------------------------------

    def _finish_ok(self, value: Any) -> None:
        self._gen = None
        try:
            data = encode_value(value, f"result of workflow {self.workflow!r}")
        except EncodingError as exc:
            self._finish_error(exc)
            return
        self._end(WorkflowCompleted(data), "completed")

    def _finish_error(self, exc: Exception) -> None:
        self._gen = None
        self.error = (type_name(exc), str(exc))
        if self._comp_stack:
            self._compensate()
            return
        text = "".join(traceback.format_exception(exc))
        self._end(WorkflowFailed(type_name(exc), str(exc), text), "failed")

    def _end(self, event: WorkflowEvent, status: Status) -> None:
        if self._gen is not None:
            gen, self._gen = self._gen, None
            gen.close()
        self._waiting = None
        self._expected.append(event)
        self.status = status
        if isinstance(event, WorkflowCompleted):
            self.result = event.result

    def _cancel(self, reason: str) -> None:
        if self.ended or self.status in ("compensating", "compensation_failed") or self._gen is None:
            return
        self.cancel_reason = reason
        gen, self._gen = self._gen, None
        # A workflow that yields from a finally block raises RuntimeError; it is ended all the same.
        with contextlib.suppress(RuntimeError):
            gen.close()
        self._waiting = None
        self._abandon(list(self.steps) + list(self.children))
        self.timers.clear()
        self.waits.clear()
        self._compensate()

    def _compensate(self) -> None:
        self.status = "compensating"
        self._next_compensation()

    def _next_compensation(self) -> None:
        self._comp_current = None
        if not self._comp_stack:
            if self.cancel_reason is not None:
                self._end(WorkflowCancelled(self.cancel_reason), "cancelled")
            else:
                error_type, message = self.error or ("", "")
                self._end(WorkflowCompensated(error_type, message), "compensated")
            return
        undone = self.steps[self._comp_stack.pop()]
        assert undone.compensation is not None
        seq = self._next_seq()
        args = encode_value([[msgspec.Raw(undone.result or _NIL)], {}])
        self.steps[seq] = StepTask(seq, undone.compensation, args, kind="compensation")
        self._comp_current = seq
        self._expected.append(CompensationStarted(seq, undone.seq, undone.compensation, args))

    # -- what the runner asks -----------------------------------------------

    def open_steps(self) -> list[StepTask]:
        """Steps and compensations not done yet, by command index."""
        return [t for t in self.steps.values() if not t.done and self._step_live(t)]

    def _step_live(self, task: StepTask) -> bool:
        if task.kind == "compensation":
            return task.seq == self._comp_current and self.status == "compensating"
        return True

    def open_children(self) -> list[ChildTask]:
        """Child workflows whose outcome the instance still waits for."""
        return [c for c in self.children.values() if not c.done]

    def due_timers(self, now: datetime) -> list[int]:
        """Timers whose time has come."""
        return [seq for seq, at in self.timers.items() if at <= now]

    def due_timeouts(self, now: datetime) -> list[int]:
        """Signal waits whose timeout has passed."""
        return [seq for seq, (_, _, at) in self.waits.items() if at is not None and at <= now]

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
