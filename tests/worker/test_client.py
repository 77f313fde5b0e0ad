"""The client against a worker running in the same event loop, and its bad inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
from sagalog.engine.client import Client, SyncClient
from sagalog.engine.runner import Runner
from sagalog.engine.worker import Worker
from sagalog.engine.worker_process import RunnerHandler
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.engine.workflow import Registry, load_modules, step, workflow
from sagalog.storage import Journal, connect

from sagalog.errors import (
    EncodingError,
    InvalidArgumentError,
    NotFoundError,
    UnknownWorkflowError,
    WorkflowCancelledError,
)

pytestmark = pytest.mark.anyio

REGISTRY = load_modules(["chaos_workflows"])


@asynccontextmanager
async def worker_on(journal: Journal, registry: Registry = REGISTRY) -> AsyncIterator[Worker]:
    runner = Runner(journal, registry, worker_id="test-worker")
    settings = WorkerSettings(worker_id="test-worker", poll_seconds=0.05, lease_seconds=5.0)
    worker = Worker(journal, RunnerHandler(runner), settings)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        yield worker
        worker.shutdown()


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest) -> AsyncIterator[Journal]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    opened = await connect(url)
    yield opened
    await opened.close()


async def test_start_result_describe_and_list(journal: Journal) -> None:
    client = Client(journal, REGISTRY)
    async with worker_on(journal) as worker:
        first = await client.start("noop_saga", 1, id="n-1")
        assert await client.start("noop_saga", 1, id="n-1") == "n-1"  # idempotent
        assert await client.result(first, 10) == 4
        other = await client.start("approval", "refund #7")
        assert await client.result(first, 1) == 4
    state = await client.describe(first)
    assert (state.status, state.workflow) == ("completed", "noop_saga")
    assert [s.name for s in state.steps.values()] == ["nothing"] * 3
    assert [e.type for e in await journal.read_stream("wf-n-1")].count("WorkflowStarted") == 1
    assert [s.instance_id for s in await client.list()] == [other, first]
    assert [s.instance_id for s in await client.list(status="completed")] == [first]
    assert [s.instance_id for s in await client.list(workflow="approval")] == [other]
    assert await client.list(since=journal.clock.now() + timedelta(hours=1)) == []
    assert len(await client.list(limit=1)) == 1
    assert worker.metrics.value("sagalog_instances_completed_total") == 1


async def test_signal_and_cancel(journal: Journal) -> None:
    client = Client(journal, REGISTRY)
    async with worker_on(journal):
        approved = await client.start("approval", "invoice 1")
        rejected = await client.start("approval", "invoice 2")
        await client.signal(approved, "approved", {"by": "ann"})
        assert await client.result(approved, 10) == {"request": "invoice 1", "decision": {"by": "ann"}}
        await client.cancel(rejected, "changed my mind")
        with pytest.raises(WorkflowCancelledError, match="changed my mind"):
            await client.result(rejected, 10)
    assert (await client.describe(rejected)).status == "cancelled"


async def test_unregistered_workflow_is_parked_and_the_worker_goes_on(sqlite_url: str) -> None:
    journal = await connect(sqlite_url)
    elsewhere = Registry()

    @workflow(name="ghost", registry=elsewhere)
    def ghost(ctx: object) -> object:
        yield nothing_here()

    @step(name="nothing_here", registry=elsewhere)
    async def nothing_here() -> None:
        return None

    ghost_id = await Client(journal, elsewhere).start("ghost")
    client = Client(journal, REGISTRY)
    async with worker_on(journal) as worker:
        done = await client.start("noop_saga", 5)
        assert await client.result(done, 10) == 8
        with anyio.fail_after(10):
            while (await client.describe(ghost_id)).status != "parked":  # noqa: ASYNC110
                await anyio.sleep(0.02)
    state = await client.describe(ghost_id)
    assert "ghost" in state.parked_reason
    assert worker.metrics.value("sagalog_instances_parked_total") == 1
    await journal.close()


async def test_bad_inputs_have_clear_messages(sqlite_url: str) -> None:
    journal = await connect(sqlite_url)
    client = Client(journal, REGISTRY)
    with pytest.raises(UnknownWorkflowError, match=r"unknown workflow 'nope': registered workflows are "):
        await client.start("nope")
    with pytest.raises(EncodingError, match="cannot be encoded"):
        await client.start("noop_saga", object())
    for call in (client.describe("missing"), client.signal("missing", "x"), client.cancel("missing")):
        with pytest.raises(NotFoundError, match="missing"):
            await call
    with pytest.raises(InvalidArgumentError) as caught:
        await client.list(status="done")
    assert str(caught.value).startswith("unknown status 'done': use one of running, completed")
    with pytest.raises(InvalidArgumentError, match="limit must be at least 1, not 0"):
        await client.list(limit=0)
    assert await client.list() == []
    await journal.close()


def test_sync_client(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sync.db'}"
    with SyncClient(url, modules=["chaos_workflows"]) as client:
        instance = client.start("approval", "leave", id="a-1")
        assert client.start("approval", "leave", id="a-1") == "a-1"
        client.signal(instance, "approved", True)
        client.cancel(instance, "no longer needed")
        state = client.describe(instance)
        assert (state.instance_id, state.workflow, state.status) == ("a-1", "approval", "running")
        assert [s.instance_id for s in client.list(status="running")] == ["a-1"]
        with pytest.raises(NotFoundError):
            client.describe("nobody")
        # No worker runs here: the wait ends, the instance goes on.
        with pytest.raises(TimeoutError, match=r"'a-2' did not end within 0\.2 seconds"):
            client.execute("approval", "leave", id="a-2", timeout=0.2)
        assert client.describe("a-2").status == "running"


async def test_the_worker_expires_sessions_when_their_deadline_comes() -> None:
    from sagalog.engine.sessions import Sessions

    from sagalog.clock import ManualClock

    clock = ManualClock()
    journal = await connect("memory://", clock=clock)
    sessions = Sessions(journal)
    await sessions.open("cart-1", kind="checkout", idle_timeout=60)
    await sessions.open("cart-2", kind="checkout", idle_timeout=600)
    runner = Runner(journal, REGISTRY, clock=clock, worker_id="w")
    settings = WorkerSettings(worker_id="w", poll_seconds=0.05, lease_seconds=5.0)
    worker = Worker(journal, RunnerHandler(runner, Sessions(journal)), settings, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        clock.advance(61)
        with anyio.fail_after(10):
            while (await sessions.get("cart-1")).status != "expired":  # noqa: ASYNC110
                await anyio.sleep(0.01)
        worker.shutdown()
    assert (await sessions.get("cart-2")).status == "open"


async def test_a_due_timer_wakes_the_worker_without_waiting_for_the_poll(pg_url: str) -> None:
    journal = await connect(pg_url)
    client = Client(journal, REGISTRY)
    runner = Runner(journal, REGISTRY, worker_id="timers")
    # A poll far longer than the test may take: only the timer can wake the worker.
    settings = WorkerSettings(worker_id="timers", poll_seconds=3600, lease_seconds=5.0)
    worker = Worker(journal, RunnerHandler(runner), settings)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        sleeper = await client.start("sleeper", 0.3)
        assert await client.result(sleeper, 10) == "woke"
        worker.shutdown()
    await journal.close()
