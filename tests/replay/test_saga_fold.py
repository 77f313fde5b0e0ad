"""SagaState is a pure fold: snapshot + tail equals the whole history, for every split."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sagalog.engine import Registry, Runner, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import wait_signal
from sagalog.replay.events import (
    CancelRequested,
    SignalReceived,
    SignalWaitStarted,
    StepFailed,
    StepScheduled,
    StepStarted,
    TimerStarted,
    WorkflowEvent,
    WorkflowStarted,
    decode_event,
    encode_event,
)
from sagalog.replay.saga import SagaFold, SagaState, apply_event, ready_at
from sagalog.storage import Event, connect

from sagalog.clock import ManualClock

HERE = Path(__file__).parent / "histories"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
reg = Registry()


@step(registry=reg, name="fold.do", retry=Retry.fixed(5, attempts=2))
async def do(tag: str) -> str:
    if tag == "bad":
        raise RuntimeError("bad tag")
    return tag


@step(registry=reg, name="fold.undo", retry=Retry.none())
async def undo(tag: str) -> None:
    return None


@workflow(registry=reg, name="fold.saga")
def saga(ctx: Any, tags: list[str]) -> Any:
    for tag in tags:
        yield do(tag).compensate(undo)
    return (yield wait_signal("done"))


def stored(pairs: list[tuple[int, WorkflowEvent]]) -> list[Event]:
    out = []
    for version, event in pairs:
        new = encode_event(event)
        out.append(Event(version, "wf-f", version, new.type, new.payload, new.metadata, "default", NOW))
    return out


async def recorded_histories() -> list[list[Event]]:
    """Histories that went through compensation, cancel, signals and retries."""
    clock = ManualClock()
    journal = await connect("memory://")
    runner = Runner(journal, reg, clock=clock)
    ids = [
        await runner.start(saga, ["a", "b", "bad"]),
        await runner.start(saga, ["a"]),
        await runner.start(saga, ["a", "b"]),
    ]
    await runner.run_until_idle()
    clock.advance(5)
    await runner.run_until_idle()
    await runner.signal(ids[1], "done", 1)
    await runner.cancel(ids[2], "stop")
    await runner.run_until_idle()
    histories = [await journal.read_stream(f"wf-{i}") for i in ids]
    golden = msgspec.json.decode((HERE / "book_v1.json").read_bytes(), type=list[tuple[int, WorkflowEvent]])
    return [*histories, stored(golden)]


def fold_all(events: list[Event]) -> SagaState:
    fold = SagaFold()
    state = fold.initial("wf-f")
    for event in events:
        state = fold.apply(state, event)
    return state


@pytest.mark.anyio
async def test_snapshot_plus_tail_equals_the_whole_for_every_split() -> None:
    fold = SagaFold()
    for history in await recorded_histories():
        whole = fold_all(history)
        for split in range(len(history) + 1):
            snapshot = fold.encode(fold_all(history[:split]))
            state = fold.decode(snapshot)
            for event in history[split:]:
                state = fold.apply(state, event)
            assert state == whole, split


@pytest.mark.anyio
async def test_the_recorded_histories_end_where_expected() -> None:
    failed, signalled, cancelled, golden = [fold_all(h) for h in await recorded_histories()]
    assert failed.status == "compensated"
    assert [s.name for s in failed.steps.values() if s.kind == "compensation"] == ["fold.undo"] * 2
    assert failed.compensations == ()
    assert signalled.status == "completed"
    assert cancelled.status == "cancelled"
    assert golden.status == "completed"
    assert [s.attempts for s in failed.steps.values()][:3] == [1, 1, 2]


def test_ready_at_follows_the_pending_work() -> None:
    state = SagaState("x")
    assert ready_at(state, NOW) is None  # nothing yet
    state = apply_event(state, WorkflowStarted("w", b"\x90"), 1)
    assert ready_at(state, NOW) == NOW  # the code must decide
    state = apply_event(state, StepScheduled(0, "s", b""), 2)
    assert ready_at(state, NOW) == NOW
    state = apply_event(state, StepStarted(0, 1), 3)
    later = NOW + timedelta(seconds=30)
    state = apply_event(state, StepFailed(0, 1, "E", "m", retry_at=later), 4)
    assert ready_at(state, NOW) == later  # a durable backoff
    state = apply_event(state, TimerStarted(1, NOW + timedelta(seconds=10)), 5)
    assert ready_at(state, NOW) == NOW + timedelta(seconds=10)


def test_signals_wake_only_a_matching_wait() -> None:
    state = apply_event(SagaState("x"), WorkflowStarted("w", b"\x90"), 1)
    state = apply_event(state, SignalWaitStarted(0, "go"), 2)
    assert ready_at(state, NOW) is None  # waits for a signal only: out of the work index
    state = apply_event(state, SignalReceived("other", b"\xc0"), 3)
    assert ready_at(state, NOW) is None
    assert state.signals == ("other",)
    state = apply_event(state, SignalReceived("go", b"\xc0"), 4)
    assert ready_at(state, NOW) == NOW
    state = apply_event(state, CancelRequested("x"), 5)
    assert state.cancel_requested == "x"


NAMES = st.lists(st.sampled_from(["go", "stop"]), max_size=6)


@given(NAMES, NAMES)
def test_every_signal_is_taken_at_most_once(sent: list[str], waited: list[str]) -> None:
    state = apply_event(SagaState("x"), WorkflowStarted("w", b"\x90"), 1)
    version = 1
    for seq, name in enumerate(waited):
        version += 1
        state = apply_event(state, SignalWaitStarted(seq, name), version)
    for name in sent:
        version += 1
        state = apply_event(state, SignalReceived(name, b"\xc0"), version)
    for name in ("go", "stop"):
        delivered = min(sent.count(name), waited.count(name))
        assert list(state.waits.values()).count(name) == waited.count(name) - delivered
        assert state.signals.count(name) == sent.count(name) - delivered


def test_a_corrupt_event_is_a_decoding_error() -> None:
    from sagalog.errors import DecodingError

    bad = Event(1, "wf-f", 1, "StepScheduled", b"\xff", {"schema": "1"}, "default", NOW)
    with pytest.raises(DecodingError, match=r"event 1 \(StepScheduled\) of 'wf-f' cannot be decoded"):
        SagaFold().apply(SagaState("f"), bad)
    newer = Event(1, "wf-f", 1, "StepStarted", b"", {"schema": "9"}, "default", NOW)
    with pytest.raises(DecodingError, match=re.escape("written with schema 9; this sagalog reads up to 1")):
        decode_event(newer)
