"""A start hands its new instance to an idle worker's ticket, without a claim (PostgreSQL).

A worker with free slots and nothing to claim leaves tickets
(``Journal.offer``); a start appended alone takes one in its own statement,
leases the instance to that worker and tells only it, with the start event
in the notice. These tests show the hand-off, the tickets that take nothing
(run out, of another namespace, withdrawn by a drain or by a worker whose
slots filled), a start handed to a worker that died, and one too big for
its notice to carry (the worker reads it).
"""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import pytest
from sagalog.engine import Registry, Runner, step, workflow
from sagalog.engine.worker import Worker
from sagalog.engine.worker_leases import Tickets
from sagalog.engine.worker_process import RunnerHandler
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.storage import UNKNOWN, Journal, Touch, connect
from test_worker_core import Stepper, make_ready

pytestmark = pytest.mark.anyio

ON_POSTGRES = pytest.mark.parametrize("journal_url", ["postgres"], indirect=True)
"""The ``journal`` fixture on PostgreSQL only (its ``pg_url`` is the test's too)."""


def rows(pg_url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def tickets(pg_url: str) -> list[tuple[Any, ...]]:
    """(owner, slot) of every ticket left."""
    return rows(pg_url, "SELECT owner, slot FROM tickets ORDER BY owner, slot")


def lease_of(pg_url: str, instance_id: str) -> tuple[Any, ...] | None:
    """The instance's work-index lease owner, or None when it has no row."""
    found = rows(pg_url, f"SELECT lease_owner FROM work_index WHERE stream_id = 'wf-{instance_id}'")
    return found[0] if found else None


def gated_saga(registry: Registry, gate: anyio.Event) -> Any:
    @step(name="wait-for-gate", registry=registry)
    async def wait_for_gate() -> str:
        await gate.wait()
        return "through"

    @workflow(name="gated", registry=registry)
    def gated(ctx: Any) -> Any:
        return (yield wait_for_gate())

    return gated


async def until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 (another connection's view)
            await anyio.sleep(0.02)


@ON_POSTGRES
async def test_an_idle_workers_ticket_takes_a_start_without_a_claim(journal: Journal, pg_url: str) -> None:
    registry, gate = Registry(), anyio.Event()
    gated = gated_saga(registry, gate)
    client = Runner(journal, registry, worker_id="client")
    worker = Worker(journal, RunnerHandler(Runner(journal, registry, worker_id="w")),
                    WorkerSettings(worker_id="w", poll_seconds=0.05))  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await until(lambda: len(tickets(pg_url)) == 4)  # idle, with free slots: a few tickets

        await client.start(gated, id="g")
        # The start's own statement leased it to the worker and took one ticket.
        assert lease_of(pg_url, "g") == ("w",)
        assert len(tickets(pg_url)) == 3
        gate.set()
        assert await client.result("g", timeout=10) == "through"
        worker.shutdown()

    assert worker.metrics.value("sagalog_instances_handed_total") == 1
    assert worker.metrics.value("sagalog_instances_claimed_total") == 0  # the worker never claimed it
    assert tickets(pg_url) == []  # the drain withdrew the rest


@ON_POSTGRES
async def test_a_ticket_whose_lease_ran_out_or_of_another_namespace_takes_nothing(
    journal: Journal, pg_url: str
) -> None:
    registry = Registry()
    gated = gated_saga(registry, anyio.Event())
    await journal.create_namespace("other")
    other = await journal.in_namespace("other")
    assert await journal.offer("gone", 1, -1.0) is not None  # its lease ran out a second ago
    assert await other.offer("elsewhere", 1, 30.0) is not None

    await Runner(journal, registry).start(gated, id="s")

    assert lease_of(pg_url, "s") == (None,)  # ready for any worker's claim
    assert tickets(pg_url) == [("elsewhere", 1), ("gone", 1)]


@ON_POSTGRES
async def test_a_start_takes_the_ticket_renewed_last(journal: Journal, pg_url: str) -> None:
    registry = Registry()
    gated = gated_saga(registry, anyio.Event())
    await journal.offer("killed", 1, 10.0)  # not renewed since: it runs out first
    await journal.offer("alive", 1, 30.0)  # a heartbeat renewed it just now

    await Runner(journal, registry).start(gated, id="r")

    assert lease_of(pg_url, "r") == ("alive",)
    assert tickets(pg_url) == [("killed", 1)]


@ON_POSTGRES
async def test_a_start_handed_to_a_worker_that_died_is_taken_over_once_its_lease_runs_out(
    journal: Journal, pg_url: str
) -> None:
    registry, gate = Registry(), anyio.Event()
    gated = gated_saga(registry, gate)
    gate.set()
    client = Runner(journal, registry, worker_id="client")
    await journal.offer("killed", 1, 0.6)  # a worker's tickets outlive it until their lease runs out

    await client.start(gated, id="d")
    assert lease_of(pg_url, "d") == ("killed",)

    runner = Runner(journal, registry, worker_id="w")
    worker = Worker(journal, RunnerHandler(runner), WorkerSettings(worker_id="w", poll_seconds=0.05))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        assert await client.result("d", timeout=10) == "through"
        worker.shutdown()
    assert worker.metrics.value("sagalog_instances_claimed_total") == 1
    assert worker.metrics.value("sagalog_lease_takeovers_total", workflow="gated") == 1


async def test_other_backends_hand_nothing_off(sqlite_url: str) -> None:
    journal = await connect(sqlite_url, migrate=True)
    try:
        assert not journal.hands_off
        assert await journal.offer("w", 4, 30.0) is None
        await journal.withdraw("w")  # nothing to take back: no error either
    finally:
        await journal.close()


@ON_POSTGRES
async def test_a_worker_whose_slots_fill_withdraws_its_tickets(journal: Journal, pg_url: str) -> None:
    handler = Stepper(journal)
    handler.gate = anyio.Event()
    worker = Worker(journal, handler, WorkerSettings(worker_id="w", poll_seconds=0.05, concurrency=2))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await until(lambda: tickets(pg_url) == [("w", 1), ("w", 2)])  # one per free slot
        await make_ready(journal, 2)  # appended with no hand-off: the worker claims them
        # Both claimed, and no slot left for a start to take: the tickets are gone.
        await until(lambda: len(worker.leases) == 2 and tickets(pg_url) == [])
        handler.gate.set()
        worker.shutdown()


@ON_POSTGRES
async def test_a_start_too_big_for_its_notice_is_handed_off_and_read(journal: Journal, pg_url: str) -> None:
    registry = Registry()

    @step(name="measure", registry=registry)
    async def measure(text: str) -> int:
        return len(text)

    @workflow(name="big", registry=registry)
    def big(ctx: Any, text: str) -> Any:
        return (yield measure(text))

    client = Runner(journal, registry, worker_id="client")
    worker = Worker(journal, RunnerHandler(Runner(journal, registry, worker_id="w")),
                    WorkerSettings(worker_id="w", poll_seconds=0.05))  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await until(lambda: len(tickets(pg_url)) == 4)
        # Its start event is over the 1,024 bytes a notice carries: the worker reads it.
        await client.start(big, "x" * 5000, id="b")
        assert await client.result("b", timeout=10) == 5000
        worker.shutdown()
    assert worker.metrics.value("sagalog_instances_handed_total") == 1
    assert worker.metrics.value("sagalog_instances_claimed_total") == 0


def test_the_worker_counts_its_tickets_down_and_forgets_them_when_notices_may_be_lost() -> None:
    tickets = Tickets()
    tickets.out = 4
    start = Touch("default", "wf-a", ("WorkflowStarted",), "", handed=True)
    assert not tickets.hand_over([Touch("default", "wf-b", ("StepCompleted",), "w")])  # not ours
    assert tickets.hand_over([start]) and tickets.out == 3 and tickets.waiting
    assert tickets.take() == [start] and not tickets.waiting
    assert not tickets.hand_over([UNKNOWN])
    assert tickets.out == 0  # a start may have taken one unheard: offer anew
