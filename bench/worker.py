"""Worker processes on PostgreSQL: throughput, latency, recovery time, memory.

Run with ``make bench BENCH=worker`` (a fresh database from tools/pgtest.py)
or ``python -P bench/worker.py`` with ``SAGALOG_TEST_DSN`` set. Every phase
works in a namespace of its own. It prints:

* the raw INSERT+COMMIT rate of the same database (one connection, one row per
  commit): the physical limit a sequential saga runs into;
* latency of a 3-step no-op saga run one at a time, ``start`` -> ``result``,
  as ``start()`` then ``result()`` and as one ``Client.execute()``
  (p50/p99), i.e. the one-at-a-time rate;
* throughput of the same saga with many in flight (``BENCH_SAGAS`` started
  while 1 and then 2 worker processes drain them; workflows/s, steps/s);
* the same drained by 1 and 2 worker processes with the sagas started
  beforehand, the workers stopped (SIGSTOP) meanwhile and let go (SIGCONT)
  when the clock starts: what the workers do alone, without the client on
  the same cores (with the worker and PostgreSQL CPU a saga);
* time from ``kill -9`` of a worker to all of its instances resumed by another;
* resident memory of a worker holding ``BENCH_SLEEPERS`` sleeping sagas.

Targets (issue 4): >= 350 workflows/s one at a time, >= 2,000 workflows/s with
many in flight, recovery within lease + 2 s, 10,000 sleeping sagas < 100 MB.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from chaos import WorkerProcess, read_runs
from sagalog.engine.client import Client
from sagalog.engine.workflow import load_modules
from sagalog.storage import Journal, connect

SAGAS = int(os.environ.get("BENCH_SAGAS", "3000"))
SOLO = int(os.environ.get("BENCH_SOLO", "200"))
SLEEPERS = int(os.environ.get("BENCH_SLEEPERS", "10000"))
LEASE = 2.0
LOGS = Path(tempfile.mkdtemp(prefix="sagalog-bench-"))


def dsn() -> str:
    url = os.environ.get("SAGALOG_TEST_DSN")
    if not url:
        sys.exit("bench/worker.py: set SAGALOG_TEST_DSN (make bench BENCH=worker does)")
    return url


def raw_commit_rate(url: str, seconds: float = 2.0) -> float:
    """INSERT + COMMIT of one small row per transaction, on one connection.

    Into an ordinary table: a temporary one is not WAL-logged, so its commits
    skip the flush that every journal commit waits for.
    """
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload bytea)")
        conn.commit()
        try:
            count, began = 0, time.perf_counter()
            while time.perf_counter() - began < seconds:
                conn.execute(f"INSERT INTO {table} (payload) VALUES (%s)", (b"x" * 64,))
                conn.commit()
                count += 1
            return count / (time.perf_counter() - began)
        finally:
            conn.execute(f"DROP TABLE {table}")
            conn.commit()


async def namespace(root: Journal) -> Journal:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    await root.create_namespace(name)
    return await root.in_namespace(name)


async def workers(url: str, ns: str, count: int, **kw: Any) -> list[WorkerProcess]:
    spawned = [
        await WorkerProcess.spawn(url, namespace=ns, name=f"{ns}-w{i}", log_dir=LOGS, **kw)
        for i in range(count)
    ]
    for proc in spawned:  # imported, connected and claiming before any clock starts
        while f"worker {proc.name} on" not in proc.log_text():  # noqa: ASYNC110 (another process)
            await anyio.sleep(0.05)
    return spawned


PROBLEMS: list[str] = []


async def stop(procs: list[WorkerProcess]) -> None:
    """SIGTERM the workers; remember any error they logged or a bad exit status."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        status = await proc.wait()
        lines = [  # JSON lines (the log is a file), or text
            ln for ln in proc.log_text().splitlines()
            if '"level":"ERROR"' in ln or " ERROR " in ln or "Traceback" in ln
        ]
        PROBLEMS.extend(f"{proc.name}: {ln}" for ln in lines)
        if status != 0:
            PROBLEMS.append(f"{proc.name} exited with {status}")


