"""Journal throughput on PostgreSQL and SQLite, next to the raw database limit.

Run with ``make bench BENCH=journal`` (sets ``SAGALOG_TEST_DSN`` to a fresh
database) or ``python -P bench/journal.py``. SQLite lives in a temporary
directory. For each backend it prints:

* single-event appends/s, one stream per writer, with 1 and 16 writers;
* grouped appends/s: 256 writers whose appends the group committer batches
  (``ANY_VERSION``), and the recorder's ``append_batch`` alone with 256
  one-event requests, to new streams and to existing streams with their
  expected versions;
* ``read_stream`` events/s over a 10,000-event stream;
* the physical limit on the same database with the same durability: raw
  single-row INSERT+COMMIT/s (1 and 16 connections) and batched INSERT
  rows/s (256 rows per transaction), into a table shaped like ``events``;

and the ratio journal/raw. Targets: single appends >= 80% of raw
INSERT+COMMIT, grouped appends >= 50% of raw batched INSERT rows/s.

The machine is shared and fsync times wander, so each journal figure and its
raw counterpart are measured in alternating short rounds, and the medians are
compared.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import anyio
import anyio.to_thread
import psycopg
from sagalog.storage import (
    ANY_VERSION,
    NO_STREAM,
    AppendRequest,
    Journal,
    NewEvent,
    connect,
)

SECONDS = float(os.environ.get("BENCH_SECONDS", "0.5"))  # per round
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
BATCH = 256
PAYLOAD = b"x" * 100
STREAM_EVENTS = 10_000
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = (NewEvent("Bench", PAYLOAD, {"worker": "bench"}),)

Work = Callable[[int], Awaitable[int]]
Measure = Callable[[], Awaitable[float]]

SINGLE_1 = "single appends/s, 1 writer"
SINGLE_16 = "single appends/s, 16 writers"
GROUPED = f"grouped appends/s, {BATCH} writers"
GROUPED_BATCH = f"grouped appends/s, append_batch of {BATCH}"
GROUPED_EXISTING = f"grouped appends/s, append_batch of {BATCH}, expected versions"
READ = f"read_stream events/s ({STREAM_EVENTS} events)"
RAW_1 = "raw INSERT+COMMIT/s, 1 connection"
RAW_16 = "raw INSERT+COMMIT/s, 16 connections"
RAW_BATCH = f"raw batched INSERT rows/s ({BATCH} per commit)"
PAIRS = [(SINGLE_1, RAW_1, 0.8), (SINGLE_16, RAW_16, 0.8), (GROUPED, RAW_BATCH, 0.5),
         (GROUPED_BATCH, RAW_BATCH, 0.5), (GROUPED_EXISTING, RAW_BATCH, 0.5)]


def tasks(writers: int, work: Work) -> Measure:
    """A measurement: ``work(writer)`` in ``writers`` tasks for SECONDS; units per second."""

    async def measure() -> float:
        done = [0] * writers
        deadline = time.perf_counter() + SECONDS

        async def loop(n: int) -> None:
            while time.perf_counter() < deadline:
                done[n] += await work(n)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(writers):
                tg.start_soon(loop, n)
        return sum(done) / (time.perf_counter() - start)

    return measure


async def paired(measures: dict[str, Measure]) -> dict[str, float]:
    """Medians of ROUNDS alternating rounds of every measurement."""
    found: dict[str, list[float]] = {label: [] for label in measures}
    for _ in range(ROUNDS):
        for label, measure in measures.items():
            found[label].append(await measure())
    return {label: statistics.median(values) for label, values in found.items()}


def journal_measures(journal: Journal, tag: str) -> dict[str, Measure]:
    """The journal's measurements, each on streams of its own."""
    counter = iter(range(10**9))

    def single(writers: int) -> Measure:
        async def work(n: int) -> int:
            await journal.append(f"{tag}-{writers}-{n}", ANY_VERSION, EVENT)
            return 1

        return tasks(writers, work)

    async def grouped(n: int) -> int:
        await journal.append(f"{tag}-grouped-{n}", ANY_VERSION, EVENT)
        return 1

    async def batch(_: int) -> int:
        # The recorder's group commit alone: what the committer hands it,
        # without the per-append cost of 256 Python tasks.
        now, b = journal.clock.now(), next(counter)
        await journal.recorder.append_batch([
            AppendRequest("default", f"{tag}-batch-{b}-{i}", NO_STREAM, EVENT, now)
            for i in range(BATCH)
        ])
        return BATCH

    versions = [NO_STREAM]

    async def existing(_: int) -> int:
        # The same, to streams that exist, each request with its expected
        # version (what workers send): new streams need no version read on
        # PostgreSQL, these need one each.
        now, version = journal.clock.now(), versions[0]
        await journal.recorder.append_batch([
            AppendRequest("default", f"{tag}-existing-{i}", version, EVENT, now)
            for i in range(BATCH)
        ])
        versions[0] = version + 1
        return BATCH

    return {SINGLE_1: single(1), SINGLE_16: single(16), GROUPED: tasks(BATCH, grouped),
            GROUPED_BATCH: tasks(1, batch), GROUPED_EXISTING: tasks(1, existing)}


