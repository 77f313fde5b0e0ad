"""Group commit: appends that arrive together share a transaction, each with its own check."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest
from sagalog.storage import (
    ANY_VERSION,
    NO_STREAM,
    AppendRequest,
    Event,
    Journal,
    NewEvent,
    Schedule,
)
from sagalog.storage.group_commit import GroupCommitter

from sagalog.clock import ManualClock
from sagalog.errors import ConcurrencyError

pytestmark = pytest.mark.anyio


async def test_concurrent_appends_to_many_streams_share_transactions(journal: Journal) -> None:
    appends = 40
    before = journal.group_commits

    async def append(index: int) -> None:
        await journal.append(f"wf-{index}", NO_STREAM, [NewEvent("A", b"%d" % index)])

    async with anyio.create_task_group() as tg:
        for index in range(appends):
            tg.start_soon(append, index)
    transactions = journal.group_commits - before
    assert 1 <= transactions < appends
    everything = await journal.read_all(0, 1000)
    assert sorted(e.stream_id for e in everything) == sorted(f"wf-{i}" for i in range(appends))
    assert {e.version for e in everything} == {1}


async def test_a_conflict_in_a_shared_transaction_fails_only_its_own_append(journal: Journal) -> None:
    await journal.append("wf-taken", NO_STREAM, [NewEvent("A", b"")])
    results: dict[str, list[Event] | str] = {}

    async def append(stream_id: str) -> None:
        try:
            results[stream_id] = await journal.append(stream_id, NO_STREAM, [NewEvent("B", b"")])
        except ConcurrencyError as exc:
            results[stream_id] = str(exc)

    before = journal.group_commits
    async with anyio.create_task_group() as tg:
        for index in range(10):
            tg.start_soon(append, f"wf-{index}")
            if index == 4:
                tg.start_soon(append, "wf-taken")
    assert journal.group_commits - before < 11
    assert results.pop("wf-taken") == "stream 'wf-taken' is at version 1, but the append expected version 0"
    assert sorted(results) == [f"wf-{i}" for i in range(10)]
    assert all(isinstance(r, list) and [e.version for e in r] == [1] for r in results.values())
    assert [e.type for e in await journal.read_stream("wf-taken")] == ["A"]


async def test_one_batch_keeps_each_request_check_and_order(journal: Journal, clock: ManualClock) -> None:
    """The recorder contract itself: one append_batch call is one transaction."""
    await journal.append("wf-old", NO_STREAM, [NewEvent("A", b"")])

    def request(stream_id: str, expected: int, *types: str, ready: bool = False) -> AppendRequest:
        return AppendRequest(
            namespace="default",
            stream_id=stream_id,
            expected_version=expected,
            events=tuple(NewEvent(t, t.encode()) for t in types),
            recorded_at=clock.now(),
            schedule=Schedule(clock.now()) if ready else None,
        )

    outcomes = await journal.recorder.append_batch(
        [
            request("wf-new", NO_STREAM, "N1", "N2", ready=True),
            request("wf-old", NO_STREAM, "Refused", ready=True),
            request("wf-new", 2, "N3"),  # sees the first request's events
            request("wf-new", 2, "Late"),  # ...and so this one is stale
            request("wf-old", ANY_VERSION, "O2"),
        ]
    )
    first, refused, third, stale, fifth = outcomes
    assert isinstance(refused, ConcurrencyError) and isinstance(stale, ConcurrencyError)
    assert str(refused) == "stream 'wf-old' is at version 1, but the append expected version 0"
    assert str(stale) == "stream 'wf-new' is at version 3, but the append expected version 2"
    assert isinstance(first, list) and isinstance(third, list) and isinstance(fifth, list)
    written = first + third + fifth
    assert [(e.stream_id, e.version, e.type) for e in written] == [
        ("wf-new", 1, "N1"),
        ("wf-new", 2, "N2"),
        ("wf-new", 3, "N3"),
        ("wf-old", 2, "O2"),
    ]
    positions = [e.position for e in written]
    assert positions == sorted(positions) and len(set(positions)) == 4
    assert await journal.read_all(positions[0] - 1) == written
    # only the request that went through changed the work index
    assert [
        c.stream_id for c in await journal.recorder.claim("default", "w", clock.now(), clock.now(), 10)
    ] == ["wf-new"]


async def test_one_batch_reads_each_namespace_versions_apart(journal: Journal, clock: ManualClock) -> None:
    """Stream ids repeat across namespaces; each request is checked against its own namespace."""
    await journal.create_namespace("tenant")
    await journal.append("s", NO_STREAM, [NewEvent("D1", b"")])
    outcomes = await journal.recorder.append_batch([
        AppendRequest("tenant", "s", NO_STREAM, (NewEvent("T1", b""), NewEvent("T2", b"")), clock.now()),
        AppendRequest("default", "s", 1, (NewEvent("D2", b""),), clock.now()),
        AppendRequest("tenant", "s", 1, (NewEvent("Stale", b""),), clock.now()),
        AppendRequest("default", "t", NO_STREAM, (NewEvent("N1", b""),), clock.now()),
    ])
    assert str(outcomes[2]) == "stream 's' is at version 2, but the append expected version 1"
    assert [
        [(e.namespace, e.stream_id, e.version, e.type) for e in o]  # type: ignore[union-attr]
        for i, o in enumerate(outcomes) if i != 2
    ] == [
        [("tenant", "s", 1, "T1"), ("tenant", "s", 2, "T2")],
        [("default", "s", 2, "D2")],
        [("default", "t", 1, "N1")],
    ]
    assert [e.type for e in await journal.read_stream("s")] == ["D1", "D2"]
    assert [e.type for e in await (await journal.in_namespace("tenant")).read_stream("s")] == ["T1", "T2"]


async def test_waiters_form_the_next_batch_and_share_its_outcome_or_error() -> None:
    """The committer itself: one batch commits at a time, the next one fills meanwhile."""
    release = anyio.Event()
    batches: list[list[int]] = []

    async def commit(batch: Sequence[int]) -> list[str]:
        batches.append(list(batch))
        if len(batches) == 1:
            await release.wait()  # hold the first commit until everyone has queued
        if 99 in batch:
            raise ValueError("refused")
        return [f"done {n}" for n in batch]

    committer: GroupCommitter[int, str] = GroupCommitter(commit)
    results: dict[int, str] = {}

    async def submit(n: int) -> None:
        try:
            results[n] = await committer.submit(n)
        except ValueError as exc:
            results[n] = str(exc)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(submit, n)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert batches == [[0], [1, 2, 3]]
    assert results == {n: f"done {n}" for n in range(4)}

    release = anyio.Event()
    batches.clear()
    async with anyio.create_task_group() as tg:
        for n in (10, 99, 11):
            tg.start_soon(submit, n)
        await anyio.wait_all_tasks_blocked()
        release.set()
    # The last batch had several requests, so its successor's leader let the
    # ready appenders join before sealing; an error is every member's outcome.
    assert batches == [[10, 99, 11]]
    assert results[10] == results[99] == results[11] == "refused"
    assert committer.batches == 3


class _Recording:
    """A commit function that records its batches and how many commits ran at once."""

    def __init__(self) -> None:
        self.batches: list[list[object]] = []
        self.running = 0
        self.most = 0
        self.gate = anyio.Event()  # the first commit waits for it

    async def __call__(self, batch: Sequence[object]) -> list[str]:
        self.batches.append(list(batch))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if len(self.batches) == 1:
                await self.gate.wait()
            for _ in range(3):  # a commit takes a few turns of the event loop
                await anyio.lowlevel.checkpoint()
        finally:
            self.running -= 1
        return [f"done {r}" for r in batch]


async def test_with_depth_two_many_appenders_split_in_two_batches_that_commit_at_once() -> None:
    commit = _Recording()
    committer: GroupCommitter[object, str] = GroupCommitter(commit, depth=2, min_split=2)
    results: dict[object, str] = {}

    async def submit(n: int) -> None:
        for turn in range(3):
            results[n, turn] = await committer.submit((n, turn))

    async with anyio.create_task_group() as tg:
        for n in range(7):
            tg.start_soon(submit, n)
        await anyio.wait_all_tasks_blocked()
        commit.gate.set()
    assert results == {(n, t): f"done {(n, t)}" for n in range(7) for t in range(3)}
    # The first request committed alone; the others waited behind it in one
    # batch (still open while it waited, so the first appender's next request
    # joined it too). From then on the seven appenders were split in two
    # groups (at most half of them per batch), and both groups' batches
    # committed at once, each request with its own outcome.
    assert commit.batches[0] == [(0, 0)]
    assert sorted(commit.batches[1]) == [(0, 1)] + [(n, 0) for n in range(1, 7)]
    assert all(len(b) <= 4 for b in commit.batches[2:])
    assert commit.most == 2
    assert sorted(r for b in commit.batches for r in b) == sorted(results)


async def test_with_depth_two_few_appenders_commit_one_batch_at_a_time() -> None:
    commit = _Recording()
    committer: GroupCommitter[object, str] = GroupCommitter(commit, depth=2, min_split=4)
    results: dict[object, str] = {}

    async def submit(n: int) -> None:
        for turn in range(3):
            results[n, turn] = await committer.submit((n, turn))

    async with anyio.create_task_group() as tg:
        for n in range(7):  # fewer than 2 * min_split
            tg.start_soon(submit, n)
        await anyio.wait_all_tasks_blocked()
        commit.gate.set()
    assert len(results) == 21
    assert commit.most == 1
    assert sum(len(b) for b in commit.batches) == 21


async def test_a_cancelled_member_leaves_the_others_their_outcomes() -> None:
    commit = _Recording()
    committer: GroupCommitter[object, str] = GroupCommitter(commit)
    results: dict[object, str] = {}
    scopes: dict[int, anyio.CancelScope] = {}

    async def submit(n: int) -> None:
        with anyio.CancelScope() as scope:
            scopes[n] = scope
            results[n] = await committer.submit(n)

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(submit, n)
        await anyio.wait_all_tasks_blocked()
        scopes[2].cancel()  # a member waiting for its batch
        await anyio.wait_all_tasks_blocked()
        commit.gate.set()
    assert results == {0: "done 0", 1: "done 1", 3: "done 3"}
    # Its request was in the batch already: it was committed all the same
    # (the caller only stopped waiting for the outcome).
    assert commit.batches == [[0], [1, 2, 3]]
