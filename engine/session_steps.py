"""The built-in steps behind ``ctx.session``: session commands a workflow yields.

Each runs as an ordinary durable step on the Runner's :class:`Sessions`, so
a session change is journaled in the workflow's history and replays without
touching the session again. Changes and touches pass the step's idempotency
key, so a step re-run after a crash applies nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sagalog.engine.retry import Retry
from sagalog.engine.sessions import Sessions
from sagalog.replay.sessions import CHANGE_STEP, CLOSE_STEP, GET_STEP, TOUCH_STEP, SessionState

from sagalog.errors import EncodingError, InvalidSessionError, SessionError

if TYPE_CHECKING:
    from sagalog.engine.workflow import Registry, StepContext


def _context() -> StepContext:
    # Imported late: building workflow.DEFAULT_REGISTRY registers these steps
    # while sagalog.engine.workflow is still being imported.
    from sagalog.engine.workflow import step_context

    return step_context()


def _step_sessions() -> Sessions:
    sessions = getattr(_context(), "sessions", None)
    if not isinstance(sessions, Sessions):
        raise InvalidSessionError(
            "session commands need a Runner that provides sessions (Runner(journal).sessions)"
        )
    return sessions


async def session_get_step(session_id: str) -> SessionState:
    """Built-in step: the session's state."""
    return await _step_sessions().get(session_id)


async def session_change_step(session_id: str, updates: dict[str, Any], deleted: list[str]) -> SessionState:
    """Built-in step: set and delete attributes, once per step (keyed by its idempotency key)."""
    return await _step_sessions().change(
        session_id, updates, deleted=deleted, idempotency_key=_context().idempotency_key
    )


async def session_touch_step(session_id: str) -> SessionState:
    """Built-in step: record activity, once per step (keyed by its idempotency key)."""
    return await _step_sessions().touch(session_id, idempotency_key=_context().idempotency_key)


async def session_close_step(session_id: str, reason: str) -> SessionState:
    """Built-in step: close the session."""
    return await _step_sessions().close(session_id, reason, by_instance=_context().instance_id)


def register_session_steps(registry: Registry) -> None:
    """Add the built-in session steps to ``registry``.

    Session errors (closed, expired, unknown, bad attributes) fail the step
    at once; only other errors are retried.
    """
    from sagalog.engine.workflow import Step

    policy = Retry.exponential(
        initial=0.5, maximum=10, attempts=5, non_retryable=(SessionError, EncodingError)
    )
    steps: dict[str, Callable[..., Any]] = {
        GET_STEP: session_get_step,
        CHANGE_STEP: session_change_step,
        TOUCH_STEP: session_touch_step,
        CLOSE_STEP: session_close_step,
    }
    for name, fn in steps.items():
        if name not in registry.steps:
            registry.add(Step(fn, name, retry=policy))
