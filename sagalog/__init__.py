"""sagalog: durable sagas as Python generators, on an append-only event log.

Layers (imports point down only)::

    sagalog/   public facade: this module and the command line
    engine/    running workflows live (sagalog.engine)
    replay/    the journal's meaning: events, folds, the executor (sagalog.replay)
    storage/   persistence: the journal and its backends (sagalog.storage)

``sagalog.errors`` and ``sagalog.clock`` are leaves every layer may import.
"""

from sagalog.clock import Clock, ManualClock, SystemClock
from sagalog.engine import (
    BreakerPolicy,
    Registry,
    Retry,
    RetryPolicy,
    Runner,
    StepContext,
    StepTimeoutError,
    load_modules,
    run,
    run_async,
    step,
    step_context,
    workflow,
)
from sagalog.errors import (
    CircuitOpenError,
    ConcurrencyError,
    DatabaseError,
    DecodingError,
    EncodingError,
    IntegrityError,
    InvalidCommandError,
    InvalidEventError,
    InvalidPolicyError,
    NonDeterminismError,
    NotFoundError,
    OperationalError,
    PayloadTooLargeError,
    ProgrammingError,
    SagalogError,
    SignalTimeoutError,
    StepError,
    UnknownNamespaceError,
    UnknownWorkflowError,
    WorkflowCancelledError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowParkedError,
)
from sagalog.replay import (
    SagaState,
    WorkflowContext,
    child,
    continue_as_new,
    gather,
    sleep,
    sleep_until,
    wait_signal,
)
from sagalog.storage import Journal, open_journal

__all__ = [
    "BreakerPolicy",
    "CircuitOpenError",
    "Clock",
    "ConcurrencyError",
    "DatabaseError",
    "DecodingError",
    "EncodingError",
    "IntegrityError",
    "InvalidCommandError",
    "InvalidEventError",
    "InvalidPolicyError",
    "Journal",
    "ManualClock",
    "NonDeterminismError",
    "NotFoundError",
    "OperationalError",
    "PayloadTooLargeError",
    "ProgrammingError",
    "Registry",
    "Retry",
    "RetryPolicy",
    "Runner",
    "SagaState",
    "SagalogError",
    "SignalTimeoutError",
    "StepContext",
    "StepError",
    "StepTimeoutError",
    "SystemClock",
    "UnknownNamespaceError",
    "UnknownWorkflowError",
    "WorkflowCancelledError",
    "WorkflowContext",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowParkedError",
    "child",
    "continue_as_new",
    "gather",
    "load_modules",
    "open_journal",
    "run",
    "run_async",
    "sleep",
    "sleep_until",
    "step",
    "step_context",
    "wait_signal",
    "workflow",
]
