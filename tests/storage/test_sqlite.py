"""What only the SQLite backend promises: the file, its locks, other processes."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from sagalog.storage import (
    NO_STREAM,
    AppendRequest,
    Backoff,
    Journal,
    NewEvent,
    StreamFilter,
    connect,
)
from sagalog.storage.sqlite import SqliteRecorder
from sagalog.storage.sqlite_db import SqliteDatabase

from sagalog.clock import ManualClock
from sagalog.errors import OperationalError, ProgrammingError

pytestmark = pytest.mark.anyio


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the journal file, as any other program could open."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the journal file goes (its folders do not exist yet)."""
    return tmp_path / "nested" / "dirs" / "journal.db"


async def test_file_is_created_in_wal_mode_with_its_schema(db_path: Path) -> None:
    journal = await connect(f"sqlite:///{db_path}")
    assert journal.description == f"sqlite:///{db_path}"
    await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"")])
    await journal.close()
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"events", "snapshots", "checkpoints", "namespaces", "work"} <= tables
        assert conn.execute("SELECT name FROM namespaces").fetchall() == [("default",)]


async def test_events_refuse_update_and_delete_from_any_connection(db_path: Path) -> None:
    journal = await connect(f"sqlite:///{db_path}")
    await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"original")])
    with raw(db_path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match=r"^sagalog events are append-only: UPDATE refused$"):
            conn.execute("UPDATE events SET payload = x'00'")
        with pytest.raises(sqlite3.IntegrityError, match=r"^sagalog events are append-only: DELETE refused$"):
            conn.execute("DELETE FROM events")
    [event] = await journal.read_stream("wf-1")
    assert event.payload == b"original"
    await journal.close()


async def test_positions_are_dense_across_connections(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    first, second = await connect(url), await connect(url)

    async def write(journal: Journal, name: str) -> None:
        for version in range(5):
            await journal.append(name, version, [NewEvent("A", b"")])

    async with anyio.create_task_group() as tg:
        for index in range(4):
            tg.start_soon(write, first if index % 2 else second, f"wf-{index}")
    positions = [e.position for e in await second.read_all(0, 100)]
    assert positions == list(range(1, 21))
    await first.close()
    await second.close()


APPEND_FROM_ANOTHER_PROCESS = """
import sys, anyio
from sagalog.storage import ANY_VERSION, NewEvent, connect

async def main() -> None:
    journal = await connect(sys.argv[1])
    await journal.append("wf-other", ANY_VERSION, [NewEvent("FromElsewhere", b"hi")])
    await journal.close()

anyio.run(main)
"""


async def test_wait_for_new_sees_another_process_append(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    journal = await connect(url)
    await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"")])
    woke: list[bool] = []

    async def wait() -> None:
        woke.append(await journal.wait_for_new(1, 60))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.run_process([sys.executable, "-P", "-c", APPEND_FROM_ANOTHER_PROCESS, url])
    assert woke == [True]
    [event] = await journal.read_all(1)
    assert (event.stream_id, event.type, event.payload) == ("wf-other", "FromElsewhere", b"hi")
    await journal.close()


