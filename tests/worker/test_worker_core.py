"""The worker's own machinery (claims, leases, heartbeat, drain, outages, metrics).

These tests drive the worker with a tiny stream handler that appends to
real journals, so they need nothing from the executor: what is checked is
that every ready stream is advanced, by one worker at a time, and that
leases come and go as they should.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from sagalog.engine.worker import Outcome, Worker
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.storage import NO_STREAM, Claim, Journal, NewEvent, Schedule, connect, open_recorder

from sagalog.clock import ManualClock
from sagalog.errors import OperationalError

pytestmark = pytest.mark.anyio


class Stepper:
    """Appends one ``Advanced`` event per call; a stream is done after ``steps`` of them."""

    def __init__(self, journal: Journal, steps: int = 1) -> None:
        self.journal = journal
        self.steps = steps
        self.calls: list[str] = []
        self.gate: anyio.Event | None = None
        self.fail_once: set[str] = set()
        self.status = "completed"

    async def handle(self, stream_id: str, *, taken_over: bool = True) -> Outcome:
        self.calls.append(stream_id)
        if self.gate is not None:
            await self.gate.wait()
        if stream_id in self.fail_once:
            self.fail_once.discard(stream_id)
            raise RuntimeError(f"bug while advancing {stream_id}")
        version = await self.journal.stream_version(stream_id)
        done = version + 1 >= self.steps
        ready = None if done else self.journal.clock.now()
        await self.journal.append(
            stream_id, version, [NewEvent("Advanced", b"")], schedule=Schedule(ready)
        )
        return Outcome(self.status if done else "running", steps=1, detail="no such workflow")

    def cache_counts(self) -> tuple[int, int]:
        return (7, 3)

    prefetch = 0

    async def prepare(self, claims: Sequence[Claim]) -> None:
        pass

    async def checkpoint(self, stream_ids: Sequence[str], older_than: float) -> None:
        pass  # it keeps nothing in memory


async def make_ready(journal: Journal, count: int, prefix: str = "wf-") -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(count)]
    now = journal.clock.now()
    for stream_id in ids:
        await journal.append(stream_id, NO_STREAM, [NewEvent("Started", b"")], schedule=Schedule(now))
    return ids


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll real storage until ``check()`` holds (no fixed sleeps)."""
    with anyio.fail_after(timeout):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.01)


def settings(**kw: Any) -> WorkerSettings:
    values: dict[str, Any] = {"worker_id": "w1", "lease_seconds": 3.0, "poll_seconds": 0.05}
    values.update(kw)
    return WorkerSettings(**values)


async def test_every_ready_stream_is_advanced_once_and_leaves_the_index(journal: Journal) -> None:
    ids = await make_ready(journal, 12)
    handler = Stepper(journal, steps=3)
    worker = Worker(journal, handler, settings(concurrency=4))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)

        async def all_done() -> bool:
            return all([await journal.stream_version(i) == 3 for i in ids])

        await eventually(all_done)
        worker.shutdown()
    assert await journal.next_ready_at() is None
    assert sorted(set(handler.calls)) == ids and len(handler.calls) == 24
    for stream_id in ids:
        assert [e.type for e in await journal.read_stream(stream_id)] == ["Started", "Advanced", "Advanced"]
    assert worker.metrics.value("sagalog_instances_claimed_total") == 24
    assert worker.metrics.value("sagalog_instances_completed_total") == 12
    assert worker.metrics.value("sagalog_steps_total") == 24
    assert worker.metrics.value("sagalog_cache_hits_total") == 7


class Finisher(Stepper):
    """Ends each stream in one advance, as a worker's own quiet commit that removes its row."""

    async def handle(self, stream_id: str, *, taken_over: bool = True, lease: Any = None) -> Outcome:
        self.calls.append(stream_id)
        version = await self.journal.stream_version(stream_id)
        done = NewEvent("Done", b"", {"worker": "w1"})  # our own: no notice wakes the claim loop
        await self.journal.append(stream_id, version, [done], schedule=Schedule(None), quiet=True)
        return Outcome("completed", indexed=False)  # no lease left to give back either


async def test_a_full_claim_batch_is_followed_by_another_claim_at_once(journal: Journal) -> None:
    ids = await make_ready(journal, 12)
    handler = Finisher(journal)
    # Nothing else wakes it (its commits are its own, nothing is released): only claiming
    # again after a full batch drains the index before the poll.
    worker = Worker(journal, handler, settings(claim_batch=4, poll_seconds=60.0))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)

        async def drained() -> bool:
            return await journal.next_ready_at() is None

        await eventually(drained, timeout=5.0)
        worker.shutdown()
    assert sorted(handler.calls) == ids


