"""Crash recovery with real worker processes on a real PostgreSQL.

Workers are ``sagalog worker chaos_workflows`` subprocesses (the module is in
``tools/``); each step logs its executions to a file, and
:func:`chaos.check_journal` checks the invariants over the whole journal:
one terminal state per saga, streams and global order intact, no step run
again after its completion was recorded.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from chaos import WorkerProcess, check_journal, make_orders, read_runs, wait_all_terminal
from sagalog.engine.client import Client
from sagalog.engine.workflow import load_modules
from sagalog.storage import Journal, connect

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.postgres]


async def start_orders(journal: Journal, count: int, seed: int, **kw: Any) -> list[str]:
    client = Client(journal, load_modules(["chaos_workflows"]))
    orders = make_orders(count, random.Random(seed), **kw)
    for order in orders:
        order["work"] = random.Random(order["id"]).uniform(0.05, 0.3)
        await client.start("chaos_order", order, id=order["id"])
    return [o["id"] for o in orders]


async def executions_by(runs: Path, pid: int, at_least: int, timeout: float = 20.0) -> None:
    """Wait until process ``pid`` has started ``at_least`` step executions."""
    with anyio.fail_after(timeout):
        while sum(p == pid for ps in read_runs(runs, "pid").values() for p in ps) < at_least:  # noqa: ASYNC110
            await anyio.sleep(0.02)


def both_ran(runs: Path, first: int, second: int) -> list[tuple[str, str]]:
    """(order, step) pairs executed by both processes (a step taken over mid-way)."""
    return [k for k, pids in read_runs(runs, "pid").items() if first in pids and second in pids]


async def test_kill_9_one_of_two_workers_and_the_other_takes_over(pg_url: str, tmp_path: Path) -> None:
    journal = await connect(pg_url)
    runs = tmp_path / "runs.jsonl"
    spawn: dict[str, Any] = {"log_dir": tmp_path, "lease": 2.0, "runs": runs, "concurrency": 20}
    a = await WorkerProcess.spawn(pg_url, name="wa", **spawn)
    b = await WorkerProcess.spawn(pg_url, name="wb", **spawn)
    try:
        ids = await start_orders(journal, 40, seed=4, failure_rate=0.25, flaky=0.0)
        await executions_by(runs, a.process.pid, 10)
        a.kill()
        await a.wait()
        assert await wait_all_terminal(journal, ids, time.monotonic() + 40) == []
    finally:
        b.terminate()
        b_status = await b.wait()
        a.kill()
        await a.wait()
    report = await check_journal(journal, ids, runs)
    await journal.close()
    assert report.problems == [], b.log_text()
    assert sum(report.statuses.values()) == 40
    assert set(report.statuses) <= {"completed", "compensated", "failed"}
    # The kill landed mid-step: some step was started by wa and run again by wb.
    assert both_ran(runs, a.process.pid, b.process.pid)
    assert b_status == 0


async def test_sigterm_drains_in_flight_steps_then_another_worker_finishes(
    pg_url: str, tmp_path: Path
) -> None:
    journal = await connect(pg_url)
    runs = tmp_path / "runs.jsonl"
    # A long lease: were the leases not released on exit, nobody could finish in time.
    spawn: dict[str, Any] = {
        "log_dir": tmp_path, "lease": 60.0, "runs": runs, "concurrency": 10, "grace": 20.0
    }
    a = await WorkerProcess.spawn(pg_url, name="drained", **spawn)
    try:
        ids = await start_orders(journal, 30, seed=9, failure_rate=0.0, flaky=0.0)
        await executions_by(runs, a.process.pid, 5)
        a.terminate()
        assert await a.wait() == 0
        b = await WorkerProcess.spawn(pg_url, name="successor", **spawn)
        try:
            assert await wait_all_terminal(journal, ids, time.monotonic() + 30) == []
        finally:
            b.terminate()
            assert await b.wait() == 0
    finally:
        a.kill()
    report = await check_journal(journal, ids, runs)
    await journal.close()
    assert report.problems == []
    assert report.statuses == {"completed": 30}
    # Drained, not abandoned: nothing the first worker started had to run again.
    assert both_ran(runs, a.process.pid, b.process.pid) == []
    assert "shutting down: no new claims" in a.log_text()


async def test_postgres_restart_during_a_run(pg_url: str, tmp_path: Path) -> None:
    restart = os.environ.get("SAGALOG_TEST_PG_RESTART", "")
    if not restart:
        pytest.skip(
            "SAGALOG_TEST_PG_RESTART is empty: tools/pgtest.py cannot restart this server "
            "(it can as root on the local cluster, or with SAGALOG_PGTEST_PRIVATE=1)"
        )
    journal = await connect(pg_url)
    runs = tmp_path / "runs.jsonl"
    worker = await WorkerProcess.spawn(pg_url, name="survivor", log_dir=tmp_path, lease=3.0,
                                       runs=runs, concurrency=20)
    try:
        ids = await start_orders(journal, 30, seed=11, failure_rate=0.2, flaky=0.0)
        await executions_by(runs, worker.process.pid, 5)
        await anyio.run_process(restart)
        assert await wait_all_terminal(journal, ids, time.monotonic() + 45) == [], worker.log_text()
        assert worker.alive
    finally:
        worker.terminate()
        status = await worker.wait()
    report = await check_journal(journal, ids, runs)
    await journal.close()
    assert report.problems == []
    assert sum(report.statuses.values()) == 30
    log = worker.log_text()
    # A short restart is absorbed by the journal's own retries; a longer one is logged once.
    assert log.count("database unreachable") == log.count("database reachable again")
    assert status == 0
