"""A claim's first commit goes in with the first outcome; a takeover records every start first.

``Runner.advance(taken_over=False)`` (a claim of a lease given back, as the
worker and ``run_until_idle`` pass it) keeps a first commit that only
schedules and starts steps in memory and appends it with the first step's
outcome. These tests show what that saves, what stays true when a signal,
a cancel or a crash comes in between, and that after a takeover every start
is recorded before its attempt runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from saga_helpers import event_types, events, make_runner
from sagalog.engine import Registry, Runner, Workflow, step, step_context, workflow
from sagalog.engine.worker import Worker
from sagalog.engine.worker_metrics import WorkerMetrics
from sagalog.engine.worker_process import RunnerHandler
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.replay import wait_signal
from sagalog.replay.events import StepStarted
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock
from sagalog.testing import TappedJournal, Vanishing, World

pytestmark = pytest.mark.anyio


def one_step_saga(registry: Registry, body: Callable[[], Awaitable[str]]) -> Workflow:
    """Register ``body`` as a step and a workflow ``<its name>-saga`` that runs it and returns its result."""
    name = body.__name__
    run = step(name=name, registry=registry)(body)

    @workflow(name=f"{name}-saga", registry=registry)
    def saga(ctx: Any) -> Any:
        return (yield run())

    return saga


def started_attempts(history: list[object]) -> list[tuple[int, int]]:
    """(seq, attempt) of every recorded StepStarted."""
    return [(e.seq, e.attempt) for e in history if isinstance(e, StepStarted)]


async def test_a_three_step_saga_costs_a_claim_three_commits_not_four(journal: Journal) -> None:
    registry, clock = Registry(), ManualClock()
    during: list[list[str]] = []
    """The instance's recorded event types as each step runs."""

    @step(name="add", registry=registry)
    async def add(n: int) -> int:
        during.append(await event_types(journal, "s"))
        return n + 1

    @workflow(name="three", registry=registry)
    def three(ctx: Any, n: int) -> Any:
        n = yield add(n)
        n = yield add(n)
        return (yield add(n))

    client = make_runner(journal, registry, clock)
    await client.start(three, 0, id="s")
    tapped = TappedJournal(journal, World())
    worker = make_runner(tapped, registry, clock)  # type: ignore[arg-type]
    await worker.run_until_idle()

    assert tapped.appends == 3  # one per outcome; the first step's start went in with its outcome
    assert during == [
        ["WorkflowStarted"],  # nothing recorded yet while the first step runs
        ["WorkflowStarted", "StepScheduled", "StepStarted", "StepCompleted", "StepScheduled", "StepStarted"],
        [
            "WorkflowStarted",
            *["StepScheduled", "StepStarted", "StepCompleted"] * 2,
            "StepScheduled",
            "StepStarted",
        ],
    ]
    assert (await worker.describe("s")).result is not None
    assert started_attempts(await events(journal, "s")) == [(0, 1), (1, 1), (2, 1)]


async def test_a_signal_during_the_first_step_does_not_lose_its_outcome(journal: Journal) -> None:
    registry, clock = Registry(), ManualClock()
    runs: list[int] = []
    client = make_runner(journal, registry, clock)

    @step(name="first", registry=registry)
    async def first() -> str:
        runs.append(step_context().attempt)
        await client.signal("g", "go", "now")  # the worker's next append expects an older version
        return "done"

    @workflow(name="greeted", registry=registry)
    def greeted(ctx: Any) -> Any:
        done = yield first()
        word = yield wait_signal("go")
        return f"{done} {word}"

    await client.start(greeted, id="g")
    worker = make_runner(journal, registry, clock)
    await worker.run_until_idle()

    assert runs == [1]  # the outcome was kept across the replay: the step did not run again
    assert await event_types(journal, "g") == [
        "WorkflowStarted",
        "SignalReceived",  # the client's append came first
        "StepScheduled",
        "StepStarted",
        "StepCompleted",
        "SignalWaitStarted",
        "WorkflowCompleted",
    ]
    assert (await worker.describe("g")).status == "completed"
    assert await worker.result("g") == "done now"


async def test_a_cancel_during_the_first_step_ends_the_instance_and_drops_the_outcome(
    journal: Journal,
) -> None:
    registry, clock = Registry(), ManualClock()
    runs: list[int] = []
    client = make_runner(journal, registry, clock)

    async def slow() -> str:
        runs.append(step_context().attempt)
        await client.cancel("c", "changed my mind")
        return "done"

    cancellable = one_step_saga(registry, slow)

    await client.start(cancellable, id="c")
    worker = make_runner(journal, registry, clock)
    await worker.run_until_idle()

    state = await worker.describe("c")
    assert (state.status, state.message) == ("cancelled", "changed my mind")
    assert runs == [1]
    # The attempt ran but nothing recorded it: like an attempt cut short by a cancel,
    # it has no completion, so nothing is compensated for it; unlike one, it has no
    # start either (docs/guarantees.md, "A cancel that overtakes a claim's first attempt").
    assert await event_types(journal, "c") == [
        "WorkflowStarted", "CancelRequested", "StepScheduled", "StepCancelled", "WorkflowCancelled",
    ]  # fmt: skip


