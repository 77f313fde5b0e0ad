"""Helpers for the observability tests: a worker in this event loop, HTTP GETs, scraping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from obs_workflows import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sagalog.engine.runner import Runner
from sagalog.engine.worker import Worker
from sagalog.engine.worker_metrics import WorkerMetrics
from sagalog.engine.worker_process import RunnerHandler
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.engine.workflow import Registry
from sagalog.storage import Journal

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def worker_on(
    journal: Journal, registry: Registry = REGISTRY, metrics: WorkerMetrics | None = None, **settings: Any
) -> AsyncIterator[Worker]:
    """A worker (Runner + RunnerHandler, metrics on a free port) running until the block ends."""
    runner = Runner(journal, registry, worker_id="obs-worker")
    values: dict[str, Any] = {
        "worker_id": "obs-worker", "poll_seconds": 0.05, "lease_seconds": 5.0, "metrics_port": 0,
    }  # fmt: skip
    values.update(settings)
    handler = RunnerHandler(runner, runner.sessions)
    worker = Worker(journal, handler, WorkerSettings(**values), metrics=metrics)
    async with anyio.create_task_group() as tg:
        await tg.start(worker.run)
        yield worker
        worker.shutdown()


async def http_get(port: int, path: str) -> tuple[int, str, bytes]:
    """(status code, content type, body) of ``GET path`` on localhost."""
    with anyio.fail_after(10):
        return await _get(port, path)


async def _get(port: int, path: str) -> tuple[int, str, bytes]:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        chunks = []
        try:
            while True:
                chunks.append(await stream.receive())
        except anyio.EndOfStream:
            pass
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["Content-Type"], body


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(worker: Worker) -> Samples:
    """The worker's /metrics over HTTP, parsed."""
    assert worker.metrics_port
    status, kind, body = await http_get(worker.metrics_port, "/metrics")
    assert status == 200 and kind.startswith("text/plain")
    return parse(body.decode())


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll until ``check()`` holds (no fixed sleeps)."""
    with anyio.fail_after(timeout):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)
