"""The one exception hierarchy of sagalog.

Everything sagalog raises on purpose derives from :class:`SagalogError`.
Infrastructure errors take their names from PEP 249 (``OperationalError`` is
the transient kind worth retrying). Internal control flow (suspending a
workflow, evicting it from the cache) is *not* here: it uses ``BaseException``
subclasses private to the executor, so a workflow's ``except Exception`` can
never swallow it.

This module imports nothing from sagalog, so every layer may import it.
"""

from __future__ import annotations

from datetime import datetime


class SagalogError(Exception):
    """Root of every error sagalog raises on purpose."""


# --- infrastructure (PEP 249 names) -----------------------------------------


class DatabaseError(SagalogError):
    """The database refused or failed an operation."""


class OperationalError(DatabaseError):
    """A transient database failure: unreachable server, dropped connection.

    These are the only errors retried automatically (with backoff).
    """


class IntegrityError(DatabaseError):
    """The database rejected a write that would break its invariants."""


class ProgrammingError(DatabaseError):
    """The database is not as sagalog expects (e.g. the schema is not migrated)."""


# --- the journal -------------------------------------------------------------


class ConcurrencyError(SagalogError):
    """An append expected a stream version that is no longer current.

    Attributes:
        stream_id: the stream that moved.
        expected_version: the version the writer expected.
        actual_version: the stream's version when the append was refused.
    """

    def __init__(self, stream_id: str, expected_version: int, actual_version: int) -> None:
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {stream_id!r} is at version {actual_version}, "
            f"but the append expected version {expected_version}"
        )


class EncodingError(SagalogError):
    """A value cannot be encoded (msgspec does not support its type)."""


class DecodingError(SagalogError):
    """Stored bytes cannot be decoded: a corrupt or incompatible payload."""


class PayloadTooLargeError(SagalogError):
    """An event payload is larger than the journal's configured limit."""


class InvalidEventError(SagalogError):
    """An event is malformed (empty or over-long type name, wrong field types)."""


class UnknownNamespaceError(SagalogError):
    """A namespace that was never created was named."""


class NotFoundError(SagalogError):
    """A stream, instance, session or version that does not exist was named."""


# --- retries and circuit breakers (engine/retry.py, engine/breaker.py) -------


class InvalidPolicyError(SagalogError, ValueError):
    """A retry policy or circuit breaker was configured with a meaningless value."""


class CircuitOpenError(SagalogError):
    """A step's circuit breaker is open: the call failed fast without running.

    Attributes:
        step: the step name the breaker guards.
        failures: the consecutive failures that opened it.
        half_open_at: when the breaker lets one trial call through.
        retry_after: seconds from the failed call until ``half_open_at``.
    """

    def __init__(self, step: str, failures: int, half_open_at: datetime, retry_after: float) -> None:
        self.step = step
        self.failures = failures
        self.half_open_at = half_open_at
        self.retry_after = retry_after
        super().__init__(
            f"circuit breaker of step {step!r} is open after {failures} consecutive failures: "
            f"calls fail fast until it half-opens at {half_open_at.isoformat()} "
            f"(in {retry_after:.1f} s)"
        )


# --- worker and client (issue 4) ---------------------------------------------


class ConfigurationError(SagalogError):
    """A worker or client setting is invalid (bad flag or SAGALOG_* variable)."""


class InvalidArgumentError(SagalogError, ValueError):
    """A client or command-line argument is out of range or of the wrong kind."""


# --- sessions ------------------------------------------------------------------


class SessionError(SagalogError):
    """A session operation was refused."""


class InvalidSessionError(SessionError):
    """A session argument is malformed (id, kind, timeout, attribute name)."""


class SessionNotFoundError(SessionError, NotFoundError):
    """No session has the given id."""


class SessionClosedError(SessionError):
    """The session was closed: it accepts no changes and cannot be reopened."""


class SessionExpiredError(SessionError):
    """The session expired: it accepts no changes and cannot be reopened."""


class AttributesTooLargeError(SessionError):
    """A session's attributes would exceed the configured size limit."""


# --- the replay tool (sagalog replay) -----------------------------------------


