"""Prometheus metrics of a worker.

Each :class:`WorkerMetrics` has its own ``CollectorRegistry`` so several
workers (in tests, or embedded) never collide. It is the Runner's
:class:`~sagalog.engine.observer.Observer` and the journal's commit
observer; the breakers and the sticky cache are read when Prometheus
scrapes. The metrics themselves are :mod:`sagalog.engine.tallies` (plain
numbers, no lock per update). Labels are workflow, step and session-kind names only: never an
instance id, so a million instances make no more series than one.
:mod:`sagalog.engine.worker_http` serves the text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sagalog.engine.breaker import BreakerState
from sagalog.engine.observer import Observer, StepOutcome
from sagalog.engine.tallies import Histogram, Tally
from sagalog.replay import session_analytics
from sagalog.storage import Journal

from sagalog.clock import Clock
from sagalog.errors import DatabaseError

if TYPE_CHECKING:
    from sagalog.engine.runner import Runner

log = logging.getLogger("sagalog.worker")

SESSIONS_REFRESH = 30.0
"""Seconds between updates of ``sagalog_sessions_open`` from the session projection."""

CacheCounts = Callable[[], tuple[int, int]]
"""Returns (hits, misses) of the sticky cache so far."""

BreakerStates = Callable[[], dict[str, BreakerState]]
"""Returns each step's breaker state now."""

BREAKER_STATES = ("closed", "half_open", "open")

# Seconds: steps call services (ms to minutes); appends and replays are fast.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
ATTEMPT_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20, 50)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


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


class _BreakerCollector(Collector):
    """One series per step breaker and state; the current state's value is 1."""

    def __init__(self, states: BreakerStates) -> None:
        self._states = states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sagalog_breaker_state",
            "Circuit breaker of each step in this process: 1 for its current state",
            labels=["step", "state"],
        )
        for step, state in sorted(self._states().items()):
            for name in BREAKER_STATES:
                family.add_metric([step, name], 1.0 if state.status == name else 0.0)
        yield family


