"""Backend conformance kit, part 1: appending and reading.

Every backend (memory, SQLite, PostgreSQL, through the ``journal`` fixture)
must pass these. Part 2 (test_conformance_state.py) covers snapshots,
namespaces, checkpoints, the work index, the codec and reopening.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from sagalog.storage import ANY_VERSION, NO_STREAM, Event, Journal, NewEvent, StreamFilter

from sagalog.clock import ManualClock
from sagalog.errors import ConcurrencyError

pytestmark = pytest.mark.anyio


def new(*types: str) -> list[NewEvent]:
    """Events named ``types`` whose payload is the type name."""
    return [NewEvent(t, t.encode()) for t in types]


def conflict(stream_id: str, actual: int, expected: int) -> str:
    """The exact message of a ConcurrencyError."""
    return f"stream {stream_id!r} is at version {actual}, but the append expected version {expected}"


async def test_versions_are_contiguous_and_positions_increase(journal: Journal) -> None:
    first = await journal.append("wf-1", NO_STREAM, new("A"))
    second = await journal.append("wf-1", 1, new("B", "C", "D"))
    other = await journal.append("wf-2", NO_STREAM, new("X"))
    third = await journal.append("wf-1", 4, new("E"))
    stored = await journal.read_stream("wf-1")
    assert [e.version for e in stored] == [1, 2, 3, 4, 5]
    assert [e.type for e in stored] == ["A", "B", "C", "D", "E"]
    assert stored == first + second + third
    positions = [e.position for e in first + second + other + third]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    assert await journal.stream_version("wf-1") == 5
    assert await journal.stream_version("wf-2") == 1
    assert await journal.stream_version("wf-none") == 0


async def test_stored_records_round_trip(journal: Journal) -> None:
    payload = bytes(range(256))
    [event] = await journal.append(
        "wf-1", NO_STREAM, [NewEvent("Started", payload, {"worker": "w-1", "trace": "é✓"})]
    )
    [read] = await journal.read_stream("wf-1")
    assert read == event
    assert (read.payload, read.metadata, read.namespace) == (
        payload,
        {"worker": "w-1", "trace": "é✓"},
        "default",
    )
    assert read.recorded_at.utcoffset() == timedelta(0)


async def test_recorded_at_comes_from_the_clock(timed_journal: Journal, clock: ManualClock) -> None:
    clock.advance(12.345678)
    [event] = await timed_journal.append("wf-1", NO_STREAM, new("A"))
    [read] = await timed_journal.read_stream("wf-1")
    assert event.recorded_at == read.recorded_at == clock.now()


async def test_several_events_in_one_append_are_atomic(journal: Journal, peer: Journal) -> None:
    await journal.append("wf-1", NO_STREAM, new("A"))
    with pytest.raises(ConcurrencyError):
        await peer.append("wf-1", NO_STREAM, new("B", "C", "D"))
    assert [e.type for e in await journal.read_stream("wf-1")] == ["A"]

    async def writer(journal: Journal, name: str) -> None:
        await journal.append("wf-2", ANY_VERSION, new(*(f"{name}{i}" for i in range(4))))

    async with anyio.create_task_group() as tg:
        for index in range(6):
            tg.start_soon(writer, journal if index % 2 else peer, f"W{index}_")
    types = [e.type for e in await journal.read_stream("wf-2")]
    assert len(types) == 24
    for start in range(0, 24, 4):  # each append's events are adjacent and in order
        name = types[start].split("_")[0]
        assert types[start : start + 4] == [f"{name}_{i}" for i in range(4)]


async def test_concurrent_appenders_exactly_one_wins_per_version(journal: Journal, peer: Journal) -> None:
    writers = 8

    async def attempt(
        journal: Journal, expected: int, index: int, wins: list[int], errors: list[str]
    ) -> None:
        try:
            await journal.append("wf-race", expected, new(f"W{index}"))
            wins.append(index)
        except ConcurrencyError as exc:
            assert (exc.stream_id, exc.expected_version) == ("wf-race", expected)
            errors.append(str(exc))

    for expected in range(5):
        wins: list[int] = []
        errors: list[str] = []
        async with anyio.create_task_group() as tg:
            for index in range(writers):
                tg.start_soon(attempt, journal if index % 2 else peer, expected, index, wins, errors)
        assert len(wins) == 1
        assert errors == [conflict("wf-race", expected + 1, expected)] * (writers - 1)
        [last] = await journal.read_stream("wf-race", expected + 1)
        assert last.type == f"W{wins[0]}"
    assert await journal.stream_version("wf-race") == 5


async def test_any_version_and_no_stream(journal: Journal) -> None:
    assert [e.version for e in await journal.append("wf-1", ANY_VERSION, new("A"))] == [1]
    assert [e.version for e in await journal.append("wf-1", ANY_VERSION, new("B", "C"))] == [2, 3]
    with pytest.raises(ConcurrencyError) as caught:
        await journal.append("wf-1", NO_STREAM, new("D"))
    assert str(caught.value) == conflict("wf-1", 3, 0)
    assert (caught.value.expected_version, caught.value.actual_version) == (0, 3)
    with pytest.raises(ConcurrencyError, match="^" + conflict("wf-1", 3, 2) + "$"):
        await journal.append("wf-1", 2, new("D"))
    with pytest.raises(ConcurrencyError, match="^" + conflict("wf-1", 3, 7) + "$"):
        await journal.append("wf-1", 7, new("D"))
    with pytest.raises(ConcurrencyError, match="^" + conflict("wf-new", 0, 1) + "$"):
        await journal.append("wf-new", 1, new("D"))
    assert [e.version for e in await journal.append("wf-new", NO_STREAM, new("A"))] == [1]
    assert [e.type for e in await journal.read_stream("wf-1")] == ["A", "B", "C"]


async def test_read_stream_from_version_and_limit(journal: Journal) -> None:
    await journal.append("wf-1", NO_STREAM, new(*"ABCDEFG"))
    await journal.append("wf-2", NO_STREAM, new("Z"))

    async def types(from_version: int = 1, limit: int | None = None) -> str:
        return "".join(e.type for e in await journal.read_stream("wf-1", from_version, limit))

    assert await types() == "ABCDEFG"
    assert await types(3) == "CDEFG"
    assert await types(3, 2) == "CD"
    assert await types(6, 10) == "FG"
    assert await types(8) == ""
    assert await types(1, 0) == ""
    assert await journal.read_stream("wf-missing") == []
    streamed = [e.type async for e in journal.iter_stream("wf-1", batch=3)]
    assert "".join(streamed) == "ABCDEFG"
    assert "".join([e.type async for e in journal.iter_stream("wf-1", 5, batch=2)]) == "EFG"


async def test_read_all_is_in_global_order_and_pages(journal: Journal) -> None:
    expected: list[tuple[str, int]] = []
    for round_ in range(4):
        for stream in ("wf-a", "wf-b", "session-c"):
            stored = await journal.append(stream, ANY_VERSION, new(f"R{round_}", f"S{round_}"))
            expected += [(e.stream_id, e.version) for e in stored]
    everything = await journal.read_all()
    assert [(e.stream_id, e.version) for e in everything] == expected
    seen: list[Event] = []
    after = 0
    while page := await journal.read_all(after, limit=5):
        assert len(page) <= 5
        seen += page
        after = page[-1].position
    assert seen == everything
    assert await journal.read_all(everything[-1].position) == []
    assert await journal.read_all(everything[3].position, 2) == everything[4:6]


async def test_read_all_with_concurrent_writers_sees_every_event_once(
    journal: Journal, peer: Journal
) -> None:
    writers, appends, total = 6, 10, 6 * 10 * 2
    seen: list[Event] = []
    done = anyio.Event()

    async def write(journal: Journal, index: int) -> None:
        for version in range(0, appends * 2, 2):
            await journal.append(f"wf-{index}", version, new("A", "B"))

    async def writers_then_done() -> None:
        async with anyio.create_task_group() as tg:
            for index in range(writers):
                tg.start_soon(write, journal if index % 2 else peer, index)
        done.set()

    async def read() -> None:
        after = 0
        while True:
            finished = done.is_set()  # look before reading: a last page follows the last commit
            page = await journal.read_all(after, limit=7)
            seen.extend(page)
            if page:
                after = page[-1].position
            elif finished:
                return
            else:
                await journal.wait_for_new(after, 0.05)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        tg.start_soon(writers_then_done)

    keys = [(e.stream_id, e.version) for e in seen]
    assert len(keys) == total and len(set(keys)) == total
    positions = [e.position for e in seen]
    assert positions == sorted(positions)
    assert seen == await journal.read_all(0, total + 10)


async def test_wait_for_new(journal: Journal) -> None:
    assert await journal.wait_for_new(0, 0.01) is False
    [event] = await journal.append("wf-1", NO_STREAM, new("A"))
    assert await journal.wait_for_new(0, 0) is True
    assert await journal.wait_for_new(event.position, 0.01) is False
    woke: list[bool] = []

    async def waiter() -> None:
        woke.append(await journal.wait_for_new(event.position, 30))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.wait_all_tasks_blocked()
        await journal.append("wf-2", NO_STREAM, new("B"))
    assert woke == [True]


async def test_list_streams_filters_and_paging(timed_journal: Journal, clock: ManualClock) -> None:
    start = clock.now()
    for stream in ("wf-a", "session-b", "wf_c", "wfXc"):
        await timed_journal.append(stream, NO_STREAM, new("Opened"))
        clock.advance(10)
    await timed_journal.append("wf-a", 1, new("Touched", "Closed"))  # at start + 40

    async def ids(query: StreamFilter | None = None) -> list[str]:
        return [s.stream_id for s in await timed_journal.list_streams(query)]

    Q = StreamFilter
    at = [start + timedelta(seconds=s) for s in range(0, 50, 10)]
    assert await ids() == ["wf-a", "wfXc", "wf_c", "session-b"]
    [info] = await timed_journal.list_streams(Q(prefix="wf-"))
    assert (info.stream_id, info.version, info.namespace, info.last_type) == ("wf-a", 3, "default", "Closed")
    assert (info.created_at, info.updated_at) == (at[0], at[4])
    assert await ids(Q(prefix="wf_")) == ["wf_c"]  # '_' is no wildcard
    assert await ids(Q(prefix="WF")) == []  # case matters
    assert await ids(Q(prefix="session-")) == ["session-b"]
    assert await ids(Q(contains="c")) == ["wfXc", "wf_c"]
    assert await ids(Q(contains="ss")) == ["session-b"]
    # since/until bound the last activity: since inclusive, until exclusive
    assert await ids(Q(since=at[2])) == ["wf-a", "wfXc", "wf_c"]
    assert await ids(Q(until=at[2])) == ["session-b"]
    assert await ids(Q(since=at[1], until=at[3])) == ["wf_c", "session-b"]
    assert await ids(Q(limit=2)) == ["wf-a", "wfXc"]
    assert await ids(Q(limit=2, offset=2)) == ["wf_c", "session-b"]
    assert await ids(Q(limit=2, offset=4)) == []
    assert await ids(Q(prefix="wf", limit=1, offset=1)) == ["wfXc"]


async def test_list_streams_orders_equal_times_by_stream_id(
    timed_journal: Journal, clock: ManualClock
) -> None:
    for stream in ("wf-2", "wf-3", "wf-1"):
        await timed_journal.append(stream, NO_STREAM, new("A"))
    infos = await timed_journal.list_streams()
    assert [i.stream_id for i in infos] == ["wf-3", "wf-2", "wf-1"]
    assert {i.updated_at for i in infos} == {clock.now()}
