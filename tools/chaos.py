"""Chaos harness: sagas with random failures while workers are killed at random.

Usage (PostgreSQL; the harness makes its own namespace, so any database works)::

    .venv/bin/python tools/pgtest.py -- .venv/bin/python -P tools/chaos.py --duration 60
    .venv/bin/python -P tools/chaos.py --db postgresql://... --workers 3 --sagas 300

It starts ``--workers`` worker processes (``sagalog worker chaos_workflows``),
starts ``--sagas`` order sagas (some flaky, some failing for good at a random
step, so they compensate), and for the first two thirds of ``--duration``
kills a random worker with SIGKILL every few seconds and starts a new one.
Then it waits for every saga to end, stops the workers with SIGTERM, checks
the invariants below over the whole journal and prints a summary. The exit
status is 0 when every invariant holds.

Invariants:

* every saga ends in exactly one terminal state, and that event is its last;
* every stream's versions are 1..n with positions increasing; the global
  order has no gap, duplicate or reordering of any stream;
* no step runs again after its completion was recorded (each execution is
  logged by the step itself, see ``chaos_workflows.py``);
* each step's completion is recorded at most once;
* compensations undo exactly the completed steps, in reverse order.

The per-stream and global checks are sagalog.testing's (docs/guarantees.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import msgspec

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))  # chaos_workflows, for the client's registry

TERMINAL_EVENTS = {"WorkflowCompleted", "WorkflowFailed", "WorkflowCompensated", "WorkflowCancelled"}


class WorkerProcess:
    """One ``sagalog worker`` subprocess with its own log file; make it with :meth:`spawn`."""

    def __init__(self, name: str, process: anyio.abc.Process, log_path: Path, log: IO[bytes]) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self._log = log

    @classmethod
    async def spawn(
        cls,
        url: str,
        *,
        name: str,
        log_dir: Path,
        namespace: str = "default",
        modules: tuple[str, ...] = ("chaos_workflows",),
        lease: float = 2.0,
        concurrency: int = 50,
        grace: float = 10.0,
        runs: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        """Start ``sagalog worker MODULES`` with ``tools/`` on its PYTHONPATH."""
        path = os.pathsep.join(p for p in [str(TOOLS), os.environ.get("PYTHONPATH", "")] if p)
        env = {**os.environ, "PYTHONPATH": path, **(extra_env or {})}
        if runs is not None:
            env["CHAOS_RUNS"] = str(runs)
        command = [
            sys.executable, "-P", "-m", "sagalog", "worker", *modules,
            "--db", url, "--namespace", namespace, "--lease", str(lease),
            "--concurrency", str(concurrency), "--worker-id", name, "--grace", str(grace),
        ]
        log_path = log_dir / f"{name}.log"
        log = open(log_path, "ab")  # noqa: SIM115, ASYNC230 (closed in wait())
        process = await anyio.open_process(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        return cls(name, process, log_path, log)

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.returncode is None

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to release anything."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        """SIGTERM: the worker drains and releases its leases."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit, killing it after ``timeout``; its exit status."""
        with anyio.move_on_after(timeout):
            await self.process.wait()
        if self.alive:
            self.process.kill()
            await self.process.wait()
        self._log.close()
        return int(self.process.returncode or 0)

    def log_text(self) -> str:
        """Everything the worker logged so far."""
        return self.log_path.read_text(errors="replace")

    async def started(self, timeout: float = 30.0) -> bool:
        """Wait until the worker says it serves (or has exited); False on timeout.

        A worker signalled while Python is still importing dies of the signal
        before it can install its handler; one that serves drains and exits 0.
        """
        with anyio.move_on_after(timeout):
            while True:  # the log is a file: there is nothing to wait on but time
                if not self.alive or f"worker {self.name} on " in self.log_text():
                    return True
                await anyio.sleep(0.05)
        return False


