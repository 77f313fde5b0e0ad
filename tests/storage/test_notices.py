"""Notices and watches: what a commit touched, told without a query on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import psycopg
import pytest
from sagalog.storage import ANY_VERSION, NO_STREAM, UNKNOWN, AppendRequest, Journal, NewEvent, Touch, connect
from sagalog.storage.notices import LAST_PAYLOAD, MAX_PAYLOAD, NoticeLog, decode_notice, encode_notice
from sagalog.storage.pg_append import APPEND, LISTED, Channels, append_arguments, register_dumpers
from sagalog.storage.watch import head_position

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pg_pair(pg_url: str) -> AsyncIterator[tuple[Journal, Journal]]:
    """Two journals on one PostgreSQL schema, each with its own connections: a watcher and a writer."""
    journal, writer = await connect(pg_url), await connect(pg_url)
    try:
        yield journal, writer
    finally:
        await journal.close()
        await writer.close()


def ev(type_: str, worker: str | None = "w1") -> NewEvent:
    return NewEvent(type_, b"x", {} if worker is None else {"worker": worker})


# -- the payload -----------------------------------------------------------------


def test_a_notice_lists_each_stream_with_its_types_and_worker() -> None:
    payload = encode_notice([
        ("ns", "wf-a", [ev("StepStarted"), ev("StepCompleted")]),
        ("other", "wf-b", [ev("WorkflowStarted", None)]),
    ])
    assert decode_notice(payload) == [
        Touch("ns", "wf-a", ("StepStarted", "StepCompleted"), "w1"),
        Touch("other", "wf-b", ("WorkflowStarted",), ""),
    ]


def test_events_of_different_workers_leave_the_worker_unknown() -> None:
    [touch] = decode_notice(encode_notice([("ns", "wf-a", [ev("A", "w1"), ev("B", "w2")])]))
    assert touch.worker is None


def test_a_commit_too_big_to_list_tells_namespaces_and_workers_only() -> None:
    many = [("ns", f"wf-{i:04d}-" + "x" * 150, [ev("StepStarted")]) for i in range(100)]
    payload = encode_notice([*many, ("ns2", "wf-y", [ev("A", "w2")])])
    assert len(payload) <= MAX_PAYLOAD
    assert decode_notice(payload) == [Touch("ns", None, None, "w1"), Touch("ns2", None, None, "w2")]


def test_a_commit_too_big_even_for_that_says_nothing() -> None:
    many = [(f"ns{i}-" + "n" * 150, "wf-a", [ev("A", f"w{i}")]) for i in range(100)]
    assert encode_notice(many) == ""
    assert decode_notice("") == [UNKNOWN]


@pytest.mark.parametrize("payload", ["", "not json", "{}", "[]", '[["ns"]]'])
def test_a_payload_that_says_nothing_usable_is_unknown(payload: str) -> None:
    """The previous version's empty payloads included: listeners then look for themselves."""
    assert decode_notice(payload) == [UNKNOWN]


def test_may_be_matches_unknown_fields() -> None:
    assert Touch("ns", "wf-a", ("A",), "w").may_be("ns", "wf-a")
    assert not Touch("ns", "wf-a", ("A",), "w").may_be("ns", "wf-b")
    assert not Touch("ns", "wf-a", ("A",), "w").may_be("other")
    assert Touch("ns", None, None, "w").may_be("ns", "wf-b")
    assert UNKNOWN.may_be("anything", "wf-z")


# -- the log ---------------------------------------------------------------------


def test_the_log_pages_from_a_number_and_says_when_some_are_gone() -> None:
    log = NoticeLog(keep=3)
    start = log.end
    touches = [Touch("ns", f"s{i}", ("E",), "w") for i in range(5)]
    for touch in touches[:2]:
        log.add("main", [touch])
    assert log.since(start, "main") == touches[:2]
    assert log.since(log.end, "main") == []
    for touch in touches[2:]:
        log.add("main", [touch])
    assert log.since(start, "main") == [UNKNOWN, *touches[2:]]  # the first two were dropped
    assert log.since(start + 3, "main") == touches[3:]


def test_the_log_tells_a_channel_its_own_notices_and_those_of_every_channel() -> None:
    log = NoticeLog()
    start = log.end
    log.add("main", [Touch("ns", "a", ("E",), "w")])
    log.add("work", [Touch("ns", "b", ("E",), "w")])
    log.add(None, [UNKNOWN])  # a new LISTEN connection: something may be missed on each
    assert log.since(start, "work") == [Touch("ns", "b", ("E",), "w"), UNKNOWN]
    assert log.since(start, "main") == [Touch("ns", "a", ("E",), "w"), UNKNOWN]


# -- watches on every backend ------------------------------------------------------