class _SessionsCollector(Collector):
    """Sessions open now per kind, as last read from the session projection."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sagalog_sessions_open", "Sessions open now in the namespace, per kind", labels=["kind"]
        )
        for kind, count in sorted(self._metrics.open_sessions.items()):
            family.add_metric([kind], count)
        yield family


class WorkerMetrics(Observer):
    """The metrics a worker keeps; read them in tests, scrape them in production."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # -- the worker loop (no labels) --
        self.claimed = Tally(
            "sagalog_instances_claimed", "Streams claimed from the work index", registry=r
        )
        self.handed = Tally(
            "sagalog_instances_handed",
            "New instances a start handed to this worker's ticket (no claim)",
            registry=r,
        )
        self.completed = Tally(
            "sagalog_instances_completed", "Instances that reached 'completed'", registry=r
        )
        self.failed = Tally(
            "sagalog_instances_failed",
            "Instances that ended failed, compensated, compensation_failed or cancelled",
            ["status"],
            registry=r,
        )
        self.parked = Tally("sagalog_instances_parked", "Instances parked by the runner", registry=r)
        self.steps = Tally("sagalog_steps", "Step executions recorded by this worker", registry=r)
        self.leases_lost = Tally(
            "sagalog_leases_lost", "Leases lost while working (that work was cancelled)", registry=r
        )
        self.errors = Tally(
            "sagalog_worker_errors", "Unexpected errors while advancing an instance", registry=r
        )
        self.outages = Tally(
            "sagalog_database_outages", "Times the database became unreachable", registry=r
        )
        self.in_flight = Tally(
            "sagalog_instances_in_flight", "Instances being advanced now", registry=r, gauge=True
        )
        # -- workflows and steps (labelled by name) --
        self.workflows_started = Tally(
            "sagalog_workflows_started", "Instances that ran for the first time here", ["workflow"],
            registry=r,
        )
        self.workflows_ended = Tally(
            "sagalog_workflows_ended",
            "Instances that reached completed, failed, compensated, cancelled or compensation_failed",
            ["workflow", "status"],
            registry=r,
        )
        self.workflows_parked = Tally(
            "sagalog_workflows_parked", "Instances parked, by reason", ["workflow", "reason"], registry=r
        )
        self.step_duration = Histogram(
            "sagalog_step_duration_seconds",
            "Duration of step and compensation attempts",
            ["workflow", "step", "kind", "outcome"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.step_attempts = Histogram(
            "sagalog_step_attempts",
            "Attempts a step or compensation took, observed when it completed or failed for good",
            ["workflow", "step", "kind"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.retries = Tally(
            "sagalog_step_retries", "Failed attempts with a retry scheduled", ["workflow", "step"], registry=r
        )
        self.compensations = Tally(
            "sagalog_compensations",
            "Compensations that ran to an end (outcome: completed or failed)",
            ["workflow", "step", "outcome"],
            registry=r,
        )
        self.takeovers = Tally(
            "sagalog_lease_takeovers",
            "Instances claimed after the lease of the worker holding them ran out",
            ["workflow"],
            registry=r,
        )
        self.timer_lag = Histogram(
            "sagalog_timer_lag_seconds",
            "How late durable timers fired after they were due (the count: timers fired)",
            ["workflow"],
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.replay_duration = Histogram(
            "sagalog_replay_duration_seconds",
            "Replays of an instance from the journal (sticky-cache misses)",
            ["workflow"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.append_latency = Histogram(
            "sagalog_journal_append_seconds",
            "Duration of append transactions (one group commit each)",
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.append_batch = Histogram(
            "sagalog_journal_append_batch_size",
            "Appends committed together in one transaction",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.sessions_opened = Tally(
            "sagalog_sessions_opened", "Sessions opened by this process", ["kind"], registry=r
        )
        self.sessions_ended = Tally(
            "sagalog_sessions_ended", "Sessions ended by this process (how: closed or expired)",
            ["kind", "how"], registry=r,
        )  # fmt: skip
        self.open_sessions: dict[str, int] = {}
        """Sessions open per kind, refreshed by :meth:`follow_sessions`."""
        self.sessions_refresh = SESSIONS_REFRESH
        """Seconds between refreshes of :attr:`open_sessions`."""
        r.register(_SessionsCollector(self))

    # -- wiring ------------------------------------------------------------------

    def watch_cache(self, counts: CacheCounts) -> None:
        """Expose the sticky cache's (hits, misses) as counters."""
        self.registry.register(_CacheCollector(counts))

    def watch_breakers(self, states: BreakerStates) -> None:
        """Expose each step's circuit breaker state (read at scrape time)."""
        self.registry.register(_BreakerCollector(states))

    def observe_runner(self, runner: Runner) -> None:
        """Count what ``runner`` does: its instances, steps, timers, replays, sessions,
        breakers and its journal's appends."""
        runner.observer = self
        runner.sessions.observer = self
        runner.journal.observe_commits(self.journal_commit)
        self.watch_breakers(runner.breakers.states)

    async def follow_sessions(self, journal: Journal, clock: Clock) -> None:
        """Keep ``sagalog_sessions_open`` up to date until cancelled.

        Every session's state lives in its own stream; the count per kind comes
        from the session projection (:mod:`sagalog.replay.session_analytics`):
        its stored copy first (saved back, so the next worker starts from
        there), then the events appended since, every :attr:`sessions_refresh`
        seconds. A database failure only delays the next update.
        """
        analytics: session_analytics.SessionAnalytics | None = None
        while True:
            try:
                if analytics is None:
                    analytics = await session_analytics.load(journal, save=True)
                else:
                    await session_analytics.catch_up(journal, analytics)
                self.open_sessions = analytics.stats().open_by_kind
            except DatabaseError as exc:
                log.debug("could not update the open sessions: %s", exc)
            await clock.sleep(self.sessions_refresh)

    # -- Observer ------------------------------------------------------------------

    def workflow_started(self, workflow: str) -> None:
        """Count an instance's first run."""
        self.workflows_started.labels(workflow).inc()

    def workflow_ended(self, workflow: str, status: str) -> None:
        """Count an instance reaching ``status``."""
        self.workflows_ended.labels(workflow, status).inc()

    def workflow_parked(self, workflow: str, reason: str) -> None:
        """Count a parked instance."""
        self.workflows_parked.labels(workflow, reason).inc()

    def step_attempt(
        self, workflow: str, step: str, kind: str, attempt: int, outcome: StepOutcome, seconds: float
    ) -> None:
        """Time an attempt; count retries, attempts per step and compensations."""
        self.step_duration.labels(workflow, step, kind, outcome).observe(seconds)
        if outcome == "retrying":
            self.retries.labels(workflow, step).inc()
            return
        self.step_attempts.labels(workflow, step, kind).observe(attempt)
        if kind == "compensation":
            self.compensations.labels(workflow, step, outcome).inc()

    def takeover(self, workflow: str) -> None:
        """Count an instance taken over from a worker whose lease ran out."""
        self.takeovers.labels(workflow).inc()

    def timer_fired(self, workflow: str, lag_seconds: float) -> None:
        """Record how late a timer fired."""
        self.timer_lag.labels(workflow).observe(max(0.0, lag_seconds))

    def replayed(self, workflow: str, events: int, seconds: float) -> None:
        """Time a replay."""
        self.replay_duration.labels(workflow).observe(seconds)

    def session_opened(self, kind: str) -> None:
        """Count an opened session."""
        self.sessions_opened.labels(kind).inc()

    def session_ended(self, kind: str, how: str) -> None:
        """Count a session that was closed or expired."""
        self.sessions_ended.labels(kind, how).inc()

    def journal_commit(self, seconds: float, batch_size: int) -> None:
        """Time one append transaction and note how many appends it carried."""
        self.append_latency.observe(seconds)
        self.append_batch.observe(batch_size)

    # -- reading -------------------------------------------------------------------

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), e.g. ``value("sagalog_steps_total")``."""
        found = self.registry.get_sample_value(name, labels or None)
        return found or 0.0

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