async def test_a_locked_file_is_a_transient_error_naming_it(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    setup = await connect(url)
    await setup.append("wf-1", NO_STREAM, [NewEvent("A", b"")])
    await setup.close()
    recorder = await SqliteRecorder.open(db_path, busy_timeout=0.01)
    journal = Journal(recorder, backoff=Backoff(attempts=2, initial=0.01, maximum=0.01))
    with raw(db_path) as other:
        other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
        with pytest.raises(OperationalError) as caught:
            await journal.append("wf-1", 1, [NewEvent("B", b"")])
        assert str(caught.value) == f"SQLite journal {str(db_path)!r} is unavailable: database is locked"
        # WAL: readers are not blocked by a writer
        assert [e.type for e in await journal.read_stream("wf-1")] == ["A"]
        other.execute("ROLLBACK")
    [event] = await journal.append("wf-1", 1, [NewEvent("B", b"")])
    assert event.version == 2
    await journal.close()


async def test_a_closed_recorder_says_so(db_path: Path) -> None:
    journal = await connect(f"sqlite:///{db_path}")
    await journal.close()
    await journal.close()  # closing twice is harmless
    with pytest.raises(ProgrammingError) as caught:
        await journal.read_stream("wf-1")
    assert str(caught.value) == f"SQLite journal {str(db_path)!r} is closed"


async def test_a_file_from_a_newer_sagalog_is_refused(db_path: Path) -> None:
    await (await connect(f"sqlite:///{db_path}")).close()
    with raw(db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ProgrammingError) as caught:
        await connect(f"sqlite:///{db_path}")
    assert str(caught.value) == (
        f"SQLite journal {str(db_path)!r} has schema version 99, newer than this sagalog "
        "understands (1): upgrade sagalog"
    )


async def test_times_come_back_as_the_same_instant_in_utc(db_path: Path) -> None:
    plus_two = timezone(timedelta(hours=2))
    clock = ManualClock(datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=plus_two))
    journal = await connect(f"sqlite:///{db_path}", clock=clock)
    await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"")])
    [event] = await journal.read_stream("wf-1")
    assert event.recorded_at == clock.now() and event.recorded_at.tzinfo == UTC
    assert event.recorded_at.hour == 10
    with raw(db_path) as conn:  # stored as microseconds since the epoch
        assert conn.execute("SELECT recorded_at FROM events").fetchone() == (1772361000123456,)
    # a naive bound is read as UTC
    naive = datetime(2026, 3, 1, 10, 30, 0, 123456)
    assert len(await journal.list_streams(StreamFilter(since=naive))) == 1
    assert await journal.list_streams(StreamFilter(until=naive)) == []
    await journal.close()


async def test_a_natively_cancelled_call_does_not_share_the_connection_with_the_next(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: "UNIQUE constraint failed: events.position" mixing direct batches and appends.

    ``asyncio.wait_for`` (or ``task.cancel()``) around a direct
    ``recorder.append_batch`` stops the caller waiting for its worker thread,
    and anyio hands the connection to the next call while that thread is still
    inside its transaction. The interleaving is made deterministic here: the
    direct batch's thread is held inside its transaction until the Journal's
    append has been started.
    """
    journal = await connect(f"sqlite:///{db_path}")
    recorder = journal.recorder
    assert isinstance(recorder, SqliteRecorder)
    inside, release = threading.Event(), threading.Event()
    versions = SqliteDatabase._versions

    def held_versions(db: SqliteDatabase, requests: Sequence[AppendRequest]) -> dict[tuple[str, str], int]:
        if any(r.stream_id == "direct-1" for r in requests):  # inside the direct batch's transaction
            inside.set()
            release.wait(30)
        return versions(db, requests)

    monkeypatch.setattr(SqliteDatabase, "_versions", held_versions)
    await journal.append("first", NO_STREAM, [NewEvent("A", b"")])
    direct = asyncio.create_task(recorder.append_batch([
        AppendRequest("default", f"direct-{i}", NO_STREAM, (NewEvent("D", b""),), datetime.now(UTC))
        for i in range(1, 4)
    ]))
    assert await anyio.to_thread.run_sync(inside.wait, 30), "the direct batch never read its versions"
    direct.cancel()
    with pytest.raises(asyncio.CancelledError):
        await direct
    appended = asyncio.create_task(journal.append("second", NO_STREAM, [NewEvent("B", b"")]))
    await anyio.wait_all_tasks_blocked()  # its worker thread is waiting for the connection
    release.set()
    [event] = await appended
    stored = await journal.read_all(0)
    await journal.close()
    # The abandoned batch still committed, whole, before the append began.
    assert [(e.position, e.stream_id) for e in stored] == [
        (1, "first"), (2, "direct-1"), (3, "direct-2"), (4, "direct-3"), (5, "second")
    ]
    assert event.position == 5