async def test_a_watch_tells_another_connections_append(journal: Journal, peer: Journal) -> None:
    watch = await journal.watch()
    await peer.append("wf-a", NO_STREAM, [ev("StepStarted"), ev("StepCompleted")])
    with anyio.fail_after(10):
        touches = await watch.next(5)
    assert any(t.may_be(journal.namespace, "wf-a") for t in touches)
    named = [t for t in touches if t.stream_id == "wf-a"]
    assert named, touches
    assert all(t.worker == "w1" for t in named)
    assert {ty for t in named for ty in t.types or ()} == {"StepStarted", "StepCompleted"}


async def test_a_watch_tells_each_stream_of_a_group_commit(journal: Journal, peer: Journal) -> None:
    watch = await journal.watch()
    now = datetime.now(UTC)
    requests = [
        AppendRequest(peer.namespace, f"wf-{i}", NO_STREAM, (ev("WorkflowStarted", ""),), now)
        for i in range(3)
    ]
    await peer.recorder.append_batch(requests)
    seen: set[str | None] = set()
    with anyio.fail_after(10):
        while not {"wf-0", "wf-1", "wf-2"} <= seen:
            seen |= {t.stream_id for t in await watch.next(5)}


async def test_a_watch_without_appends_times_out_empty(journal: Journal) -> None:
    watch = await journal.watch()
    assert await watch.next(0.2) == []


async def test_a_watch_ignores_other_namespaces(journal: Journal, peer: Journal) -> None:
    await journal.create_namespace("elsewhere")
    other = await peer.in_namespace("elsewhere")
    watch = await journal.watch()
    await other.append("wf-x", NO_STREAM, [ev("A")])
    assert await watch.next(0.5) == []
    await peer.append("wf-y", NO_STREAM, [ev("B")])
    with anyio.fail_after(10):
        touches = await watch.next(5)
    assert [t.stream_id for t in touches if t.stream_id is not None] == ["wf-y"]


@pytest.mark.parametrize("count", [0, 1, 2, 1023, 1024, 1025, 5000])
async def test_head_position_finds_the_newest_event(count: int) -> None:
    journal = await connect("memory://")
    if count:
        await journal.append("wf-x", NO_STREAM, [NewEvent("E", b"")] * count)
    assert await head_position(journal) == count


# -- PostgreSQL specifics ------------------------------------------------------------


async def test_a_big_group_commit_is_told_by_namespace_and_worker(pg_pair: tuple[Journal, Journal]) -> None:
    journal, writer = pg_pair
    watch = await journal.watch()
    now = datetime.now(UTC)
    requests = [
        AppendRequest(writer.namespace, f"wf-{i}", NO_STREAM, (ev("WorkflowStarted", "w9"),), now)
        for i in range(LISTED + 1)
    ]
    await writer.recorder.append_batch(requests)
    with anyio.fail_after(10):
        touches = await watch.next(5)
    assert touches == [Touch(journal.namespace, None, None, "w9")]


async def test_a_notification_without_payload_is_unknown(pg_url: str) -> None:
    """What a client of the previous version (or the slower append path) sends."""
    journal = await connect(pg_url)
    try:
        watch = await journal.watch()
        channel = journal.recorder._channels.main  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("SELECT pg_notify(%s, '')", (channel,))
        with anyio.fail_after(10):
            assert await watch.next(5) == [UNKNOWN]
    finally:
        await journal.close()


async def test_a_lost_listen_connection_makes_the_watch_say_unknown(pg_url: str) -> None:
    """Notifications sent while nobody listens are lost: the watch must not stay silent."""
    journal = await connect(pg_url)
    try:
        watch = await journal.watch()
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN %%' AND datname = current_database()"
            )
        with anyio.fail_after(15):
            touches: list[Touch] = []
            while UNKNOWN not in touches:
                touches = await watch.next(5)
    finally:
        await journal.close()


async def test_a_quiet_append_is_not_told_to_workers_looking_for_work(
    pg_pair: tuple[Journal, Journal],
) -> None:
    """A worker's commits to the instances it holds wake no other worker (nor itself)."""
    journal, writer = pg_pair
    work, everything = await journal.watch(work=True), await journal.watch()
    await writer.append("wf-held", NO_STREAM, [ev("StepStarted")], quiet=True)
    await writer.append("wf-new", NO_STREAM, [ev("WorkflowStarted", "")])
    with anyio.fail_after(10):
        told = await work.next(5)
        seen: list[str | None] = []
        while "wf-new" not in seen:
            seen += [t.stream_id for t in await everything.next(5)]
    assert [t.stream_id for t in told] == ["wf-new"]
    assert seen == ["wf-held", "wf-new"]


