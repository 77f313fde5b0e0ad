"""The worker: claims ready streams, advances them, and keeps their leases alive.

One worker process runs one :class:`Worker`. Its shape, all inside one anyio
task group (nothing is left running when :meth:`Worker.run` returns)::

    run
    ├── heartbeat      renews the leases of in-flight streams every lease/3
    ├── status         serves /metrics, /healthz, /readyz on --metrics-port (optional)
    ├── console        serves the operator's console on --dashboard-port (optional)
    └── work
        ├── claim loop claim -> start one task per claim -> wait for work
        └── advance(s) one per claimed stream, each in its own cancel scope

How a stream is advanced is the :class:`StreamHandler`'s business (the
Runner for ``wf-`` streams, Sessions for ``session-`` streams); the worker
only owns concurrency, leases and I/O failures. The expected version of
every append is the fencing token: a worker that lost a lease cannot write,
and cancelling its work when the heartbeat notices is only to save effort.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

import anyio
import anyio.abc
import msgspec
from sagalog.engine import logs
from sagalog.engine.worker_http import StatusServer
from sagalog.engine.worker_leases import LeaseBook, Outage, Tickets, told_starts
from sagalog.engine.worker_metrics import WorkerMetrics
from sagalog.engine.worker_settings import WorkerSettings, validate
from sagalog.engine.workflow import Registry
from sagalog.storage import Backoff, Claim, Journal, Watch

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import ConcurrencyError, DatabaseError, OperationalError

log = logging.getLogger("sagalog.worker")

_WATCH_BACKOFF = Backoff(attempts=0, initial=0.2, maximum=5.0)
TICKETS = 4
"""Tickets a worker offers at a time, at most (see ``Journal.offer``)."""
READY_TIMEOUT = 5.0
"""Seconds /readyz waits for the database before it answers 503."""

FAILED_STATUSES = frozenset({"failed", "compensated", "compensation_failed", "cancelled"})


class Outcome(msgspec.Struct, frozen=True):
    """What advancing one stream came to."""

    status: str
    """The instance's status afterwards (a SagaState status), or ``"session"``."""
    steps: int = 0
    """Step executions this advance recorded."""
    detail: str = ""
    """The parked reason, or an error message."""
    indexed: bool = True
    """False when the stream's work-index row is gone (it ended, or waits only for
    signals): then there is no lease left to give back, which saves a round trip."""


class StreamHandler(Protocol):
    """Advances one claimed stream as far as it can go now."""

    async def handle(self, stream_id: str, *, taken_over: bool = True) -> Outcome:
        """Advance ``stream_id``; the work index schedule is the handler's to set.

        ``taken_over``: its last holder's lease ran out (see ``Claim.taken_over``).
        """
        ...

    def cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of the handler's sticky cache so far."""
        ...

    @property
    def prefetch(self) -> int:
        """Events of each claimed stream the worker should read with the claim (0: none)."""
        ...

    async def prepare(self, claims: Sequence[Claim]) -> None:
        """Get ready to advance these freshly claimed streams (e.g. replay what the claim read)."""
        ...

    async def checkpoint(self, stream_ids: Sequence[str], older_than: float) -> None:
        """Record what the handler has held in memory for more than ``older_than`` seconds
        about these streams it is advancing (called on each heartbeat)."""
        ...