async def test_after_a_takeover_each_start_is_recorded_before_its_attempt_runs(journal_url: str) -> None:
    registry, clock = Registry(), ManualClock()
    journal = await connect(journal_url, clock=clock)  # leases run out on this clock
    runs: list[tuple[int, list[str]]] = []
    """(attempt, the recorded event types) as each attempt begins."""
    dying = anyio.Event()

    async def fragile() -> str:
        runs.append((step_context().attempt, await event_types(journal, "t")))
        if len(runs) < 3:
            dying.set()
            await anyio.sleep_forever()  # its worker dies here
        return "done"

    fragile_saga = one_step_saga(registry, fragile)

    async def worker_dies_mid_step(worker_id: str) -> None:
        nonlocal dying
        dying = anyio.Event()
        doomed = Runner(Vanishing(journal), registry, clock=clock, worker_id=worker_id, lease_seconds=10)  # type: ignore[arg-type]
        async with anyio.create_task_group() as tg:
            tg.start_soon(doomed.run_until_idle)
            await dying.wait()
            tg.cancel_scope.cancel()  # gone without a word: its lease stays until it expires
        clock.advance(11)

    await make_runner(journal, registry, clock).start(fragile_saga, id="t")
    await worker_dies_mid_step("first")  # a fresh claim: its first attempt left no trace
    await worker_dies_mid_step("second")  # a takeover: the attempt was recorded before it ran
    last = make_runner(journal, registry, clock)
    metrics = WorkerMetrics()
    metrics.observe_runner(last)
    await last.run_until_idle()

    assert runs == [
        (1, ["WorkflowStarted"]),
        (1, ["WorkflowStarted", "StepScheduled", "StepStarted"]),
        (2, ["WorkflowStarted", "StepScheduled", "StepStarted", "StepStarted"]),  # the crash spent one
    ]
    assert started_attempts(await events(journal, "t")) == [(0, 1), (0, 2)]
    assert (await last.describe("t")).status == "completed"
    assert metrics.value("sagalog_lease_takeovers_total", workflow="fragile-saga") == 1
    await journal.close()


async def test_an_advance_cut_short_during_a_deferred_attempt_leaves_no_stale_copy(journal: Journal) -> None:
    registry, clock = Registry(), ManualClock()
    runs: list[int] = []
    go_on = anyio.Event()
    stuck = anyio.Event()

    async def wait_a_bit() -> str:
        runs.append(step_context().attempt)
        if len(runs) == 1:
            stuck.set()
            await go_on.wait()
        return "done"

    patient = one_step_saga(registry, wait_a_bit)

    runner = make_runner(journal, registry, clock)
    await runner.start(patient, id="p")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run_until_idle)
        await stuck.wait()
        tg.cancel_scope.cancel()  # e.g. a grace period ran out: the lease is given back
    await runner.run_until_idle()  # the same runner again: it replays rather than trust its copy

    assert runs == [1, 1]
    assert started_attempts(await events(journal, "p")) == [(0, 1)]
    assert (await runner.describe("p")).status == "completed"


async def test_a_first_step_that_runs_long_shows_as_started_once_recorded(journal: Journal) -> None:
    registry, clock = Registry(), ManualClock()
    running, finish = anyio.Event(), anyio.Event()

    async def long() -> str:
        running.set()
        await finish.wait()
        return "done"

    long_saga = one_step_saga(registry, long)

    runner = make_runner(journal, registry, clock)
    await runner.start(long_saga, id="l")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.run_until_idle)
        await running.wait()
        await runner.record_deferred(["l"], older_than=10)
        assert await event_types(journal, "l") == ["WorkflowStarted"]  # set aside just now: kept
        clock.advance(11)
        await runner.record_deferred(["l", "not-running-here"], older_than=10)
        assert await event_types(journal, "l") == ["WorkflowStarted", "StepScheduled", "StepStarted"]
        finish.set()

    assert started_attempts(await events(journal, "l")) == [(0, 1)]
    assert (await runner.describe("l")).status == "completed"


async def test_the_worker_records_a_long_first_steps_start_on_a_heartbeat() -> None:
    journal = await connect("memory://")
    registry = Registry()
    finish = anyio.Event()

    async def long() -> str:
        await finish.wait()
        return "done"

    long_saga = one_step_saga(registry, long)

    runner = Runner(journal, registry, worker_id="w")
    settings = WorkerSettings(worker_id="w", poll_seconds=0.05, lease_seconds=0.6)  # a beat every 0.2 s
    worker = Worker(journal, RunnerHandler(runner), settings)
    await runner.start(long_saga, id="h")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            while "StepStarted" not in await event_types(journal, "h"):  # noqa: ASYNC110 (the worker's beat)
                await anyio.sleep(0.02)
            finish.set()
            assert await runner.result("h") == "done"
            worker.shutdown()
    assert started_attempts(await events(journal, "h")) == [(0, 1)]
    await journal.close()
