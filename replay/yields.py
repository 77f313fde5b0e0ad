"""What each yielded command does, and how outcomes resume the generator.

A command the generator yields becomes the decisions it expects
(``StepScheduled``, ``TimerStarted``, ...) and, unless it resolves at once,
a :class:`~sagalog.replay.executor_state.Waiting` on command indexes. Inputs
deliver outcomes by index; once what the generator waits for is settled, it
is resumed with the value (or the error is thrown into it).
:class:`YieldHandling` is a base of :class:`~sagalog.replay.executor.Executor`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

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
from sagalog.replay.decisions import ChildTask, StepTask, next_run_id
from sagalog.replay.ending import Ending
from sagalog.replay.events import (
    CHILD_ID_IN_USE,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    MarkerRecorded,
    SignalWaitStarted,
    StepFailed,
    StepScheduled,
    TimerStarted,
    WorkflowContinuedAsNew,
)
from sagalog.replay.executor_state import Outcome, Waiting
from sagalog.storage import encode_value

from sagalog.errors import (
    ChildWorkflowAlreadyStartedError,
    EncodingError,
    InvalidCommandError,
    StepError,
)


class YieldHandling(Ending):
    """Running the generator: its commands in, outcomes back."""

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

    def _command(self, command: object) -> Outcome | None:
        """Turn a yielded command into expected decisions; an outcome if it resolves at once."""
        match command:
            case StepCall() | ChildCall():
                seq, immediate = self._call(command)
                if immediate is not None:
                    return immediate
                return self._wait(Waiting([seq]))
            case Gather(calls=calls, fail_fast=fail_fast):
                seqs: list[int] = []
                for call in calls:
                    seq, immediate = self._call(call)
                    seqs.append(seq)
                    if immediate is not None:
                        self._outcomes[seq] = immediate
                return self._wait(Waiting(seqs, "gather", fail_fast))
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

    def _call(self, call: StepCall | ChildCall) -> tuple[int, Outcome | None]:
        seq = self._next_seq()
        if isinstance(call, StepCall):
            data = encode_value([list(call.args), call.kwargs], f"arguments of step {call.step!r}")
            self._add_step(StepTask(seq, call.step, data, compensation=call.compensation))
            self._expected.append(StepScheduled(seq, call.step, data, call.compensation))
            return seq, None
        data = encode_value(list(call.args), f"arguments of child workflow {call.workflow!r}")
        child_id = call.id or f"{self.instance_id}-{seq}"
        self.children[seq] = ChildTask(seq, child_id, call.workflow, data, call.detached)
        self._expected.append(ChildStarted(seq, call.workflow, child_id, data, call.detached))
        if call.detached:
            self.children[seq].done = True
            return seq, Outcome(child_id)
        early = self._early_children.pop(seq, None)
        if early is not None:
            self._child_done(early)
        return seq, self._outcomes.pop(seq, None)

    def _wait(self, waiting: Waiting) -> Outcome | None:
        self._waiting = waiting
        return self._settled()

    def _timer(self, fire_at: datetime) -> Outcome | None:
        seq = self._next_seq()
        self.timers[seq] = fire_at
        self._expected.append(TimerStarted(seq, fire_at))
        self._waiting = Waiting([seq])
        return None

    def _wait_signal(self, name: str, timeout: float | None) -> Outcome | None:
        seq = self._next_seq()
        buffered = self._signals.get(name)
        if buffered:
            self._expected.append(SignalWaitStarted(seq, name))
            return Outcome(self.decode_result("signal", name, buffered.popleft()))
        timeout_at = None if timeout is None else self.now + timedelta(seconds=timeout)
        self.waits[seq] = (name, timeout, timeout_at)
        self._expected.append(SignalWaitStarted(seq, name, timeout_at))
        self._waiting = Waiting([seq])
        return None

    # -- outcomes --------------------------------------------------------------

    def _deliver(self, seq: int, outcome: Outcome) -> None:
        self._outcomes[seq] = outcome
        if self._waiting is not None and seq in self._waiting.seqs:
            settled = self._settled()
            if settled is not None:
                self._resume(settled.value, settled.error)

    def _settled(self) -> Outcome | None:
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
            outcome = failed[0] if failed else Outcome([o.value for o in found if o is not None])
        else:
            return None
        for seq in waiting.seqs:
            self._outcomes.pop(seq, None)
        self._waiting = None
        return outcome

    def _first_failure(self, seqs: Sequence[int]) -> Outcome:
        return next(o for s in seqs if (o := self._outcomes.get(s)) is not None and o.error is not None)

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
        self._deliver(event.seq, Outcome(error=error))

    def _signal(self, name: str, payload: bytes) -> None:
        for seq, (waiting, _, _) in self.waits.items():
            if waiting == name:
                del self.waits[seq]
                self._deliver(seq, Outcome(self.decode_result("signal", name, payload)))
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
            outcome = Outcome(self.decode_result("child", child.workflow, event.result))
        elif event.status == CHILD_ID_IN_USE:
            error = ChildWorkflowAlreadyStartedError(child.workflow, child.child_id, event.message)
            outcome = Outcome(error=error)
        else:
            message = f"{event.message} (child {child.child_id!r} ended {event.status})"
            outcome = Outcome(error=StepError(child.workflow, event.error_type, message))
        self._deliver(event.seq, outcome)
