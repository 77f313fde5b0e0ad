"""Prometheus metrics of a worker, and the small HTTP endpoint that serves them.

Each :class:`WorkerMetrics` has its own ``CollectorRegistry`` so several
workers (in tests, or embedded) never collide. The endpoint is an anyio TCP
listener inside the worker's task group rather than prometheus_client's
``start_http_server``, which would start a thread the worker cannot cancel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import anyio
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

CacheCounts = Callable[[], tuple[int, int]]
"""Returns (hits, misses) of the sticky cache so far."""


class _CacheCollector(Collector):
    """Reads the Runner's sticky-cache counters when Prometheus scrapes."""

    def __init__(self, counts: CacheCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        hits, misses = self._counts()
        yield CounterMetricFamily(
            "sagalog_cache_hits", "Instances resumed from the sticky cache", value=hits
        )
        yield CounterMetricFamily(
            "sagalog_cache_misses", "Instances that had to replay from the journal", value=misses
        )


class WorkerMetrics:
    """The counters a worker keeps; read them in tests, scrape them in production."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.claimed = Counter(
            "sagalog_instances_claimed", "Streams claimed from the work index", registry=r
        )
        self.completed = Counter(
            "sagalog_instances_completed", "Instances that reached 'completed'", registry=r
        )
        self.failed = Counter(
            "sagalog_instances_failed",
            "Instances that ended failed, compensated, compensation_failed or cancelled",
            ["status"],
            registry=r,
        )
        self.parked = Counter("sagalog_instances_parked", "Instances parked by the runner", registry=r)
        self.steps = Counter("sagalog_steps", "Step executions recorded by this worker", registry=r)
        self.leases_lost = Counter(
            "sagalog_leases_lost", "Leases lost while working (that work was cancelled)", registry=r
        )
        self.errors = Counter(
            "sagalog_worker_errors", "Unexpected errors while advancing an instance", registry=r
        )
        self.outages = Counter(
            "sagalog_database_outages", "Times the database became unreachable", registry=r
        )
        self.in_flight = Gauge("sagalog_instances_in_flight", "Instances being advanced now", registry=r)

    def watch_cache(self, counts: CacheCounts) -> None:
        """Expose the sticky cache's (hits, misses) as counters."""
        self.registry.register(_CacheCollector(counts))

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), e.g. ``value("sagalog_steps_total")``."""
        found = self.registry.get_sample_value(name, labels or None)
        return found or 0.0

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)

    async def serve(
        self, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``GET /metrics`` on ``port`` (0: any free port) until cancelled.

        ``task_status.started`` receives the bound port.
        """
        listener = await anyio.create_tcp_listener(local_port=port, reuse_port=False)
        async with listener:
            bound = listener.extra(anyio.abc.SocketAttribute.local_port)
            task_status.started(bound)
            await listener.serve(self._answer)

    async def _answer(self, stream: SocketStream) -> None:
        async with stream:
            request = b""
            with anyio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    try:
                        request += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path.split(b"?")[0] in (b"/", b"/metrics"):
                body, status, kind = self.exposition(), b"200 OK", CONTENT_TYPE_LATEST.encode()
            else:
                body, status, kind = b"not found\n", b"404 Not Found", b"text/plain"
            head = (
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + kind
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
            )
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await stream.send(head + body)
