"""Run a workflow instance to its end under one injected fault, on a clock that costs no time.

The fault model (see docs/guarantees.md):

* ``crash``: the worker process dies instead of making append number ``at``
  (everything appended before is durable, nothing after it happens); a fresh
  runner then resumes from the journal alone.
* ``cancel``: right after append ``at``, a client cancels the instance.
* ``crash_cancel``: a crash as above, and a client cancels the instance
  before another runner resumes it.
* ``takeover``: before append ``at``, the worker's lease is lost: another
  runner advances the instance first. The first worker lives on as a zombie;
  its append then fails on the expected version (the fencing token) and it
  replays.

Signals come from a client, never from the faulty worker: ``early`` sends
one ``go`` right after the start (a later wait times out), ``late`` sends
each wait its signal while it waits, ``never`` lets every wait time out. An instance waiting for an operator
(``compensation_failed``) gets an operator's retry, as many as it takes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio
import anyio.lowlevel
import msgspec

from sagalog.clock import ManualClock
from sagalog.engine import Registry, Runner, Workflow
from sagalog.replay import TERMINAL, SagaState, WorkflowEvent, apply_event, decode_event, ready_at
from sagalog.replay.events import CompensationCompleted, StepCompleted, StepStarted
from sagalog.storage import Event, Journal, StreamFilter
from sagalog.testing.plans import CURRENT_WORLD, SIGNAL, World

FaultKind = Literal["none", "crash", "cancel", "takeover", "crash_cancel"]
SignalMode = Literal["early", "late", "never"]


class Crash(BaseException):
    """The worker process died (a BaseException, so no ``except Exception`` in the engine stops it)."""


class Fault(msgspec.Struct, frozen=True):
    """One fault injected at the worker's append number ``at`` (1-based; a cancel at 0
    comes right after the start, before the worker appends anything)."""

    kind: FaultKind = "none"
    at: int = 0


NO_FAULT = Fault()
"""A run without a fault."""


class SteppingClock(ManualClock):
    """A :class:`ManualClock` whose sleepers move time themselves.

    ``sleep`` first lets every other ready task run (so a step that returns
    at once beats its own timeout), then jumps the clock to its deadline:
    per-attempt timeouts cost no real time. Timers and backoffs are moved
    over by :func:`drive`, as with a plain ManualClock.
    """

    yields = 50
    """Scheduler turns a sleeper gives everything else before it jumps."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time, moving it if nobody else does."""
        deadline = self.now() + timedelta(seconds=max(0.0, seconds))
        for _ in range(self.yields):
            await anyio.lowlevel.checkpoint()
        if self.now() < deadline:
            self.set(deadline)


Hook = Callable[[str], Awaitable[None]]


class TappedJournal:
    """Forwards to a journal, moves the world's watermark, and injects ``fault`` once.

    Only ``append`` is intercepted; everything else is the wrapped journal's.
    """

    def __init__(
        self,
        journal: Journal,
        world: World,
        fault: Fault = NO_FAULT,
        *,
        before: Hook | None = None,
        after: Hook | None = None,
    ) -> None:
        self._journal = journal
        self.world = world
        self.fault = fault
        self.before = before
        self.after = after
        self.appends = 0
        """Appends asked of this journal so far (the crashed one included)."""
        self.fired = False
        """Whether the fault struck."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    async def append(self, stream_id: str, expected_version: int, events: Any, **kwargs: Any) -> Any:
        """The wrapped journal's append, with the fault at append number ``fault.at``."""
        self.appends += 1
        strike = self.fault.kind != "none" and self.appends == self.fault.at and not self.fired
        if strike:
            self.fired = True
            if self.fault.kind in ("crash", "crash_cancel"):
                raise Crash(f"died instead of append {self.appends}")
            if self.fault.kind == "takeover" and self.before is not None:
                await self.before(stream_id)
        stored = await self._journal.append(stream_id, expected_version, events, **kwargs)
        if stored:
            self.world.watermark = max(self.world.watermark, stored[-1].position)
        if strike and self.fault.kind == "cancel" and self.after is not None:
            await self.after(stream_id)
        return stored


class Vanishing:
    """Forwards to a journal, except that leases are never given back (``release`` does nothing).

    A runner on it dies the way ``kill -9`` kills a worker: cancel it, and its
    leases stay until they expire, so another runner's claim is a takeover.
    """

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    async def release(self, owner: str, stream_ids: Sequence[str]) -> None:
        """Give nothing back: a dead process cannot."""


