"""The session fold: one test per event, and fold(all) == fold(snapshot, tail)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sagalog.replay.folding import fold_events, load_state, snapshot_if_due
from sagalog.replay.sessions import (
    SESSION_FOLD,
    BoundWorkflow,
    SessionChanged,
    SessionClosed,
    SessionEvent,
    SessionExpired,
    SessionOpened,
    SessionState,
    SessionTouched,
    WorkflowBound,
    WorkflowsNotified,
    decode_event,
    encode_event,
)
from sagalog.storage import Event, NewEvent, connect

from sagalog.errors import DecodingError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stored(events: list[SessionEvent], stream: str = "session-s1") -> list[Event]:
    """Session events as the journal would hand them back."""
    records = []
    for version, event in enumerate(events, start=1):
        new = encode_event(event)
        records.append(Event(version, stream, version, new.type, new.payload, new.metadata, "default", T0))
    return records


def fold(events: list[SessionEvent]) -> SessionState:
    return fold_events(SESSION_FOLD, SESSION_FOLD.initial("session-s1"), stored(events))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


OPENED = SessionOpened("s1", "checkout", T0, {"cart": [1, 2]}, lifetime=3600.0, idle_timeout=60.0)


def test_initial_state_is_absent() -> None:
    state = SESSION_FOLD.initial("session-s1")
    assert (state.session_id, state.status, state.version) == ("s1", "absent", 0)
    assert state.next_deadline is None and state.due(at(10**6)) is None


def test_opened() -> None:
    state = fold([OPENED])
    assert state.status == "open" and state.kind == "checkout"
    assert state.attributes == {"cart": [1, 2]}
    assert state.created_at == state.last_active_at == T0
    assert state.expires_at == at(3600) and state.idle_deadline == at(60)
    assert state.next_deadline == at(60) and state.version == 1


def test_changed_merges_replaces_and_deletes() -> None:
    merged = fold([OPENED, SessionChanged(at(5), {"user": "ann", "n": 1}, ("cart",))])
    assert merged.attributes == {"user": "ann", "n": 1}
    assert merged.changes == 1 and merged.last_active_at == at(5)
    assert merged.idle_deadline == at(65)
    replaced = fold([OPENED, SessionChanged(at(6), {"x": True}, replace=True)])
    assert replaced.attributes == {"x": True}


def test_touched_moves_only_the_idle_deadline() -> None:
    state = fold([OPENED, SessionTouched(at(30)), SessionTouched(at(50))])
    assert state.touches == 2 and state.idle_deadline == at(110)
    assert state.expires_at == at(3600) and state.version == 3


def test_workflow_bound_replaces_an_earlier_binding() -> None:
    state = fold(
        [
            OPENED,
            WorkflowBound(at(1), "wf1", "cancel"),
            WorkflowBound(at(2), "wf2", "signal"),
            WorkflowBound(at(3), "wf1", "none"),
        ]
    )
    assert state.workflows == (
        BoundWorkflow("wf2", "signal", at(2)),
        BoundWorkflow("wf1", "none", at(3)),
    )
    assert state.last_active_at == at(3)


def test_closed() -> None:
    state = fold([OPENED, SessionClosed(at(9), "user logged out")])
    assert (state.status, state.ended_at, state.end_reason) == ("closed", at(9), "user logged out")
    assert state.next_deadline is None and state.due(at(10**6)) is None


def test_expired() -> None:
    state = fold([OPENED, SessionExpired(at(61), "idle", at(60))])
    assert (state.status, state.end_reason, state.ended_at) == ("expired", "idle", at(61))
    assert state.next_deadline is None


def test_workflows_notified_ends_the_pending_notification() -> None:
    bound: list[SessionEvent] = [OPENED, WorkflowBound(at(1), "wf1", "cancel"), SessionClosed(at(9), "bye")]
    pending = fold(bound)
    assert pending.notification_pending and pending.ready_at == at(9)
    done = fold([*bound, WorkflowsNotified(at(10), ("wf1",))])
    assert done.workflows_notified and not done.notification_pending
    assert done.ready_at is None and done.version == 4
    only_none = fold([OPENED, WorkflowBound(at(1), "wf1", "none"), SessionClosed(at(9))])
    assert not only_none.notification_pending and only_none.ready_at is None
    assert fold([OPENED]).ready_at == fold([OPENED]).next_deadline == at(60)


def test_due_prefers_the_absolute_deadline() -> None:
    state = fold([SessionOpened("s1", "k", T0, lifetime=10.0, idle_timeout=10.0)])
    assert state.due(at(9)) is None
    assert state.due(at(10)) == ("lifetime", at(10))
    idle = fold([SessionOpened("s1", "k", T0, lifetime=100.0, idle_timeout=10.0)])
    assert idle.due(at(10)) == ("idle", at(10))


def test_event_records_carry_type_and_schema() -> None:
    new = encode_event(SessionTouched(T0), {"actor": "me"})
    assert new.type == "SessionTouched" and new.metadata == {"actor": "me", "schema": "1"}


def test_corrupt_and_foreign_events_are_refused_with_their_place() -> None:
    good = stored([OPENED])[0]
    bad = msgspec.structs.replace(good, payload=b"\xc1garbage")
    with pytest.raises(DecodingError, match=r"event 1 \(SessionOpened\) of 'session-s1' cannot be decoded"):
        decode_event(bad)
    with pytest.raises(DecodingError, match="is not a session event"):
        decode_event(msgspec.structs.replace(good, type="StepCompleted"))
    with pytest.raises(DecodingError, match="holds a SessionOpened payload"):
        decode_event(msgspec.structs.replace(good, type="SessionClosed"))
    with pytest.raises(DecodingError, match="written with schema 9; this sagalog reads up to 1"):
        decode_event(msgspec.structs.replace(good, metadata={"schema": "9"}))


def test_snapshot_round_trip_and_unreadable_snapshot() -> None:
    state = fold([OPENED, WorkflowBound(at(1), "wf1", "signal")])
    assert SESSION_FOLD.decode(SESSION_FOLD.encode(state)) == state
    with pytest.raises(DecodingError, match="session snapshot cannot be decoded"):
        SESSION_FOLD.decode(b"\x00\x01")


# --- property: fold(all) == fold(snapshot, tail) ----------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
names = st.sampled_from(["a", "b", "c", "cart", "user"])


@st.composite
def histories(draw: st.DrawFn) -> list[SessionEvent]:
    """An opened session followed by random changes, maybe ended."""
    clock = [0.0]

    def tick() -> datetime:
        clock[0] += draw(st.floats(0, 100))
        return at(clock[0])

    events: list[SessionEvent] = [
        SessionOpened(
            "s1",
            draw(st.sampled_from(["chat", "checkout"])),
            tick(),
            draw(st.dictionaries(names, values, max_size=3)),
            draw(st.none() | st.floats(1, 1e6)),
            draw(st.none() | st.floats(1, 1e4)),
        )
    ]
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["change", "touch", "bind"]))
        if kind == "change":
            events.append(
                SessionChanged(
                    tick(),
                    draw(st.dictionaries(names, values, max_size=3)),
                    tuple(draw(st.lists(names, max_size=2))),
                    draw(st.booleans()),
                )
            )
        elif kind == "touch":
            events.append(SessionTouched(tick()))
        else:
            events.append(
                WorkflowBound(
                    tick(),
                    draw(st.sampled_from(["w1", "w2"])),
                    draw(st.sampled_from(["cancel", "signal", "none"])),
                )
            )
    ending = draw(st.sampled_from(["none", "closed", "expired"]))
    if ending == "closed":
        events.append(SessionClosed(tick(), draw(st.text(max_size=10))))
    elif ending == "expired":
        events.append(SessionExpired(tick(), "idle", at(clock[0])))
    if ending != "none" and draw(st.booleans()):
        events.append(WorkflowsNotified(tick(), ("w1",)))
    return events


@given(histories())
def test_fold_of_all_equals_snapshot_plus_tail_at_every_split(events: list[SessionEvent]) -> None:
    records = stored(events)
    whole = fold_events(SESSION_FOLD, SESSION_FOLD.initial("session-s1"), records)
    assert whole.version == len(records)
    for split in range(len(records) + 1):
        head = fold_events(SESSION_FOLD, SESSION_FOLD.initial("session-s1"), records[:split])
        restored = SESSION_FOLD.decode(SESSION_FOLD.encode(head))
        assert fold_events(SESSION_FOLD, restored, records[split:]) == whole


@given(histories(), st.integers(1, 8))
def test_load_state_equals_fold_for_every_snapshot_interval(events: list[SessionEvent], every: int) -> None:
    async def check() -> None:
        journal = await connect("memory://")
        state = SESSION_FOLD.initial("session-s1")
        for record in stored(events):
            new = NewEvent(record.type, record.payload, record.metadata)
            [appended] = await journal.append("session-s1", record.version - 1, [new])
            state = SESSION_FOLD.apply(state, appended)
            await snapshot_if_due(journal, "session-s1", SESSION_FOLD, state, appended.version, every)
        loaded, version = await load_state(journal, "session-s1", SESSION_FOLD)
        plain, _ = await load_state(journal, "session-s1", SESSION_FOLD, use_snapshots=False)
        assert loaded == plain == state and version == len(events)
        for upto in range(1, len(events) + 1):
            past, _ = await load_state(journal, "session-s1", SESSION_FOLD, at_version=upto)
            assert past == fold(events[:upto])

    anyio.run(check)
