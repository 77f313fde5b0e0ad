"""Replay equals live, even when the process dies between any two journal appends.

A crash is simulated by a journal whose k-th append raises (the process dies
before writing it: everything up to append k-1 is durable). A fresh Runner
then resumes from the journal alone. The outcome must equal an uninterrupted
run's; no step whose completion was recorded runs again; a step whose
completion was not recorded runs again with a higher attempt number and the
same idempotency key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from saga_helpers import make_runner
from sagalog.engine import Registry, Runner, step, step_context, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import gather, sleep, wait_signal
from sagalog.replay.events import CompensationCompleted, StepCompleted, StepStarted, decode_event
from sagalog.replay.saga import TERMINAL, ready_at
from sagalog.storage import Journal, StreamFilter, connect

from sagalog.clock import ManualClock
from sagalog.errors import StepError

pytestmark = pytest.mark.anyio

reg = Registry()
effects: list[tuple[str, int, str]] = []
"""(idempotency key, attempt, what) for every attempt that ran."""


class Crash(BaseException):
    """The process died."""


@step(registry=reg, name="crash.work", retry=Retry.fixed(1, attempts=10))
async def work(tag: str, fail_first: int) -> str:
    ctx = step_context()
    effects.append((ctx.idempotency_key, ctx.attempt, f"work {tag}"))
    if ctx.attempt <= fail_first:
        raise ConnectionError(f"{tag} flaked")
    return tag.upper()


@step(registry=reg, name="crash.undo", retry=Retry.fixed(1, attempts=10))
async def undo(result: str) -> str:
    ctx = step_context()
    effects.append((ctx.idempotency_key, ctx.attempt, f"undo {result}"))
    return f"undone {result}"


@step(registry=reg, name="crash.boom", retry=Retry.none())
async def boom(tag: str) -> None:
    ctx = step_context()
    effects.append((ctx.idempotency_key, ctx.attempt, f"boom {tag}"))
    raise ValueError(f"{tag} failed for good")


class Op(msgspec.Struct, frozen=True, array_like=True):
    """One instruction of a random saga plan."""

    kind: str  # work | gather | sleep | signal | boom | catch | child
    tag: str
    fail_first: int = 0
    compensate: bool = False
    width: int = 1


@workflow(registry=reg, name="crash.saga")
def saga(ctx: Any, plan: list[Op]) -> Any:
    out: list[Any] = []
    for op in plan:
        match op.kind:
            case "work":
                call = work(op.tag, op.fail_first)
                out.append((yield call.compensate(undo) if op.compensate else call))
            case "gather":
                calls = [work(f"{op.tag}{i}", op.fail_first) for i in range(op.width)]
                out.append((yield gather(*calls)))
            case "sleep":
                yield sleep(seconds=30)
            case "signal":
                out.append((yield wait_signal("go")))
            case "boom":
                yield boom(op.tag)
            case "child":
                out.append((yield saga_child(op.tag)))
            case "catch":
                try:
                    yield boom(op.tag)
                except StepError as exc:
                    out.append(exc.message)
    return out


@workflow(registry=reg, name="crash.child")
def saga_child(ctx: Any, tag: str) -> Any:
    first = yield work(f"{tag}-kid", 0)
    yield sleep(seconds=5)
    return first


class CrashingJournal:
    """Forwards to a journal; the append numbered ``crash_at`` raises Crash instead."""

    def __init__(self, journal: Journal, crash_at: int | None) -> None:
        self._journal = journal
        self.crash_at = crash_at
        self.appends = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._journal, name)

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        self.appends += 1
        if self.appends == self.crash_at:
            raise Crash(f"died before append {self.appends}")
        return await self._journal.append(*args, **kwargs)


async def drive_direct(runner: Runner, clock: ManualClock, iid: str, signal: bool) -> None:
    """Advance the instance and its children until it ends, moving the clock to each wake-up.

    No work-index claims: a crashed runner's leases would hold the streams.
    """
    for _ in range(80):
        wakes = []
        for instance in await family(runner.journal, iid):
            state = await runner.advance(instance)
            if signal and state.waits:
                await runner.signal(state.instance_id, "go", "signalled")
                state = await runner.advance(state.instance_id)
            wake = ready_at(state, clock.now())
            if wake is not None:
                wakes.append(wake)
        top = await runner.describe(iid)
        if (top.status in TERMINAL or top.status == "compensation_failed") and not wakes:
            return
        if wakes:
            clock.set(max(min(wakes), clock.now()))
    raise AssertionError("did not end")


async def outcome(journal: Journal, iid: str) -> tuple[Any, ...]:
    """What must be equal with and without a crash."""
    state = await make_runner(journal, reg, ManualClock()).describe(iid)
    results = {
        seq: msgspec.msgpack.decode(s.result) for seq, s in state.steps.items() if s.result is not None
    }
    # A crash-interrupted attempt counts as an attempt, so only the count may differ.
    message = re.sub(r"after \d+ attempt\(s\)", "after n attempt(s)", state.message)
    return state.status, state.result, message, results


async def run_once(
    journal: Journal, plan: Sequence[Op], crash_at: int | None, iid: str
) -> tuple[CrashingJournal, bool]:
    """Run ``plan``; crash at append ``crash_at`` and resume with a fresh runner. True if it crashed."""
    clock = ManualClock()
    wrapped = CrashingJournal(journal, crash_at)
    first = make_runner(wrapped, reg, clock)  # type: ignore[arg-type]
    signal = any(op.kind == "signal" for op in plan)
    try:
        await first.start(saga, list(plan), id=iid)
        await drive_direct(first, clock, iid, signal)
    except BaseException as exc:  # Crash, possibly inside an ExceptionGroup from a task group
        if not _is_crash(exc):
            raise
        crashed = True
    else:
        return wrapped, False
    assert crashed
    await check_resume(journal, plan, iid, clock, signal)
    return wrapped, True


def _is_crash(exc: BaseException) -> bool:
    if isinstance(exc, Crash):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_crash(e) for e in exc.exceptions)
    return False


async def family(journal: Journal, iid: str) -> list[str]:
    """The instance and its children (``<id>-<seq>``), parents first."""
    streams = await journal.list_streams(StreamFilter(prefix=f"wf-{iid}", limit=1000))
    ids = [info.stream_id.removeprefix("wf-") for info in streams]
    return sorted(i for i in ids if i == iid or i.startswith(f"{iid}-"))


async def recorded(journal: Journal, iid: str) -> list[tuple[str, Any]]:
    """(instance, event) of the instance and its children, in order."""
    found = []
    for instance in await family(journal, iid):
        for stored in await journal.read_stream(f"wf-{instance}"):
            found.append((instance, decode_event(stored)))
    return found


async def check_resume(
    journal: Journal, plan: Sequence[Op], iid: str, clock: ManualClock, signal: bool
) -> None:
    """Resume after a crash and check the at-least-once / exactly-once-recorded rules."""
    before = await recorded(journal, iid)
    if not before:  # died before the start was recorded: starting again is the resume
        await make_runner(journal, reg, clock).start(saga, list(plan), id=iid)
    done = {f"{i}:{e.seq}" for i, e in before if isinstance(e, StepCompleted | CompensationCompleted)}
    started = {f"{i}:{e.seq}": e.attempt for i, e in before if isinstance(e, StepStarted)}
    mark = len(effects)
    clock.advance(1)
    await drive_direct(make_runner(journal, reg, clock), clock, iid, signal)
    for key, attempt, _ in effects[mark:]:
        assert key not in done, f"step {key} ran again although its completion was recorded"
        if key in started:
            assert attempt > started[key], "a re-run must have a new attempt number"
    completions: dict[str, int] = {}
    for instance, event in await recorded(journal, iid):
        if isinstance(event, StepCompleted | CompensationCompleted):
            key = f"{instance}:{event.seq}"
            completions[key] = completions.get(key, 0) + 1
    assert all(n == 1 for n in completions.values()), completions


ops = st.one_of(
    st.builds(Op, st.just("work"), st.sampled_from("abc"), st.integers(0, 1), st.booleans()),
    st.builds(
        Op, st.just("gather"), st.sampled_from("gh"), st.integers(0, 1), st.just(False), st.integers(1, 3)
    ),
    st.builds(Op, st.just("sleep"), st.just("s")),
    st.builds(Op, st.just("signal"), st.just("s")),
    st.builds(Op, st.sampled_from(["boom", "catch"]), st.sampled_from("xy")),
    st.builds(Op, st.just("child"), st.sampled_from("kl")),
)


@given(plan=st.lists(ops, min_size=1, max_size=6), where=st.floats(0, 1))
async def test_replay_equals_live_under_a_crash_at_any_append(plan: list[Op], where: float) -> None:
    clean = await connect("memory://")
    crashed = await connect("memory://")
    try:
        wrapped, _ = await run_once(clean, plan, None, "i")
        crash_at = 1 + int(where * (wrapped.appends - 1))
        _, did_crash = await run_once(crashed, plan, crash_at, "i")
        assert did_crash
        assert await outcome(crashed, "i") == await outcome(clean, "i")
    finally:
        await clean.close()
        await crashed.close()


FIXED = [
    Op("work", "a", compensate=True),
    Op("gather", "g", fail_first=1, width=2),
    Op("sleep", "s"),
    Op("work", "b", fail_first=1, compensate=True),
    Op("catch", "x"),
    Op("child", "k"),
    Op("boom", "y"),
]


async def test_crash_at_every_append_point_on_each_backend(journal_url: str) -> None:
    reference = await connect("memory://")
    wrapped, _ = await run_once(reference, FIXED, None, "ref")
    expected = await outcome(reference, "ref")
    assert expected[0] == "compensated"
    await reference.close()
    journal = await connect(journal_url)
    try:
        for crash_at in range(1, wrapped.appends + 1):
            _, did_crash = await run_once(journal, FIXED, crash_at, f"k{crash_at}")
            assert did_crash
            assert await outcome(journal, f"k{crash_at}") == expected, crash_at
    finally:
        await journal.close()

