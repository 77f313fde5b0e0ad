"""Session analytics: known numbers, and rebuilt == incrementally maintained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sagalog.engine.sessions import Sessions
from sagalog.replay import session_analytics
from sagalog.replay.session_analytics import (
    PROJECTION_STREAM,
    HourCounts,
    SessionAnalytics,
)
from sagalog.replay.sessions import (
    SessionChanged,
    SessionClosed,
    SessionEvent,
    SessionExpired,
    SessionOpened,
    SessionTouched,
    encode_event,
)
from sagalog.storage import Event, Journal, NewEvent

from sagalog.clock import ManualClock
from sagalog.errors import DecodingError

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Log:
    """Builds stored events in global order, with per-stream versions."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.versions: dict[str, int] = {}

    def add(self, stream: str, event: SessionEvent | NewEvent) -> None:
        new = event if isinstance(event, NewEvent) else encode_event(event)
        version = self.versions.get(stream, 0) + 1
        self.versions[stream] = version
        position = len(self.events) + 1
        self.events.append(
            Event(position, stream, version, new.type, new.payload, new.metadata, "default", T0)
        )


def test_known_numbers() -> None:
    log = Log()
    log.add("session-a", SessionOpened("a", "chat", at(0)))
    log.add("session-b", SessionOpened("b", "chat", at(10)))
    log.add("session-c", SessionOpened("c", "checkout", at(20)))
    log.add("wf-1", NewEvent("WorkflowStarted", b"\x80"))
    log.add("session-a", SessionChanged(at(30), {"x": 1}))
    log.add("session-a", SessionClosed(at(40), "done"))
    log.add("session-b", SessionExpired(at(3700), "idle", at(3600)))
    log.add("session-c", NewEvent("SessionTouched", b"\xc1corrupt"))
    analytics = SessionAnalytics()
    analytics.apply_all(log.events)
    stats = analytics.stats()
    assert stats.position == 8
    assert stats.open_by_kind == {"checkout": 1}
    assert (stats.opened, stats.closed, stats.expired, stats.undecodable) == (3, 1, 1, 1)
    assert stats.per_hour == (
        HourCounts(T0, opened=3, closed=1),
        HourCounts(at(3600), expired=1),
    )
    # a lasted 40 s (bucket <= 60), b 3690 s (bucket <= 21600)
    assert stats.duration_seconds.count == 2 and stats.duration_seconds.sum == 3730.0
    assert dict(stats.duration_seconds.cumulative())["60"] == 1
    assert dict(stats.duration_seconds.cumulative())["21600"] == 2
    # events per session: a=3, b=2, c=1 (its corrupt event is not counted)
    assert stats.events_per_session.counts[:3] == (1, 1, 1)
    assert stats.events_per_session.sum == 6.0


def test_unreadable_stored_projection() -> None:
    with pytest.raises(DecodingError, match="session analytics snapshot cannot be decoded"):
        SessionAnalytics.decode(b"\x01")


@st.composite
def journals(draw: st.DrawFn) -> list[Event]:
    """Random interleavings of several sessions' lives and unrelated events."""
    log = Log()
    now = 0.0
    ended: set[str] = set()
    for _ in range(draw(st.integers(0, 40))):
        now += draw(st.floats(0, 2000))
        sid = draw(st.sampled_from("abcdef"))
        stream = f"session-{sid}"
        action = draw(st.sampled_from(["open", "change", "touch", "close", "expire", "other"]))
        if action == "other":
            log.add("wf-x", NewEvent("StepCompleted", b"\x80"))
        elif stream not in log.versions or action == "open":
            log.add(stream, SessionOpened(sid, draw(st.sampled_from(["chat", "cart"])), at(now)))
        elif stream in ended:
            continue
        elif action == "change":
            log.add(stream, SessionChanged(at(now), {"n": 1}))
        elif action == "touch":
            log.add(stream, SessionTouched(at(now)))
        else:
            ended.add(stream)
            ending = SessionClosed(at(now)) if action == "close" else SessionExpired(at(now), "idle", at(now))
            log.add(stream, ending)
    return log.events


@given(journals(), st.lists(st.integers(1, 10), max_size=8))
def test_rebuild_equals_incremental(events: list[Event], chunks: list[int]) -> None:
    rebuilt = SessionAnalytics()
    rebuilt.apply_all(events)
    incremental, start = SessionAnalytics(), 0
    for size in [*chunks, len(events)]:
        incremental.apply_all(events[start : start + size])
        start += size
        # the maintained copy is saved and loaded between batches, as `load` does
        incremental = SessionAnalytics.decode(incremental.encode())
    assert incremental.stats() == rebuilt.stats()
    stats = rebuilt.stats()
    assert sum(stats.open_by_kind.values()) == stats.opened - stats.closed - stats.expired


async def test_stored_projection_catches_up_and_equals_a_rebuild(journal: Journal) -> None:
    clock = ManualClock()
    sessions = Sessions(journal, clock=clock)
    await sessions.open("a", kind="chat", idle_timeout=60)
    await sessions.open("b", kind="cart")
    first = await session_analytics.load(journal)
    assert first.stats().open_by_kind == {"cart": 1, "chat": 1}
    stored = await journal.latest_snapshot(PROJECTION_STREAM)
    assert stored is not None and stored.version == first.position
    clock.advance(3600)
    assert await sessions.expire_if_due("a")
    await sessions.close("b", "bought")
    await sessions.open("c", kind="chat")
    second = await session_analytics.load(journal)
    stats = second.stats()
    assert stats == (await session_analytics.rebuild(journal)).stats()
    assert (stats.open_by_kind, stats.opened, stats.closed, stats.expired) == ({"chat": 1}, 3, 1, 1)
