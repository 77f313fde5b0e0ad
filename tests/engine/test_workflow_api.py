"""Bad input gets a clear error and loses nothing: each case with its message."""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from saga_helpers import drive, event_types, make_runner
from sagalog.engine import Registry, Runner, step, step_context, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import gather, sleep, sleep_until, wait_signal
from sagalog.storage import Journal, NewEvent, connect

from sagalog.clock import ManualClock
from sagalog.errors import (
    EncodingError,
    InvalidCommandError,
    InvalidEventError,
    NonDeterminismError,
    NotFoundError,
    UnknownWorkflowError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowParkedError,
)

pytestmark = pytest.mark.anyio

reg = Registry()


class Opaque:
    """Something msgspec cannot encode."""


@step(registry=reg, name="api.echo", retry=Retry.none())
async def echo(value: Any) -> Any:
    return value


@workflow(registry=reg, name="api.place_order")
def place_order(ctx: Any, order: Any, note: str = "") -> Any:
    return (yield echo(order))


@workflow(registry=reg, name="api.bad_step_arg")
def bad_step_arg(ctx: Any) -> Any:
    yield echo(Opaque())


@workflow(registry=reg, name="api.forgets_call")
def forgets_call(ctx: Any) -> Any:
    yield echo


@workflow(registry=reg, name="api.waits")
def waits(ctx: Any) -> Any:
    value = yield wait_signal("go")
    v2 = yield echo(value)
    return v2


@pytest.fixture
async def mem() -> AsyncIterator[Journal]:
    journal = await connect("memory://")
    yield journal
    await journal.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def runner(mem: Journal, clock: ManualClock) -> Runner:
    return make_runner(mem, reg, clock)


# -- decorators ----------------------------------------------------------------


def test_workflow_must_be_a_generator_function() -> None:
    def plain(ctx: Any) -> int:
        return 1

    with pytest.raises(WorkflowError, match=r"@workflow needs a generator function .*plain is not one"):
        workflow(registry=Registry())(plain)


def test_workflow_takes_ctx_first() -> None:
    def no_ctx() -> Any:
        yield 1

    expected = re.escape("workflow no_ctx must take ctx as its first parameter")
    with pytest.raises(WorkflowError, match=expected):
        workflow(registry=Registry())(no_ctx)


def test_step_must_not_be_a_generator() -> None:
    def gen() -> Any:
        yield 1

    expected = re.escape("@step needs a function that returns a value; gen is a generator")
    with pytest.raises(WorkflowError, match=expected):
        step(registry=Registry())(gen)


def test_step_context_outside_a_step() -> None:
    with pytest.raises(WorkflowError, match=r"step_context\(\) is only available inside a step"):
        step_context()


def test_command_constructors_check_their_arguments() -> None:
    with pytest.raises(InvalidCommandError, match=re.escape("sleep seconds must be >= 0, got -1")):
        sleep(-1)
    expected = re.escape("sleep minutes must be a finite number, got nan")
    with pytest.raises(InvalidCommandError, match=expected):
        sleep(minutes=float("nan"))
    with pytest.raises(InvalidCommandError, match=re.escape("sleep_until needs a timezone-aware datetime")):
        sleep_until(datetime(2026, 1, 1))
    expected = re.escape("a signal name must be a non-empty string, got ''")
    with pytest.raises(InvalidCommandError, match=expected):
        wait_signal("")
    expected = re.escape("gather argument 1 is a Step, not a step or child workflow")
    with pytest.raises(InvalidCommandError, match=expected):
        gather(echo(1), echo)  # type: ignore[arg-type]
    expected = re.escape("bad arguments for step 'api.echo': missing a required")
    with pytest.raises(InvalidCommandError, match=expected):
        echo()


# -- starting --------------------------------------------------------------------


