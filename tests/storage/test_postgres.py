"""What only the PostgreSQL backend has: the schema's guards, its global-order
lock under real concurrency, error translation, and LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone

import anyio
import anyio.lowlevel
import psycopg
import pytest
from psycopg import sql
from sagalog.storage import (
    ANY_VERSION,
    NO_STREAM,
    AppendRequest,
    Journal,
    NewEvent,
    Schedule,
    connect,
    migrations,
    pg_append,
)
from sagalog.storage.postgres import PostgresRecorder
from sagalog.storage.recorder import AppendOutcome

from sagalog.errors import (
    ConcurrencyError,
    InvalidEventError,
    OperationalError,
    ProgrammingError,
)

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def follow(reader: Journal, done: anyio.Event, seen: list[int], page: int) -> None:
    """Page through the global order into ``seen`` until ``done``, then read once more."""
    position = 0
    while True:
        finished = done.is_set()
        for event in await reader.read_all(position, limit=page):
            seen.append(event.position)
            position = event.position
        if finished:
            return
        await anyio.lowlevel.checkpoint()


def request(stream: str, expected: int, *types: str, ready: datetime | None = None) -> AppendRequest:
    return AppendRequest(
        namespace="default",
        stream_id=stream,
        expected_version=expected,
        events=tuple(NewEvent(t, t.encode()) for t in types),
        recorded_at=T0,
        schedule=None if ready is None else Schedule(ready),
    )


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Journal]:
    journal = await connect(pg_url)
    try:
        yield journal
    finally:
        await journal.close()


def raw(pg_url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(pg_url, autocommit=True)


# -- the schema ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("UPDATE events SET type = 'Forged'", "UPDATE"),
        ("DELETE FROM events", "DELETE"),
        ("TRUNCATE events", "TRUNCATE"),
    ],
)
async def test_events_cannot_be_updated_deleted_or_truncated(
    pg: Journal, pg_url: str, statement: str, operation: str
) -> None:
    await pg.append("wf-1", NO_STREAM, [NewEvent("Started", b"1")])
    with raw(pg_url) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    assert f"sagalog events are append-only: {operation} on table events is not allowed" in str(
        caught.value
    )
    [event] = await pg.read_stream("wf-1")
    assert (event.type, event.payload) == ("Started", b"1")


async def test_every_object_lives_in_the_search_path_schema(pg: Journal, pg_url: str) -> None:
    with raw(pg_url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        functions = conn.execute(
            "SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE p.proname = 'events_refuse_change'"
        ).fetchall()
    assert tables == {
        "events", "snapshots", "checkpoints", "namespaces", "work_index", "tickets", "schema_migrations"
    }
    assert (schema,) in functions


async def test_an_unmigrated_schema_is_refused_with_the_command_to_run(pg_url: str) -> None:
    with pytest.raises(ProgrammingError) as caught:
        await connect(pg_url, migrate=False)
    message = str(caught.value)
    assert "is not migrated (missing 001_journal, 002_append_arrays, 003_notices, 004_tickets)" in message
    assert "sagalog admin migrate" in message


async def test_a_missing_schema_is_named(pg_url: str) -> None:
    url = pg_url.replace("search_path%3Dt_", "search_path%3Dnope_")
    with pytest.raises(ProgrammingError, match=r"no schema of the search_path \(nope_\w+\) exists"):
        await connect(url)


async def test_concurrent_migrations_apply_each_file_once(pg_url: str) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(lambda: _open_and_close(pg_url))
    with raw(pg_url) as conn:
        rows = conn.execute("SELECT version, name FROM schema_migrations").fetchall()
    assert sorted(rows) == [(1, "journal"), (2, "append_arrays"), (3, "notices"), (4, "tickets")]
    journal = await connect(pg_url, migrate=False)  # migrated: accepted
    await journal.close()


async def _open_and_close(url: str) -> None:
    journal = await connect(url)
    await journal.close()


async def test_a_journal_written_before_002_is_upgraded_and_appended_to(pg_url: str) -> None:
    """`sagalog admin migrate` on a 001 schema: old events stay, new batches continue them."""
    first = migrations.available()[0]
    with raw(pg_url) as conn:
        conn.execute(sql.SQL(first.sql))
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute("INSERT INTO schema_migrations (version, name) VALUES (1, 'journal')")
        # A group commit of the previous version: one JSON document.
        conn.execute(
            "SELECT sagalog_append(%s::jsonb, 'old')",
            (
                '[[["default", "a"], ["default", "b"]],'
                ' [[1, 0, 1, "2026-01-01T00:00:00Z", 0, null], [2, 0, 1, "2026-01-01T00:00:00Z", 0, null]],'
                ' [[1, 1, "A1", "", {}, "default", "a"], [2, 1, "B1", "", {}, "default", "b"]]]',
            ),
        )
    with pytest.raises(ProgrammingError, match="missing 002_append_arrays"):
        await connect(pg_url, migrate=False)
    assert await migrations.migrate_url(pg_url) == ["002_append_arrays", "003_notices", "004_tickets"]
    journal = await connect(pg_url, migrate=False)
    try:
        outcomes = await journal.recorder.append_batch([
            request("a", 1, "A2"), request("b", NO_STREAM, "B?"), request("c", NO_STREAM, "C1")
        ])
        stored = [(e.stream_id, e.version, e.type) for e in await journal.read_all()]
    finally:
        await journal.close()
    assert isinstance(outcomes[1], ConcurrencyError) and outcomes[1].actual_version == 1
    assert stored == [("a", 1, "A1"), ("b", 1, "B1"), ("a", 2, "A2"), ("c", 1, "C1")]


# -- group commit ------------------------------------------------------------


async def test_a_batch_keeps_request_order_and_each_its_own_outcome(pg: Journal) -> None:
    recorder = pg.recorder
    await recorder.append_batch([request("b", NO_STREAM, "B1")])
    outcomes = await recorder.append_batch([
        request("a", NO_STREAM, "A1", "A2", ready=T0),
        request("b", NO_STREAM, "B2"),  # conflict: b is at 1
        request("c", ANY_VERSION, "C1"),
        request("a", 2, "A3"),  # sees the first request of the same batch
    ])
    assert isinstance(outcomes[1], ConcurrencyError)
    assert outcomes[1].actual_version == 1
    written = [e for o in outcomes if not isinstance(o, ConcurrencyError) for e in o]
    assert [(e.stream_id, e.version, e.type) for e in written] == [
        ("a", 1, "A1"), ("a", 2, "A2"), ("c", 1, "C1"), ("a", 3, "A3")
    ]
    positions = [e.position for e in written]
    assert positions == sorted(positions)
    stored = await pg.read_all(positions[0] - 1)
    assert [(e.position, e.stream_id, e.version) for e in stored] == [
        (e.position, e.stream_id, e.version) for e in written
    ]
    assert await pg.next_ready_at() == T0


async def test_a_new_stream_that_exists_is_refused_alone_in_a_batch_of_new_streams(pg: Journal) -> None:
    """A batch of one-event requests for new streams reads no versions; one that exists after all
    fails the INSERT, and the batch is decided again with every version read."""
    recorder = pg.recorder
    await recorder.append_batch([request("old", NO_STREAM, "O1"), request("older", NO_STREAM, "P1")])
    outcomes = await recorder.append_batch([
        request("n1", NO_STREAM, "N1"),
        request("old", NO_STREAM, "O2"),  # refused: old is at 1
        request("n2", NO_STREAM, "N2", ready=T0),
        request("older", 1, "P2"),
        request("n3", ANY_VERSION, "N3"),
    ])
    assert isinstance(outcomes[1], ConcurrencyError)
    assert (outcomes[1].expected_version, outcomes[1].actual_version) == (NO_STREAM, 1)
    written = [e for o in outcomes if not isinstance(o, ConcurrencyError) for e in o]
    assert [(e.stream_id, e.version, e.type) for e in written] == [
        ("n1", 1, "N1"), ("n2", 1, "N2"), ("older", 2, "P2"), ("n3", 1, "N3")
    ]
    stored = await pg.read_all(written[0].position - 1)
    assert [(e.position, e.stream_id, e.version) for e in stored] == [
        (e.position, e.stream_id, e.version) for e in written
    ]
    assert [c.stream_id for c in await recorder.claim("default", "w", T0, T0, 10)] == ["n2"]


@pytest.mark.parametrize("hint", [1, 3, 50], ids=["stale", "exact", "too high"])
async def test_a_version_hint_speeds_the_read_and_never_changes_the_version(
    pg: Journal, pg_url: str, hint: int
) -> None:
    """``ANY_VERSION`` requests read down to the version the client last wrote; any hint is safe."""
    await pg.recorder.append_batch([request("s", NO_STREAM, "S1", "S2", "S3"), request("t", NO_STREAM, "T1")])
    heads = {("default", "s"): hint, ("default", "t"): hint}
    distinct = [request("s", ANY_VERSION, "S4"), request("t", ANY_VERSION, "T2")]
    repeated = [request("s", ANY_VERSION, "S5"), request("t", 2, "T3"), request("s", 5, "S6")]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        pg_append.register_dumpers(conn.adapters)
        for requests in (distinct, repeated):
            cur = conn.cursor(binary=True)
            arguments = pg_append.append_arguments(requests, pg_append.Channels.of("test"), heads)
            await cur.execute(pg_append.APPEND, arguments)
            row = await cur.fetchone()
            assert row is not None
            assert not any(isinstance(o, ConcurrencyError) for o in pg_append.append_outcomes(requests, *row))
    assert [(e.type, e.version) for e in await pg.read_stream("s")] == [
        ("S1", 1), ("S2", 2), ("S3", 3), ("S4", 4), ("S5", 5), ("S6", 6)
    ]
    assert [(e.type, e.version) for e in await pg.read_stream("t")] == [("T1", 1), ("T2", 2), ("T3", 3)]


async def test_hints_from_a_journal_that_was_recreated_do_not_change_versions(pg_url: str) -> None:
    """``ANY_VERSION`` hints are versions this process wrote; after the schema is recreated under
    an open journal they are too high, and appends still take the right versions."""
    journal = await connect(pg_url)
    try:
        for stream in ("s", "t", "v"):
            for _ in range(3):
                await journal.append(stream, ANY_VERSION, [NewEvent("Old", b"")])
        with raw(pg_url) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()
            assert schema is not None
            name = sql.Identifier(schema[0])
            conn.execute(sql.SQL("DROP SCHEMA {0} CASCADE; CREATE SCHEMA {0}").format(name))
        await migrations.migrate_url(pg_url)
        other = await connect(pg_url)
        for stream in ("t", "v"):
            await other.append(stream, NO_STREAM, [NewEvent("New", b"")])
        await other.close()
        # Every hint is 3 now. One request: an empty stream, then one at version 1.
        await journal.append("s", ANY_VERSION, [NewEvent("New", b"")])
        await journal.append("v", ANY_VERSION, [NewEvent("New", b"")])
        # A group commit: a stream at version 1, and a new one.
        await journal.recorder.append_batch([
            request("t", ANY_VERSION, "Next"), request("u", NO_STREAM, "U1")
        ])
        versions = {s: [e.version for e in await journal.read_stream(s)] for s in ("s", "t", "u", "v")}
    finally:
        await journal.close()
    assert versions == {"s": [1], "t": [1, 2], "u": [1], "v": [1, 2]}


async def test_a_batch_may_mix_namespaces_and_reuse_a_stream_id_in_each(pg: Journal) -> None:
    await pg.create_namespace("tenant")
    recorder = pg.recorder
    outcomes = await recorder.append_batch([
        request("s", NO_STREAM, "D1"),
        AppendRequest("tenant", "s", NO_STREAM, (NewEvent("T1", b""), NewEvent("T2", b"")), T0),
        request("s", 1, "D2"),
    ])
    assert [[(e.namespace, e.stream_id, e.version) for e in o] for o in outcomes] == [  # type: ignore[union-attr]
        [("default", "s", 1)], [("tenant", "s", 1), ("tenant", "s", 2)], [("default", "s", 2)]
    ]
    assert [e.type for e in await pg.read_stream("s")] == ["D1", "D2"]
    assert [e.type for e in await (await pg.in_namespace("tenant")).read_stream("s")] == ["T1", "T2"]


async def test_a_batch_of_distinct_streams_schedules_only_what_it_wrote(pg: Journal) -> None:
    recorder = pg.recorder
    await recorder.append_batch([request("taken", NO_STREAM, "T1")])
    outcomes = await recorder.append_batch([
        request("x", NO_STREAM, "X1", ready=T0),
        request("taken", NO_STREAM, "T2", ready=T0),  # refused: its schedule is not applied
        request("y", NO_STREAM, "Y1", "Y2"),
    ])
    assert isinstance(outcomes[1], ConcurrencyError)
    assert [[(e.stream_id, e.version) for e in o] for o in (outcomes[0], outcomes[2])] == [
        [("x", 1)], [("y", 1), ("y", 2)]
    ]
    claims = await recorder.claim("default", "w", T0, T0, 10)
    assert [c.stream_id for c in claims] == ["x"]
    remove = AppendRequest("default", "x", 1, (NewEvent("Done", b""),), T0, Schedule(None))
    await recorder.append_batch([remove, request("z", NO_STREAM, "Z1")])
    assert await pg.next_ready_at() is None


@pytest.mark.parametrize("types", [("One",), ("First", "Second", "Third")])
async def test_a_one_request_append_sets_and_removes_its_work_index_row(
    pg: Journal, types: tuple[str, ...]
) -> None:
    """Each shape of the one-request statement: one event or several, work index untouched/set/removed."""
    recorder, n = pg.recorder, len(types)
    [plain] = await recorder.append_batch([request("s", NO_STREAM, *types)])
    assert await pg.next_ready_at() is None
    [scheduled] = await recorder.append_batch([request("s", n, *types, ready=T0)])
    assert await pg.next_ready_at() == T0
    [refused] = await recorder.append_batch([request("s", n, "Stale", ready=None)])
    remove = AppendRequest("default", "s", 2 * n, tuple(NewEvent(t, b"") for t in types), T0, Schedule(None))
    [removed] = await recorder.append_batch([remove])
    assert await pg.next_ready_at() is None
    assert isinstance(refused, ConcurrencyError) and refused.actual_version == 2 * n
    written = [e for o in (plain, scheduled, removed) if not isinstance(o, ConcurrencyError) for e in o]
    assert [e.version for e in written] == list(range(1, 3 * n + 1))
    assert [(e.position, e.version, e.type, e.payload) for e in written] == [
        (e.position, e.version, e.type, e.payload) for e in await pg.read_stream("s")
    ]


async def test_racing_appends_to_one_stream_from_many_connections_all_land_in_order(pg_url: str) -> None:
    """A stale version read (another connection committed first) is decided again under the events lock."""
    writers, appends = 5, 20
    journals = [await connect(pg_url) for _ in range(writers)]

    async def write(journal: Journal, n: int) -> None:
        for i in range(appends):
            await journal.append("shared", ANY_VERSION, [NewEvent("E", b"%d-%d" % (n, i))])

    try:
        async with anyio.create_task_group() as tg:
            for n, journal in enumerate(journals):
                tg.start_soon(write, journal, n)
        stored = await journals[0].read_stream("shared")
    finally:
        for journal in journals:
            await journal.close()
    assert [e.version for e in stored] == list(range(1, writers * appends + 1))
    assert sorted(e.payload for e in stored) == sorted(
        b"%d-%d" % (n, i) for n in range(writers) for i in range(appends)
    )
    positions = [e.position for e in stored]
    assert positions == sorted(positions)


async def test_a_large_batch_is_split_and_keeps_its_order(
    pg: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_append, "MAX_CALL_BYTES", 5)
    outcomes = await pg.recorder.append_batch([
        request("a", NO_STREAM, "AAAA"),  # 4 bytes
        request("b", NO_STREAM, "BBBB"),  # over 5 with the first: a second call
        request("a", 1, "A2"),
        request("a", NO_STREAM, "Late"),  # refused: a is at 2 by now
    ])
    assert isinstance(outcomes[3], ConcurrencyError)
    assert outcomes[3].actual_version == 2
    written = [e for o in outcomes[:3] if not isinstance(o, ConcurrencyError) for e in o]
    assert [(e.stream_id, e.version) for e in written] == [("a", 1), ("b", 1), ("a", 2)]
    assert [e.position for e in written] == [e.position for e in await pg.read_all()]


async def test_a_refused_value_fails_the_batch_and_changes_nothing(pg: Journal) -> None:
    await pg.append("wf-1", NO_STREAM, [NewEvent("Started", b"1")])
    bad = AppendRequest(
        namespace="default",
        stream_id="wf-2",
        expected_version=NO_STREAM,
        events=(NewEvent("Started", b"2", {"note": "nul\x00byte"}),),
        recorded_at=T0,
    )
    with pytest.raises(InvalidEventError, match="refused a value"):
        await pg.recorder.append_batch([request("wf-1", 1, "Next"), bad])
    assert [(e.stream_id, e.version) for e in await pg.read_all()] == [("wf-1", 1)]


@pytest.mark.parametrize("batch", [1, 2])
async def test_an_expected_version_out_of_range_is_refused_as_invalid(pg: Journal, batch: int) -> None:
    requests = [request(f"s{n}", 2**40, "E") for n in range(batch)]
    with pytest.raises(InvalidEventError, match="out of range"):
        await pg.recorder.append_batch(requests)
    assert await pg.read_all() == []


# -- global order under real concurrency --------------------------------------


@pytest.mark.parametrize("shape", ["append", "batch of new streams", "batch of two-event requests"])
async def test_a_concurrent_reader_sees_every_event_once_and_in_order(pg_url: str, shape: str) -> None:
    """Writers on separate connections race; positions must never commit out of order.

    Without the events lock a slow writer's smaller position would commit
    after the reader had moved past it, and the reader would miss it. Each
    shape takes another path: the one-request statement, and both INSERTs
    of sagalog_append_batch.
    """
    writers, appends = 6, 40
    journals = [await connect(pg_url) for _ in range(writers + 1)]
    reader, seen = journals[-1], []
    done = anyio.Event()
    two = (NewEvent("E", b""), NewEvent("F", b""))

    async def write(journal: Journal, n: int) -> None:
        for i in range(appends):
            if shape == "append":
                await journal.append(f"s{n}-{i % 3}", ANY_VERSION, two)
            elif shape == "batch of new streams":
                await journal.recorder.append_batch([
                    AppendRequest("default", f"s{n}-{i}-{k}", NO_STREAM, two[k:k + 1], T0)
                    for k in range(2)
                ])
            else:
                await journal.recorder.append_batch([
                    AppendRequest("default", f"s{n}-{i % 3}-{k}", ANY_VERSION, two, T0) for k in range(2)
                ])

    async def read() -> None:
        await follow(reader, done, seen, page=50)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with anyio.create_task_group() as writing:
                for n, journal in enumerate(journals[:writers]):
                    writing.start_soon(write, journal, n)
            done.set()
        everything = [e.position for e in await reader.read_all(0, limit=10_000)]
    finally:
        for journal in journals:
            await journal.close()
    assert len(everything) == writers * appends * (4 if shape == "batch of two-event requests" else 2)
    assert seen == everything  # exactly once each, in order, nothing skipped


async def test_many_appenders_through_one_journal_keep_each_check_and_the_global_order(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enough appenders that the group committer splits them and runs two commits at once.

    Two appenders race for each stream, each expecting a new stream: exactly
    one of each pair wins, whichever of the overlapping batches it was in,
    and the other gets its own ConcurrencyError. A reader paging through the
    global order meanwhile sees every event once, in order.
    """
    writers, rounds = 320, 3  # 320 waiting appenders: batches of 160, two at once
    journal, reader = await connect(pg_url), await connect(pg_url)
    running, most = 0, 0
    append_batch = journal.recorder.append_batch

    async def counted(requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return await append_batch(requests)
        finally:
            running -= 1

    monkeypatch.setattr(journal.recorder, "append_batch", counted)
    won: list[int] = []
    lost: list[ConcurrencyError] = []
    seen: list[int] = []
    done = anyio.Event()

    async def write(n: int) -> None:
        for r in range(rounds):
            try:
                stored = await journal.append(f"s{r}-{n // 2}", NO_STREAM, [NewEvent("E", b"%d" % n)])
                won.extend(e.version for e in stored)
            except ConcurrencyError as exc:
                lost.append(exc)

    async def read() -> None:
        await follow(reader, done, seen, page=100)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            async with anyio.create_task_group() as writing:
                for n in range(writers):
                    writing.start_soon(write, n)
            done.set()
        everything = await reader.read_all(0, limit=10_000)
    finally:
        await journal.close()
        await reader.close()
    assert most == 2
    assert won == [1] * (writers // 2 * rounds)
    assert len(lost) == writers // 2 * rounds
    assert all(exc.expected_version == 0 and exc.actual_version == 1 for exc in lost)
    assert sorted(e.stream_id for e in everything) == sorted(
        f"s{r}-{k}" for r in range(rounds) for k in range(writers // 2)
    )
    assert seen == [e.position for e in everything]  # exactly once each, in order


async def test_binary_arrays_arrive_as_the_values_they_were_built_from(pg_url: str) -> None:
    """The group commit's arguments are built in PostgreSQL's binary format by pg_append itself."""
    texts = ["plain", "", "ünïcødé ✓", "quote ' and \\ backslash", "x" * 5000]
    blobs = [b"", b"\x00\x01\xff", b"payload" * 1000]
    moments = [
        T0,
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 7, 1, 12, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-7))),
    ]
    numbers = [0, -1, 2**31 - 1, -(2**31)]
    documents = [b'{"worker": "w-1"}', b"{}", '{"note": "ünï"}'.encode()]
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        pg_append.register_dumpers(conn.adapters)
        cur = conn.cursor(binary=True)
        await cur.execute(
            "SELECT %b::text[], %b::bytea[], %b::timestamptz[], %b::integer[], %b::text[]",
            (
                pg_append.text_array(texts),
                pg_append.bytea_array(blobs),
                pg_append.timestamptz_array(moments),
                pg_append.int4_array(numbers),
                pg_append.json_text_array(documents),
            ),
        )
        row = await cur.fetchone()
    assert row is not None
    assert row[0] == texts
    assert row[1] == blobs
    assert row[2] == moments  # the same instants, whatever the time zone they were given in
    assert row[3] == numbers
    assert row[4] == [d.decode() for d in documents]
    assert pg_append.payload_bytes(pg_append.bytea_array(blobs)) == sum(map(len, blobs))


