"""The in-process engine: run workflow instances against a journal.

:class:`Runner` owns no process or command-line concerns, so the worker
(``sagalog worker``) and :func:`run` both build on it. Everything it writes
goes through one path, its :class:`~sagalog.engine.committing.Committer`:
feed the new inputs (a step's outcome, a fired timer) to the instance's
executor, take the decisions the workflow code made, add the attempts to
start, and append all of it in one batch at the expected version, together
with the work-index ``Schedule`` folded from the result. A crash between
two appends therefore loses at most one batch: a step whose completion was
recorded never runs again, and one whose completion was not runs again with
the next attempt number.

Its :class:`~sagalog.engine.loader.Loader` keeps executors in an LRU cache
(sticky execution); a miss, or any ``ConcurrencyError`` (someone else
appended), replays from the journal. Its :class:`~sagalog.engine.stepping.Stepper`
runs the step attempts a commit starts and commits each outcome the same way.
Its :class:`~sagalog.engine.family.Family` does what a commit means for
parents and children: orphans, outcomes owed to a parent, child ids in use.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import anyio
import anyio.abc
from sagalog.engine import logs
from sagalog.engine.breaker import Breakers
from sagalog.engine.committing import Committer
from sagalog.engine.family import Family
from sagalog.engine.inputs import COMMIT_TRIES, append_input, ignore_conflict, operator_decision
from sagalog.engine.instance_lock import InstanceLock
from sagalog.engine.instances import start_instance
from sagalog.engine.live import Handoff, Idle, Live, LiveCache
from sagalog.engine.loader import Loader
from sagalog.engine.observer import Observer
from sagalog.engine.results import await_result, describe
from sagalog.engine.retry import DEFAULT_RETRY, RetryPolicy
from sagalog.engine.session_steps import register_session_steps
from sagalog.engine.sessions import Sessions
from sagalog.engine.stepping import Stepper
from sagalog.engine.tracing import TRACEPARENT, Tracing, trace_id_of
from sagalog.engine.workflow import DEFAULT_REGISTRY, Registry, Workflow
from sagalog.replay.events import (
    CancelRequested,
    SignalReceived,
    WorkflowEvent,
    WorkflowStarted,
    WorkflowUnparked,
    stream_id,
)
from sagalog.replay.saga import SagaFold, SagaState, apply_event
from sagalog.storage import Event, Journal, Watch, check_stream_id, encode_value

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import ConcurrencyError, DecodingError, WorkflowError


class Runner:
    """Runs workflow instances stored in ``journal``.

    Args:
        journal: where instances live.
        registry: the workflows and steps this process knows (default: the global one).
        clock: all time (timers, retries, step timeouts); tests pass a ManualClock.
        worker_id: recorded in event metadata and used for work-index leases.
        snapshot_every: save a SagaState snapshot every N events (0: never).
        cache_size: how many replayed instances to keep in memory.
        default_retry: retry policy of steps when neither step nor workflow names one.
        breakers: circuit breakers shared by steps that declare one.
        lease_seconds: how long :meth:`run_until_idle` leases a ready instance.
    """

    def __init__(
        self,
        journal: Journal,
        registry: Registry | None = None,
        *,
        clock: Clock = SYSTEM_CLOCK,
        worker_id: str | None = None,
        snapshot_every: int = 100,
        cache_size: int = 1024,
        default_retry: RetryPolicy = DEFAULT_RETRY,
        breakers: Breakers | None = None,
        lease_seconds: float = 60.0,
    ) -> None:
        self.journal = journal
        self.registry = registry or DEFAULT_REGISTRY
        self.clock = clock
        self.worker_id = worker_id or f"runner-{uuid.uuid4().hex[:8]}"
        self.lease_seconds = lease_seconds
        self._fold = SagaFold()
        self._locks: dict[str, InstanceLock] = {}
        self._meta = {"worker": self.worker_id}
        self.loader = Loader(
            journal,
            self.registry,
            clock,
            self._fold,
            meta=self._meta,
            snapshot_every=snapshot_every,
            cache_size=cache_size,
            in_use=self._advancing,
        )
        """Brings instances into memory: the sticky cache, replay, parking."""
        # -- sessions (issue 5): ctx.session commands run as built-in steps with
        # these Sessions; ending a session cancels or signals its bound instances.
        self.sessions = Sessions(journal, clock=clock, workflows=self)
        register_session_steps(self.registry)
        self.stepper = Stepper(
            self.registry,
            clock,
            self.sessions,
            self.loader,
            self._tick,
            self._park_running,
            default_retry=default_retry,
            breakers=breakers,
        )
        """Runs step and compensation attempts and knows which run here now."""
        self.family = Family(
            journal, self.registry, clock, self._meta, self.loader, self.describe, self._tick, self.cancel
        )
        """Parents and children: orphans, outcomes owed to parents, child ids in use."""
        self.committer = Committer(journal, clock, self.loader, self.stepper, self.family)
        """Appends what inputs lead to, one batch a commit, and does what that asks of the world."""

    # The loader and the stepper keep these; they read here as before, and the
    # settable ones can be set here too. This runner's own code reads them off
    # the loader or stepper (a property read costs more than an attribute's).

    @property
    def observer(self) -> Observer:
        """Told what is worth counting (a worker's metrics; see WorkerMetrics.observe_runner)."""
        return self.loader.observer

    @observer.setter
    def observer(self, observer: Observer) -> None:
        self.loader.observer = observer

    @property
    def snapshot_every(self) -> int:
        """A SagaState snapshot is saved every this many events (0: never)."""
        return self.loader.snapshot_every

    @snapshot_every.setter
    def snapshot_every(self, every: int) -> None:
        self.loader.snapshot_every = every

    @property
    def tracing(self) -> Tracing:
        """Starts the spans of instances and attempts (a no-op without OpenTelemetry)."""
        return self.stepper.tracing

    @tracing.setter
    def tracing(self, tracing: Tracing) -> None:
        self.stepper.tracing = tracing

    @property
    def default_retry(self) -> RetryPolicy:
        """Retry policy of steps when neither step nor workflow names one."""
        return self.stepper.default_retry

    @default_retry.setter
    def default_retry(self, policy: RetryPolicy) -> None:
        self.stepper.default_retry = policy

    @property
    def breakers(self) -> Breakers:
        """Circuit breakers shared by steps that declare one."""
        return self.stepper.breakers

    @breakers.setter
    def breakers(self, breakers: Breakers) -> None:
        self.stepper.breakers = breakers

    @property
    def steps_run(self) -> int:
        """Step and compensation attempts run to an outcome."""
        return self.stepper.steps_run

    @property
    def cache(self) -> LiveCache:
        """The live instances kept in memory, by id (sticky execution)."""
        return self.loader.cache

    @property
    def cache_hits(self) -> int:
        """Advances that found the instance's executor in the cache."""
        return self.loader.cache_hits

    @property
    def cache_misses(self) -> int:
        """Advances that replayed the instance from the journal."""
        return self.loader.cache_misses

    # -- starting -------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow | str,
        *args: Any,
        id: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Start an instance of ``workflow`` with ``args``; returns its id.

        Idempotent by ``id``: starting an id that exists returns it and changes nothing.

        Raises:
            UnknownWorkflowError: no workflow of that name is registered.
            EncodingError: an argument cannot be encoded (names it and its type).
            InvalidCommandError: the arguments do not fit the workflow's parameters.
            WorkflowError: ``id`` exists and runs another workflow, or the workflow
                needs a session and ``session_id`` is None.
            SessionNotFoundError, SessionClosedError, SessionExpiredError: ``session_id``
                names no open session.
        """
        instance_id, _ = await self._start(workflow, args, id, session_id)
        return instance_id

    async def execute(
        self,
        workflow: Workflow | str,
        *args: Any,
        id: str | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """:meth:`start` the instance, then wait for its :meth:`result`, in one call.

        The wait begins before the start, from the state the start itself
        leaves, so it costs one read fewer than ``start`` and ``result``
        (none at all when the end's notice carries the outcome). An ``id``
        that exists is awaited like any other.

        Raises:
            what :meth:`start` and :meth:`result` raise.
        """
        watch = await self.journal.watch(final=True)  # before the start: nothing after it is missed
        instance_id, started = await self._start(workflow, args, id, session_id)
        known = None
        if started is not None:
            known = (watch, apply_event(self._fold.initial(stream_id(instance_id)), started, 1))
        return await self._await(instance_id, timeout, known)

    async def _start(
        self, workflow: Workflow | str, args: tuple[Any, ...], id: str | None, session_id: str | None
    ) -> tuple[str, WorkflowStarted | None]:
        """:meth:`start`; also the ``WorkflowStarted`` it appended (None: the id existed)."""
        wf = self.registry.resolve(workflow)
        data = wf.encode_args(args)
        instance_id = id if id is not None else uuid.uuid4().hex
        check_stream_id(stream_id(instance_id))
        if session_id is not None:  # issue 5: bound first, so a closed session refuses the start
            await self.sessions.bind_workflow(session_id, instance_id, wf.on_session_end)
        elif wf.session:
            raise WorkflowError(
                f"workflow {wf.name!r} runs in a session: start it with session_id=... "
                "(open one with Sessions.open)"
            )
        trace = self.stepper.tracing.start_trace(f"start {wf.name}", {"sagalog.instance_id": instance_id})
        meta = {**self._meta, TRACEPARENT: trace} if trace else self._meta
        started = WorkflowStarted(wf.name, data, session_id=session_id)
        existing = await start_instance(self.journal, instance_id, started, meta, self.clock.now())
        return instance_id, started if existing is None else None

    # -- reading ----------------------------------------------------------------

    async def describe(self, instance_id: str) -> SagaState:
        """The instance's state, from its latest snapshot and the events after it.

        Raises:
            NotFoundError: there is no such instance.
        """
        return await describe(self.journal, self._fold, instance_id)

    async def result(self, instance_id: str, timeout: float | None = None) -> Any:
        """Wait until the instance ends and return its result (follows continue-as-new).

        ``timeout`` is in real seconds (None: wait for ever).

        Raises:
            WorkflowFailedError: it ended failed, compensated or compensation_failed.
            WorkflowCancelledError: it was cancelled.
            WorkflowParkedError: it is parked and waits for an operator.
            TimeoutError: ``timeout`` passed first.
            NotFoundError: there is no such instance.
        """
        return await self._await(instance_id, timeout)

    async def _await(
        self, instance_id: str, timeout: float | None, known: tuple[Watch, SagaState] | None = None
    ) -> Any:
        try:
            with anyio.fail_after(timeout):
                return await await_result(self.journal, self._fold, instance_id, self.snapshot_every, known)
        except TimeoutError:
            raise TimeoutError(f"workflow {instance_id!r} did not end within {timeout:g} seconds") from None

    # -- signals, cancel, operators -----------------------------------------------

    async def signal(
        self, instance_id: str, name: str, payload: Any = None, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Deliver signal ``name`` with ``payload``; it waits in a buffer until a wait takes it.

        ``metadata`` is added to the event's metadata (audit: who sent it, from where).

        Raises:
            NotFoundError: there is no such instance.
            WorkflowError: the instance has ended.
            EncodingError: the payload cannot be encoded.
        """
        if not isinstance(name, str) or not name:
            raise WorkflowError(f"a signal name must be a non-empty string, got {name!r}")
        data = encode_value(payload, f"payload of signal {name!r}")
        await self._append_input(
            instance_id, SignalReceived(name, data), refuse_ended=True, metadata=metadata
        )

    async def cancel(
        self, instance_id: str, reason: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Ask the instance to cancel: it compensates what it did, then ends ``cancelled``.

        Running non-detached child workflows are cancelled too. A no-op for an
        instance that already ended or is compensating.

        Raises:
            NotFoundError: there is no such instance.
        """
        state = await self._append_input(
            instance_id, CancelRequested(reason), refuse_ended=False, metadata=metadata
        )
        if state is not None and self.stepper.inflight.get(instance_id):
            await self._tick(instance_id, [], None)  # cancel the steps running here now

    async def _append_input(
        self,
        instance_id: str,
        event: WorkflowEvent,
        *,
        refuse_ended: bool,
        metadata: Mapping[str, str] | None = None,
    ) -> SagaState | None:
        """Append an input that needs no workflow code (signals, cancels), retrying races."""
        meta = self._with(metadata)
        return await append_input(
            self.journal, self._fold, self.clock, instance_id, event, refuse_ended=refuse_ended, meta=meta
        )

    def _with(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        """This runner's event metadata plus a caller's (an operator action's audit)."""
        return {**self._meta, **metadata} if metadata else self._meta

    async def retry_compensation(
        self, instance_id: str, actor: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        """Run the failed compensation of a ``compensation_failed`` instance again.

        Raises:
            WorkflowError: the instance is not waiting for an operator.
        """
        return await self._operator(instance_id, actor, retry=True, metadata=metadata)

    async def skip_compensation(
        self, instance_id: str, actor: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        """Give up on the failed compensation and go on with the next one.

        Raises:
            WorkflowError: the instance is not waiting for an operator.
        """
        return await self._operator(instance_id, actor, retry=False, metadata=metadata)

    async def _operator(
        self, instance_id: str, actor: str, *, retry: bool, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        state = await self.describe(instance_id)
        event = operator_decision(state, actor, retry=retry)
        # Appended as an input, not decided here: a client need not have the
        # workflow's code, and the worker that claims the instance runs the rest.
        after = await self._append_input(instance_id, event, refuse_ended=False, metadata=metadata)
        return after or state

    async def unpark(
        self, instance_id: str, actor: str = "", *, metadata: Mapping[str, str] | None = None
    ) -> SagaState:
        """Let a parked instance run again, once the code or data that parked it is fixed.

        Raises:
            WorkflowError: the instance is not parked.
            NonDeterminismError, UnknownWorkflowError, DecodingError: it still
                cannot run (nothing is appended).
        """
        state = await self.describe(instance_id)
        if state.status != "parked":
            raise WorkflowError(f"workflow {instance_id!r} is {state.status}, not parked")
        self.loader.forget(instance_id)
        async with self._lock(instance_id):
            live = await self.loader.reload(instance_id)
            await self.committer.commit(live, [WorkflowUnparked(actor)], start=False, metadata=metadata)
            return live.state

    # -- advancing ------------------------------------------------------------------

    async def advance(self, instance_id: str, *, taken_over: bool | None = None) -> SagaState:
        """Run the instance as far as it can go now, then return its state.

        Replays it (from the cache or the journal), fires due timers and
        timeouts, runs due steps (concurrently, to their outcome), and records
        every decision, until it waits for time, a signal or a child, or ends.
        Parks it when its workflow is unknown, non-deterministic or undecodable.

        ``taken_over`` is what the claim said (``Claim.taken_over``; None: no
        claim, or not known). Unless it is false, the last holder may have
        crashed in the middle of a step, so every attempt's start is recorded
        before the attempt runs and a step that crashes its worker uses up its
        attempts; true also counts a takeover (``Observer.takeover``). When
        false, a first commit that only schedules and starts steps is appended
        together with the first outcome: one commit fewer a claim.
        """
        token = logs.bind(instance_id=instance_id)
        try:
            with contextlib.ExitStack() as span:
                return await self._advance(instance_id, span, taken_over)
        finally:
            logs.reset(token)

    async def _advance(
        self, instance_id: str, span: contextlib.ExitStack, taken_over: bool | None
    ) -> SagaState:
        def loaded(live: Live) -> None:
            """Once the workflow is known: its span (the steps' parent) and log fields."""
            if opened:
                return  # a retried commit loads again
            opened.append(live)
            name = live.workflow.name
            if taken_over:
                self.loader.observer.takeover(name)
            attributes = {"sagalog.instance_id": instance_id, "sagalog.workflow": name}
            tracing = self.stepper.tracing
            handle = span.enter_context(tracing.span(f"workflow {name}", live.traceparent, attributes))
            if live.traceparent is None and handle.traceparent:
                live.set_trace(handle.traceparent, self._meta)  # this span roots the trace
            logs.update(workflow=name, trace_id=trace_id_of(live.traceparent))

        opened: list[Live] = []
        try:
            async with anyio.create_task_group() as tg:
                handoff: list[Handoff] = []
                try:
                    defer = taken_over is False
                    first = await self._tick(
                        instance_id, [], tg, claimed=True, handoff=handoff, loaded=loaded, defer=defer
                    )
                except BaseException:
                    self.stepper.drop_handoff(instance_id, handoff)
                    raise
                if handoff:  # the first step runs in this task rather than a new one
                    taken = handoff[0]
                    await self.stepper.run(instance_id, taken.workflow, taken.task, taken.scope, tg)
        finally:
            live = self.loader.cache.get(instance_id)
            if live is not None and live.deferred:  # its steps ended without an outcome (cancelled)
                self.loader.forget(instance_id)
                live = None
        if live is not None:
            return live.state
        try:
            return await self.describe(instance_id)
        except DecodingError:
            return first  # parked as undecodable: only the state seen on parking is readable

    async def record_deferred(self, instance_ids: Sequence[str], older_than: float) -> None:
        """Append the deferred first commits (see ``Committer.commit``) of these instances that
        were set aside more than ``older_than`` seconds ago: their steps run long, and the
        journal should show them started. The worker calls this on each heartbeat."""
        cutoff = self.clock.now() - timedelta(seconds=older_than)
        for instance_id in instance_ids:
            live = self.loader.cache.get(instance_id)
            if live is None or live.deferred_at is None or live.deferred_at > cutoff:
                continue
            async with self._lock(instance_id):
                if self.loader.cache.get(instance_id) is live and live.deferred:
                    with ignore_conflict():  # the outcome's commit appends it after a replay
                        await self.committer.commit(live, [], start=False, quiet=True)

    async def preload(self, instance_ids: Sequence[str]) -> None:
        """Replay into the cache, in one query, claimed instances not cached yet (see ``Loader.preload``)."""
        await self.loader.preload(instance_ids)

    async def adopt(
        self, histories: Mapping[str, Sequence[Event]], limit: int | None = None, *, claimed: bool = False
    ) -> None:
        """Replay into the cache instances whose events were just read (see ``Loader.adopt``)."""
        await self.loader.adopt(histories, limit, claimed=claimed)

    async def run_until_idle(self, limit: int = 100) -> int:
        """Advance every instance that is due now (by this runner's clock) until none is.

        Returns:
            How many advances were made.
        """
        advanced = 0
        while True:
            claims = await self.journal.claim(self.worker_id, self.lease_seconds, limit)
            now = self.clock.now()
            due = [c.stream_id for c in claims if c.stream_id.startswith("wf-") and c.ready_at <= now]
            # Keep the leases of the instances advanced below until they are done, so
            # another runner on the same journal does not run them at the same time.
            idle = [c.stream_id for c in claims if c.stream_id not in due]
            await self.journal.release(self.worker_id, idle)
            # issue 5: expire due sessions here too (cancelling or signalling their
            # bound instances); go round again only if that recorded something.
            ended = False
            for claim in claims:
                if claim.stream_id.startswith("session-") and claim.ready_at <= now:
                    ended |= await self.sessions.expire_if_due(claim.stream_id.removeprefix("session-"))
            if not due and not ended:
                return advanced
            try:
                taken_over = {c.stream_id for c in claims if c.taken_over}
                async with anyio.create_task_group() as tg:
                    for stream in due:
                        tg.start_soon(
                            functools.partial(
                                self.advance, stream.removeprefix("wf-"), taken_over=stream in taken_over
                            )
                        )
            finally:
                with anyio.CancelScope(shield=True):
                    await self.journal.release(self.worker_id, due)
            advanced += len(due)

    def _advancing(self, instance_id: str) -> bool:
        """Whether a task holds the instance now (and so its cached executor)."""
        lock = self._locks.get(instance_id)
        return lock is not None and lock.locked()

    def _lock(self, instance_id: str) -> InstanceLock:
        lock = self._locks.get(instance_id)
        if lock is None:
            if len(self._locks) > 4 * self.loader.cache.maxsize:
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[instance_id] = InstanceLock()
        return lock

    async def _tick(
        self,
        instance_id: str,
        inputs: Sequence[WorkflowEvent],
        tg: anyio.abc.TaskGroup | None,
        *,
        own: bool = False,
        claimed: bool = False,
        handoff: list[Handoff] | None = None,
        loaded: Callable[[Live], None] | None = None,
        defer: bool = False,
    ) -> SagaState:
        """Commit ``inputs`` and what follows from them; start due steps when ``tg`` is given.

        ``own`` is for the outcome of a step this runner ran, ``claimed`` for
        the first advance after a claim: then a cached executor (``claimed``:
        one that :meth:`preload` just read) is trusted without reading the
        stream's tail first (see ``Loader.load``). ``defer``: see ``Committer.commit``.
        """
        trust, fresh = own, claimed
        for _ in range(COMMIT_TRIES):
            try:
                async with self._lock(instance_id):
                    try:
                        live = await self.loader.load(instance_id, trust_cache=trust, trust_fresh=fresh)
                    except Idle as idle:
                        state, decided = idle.state, []
                    else:
                        if loaded is not None:
                            loaded(live)
                        orphan = await self.family.orphaned(live)
                        decided = await self.committer.commit_all(
                            live, [*inputs, *orphan], tg, handoff, defer
                        )
                        state = live.state
            except ConcurrencyError:
                self.loader.forget(instance_id)  # someone else appended: replay
                trust = fresh = False
                continue
            await self.committer.after_commit(instance_id, state, decided)
            return state
        raise ConcurrencyError(stream_id(instance_id), -1, -1)

    async def _park_running(self, instance_id: str, reason: str) -> None:
        """Park an instance whose step cannot run here (its code is not registered)."""
        async with self._lock(instance_id):
            with ignore_conflict():  # someone else moved it on; the next advance decides again
                await self.loader.park(instance_id, "unknown_workflow", reason)
