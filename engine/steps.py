"""Running one attempt of a step: arguments in, result bytes or an error out.

Each attempt runs in its own cancel scope. ``async def`` steps run on the
event loop; plain ``def`` steps in a worker thread (``anyio.to_thread``), with
the step context copied in. The per-attempt timeout is measured on the
runner's clock, so tests drive it with a ManualClock.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from random import Random as _Rng

import anyio
import msgspec
from sagalog.engine.breaker import Breakers
from sagalog.engine.retry import RetryPolicy
from sagalog.engine.workflow import CURRENT_STEP, Step, StepContext
from sagalog.replay.events import CompensationCompleted, CompensationFailed, StepCompleted, StepFailed
from sagalog.replay.executor import StepTask, type_name
from sagalog.storage import encode_value

from sagalog.clock import Clock
from sagalog.errors import EncodingError, SagalogError


class StepTimeoutError(SagalogError, TimeoutError):
    """An attempt ran longer than its policy's per-attempt timeout.

    A ``SagalogError`` like everything sagalog raises on purpose, and a
    ``TimeoutError`` so that ``except TimeoutError`` in user code still sees it.
    """


class Attempt(msgspec.Struct, frozen=True):
    """The outcome of one attempt: ``result`` bytes, or the error it raised."""

    result: bytes | None = None
    error: Exception | None = None


async def run_attempt(
    step: Step,
    task: StepTask,
    context: StepContext,
    timeout: float | None,
    clock: Clock,
    breakers: Breakers | None = None,
) -> Attempt:
    """Run one attempt of ``step`` with the recorded arguments of ``task``."""
    token = CURRENT_STEP.set(context)
    try:
        args, kwargs = step.decode_kwargs(task.args)
        if step.breaker is not None and breakers is not None:
            with breakers.get(step.name, step.breaker).guard():
                value = await _call_with_timeout(step, args, kwargs, timeout, clock)
        else:
            value = await _call_with_timeout(step, args, kwargs, timeout, clock)
        data = encode_value(value, f"result of step {step.name!r}")
        step.decode_result(data)  # a result that will not decode back fails now, not on replay
        return Attempt(result=data)
    except Exception as exc:
        return Attempt(error=exc)
    finally:
        CURRENT_STEP.reset(token)


async def _call_with_timeout(
    step: Step, args: tuple[object, ...], kwargs: dict[str, object], timeout: float | None, clock: Clock
) -> object:
    if timeout is None and step.is_async:
        # Nothing to race against: awaiting the step directly is the same
        # (an outer cancel still reaches it) without a task group and a task.
        return await step.fn(*args, **kwargs)
    result: list[object] = []
    failure: list[Exception] = []
    timed_out = False

    async def call() -> None:
        try:
            if step.is_async:
                result.append(await step.fn(*args, **kwargs))
            else:
                # A thread cannot be interrupted: on timeout or cancel it is abandoned
                # and its eventual result ignored (the attempt already counts as failed).
                fn = functools.partial(step.fn, *args, **kwargs)
                result.append(await anyio.to_thread.run_sync(fn, abandon_on_cancel=True))
        except Exception as exc:  # kept whole, not wrapped in an ExceptionGroup
            failure.append(exc)
        tg.cancel_scope.cancel()

    async def watchdog(seconds: float) -> None:
        nonlocal timed_out
        await clock.sleep(seconds)
        timed_out = True
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        if timeout is not None:
            tg.start_soon(watchdog, timeout)
    if failure:
        raise failure[0]
    if timed_out and not result:
        raise StepTimeoutError(f"step {step.name!r} timed out after {timeout:g} s")
    return result[0]


def outcome_event(
    task: StepTask,
    attempt: Attempt,
    policy: RetryPolicy,
    now: datetime,
    rng: _Rng,
) -> StepCompleted | StepFailed | CompensationCompleted | CompensationFailed:
    """The event that records an attempt's outcome, with the next retry time from ``policy``."""
    number = task.attempt
    if attempt.error is None:
        result = attempt.result or b"\xc0"
        if task.kind == "compensation":
            return CompensationCompleted(task.seq, number, result)
        return StepCompleted(task.seq, number, result)
    error = attempt.error
    delay: float | None = None
    if not isinstance(error, EncodingError):  # the same value will not encode next time either
        delay = policy.next_delay(max(1, number - task.attempt_base), error, rng)
        retry_after = getattr(error, "retry_after", None)
        if delay is not None and isinstance(retry_after, int | float):
            delay = max(delay, float(retry_after))  # an open breaker: wait until it half-opens
    message = str(error) or type(error).__name__
    if delay is None and task.kind == "compensation":
        return CompensationFailed(task.seq, number, type_name(error), message)
    names = tuple(type_name(error) if cls is type(error) else _qualified(cls) for cls in type(error).__mro__)
    retry_at = None if delay is None else now + timedelta(seconds=delay)
    return StepFailed(task.seq, number, type_name(error), message, retry_at, names)


def _qualified(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