async def test_a_group_commit_of_quiet_appends_is_not_told_to_workers(
    pg_pair: tuple[Journal, Journal],
) -> None:
    journal, writer = pg_pair
    work = await journal.watch(work=True)
    now = datetime.now(UTC)
    quiet = [
        AppendRequest(writer.namespace, f"wf-q{i}", NO_STREAM, (ev("StepStarted"),), now, quiet=True)
        for i in range(3)
    ]
    await writer.recorder.append_batch(quiet)
    assert await work.next(0.5) == []
    loud = [*quiet[:1], AppendRequest(writer.namespace, "wf-l", NO_STREAM, (ev("A"),), now)]
    loud[0] = AppendRequest(writer.namespace, "wf-q9", NO_STREAM, (ev("StepStarted"),), now, quiet=True)
    await writer.recorder.append_batch(loud)
    with anyio.fail_after(10):
        told = await work.next(5)
    assert {t.stream_id for t in told} == {"wf-q9", "wf-l"}  # one loud append: the commit is told


async def test_only_final_appends_are_told_to_watchers_of_final_ones(
    pg_pair: tuple[Journal, Journal],
) -> None:
    """A client awaiting a result is not woken by every step of the saga it awaits."""
    journal, writer = pg_pair
    final = await journal.watch(final=True)
    await writer.append("wf-a", NO_STREAM, [ev("StepStarted")], quiet=True)
    assert await final.next(0.5) == []
    await writer.append("wf-a", 1, [ev("StepCompleted"), ev("WorkflowCompleted")], quiet=True, final=True)
    with anyio.fail_after(10):
        [touch] = await final.next(5)
    assert (touch.stream_id, touch.types) == ("wf-a", ("StepCompleted", "WorkflowCompleted"))


async def test_an_append_that_took_the_slower_path_is_still_told_to_workers(
    pg_pair: tuple[Journal, Journal],
) -> None:
    """A stale version read sends the append through sagalog_append_one, which notifies only
    the main channel (without payload): the recorder tells the work channel itself."""
    journal, writer = pg_pair
    work = await journal.watch(work=True)
    await writer.append("wf-a", NO_STREAM, [ev("A")])
    assert [t.stream_id for t in await work.next(5)] == ["wf-a"]
    # A version hint from another life of the stream: the one-statement append
    # reads nothing from the bound on, collides on version 1 and takes the slower path.
    writer.recorder._heads.versions[(writer.namespace, "wf-a")] = 5  # type: ignore[attr-defined]
    await writer.append("wf-a", ANY_VERSION, [ev("B")])
    with anyio.fail_after(10):
        touches = await work.next(5)
    assert [(t.stream_id, t.types) for t in touches] == [("wf-a", ("B",))]
    assert [e.type for e in await journal.read_stream("wf-a")] == ["A", "B"]

async def test_a_client_of_the_previous_version_still_appends_and_is_heard(
    pg_pair: tuple[Journal, Journal], pg_url: str
) -> None:
    """Rolling upgrade: the function without the NOTIFY arguments still works after 003_notices."""
    journal, writer = pg_pair
    watch = await journal.watch()
    main = writer.recorder._channels.main  # type: ignore[attr-defined]
    request = AppendRequest(writer.namespace, "wf-old", NO_STREAM, (ev("A"),), datetime.now(UTC))
    *arguments, _, _ = append_arguments([request], Channels.of(main), {})
    previous_version = APPEND.replace("%b::text[], %b)", "%b)")  # one channel, no payload
    assert previous_version.count("%b") == APPEND.count("%b") - 1
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        register_dumpers(conn.adapters)
        await conn.cursor(binary=True).execute(previous_version, [*arguments, main])
    assert [e.type for e in await journal.read_stream("wf-old")] == ["A"]
    with anyio.fail_after(10):
        assert await watch.next(5) == [UNKNOWN]


# -- the last event of a final append --------------------------------------------


def test_a_final_appends_notice_carries_its_last_event_when_small() -> None:
    done = NewEvent("WorkflowCompleted", b"r" * LAST_PAYLOAD, {"worker": "w1", "schema": "1"})
    payload = encode_notice(
        [("ns", "wf-a", [ev("StepCompleted"), done]), ("ns", "wf-b", [ev("StepStarted")])], [True, False]
    )
    assert decode_notice(payload) == [
        Touch("ns", "wf-a", ("StepCompleted", "WorkflowCompleted"), "w1", done),
        Touch("ns", "wf-b", ("StepStarted",), "w1"),  # not final: nobody awaits it
    ]
    big = NewEvent("WorkflowCompleted", b"r" * (LAST_PAYLOAD + 1), {"worker": "w1"})
    [touch] = decode_notice(encode_notice([("ns", "wf-a", [big])], [True]))
    assert touch.last is None and touch.types == ("WorkflowCompleted",)  # too big: read it


def test_a_notice_too_big_with_last_events_lists_its_streams_without_them() -> None:
    done = NewEvent("WorkflowCompleted", b"r" * 900, {"worker": "w1"})
    appends = [("ns", f"wf-{i}", [done]) for i in range(10)]  # 10 x 900 bytes do not fit
    touches = decode_notice(encode_notice(appends, [True] * 10))
    assert touches == [Touch("ns", f"wf-{i}", ("WorkflowCompleted",), "w1") for i in range(10)]