class Worker:
    """Claims streams from the work index of ``journal`` and hands them to ``handler``.

    Call :meth:`run` inside a task group; :meth:`shutdown` drains it (the
    first call) or stops it at once (the second), as SIGTERM does.
    """

    def __init__(
        self,
        journal: Journal,
        handler: StreamHandler,
        settings: WorkerSettings | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        metrics: WorkerMetrics | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.settings = validate(settings or WorkerSettings())
        self.registry = registry
        """The workflows the console may replay (to unpark an instance)."""
        self.dashboard_port: int | None = None
        """The port the console is served on once running (useful with port 0)."""
        self.owner = self.settings.owner
        self.metrics = metrics or WorkerMetrics()
        self.metrics.watch_cache(handler.cache_counts)
        # A handler that can say more (the RunnerHandler: instances, steps,
        # breakers, appends) wires itself to the metrics; the protocol does not need it.
        attach = getattr(handler, "attach_metrics", None)
        if attach is not None:
            attach(self.metrics)
        self.ready_timeout = READY_TIMEOUT
        self.metrics_port: int | None = None
        """The port metrics are served on once running (useful with port 0)."""
        self.leases = LeaseBook()
        self.outage = Outage(clock)
        self._journal = journal
        self._handler = handler
        self._clock = clock
        self._changed = anyio.Event()
        self._draining = False
        self._stopped = False
        self._root: anyio.CancelScope | None = None
        self._watching: Watch | None = None
        self._listening = anyio.Event()
        """Set while the claim loop waits for work: the watcher looks for events only then."""
        self._claim_wanted = True
        """Something may be claimable: not only hand-offs woke the claim loop."""
        self.tickets = Tickets()

    # -- control ---------------------------------------------------------

    @property
    def draining(self) -> bool:
        """True once :meth:`shutdown` was called: no new claims."""
        return self._draining

    def shutdown(self) -> None:
        """First call: stop claiming and drain. Second call: stop now, leaving leases to expire."""
        if not self._draining:
            self._draining = True
            log.info(
                "shutting down: no new claims; %d in flight get %.0f s to finish",
                len(self.leases),
                self.settings.grace_seconds,
            )
        else:
            self._stopped = True
            log.warning("second stop request: exiting now")
            if self._root is not None:
                self._root.cancel()
        self._notify()

    async def readiness(self) -> str:
        """"" when this worker can work (the database answers a real query and its
        schema is current), else why not; /readyz answers 503 with it."""
        if self._draining:
            return "draining: shutting down"
        try:
            with anyio.fail_after(self.ready_timeout):
                await self._journal.check()
        except TimeoutError:
            return f"database did not answer within {self.ready_timeout:g} s"
        except DatabaseError as exc:
            return str(exc)
        return ""

    def _notify(self) -> None:
        self._claim_wanted = True
        self._wake()

    def _wake(self) -> None:
        # anyio Events are one-shot: wake the current waiters, arm a new one.
        self._changed.set()
        self._changed = anyio.Event()

    # -- the main loop -----------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Work until :meth:`shutdown`; returns after the leases are given back."""
        log.info(
            "worker %s on %s (namespace %s): concurrency %d, lease %.1f s",
            self.owner,
            self._journal.description,
            self._journal.namespace,
            self.settings.concurrency,
            self.settings.lease_seconds,
        )
        with anyio.CancelScope() as root:
            self._root = root
            async with anyio.create_task_group() as service:
                service.start_soon(self._heartbeat)
                service.start_soon(self._watch)
                if self.settings.metrics_port is not None:
                    status = StatusServer(self.metrics.exposition, self.readiness, self.owner)
                    self.metrics_port = await service.start(status.serve, self.settings.metrics_port)
                    service.start_soon(self.metrics.follow_sessions, self._journal, self._clock)
                    log.info("metrics on http://0.0.0.0:%d/metrics, /healthz, /readyz", self.metrics_port)
                if self.settings.dashboard_port is not None:
                    self.dashboard_port = await service.start(self._serve_console)
                task_status.started()
                try:
                    async with anyio.create_task_group() as work:
                        await self._claim_loop(work)
                        await self._withdraw()
                        await self._drain(work)
                finally:
                    if not self._stopped:
                        await self._release_all()
                    service.cancel_scope.cancel()
        log.info("worker %s stopped", self.owner)

    async def _serve_console(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        """Serve the operator's console (``--dashboard-port``) with this worker's metrics."""
        # Imported here: a worker without a console never loads the HTTP server.
        from sagalog.engine.console import serve_console
        from sagalog.engine.console.views import metric_values

        await serve_console(
            self._journal,
            host=self.settings.dashboard_host,
            port=self.settings.dashboard_port or 0,
            tokens=[t for t in self.settings.dashboard_token.split(",") if t.strip()],
            registry=self.registry,
            metrics=lambda: metric_values(self.metrics.registry),
            workers=lambda: [{"id": self.owner, "in_flight": len(self.leases), "draining": self._draining}],
            task_status=task_status,
        )

    async def _claim_loop(self, work: anyio.abc.TaskGroup) -> None:
        settings = self.settings
        next_due: datetime | None = None
        while True:
            # Taken before looking at anything: a shutdown or a freed slot
            # while we claim sets this very event, so the wait below ends at
            # once instead of missing it (anyio Events are one-shot).
            changed = self._changed
            if self.tickets.waiting:
                await self._take_handed(work)
            if self._draining:
                return
            free = settings.concurrency - len(self.leases)
            if free <= 0:
                await changed.wait()
                continue
            want = min(free, settings.claim_batch)
            claims: list[Claim] = []
            try:
                if self._watching is None:
                    # Before the first claim, so nothing appended after it is missed.
                    handed_to = self.owner if self._journal.hands_off else None
                    self._watching = await self._journal.watch(work=True, handed_to=handed_to)
                # Woken by hand-offs alone, there is nothing to claim: the start took our ticket.
                if self._claim_wanted:
                    self._claim_wanted = False
                    await self._flush_releases()
                    claims, next_due = await self._journal.claim_next(
                        self.owner, settings.lease_seconds, want, read=self._handler.prefetch
                    )
                    if len(claims) >= want:
                        self._claim_wanted = True  # a full batch: there may be more
                still_free = free - len(claims)
                if self.tickets.out > still_free:
                    await self._withdraw()  # starts taking them would go beyond the concurrency
                elif not (self.tickets.out or claims) and still_free > 0 and self._journal.hands_off:
                    # Idle with free slots: the next starts may come straight here. A few
                    # tickets at a time, so that offering again is rare (a start takes one).
                    slots = min(TICKETS, still_free)
                    await self._journal.offer(self.owner, slots, settings.lease_seconds)
                    self.tickets.out = slots
            except OperationalError as exc:
                self._claim_wanted = True
                await self._pause(self.outage.failed(exc), changed)
                continue
            self.outage.recovered()
            await self._prepare([c for c in claims if c.stream_id not in self.leases])
            for claim in claims:
                if claim.stream_id in self.leases:
                    continue  # our own lease ran out while working and we got it again
                self.metrics.claimed.inc()
                scope = self.leases.take(claim.stream_id)
                work.start_soon(self._advance, claim.stream_id, scope, claim.taken_over, name=claim.stream_id)
            if len(claims) < want:
                await self._wait_for_work(changed, self._timeout(next_due))
                if not changed.is_set():  # a due row's time, or the poll
                    self._claim_wanted = True

    async def _take_handed(self, work: anyio.abc.TaskGroup) -> None:
        """Advance the streams that starts handed to this worker: their leases are ours.
        A start's notice carries its event, so the handler replays without a read."""
        fresh = [t for t in self.tickets.take() if t.stream_id not in self.leases]
        await self._prepare(told_starts(fresh, self.owner, self._clock.now()))
        for touch in fresh:
            stream_id = touch.stream_id
            if stream_id is None or stream_id in self.leases:
                continue
            self.metrics.handed.inc()
            scope = self.leases.take(stream_id)
            work.start_soon(self._advance, stream_id, scope, False, name=stream_id)

    async def _withdraw(self) -> None:
        """Take this worker's tickets back (a drain, or no slot left for them): starts from
        now on go to others. Whether or not any is out as far as we know: a start may
        have taken one that a heartbeat then renewed."""
        if not self._journal.hands_off:
            return
        self.tickets.out = 0
        try:
            await self._journal.withdraw(self.owner)
        except OperationalError as exc:
            log.warning("could not withdraw this worker's ticket (%s); it runs out with its lease", exc)

    async def _prepare(self, claims: list[Claim]) -> None:
        """Let the handler prefetch a claimed batch; a failure only loses the shortcut."""
        if not claims:
            return
        try:
            await self._handler.prepare(claims)
        except OperationalError as exc:
            log.debug("prefetching %d claimed stream(s) failed: %s", len(claims), exc)
        except Exception:
            # Only a shortcut: each advance loads its stream itself and reports
            # what is wrong with it there, so a bug here must not stop claiming.
            log.warning("prefetching %d claimed stream(s) failed", len(claims), exc_info=True)

    async def _drain(self, work: anyio.abc.TaskGroup) -> None:
        with anyio.move_on_after(self.settings.grace_seconds):
            while len(self.leases):
                await self._changed.wait()
        if len(self.leases):
            log.warning("grace period over: cancelling %d in-flight instance(s)", len(self.leases))
        work.cancel_scope.cancel()

    async def _release_all(self) -> None:
        # Shielded and bounded: the leases go back even when run() is being
        # cancelled, so another worker can take over at once instead of
        # waiting for them to expire; an unreachable database just makes
        # them expire as they would after a crash.
        # Handed to us after the claim loop ended: ours to give back.
        untaken = {t.stream_id for t in self.tickets.take() if t.stream_id is not None}
        ids = sorted(set(self.leases.pending_releases()) | set(self.leases.in_flight) | untaken)
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._withdraw()
            if not ids:
                return
            try:
                await self._journal.release(self.owner, ids)
                log.info("released %d lease(s)", len(ids))
            except OperationalError as exc:
                log.warning("could not release %d lease(s) (%s); they expire on their own", len(ids), exc)

    async def _flush_releases(self) -> None:
        ids = self.leases.pending_releases()
        if not ids:
            return
        try:
            await self._journal.release(self.owner, ids)
        except OperationalError:
            self.leases.to_release.update(ids)
            raise

    # -- waiting -------------------------------------------------------------

    async def _wait_for_work(self, changed: anyio.Event, timeout: float) -> None:
        """Sleep until work may be ready: ``changed`` (set by the watcher on others'
        events, a freed slot or a shutdown), a due timer (``timeout`` seconds), or the poll."""
        listening = self._listening
        listening.set()
        try:
            # The poll bounds the wait in real time as well: a ManualClock moved
            # before this wait began would never wake the timer below.
            with anyio.move_on_after(self.settings.poll_seconds):
                if timeout >= self.settings.poll_seconds:
                    await changed.wait()
                    return
                async with anyio.create_task_group() as race:

                    async def on_timer() -> None:
                        await self._clock.sleep(timeout)
                        race.cancel_scope.cancel()

                    race.start_soon(on_timer)
                    await changed.wait()
                    race.cancel_scope.cancel()
        finally:
            self._listening = anyio.Event()

    def _timeout(self, next_due: datetime | None) -> float:
        """Seconds to sleep at most: until the next due row (as the claim saw it), or the poll.

        A due row that we could not claim is leased by someone; only expiry
        frees it, so the poll looks for that rather than spin (the claim
        tells only rows due after it).
        """
        poll = self.settings.poll_seconds
        if next_due is None:
            return poll
        return max(0.0, min(poll, (next_due - self._clock.now()).total_seconds()))

    async def _watch(self) -> None:
        """Wake the claim loop when others append events, while it waits for work.

        One long-lived task rather than a wait raced against a timer on every
        sleep: a database wait is never cancelled half-way (that costs the
        pool its connection). Our own commits (events whose ``worker`` is our
        id) are skipped: the instances they belong to are ours already, and
        claiming after each would cost a claim round per step for nothing.
        """
        failures = 0
        while True:
            await self._listening.wait()  # the claim loop sets it only once the watch exists
            assert self._watching is not None
            try:
                touches = await self._watching.next(self.settings.poll_seconds)
                if self.tickets.hand_over(touches):
                    self._wake()
                if any(t.worker != self.owner and not t.handed for t in touches):
                    self._notify()
            except OperationalError:
                # The claim loop meets the outage too and reports it; just back off.
                failures += 1
                await anyio.sleep(_WATCH_BACKOFF.delay(failures))
            else:
                failures = 0

    async def _pause(self, seconds: float, changed: anyio.Event) -> None:
        """Wait ``seconds`` (after a database failure) or until ``changed`` (e.g. shutdown)."""
        with anyio.move_on_after(seconds):
            await changed.wait()

    # -- one stream ----------------------------------------------------------

    async def _advance(self, stream_id: str, scope: anyio.CancelScope, taken_over: bool) -> None:
        release = True
        self.metrics.in_flight.inc()
        if stream_id.startswith("wf-"):
            # This task's log records carry the instance (a task of its own: nothing to reset).
            logs.bind(instance_id=stream_id.removeprefix("wf-"))
        try:
            with scope:
                outcome = await self._handler.handle(stream_id, taken_over=taken_over)
                self._count(stream_id, outcome)
                release = outcome.indexed
        except ConcurrencyError as exc:
            # Someone else wrote first (a signal, or a worker that took over).
            log.debug("%s moved under us: %s", stream_id, exc)
        except OperationalError as exc:
            self.outage.failed(exc)
        except Exception:
            # A bug, not a workflow failure (those are events). Keep the lease
            # so the stream comes back only after it expires, not in a hot loop.
            release = False
            self.metrics.errors.inc()
            log.exception("unexpected error advancing %s; retrying after the lease expires", stream_id)
        finally:
            self.metrics.in_flight.dec()
            was_full = len(self.leases) >= self.settings.concurrency
            self.leases.finish(stream_id, release=release)
            # The claim loop needs to hear of it only when there is a lease to give
            # back (its row stays in the index: the next due time may have moved),
            # a slot opened at full capacity, or a drain is counting the leases.
            if release or was_full or self._draining:
                self._notify()

    def _count(self, stream_id: str, outcome: Outcome) -> None:
        self.metrics.steps.inc(outcome.steps)
        if outcome.status == "completed":
            self.metrics.completed.inc()
        elif outcome.status in FAILED_STATUSES:
            self.metrics.failed.labels(outcome.status).inc()
        elif outcome.status == "parked":
            self.metrics.parked.inc()
            log.warning("parked %s: %s", stream_id, outcome.detail)

    # -- leases ----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        settings = self.settings
        last_renewed = self._clock.now()
        while True:
            await self._clock.sleep(settings.heartbeat_seconds)
            held = list(self.leases.in_flight)
            started = self._clock.now()
            await self._renew_ticket()
            if not held:
                last_renewed = started
                continue
            try:
                kept = set(await self._journal.renew(self.owner, held, settings.lease_seconds))
            except OperationalError as exc:
                self.outage.failed(exc)
                if (started - last_renewed).total_seconds() >= settings.lease_seconds:
                    # Past the lease without a renewal: others may own them now.
                    for stream_id in held:
                        self._lose(stream_id, "no heartbeat got through for a whole lease")
                continue
            last_renewed = started
            for stream_id in held:
                if stream_id not in kept:
                    self._lose(stream_id, "the lease was taken over")
            await self._checkpoint([s for s in held if s in kept])

    async def _renew_ticket(self) -> None:
        """Keep the lease our ticket offers from running out (a start copies it)."""
        if not self.tickets.out or self._draining:
            return
        try:
            await self._journal.offer(self.owner, 0, self.settings.lease_seconds)
        except OperationalError as exc:
            self.outage.failed(exc)

    async def _checkpoint(self, stream_ids: list[str]) -> None:
        """Let the handler record what it keeps in memory; a failure waits for the next beat."""
        try:
            await self._handler.checkpoint(stream_ids, self.settings.heartbeat_seconds)
        except OperationalError as exc:
            self.outage.failed(exc)
        except Exception:
            # Only early bookkeeping (each advance records it anyway): a bug here must not
            # stop the heartbeat, or every lease would be lost.
            log.warning("checkpoint of %d stream(s) failed", len(stream_ids), exc_info=True)

    def _lose(self, stream_id: str, why: str) -> None:
        if self.leases.lose(stream_id):
            self.metrics.leases_lost.inc()
            log.warning("lost the lease on %s (%s): cancelling its work", stream_id, why)