def read_runs(path: Path, field: str = "t") -> dict[tuple[str, str], list[Any]]:
    """Step executions by (order id, step name): when they started (or ``field``, e.g. pid)."""
    runs: dict[tuple[str, str], list[Any]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                runs[(row["id"], row["step"])].append(row[field])
    return runs


class Report(msgspec.Struct):
    """What the checker found."""

    problems: list[str] = msgspec.field(default_factory=list)
    statuses: dict[str, int] = msgspec.field(default_factory=dict)
    events: int = 0
    executions: int = 0
    completions: int = 0
    reruns: int = 0
    """Executions that recorded no completion: failed, flaky, or cut short by a kill."""


async def check_journal(journal: Any, ids: list[str], runs_path: Path | None) -> Report:
    """Check every invariant of the module docstring for instances ``ids``."""
    from sagalog.replay.events import decode_event

    report = Report()
    runs = read_runs(runs_path) if runs_path else {}
    by_stream: dict[str, list[Any]] = {}
    for instance_id in ids:
        events = await journal.read_stream(f"wf-{instance_id}")
        by_stream[f"wf-{instance_id}"] = events
        _check_stream(instance_id, events, report)
        names: dict[int, str] = {}
        for event in events:
            decoded = decode_event(event)
            seq = getattr(decoded, "seq", None)
            name = getattr(decoded, "step", None)
            if seq is not None and isinstance(name, str):
                names[seq] = name
            if event.type in ("StepCompleted", "CompensationCompleted") and seq is not None:
                report.completions += 1
                done_at = event.recorded_at.timestamp()
                late = [t for t in runs.get((instance_id, names.get(seq, "?")), []) if t > done_at]
                if late:
                    report.problems.append(
                        f"{instance_id}: step {names.get(seq)} (#{seq}) ran {len(late)} more time(s) "
                        f"after its completion was recorded at {event.recorded_at.isoformat()}"
                    )
    _check_global(await _read_all(journal), by_stream, report)
    report.executions = sum(len(v) for k, v in runs.items() if k[0] in set(ids))
    report.reruns = max(0, report.executions - report.completions)
    return report


def _check_stream(instance_id: str, events: list[Any], report: Report) -> None:
    from sagalog.testing import check_history, terminal_status

    report.problems.extend(check_history(instance_id, events))
    report.events += len(events)
    status = terminal_status(events)
    report.statuses[status] = report.statuses.get(status, 0) + 1


async def _read_all(journal: Any) -> list[Any]:
    events, after = [], 0
    while True:
        page = await journal.read_all(after, 5000)
        events.extend(page)
        if len(page) < 5000:
            return events
        after = page[-1].position


def _check_global(everything: list[Any], by_stream: dict[str, list[Any]], report: Report) -> None:
    from sagalog.testing import check_global

    report.problems.extend(check_global(everything, by_stream))


def summary(report: Report, seconds: float, kills: int) -> str:
    """The human summary printed at the end."""
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(report.statuses.items()))
    lines = [
        f"chaos: {sum(report.statuses.values())} sagas in {seconds:.1f} s with {kills} worker(s) killed",
        f"  outcomes: {statuses}",
        f"  events: {report.events}; step executions: {report.executions}, completions recorded: "
        f"{report.completions}; executions without a completion (failed, flaky or cut short by a "
        f"kill, then retried): {report.reruns}",
    ]
    if report.problems:
        lines.append(f"  INVARIANTS BROKEN ({len(report.problems)}):")
        lines += [f"    - {p}" for p in report.problems[:50]]
    else:
        lines.append("  every invariant holds")
    return "\n".join(lines)


def make_orders(count: int, rng: random.Random, failure_rate: float, flaky: float) -> list[dict[str, Any]]:
    """Orders whose inputs decide how each saga behaves."""
    run = uuid.uuid4().hex[:6]
    orders = []
    for i in range(count):
        fail_at = rng.choice(["reserve", "charge", "ship"]) if rng.random() < failure_rate else None
        orders.append({"id": f"o{run}-{i}", "work": rng.uniform(0.02, 0.4), "flaky": flaky,
                       "fail_at": fail_at})
    return orders


