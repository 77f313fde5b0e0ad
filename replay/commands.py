"""The commands a workflow can yield: one small, closed set of frozen types.

A workflow is a generator; every ``yield`` hands the executor one of the
types below and suspends until the executor sends back the result (or throws
an error in). These are the only places where a workflow suspends, and the
executor (:mod:`sagalog.replay.executor`) matches only on them, the way
trio's ``_traps`` module is the kernel's only door.

The functions at the bottom (:func:`sleep`, :func:`wait_signal`,
:func:`gather`, ...) build commands with checked arguments; a step call is
built by calling a function decorated with ``@step``, a child workflow call by
calling a ``@workflow`` (or with :func:`child`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Protocol

import msgspec

from sagalog.errors import InvalidCommandError


class Named(Protocol):
    """Anything with a registered name: a ``@step`` or a ``@workflow``."""

    @property
    def name(self) -> str:
        """The name it is registered and journaled under."""
        ...


def name_of(target: Named | str, what: str) -> str:
    """The registered name of a step or workflow given as an object or a string."""
    if isinstance(target, str):
        return target
    name = getattr(target, "name", None)
    if not isinstance(name, str):
        raise InvalidCommandError(
            f"{what} must be a @step/@workflow or its name, not {type(target).__name__}"
        )
    return name


class StepCall(msgspec.Struct, frozen=True):
    """Run a step durably and send back its result (or throw its error)."""

    step: str
    """The step's registered name."""
    args: tuple[Any, ...] = ()
    """Positional arguments."""
    kwargs: dict[str, Any] = {}
    """Keyword arguments."""
    compensation: str | None = None
    """Name of the step that undoes this one; it receives this step's result."""

    def compensate(self, step: Named | str) -> StepCall:
        """This call with ``step`` registered as its compensation.

        The compensation runs (with this step's result as its only argument)
        when the workflow later fails unhandled or is cancelled, in reverse
        order of registration.
        """
        return msgspec.structs.replace(self, compensation=name_of(step, "a compensation"))


class ChildCall(msgspec.Struct, frozen=True):
    """Start a child workflow; send back its result, or its id when detached."""

    workflow: str
    """The child's registered workflow name."""
    args: tuple[Any, ...] = ()
    """Its arguments."""
    id: str | None = None
    """Its instance id; by default ``<parent id>-<command index>``."""
    detached: bool = False
    """A detached child outlives its parent: the parent does not wait for it
    and does not cancel it."""


class Sleep(msgspec.Struct, frozen=True):
    """A durable timer of a duration (workflow time: the timer survives restarts)."""

    seconds: float
    """How long to wait."""


class SleepUntil(msgspec.Struct, frozen=True):
    """A durable timer until a point in time."""

    when: datetime
    """When to wake up (timezone-aware)."""


class WaitSignal(msgspec.Struct, frozen=True):
    """Wait for a signal by name; send back its payload.

    On timeout, :class:`~sagalog.errors.SignalTimeoutError` is thrown in at
    the ``yield``. Signals that arrive before anyone waits are buffered, and
    each is delivered to exactly one wait, oldest first.
    """

    name: str
    """The signal's name."""
    timeout: float | None = None
    """Seconds to wait at most; None waits forever."""


class Gather(msgspec.Struct, frozen=True):
    """Run several step or child calls in parallel; send back their results in order."""

    calls: tuple[StepCall | ChildCall, ...]
    """The calls, in the order of the results."""
    fail_fast: bool = True
    """True: the first failure cancels the calls still running and is thrown in.
    False: wait for every call, then throw the first failure in argument order."""


class Now(msgspec.Struct, frozen=True):
    """Read the current time, recorded so that replay sees the same value."""


class Uuid(msgspec.Struct, frozen=True):
    """Make a random UUID (version 4), recorded."""


class Random(msgspec.Struct, frozen=True):
    """Draw a float in [0, 1), recorded."""


class ContinueAsNew(msgspec.Struct, frozen=True):
    """End this run and start the same workflow afresh with new arguments.

    The new run is a new instance (id ``<id>.run<n>``); ``result()`` of the
    old id follows the chain. Bounds the length of a long-lived history.
    """

    args: tuple[Any, ...] = ()
    """Arguments of the next run."""


Command = (
    StepCall | ChildCall | Sleep | SleepUntil | WaitSignal | Gather | Now | Uuid | Random | ContinueAsNew
)
"""Everything a workflow may yield."""

COMMAND_TYPES: tuple[type, ...] = (
    StepCall,
    ChildCall,
    Sleep,
    SleepUntil,
    WaitSignal,
    Gather,
    Now,
    Uuid,
    Random,
    ContinueAsNew,
)


# --- constructors with checked arguments ---------------------------------


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidCommandError(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise InvalidCommandError(f"{what} must be >= 0, got {value!r}")
    return float(value)


def sleep(seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0) -> Sleep:
    """A durable timer: ``yield sleep(minutes=5)``."""
    total = (
        _number(seconds, "sleep seconds")
        + 60 * _number(minutes, "sleep minutes")
        + 3600 * _number(hours, "sleep hours")
        + 86400 * _number(days, "sleep days")
    )
    return Sleep(total)


def sleep_until(when: datetime) -> SleepUntil:
    """A durable timer until ``when`` (a timezone-aware datetime)."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise InvalidCommandError(
            f"sleep_until needs a timezone-aware datetime, got {when!r} "
            "(use datetime.now(UTC) or attach tzinfo)"
        )
    return SleepUntil(when)


def wait_signal(name: str, timeout: float | None = None) -> WaitSignal:
    """Wait for signal ``name``; its payload is sent back. Raises SignalTimeoutError on timeout."""
    if not isinstance(name, str) or not name:
        raise InvalidCommandError(f"a signal name must be a non-empty string, got {name!r}")
    return WaitSignal(name, None if timeout is None else _number(timeout, "wait_signal timeout"))


def gather(*calls: StepCall | ChildCall, fail_fast: bool = True) -> Gather:
    """Run step (or child workflow) calls in parallel: ``a, b = yield gather(f(x), g(y))``."""
    for index, call in enumerate(calls):
        if not isinstance(call, StepCall | ChildCall):
            raise InvalidCommandError(
                f"gather argument {index} is a {type(call).__name__}, not a step or child workflow "
                "call (did you pass the step itself instead of calling it?)"
            )
    return Gather(tuple(calls), fail_fast)


def child(workflow: Named | str, *args: Any, id: str | None = None, detached: bool = False) -> ChildCall:
    """Start a child workflow: ``result = yield child(ship, order)``."""
    if id is not None and not isinstance(id, str):
        raise InvalidCommandError(f"a child workflow id must be a string, got {id!r}")
    return ChildCall(name_of(workflow, "a child workflow"), args, id, detached)


def continue_as_new(*args: Any) -> ContinueAsNew:
    """End this run and start a fresh one with ``args``: ``yield continue_as_new(n + 1)``."""
    return ContinueAsNew(args)
