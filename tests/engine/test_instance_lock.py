"""The Runner's per-instance lock: one holder at a time, waiters in turn, cancellation-safe."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from sagalog.engine.instance_lock import InstanceLock

pytestmark = pytest.mark.anyio


async def test_one_holder_at_a_time_and_waiters_in_the_order_they_came() -> None:
    lock = InstanceLock()
    inside: list[str] = []
    order: list[str] = []
    most = 0

    async def hold(name: str) -> None:
        nonlocal most
        async with lock:
            order.append(name)
            inside.append(name)
            most = max(most, len(inside))
            await anyio.sleep(0.001)  # others try meanwhile
            inside.remove(name)

    async with anyio.create_task_group() as tg:
        for name in "abcde":
            tg.start_soon(hold, name)
            await anyio.lowlevel.checkpoint()  # start them in this order
    assert most == 1
    assert order == list("abcde")
    assert not lock.locked()


async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue() -> None:
    lock = InstanceLock()
    got: list[str] = []

    async def wait_for_it(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            async with lock:
                got.append(name)

    doomed, kept = anyio.CancelScope(), anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        await lock.__aenter__()
        tg.start_soon(wait_for_it, "cancelled", doomed)
        tg.start_soon(wait_for_it, "kept", kept)
        await anyio.sleep(0.01)  # both wait
        doomed.cancel()
        await anyio.sleep(0.01)
        assert got == [] and lock.locked()  # still ours
        await lock.__aexit__(None, None, None)
    # The one waiter left got it; the cancelled one never did.
    assert got == ["kept"]
    assert not lock.locked()


async def test_a_turn_handed_to_a_waiter_being_cancelled_goes_on_to_the_next() -> None:
    lock = InstanceLock()
    got: list[str] = []

    async def wait_for_it(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            async with lock:
                got.append(name)

    first = anyio.CancelScope()
    # fail_after: a turn lost on the way would leave "second" waiting for ever.
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await lock.__aenter__()
            tg.start_soon(wait_for_it, "first", first)
            tg.start_soon(wait_for_it, "second")
            await anyio.sleep(0.01)  # both wait
            first.cancel()  # delivered when "first" runs next, which is...
            await lock.__aexit__(None, None, None)  # ...after the lock was handed to it
    assert got == ["second"]
    assert not lock.locked()