async def test_concurrency_bounds_instances_in_flight() -> None:
    journal = await connect("memory://")
    await make_ready(journal, 10)
    handler = Stepper(journal)
    handler.gate = anyio.Event()
    worker = Worker(journal, handler, settings(concurrency=3))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)

        async def three_running() -> bool:
            return len(handler.calls) == 3

        await eventually(three_running)
        await anyio.sleep(0.1)  # give a wrong worker the chance to over-claim
        assert len(handler.calls) == 3 and len(worker.leases) == 3
        assert worker.metrics.value("sagalog_instances_in_flight") == 3
        handler.gate.set()

        async def drained() -> bool:
            return await journal.next_ready_at() is None

        await eventually(drained)
        worker.shutdown()
    assert len(handler.calls) == 10


async def test_shutdown_stops_claiming_and_lets_in_flight_work_finish(sqlite_url: str) -> None:
    journal = await connect(sqlite_url)
    ids = await make_ready(journal, 5)
    handler = Stepper(journal)
    handler.gate = anyio.Event()
    worker = Worker(journal, handler, settings(concurrency=2, grace_seconds=30))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: (len(handler.calls) == 2))
        worker.shutdown()
        assert worker.draining
        handler.gate.set()
    # The two in flight finished; the other three were never claimed and are free now.
    assert len(handler.calls) == 2
    assert all([await journal.stream_version(i) == 2 for i in handler.calls])
    others = sorted(set(ids) - set(handler.calls))
    assert sorted(c.stream_id for c in await journal.claim("w2", 3, 10)) == others
    await journal.close()


async def test_grace_period_over_cancels_and_releases_so_another_worker_takes_over(
    sqlite_url: str,
) -> None:
    journal = await connect(sqlite_url)
    ids = await make_ready(journal, 2)
    handler = Stepper(journal)
    handler.gate = anyio.Event()  # never set: the work hangs
    worker = Worker(journal, handler, settings(concurrency=2, grace_seconds=0.05))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: (len(handler.calls) == 2))
        worker.shutdown()
    assert [await journal.stream_version(i) for i in ids] == [1, 1]
    # Released, not left to expire: another worker claims them at once.
    assert sorted(c.stream_id for c in await journal.claim("w2", 3, 10)) == ids
    await journal.close()


async def test_second_shutdown_exits_at_once_leaving_leases_to_expire(sqlite_url: str) -> None:
    journal = await connect(sqlite_url)
    await make_ready(journal, 2)
    handler = Stepper(journal)
    handler.gate = anyio.Event()
    worker = Worker(journal, handler, settings(concurrency=2, grace_seconds=3600))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: (len(handler.calls) == 2))
        worker.shutdown()
        worker.shutdown()
    assert await journal.claim("w2", 3, 10) == []
    await journal.close()


async def test_a_lost_lease_cancels_that_instance_only() -> None:
    clock = ManualClock()
    journal = await connect("memory://", clock=clock)
    ids = await make_ready(journal, 2)
    handler = Stepper(journal)
    handler.gate = anyio.Event()
    worker = Worker(journal, handler, settings(concurrency=2, lease_seconds=3.0), clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: (len(handler.calls) == 2))
        # Both leases expire; a thief takes one before our heartbeat runs.
        clock.advance(3.5)
        stolen = await journal.claim("thief", 3.0, 1)
        assert [c.stream_id for c in stolen] == [ids[0]]

        async def noticed() -> bool:
            return worker.metrics.value("sagalog_leases_lost_total") == 1

        await eventually(noticed)
        handler.gate.set()
        await eventually(lambda: (len(worker.leases) == 0))
        worker.shutdown()
    # The stolen one was cancelled before writing; the other finished.
    assert [await journal.stream_version(i) for i in ids] == [1, 2]