def test_a_naive_recorded_at_is_left_to_psycopg() -> None:
    """A naive datetime is no instant: it goes as psycopg sends it, as before."""
    naive = [datetime(2026, 1, 1, 12, 0)]
    assert pg_append.timestamptz_array(naive) == naive


# -- errors -----------------------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = f"postgresql://sagalog:s3cret-pw@127.0.0.1:{closed_port()}/app?connect_timeout=2"
    with pytest.raises(OperationalError) as caught:
        await connect(url)
    message = str(caught.value)
    assert f"PostgreSQL at postgresql://sagalog:***@127.0.0.1:{url.split(':')[3]}" in message
    assert "s3cret-pw" not in message
    assert "s3cret-pw" not in repr(caught.value.__cause__)


async def test_a_password_given_as_a_parameter_is_not_shown_either() -> None:
    url = f"postgresql://sagalog@127.0.0.1:{closed_port()}/app?password=s3cret-pw&connect_timeout=2"
    with pytest.raises(OperationalError) as caught:
        await connect(url)
    assert "s3cret-pw" not in str(caught.value)
    assert "/app?connect_timeout=2 failed" in str(caught.value)


async def test_a_dropped_connection_is_transient_and_loses_nothing(pg_url: str) -> None:
    url = pg_url + "&application_name=victim"
    journal = await connect(url)
    try:
        await journal.append("wf-1", NO_STREAM, [NewEvent("Started", b"1")])
        _terminate(pg_url, "victim")
        with pytest.raises(OperationalError, match=r"PostgreSQL at postgresql://.* failed"):
            await journal.recorder.append_batch([request("wf-1", 1, "Lost")])
        # The Journal retries transient failures on a fresh connection.
        await journal.append("wf-1", 1, [NewEvent("Next", b"2")])
        assert [e.type for e in await journal.read_stream("wf-1")] == ["Started", "Next"]
    finally:
        await journal.close()


