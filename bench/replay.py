"""Replay tool speed: ``verify`` over stored histories, ``show`` of a very long stream.

Run with ``make bench BENCH=replay`` (sets ``SAGALOG_TEST_DSN`` to a fresh
database) or ``python -P bench/replay.py``. On PostgreSQL (a fresh schema) it
prints:

* verify: events/s (and histories/s) of :func:`sagalog.replay.verify.verify_journal`
  over 1,000 stored histories of a 10-step saga (32 events each), reading
  from the journal and replaying through the executor, no step run; also the
  same histories verified from an export file;
* show: time to the first printed line and total time of
  :func:`sagalog.replay.inspect.print_timeline` over a 100,000-event stream,
  with the peak Python memory it allocated (tracemalloc): the output is
  streamed, so the peak stays flat however long the stream is.

Targets (issue 6): none fixed; the figures go to docs/performance.md.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import psycopg
from sagalog.engine.workflow import Registry, step, workflow
from sagalog.replay import events as wf
from sagalog.replay.executor import Executor
from sagalog.replay.inspect import print_timeline
from sagalog.replay.transfer import export_histories
from sagalog.replay.verify import verify_file, verify_journal
from sagalog.storage import NO_STREAM, Journal, NewEvent, connect, encode_value

from sagalog.cli.replay import registry_code

HISTORIES = int(os.environ.get("BENCH_HISTORIES", "1000"))
STEPS = 10
LONG = int(os.environ.get("BENCH_LONG_STREAM", "100000"))

REGISTRY = Registry()


@step(name="bench.work", registry=REGISTRY)
def work(n: int) -> int:
    """A step that does nothing much (it never runs during verify)."""
    return n * 2


@workflow(name="bench.saga", registry=REGISTRY)
def saga(ctx: Any, steps: int) -> Generator[Any, Any, int]:
    """``steps`` steps one after the other, summing their results."""
    total = 0
    for n in range(steps):
        total += yield work(n)
    return total


def record_history() -> list[NewEvent]:
    """One history of ``saga(STEPS)``, made by driving THE executor and completing each step."""
    code = REGISTRY.workflow("bench.saga")
    executor = Executor(code.run, "bench", code.name, decode_args=code.decode_args)
    pending: list[wf.WorkflowEvent] = [
        wf.WorkflowStarted(workflow=code.name, args=code.encode_args((STEPS,)))
    ]
    history: list[wf.WorkflowEvent] = []
    while pending:
        executor.feed([(len(history) + n, e) for n, e in enumerate(pending, start=1)])
        history += pending + executor.decide()
        pending = []
        for task in executor.open_steps():
            (n,), _ = REGISTRY.step(task.name).decode_kwargs(task.args)
            pending += [
                wf.StepStarted(seq=task.seq, attempt=1),
                wf.StepCompleted(seq=task.seq, attempt=1, result=encode_value(work.fn(n))),
            ]
    return [wf.encode_event(e) for e in history]


async def fill_histories(journal: Journal) -> int:
    """Store HISTORIES copies of one saga history; returns the events stored."""
    history = record_history()
    async with anyio.create_task_group() as group:
        for n in range(HISTORIES):
            group.start_soon(journal.append, f"wf-bench-{n}", NO_STREAM, history)
    return HISTORIES * len(history)


async def bench_verify(journal: Journal) -> None:
    events = await fill_histories(journal)
    code = registry_code(REGISTRY)
    best = None
    for _ in range(3):
        report = await verify_journal(journal, **code)
        assert report.passed and report.events == events, report
        best = report if best is None or report.seconds < best.seconds else best
    assert best is not None
    print(
        f"verify (journal): {best.replayed} histories, {best.events} events in {best.seconds:.2f} s: "
        f"{best.events_per_second:,.0f} events/s, {best.replayed / best.seconds:,.0f} histories/s"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "histories.jsonl"
        with path.open("w") as out:
            await export_histories(journal, None, out)
        report = verify_file(path, **code)
        assert report.passed
        print(
            f"verify (file):    {report.replayed} histories, {report.events} events in "
            f"{report.seconds:.2f} s: {report.events_per_second:,.0f} events/s"
        )


class FirstLine(io.TextIOBase):
    """A sink that notes when the first timeline line arrives and counts lines."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.first: float | None = None
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        if self.first is None and self.lines >= 3:  # title, header, first event
            self.first = time.perf_counter() - self.start
        return len(text)


async def bench_show(journal: Journal) -> None:
    payload = wf.encode_event(wf.StepCompleted(seq=1, attempt=1, result=encode_value({"ok": True})))
    batch = [NewEvent(payload.type, payload.payload, payload.metadata)] * 1000
    for start in range(0, LONG, len(batch)):
        await journal.append("wf-long", start, batch)
    began = time.perf_counter()
    sink = FirstLine(began)
    shown = await print_timeline(journal, "wf-long", out=sink)  # type: ignore[arg-type]
    total = time.perf_counter() - began
    assert shown == LONG
    # A second pass under tracemalloc (which slows allocation down several times) for the peak.
    tracemalloc.start()
    await print_timeline(journal, "wf-long", out=FirstLine(began))  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"show: {shown:,} events; first line after {1000 * (sink.first or 0):.1f} ms, "
        f"all in {total:.2f} s ({shown / total:,.0f} events/s), peak Python memory {peak / 2**20:.1f} MiB"
    )


async def on_postgres(dsn: str) -> None:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-csearch_path={schema}')}"
    try:
        journal = await connect(url)
        try:
            print(f"PostgreSQL ({HISTORIES} histories of {2 + 3 * STEPS} events; a {LONG:,}-event stream)")
            await bench_verify(journal)
            await bench_show(journal)
        finally:
            await journal.close()
    finally:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def main() -> int:
    dsn = os.environ.get("SAGALOG_TEST_DSN")
    if not dsn:
        print("SAGALOG_TEST_DSN is not set: run `make bench BENCH=replay`", file=sys.stderr)
        return 1
    await on_postgres(dsn)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
