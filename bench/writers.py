"""Appends through the Journal by 1 to 1,024 concurrent writers, on PostgreSQL.

Run with ``make bench BENCH=writers`` (sets ``SAGALOG_TEST_DSN`` to a fresh
database) or ``python -P bench/writers.py``. Each writer appends one event
at a time with ``ANY_VERSION`` to a stream of its own, as in
``bench/journal.py``'s "256 writers" line; this one covers the writer
counts around it, since the group committer's batching depends on how many
appenders wait. Each figure is printed next to the raw batched INSERT of
256 rows per commit (the limit ``bench/journal.py`` compares grouped
appends with), measured in alternating rounds, and with the client's CPU
per append.

``BENCH_WRITERS`` (comma-separated) picks the writer counts; ``BENCH_ROUNDS``
and ``BENCH_SECONDS`` as in ``bench/journal.py``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import quote

import anyio
import psycopg
from sagalog.storage import ANY_VERSION, Journal, NewEvent, connect

SECONDS = float(os.environ.get("BENCH_SECONDS", "0.5"))  # per round
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
WRITERS = [int(w) for w in os.environ.get("BENCH_WRITERS", "1,16,64,256,1024").split(",")]
BATCH = 256
PAYLOAD = b"x" * 100
NOW = datetime(2026, 1, 1, tzinfo=UTC)
EVENT = (NewEvent("Bench", PAYLOAD, {"worker": "bench"}),)

RAW_TABLE = "CREATE TABLE raw_events (LIKE events INCLUDING ALL)"
RAW_BATCH = """
INSERT INTO raw_events (namespace, stream_id, version, type, payload, metadata, recorded_at)
SELECT 'default', sid, 1, 'Bench', pay, '{"worker": "bench"}', %s
FROM unnest(%b::text[], %b::bytea[]) AS t(sid, pay)"""

Work = Callable[[int], Awaitable[int]]


async def measure(writers: int, work: Work) -> tuple[float, float]:
    """``work(writer)`` in ``writers`` tasks for SECONDS: (units per second, client CPU µs per unit)."""
    done = [0] * writers
    deadline = time.perf_counter() + SECONDS

    async def loop(n: int) -> None:
        while time.perf_counter() < deadline:
            done[n] += await work(n)

    start, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for n in range(writers):
            tg.start_soon(loop, n)
    units = sum(done)
    return units / (time.perf_counter() - start), (time.process_time() - cpu) / units * 1e6


def appender(journal: Journal, writers: int) -> Work:
    """One writer's append: one event, ``ANY_VERSION``, to its own stream."""

    async def work(n: int) -> int:
        await journal.append(f"w{writers}-{n}", ANY_VERSION, EVENT)
        return 1

    return work


async def run(dsn: str) -> None:
    """Alternating rounds of every writer count and of the raw batched INSERT; medians printed."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"
    journal = await connect(url)
    raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
    batches = iter(range(10**9))

    async def raw_batch(_: int) -> int:
        b = next(batches)
        ids = [f"rawb-{b}-{i}" for i in range(BATCH)]
        await raw.execute(RAW_BATCH, (NOW, ids, [PAYLOAD] * BATCH))
        return BATCH

    found: dict[int, list[tuple[float, float, float]]] = {w: [] for w in WRITERS}
    raws: list[float] = []
    try:
        await raw.execute(RAW_TABLE)
        for _ in range(ROUNDS):
            for writers in WRITERS:
                commits, started = journal.group_commits, time.perf_counter()
                rate, cpu = await measure(writers, appender(journal, writers))
                made = journal.group_commits - commits
                found[writers].append((rate, cpu, rate * (time.perf_counter() - started) / max(made, 1)))
                raws.append((await measure(1, raw_batch))[0])
    finally:
        await raw.close()
        await journal.close()
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    limit = statistics.median(raws)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"PostgreSQL, medians of {ROUNDS} rounds of {SECONDS:g} s; load average after: {load}")
    print(f"  raw batched INSERT rows/s ({BATCH} per commit): {limit:,.0f}")
    for writers, values in found.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        size = statistics.median(v[2] for v in values)
        print(f"  {writers:>5} writers: {rate:>8,.0f} appends/s  ratio {rate / limit:.2f}"
              f"  client CPU {cpu:5.1f} µs/append  ~{size:5.1f} appends/commit")


def main() -> int:
    dsn = os.environ.get("SAGALOG_TEST_DSN")
    if not dsn:
        print("SAGALOG_TEST_DSN is not set (run `make bench BENCH=writers`)")
        return 1
    # uvloop, as the worker runs (DESIGN: dependencies).
    anyio.run(run, dsn, backend_options={"use_uvloop": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
