"""How an instance ends: its result recorded, or its compensations run newest first.

A workflow that returns ends ``completed``; one that raises ends ``failed``
unless it has compensations to run, and a cancel closes the generator and
abandons what it still waited for. Either way the compensation stack is then
unwound one durable compensation at a time, and the instance ends
``compensated`` (or ``cancelled``). :class:`Ending` is a base of
:class:`~sagalog.replay.executor.Executor`.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterable
from typing import Any

import msgspec
from sagalog.replay.decisions import StepTask, type_name
from sagalog.replay.events import (
    ChildCancelRequested,
    CompensationStarted,
    StepCancelled,
    WorkflowCancelled,
    WorkflowCompensated,
    WorkflowCompleted,
    WorkflowEvent,
    WorkflowFailed,
)
from sagalog.replay.executor_state import ExecutorState, Status
from sagalog.storage import encode_value

from sagalog.errors import EncodingError

_NIL = b"\xc0"  # msgpack None


class Ending(ExecutorState):
    """Finishing, cancelling and compensating one instance."""

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
        self._add_step(StepTask(seq, undone.compensation, args, kind="compensation"))
        self._comp_current = seq
        self._expected.append(CompensationStarted(seq, undone.seq, undone.compensation, args))
