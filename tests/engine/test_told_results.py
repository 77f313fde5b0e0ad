"""A client awaiting a result takes a small outcome from the notice of the end, without a read."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from saga_helpers import make_runner
from sagalog.engine import Registry, Retry, step, workflow
from sagalog.storage import Journal, PayloadCodec, ZlibCodec
from sagalog.storage.notices import LAST_PAYLOAD

from sagalog.clock import ManualClock
from sagalog.errors import WorkflowFailedError

pytestmark = pytest.mark.anyio


def count_reads(journal: Journal) -> list[str]:
    """The streams ``journal.read_stream`` is asked for from now on (the real read still runs)."""
    asked: list[str] = []
    read = journal.read_stream

    async def counted(stream_id: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(stream_id)
        return await read(stream_id, *args, **kwargs)

    journal.read_stream = counted  # type: ignore[method-assign]
    return asked


def sagas() -> Registry:
    registry = Registry()

    @step(name="make", registry=registry, retry=Retry.none())
    async def make(size: int) -> str:
        if size < 0:
            raise ValueError("no negative sizes")
        return "x" * size

    @workflow(name="maker", registry=registry)
    def maker(ctx: Any, size: int) -> Any:
        return (yield make(size))

    return registry


async def outcome_and_reads(
    journal: Journal, size: int, codec: PayloadCodec | None = None
) -> tuple[object, list[str]]:
    """Await ``maker(size)`` from one runner while another runs it, each on a journal of its
    own over ``journal``'s store; (the outcome, the streams the waiter read)."""
    registry, clock = sagas(), ManualClock()
    waiter = make_runner(Journal(journal.recorder, codec=codec), registry, clock)
    worker = make_runner(Journal(journal.recorder, codec=codec), registry, clock)
    instance = await waiter.start("maker", size)
    reads = count_reads(waiter.journal)
    found: list[object] = []

    async def wait() -> None:
        try:
            found.append(await waiter.result(instance, timeout=10))
        except WorkflowFailedError as exc:
            found.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(0.05)  # the waiter has read the instance and watches
        await worker.run_until_idle()
    return found[0], reads


async def test_a_small_result_comes_with_the_notice(journal: Journal) -> None:
    result, reads = await outcome_and_reads(journal, 10)
    assert result == "x" * 10
    assert reads == [reads[0]]  # the read at the start only


async def test_a_failure_comes_with_the_notice_too(journal: Journal) -> None:
    error, reads = await outcome_and_reads(journal, -1)
    assert isinstance(error, WorkflowFailedError) and "no negative sizes" in str(error)
    assert len(reads) == 1


async def test_a_big_result_is_read(journal: Journal) -> None:
    result, reads = await outcome_and_reads(journal, LAST_PAYLOAD + 100)
    assert result == "x" * (LAST_PAYLOAD + 100)
    assert len(reads) == 2  # at the start and at the end


async def test_a_codec_s_payload_is_passed_back_before_it_is_used(journal: Journal) -> None:
    result, reads = await outcome_and_reads(journal, 10, ZlibCodec())
    assert result == "x" * 10
    assert len(reads) == 1


async def executed(journal: Journal, size: int, id: str | None = None) -> tuple[object, list[str]]:
    """``execute`` ``maker(size)`` from one runner while another runs it; (the outcome, the
    streams the executing runner read)."""
    registry, clock = sagas(), ManualClock()
    client = make_runner(Journal(journal.recorder), registry, clock)
    worker = make_runner(Journal(journal.recorder), registry, clock)
    reads = count_reads(client.journal)
    found: list[object] = []

    async def execute() -> None:
        try:
            found.append(await client.execute("maker", size, id=id, timeout=10))
        except WorkflowFailedError as exc:
            found.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(execute)
        while not await worker.journal.work_index():  # noqa: ASYNC110 (the start is in)
            await anyio.sleep(0.01)
        await worker.run_until_idle()
    return found[0], reads


async def test_execute_starts_and_awaits_without_reading_the_instance(journal: Journal) -> None:
    assert await executed(journal, 10) == ("x" * 10, [])


async def test_execute_reads_an_end_the_notice_could_not_carry(journal: Journal) -> None:
    result, reads = await executed(journal, LAST_PAYLOAD + 100)
    assert result == "x" * (LAST_PAYLOAD + 100)
    assert len(reads) == 1  # at the end only


async def test_execute_reports_a_failure_as_result_does(journal: Journal) -> None:
    error, reads = await executed(journal, -1)
    assert isinstance(error, WorkflowFailedError) and "no negative sizes" in str(error)
    assert reads == []


async def test_execute_of_an_id_in_use_awaits_that_instance(journal: Journal) -> None:
    registry, clock = sagas(), ManualClock()
    first = make_runner(journal, registry, clock)
    await first.start("maker", 3, id="taken")
    await first.run_until_idle()
    # The id exists (started with 3): nothing new starts, its result comes back.
    assert await first.execute("maker", 5, id="taken", timeout=10) == "xxx"
