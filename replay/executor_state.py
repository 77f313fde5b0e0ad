"""What the executor keeps about one instance, and the types it is built from.

:class:`ExecutorState` is the base of :class:`~sagalog.replay.executor.Executor`:
the fields that feeding the history (:mod:`sagalog.replay.executor`), handling
yields (:mod:`sagalog.replay.yields`) and ending (:mod:`sagalog.replay.ending`)
all read and write. :class:`Outcome` and :class:`Waiting` are what the
generator is resumed with and what it waits for, by command index (``seq``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from sagalog.replay.decisions import ChildTask, StepTask
from sagalog.replay.events import ChildCompleted, ChildFailed, WorkflowEvent

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


class Outcome(msgspec.Struct, frozen=True):
    """What a command resolved to: the value sent into the generator, or the error thrown in."""

    value: Any = None
    error: BaseException | None = None


class Waiting(msgspec.Struct):
    """The commands the generator waits for: one, or a gather of several."""

    seqs: list[int]
    kind: Literal["one", "gather"] = "one"
    fail_fast: bool = True


class ExecutorState:
    """One instance as the executor knows it (see :class:`~sagalog.replay.executor.Executor`)."""

    def __init__(
        self,
        fn: WorkflowFunction,
        instance_id: str,
        workflow: str,
        decode_args: ArgsDecoder,
        decode_result: ResultDecoder,
    ) -> None:
        self.fn = fn
        self.instance_id = instance_id
        self.workflow = workflow or getattr(fn, "__qualname__", "workflow")
        self.decode_args = decode_args
        self.decode_result = decode_result
        self.status: Status = "new"
        self.version = 0
        """The last event version seen (fed, or decided)."""
        self.now = datetime(1970, 1, 1, tzinfo=UTC)
        """The time new decisions are stamped with; the runner sets it before feeding."""
        self.steps: dict[int, StepTask] = {}
        self._open: dict[int, StepTask] = {}
        """The steps of ``steps`` not seen done yet (see ``open_steps``): asked after every
        commit, which must not cost more as a long history piles up done steps."""
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
        self._outcomes: dict[int, Outcome] = {}
        self._waiting: Waiting | None = None
        self._marker_wait: int | None = None
        self._signals: dict[str, deque[bytes]] = {}
        self._comp_stack: list[int] = []
        self._comp_current: int | None = None
        self._history: list[tuple[int, WorkflowEvent]] = []
        self._cursor = 0
        self._patches: dict[str, bool] = {}
        self._early_children: dict[int, ChildCompleted | ChildFailed] = {}

    def _add_step(self, task: StepTask) -> None:
        """A new step or compensation: known by its seq, and unfinished until seen done."""
        self.steps[task.seq] = self._open[task.seq] = task

    @property
    def ended(self) -> bool:
        """Whether the instance reached a terminal status."""
        return self.status in ("completed", "failed", "compensated", "cancelled")

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq
