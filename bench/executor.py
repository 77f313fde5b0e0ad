"""Executor speed: replaying a long history, and running small sagas end to end.

Run with ``make bench BENCH=executor`` (sets ``SAGALOG_TEST_DSN`` to a fresh
database) or ``python -P bench/executor.py``. It prints:

* replay: events/s driving a workflow through a recorded 10,000-step history
  with :func:`sagalog.replay.executor.replay_history` (no step runs), both from
  stored events (decoding included) and from events already decoded;
* in-process throughput of a 3-step no-op saga on SQLite and PostgreSQL with
  one :class:`~sagalog.engine.runner.Runner`: workflows/s with many instances in
  flight; and, for instances run one at a time, the per-step overhead
  (p50/p99): the time from one no-op step's return to the next step's start,
  which is everything the engine does per step (record the outcome, feed it
  to the workflow, append the next decision and attempt, launch it);
* the same per-step time early and late in one long live workflow
  (``BENCH_LONG`` steps, in memory): it must not grow with the history.

Targets (issue 3): replay >= 100,000 events/s; per-step overhead on PostgreSQL
p50 < 2 ms.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from collections.abc import Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import psycopg
from sagalog.engine import Registry
from sagalog.replay import StepCall, WorkflowEvent, encode_event, replay_history

# The event classes are not re-exported by sagalog.replay: the benchmark
# builds a history by hand, as only the executor does otherwise.
from sagalog.replay.events import (
    StepCompleted,
    StepScheduled,
    StepStarted,
    WorkflowCompleted,
    WorkflowStarted,
)
from sagalog.storage import Event, encode_value

from sagalog import Retry, Runner, open_journal, step, step_context, workflow

STEPS = 10_000
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
SAGAS = int(os.environ.get("BENCH_SAGAS", "300"))
SOLO = int(os.environ.get("BENCH_SOLO", "300"))
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- replay ---------------------------------------------------------------------------


def long_workflow(ctx: Any, n: int) -> Generator[Any, Any, int]:
    """The replayed workflow: ``n`` steps one after the other, summing their results."""
    total = 0
    for i in range(n):
        total += yield StepCall("noop", (i,))
    return total


def long_history(n: int) -> list[tuple[int, WorkflowEvent]]:
    """What a live run of ``long_workflow(n)`` records: scheduled, started, completed per step."""
    events: list[WorkflowEvent] = [WorkflowStarted("long", encode_value([n]))]
    for i in range(n):
        args = encode_value([[i], {}])
        events += [StepScheduled(i, "noop", args), StepStarted(i, 1), StepCompleted(i, 1, encode_value(i))]
    events.append(WorkflowCompleted(encode_value(sum(range(n)))))
    return list(enumerate(events, start=1))


def stored(pairs: list[tuple[int, WorkflowEvent]]) -> list[Event]:
    """The pairs as the journal hands them back (encoded payloads, metadata)."""
    out = []
    for version, event in pairs:
        new = encode_event(event, {"worker": "bench"})
        out.append(Event(version, "wf-long", version, new.type, new.payload, new.metadata, "default", NOW))
    return out


def best_rate(label: str, events: list[Any]) -> float:
    """Best of REPEAT replays, in events/s; checks the replay reached the recorded end."""
    best = float("inf")
    for _ in range(REPEAT):
        start = time.perf_counter()
        executor = replay_history(long_workflow, [STEPS], events)
        best = min(best, time.perf_counter() - start)
        if executor.status != "completed":
            raise SystemExit(f"{label}: replay ended {executor.status}, expected completed")
    return len(events) / best


def replay_figures() -> dict[str, float]:
    """Replay speed from decoded and from stored events."""
    pairs = long_history(STEPS)
    return {
        f"replay events/s, {STEPS:,}-step history, stored events (decode included)": best_rate(
            "stored", stored(pairs)
        ),
        f"replay events/s, {STEPS:,}-step history, decoded events": best_rate("decoded", pairs),
    }


# --- end to end -----------------------------------------------------------------------

registry = Registry()
marks: dict[str, list[tuple[float, float]]] = {}
"""Per instance, each step call's (entry, exit) perf_counter times."""


@step(name="bench.noop", registry=registry, retry=Retry.none())
async def noop(i: int) -> int:
    """Does nothing but note when it ran."""
    entered = time.perf_counter()
    context = step_context()
    marks.setdefault(context.instance_id, []).append((entered, time.perf_counter()))
    return i