def _terminate(pg_url: str, application_name: str) -> None:
    with raw(pg_url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        )


# -- work index: SKIP LOCKED ----------------------------------------------------


async def test_claim_skips_rows_locked_by_another_transaction(pg: Journal, pg_url: str) -> None:
    for stream in ("a", "b"):
        await pg.append(stream, NO_STREAM, [NewEvent("E", b"")], schedule=Schedule(T0))
    with raw(pg_url) as conn, conn.transaction():
        conn.execute("SELECT 1 FROM work_index WHERE stream_id = 'a' FOR UPDATE")
        with anyio.fail_after(5):  # would block on the row lock without SKIP LOCKED
            claims = await pg.claim("w1", 30)
    assert [c.stream_id for c in claims] == ["b"]
    assert [c.stream_id for c in await pg.claim("w2", 30)] == ["a"]


# -- wake-ups ---------------------------------------------------------------------


async def test_wait_for_new_wakes_on_another_connections_append(pg: Journal, pg_url: str) -> None:
    other = await connect(pg_url)
    try:
        async with anyio.create_task_group() as tg:
            woke = []

            async def wait() -> None:
                woke.append(await pg.wait_for_new(0, timeout=30))

            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            await other.append("wf-1", NO_STREAM, [NewEvent("E", b"")])
    finally:
        await other.close()
    assert woke == [True]
    assert await pg.wait_for_new(1, timeout=0.05) is False


async def test_wait_for_new_falls_back_to_polling_when_listen_breaks(pg_url: str) -> None:
    recorder = await PostgresRecorder.open(pg_url + "&application_name=listener")
    journal = Journal(recorder)
    writer = await connect(pg_url)
    try:
        assert await journal.wait_for_new(0, timeout=0.05) is False  # LISTEN is up
        with raw(pg_url) as conn:
            conn.execute(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'listener'"
                    " AND query LIKE 'LISTEN%%'"
                )
            )
        async with anyio.create_task_group() as tg:
            woke = []

            async def wait() -> None:
                woke.append(await journal.wait_for_new(0, timeout=30))

            tg.start_soon(wait)
            await anyio.sleep(0.1)
            await writer.append("wf-1", NO_STREAM, [NewEvent("E", b"")])
        assert woke == [True]
    finally:
        await writer.close()
        await journal.close()