async def test_an_argument_msgspec_cannot_encode_is_refused_at_start(runner: Runner, mem: Journal) -> None:
    expected = r"argument 'order' of api.place_order cannot be encoded: .*Opaque"
    with pytest.raises(EncodingError, match=expected):
        await runner.start(place_order, Opaque(), id="o")
    expected = r"argument 'note' of api.place_order cannot be encoded: _thread.lock is not supported"
    with pytest.raises(EncodingError, match=expected):
        await runner.start(place_order, 1, threading.Lock(), id="o")
    assert await mem.stream_version("wf-o") == 0  # nothing was written


async def test_bad_arguments_for_the_signature(runner: Runner) -> None:
    expected = re.escape("bad arguments for workflow 'api.place_order': too many")
    with pytest.raises(InvalidCommandError, match=expected):
        await runner.start(place_order, 1, "n", "extra")


async def test_unknown_workflow_names_the_known_ones(runner: Runner) -> None:
    expected = re.escape("unknown workflow 'nope': registered workflows are api.")
    with pytest.raises(UnknownWorkflowError, match=expected):
        await runner.start("nope")


async def test_invalid_instance_id(runner: Runner) -> None:
    with pytest.raises(InvalidEventError, match=re.escape("invalid stream id 'wf-a b'")):
        await runner.start(place_order, 1, id="a b")


async def test_starting_is_idempotent_by_id(runner: Runner, mem: Journal, clock: ManualClock) -> None:
    assert await runner.start(place_order, 1, id="same") == "same"
    assert await runner.start(place_order, 2, id="same") == "same"
    assert await event_types(mem, "same") == ["WorkflowStarted"]
    await drive(runner, clock, "same")
    assert await runner.result("same") == 1
    expected = re.escape("instance 'same' already exists and runs workflow 'api.place_order'")
    with pytest.raises(WorkflowError, match=expected):
        await runner.start(waits, id="same")


async def test_unknown_instance(runner: Runner) -> None:
    with pytest.raises(NotFoundError, match=re.escape("no workflow instance 'ghost'")):
        await runner.describe("ghost")
    with pytest.raises(NotFoundError, match=re.escape("no workflow instance 'ghost'")):
        await runner.signal("ghost", "go")


async def test_unencodable_signal_payload(runner: Runner) -> None:
    iid = await runner.start(waits)
    with pytest.raises(EncodingError, match=re.escape("payload of signal 'go' cannot be encoded")):
        await runner.signal(iid, "go", Opaque())


# -- inside a workflow ---------------------------------------------------------------


async def test_unencodable_step_argument_fails_the_workflow_with_its_name(
    runner: Runner, clock: ManualClock
) -> None:
    iid = await runner.start(bad_step_arg)
    await drive(runner, clock, iid)
    expected = r"argument 'value' of api.echo cannot be encoded: .*Opaque"
    with pytest.raises(WorkflowFailedError, match=expected):
        await runner.result(iid)