async def wait_all_terminal(journal: Any, ids: list[str], deadline: float) -> list[str]:
    """Poll until every instance has a terminal event or ``deadline`` passes; the unfinished."""
    from sagalog.errors import OperationalError

    pending = list(ids)
    while pending and time.monotonic() < deadline:
        still = []
        for instance_id in pending:
            try:
                events = await journal.read_stream(f"wf-{instance_id}")
            except OperationalError:  # the database is restarting: look again later
                events = []
            if not events or events[-1].type not in TERMINAL_EVENTS:
                still.append(instance_id)
        pending = still
        if pending:
            await anyio.sleep(0.2)
    return pending


async def feed(client: Any, orders: list[dict[str, Any]], seconds: float) -> None:
    """Start the sagas at an even pace over ``seconds``, so kills land among live work."""
    gap = seconds / max(1, len(orders))
    for order in orders:
        await client.start("chaos_order", order, id=order["id"])
        await anyio.sleep(gap)


async def kill_at_random(
    workers: list[WorkerProcess], spawn: Any, rng: random.Random, until: float, every: float
) -> int:
    """SIGKILL a random live worker every ``every`` seconds or so, replacing it; returns the kills."""
    kills = 0
    while True:
        pause = rng.uniform(every / 2, every * 1.5)
        if time.monotonic() + pause >= until:
            return kills
        await anyio.sleep(pause)
        victim = rng.choice([w for w in workers if w.alive])
        victim.kill()
        await victim.wait()
        kills += 1
        print(f"chaos: killed {victim.name} (kill -9)")
        workers[:] = [w for w in workers if w.alive] + [await spawn()]


async def chaos(args: argparse.Namespace) -> int:
    from sagalog.engine.client import Client
    from sagalog.engine.workflow import load_modules
    from sagalog.storage import connect

    rng = random.Random(args.seed)
    url = args.db or os.environ.get("SAGALOG_DB") or os.environ.get("SAGALOG_TEST_DSN")
    if not url:
        sys.exit("chaos: give --db (or SAGALOG_DB / SAGALOG_TEST_DSN)")
    namespace = f"chaos-{uuid.uuid4().hex[:8]}"
    workdir = Path(args.workdir or f".sagalog/{namespace}")
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (once, before any work)
    runs = workdir / "runs.jsonl"
    root = await connect(url)
    await root.create_namespace(namespace)
    journal = await root.in_namespace(namespace)
    client = Client(journal, load_modules(["chaos_workflows"]))
    spawned = 0

    async def spawn() -> WorkerProcess:
        nonlocal spawned
        spawned += 1
        return await WorkerProcess.spawn(url, namespace=namespace, lease=args.lease, runs=runs,
                                         log_dir=workdir, name=f"chaos-w{spawned}",
                                         concurrency=args.concurrency)

    workers = [await spawn() for _ in range(args.workers)]
    began = time.monotonic()
    orders = make_orders(args.sagas, rng, args.failure_rate, args.flaky)
    print(f"chaos: starting {len(orders)} sagas in namespace {namespace}; logs in {workdir}")
    async with anyio.create_task_group() as tg:
        tg.start_soon(feed, client, orders, args.duration / 2)
        kills = await kill_at_random(workers, spawn, rng, began + args.duration * 2 / 3, args.kill_every)
    unfinished = await wait_all_terminal(journal, [o["id"] for o in orders], began + args.duration)
    for worker in workers:
        await worker.started()
        worker.terminate()
    codes = [await worker.wait() for worker in workers]
    report = await check_journal(journal, [o["id"] for o in orders], runs)
    if unfinished:
        report.problems.insert(0, f"{len(unfinished)} saga(s) unfinished at the deadline: {unfinished[:3]}")
    if any(codes):
        report.problems.append(f"workers exited with {codes} after SIGTERM (want 0)")
    print(summary(report, time.monotonic() - began, kills))
    await root.close()
    return 1 if report.problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: SAGALOG_DB or SAGALOG_TEST_DSN)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--sagas", type=int, default=200)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, hard bound")
    parser.add_argument("--kill-every", type=float, default=3.0, help="mean seconds between kills")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--failure-rate", type=float, default=0.2, help="share of sagas that compensate")
    parser.add_argument("--flaky", type=float, default=0.1, help="chance an attempt fails and is retried")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", help="where logs and the execution log go")
    args = parser.parse_args()
    return anyio.run(chaos, args)


if __name__ == "__main__":
    sys.exit(main())