@workflow(name="bench.three_steps", registry=registry)
def three_steps(ctx: Any, n: int) -> Generator[Any, Any, int]:
    """The measured saga: three no-op steps in a row."""
    total = 0
    for i in range(3):
        total += yield noop(n + i)
    return total


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def saga_figures(url: str) -> dict[str, float]:
    """Throughput of SAGAS instances in flight, and per-step overhead of SOLO instances run alone."""
    marks.clear()  # instance ids repeat from one backend to the next
    async with open_journal(url) as journal:
        runner = Runner(journal, registry, snapshot_every=0)
        for warm in range(5):
            await runner.start(three_steps, warm, id=f"warm-{warm}")
        await runner.run_until_idle()

        start = time.perf_counter()
        ids = [await runner.start(three_steps, n, id=f"many-{n}") for n in range(SAGAS)]
        while await runner.run_until_idle(limit=100):
            pass
        elapsed = time.perf_counter() - start
        done = sum([(await runner.describe(i)).status == "completed" for i in ids])
        if done != SAGAS:
            raise SystemExit(f"{url}: only {done} of {SAGAS} sagas completed")

        # Overhead of one step: from one step's return to the next one's start,
        # i.e. record the outcome, replay-decide, append, launch the next attempt.
        gaps: list[float] = []
        whole: list[float] = []
        for n in range(SOLO):
            began = time.perf_counter()
            instance = await runner.start(three_steps, n, id=f"solo-{n}")
            await runner.advance(instance)
            whole.append(time.perf_counter() - began)
            calls = marks[instance]
            gaps += [calls[k + 1][0] - calls[k][1] for k in range(len(calls) - 1)]
    return {
        f"workflows/s, {SAGAS} three-step sagas in flight": SAGAS / elapsed,
        "per-step overhead p50, ms": percentile(gaps, 0.50) * 1000,
        "per-step overhead p99, ms": percentile(gaps, 0.99) * 1000,
        "one saga alone (start to completed) p50, ms": percentile(whole, 0.50) * 1000,
    }


async def postgres_figures(dsn: str) -> dict[str, float]:
    """Saga figures in a fresh schema of the database at ``dsn``."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        return await saga_figures(
            f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"
        )
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def report(title: str, figures: dict[str, float]) -> None:
    """Print one section of figures."""
    print(title)
    for name, value in figures.items():
        print(f"  {name}: {value:,.2f}" if value < 100 else f"  {name}: {value:,.0f}")
    sys.stdout.flush()


LONG = int(os.environ.get("BENCH_LONG", "6000"))


@workflow(name="bench.long", registry=registry)
def long_live(ctx: Any, n: int) -> Generator[Any, Any, int]:
    """``n`` no-op steps in a row, run live."""
    for i in range(n):
        yield noop(i)
    return n


async def long_figures() -> dict[str, float]:
    """Median step-to-step time over the first and the last 500 steps of a long live run."""
    marks.clear()
    async with open_journal("memory://") as journal:
        runner = Runner(journal, registry, snapshot_every=0)
        instance = await runner.start(long_live, LONG, id="long")
        await runner.advance(instance)
        calls = marks[instance]
    gaps = [calls[k + 1][0] - calls[k][0] for k in range(len(calls) - 1)]
    return {
        f"per-step time, steps 1-500 of {LONG:,}, ms": percentile(gaps[:500], 0.50) * 1000,
        f"per-step time, last 500 steps of {LONG:,}, ms": percentile(gaps[-500:], 0.50) * 1000,
    }


async def main() -> None:
    """Run every figure and print it."""
    replay = replay_figures()
    report("Replay (no step runs)", replay)
    print(f"  target >= 100,000 events/s: {'met' if min(replay.values()) >= 100_000 else 'MISSED'}")
    report("A long live workflow (in memory)", await long_figures())
    with tempfile.TemporaryDirectory() as directory:
        report("SQLite (WAL file)", await saga_figures(f"sqlite:///{Path(directory) / 'journal.db'}"))
    dsn = os.environ.get("SAGALOG_TEST_DSN")
    if not dsn:
        print("PostgreSQL: skipped (SAGALOG_TEST_DSN is not set; run `make bench BENCH=executor`)")
        return
    pg = await postgres_figures(dsn)
    report("PostgreSQL", pg)
    p50 = pg["per-step overhead p50, ms"]
    print(f"  target per-step overhead p50 < 2 ms: {'met' if p50 < 2 else 'MISSED'}")


if __name__ == "__main__":
    anyio.run(main)
