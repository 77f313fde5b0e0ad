"""A commit rewrites an instance's work-index row only when the row would say something new."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from saga_helpers import drive, event_types, make_runner
from sagalog.engine import Registry, step, workflow
from sagalog.replay import sleep
from sagalog.storage import Journal

from sagalog.clock import ManualClock

pytestmark = pytest.mark.anyio


async def row_of(journal: Journal, instance_id: str) -> datetime | None:
    """The instance's ready_at in the work index (None: no row)."""
    rows = [w for w in await journal.work_index() if w.stream_id == f"wf-{instance_id}"]
    return rows[0].ready_at if rows else None


async def test_steps_in_a_row_leave_the_ready_row_alone_and_a_timer_rewrites_it(journal: Journal) -> None:
    registry = Registry()
    clock = ManualClock()
    seen: list[datetime | None] = []
    """The row's ready_at as each step runs."""

    @step(name="tick", registry=registry)
    async def tick(n: int) -> int:
        seen.append(await row_of(journal, "w"))
        clock.advance(5)  # each outcome is committed 5 s after the step before it
        return n + 1

    @workflow(name="ticks-then-nap", registry=registry)
    def ticks_then_nap(ctx: Any, n: int) -> Any:
        n = yield tick(n)
        n = yield tick(n)
        n = yield tick(n)
        yield sleep(seconds=60)
        return n

    runner = make_runner(journal, registry, clock)
    started = clock.now()
    await runner.start(ticks_then_nap, 0, id="w")
    await runner.run_until_idle()

    # The claim's first commit (schedule and start the first step) went in with
    # the first outcome, 5 s later, and wrote the row once; the commit after
    # the second step (10 s) did not move it, since a claim reads it the same way.
    assert seen == [started, started + timedelta(seconds=5), started + timedelta(seconds=5)]
    # The nap made it due later: that is new, so the last commit wrote it.
    napping = clock.now()
    assert napping == started + timedelta(seconds=15)
    assert await row_of(journal, "w") == napping + timedelta(seconds=60)

    state = await drive(runner, clock, "w")
    assert state.status == "completed" and state.result is not None
    assert await row_of(journal, "w") is None  # ended: the row is gone
    assert (await event_types(journal, "w")).count("StepCompleted") == 3


async def test_a_runner_gone_between_steps_leaves_a_row_another_runner_claims(journal: Journal) -> None:
    registry = Registry()
    clock = ManualClock()
    runs: list[int] = []
    gone = anyio.CancelScope()

    @step(name="count", registry=registry)
    async def count(n: int) -> int:
        runs.append(n)
        if len(runs) == 3:
            gone.cancel()  # the runner goes away during the third step
        clock.advance(1)
        return n + 1

    @workflow(name="counts", registry=registry)
    def counts(ctx: Any, n: int) -> Any:
        for _ in range(4):
            n = yield count(n)
        return n

    started = clock.now()
    await make_runner(journal, registry, clock).start(counts, 0, id="k")
    with gone:
        await make_runner(journal, registry, clock).advance("k")
    assert runs == [0, 1, 2]
    # Mid-instance, the row still says "ready" (since the start): anyone may claim it.
    assert await row_of(journal, "k") == started

    rescuer = make_runner(journal, registry, clock)  # another process: nothing cached
    state = await drive(rescuer, clock, "k")
    assert state.status == "completed"
    assert runs[:3] == [0, 1, 2] and runs[-1] == 3
    assert await row_of(journal, "k") is None


async def test_an_instance_adopted_as_claimed_keeps_its_row_from_the_first_commit(journal: Journal) -> None:
    registry = Registry()
    clock = ManualClock()
    seen: dict[str, datetime | None] = {}

    @step(name="look", registry=registry)
    async def look(instance_id: str) -> None:
        seen[instance_id] = await row_of(journal, instance_id)

    @workflow(name="looks", registry=registry)
    def looks(ctx: Any, instance_id: str) -> Any:
        yield look(instance_id)

    runner = make_runner(journal, registry, clock)
    started = clock.now()
    for instance_id in ("claimed", "read"):
        await runner.start(looks, instance_id, id=instance_id)
    clock.advance(5)
    histories = {i: await journal.read_stream(f"wf-{i}") for i in ("claimed", "read")}
    await runner.adopt({"claimed": histories["claimed"]}, claimed=True)  # as a worker does after a claim
    await runner.adopt({"read": histories["read"]})  # just read: its row is not known to be ready
    for instance_id in ("claimed", "read"):
        await runner.advance(instance_id)
    assert seen == {"claimed": started, "read": started + timedelta(seconds=5)}
