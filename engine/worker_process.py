"""A worker process: open the journal, build the Runner, run the Worker on uvloop.

This is what ``sagalog worker MODULE ...`` runs. It connects (waiting out a
database that is not up yet), hands ``wf-`` streams to the Runner and
``session-`` streams to Sessions, and turns SIGTERM/SIGINT into
:meth:`Worker.shutdown` (first: drain; second: exit now).
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Sequence

import anyio
import anyio.abc
import msgspec
from sagalog.engine import logs
from sagalog.engine.runner import Runner
from sagalog.engine.sessions import Sessions
from sagalog.engine.worker import Outcome, Worker
from sagalog.engine.worker_leases import Outage
from sagalog.engine.worker_metrics import WorkerMetrics
from sagalog.engine.worker_settings import WorkerSettings
from sagalog.engine.workflow import Registry, load_modules
from sagalog.replay.saga import ready_at
from sagalog.storage import Claim, Journal, connect, redact_url

from sagalog.clock import SYSTEM_CLOCK
from sagalog.errors import OperationalError

log = logging.getLogger("sagalog.worker")

WORKFLOW_PREFIX = "wf-"
SESSION_PREFIX = "session-"
PREFETCH = 100
"""Events read with each claimed stream when the Runner keeps no snapshots."""


class RunnerHandler:
    """Advances ``wf-`` streams with the Runner and expires ``session-`` streams."""

    def __init__(self, runner: Runner, sessions: Sessions | None = None) -> None:
        self.runner = runner
        self.sessions = sessions
        self._unknown: set[str] = set()

    async def handle(self, stream_id: str, *, taken_over: bool = True) -> Outcome:
        """Advance one claimed stream as far as it goes now (``taken_over``: see ``Runner.advance``)."""
        if stream_id.startswith(WORKFLOW_PREFIX):
            steps_before = self.runner.steps_run
            state = await self.runner.advance(stream_id.removeprefix(WORKFLOW_PREFIX), taken_over=taken_over)
            return Outcome(
                state.status,
                steps=self.runner.steps_run - steps_before,
                detail=state.parked_reason,
                indexed=ready_at(state, self.runner.clock.now()) is not None,
            )
        if stream_id.startswith(SESSION_PREFIX) and self.sessions is not None:
            await self.sessions.expire_if_due(stream_id.removeprefix(SESSION_PREFIX))
            return Outcome("session")
        if stream_id not in self._unknown:
            self._unknown.add(stream_id)
            log.warning("%s is in the work index but no handler knows its kind; skipping it", stream_id)
        return Outcome("skipped")

    def attach_metrics(self, metrics: WorkerMetrics) -> None:
        """Count what the Runner does in ``metrics`` (the Worker calls this)."""
        metrics.observe_runner(self.runner)

    def cache_counts(self) -> tuple[int, int]:
        """The Runner's sticky-cache (hits, misses)."""
        return self.runner.cache_hits, self.runner.cache_misses

    @property
    def prefetch(self) -> int:
        """Events to read with each claim: up to a snapshot period (longer histories load
        through their snapshot)."""
        return self.runner.snapshot_every or PREFETCH

    async def checkpoint(self, stream_ids: Sequence[str], older_than: float) -> None:
        """Append the start of first steps that have run for more than ``older_than`` seconds
        (see ``Runner.record_deferred``)."""
        ids = [s.removeprefix(WORKFLOW_PREFIX) for s in stream_ids if s.startswith(WORKFLOW_PREFIX)]
        await self.runner.record_deferred(ids, older_than)

    async def prepare(self, claims: Sequence[Claim]) -> None:
        """Replay the claimed workflow instances not cached yet from what the claim read
        (or, when it read nothing, from one query)."""
        workflows = [c for c in claims if c.stream_id.startswith(WORKFLOW_PREFIX)]
        if all(c.events is not None for c in workflows):
            histories = {c.stream_id.removeprefix(WORKFLOW_PREFIX): c.events or () for c in workflows}
            await self.runner.adopt(histories, self.prefetch, claimed=True)
            return
        await self.runner.preload([c.stream_id.removeprefix(WORKFLOW_PREFIX) for c in workflows])


def configure_logging(level: str, fmt: str = "auto") -> None:
    """One record per line on stderr: JSON unless stderr is a terminal (``fmt`` "auto"),
    each with the instance, workflow, step, attempt and trace it concerns."""
    logs.configure(level, fmt)


async def connect_patiently(settings: WorkerSettings) -> Journal:
    """Connect to the journal, retrying with backoff while the database is unreachable."""
    outage = Outage(SYSTEM_CLOCK)
    while True:
        try:
            journal = await connect(settings.url, namespace=settings.namespace)
        except OperationalError as exc:
            await anyio.sleep(outage.failed(exc))
            continue
        outage.recovered()
        return journal


async def serve(settings: WorkerSettings, registry: Registry) -> None:
    """Run a worker until SIGTERM/SIGINT (twice to skip the drain)."""
    settings = msgspec.structs.replace(settings, worker_id=settings.owner)
    journal = await connect_patiently(settings)
    try:
        runner = Runner(journal, registry, worker_id=settings.worker_id)
        worker = Worker(journal, RunnerHandler(runner, runner.sessions), settings, registry=registry)
        async with anyio.create_task_group() as tg:
            await tg.start(_relay_signals, worker)  # handlers in place before any claim
            await worker.run()
            tg.cancel_scope.cancel()  # the signal relay has nothing left to stop
    finally:
        with anyio.CancelScope(shield=True):
            await journal.close()


async def _relay_signals(
    worker: Worker, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            log.info("received %s", signal.Signals(signum).name)
            worker.shutdown()


def _exit_before_work(signum: int, frame: object) -> None:
    raise SystemExit(0)


def tune_gc(threshold: int) -> None:
    """Collect the youngest generation every ``threshold`` allocations (0: as Python does)
    and exempt what is alive now, the imported code, from every later pass.

    A worker's heap is mostly live instances, which survive into the older
    generations; at Python's 700 the passes over them took a quarter of the
    worker's CPU with 3,000 sagas in flight (docs/performance.md).
    """
    if threshold:
        gc.freeze()
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


def run_worker(settings: WorkerSettings, modules: Sequence[str]) -> int:
    """Import ``modules``, then serve on uvloop until stopped; returns the exit status."""
    configure_logging(settings.log_level, settings.log_format)
    # Until the worker holds anything, SIGTERM just ends the process cleanly
    # (not with Python's default death by signal); from the first claim on,
    # the signal relay inside the event loop takes over and drains.
    signal.signal(signal.SIGTERM, _exit_before_work)
    registry = load_modules(list(modules))
    tune_gc(settings.gc_threshold)
    log.info("workflow modules %s on %s", ", ".join(modules), redact_url(settings.url))
    anyio.run(serve, settings, registry, backend="asyncio", backend_options={"use_uvloop": True})
    return 0
