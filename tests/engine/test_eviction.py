"""An instance evicted from the sticky cache is freed at once, not left to the cycle collector.

A suspended workflow generator's frame refers back to its executor, so a
dropped executor is a reference cycle. The cache closes an evicted instance's
generator, unless the instance is being advanced right now.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from saga_helpers import make_runner
from sagalog.engine import Registry, workflow
from sagalog.engine.live import LiveCache
from sagalog.replay import sleep
from sagalog.storage import connect

from sagalog.clock import ManualClock

pytestmark = pytest.mark.anyio

reg = Registry()
CLOSED: list[str] = []


@workflow(registry=reg, name="ev.sleeper")
def sleeper(ctx: Any, tag: str) -> Any:
    try:
        yield sleep(seconds=3600)
    finally:
        CLOSED.append(tag)
    return tag


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees objects while the test runs."""
    gc.collect()
    gc.disable()
    CLOSED.clear()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_collector")
async def test_an_evicted_sleeping_instance_is_freed_without_the_collector() -> None:
    journal = await connect("memory://")
    runner = make_runner(journal, reg, ManualClock(), cache_size=1)
    first = await runner.start(sleeper, "a")
    await runner.advance(first)
    executor = weakref.ref(runner.cache[first].executor)

    second = await runner.start(sleeper, "b")
    await runner.advance(second)  # takes the only cache slot

    assert first not in runner.cache
    assert executor() is None
    assert CLOSED == ["a"]  # its generator was closed, so its finally ran
    assert (await runner.describe(first)).status == "running"  # nothing recorded for it


async def test_an_evicted_instance_replays_and_runs_on() -> None:
    journal = await connect("memory://")
    clock = ManualClock()
    runner = make_runner(journal, reg, clock, cache_size=1)
    first = await runner.start(sleeper, "a")
    await runner.advance(first)
    second = await runner.start(sleeper, "b")
    await runner.advance(second)

    clock.advance(3601)
    assert (await runner.advance(first)).status == "completed"
    assert (await runner.advance(second)).status == "completed"


@pytest.mark.usefixtures("no_collector")
async def test_an_instance_in_use_when_evicted_is_left_open_for_its_holder() -> None:
    journal = await connect("memory://")
    runner = make_runner(journal, reg, ManualClock())
    first = await runner.start(sleeper, "a")
    await runner.advance(first)
    live = runner.cache[first]
    busy = {first}
    cache = LiveCache(1, busy.__contains__)
    cache[first] = live

    cache["other"] = runner.cache[first]  # evicts ``first`` while "in use"

    assert first not in cache
    assert CLOSED == []
    busy.clear()
    cache["third"] = live  # evicts "other" (the same live), now not in use
    assert CLOSED == ["a"]