async def test_yielding_something_else_is_explained(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(forgets_call)
    await drive(runner, clock, iid)
    expected = r"which is not a command \(did you yield a step or workflow"
    with pytest.raises(WorkflowFailedError, match=expected):
        await runner.result(iid)


# -- parking -----------------------------------------------------------------------------


async def test_unknown_workflow_parks_the_instance(mem: Journal, clock: ManualClock) -> None:
    iid = await make_runner(mem, reg, clock).start(waits)
    stranger = make_runner(mem, Registry(), clock)
    state = await stranger.advance(iid)
    assert state.status == "parked"
    assert state.parked_kind == "unknown_workflow"
    assert "unknown workflow 'api.waits'" in state.parked_reason
    assert await mem.next_ready_at() is None
    with pytest.raises(WorkflowParkedError, match=re.escape("is parked: unknown workflow 'api.waits'")):
        await stranger.result(iid)
    # the right code can take it from there: an operator unparks it
    runner = make_runner(mem, reg, clock)
    await runner.unpark(iid, actor="ops")
    await runner.signal(iid, "go", 5)
    assert (await drive(runner, clock, iid)).status == "completed"


async def test_a_code_change_parks_the_instance_not_fails_it(mem: Journal, clock: ManualClock) -> None:
    runner = make_runner(mem, reg, clock)
    iid = await runner.start(waits)
    await runner.run_until_idle()  # it now waits for "go"
    changed = Registry()
    changed.steps.update(reg.steps)

    @workflow(registry=changed, name="api.waits")
    def waits_v2(ctx: Any) -> Any:
        yield echo("a new first step")
        value = yield wait_signal("go")
        return value

    other = make_runner(mem, changed, clock)
    state = await other.advance(iid)
    assert state.status == "parked"
    assert state.parked_reason == (
        "non-deterministic workflow at event 2: the history recorded SignalWaitStarted('go'), "
        "but the code now yielded StepScheduled('api.echo')"
    )
    with pytest.raises(NonDeterminismError, match=re.escape("at event 2")):
        await other.unpark(iid)  # still the wrong code: refused, nothing appended
    assert (await runner.unpark(iid)).status == "running"
    await runner.signal(iid, "go", 7)
    await drive(runner, clock, iid)
    assert await runner.result(iid) == 7


async def test_a_corrupt_payload_parks_that_instance_alone(
    runner: Runner, mem: Journal, clock: ManualClock
) -> None:
    bad = await runner.start(waits)
    good = await runner.start(waits)
    await runner.run_until_idle()
    await mem.append(f"wf-{bad}", 2, [NewEvent("SignalReceived", b"\xff\x00garbage")])
    state = await make_runner(mem, reg, clock).advance(bad)
    assert (state.status, state.parked_kind) == ("parked", "undecodable")
    assert "event 3 (SignalReceived)" in state.parked_reason
    await runner.signal(good, "go", 1)
    assert (await drive(runner, clock, good)).status == "completed"


def test_the_facade_exports_the_workflow_api() -> None:
    import sagalog

    names = {
        "workflow", "step", "sleep", "sleep_until", "wait_signal", "gather", "child",
        "continue_as_new", "run", "run_async", "Runner", "Registry", "load_modules",
        "step_context", "StepContext", "SagaState", "WorkflowContext", "StepTimeoutError",
        "WorkflowError", "InvalidCommandError", "UnknownWorkflowError", "NonDeterminismError",
        "StepError", "SignalTimeoutError", "WorkflowFailedError", "WorkflowCancelledError",
        "WorkflowParkedError",
    }  # fmt: skip
    assert names <= set(sagalog.__all__)
    assert all(getattr(sagalog, name) is not None for name in names)


def test_the_facade_exports_clients_workers_sessions_and_every_error() -> None:
    import sagalog
    import sagalog.errors

    names = {"Client", "SyncClient", "Worker", "WorkerSettings", "Sessions", "SessionState"}
    assert names <= set(sagalog.__all__)
    errors = {
        name for name, value in vars(sagalog.errors).items()
        if isinstance(value, type) and issubclass(value, sagalog.errors.SagalogError)
    }  # fmt: skip
    missing = sorted(errors - set(sagalog.__all__))
    assert missing == [], f"errors not re-exported by the facade: {missing}"
    assert all(getattr(sagalog, name) is not None for name in sagalog.__all__)


def test_every_exported_error_is_a_sagalog_error() -> None:
    """``except SagalogError`` catches every error the facade exports (StepTimeoutError was missed)."""
    import sagalog

    errors = [
        getattr(sagalog, name) for name in sagalog.__all__
        if isinstance(getattr(sagalog, name), type) and issubclass(getattr(sagalog, name), BaseException)
    ]  # fmt: skip
    strays = [cls.__name__ for cls in errors if not issubclass(cls, sagalog.SagalogError)]
    assert strays == []
    assert issubclass(sagalog.StepTimeoutError, TimeoutError)
