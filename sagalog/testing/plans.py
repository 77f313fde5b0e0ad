"""Saga plans: a small language of generated sagas, and the workflow that runs them.

A plan is a list of :class:`Op` (a step, a ``gather`` of steps, a durable
sleep, a signal wait, a step inside ``try/except``, a child workflow). Each
step carries a :class:`StepSpec`: how each of its attempts behaves (succeed,
fail retryably, fail permanently, hang past the per-attempt timeout) and, if
it has a compensation, how each attempt of that behaves. :func:`plan_saga`
interprets a plan; its steps log every execution to the current
:class:`World`, so checkers can tell what really ran.

The behaviour of attempt ``n`` is ``script[n - 1]``; past the end of the
script its last behaviour repeats (a success stays a success, a permanent
failure stays permanent), and an empty script always succeeds.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Literal

import anyio
import msgspec

from sagalog.engine import Registry, Retry, step, step_context, workflow
from sagalog.errors import StepError
from sagalog.replay import child, gather, sleep, wait_signal

Behaviour = Literal["ok", "retry", "fatal", "hang"]
"""What one attempt does: return, raise a retryable error, raise :class:`Fatal`, or
wait for ever (until the per-attempt timeout cancels it)."""

OpKind = Literal["step", "gather", "sleep", "signal", "catch", "child"]

STEP_ATTEMPTS = 4
"""Attempts a plan step gets (:data:`STEP_RETRY`)."""
UNDO_ATTEMPTS = 2
"""Attempts a compensation gets before the saga waits for an operator (:data:`UNDO_RETRY`)."""
STEP_TIMEOUT = 5.0
"""Seconds (of the run's clock) an attempt may take; a ``hang`` attempt exceeds it."""
SLEEP_SECONDS = 30.0
SIGNAL_TIMEOUT = 60.0
SIGNAL = "go"


class Fatal(Exception):
    """A permanent failure: never retried."""


STEP_RETRY = Retry.fixed(1, attempts=STEP_ATTEMPTS, timeout=STEP_TIMEOUT, non_retryable=[Fatal])
UNDO_RETRY = Retry.fixed(1, attempts=UNDO_ATTEMPTS, timeout=STEP_TIMEOUT, non_retryable=[Fatal])

PLAN_REGISTRY = Registry()
"""The registry of :func:`plan_saga`, :func:`plan_child` and their steps."""


class StepSpec(msgspec.Struct, frozen=True, array_like=True):
    """One step of a plan."""

    tag: str
    """Its name in results and messages."""
    script: tuple[Behaviour, ...] = ()
    """Behaviour of each attempt (see the module docstring)."""
    undo: tuple[Behaviour, ...] | None = None
    """The script of its compensation; None: it has none."""


class Op(msgspec.Struct, frozen=True, array_like=True):
    """One instruction of a plan."""

    kind: OpKind
    """``step`` (steps[0]), ``gather`` (all of steps), ``sleep``, ``signal`` (a wait with
    a timeout), ``catch`` (steps[0] inside try/except), ``child`` (steps in a child workflow)."""
    steps: tuple[StepSpec, ...] = ()
    """The steps the instruction runs."""


class Effect(msgspec.Struct, frozen=True):
    """One execution of a plan step or compensation, as the outside world saw it."""

    instance_id: str
    seq: int
    attempt: int
    what: str
    """``work <tag>`` or ``undo <tag>``."""
    watermark: int
    """The newest journal position known when it began (see :class:`World`)."""

    @property
    def key(self) -> str:
        """The idempotency key (``<instance>:<seq>``)."""
        return f"{self.instance_id}:{self.seq}"


class World:
    """What a run's steps did: every execution, and the newest journal position seen.

    The harness's journal wrapper moves ``watermark`` after each append, so an
    execution that began after a completion was recorded is recognisable.
    """

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.watermark = 0
        self.delay = 0.0
        """Real seconds each execution takes (for tests with real worker processes only)."""


CURRENT_WORLD: ContextVar[World | None] = ContextVar("sagalog_testing_world", default=None)
"""The world plan steps log to (none: they log nothing)."""


def behaviour(script: tuple[Behaviour, ...] | list[Behaviour], attempt: int) -> Behaviour:
    """The behaviour of attempt ``attempt`` (from 1) under ``script``."""
    if not script:
        return "ok"
    return script[min(attempt, len(script)) - 1]


async def _act(script: list[Behaviour], what: str) -> None:
    ctx = step_context()
    world = CURRENT_WORLD.get()
    if world is not None:
        world.effects.append(Effect(ctx.instance_id, ctx.seq, ctx.attempt, what, world.watermark))
        if world.delay:
            await anyio.sleep(world.delay)  # real time, so a kill -9 can land mid-step
    match behaviour(script, ctx.attempt):
        case "retry":
            raise ConnectionError(f"{what}: service unavailable")
        case "fatal":
            raise Fatal(f"{what}: declined")
        case "hang":
            await anyio.sleep_forever()  # the per-attempt timeout ends it
        case _:
            pass


@step(registry=PLAN_REGISTRY, name="plan.work", retry=STEP_RETRY)
async def plan_work(tag: str, script: list[Behaviour], undo: list[Behaviour] | None) -> list[Any]:
    """A plan step: behaves as ``script`` says, returns ``[TAG, undo script]``."""
    await _act(script, f"work {tag}")
    return [tag.upper(), undo]


@step(registry=PLAN_REGISTRY, name="plan.undo", retry=UNDO_RETRY)
async def plan_undo(result: list[Any]) -> str:
    """A plan compensation: gets its step's result, behaves as the undo script in it says."""
    tag, script = result
    await _act(list(script or ()), f"undo {tag.lower()}")
    return f"undone {tag}"


def _call(spec: StepSpec) -> Any:
    call = plan_work(spec.tag, list(spec.script), None if spec.undo is None else list(spec.undo))
    return call if spec.undo is None else call.compensate(plan_undo)


@workflow(registry=PLAN_REGISTRY, name="plan.saga")
def plan_saga(ctx: Any, plan: list[Op]) -> Any:
    """Run ``plan``; returns what each instruction produced."""
    out: list[Any] = []
    for op in plan:
        match op.kind:
            case "step":
                out.append((yield _call(op.steps[0])))
            case "gather":
                out.append((yield gather(*[_call(spec) for spec in op.steps])))
            case "sleep":
                yield sleep(seconds=SLEEP_SECONDS)
            case "signal":
                out.append((yield wait_signal(SIGNAL, timeout=SIGNAL_TIMEOUT)))
            case "catch":
                try:
                    out.append((yield _call(op.steps[0])))
                except StepError as exc:
                    out.append(f"caught {exc.message}")
            case "child":
                out.append((yield child(plan_child, list(op.steps))))
    return out


@workflow(registry=PLAN_REGISTRY, name="plan.child")
def plan_child(ctx: Any, steps: list[StepSpec]) -> Any:
    """A child workflow: its steps in turn (with their compensations), then a short sleep."""
    out = []
    for spec in steps:
        out.append((yield _call(spec)))
    yield sleep(seconds=5)
    return out


def signal_waits(plan: list[Op]) -> int:
    """How many signal waits ``plan`` has (the top-level instance only)."""
    return sum(op.kind == "signal" for op in plan)
