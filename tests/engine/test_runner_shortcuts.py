"""The Runner's shortcuts stay correct: a trusted cache, preloaded instances, multi-stream reads.

Each shortcut skips a read on the assumption that nobody else appended; the
expected version of the next append checks that assumption. These tests
break it on purpose and check that the instance still ends as if the
shortcut did not exist.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from saga_helpers import event_types, make_runner
from sagalog.engine import Registry, step, workflow
from sagalog.replay import wait_signal
from sagalog.storage import NO_STREAM, Journal, NewEvent

from sagalog.clock import ManualClock

pytestmark = pytest.mark.anyio

reg = Registry()
GATE: dict[str, anyio.Event] = {}


@step(registry=reg, name="sc.hold")
async def hold(key: str) -> str:
    """Wait until the test opens the gate named ``key``."""
    await GATE[key].wait()
    return f"{key}-done"


@step(registry=reg, name="sc.echo")
async def echo(value: str) -> str:
    return value


@workflow(registry=reg, name="sc.held")
def held(ctx: Any, key: str) -> Any:
    first = yield hold(key)
    answer = yield wait_signal("go", timeout=600)
    last = yield echo(answer)
    return [first, last]


@workflow(registry=reg, name="sc.chain")
def chain(ctx: Any, tag: str) -> Any:
    a = yield echo(f"{tag}1")
    b = yield echo(f"{tag}2")
    c = yield echo(f"{tag}3")
    return [a, b, c]


async def test_a_trusted_cache_that_went_stale_replays_and_sees_the_signal(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    other = make_runner(journal, reg, clock)
    GATE["stale"] = anyio.Event()
    iid = await runner.start(held, "stale", id="stale")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.advance, iid)
        while not await journal.stream_version(f"wf-{iid}") >= 3:  # noqa: ASYNC110 (step started)
            await anyio.sleep(0.01)
        # Another process signals while the step runs: the cached copy is stale,
        # and committing the step's outcome at the cached version must fail and replay.
        await other.signal(iid, "go", "yes")
        misses = runner.cache_misses
        GATE["stale"].set()
    assert runner.cache_misses == misses + 1
    state = await runner.advance(iid)
    assert state.status == "completed"
    assert await runner.result(iid) == ["stale-done", "yes"]
    types = await event_types(journal, iid)
    assert types.count("StepCompleted") == 2 and types.count("SignalReceived") == 1


async def test_steps_in_sequence_run_each_once(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    iid = await runner.start(chain, "s", id="seq")
    state = await runner.advance(iid)
    assert state.status == "completed"
    assert await runner.result(iid) == ["s1", "s2", "s3"]
    assert runner.steps_run == 3
    assert (await event_types(journal, iid)).count("StepStarted") == 3


async def test_preloaded_instances_advance_without_a_second_read(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    ids = [await runner.start(chain, f"p{i}", id=f"pre-{i}") for i in range(3)]
    await runner.preload(ids)
    assert runner.cache_misses == 3 and all(i in runner.cache for i in ids)
    for i, iid in enumerate(ids):
        assert (await runner.advance(iid)).status == "completed"
        assert await runner.result(iid) == [f"p{i}1", f"p{i}2", f"p{i}3"]
    assert runner.cache_misses == 3


async def test_a_preloaded_instance_that_moved_on_replays(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    other = make_runner(journal, reg, clock)
    GATE["moved"] = anyio.Event()
    GATE["moved"].set()
    ids = [await runner.start(held, "moved", id=f"moved-{i}") for i in range(2)]
    await runner.preload(ids)
    await other.advance(ids[0])  # runs the first step elsewhere after the preload
    await other.signal(ids[0], "go", "late")
    state = await runner.advance(ids[0])  # the preloaded copy is stale: conflict, replay
    assert state.status == "completed"
    assert await runner.result(ids[0]) == ["moved-done", "late"]
    assert (await event_types(journal, ids[0])).count("StepCompleted") == 2


async def test_preload_leaves_ended_and_unknown_instances_to_advance(journal: Journal) -> None:
    clock = ManualClock()
    runner = make_runner(journal, reg, clock)
    done = await runner.start(chain, "d", id="ended")
    await runner.advance(done)
    runner.cache.clear()
    await journal.append("wf-alien", NO_STREAM, [NewEvent("Bogus", b"\x01")])
    await runner.preload([done, "alien", "missing"])
    assert done not in runner.cache and "alien" not in runner.cache


async def test_read_streams_returns_each_stream_in_order(journal: Journal) -> None:
    for name, count in (("a", 3), ("b", 1), ("c", 2)):
        events = [NewEvent("E", bytes([i])) for i in range(count)]
        await journal.append(name, NO_STREAM, events)
    found = await journal.read_streams(["c", "a", "nothing", "a"])
    assert sorted(found) == ["a", "c"]
    assert [e.version for e in found["a"]] == [1, 2, 3]
    assert [e.payload for e in found["c"]] == [b"\x00", b"\x01"]
    assert found["a"] == await journal.read_stream("a")