async def read_rate(journal: Journal) -> float:
    """``read_stream`` of a whole 10,000-event stream, events per second."""
    stream = "long"
    for _ in range(STREAM_EVENTS // 500):
        await journal.append(stream, ANY_VERSION, EVENT * 500)

    async def read(_: int) -> int:
        return len(await journal.read_stream(stream))

    return await tasks(1, read)()


# -- PostgreSQL ------------------------------------------------------------------

RAW_PG_TABLE = "CREATE TABLE raw_events (LIKE events INCLUDING ALL)"
RAW_PG_INSERT = """
INSERT INTO raw_events (namespace, stream_id, version, type, payload, metadata, recorded_at)
VALUES ('default', %s, %s, 'Bench', %s, '{"worker": "bench"}', %s)"""
RAW_PG_BATCH = """
INSERT INTO raw_events (namespace, stream_id, version, type, payload, metadata, recorded_at)
SELECT 'default', sid, 1, 'Bench', pay, '{"worker": "bench"}', %s
FROM unnest(%b::text[], %b::bytea[]) AS t(sid, pay)"""


def pg_raw_measures(conns: list[psycopg.AsyncConnection[tuple[object, ...]]]) -> dict[str, Measure]:
    """Raw INSERTs through the same driver in autocommit: one statement, one commit."""
    counters = [0] * len(conns)
    batches = iter(range(10**9))

    async def insert(n: int) -> int:
        counters[n] += 1
        await conns[n].execute(RAW_PG_INSERT, (f"raw-{n}", counters[n], PAYLOAD, NOW))
        return 1

    async def batch(_: int) -> int:
        b = next(batches)
        ids = [f"rawb-{b}-{i}" for i in range(BATCH)]
        await conns[0].execute(RAW_PG_BATCH, (NOW, ids, [PAYLOAD] * BATCH))
        return BATCH

    return {RAW_1: tasks(1, insert), RAW_16: tasks(16, insert), RAW_BATCH: tasks(1, batch)}


async def postgres(dsn: str) -> dict[str, float]:
    """Journal and raw figures in a fresh schema of the database at ``dsn``."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"
    journal = await connect(url)
    conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(16)]
    try:
        await conns[0].execute(RAW_PG_TABLE)
        figures = await paired({**journal_measures(journal, "pg"), **pg_raw_measures(conns)})
        figures[READ] = await read_rate(journal)
    finally:
        for conn in conns:
            await conn.close()
        await journal.close()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return figures


# -- SQLite ----------------------------------------------------------------------

RAW_SQLITE_TABLE = """
CREATE TABLE raw_events (position INTEGER PRIMARY KEY, namespace TEXT NOT NULL,
    stream_id TEXT NOT NULL, version INTEGER NOT NULL, type TEXT NOT NULL, payload BLOB NOT NULL,
    metadata TEXT NOT NULL, recorded_at INTEGER NOT NULL, UNIQUE (namespace, stream_id, version))"""
RAW_SQLITE_INSERT = (
    "INSERT INTO raw_events (namespace, stream_id, version, type, payload, metadata, recorded_at)"
    " VALUES ('default', ?, ?, 'Bench', ?, '{\"worker\": \"bench\"}', 0)"
)


def sqlite_raw_measures(conn: sqlite3.Connection) -> dict[str, Measure]:
    """Raw INSERTs with plain sqlite3 (WAL, synchronous=FULL like the backend), in a thread."""
    counter = iter(range(10**9))

    def single() -> float:
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            count += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(RAW_SQLITE_INSERT, (f"raw-{next(counter)}", 1, PAYLOAD))
            conn.execute("COMMIT")
        return count / (time.perf_counter() - start)

    def batched() -> float:
        rows, start = 0, time.perf_counter()
        while time.perf_counter() - start < SECONDS:
            b = next(counter)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(RAW_SQLITE_INSERT, [(f"b{b}-{i}", 1, PAYLOAD) for i in range(BATCH)])
            conn.execute("COMMIT")
            rows += BATCH
        return rows / (time.perf_counter() - start)

    async def in_thread_single() -> float:
        return await anyio.to_thread.run_sync(single)

    async def in_thread_batched() -> float:
        return await anyio.to_thread.run_sync(batched)

    return {RAW_1: in_thread_single, RAW_BATCH: in_thread_batched}


async def sqlite(directory: Path) -> dict[str, float]:
    """Journal figures on a new file, raw figures on another file in the same directory."""
    journal = await connect(f"sqlite:///{directory / 'journal.db'}")
    raw = sqlite3.connect(directory / "raw.db", isolation_level=None, check_same_thread=False)
    try:
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute(RAW_SQLITE_TABLE)
        measures = journal_measures(journal, "sqlite")
        del measures[SINGLE_16]  # one SQLite connection: nothing raw to compare with
        figures = await paired({**measures, **sqlite_raw_measures(raw)})
        figures[READ] = await read_rate(journal)
    finally:
        raw.close()
        await journal.close()
    return figures


# -- report ----------------------------------------------------------------------


def report(name: str, figures: dict[str, float]) -> None:
    """Print the figures and the journal/raw ratios against their targets."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{name} (medians of {ROUNDS} rounds of {SECONDS:g} s; load average after: {load})")
    for label, value in figures.items():
        print(f"  {label:<48} {value:>12,.0f}")
    for journal_label, raw_label, target in PAIRS:
        if journal_label in figures and raw_label in figures:
            ratio = figures[journal_label] / figures[raw_label]
            verdict = "ok" if ratio >= target else "BELOW TARGET"
            print(f"  {journal_label} / {raw_label}: {ratio:.2f} (target >= {target:.2f}) {verdict}")


async def main() -> int:
    dsn = os.environ.get("SAGALOG_TEST_DSN")
    if dsn:
        report("PostgreSQL", await postgres(dsn))
    else:
        print("SAGALOG_TEST_DSN is not set: PostgreSQL skipped (run `make bench BENCH=journal`)")
    with tempfile.TemporaryDirectory(prefix="sagalog-bench-") as directory:
        report("SQLite (WAL, synchronous=FULL)", await sqlite(Path(directory)))
    return 0


if __name__ == "__main__":
    # uvloop, as the worker runs (DESIGN: dependencies).
    sys.exit(anyio.run(main, backend_options={"use_uvloop": True}))
