"""`sagalog admin rebuild`: the derived tables come back from the events alone.

Real workflows and sessions are left in various states on each backend; the
work index, snapshots and analytics projection are recorded, wiped, rebuilt
and compared; then the runner carries on as if nothing happened.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import anyio
import psycopg
import pytest
from saga_helpers import drive, make_runner
from sagalog.engine import Registry, Runner, Sessions, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import session_analytics, sleep, wait_signal
from sagalog.replay.folding import load_state
from sagalog.replay.rebuild import rebuild_derived
from sagalog.replay.saga import SagaFold
from sagalog.replay.sessions import SESSION_FOLD
from sagalog.storage import Journal, Snapshot, WorkItem, connect

from sagalog.clock import ManualClock

pytestmark = pytest.mark.anyio

reg = Registry()
_flaky_calls: list[int] = []


@step(registry=reg, name="rb.book", retry=Retry.none())
async def book(what: str) -> str:
    if what == "full":
        raise LookupError("no rooms")
    return f"{what}-ok"


@step(registry=reg, name="rb.flaky", retry=Retry.fixed(30, attempts=3))
async def flaky(tag: str) -> str:
    _flaky_calls.append(1)
    if len(_flaky_calls) < 2:
        raise ConnectionError("try later")
    return tag


@step(registry=reg, name="rb.unbook", retry=Retry.none())
async def unbook(confirmation: str) -> str:
    return f"undone {confirmation}"


@workflow(registry=reg, name="rb.timer")
def timer(ctx: Any) -> Any:
    first = yield book("a")
    yield sleep(seconds=60)
    second = yield book("b")
    return [first, second]


@workflow(registry=reg, name="rb.waiter")
def waiter(ctx: Any, timeout: float | None) -> Any:
    answer = yield wait_signal("go", timeout=timeout)
    return answer


@workflow(registry=reg, name="rb.parent")
def parent(ctx: Any) -> Any:
    answer = yield waiter(None)
    return f"child said {answer}"


@workflow(registry=reg, name="rb.saga")
def saga(ctx: Any, hotel: str) -> Any:
    yield book("flight").compensate(unbook)
    stay = yield book(hotel).compensate(unbook)
    return stay


@workflow(registry=reg, name="rb.retrying")
def retrying(ctx: Any) -> Any:
    done = yield flaky("x")
    return done


async def _setup(journal: Journal, clock: ManualClock) -> tuple[Runner, Sessions]:
    """Instances and sessions in every kind of state the derived tables know."""
    _flaky_calls.clear()
    runner = make_runner(journal, reg, clock, snapshot_every=3)
    for i in range(3):
        await runner.start(timer, id=f"timer-{i}")  # running, with a pending timer
    await runner.start(waiter, 600, id="wait-timeout")  # waits on a signal with a timeout
    await runner.start(waiter, None, id="wait-forever")  # waits on a signal, no row
    await runner.start(parent, id="parent")  # waits on a child that waits on a signal
    await runner.start(saga, "inn", id="done")  # completed
    await runner.start(saga, "full", id="undone")  # compensated
    await runner.start(retrying, id="retry")  # a step waiting for its retry
    await runner.run_until_idle()
    clock.advance(1)
    await runner.start(timer, id="fresh")  # started, not advanced yet: ready now
    sessions = Sessions(journal, clock=clock, snapshot_every=3)
    await sessions.open("cart", kind="checkout", idle_timeout=300, lifetime=3600)
    for n in range(4):
        await sessions.set("cart", "items", n)
    await sessions.open("chat", kind="chat", idle_timeout=60)
    await sessions.close("chat", "bye")
    await session_analytics.load(journal)  # stores the projection
    return runner, sessions


async def _derived(journal: Journal, streams: list[str]) -> dict[str, Any]:
    """What readers get out of the derived tables."""
    states = {}
    for stream in streams:
        fold: Any = SagaFold() if stream.startswith("wf-") else SESSION_FOLD
        states[stream] = (await load_state(journal, stream, fold))[0]
    stats = (await session_analytics.load(journal, save=False)).stats()
    return {"work": await journal.work_index(), "states": states, "analytics": stats}


async def _wipe(url: str, journal: Journal) -> None:
    """Empty the derived tables behind sagalog's back (the events stay)."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute("DELETE FROM work")
            conn.execute("DELETE FROM snapshots")
    elif url.startswith("postgresql"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM work_index")
            conn.execute("DELETE FROM snapshots")
    else:
        await journal.recorder.clear_work_index(journal.namespace)
        await journal.recorder.clear_snapshots(journal.namespace)


async def test_rebuild_restores_every_derived_table(journal_url: str) -> None:
    clock = ManualClock()
    journal = await connect(journal_url, clock=clock)
    try:
        runner, _ = await _setup(journal, clock)
        streams = [info.stream_id for info in await journal.list_streams()]
        before = await _derived(journal, streams)
        assert len(before["work"]) == 7  # 3 timers, a timeout, a retry, a fresh start, a session
        assert {w.stream_id for w in before["work"]} >= {"wf-fresh", "wf-retry", "session-cart"}
        schemas = {s: (SagaFold() if s.startswith("wf-") else SESSION_FOLD).schema for s in streams}
        snapshotted = [s for s in streams if await journal.latest_snapshot(s, schema=schemas[s])]
        assert len(snapshotted) >= 5 and "session-cart" in snapshotted

        await _wipe(journal_url, journal)
        assert await journal.work_index() == []
        await journal.put_work("wf-ghost", clock.now())  # a stale row the rebuild must drop
        summary = await rebuild_derived(journal, snapshot_every=3)

        after = await _derived(journal, streams)
        assert after == before
        assert (summary.workflows, summary.sessions, summary.work_rows) == (11, 2, 7)
        assert summary.undecodable == ()
        # Each rebuilt snapshot is the fold of the events up to its version.
        for stream in [s for s in streams if await journal.stream_version(s) >= 3]:
            fold: Any = SagaFold() if stream.startswith("wf-") else SESSION_FOLD
            snap = await journal.latest_snapshot(stream, schema=fold.schema)
            assert snap is not None, stream
            scratch, _ = await load_state(journal, stream, fold, use_snapshots=False)
            assert fold.decode(snap.state) == scratch
            assert snap.version == await journal.stream_version(stream)

        # A fresh runner carries on from the rebuilt index alone.
        fresh = make_runner(journal, reg, clock)
        clock.advance(60)
        await fresh.signal("wait-timeout", "go", "yes")
        await fresh.signal("parent-0", "go", "ok")
        for iid in ["timer-0", "timer-1", "timer-2", "fresh", "retry", "wait-timeout", "parent"]:
            await drive(fresh, clock, iid)
        assert await fresh.result("timer-0") == ["a-ok", "b-ok"]
        assert await fresh.result("fresh") == ["a-ok", "b-ok"]
        assert await fresh.result("retry") == "x"
        assert await fresh.result("wait-timeout") == "yes"
        assert await fresh.result("parent") == "child said ok"
        clock.advance(3600)
        await fresh.run_until_idle()  # the session's rebuilt deadline expires it
        assert (await runner.sessions.get("cart")).status == "expired"
    finally:
        await journal.close()


async def test_rebuild_is_repeatable_and_leaves_checkpoints(journal: Journal) -> None:
    await journal.save_checkpoint("mailer", 7)
    clock = ManualClock()
    runner = Runner(journal, reg, clock=clock)
    await runner.start(timer, id="t")
    await runner.run_until_idle()
    first = await rebuild_derived(journal, now=clock.now())
    rows = await journal.work_index()
    second = await rebuild_derived(journal, now=clock.now())
    assert first == second
    assert await journal.work_index() == rows
    assert [(w.stream_id, w.ready_at) for w in rows] == [("wf-t", clock.now() + timedelta(seconds=60))]
    assert await journal.load_checkpoint("mailer") == 7


async def test_a_stale_lease_is_not_kept(journal: Journal) -> None:
    clock = ManualClock()
    runner = Runner(journal, reg, clock=clock)
    await runner.start(timer, id="t")
    await journal.claim("gone-worker", 600)
    assert (await journal.work_index())[0].lease_owner == "gone-worker"
    await rebuild_derived(journal)
    rows = await journal.work_index()
    assert rows == [WorkItem("wf-t", rows[0].ready_at)]  # no owner, no expiry


async def test_the_recorder_methods_keep_to_their_namespace(journal: Journal) -> None:
    await journal.create_namespace("other")
    other = await journal.in_namespace("other")
    clock = ManualClock()
    for view in (journal, other):
        await view.put_work("wf-a", clock.now())
        await view.save_snapshot(Snapshot("wf-a", 1, b"state"))
    await journal.claim("w1", 60)
    await journal.put_work("wf-a", clock.now() + timedelta(seconds=5))  # keeps the lease
    [row] = await journal.work_index()
    assert (row.ready_at, row.lease_owner) == (clock.now() + timedelta(seconds=5), "w1")
    await journal.clear_work_index()
    await journal.clear_snapshots()
    assert (await journal.work_index(), await journal.latest_snapshot("wf-a")) == ([], None)
    assert [w.stream_id for w in await other.work_index()] == ["wf-a"]
    assert await other.latest_snapshot("wf-a") == Snapshot("wf-a", 1, b"state")
    await other.put_work("wf-a", None)
    assert await other.work_index() == []
    summary = await rebuild_derived(other)
    assert (summary.namespace, summary.events, summary.work_rows) == ("other", 0, 0)


async def test_a_rebuild_while_a_runner_works_ends_with_the_rows_the_events_say(journal_url: str) -> None:
    clock = ManualClock()
    journal = await connect(journal_url, clock=clock)
    try:
        runner = make_runner(journal, reg, clock)

        async def work() -> None:
            for i in range(12):
                await runner.start(timer, id=f"busy-{i}")
                await runner.run_until_idle()
                if i % 3 == 2:
                    clock.advance(61)

        async def rebuild_twice() -> None:
            for _ in range(2):
                await rebuild_derived(journal)

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            tg.start_soon(rebuild_twice)
        live = [(w.stream_id, w.ready_at) for w in await journal.work_index()]
        await rebuild_derived(journal)  # a quiet one: what the events say
        assert [(w.stream_id, w.ready_at) for w in await journal.work_index()] == live
    finally:
        await journal.close()


async def test_a_row_written_from_an_older_state_is_rewritten(journal: Journal) -> None:
    clock = ManualClock()
    runner = Runner(journal, reg, clock=clock)
    await runner.start(timer, id="a")
    await runner.start(timer, id="x")
    await runner.run_until_idle()
    put_work = journal.put_work
    raced: list[str] = []

    async def racing_put_work(stream_id: str, ready_at: Any) -> None:
        if not raced:  # a worker appends to wf-x after the rebuild read it, before its row
            raced.append(stream_id)
            await runner.cancel("x")
        await put_work(stream_id, ready_at)

    journal.put_work = racing_put_work  # type: ignore[method-assign]
    await rebuild_derived(journal, now=clock.now())
    assert raced == ["wf-a"]
    rows = {w.stream_id: w.ready_at for w in await journal.work_index()}
    # The cancel needs a worker now: not the timer time folded before it.
    assert rows == {"wf-a": clock.now() + timedelta(seconds=60), "wf-x": clock.now()}
