"""What the Runner and Sessions tell about their work, for metrics.

The engine calls an :class:`Observer` at the few points where something
worth counting happens (an instance starts, ends or parks, a step attempt
ends, a timer fires, a replay runs, a session opens or ends).
:class:`Observer` itself counts nothing and is the default;
:class:`~sagalog.engine.worker_metrics.WorkerMetrics` turns the calls into
Prometheus metrics. Labels are workflow, step and session-kind names, never
instance ids, so their number stays bounded.
"""

from __future__ import annotations

from typing import Literal

from sagalog.replay.events import CompensationCompleted, StepCompleted, StepFailed, WorkflowEvent

StepOutcome = Literal["completed", "retrying", "failed"]
"""How one attempt ended: done, failed with a retry scheduled, or failed for good."""


def outcome_of(event: WorkflowEvent) -> StepOutcome:
    """How an attempt's outcome event (completed or failed, step or compensation) counts."""
    if isinstance(event, StepCompleted | CompensationCompleted):
        return "completed"
    if isinstance(event, StepFailed) and event.retry_at is not None:
        return "retrying"
    return "failed"


class Observer:
    """Receives the engine's events worth counting; this base class counts nothing.

    It is the default of a Runner that is not in a worker; a subclass (such as
    ``WorkerMetrics``) overrides what it wants to count.
    """

    def workflow_started(self, workflow: str) -> None:
        """An instance made its first decision (it runs for the first time)."""

    def workflow_ended(self, workflow: str, status: str) -> None:
        """An instance reached ``status``: a terminal one or ``compensation_failed``."""

    def workflow_parked(self, workflow: str, reason: str) -> None:
        """An instance was parked (``reason``: unknown_workflow, non_determinism, undecodable)."""

    def step_attempt(
        self, workflow: str, step: str, kind: str, attempt: int, outcome: StepOutcome, seconds: float
    ) -> None:
        """An attempt of a step or compensation (``kind``) ran for ``seconds``."""

    def takeover(self, workflow: str) -> None:
        """An instance is claimed after the lease of the worker holding it ran out."""

    def timer_fired(self, workflow: str, lag_seconds: float) -> None:
        """A durable timer fired ``lag_seconds`` after it was due."""

    def replayed(self, workflow: str, events: int, seconds: float) -> None:
        """An instance was replayed from the journal (a sticky-cache miss)."""

    def session_opened(self, kind: str) -> None:
        """A session of ``kind`` was opened by this process."""

    def session_ended(self, kind: str, how: str) -> None:
        """A session of ``kind`` ended (``how``: closed or expired)."""


NULL_OBSERVER = Observer()
