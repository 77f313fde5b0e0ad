"""Every command a workflow can yield, run by the in-process Runner on a ManualClock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from saga_helpers import drive, event_types, events, make_runner
from sagalog.engine import Registry, Runner, step, step_context, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import child, continue_as_new, gather, sleep, sleep_until, wait_signal
from sagalog.replay.events import StepStarted, TimerStarted
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock
from sagalog.errors import SignalTimeoutError, StepError, WorkflowFailedError

pytestmark = pytest.mark.anyio

reg = Registry()
seen: list[Any] = []


class Item(msgspec.Struct, frozen=True):
    sku: str
    qty: int


@step(registry=reg, retry=Retry.none())
async def echo(value: Any) -> Any:
    seen.append(("echo", value))
    return value


@step(registry=reg)
def make_item(sku: str) -> Item:
    """A plain def step: runs in a worker thread; its result comes back typed."""
    assert threading.current_thread() is not threading.main_thread()
    return Item(sku, step_context().attempt + 1)


@step(registry=reg, retry=Retry.none())
async def boom(message: str) -> None:
    raise ValueError(message)


@step(registry=reg, retry=Retry.none())
async def whoami() -> list[Any]:
    ctx = step_context()
    return [ctx.instance_id, ctx.seq, ctx.attempt, ctx.idempotency_key]


@workflow(registry=reg)
def steps_flow(ctx: Any, value: int) -> Any:
    a = yield echo(value)
    item = yield make_item("ABC")
    me = yield whoami()
    return {"a": a, "typed": isinstance(item, Item), "qty": item.qty, "me": me}


@workflow(registry=reg)
def catching(ctx: Any) -> Any:
    try:
        yield boom("nope")
    except StepError as exc:
        return {"step": exc.step, "type": exc.type_name, "message": exc.message}
    return "unreachable"


@workflow(registry=reg)
def sleeper(ctx: Any) -> Any:
    start = yield ctx.now()
    yield sleep(minutes=5)
    middle = yield ctx.now()
    yield sleep_until(datetime(2026, 1, 1, 1, tzinfo=UTC))
    end = yield ctx.now()
    return [(middle - start).total_seconds(), end.isoformat()]


@workflow(registry=reg)
def waiter(ctx: Any) -> Any:
    first = yield wait_signal("go")
    try:
        yield wait_signal("never", timeout=30)
    except SignalTimeoutError as exc:
        return [first, str(exc)]
    return "unreachable"


@workflow(registry=reg)
def gatherer(ctx: Any, fail_fast: bool) -> Any:
    values = yield gather(echo(1), echo(2), echo(3))
    try:
        yield gather(echo(4), boom("first"), boom("second"), fail_fast=fail_fast)
    except StepError as exc:
        return [values, exc.message]
    return "unreachable"


@workflow(registry=reg)
def side_effects(ctx: Any) -> Any:
    u = yield ctx.uuid()
    r = yield ctx.random()
    return [u, r]


@workflow(registry=reg)
def kid(ctx: Any, n: int) -> Any:
    v = yield echo(n * 10)
    return v


@workflow(registry=reg)
def parent(ctx: Any) -> Any:
    a = yield kid(1)
    b = yield child("tests.kid_by_name", 2)
    detached_id = yield kid(3, detached=True)
    return [a, b, detached_id]


@workflow(registry=reg, name="tests.kid_by_name")
def kid_by_name(ctx: Any, n: int) -> Any:
    v = yield echo(n * 100)
    return v


@workflow(registry=reg)
def failing_kid(ctx: Any) -> Any:
    yield boom("child broke")


@workflow(registry=reg)
def parent_of_failing(ctx: Any) -> Any:
    try:
        yield failing_kid()
    except StepError as exc:
        return exc.message
    return "unreachable"


@workflow(registry=reg)
def counter(ctx: Any, n: int) -> Any:
    yield echo(n)
    if n < 3:
        yield continue_as_new(n + 1)
    return f"done at {n}"


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


async def test_steps_return_typed_results_and_know_their_context(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(steps_flow, 7, id="s1")
    state = await drive(runner, clock, iid)
    assert state.status == "completed"
    assert await runner.result(iid) == {"a": 7, "typed": True, "qty": 2, "me": ["s1", 2, 1, "s1:2"]}


async def test_a_failed_step_is_thrown_in_at_its_yield(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(catching)
    await drive(runner, clock, iid)
    expected = {"step": boom.name, "type": "ValueError", "message": "nope"}
    assert await runner.result(iid) == expected


async def test_durable_timers_wait_for_the_clock(runner: Runner, clock: ManualClock, mem: Journal) -> None:
    iid = await runner.start(sleeper)
    await runner.run_until_idle()
    state = await runner.describe(iid)
    assert state.status == "running"
    assert list(state.timers.values()) == [clock.now() + timedelta(minutes=5)]
    assert await mem.next_ready_at() == clock.now() + timedelta(minutes=5)
    clock.advance(299)
    await runner.run_until_idle()
    assert (await runner.describe(iid)).timers  # not yet
    await drive(runner, clock, iid)
    middle, end = await runner.result(iid)
    assert middle >= 300
    assert end == "2026-01-01T01:00:00+00:00"


async def test_signals_are_buffered_and_waits_time_out(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    iid = await runner.start(waiter)
    await runner.signal(iid, "go", {"approved": True})  # before anyone waits: buffered
    await runner.run_until_idle()
    state = await runner.describe(iid)
    assert list(state.waits.values()) == ["never"]
    assert await mem.next_ready_at() == clock.now() + timedelta(seconds=30)
    clock.advance(31)
    await runner.run_until_idle()
    assert await runner.result(iid) == [{"approved": True}, "no signal 'never' arrived within 30 seconds"]


async def test_waiting_only_for_a_signal_leaves_the_work_index(runner: Runner, mem: Journal) -> None:
    iid = await runner.start(waiter)
    await runner.run_until_idle()
    assert await mem.next_ready_at() is None
    await runner.signal(iid, "go", 1)
    assert await mem.next_ready_at() is not None  # the signal made it ready again
    await runner.run_until_idle()
    assert list((await runner.describe(iid)).waits.values()) == ["never"]


@pytest.mark.parametrize("fail_fast", [True, False])
async def test_gather_results_in_order_and_failure_modes(
    runner: Runner, clock: ManualClock, mem: Journal, fail_fast: bool
) -> None:
    iid = await runner.start(gatherer, fail_fast)
    await drive(runner, clock, iid)
    values, message = await runner.result(iid)
    assert values == [1, 2, 3]
    if fail_fast:
        assert message in ("first", "second")  # whichever failed first
    else:
        assert message == "first"  # all ran; the first in argument order is thrown
        assert "StepCancelled" not in await event_types(mem, iid)


async def test_side_effects_are_recorded_and_replayed(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    iid = await runner.start(side_effects)
    await drive(runner, clock, iid)
    u, r = await runner.result(iid)
    assert uuid.UUID(u).version == 4
    assert 0 <= r < 1
    fresh = make_runner(mem, reg, clock)
    state = await fresh.advance(iid)  # a replay from the journal gets the recorded values
    assert state.status == "completed"
    assert await event_types(mem, iid) == [
        "WorkflowStarted", "MarkerRecorded", "MarkerRecorded", "WorkflowCompleted",
    ]  # fmt: skip


async def test_child_workflows_and_detached_children(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    iid = await runner.start(parent, id="p")
    await drive(runner, clock, iid)
    a, b, detached_id = await runner.result(iid)
    assert (a, b) == (10, 200)
    assert detached_id == "p-2"
    await drive(runner, clock, detached_id)
    assert await runner.result(detached_id) == 30
    assert (await runner.describe("p-0")).parent_id == "p"
    assert "ParentNotified" in await event_types(mem, "p-0")


async def test_a_failed_child_is_thrown_into_its_parent(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(parent_of_failing, id="pf")
    await drive(runner, clock, iid)
    message = await runner.result(iid)
    assert "child broke" in message
    assert "'pf-0' ended failed" in message


async def test_continue_as_new_starts_a_fresh_run(runner: Runner, clock: ManualClock, mem: Journal) -> None:
    await runner.start(counter, 1, id="c")
    for run_id in ("c", "c.run2", "c.run3"):
        await drive(runner, clock, run_id)
    assert await runner.result("c") == "done at 3"
    assert (await runner.describe("c")).continued_as == "c.run2"
    assert (await runner.describe("c.run3")).status == "completed"
    assert len(await event_types(mem, "c.run3")) < 8  # each run has a short history


async def test_continue_as_new_skips_a_run_id_another_instance_holds(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    await runner.start(counter, 5, id="c.run2")  # a client took the id the first run proposes
    await runner.start(parent_of_failing, id="c.run3")  # and another workflow the one after
    await runner.start(counter, 1, id="c")
    for run_id in ("c.run2", "c.run3", "c", "c.run4", "c.run5"):
        await drive(runner, clock, run_id)
    assert (await runner.describe("c")).continued_as == "c.run4"
    assert (await runner.describe("c.run4")).continued_as == "c.run5"
    assert await runner.result("c") == "done at 3"
    assert await runner.result("c.run2") == "done at 5"  # the bystanders are untouched
    assert (await event_types(mem, "c.run2"))[0] == "WorkflowStarted"
    assert (await runner.describe("c.run3")).workflow == parent_of_failing.name


async def test_backoff_is_a_durable_retry_time(mem: Journal, clock: ManualClock) -> None:
    local = Registry()
    attempts: list[int] = []

    @step(registry=local, retry=Retry.fixed(10, attempts=3))
    async def flaky() -> str:
        attempts.append(step_context().attempt)
        if len(attempts) < 3:
            raise ConnectionError("try later")
        return "ok"

    @workflow(registry=local)
    def uses_flaky(ctx: Any) -> Any:
        return (yield flaky())

    runner = make_runner(mem, local, clock)
    iid = await runner.start(uses_flaky)
    await runner.run_until_idle()
    state = await runner.describe(iid)
    step_state = next(iter(state.steps.values()))
    assert (step_state.status, step_state.attempts) == ("retrying", 1)
    assert step_state.retry_at == clock.now() + timedelta(seconds=10)
    assert await mem.next_ready_at() == step_state.retry_at  # no sleep in memory: the index has it
    await drive(runner, clock, iid)
    assert await runner.result(iid) == "ok"
    assert attempts == [1, 2, 3]


async def test_per_attempt_timeout_uses_the_runner_clock(mem: Journal, clock: ManualClock) -> None:
    local = Registry()

    @step(registry=local, retry=Retry.none(timeout=5))
    async def slow() -> str:
        await clock.sleep(60)
        return "late"

    @workflow(registry=local)
    def uses_slow(ctx: Any) -> Any:
        return (yield slow())

    runner = make_runner(mem, local, clock)
    iid = await runner.start(uses_slow)
    done = anyio.Event()

    async def advance() -> None:
        await runner.advance(iid)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(advance)
        while not done.is_set():  # time moves a second per loop turn until the attempt gives up
            await anyio.lowlevel.checkpoint()
            clock.advance(1)
    assert clock.now() < datetime(2026, 1, 1, 0, 1, tzinfo=UTC)  # long before the step's 60 s
    with pytest.raises(WorkflowFailedError, match="timed out after 5 s"):
        await runner.result(iid)


async def test_decisions_carry_recorded_values(runner: Runner, clock: ManualClock, mem: Journal) -> None:
    iid = await runner.start(sleeper)
    await runner.run_until_idle()
    recorded = [e for e in await events(mem, iid) if isinstance(e, TimerStarted | StepStarted)]
    assert recorded == [TimerStarted(1, clock.now() + timedelta(minutes=5))]


async def test_an_open_circuit_breaker_fails_fast_and_retries_when_it_half_opens(
    mem: Journal, clock: ManualClock
) -> None:
    from sagalog.engine.breaker import BreakerPolicy

    local = Registry()
    calls: list[int] = []

    @step(registry=local, retry=Retry.fixed(1, attempts=5), breaker=BreakerPolicy(failures=2, cooldown=30))
    async def fragile() -> str:
        calls.append(step_context().attempt)
        if len(calls) <= 2:
            raise ConnectionError("down")
        return "up"

    @workflow(registry=local)
    def uses_fragile(ctx: Any) -> Any:
        return (yield fragile())

    runner = make_runner(mem, local, clock)
    iid = await runner.start(uses_fragile)
    for _ in range(3):  # attempts 1 and 2 fail and open the breaker; attempt 3 fails fast
        await runner.run_until_idle()
        clock.advance(1)
    state = await runner.describe(iid)
    fragile_state = next(iter(state.steps.values()))
    assert calls == [1, 2]
    assert fragile_state.error_type == "sagalog.errors.CircuitOpenError"
    assert fragile_state.retry_at is not None
    assert fragile_state.retry_at >= clock.now() + timedelta(seconds=27)  # waits for the half-open
    await drive(runner, clock, iid)
    assert await runner.result(iid) == "up"
    assert calls == [1, 2, 4]


@step(registry=reg, retry=Retry.none())
async def price(item: Item, *, discount: int = 0) -> int:
    return item.qty * 10 - discount


@workflow(registry=reg)
def typed_args(ctx: Any, item: Item, discount: int) -> Any:
    assert isinstance(item, Item)  # converted back from msgpack by the parameter's annotation
    total = yield price(item, discount=discount)
    return total


async def test_struct_arguments_and_keyword_arguments_come_back_typed(
    runner: Runner, clock: ManualClock
) -> None:
    iid = await runner.start(typed_args, Item("A", 3), 5)
    state = await drive(runner, clock, iid)
    assert state.status == "completed", state.message
    assert await runner.result(iid) == 25
