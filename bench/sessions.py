"""Session figures on PostgreSQL: operations/s, cold reads, cached-state memory.

Run with ``make bench BENCH=sessions`` (sets ``SAGALOG_TEST_DSN`` to a fresh
database) or ``SAGALOG_TEST_DSN=... python -P bench/sessions.py``. It prints:

* ``open``, ``set`` and ``get`` operations/s through :class:`Sessions`, with
  1 and 16 concurrent callers (each on its own sessions);
* a cold ``get`` (empty cache: a new :class:`Sessions`) of a session with
  100 and 10,000 events, with snapshots every 100 events and without any
  (after ANALYZE, as autovacuum keeps the statistics; plus one figure before);
* the memory (tracemalloc) of 100,000 open sessions' cached states, each with
  three small attributes, held in the same cache :class:`Sessions` uses.

Target: a cold ``get`` with snapshots under 5 ms whatever the history length.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import anyio
import psycopg
from cachetools import LRUCache
from sagalog.engine.sessions import Sessions
from sagalog.replay.folding import snapshot_if_due
from sagalog.replay.sessions import (
    SESSION_FOLD,
    SessionChanged,
    SessionOpened,
    SessionState,
    encode_event,
    stream_id,
)
from sagalog.storage import Event, Journal, connect

SECONDS = float(os.environ.get("BENCH_SECONDS", "2"))
COLD_RUNS = 30
CACHED_SESSIONS = 100_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def rate(callers: int, work: Callable[[int, int], Awaitable[None]]) -> float:
    """Call ``work(caller, n)`` repeatedly in ``callers`` tasks for SECONDS; calls per second."""
    done = [0] * callers
    deadline = time.perf_counter() + SECONDS

    async def loop(caller: int) -> None:
        while time.perf_counter() < deadline:
            await work(caller, done[caller])
            done[caller] += 1

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for caller in range(callers):
            tg.start_soon(loop, caller)
    return sum(done) / (time.perf_counter() - start)


async def operations(journal: Journal) -> dict[str, float]:
    """open / set / get rates."""
    figures: dict[str, float] = {}
    sessions = Sessions(journal)
    for callers in (1, 16):
        tag = uuid.uuid4().hex[:6]

        async def open_(caller: int, n: int, tag: str = tag) -> None:
            await sessions.open(f"{tag}-{caller}-{n}", kind="bench", idle_timeout=600)

        figures[f"open/s, {callers} caller(s)"] = await rate(callers, open_)

        async def set_(caller: int, n: int, tag: str = tag) -> None:
            await sessions.set(f"{tag}-{caller}-0", "n", n)

        figures[f"set/s, {callers} caller(s)"] = await rate(callers, set_)

        async def get(caller: int, n: int, tag: str = tag) -> None:
            await sessions.get(f"{tag}-{caller}-0")

        figures[f"get/s (cached), {callers} caller(s)"] = await rate(callers, get)
    return figures


async def long_session(journal: Journal, session_id: str, events: int, every: int) -> None:
    """A session with ``events`` events, written in large appends, snapshotted every ``every``."""
    stream = stream_id(session_id)
    state = SESSION_FOLD.initial(stream)
    batch: list[SessionOpened | SessionChanged] = [SessionOpened(session_id, "bench", T0)]
    written = 0
    while written < events:
        while len(batch) < min(500, events - written):
            batch.append(SessionChanged(T0 + timedelta(seconds=written + len(batch)), {"n": written}))
        stored: list[Event] = await journal.append(stream, written, [encode_event(e) for e in batch])
        for record in stored:
            state = SESSION_FOLD.apply(state, record)
            await snapshot_if_due(journal, stream, SESSION_FOLD, state, record.version, every)
        written += len(batch)
        batch = []


async def median_cold_get(journal: Journal, session_id: str, events: int, runs: int) -> float:
    """Median ms of ``get`` through a new Sessions (empty cache) each time."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        state = await Sessions(journal).get(session_id)
        times.append((time.perf_counter() - start) * 1000)
        assert state.version == events
    return statistics.median(times)


async def cold_gets(journal: Journal, analyze: Callable[[], Awaitable[None]]) -> dict[str, float]:
    """Median cold ``get`` latency (ms) by history length, with and without snapshots.

    The figures are taken after ``analyze`` (table statistics as autovacuum
    keeps them); one figure shows a 10,000-event session read before it.
    """
    figures: dict[str, float] = {}
    cases = [(events, every) for events in (100, 10_000) for every in (100, 0)]
    ids = {case: f"long-{case[0]}-{case[1]}-{uuid.uuid4().hex[:6]}" for case in cases}
    for (events, every), session_id in ids.items():
        await long_session(journal, session_id, events, every)
    fresh = await median_cold_get(journal, ids[(10_000, 100)], 10_000, COLD_RUNS)
    await analyze()
    for (events, every), session_id in ids.items():
        label = "snapshots every 100" if every else "no snapshots"
        runs = COLD_RUNS if every else 5
        figures[f"cold get ms, {events} events, {label}"] = await median_cold_get(
            journal, session_id, events, runs
        )
    figures["cold get ms, 10000 events, snapshots, before ANALYZE"] = fresh
    return figures


def cached_memory() -> dict[str, float]:
    """Bytes held by 100,000 open sessions' states in a cache shaped like Sessions'."""
    opened = [
        encode_event(
            SessionOpened(
                f"user-{n:06d}",
                "checkout",
                T0,
                {"user": f"u{n}", "cart": [n, n + 1], "total": 12.5},
                idle_timeout=1800,
            )
        )
        for n in range(CACHED_SESSIONS)
    ]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    cache: LRUCache[tuple[str, int], SessionState] = LRUCache(maxsize=CACHED_SESSIONS)
    latest: LRUCache[str, int] = LRUCache(maxsize=CACHED_SESSIONS)
    for n, new in enumerate(opened):
        stream = f"session-user-{n:06d}"
        record = Event(n + 1, stream, 1, new.type, new.payload, new.metadata, "default", T0)
        state = SESSION_FOLD.apply(SESSION_FOLD.initial(stream), record)
        cache[(state.session_id, state.version)] = state
        latest[state.session_id] = state.version
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return {
        f"cached state of {CACHED_SESSIONS:,} open sessions, MiB": used / 2**20,
        "  bytes per session": used / CACHED_SESSIONS,
    }


async def postgres(dsn: str) -> dict[str, float]:
    """Every Postgres figure, in a fresh schema of the database at ``dsn``."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"
    try:
        journal = await connect(url)
        try:
            figures = await operations(journal)

            async def analyze() -> None:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute("ANALYZE")

            figures.update(await cold_gets(journal, analyze))
        finally:
            await journal.close()
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return figures


def main() -> int:
    """Print every figure."""
    dsn = os.environ.get("SAGALOG_TEST_DSN")
    if not dsn:
        print("set SAGALOG_TEST_DSN (make bench BENCH=sessions does)", file=sys.stderr)
        return 2
    figures = anyio.run(postgres, dsn)
    figures.update(cached_memory())
    print("sessions on PostgreSQL")
    for name, value in figures.items():
        print(f"  {name:<52} {value:>12,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
