"""The Runner on memory, SQLite and PostgreSQL: sagas, snapshots, the sticky cache, races."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from saga_helpers import drive, event_types, make_runner
from sagalog.engine import Registry, run_async, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import gather, sleep, wait_signal
from sagalog.replay.folding import load_state
from sagalog.replay.saga import SagaFold
from sagalog.storage import Journal

from sagalog.clock import ManualClock
from sagalog.errors import WorkflowFailedError

pytestmark = pytest.mark.anyio

reg = Registry()


@step(registry=reg, name="be.book", retry=Retry.fixed(1, attempts=3))
async def book(what: str) -> str:
    if what == "hotel-full":
        raise LookupError("no rooms")
    return f"{what}-ok"


@step(registry=reg, name="be.cancel", retry=Retry.none())
def cancel_booking(confirmation: str) -> str:
    return f"cancelled {confirmation}"


@workflow(registry=reg, name="be.trip")
def trip(ctx: Any, hotel: str) -> Any:
    flight, car = yield gather(
        book("flight").compensate(cancel_booking), book("car").compensate(cancel_booking)
    )
    yield sleep(seconds=10)
    stay = yield book(hotel).compensate(cancel_booking)
    answer = yield wait_signal("confirm", timeout=60)
    return [flight, car, stay, answer]


@workflow(registry=reg, name="be.hop")
def hop(ctx: Any, tag: str) -> Any:
    confirmation = yield book(tag)
    yield sleep(seconds=5)
    return confirmation


@workflow(registry=reg, name="be.parent")
def parent(ctx: Any) -> Any:
    a, b = yield gather(hop("x"), hop("y"))
    c = yield hop("z")
    return [a, b, c]


async def test_a_saga_on_each_backend(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    ok = await runner.start(trip, "hotel-a", id="ok")
    bad = await runner.start(trip, "hotel-full", id="bad")
    await runner.run_until_idle()
    clock.advance(10)
    await runner.run_until_idle()
    await runner.signal(ok, "confirm", "yes")
    await drive(runner, clock, ok)
    await drive(runner, clock, bad)
    assert await runner.result(ok) == ["flight-ok", "car-ok", "hotel-a-ok", "yes"]
    with pytest.raises(WorkflowFailedError, match=r"ended compensated: .*no rooms"):
        await runner.result(bad)
    bad_types = await event_types(journal, bad)
    assert bad_types.count("CompensationCompleted") == 2
    assert await journal.next_ready_at() is None  # both ended: the work index is empty


async def test_child_workflows_on_each_backend(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    iid = await runner.start(parent, id="p")
    state = await drive(runner, clock, iid)
    assert state.status == "completed"
    assert await runner.result(iid) == ["x-ok", "y-ok", "z-ok"]
    assert sorted(c.child_id for c in state.children.values()) == ["p-0", "p-1", "p-2"]
    assert all(c.status == "completed" for c in state.children.values())


async def test_snapshots_bound_the_fold(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock, snapshot_every=4)
    iid = await runner.start(trip, "hotel-a", id="snap")
    await runner.run_until_idle()
    clock.advance(10)
    await runner.run_until_idle()
    snapshot = await journal.latest_snapshot("wf-snap")
    assert snapshot is not None and snapshot.version >= 4
    fold = SagaFold()
    with_snapshot, version = await load_state(journal, "wf-snap", fold)
    from_scratch, _ = await load_state(journal, "wf-snap", fold, use_snapshots=False)
    assert with_snapshot == from_scratch
    assert version == await journal.stream_version("wf-snap")
    assert (await runner.describe(iid)) == from_scratch


async def test_sticky_cache_and_a_race_between_runners(journal: Journal) -> None:
    clock = ManualClock()
    one = make_runner(journal, reg, clock)
    two = make_runner(journal, reg, clock)
    iid = await one.start(trip, "hotel-a", id="race")
    await one.advance(iid)  # miss: replays from the journal
    clock.advance(10)
    await two.advance(iid)  # the other runner moves it on: one's cached copy is now stale
    assert one.cache_misses == 1
    hits = one.cache_hits
    await one.signal(iid, "confirm", "yes")
    state = await one.advance(iid)  # a hit, caught up from the journal tail: no replay
    assert one.cache_misses == 1
    assert one.cache_hits > hits
    assert state.status == "completed"
    assert await one.result(iid) == ["flight-ok", "car-ok", "hotel-a-ok", "yes"]


async def test_concurrent_advances_of_one_instance_record_each_result_once(journal: Journal) -> None:
    clock = ManualClock()
    runners = [make_runner(journal, reg, clock) for _ in range(3)]
    iid = await runners[0].start(trip, "hotel-a", id="busy")
    async with anyio.create_task_group() as tg:
        for runner in runners:
            tg.start_soon(runner.advance, iid)
    types = await event_types(journal, iid)
    assert types.count("StepCompleted") == 2  # flight and car, each recorded once
    assert types.count("TimerStarted") == 1


async def test_run_async_drives_timers_and_children(tmp_path: Path) -> None:
    clock = ManualClock()
    url = f"sqlite:///{tmp_path / 'run.db'}"
    results: list[Any] = []

    async def run_it() -> None:
        results.append(await run_async(parent, url=url, id="r", clock=clock, registry=reg))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it)
            while not results:  # time only moves when told: nudge it while the run waits
                await anyio.sleep(0.001)
                clock.advance(1)
    assert results == [["x-ok", "y-ok", "z-ok"]]


@workflow(registry=reg, name="be.quick")
def quick(ctx: Any, n: int) -> Any:
    done = yield book(f"n{n}")
    return done


def test_sagalog_run_returns_the_result(tmp_path: Path) -> None:
    import sagalog

    url = f"sqlite:///{tmp_path / 'quick.db'}"
    assert sagalog.run(quick, 3, url=url, registry=reg) == "n3-ok"
    assert sagalog.run(quick, 3, url=url, id="fixed", registry=reg) == "n3-ok"
    # idempotent by id: the existing instance's result, not a new run
    assert sagalog.run(quick, 4, url=url, id="fixed", registry=reg) == "n3-ok"
