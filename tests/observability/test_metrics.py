"""A worker's metrics: scraped over HTTP from a real worker on SQLite and PostgreSQL,
labelled by workflow and step names only (never an instance id)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import obs_workflows
import pytest
from obs_helpers import eventually, scrape, value, worker_on
from obs_workflows import REGISTRY
from sagalog.engine import Client, Registry, Runner, step, workflow
from sagalog.engine.worker_metrics import WorkerMetrics
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock
from sagalog.testing import Vanishing

pytestmark = pytest.mark.anyio

ENDED = "sagalog_workflows_ended_total"


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest) -> AsyncIterator[Journal]:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    opened = await connect(url)
    yield opened
    await opened.close()


def ghost_registry() -> Registry:
    """A workflow the worker does not know: instances of it are parked."""
    elsewhere = Registry()

    @step(name="haunt", registry=elsewhere)
    async def haunt() -> None:
        return None

    @workflow(name="ghost", registry=elsewhere)
    def ghost(ctx: object) -> object:
        yield haunt()

    return elsewhere


async def test_a_completed_a_compensated_and_a_parked_saga_are_counted(journal: Journal) -> None:
    obs_workflows.flaky_failures.clear()
    client = Client(journal, REGISTRY)
    ghost = await Client(journal, ghost_registry()).start("ghost", id="g-1")
    async with worker_on(journal) as worker:
        done = await client.start("order", "book", id="o-1")
        compensated = await client.start("declined", "lamp", id="d-1")
        retried = await client.start("retried", "k1", id="r-1")
        tripped = await client.start("tripping", id="t-1")
        assert await client.result(done, 15) == "r-book"
        assert await client.result(retried, 15) == "k1"
        for instance, status in [(compensated, "compensated"), (tripped, "failed"), (ghost, "parked")]:

            async def ended(instance: str = instance, status: str = status) -> bool:
                return (await client.describe(instance)).status == status

            await eventually(ended)

        async def counted() -> bool:  # the worker counts after its advance returns
            return worker.metrics.value("sagalog_instances_parked_total") == 1 and not worker.leases

        await eventually(counted)
        samples = await scrape(worker)

    for workflow_name in ("order", "declined", "retried", "tripping"):
        assert value(samples, "sagalog_workflows_started_total", workflow=workflow_name) == 1
    assert value(samples, ENDED, workflow="order", status="completed") == 1
    assert value(samples, ENDED, workflow="declined", status="compensated") == 1
    assert value(samples, ENDED, workflow="retried", status="completed") == 1
    assert value(samples, ENDED, workflow="tripping", status="failed") == 1
    assert value(samples, "sagalog_workflows_parked_total", workflow="ghost", reason="unknown_workflow") == 1
    assert value(samples, "sagalog_instances_parked_total") == 1  # the worker's own count agrees

    duration = "sagalog_step_duration_seconds_count"
    assert value(samples, duration, workflow="order", step="reserve", kind="step", outcome="completed") == 1
    assert value(samples, duration, workflow="declined", step="charge", kind="step", outcome="failed") == 1
    assert value(samples, duration, workflow="retried", step="flaky", kind="step", outcome="retrying") == 1
    assert value(samples, "sagalog_step_retries_total", workflow="retried", step="flaky") == 1
    attempts = {"workflow": "retried", "step": "flaky", "kind": "step"}
    assert value(samples, "sagalog_step_attempts_count", **attempts) == 1
    assert value(samples, "sagalog_step_attempts_sum", **attempts) == 2  # it took two attempts
    compensations = "sagalog_compensations_total"
    assert value(samples, compensations, workflow="declined", step="release", outcome="completed") == 1
    assert value(samples, compensations, workflow="declined", step="release", outcome="failed") == 0

    assert value(samples, "sagalog_breaker_state", step="guarded", state="open") == 1
    assert value(samples, "sagalog_breaker_state", step="guarded", state="closed") == 0

    commits = value(samples, "sagalog_journal_append_seconds_count")
    assert commits > 0
    assert value(samples, "sagalog_journal_append_batch_size_count") == commits
    assert value(samples, "sagalog_journal_append_batch_size_sum") >= commits
    replays = sum(v for (name, _), v in samples.items() if name == "sagalog_replay_duration_seconds_count")
    assert 1 <= replays <= value(samples, "sagalog_cache_misses_total")
    assert value(samples, "sagalog_instances_in_flight") == 0


async def test_label_values_are_names_never_instance_ids() -> None:
    journal = await connect("memory://")
    clock = ManualClock()
    runner = Runner(journal, REGISTRY, clock=clock, worker_id="w")
    metrics = WorkerMetrics()
    metrics.observe_runner(runner)
    pairs = [(name, i) for i in range(25) for name in ("order", "declined")]
    ids = [await runner.start(name, "x", id=f"inst-{name}-{i}") for name, i in pairs]
    ids += [await runner.start("napping", 5, id=f"inst-nap-{i}") for i in range(10)]
    await runner.run_until_idle()
    clock.advance(6)
    await runner.run_until_idle()
    assert {(await runner.describe(i)).status for i in ids} == {"completed", "compensated"}

    label_values = {
        label
        for family in metrics.registry.collect()
        for sample in family.samples
        for label in sample.labels.values()
    }
    assert not [v for v in label_values if v.startswith("inst-")]
    names = {"order", "declined", "napping", "reserve", "release", "charge"}
    kinds = {"step", "compensation", "completed", "failed", "retrying", "compensated"}
    buckets = {v for v in label_values if v.replace(".", "").replace("e", "").replace("+", "").isdigit()}
    assert label_values - buckets - {"+Inf"} <= names | kinds
    assert metrics.value(ENDED, workflow="order", status="completed") == 25


async def test_timer_lag_is_how_late_a_due_timer_fired() -> None:
    journal = await connect("memory://")
    clock = ManualClock()
    runner = Runner(journal, REGISTRY, clock=clock, worker_id="w")
    metrics = WorkerMetrics()
    metrics.observe_runner(runner)
    instance = await runner.start("napping", 60)
    await runner.run_until_idle()
    clock.advance(90)  # due after 60 s, fired 30 s late
    await runner.run_until_idle()
    assert (await runner.describe(instance)).status == "completed"
    assert metrics.value("sagalog_timer_lag_seconds_count", workflow="napping") == 1
    assert metrics.value("sagalog_timer_lag_seconds_sum", workflow="napping") == 30


async def test_an_instance_claimed_after_its_workers_lease_ran_out_counts_as_a_takeover() -> None:
    clock = ManualClock()
    journal = await connect("memory://", clock=clock)  # leases run out on this clock
    registry = Registry()
    started = anyio.Event()

    @step(name="slow", registry=registry)
    async def slow() -> str:
        started.set()
        await anyio.sleep_forever()
        return "never"

    @workflow(name="patient", registry=registry)
    def patient(ctx: object) -> object:
        return (yield slow())

    # The first worker dies mid-step (Vanishing: its lease is never given back).
    first = Runner(Vanishing(journal), registry, clock=clock, worker_id="first", lease_seconds=10)  # type: ignore[arg-type]
    instance = await first.start("patient")
    async with anyio.create_task_group() as tg:
        tg.start_soon(first.run_until_idle)
        await started.wait()
        tg.cancel_scope.cancel()

    registry.steps["slow"].fn = _quick  # the code is fixed by the time another worker comes
    second = Runner(journal, registry, clock=clock, worker_id="second")
    metrics = WorkerMetrics()
    metrics.observe_runner(second)
    clock.advance(11)  # the first worker's lease expired
    await second.run_until_idle()
    assert (await second.describe(instance)).status == "completed"
    assert metrics.value("sagalog_lease_takeovers_total", workflow="patient") == 1


async def _quick() -> str:
    return "done"


async def test_sessions_opened_closed_and_expired_are_counted_per_kind() -> None:
    journal = await connect("memory://")
    clock = ManualClock()
    runner = Runner(journal, REGISTRY, clock=clock, worker_id="w")
    metrics = WorkerMetrics()
    metrics.observe_runner(runner)
    await runner.sessions.open("a", kind="cart")
    await runner.sessions.open("a", kind="cart")  # idempotent: opened once
    await runner.sessions.open("b", kind="cart", lifetime=10)
    await runner.sessions.open("c", kind="chat")
    await runner.sessions.close("a")
    clock.advance(11)
    await runner.run_until_idle()  # expires "b"
    assert metrics.value("sagalog_sessions_opened_total", kind="cart") == 2
    assert metrics.value("sagalog_sessions_opened_total", kind="chat") == 1
    assert metrics.value("sagalog_sessions_ended_total", kind="cart", how="closed") == 1
    assert metrics.value("sagalog_sessions_ended_total", kind="cart", how="expired") == 1
    assert metrics.value("sagalog_sessions_ended_total", kind="chat", how="expired") == 0


async def test_open_sessions_per_kind_come_from_the_session_projection(journal: Journal) -> None:
    from sagalog.engine import Sessions

    sessions = Sessions(journal)  # another process (an application) opens them
    for session_id, kind in [("s1", "cart"), ("s2", "cart"), ("s3", "chat")]:
        await sessions.open(session_id, kind=kind)
    metrics = WorkerMetrics()
    metrics.sessions_refresh = 0.05
    async with worker_on(journal, metrics=metrics) as worker:
        async def refreshed(wanted: dict[str, int]) -> bool:
            samples = await scrape(worker)
            return {k: value(samples, "sagalog_sessions_open", kind=k) for k in wanted} == wanted

        await eventually(lambda: refreshed({"cart": 2, "chat": 1}))
        await sessions.close("s1")
        await eventually(lambda: refreshed({"cart": 1, "chat": 1}))