async def latency(
    url: str, root: Journal, client_of: Any, execute: bool = False
) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, workflows/s, worker CPU ms a saga) of start -> result, one saga at a time
    (``execute``: in one ``Client.execute`` call)."""
    journal = await namespace(root)
    procs = await workers(url, journal.namespace, 1, concurrency=50, lease=30.0)
    client = client_of(journal)
    times = []
    cpu_before = cpu_seconds(procs[0].process.pid)
    try:
        for i in range(SOLO):
            began = time.perf_counter()
            if execute:
                await client.execute("noop_saga", i, timeout=30)
            else:
                instance = await client.start("noop_saga", i)
                await client.result(instance, 30)
            times.append(time.perf_counter() - began)
    finally:
        cpu = cpu_seconds(procs[0].process.pid) - cpu_before
        await stop(procs)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49] * 1000, cuts[98] * 1000, len(times) / sum(times), cpu / len(times) * 1000


async def throughput(
    url: str, root: Journal, client_of: Any, processes: int
) -> tuple[float, float, float]:
    """(starts/s, workflows/s, worker CPU ms per saga) of ``SAGAS`` no-op sagas."""
    journal = await namespace(root)
    client = client_of(journal)
    procs = await workers(url, journal.namespace, processes, concurrency=500, lease=30.0)
    cpu_before = workers_cpu(procs)
    began = time.perf_counter()
    try:
        await start_many(client, SAGAS, "noop_saga", lambda i: i)
        started = time.perf_counter() - began
        await until_terminal(journal)
    finally:
        elapsed = time.perf_counter() - began
        cpu = workers_cpu(procs) - cpu_before
        await stop(procs)
    return SAGAS / started, SAGAS / elapsed, cpu / SAGAS * 1000


async def drain(url: str, root: Journal, client_of: Any, processes: int) -> tuple[float, float, float | None]:
    """(workflows/s, worker CPU ms a saga, PostgreSQL CPU ms a saga or None) of ``processes``
    workers draining ``SAGAS`` no-op sagas that were all started before the clock starts."""
    journal = await namespace(root)
    client = client_of(journal)
    procs = await workers(url, journal.namespace, processes, concurrency=500, lease=30.0)
    for proc in procs:  # connected and listening, but doing nothing while the sagas start
        proc.process.send_signal(signal.SIGSTOP)
    try:
        await start_many(client, SAGAS, "noop_saga", lambda i: i)
        cpu_before = workers_cpu(procs)
        pg_before = postgres_cpu_seconds()
        began = time.perf_counter()
        for proc in procs:
            proc.process.send_signal(signal.SIGCONT)
        await until_terminal(journal)
        elapsed = time.perf_counter() - began
        cpu = workers_cpu(procs) - cpu_before
        pg_after = postgres_cpu_seconds()
    finally:
        for proc in procs:
            proc.process.send_signal(signal.SIGCONT)
        await stop(procs)
    pg = None if pg_before is None or pg_after is None else (pg_after - pg_before) / SAGAS * 1000
    return SAGAS / elapsed, cpu / SAGAS * 1000, pg


async def start_many(client: Client, count: int, workflow: str, args: Any) -> None:
    """Start ``count`` instances of ``workflow`` (with ``args(i)``), 64 at a time."""
    async with anyio.create_task_group() as tg:
        limiter = anyio.CapacityLimiter(64)

        async def start(i: int) -> None:
            async with limiter:
                await client.start(workflow, args(i))

        for i in range(count):
            tg.start_soon(start, i)


async def until_terminal(journal: Journal) -> None:
    """Wait until the work index is empty (every instance ended)."""
    while await journal.next_ready_at() is not None:  # noqa: ASYNC110 (polling the database)
        await anyio.sleep(0.02)


async def recovery(url: str, root: Journal, client_of: Any) -> tuple[float, int]:
    """Seconds from kill -9 until every instance the victim held has a newer event."""
    journal = await namespace(root)
    runs = LOGS / f"{journal.namespace}-runs.jsonl"
    victim = (await workers(url, journal.namespace, 1, lease=LEASE, runs=runs, concurrency=100))[0]
    client = client_of(journal)
    ids = [
        await client.start("chaos_order", {"id": f"r{i}", "work": 30.0, "flaky": 0.0}, id=f"r{i}")
        for i in range(50)
    ]
    # Every saga inside its 30 s first step:
    while len(read_runs(runs)) < len(ids):  # noqa: ASYNC110 (another process)
        await anyio.sleep(0.05)
    versions = {i: await journal.stream_version(f"wf-{i}") for i in ids}
    rescuer = (await workers(url, journal.namespace, 1, lease=LEASE, runs=runs, concurrency=100))[0]
    victim.kill()
    killed = time.perf_counter()
    await victim.wait()
    pending = set(ids)
    while pending:
        pending = {i for i in pending if await journal.stream_version(f"wf-{i}") == versions[i]}
        await anyio.sleep(0.02)
    took = time.perf_counter() - killed
    await stop([rescuer])
    return took, len(ids)


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu(procs: list[WorkerProcess]) -> float:
    """User + system CPU the worker processes have used so far."""
    return sum(cpu_seconds(p.process.pid) for p in procs)


def postgres_cpu_seconds() -> float | None:
    """User + system CPU of every PostgreSQL process on this machine (None: none found here)."""
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        if "(postgres)" in stat:
            found = True
            total += cpu_seconds(int(entry.name))
    return total if found else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sleepers(url: str, root: Journal, client_of: Any) -> tuple[float, float]:
    """(idle RSS MB, RSS MB holding SLEEPERS sleeping sagas) of one worker process."""
    journal = await namespace(root)
    proc = (await workers(url, journal.namespace, 1, concurrency=500, lease=30.0))[0]
    idle = rss_mb(proc.process.pid)
    client = client_of(journal)
    await start_many(client, SLEEPERS, "sleeper", lambda _: 3600.0)
    # All asleep when every work-index row is due an hour from now.
    while True:
        due = await journal.next_ready_at()
        if due is not None and (due - journal.clock.now()).total_seconds() > 60:
            break
        await anyio.sleep(0.2)
    held = rss_mb(proc.process.pid)
    await stop([proc])
    return idle, held


async def main() -> None:
    url = dsn()
    root = await connect(url)
    registry = load_modules(["chaos_workflows"])

    def client_of(journal: Journal) -> Client:
        return Client(journal, registry)

    print(f"worker benchmark on {root.description} (logs in {LOGS})")
    print(f"raw INSERT+COMMIT, one connection: {raw_commit_rate(url):,.0f} commits/s")
    print(f"machine: load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for execute in (False, True):
        p50, p99, rate, cpu = await latency(url, root, client_of, execute)
        how = "Client.execute" if execute else "start() then result()"
        print(f"one at a time, {how} of a 3-step no-op saga: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
              f"({rate:,.0f} workflows/s, {cpu:.2f} ms worker CPU a saga)")
    for processes in (1, 2):
        starts, wps, cpu = await throughput(url, root, client_of, processes)
        print(f"{SAGAS} sagas started at {starts:,.0f}/s with {processes} worker process(es): "
              f"{wps:,.0f} workflows/s, {wps * 3:,.0f} steps/s, {cpu:.2f} ms worker CPU a saga")
    for processes in (1, 2):
        wps, cpu, pg = await drain(url, root, client_of, processes)
        postgres = "n/a" if pg is None else f"{pg:.2f} ms"
        print(f"{SAGAS} sagas started beforehand, drained by {processes} worker process(es): "
              f"{wps:,.0f} workflows/s, {wps * 3:,.0f} steps/s, {cpu:.2f} ms worker CPU "
              f"and {postgres} PostgreSQL CPU a saga")
    took, count = await recovery(url, root, client_of)
    print(f"kill -9 of a worker holding {count} instances: all resumed by another after {took:.2f} s "
          f"(lease {LEASE:g} s)")
    idle, held = await sleepers(url, root, client_of)
    print(f"worker memory: {idle:.0f} MB idle, {held:.0f} MB holding {SLEEPERS:,} sleeping sagas")
    print(f"errors logged by the workers: {len(PROBLEMS)}")
    for problem in PROBLEMS[:10]:
        print(f"  {problem}")
    await root.close()


if __name__ == "__main__":
    anyio.run(main)
