"""A real ``sagalog worker`` process: JSON log lines on a pipe, and its status port."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import msgspec
import pytest
from chaos import WorkerProcess
from obs_helpers import http_get, parse, value
from sagalog.engine import Client
from sagalog.engine.workflow import load_modules
from sagalog.storage import connect

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def served_port(worker: WorkerProcess) -> int:
    """The port the worker says it serves metrics on (it logs it just after it starts)."""
    with anyio.fail_after(15):
        while True:  # the log is a file: there is nothing to wait on but time
            found = re.search(r"metrics on http://0\.0\.0\.0:(\d+)/metrics", worker.log_text())
            if found:
                return int(found.group(1))
            assert worker.alive, worker.log_text()
            await anyio.sleep(0.02)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_worker_process_logs_json_and_serves_metrics_and_health(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    journal = await connect(url)
    worker = await WorkerProcess.spawn(
        url, name="obs-proc", log_dir=tmp_path, extra_env={"SAGALOG_METRICS_PORT": "0"}
    )
    try:
        assert await worker.started()
        port = await served_port(worker)
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/readyz"))[0] == 200

        client = Client(journal, load_modules(["chaos_workflows"]))
        instance = await client.start("noop_saga", 1)
        assert await client.result(instance, 30) == 4
        with anyio.fail_after(15):
            while True:  # counted once the advance returns, just after the result is recorded
                samples = parse((await http_get(port, "/metrics"))[2].decode())
                if value(samples, "sagalog_workflows_ended_total", workflow="noop_saga", status="completed"):
                    break
                await anyio.sleep(0.05)
        assert value(samples, "sagalog_workflows_started_total", workflow="noop_saga") == 1
        assert value(samples, "sagalog_step_duration_seconds_count", workflow="noop_saga", step="nothing",
                     kind="step", outcome="completed") == 3  # fmt: skip
    finally:
        worker.terminate()
        assert await worker.wait() == 0
        await journal.close()

    records = [msgspec.json.decode(line) for line in worker.log_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["message"].startswith("worker obs-proc on ") for r in records)