async def test_an_unexpected_error_is_logged_and_the_worker_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    journal = await connect("memory://", clock=clock)
    ids = await make_ready(journal, 3)
    handler = Stepper(journal)
    handler.fail_once.add(ids[1])
    worker = Worker(journal, handler, settings(lease_seconds=3.0), clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: (len(handler.calls) == 3 and not worker.leases))
        assert [await journal.stream_version(i) for i in ids] == [2, 1, 2]
        # The failed one keeps its lease (no hot loop) and comes back once it expires.
        clock.advance(3.1)
        await eventually(lambda: (len(handler.calls) == 4))
        await eventually(lambda: (not worker.leases))
        worker.shutdown()
    assert await journal.stream_version(ids[1]) == 2
    assert worker.metrics.value("sagalog_worker_errors_total") == 1
    assert f"unexpected error advancing {ids[1]}" in caplog.text


async def test_parked_instances_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    journal = await connect("memory://")
    ids = await make_ready(journal, 2)
    handler = Stepper(journal)
    handler.status = "parked"
    worker = Worker(journal, handler, settings())
    with caplog.at_level(logging.WARNING, "sagalog.worker"):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            await eventually(lambda: (len(handler.calls) == 2 and not worker.leases))
            worker.shutdown()
    assert worker.metrics.value("sagalog_instances_parked_total") == 2
    assert f"parked {ids[0]}: no such workflow" in caplog.text


class FlakyRecorder:
    """A real SQLite recorder whose every call fails while ``down`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.description = inner.description

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise OperationalError("connection refused (the test pulled the plug)")
            return await target(*args, **kwargs)

        return call


async def test_database_outage_is_logged_once_and_work_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sagalog.storage import Backoff

    recorder = FlakyRecorder(await open_recorder(f"sqlite:///{tmp_path / 'j.db'}"))
    journal = Journal(recorder, backoff=Backoff(attempts=1))
    handler = Stepper(journal, steps=2)
    worker = Worker(journal, handler, settings(lease_seconds=1.0))
    with caplog.at_level(logging.WARNING, "sagalog.worker"):
        async with anyio.create_task_group() as tg:
            await tg.start(worker.run)
            recorder.down = True
            await eventually(lambda: (worker.outage.attempts >= 3))
            recorder.down = False
            ids = await make_ready(journal, 4)

            async def finished() -> bool:
                return all([await journal.stream_version(i) == 2 for i in ids])

            await eventually(finished)
            worker.shutdown()
    assert caplog.text.count("database unreachable") == 1
    assert caplog.text.count("database reachable again") == 1
    assert worker.outage.count == 1
    await recorder.inner.close()


async def test_metrics_endpoint_serves_prometheus_text() -> None:
    journal = await connect("memory://")
    await make_ready(journal, 2)
    handler = Stepper(journal)
    worker = Worker(journal, handler, settings(metrics_port=0))
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: (not worker.leases and len(handler.calls) == 2))
        assert worker.metrics_port
        body = await _get(worker.metrics_port, "/metrics")
        missing = await _get(worker.metrics_port, "/nope")
        worker.shutdown()
    assert body.startswith(b"HTTP/1.1 200 OK")
    for line in (
        b"sagalog_instances_claimed_total 2.0",
        b"sagalog_instances_completed_total 2.0",
        b"sagalog_cache_hits_total 7.0",
        b"sagalog_cache_misses_total 3.0",
        b"sagalog_leases_lost_total 0.0",
    ):
        assert line in body
    assert missing.startswith(b"HTTP/1.1 404")


async def _get(port: int, path: str) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        chunks = []
        try:
            while True:
                chunks.append(await stream.receive())
        except anyio.EndOfStream:
            pass
    return b"".join(chunks)




async def test_an_outage_longer_than_the_lease_gives_up_the_work_in_flight() -> None:
    from sagalog.storage import Backoff

    clock = ManualClock()
    recorder = FlakyRecorder(await open_recorder("memory://"))
    journal = Journal(recorder, clock=clock, backoff=Backoff(attempts=1))
    ids = await make_ready(journal, 2)
    handler = Stepper(journal)
    handler.gate = anyio.Event()
    worker = Worker(journal, handler, settings(concurrency=2, lease_seconds=3.0), clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        await eventually(lambda: len(handler.calls) == 2)
        recorder.down = True
        for _ in range(4):  # heartbeats at 1, 2, 3, 4 s fail; by 3 s the leases may be others'
            clock.advance(1.0)
            await anyio.sleep(0.02)
        await eventually(lambda: worker.metrics.value("sagalog_leases_lost_total") == 2)
        assert not worker.leases
        recorder.down = False
        worker.shutdown()
    assert [await journal.stream_version(i) for i in ids] == [1, 1]
