"""Compensation order, every terminal state, cancel (with children), operator retry and skip."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from saga_helpers import drive, event_types, make_runner
from sagalog.engine import Registry, Runner, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import sleep, wait_signal
from sagalog.storage import Journal, connect

from sagalog.cli import main
from sagalog.clock import ManualClock
from sagalog.errors import WorkflowCancelledError, WorkflowError, WorkflowFailedError

pytestmark = pytest.mark.anyio

reg = Registry()
log: list[str] = []
broken = {"undo_b": True}


@step(registry=reg, retry=Retry.none())
async def do(name: str) -> str:
    log.append(f"do {name}")
    return f"{name}-id"


@step(registry=reg, retry=Retry.none())
async def undo(result: str) -> None:
    log.append(f"undo {result}")


@step(registry=reg, retry=Retry.fixed(1, attempts=2))
async def undo_flaky(result: str) -> None:
    log.append(f"try undo {result}")
    if broken["undo_b"]:
        raise RuntimeError("undo service down")
    log.append(f"undo {result}")


@step(registry=reg, retry=Retry.none())
async def fail(message: str) -> None:
    log.append("fail")
    raise ValueError(message)


@workflow(registry=reg)
def three_then_fail(ctx: Any) -> Any:
    yield do("a").compensate(undo)
    yield do("b").compensate(undo)
    yield do("c")  # no compensation registered
    yield do("d").compensate(undo)
    yield fail("payment declined")


@workflow(registry=reg)
def fails_without_compensations(ctx: Any) -> Any:
    yield do("a")
    yield fail("plain failure")


@workflow(registry=reg)
def completes(ctx: Any) -> Any:
    yield do("a").compensate(undo)
    return "fine"


@workflow(registry=reg)
def flaky_undo(ctx: Any) -> Any:
    yield do("a").compensate(undo)
    yield do("b").compensate(undo_flaky)
    yield fail("boom")


@workflow(registry=reg)
def long_running(ctx: Any) -> Any:
    yield do("a").compensate(undo)
    yield kid_waits()
    yield wait_signal("never")


@workflow(registry=reg)
def kid_waits(ctx: Any) -> Any:
    yield do("kid").compensate(undo)
    yield sleep(hours=1)


@workflow(registry=reg)
def with_detached(ctx: Any) -> Any:
    kid_id = yield kid_waits(id="free-kid", detached=True)
    yield wait_signal("never")
    return kid_id


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
    log.clear()
    broken["undo_b"] = True
    return make_runner(mem, reg, clock)


async def test_compensations_run_in_reverse_order_of_registration(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(three_then_fail)
    state = await drive(runner, clock, iid)
    assert state.status == "compensated"
    assert log == ["do a", "do b", "do c", "do d", "fail", "undo d-id", "undo b-id", "undo a-id"]
    with pytest.raises(WorkflowFailedError, match=r"ended compensated: .*payment declined"):
        await runner.result(iid)


async def test_failed_without_compensations(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(fails_without_compensations)
    assert (await drive(runner, clock, iid)).status == "failed"
    with pytest.raises(WorkflowFailedError, match=r"ended failed: sagalog.errors.StepError: .*plain failure"):
        await runner.result(iid)


async def test_completed_does_not_compensate(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(completes)
    assert (await drive(runner, clock, iid)).status == "completed"
    assert log == ["do a"]
    assert await runner.result(iid) == "fine"


async def test_compensation_failed_waits_for_an_operator_who_retries(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    iid = await runner.start(flaky_undo)
    state = await drive(runner, clock, iid)
    assert state.status == "compensation_failed"
    assert await mem.next_ready_at() is None  # nothing to do until someone decides
    assert log.count("try undo b-id") == 2  # its own retry policy ran out
    with pytest.raises(WorkflowFailedError, match="ended compensation_failed"):
        await runner.result(iid)
    broken["undo_b"] = False
    await runner.retry_compensation(iid, actor="ops")
    state = await drive(runner, clock, iid)
    assert state.status == "compensated"
    assert log[-2:] == ["undo b-id", "undo a-id"]
    assert "CompensationRetried" in await event_types(mem, iid)


async def test_an_operator_can_skip_a_failed_compensation(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(flaky_undo)
    await drive(runner, clock, iid)
    await runner.skip_compensation(iid, actor="ops")
    state = await drive(runner, clock, iid)
    assert state.status == "compensated"
    assert log[-1] == "undo a-id"
    assert "undo b-id" not in log


async def test_operator_actions_need_a_failed_compensation(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(completes)
    await drive(runner, clock, iid)
    with pytest.raises(WorkflowError, match="is completed, not compensation_failed: there is no failed"):
        await runner.retry_compensation(iid)


async def test_cancel_compensates_and_cancels_running_children(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    iid = await runner.start(long_running, id="lr")
    await runner.run_until_idle()
    assert (await runner.describe("lr-1")).status == "running"  # the child sleeps
    await runner.cancel(iid, "customer changed their mind")
    await drive(runner, clock, iid)
    await drive(runner, clock, "lr-1")
    assert (await runner.describe(iid)).status == "cancelled"
    assert (await runner.describe("lr-1")).status == "cancelled"
    assert sorted(x for x in log if x.startswith("undo")) == ["undo a-id", "undo kid-id"]
    with pytest.raises(WorkflowCancelledError, match="was cancelled: customer changed their mind"):
        await runner.result(iid)
    types = await event_types(mem, iid)
    order = [types.index(t) for t in ("CancelRequested", "ChildCancelRequested", "WorkflowCancelled")]
    assert order == sorted(order)


async def test_cancel_leaves_detached_children_alone(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(with_detached)
    await runner.run_until_idle()
    await runner.cancel(iid, "stop")
    await drive(runner, clock, iid)
    assert (await runner.describe(iid)).status == "cancelled"
    assert (await runner.describe("free-kid")).status == "running"
    assert (await drive(runner, clock, "free-kid")).status == "completed"


async def test_cancel_of_an_ended_instance_is_a_no_op(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    iid = await runner.start(completes)
    await drive(runner, clock, iid)
    before = await event_types(mem, iid)
    await runner.cancel(iid, "too late")
    assert await event_types(mem, iid) == before


async def test_every_instance_ends_in_exactly_one_terminal_event(
    runner: Runner, clock: ManualClock, mem: Journal
) -> None:
    ids = [await runner.start(w) for w in (three_then_fail, fails_without_compensations, completes)]
    cancelled = await runner.start(long_running)
    await runner.run_until_idle()
    await runner.cancel(cancelled)
    for iid in [*ids, cancelled]:
        await drive(runner, clock, iid)
        terminal = {"WorkflowCompleted", "WorkflowFailed", "WorkflowCompensated", "WorkflowCancelled"}
        ends = [t for t in await event_types(mem, iid) if t in terminal]
        assert len(ends) == 1, (iid, ends)


async def test_signal_to_an_ended_instance_is_refused(runner: Runner, clock: ManualClock) -> None:
    iid = await runner.start(completes)
    await drive(runner, clock, iid)
    with pytest.raises(WorkflowError, match=r"has ended \(completed\); SignalReceived was not delivered"):
        await runner.signal(iid, "late", 1)


async def test_cancel_stops_a_step_that_is_running(mem: Journal, clock: ManualClock) -> None:
    import anyio

    local = Registry()
    started = anyio.Event()
    finished: list[str] = []

    @step(registry=local, name="slow", retry=Retry.none())
    async def slow() -> str:
        started.set()
        await clock.sleep(3600)
        finished.append("slow")
        return "late"

    @step(registry=local, name="undo_quick", retry=Retry.none())
    async def undo_quick(result: str) -> None:
        log.append(f"undo {result}")

    @step(registry=local, name="quick", retry=Retry.none())
    async def quick() -> str:
        return "q"

    @workflow(registry=local)
    def busy(ctx: Any) -> Any:
        yield quick().compensate(undo_quick)
        yield slow()

    runner = make_runner(mem, local, clock)
    iid = await runner.start(busy)
    log.clear()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.advance, iid)
            await started.wait()
            await runner.cancel(iid, "enough")  # the running attempt is cancelled at once
    state = await drive(runner, clock, iid)
    assert state.status == "cancelled"
    assert finished == []
    assert log == ["undo q"]
    types = await event_types(mem, iid)
    assert "StepCancelled" in types
    assert "StepCompleted" in types  # quick's only


async def test_a_failing_gather_cancels_the_calls_still_running(mem: Journal, clock: ManualClock) -> None:
    import anyio
    from sagalog.replay import gather

    local = Registry()
    finished: list[str] = []

    @step(registry=local, name="g.slow", retry=Retry.none())
    async def slow() -> str:
        await clock.sleep(3600)
        finished.append("slow")
        return "late"

    @step(registry=local, name="g.fail", retry=Retry.none())
    async def broken() -> str:
        raise LookupError("gone")

    @workflow(registry=local)
    def fan_out(ctx: Any) -> Any:
        try:
            yield gather(slow(), broken())
        except Exception as exc:
            return str(exc)
        return "unreachable"

    runner = make_runner(mem, local, clock)
    iid = await runner.start(fan_out)
    with anyio.fail_after(10):
        await runner.advance(iid)  # returns: the slow call was cancelled, not awaited
    assert "LookupError: gone" in await runner.result(iid)
    assert finished == []
    assert (await runner.describe(iid)).steps[0].status == "cancelled"


@pytest.mark.parametrize("action", ["retry-compensation", "skip-compensation"])
def test_an_operator_retries_or_skips_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    url = f"sqlite:///{tmp_path / 'journal.db'}"
    clock = ManualClock()
    log.clear()
    broken["undo_b"] = True

    async def settle(start: bool, iid: str = "") -> tuple[str, str]:
        journal = await connect(url)
        try:
            runner = make_runner(journal, reg, clock)
            iid = await runner.start(flaky_undo) if start else iid
            return iid, (await drive(runner, clock, iid)).status
        finally:
            await journal.close()

    iid, status = anyio.run(settle, True)
    assert status == "compensation_failed"
    broken["undo_b"] = False
    assert main([action, iid, "--db", url, "--actor", "ops"]) == 0
    assert re.fullmatch(rf"{action}: {iid} is now compensating \(version \d+\)\n", capsys.readouterr().out)
    assert anyio.run(settle, False, iid) == (iid, "compensated")
    assert ("undo b-id" in log) == (action == "retry-compensation")
    assert log[-1] == "undo a-id"
    # Once it is settled there is nothing left to decide, and the operator is told so.
    assert main([action, iid, "--db", url]) == 1
    assert capsys.readouterr().err == (
        f"sagalog: error: workflow {iid!r} is compensated, not compensation_failed: "
        "there is no failed compensation to retry or skip\n"
    )
    assert main(["unpark", iid, "--db", url]) == 1
    assert capsys.readouterr().err == f"sagalog: error: workflow {iid!r} is compensated, not parked\n"