def is_crash(exc: BaseException) -> bool:
    """Whether ``exc`` is a :class:`Crash`, possibly inside exception groups from task groups."""
    if isinstance(exc, Crash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(is_crash(e) for e in exc.exceptions)
    return False


async def family(journal: Journal, instance_id: str) -> list[str]:
    """The instance and its children (ids ``<id>-<n>``), parents first."""
    streams = await journal.list_streams(StreamFilter(prefix=f"wf-{instance_id}", limit=10_000))
    ids = [info.stream_id.removeprefix("wf-") for info in streams]
    return sorted(i for i in ids if i == instance_id or i.startswith(f"{instance_id}-"))


async def histories(journal: Journal, instance_id: str) -> dict[str, list[Event]]:
    """The stored events of the instance and of each of its children."""
    return {i: await journal.read_stream(f"wf-{i}") for i in await family(journal, instance_id)}


def decoded(events: Sequence[Event]) -> list[tuple[int, WorkflowEvent]]:
    """``(version, event)`` pairs of stored events."""
    return [(e.version, decode_event(e)) for e in events]


class Run(msgspec.Struct):
    """What :func:`run_instance` did."""

    instance_id: str
    world: World
    worker: TappedJournal
    """The first worker's journal (its ``appends`` count every append it asked for)."""
    crashed: bool = False
    """The first worker died and another resumed."""
    died_at: int | None = None
    """The newest journal position when the first worker died (None: it did not)."""


async def drive(
    runner: Runner,
    client: Runner,
    clock: ManualClock,
    instance_id: str,
    signals: SignalMode,
    rounds: int = 300,
    *,
    taken_over: bool = False,
) -> SagaState:
    """Advance the instance and its children until all have ended, moving the clock to each wake-up.

    Advances directly (no work-index claims: a dead runner's leases would
    hold the streams until they expire), each as if claimed: from a lease
    that ran out when ``taken_over``, else from one given back (see
    ``Runner.advance``). ``client`` sends late signals and operator retries.
    """
    for _ in range(rounds):
        wakes: list[datetime] = []
        for instance in await family(runner.journal, instance_id):
            state = await runner.advance(instance, taken_over=taken_over)
            # Every wait gets its late signal before the clock may reach the wait's timeout.
            for _ in range(100):
                if signals != "late" or not state.waits:
                    break
                await client.signal(instance, next(iter(state.waits.values())), "late")
                state = await runner.advance(instance, taken_over=taken_over)
            if state.status == "compensation_failed":
                await client.retry_compensation(instance, "operator")
                state = await runner.advance(instance, taken_over=taken_over)
            wake = ready_at(state, clock.now())
            if wake is not None:
                wakes.append(wake)
        states = [await runner.describe(i) for i in await family(runner.journal, instance_id)]
        if all(s.status in TERMINAL for s in states) and not wakes:
            return states[0]
        if wakes:
            clock.set(max(min(wakes), clock.now()))
    raise AssertionError(f"{instance_id} did not end in {rounds} rounds")


async def run_instance(
    journal: Journal,
    registry: Registry,
    workflow: Workflow | str,
    args: Sequence[Any],
    *,
    instance_id: str = "i",
    fault: Fault = NO_FAULT,
    signals: SignalMode = "late",
    world: World | None = None,
) -> Run:
    """Start ``workflow(*args)`` and run it to its end with ``fault`` injected into the worker.

    Returns the :class:`Run`; the instance's history is in ``journal``.
    """
    world = world or World()
    token = CURRENT_WORLD.set(world)
    try:
        return await _run(journal, registry, workflow, args, instance_id, fault, signals, world)
    finally:
        CURRENT_WORLD.reset(token)


async def _run(
    journal: Journal,
    registry: Registry,
    workflow: Workflow | str,
    args: Sequence[Any],
    instance_id: str,
    fault: Fault,
    signals: SignalMode,
    world: World,
) -> Run:
    clock = SteppingClock()

    def runner(on: Any) -> Runner:
        # A fixed worker id keeps metadata stable; a snapshot every 5 events puts
        # snapshots inside most histories, so describe() and replays go through them.
        return Runner(on, registry, clock=clock, worker_id="props", snapshot_every=5)

    client = runner(TappedJournal(journal, world))
    rival = runner(TappedJournal(journal, world))

    async def cancel(_stream: str) -> None:
        await client.cancel(instance_id, "cancelled by the fault")

    async def take_over(stream: str) -> None:
        if stream.startswith("wf-") and await journal.read_stream(stream, 1, 1):
            await rival.advance(stream.removeprefix("wf-"), taken_over=True)

    tapped = TappedJournal(journal, world, fault, before=take_over, after=cancel)
    worker = runner(tapped)
    await client.start(workflow, *args, id=instance_id)
    if signals == "early":
        await client.signal(instance_id, SIGNAL, "early")
    if fault.kind == "cancel" and fault.at == 0:  # before the worker does anything
        tapped.fired = True
        await cancel("")
    crashed, died_at = False, None
    try:
        await drive(worker, client, clock, instance_id, signals)
    except BaseException as exc:
        if not is_crash(exc):
            raise
        crashed, died_at = True, world.watermark
        clock.advance(1)
        if fault.kind == "crash_cancel":
            await cancel("")
        # Whatever the dead worker held is taken over: starts are recorded before attempts run.
        resumer = runner(TappedJournal(journal, world))
        await drive(resumer, client, clock, instance_id, signals, taken_over=True)
    return Run(instance_id, world, tapped, crashed, died_at)


class Outcome(msgspec.Struct, frozen=True):
    """What must not depend on crashes: status, result, error and every recorded result."""

    status: str
    result: Any
    message: str
    steps: dict[int, Any]
    """Step results by command index."""
    undone: dict[int, Any]
    """Compensation results by the command index of the step they undo."""


async def outcome(journal: Journal, instance_id: str) -> dict[str, Outcome]:
    """The :class:`Outcome` of the instance and each child, by instance id."""
    found = {}
    for instance, events in (await histories(journal, instance_id)).items():
        state = SagaState(instance)
        for version, event in decoded(events):
            state = apply_event(state, event, version)
        steps, undone = {}, {}
        for seq, s in state.steps.items():
            if s.result is None:
                continue
            value = msgspec.msgpack.decode(s.result)
            if s.kind == "compensation" and s.for_seq is not None:
                undone[s.for_seq] = value
            else:
                steps[seq] = value
        # A crash-interrupted attempt counts as an attempt: only the count may differ.
        message = re.sub(r"after \d+ attempt\(s\)", "after n attempt(s)", state.message)
        # Runs compared have different ids; child ids ('<id>-<n>') show up in messages.
        message = message.replace(f"'{instance_id}-", "'<id>-")
        result = None if state.result is None else msgspec.msgpack.decode(state.result)
        found[instance] = Outcome(state.status, result, message, steps, undone)
    return found


async def read_everything(journal: Journal) -> list[Event]:
    """Every event of the journal's namespace, in global order."""
    events: list[Event] = []
    after = 0
    while True:
        page = await journal.read_all(after, 5000)
        events.extend(page)
        if len(page) < 5000:
            return events
        after = page[-1].position


def executions_after_completion(
    world: World, events_by_instance: dict[str, list[Event]], *, died_at: int | None = None
) -> list[str]:
    """Executions that began after their step's completion was recorded, or whose attempt
    was never recorded as started (must be none).

    Only a worker that died (when the journal's newest position was
    ``died_at``) may have left attempts unrecorded: a claim's first attempts
    record their start with their outcome, and a takeover records every start
    before its attempt runs (see ``Runner.advance``).
    """
    done: dict[str, int] = {}
    started: set[tuple[str, int]] = set()
    for instance, events in events_by_instance.items():
        for event in events:
            decoded_event = decode_event(event)
            if isinstance(decoded_event, StepCompleted | CompensationCompleted):
                done.setdefault(f"{instance}:{decoded_event.seq}", event.position)
            elif isinstance(decoded_event, StepStarted):
                started.add((f"{instance}:{decoded_event.seq}", decoded_event.attempt))
    problems = []
    for effect in world.effects:
        if effect.key in done and effect.watermark >= done[effect.key]:
            problems.append(f"{effect.what} ({effect.key}) attempt {effect.attempt} ran after its completion")
        unrecorded_ok = died_at is not None and effect.watermark <= died_at
        if (effect.key, effect.attempt) not in started and not unrecorded_ok:
            problems.append(f"{effect.what} ({effect.key}) attempt {effect.attempt} ran without StepStarted")
    return problems