class ReplayToolError(SagalogError):
    """A replay tool operation cannot be done as asked (e.g. importing over a stream)."""


class CorruptImportError(ReplayToolError):
    """A line of a history file is not a valid exported event; nothing was imported.

    Attributes:
        line: the 1-based line number of the first bad line.
    """

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.line = line
        super().__init__(f"{source}, line {line}: {problem}; nothing was imported")


# --- workflows, steps and the executor (issue 3) -------------------------------


class WorkflowError(SagalogError):
    """A workflow, step or command was used in a way sagalog refuses."""


class InvalidCommandError(WorkflowError, ValueError):
    """A workflow yielded something that is not a command, or a command with bad arguments."""


class UnknownWorkflowError(WorkflowError, NotFoundError):
    """No workflow (or step) is registered under the given name."""


class NonDeterminismError(WorkflowError):
    """Replaying a history, the workflow code did something other than what was recorded.

    Attributes:
        version: the stream version of the recorded event (0 when nothing was recorded).
        recorded: what the history holds there.
        yielded: what the code did now.
    """

    def __init__(self, version: int, recorded: str, yielded: str) -> None:
        self.version = version
        self.recorded = recorded
        self.yielded = yielded
        super().__init__(
            f"non-deterministic workflow at event {version}: the history recorded {recorded}, "
            f"but the code now yielded {yielded}"
        )


class StepError(WorkflowError):
    """A step (or child workflow) failed for good; thrown into the workflow at its ``yield``.

    Attributes:
        step: the step's (or child workflow's) name.
        type_name: the qualified type name of the original exception.
        message: the original exception's message.
        attempts: how many attempts were made.
    """

    def __init__(self, step: str, type_name: str, message: str, attempts: int = 1) -> None:
        self.step = step
        self.type_name = type_name
        self.message = message
        self.attempts = attempts
        super().__init__(f"step {step!r} failed after {attempts} attempt(s): {type_name}: {message}")


class ChildWorkflowAlreadyStartedError(StepError):
    """A child workflow's id already belongs to another instance; thrown at the child's ``yield``.

    Like Temporal's ``WorkflowAlreadyStartedError`` for a child: nothing is
    started, the other instance is left alone, and the parent decides (catch
    it, or let it fail the parent, which then compensates).

    Attributes:
        child_id: the id asked for.
        workflow: the child workflow the parent wanted to start.
    """

    def __init__(self, workflow: str, child_id: str, message: str) -> None:
        self.step = workflow
        self.type_name = "sagalog.errors.ChildWorkflowAlreadyStartedError"
        self.message = message
        self.attempts = 1
        self.workflow = workflow
        self.child_id = child_id
        WorkflowError.__init__(self, message)


class SignalTimeoutError(WorkflowError):
    """``wait_signal(name, timeout=...)`` timed out; thrown into the workflow at its ``yield``."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(f"no signal {name!r} arrived within {timeout:g} seconds")


class WorkflowFailedError(WorkflowError):
    """``result()`` of an instance that ended failed, compensated or compensation_failed.

    Attributes:
        instance_id: the instance.
        status: its terminal status.
        type_name: the qualified type name of the error that failed it.
        message: that error's message.
    """

    def __init__(self, instance_id: str, status: str, type_name: str, message: str) -> None:
        self.instance_id = instance_id
        self.status = status
        self.type_name = type_name
        self.message = message
        super().__init__(f"workflow {instance_id!r} ended {status}: {type_name}: {message}")


class WorkflowCancelledError(WorkflowError):
    """``result()`` of an instance that was cancelled."""

    def __init__(self, instance_id: str, reason: str) -> None:
        self.instance_id = instance_id
        self.reason = reason
        super().__init__(f"workflow {instance_id!r} was cancelled: {reason or 'no reason given'}")


class WorkflowParkedError(WorkflowError):
    """An instance is parked (unknown workflow, non-determinism, bad payload) and waits for an operator."""

    def __init__(self, instance_id: str, reason: str) -> None:
        self.instance_id = instance_id
        self.reason = reason
        super().__init__(f"workflow {instance_id!r} is parked: {reason}")
