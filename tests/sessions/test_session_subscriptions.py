"""Session event handlers: every event once per checkpoint, across restarts."""

from __future__ import annotations

import anyio
import pytest
from sagalog.engine.sessions import Sessions
from sagalog.engine.subscriptions import SessionNotice, SessionSubscription
from sagalog.replay.sessions import SessionOpened
from sagalog.storage import Journal, NewEvent

from sagalog.clock import ManualClock
from sagalog.errors import InvalidSessionError

pytestmark = pytest.mark.anyio


class Seen:
    """A handler that records what it was given, optionally failing once at a position."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.notices: list[SessionNotice] = []
        self.fail_at = fail_at

    async def __call__(self, notice: SessionNotice) -> None:
        if notice.position == self.fail_at:
            self.fail_at = None
            raise RuntimeError(f"handler failed at {notice.position}")
        self.notices.append(notice)

    def names(self) -> list[tuple[str, str]]:
        return [(n.session_id, n.name) for n in self.notices]


async def test_every_event_once_per_checkpoint_across_restarts(journal: Journal) -> None:
    clock = ManualClock()
    sessions = Sessions(journal, clock=clock)
    await sessions.open("a", kind="chat", idle_timeout=10)
    await journal.append("wf-1", 0, [NewEvent("WorkflowStarted", b"\x80")])
    await sessions.set("a", "x", 1)
    first = Seen()
    subscription = SessionSubscription(journal, "mail", batch=2)
    subscription.add_handler(first)
    assert await subscription.run_once() == 2
    assert first.names() == [("a", "opened"), ("a", "changed")]
    assert isinstance(first.notices[0].event, SessionOpened)
    assert first.notices[0].event.kind == "chat"

    await sessions.touch("a")
    await sessions.bind_workflow("a", "w1")
    clock.advance(10)
    await sessions.expire_if_due("a")
    await sessions.open("b")
    await sessions.close("b", "done")
    # a restart: a new subscription object with the same name resumes after the checkpoint
    restarted, handler = SessionSubscription(journal, "mail", batch=2), Seen()
    restarted.add_handler(handler)
    assert await restarted.run_once() == 5
    assert handler.names() == [
        ("a", "touched"),
        ("a", "bound"),
        ("a", "expired"),
        ("b", "opened"),
        ("b", "closed"),
    ]
    assert await restarted.run_once() == 0
    # another name has its own checkpoint and sees everything
    everything = SessionSubscription(journal, "audit")
    only_ends = Seen()
    everything.add_handler(only_ends, "closed", "expired")
    assert await everything.run_once() == 7
    assert only_ends.names() == [("a", "expired"), ("b", "closed")]


async def test_a_failing_handler_gets_the_event_again(journal: Journal) -> None:
    sessions = Sessions(journal)
    for sid in "abc":
        await sessions.open(sid)
    positions = [e.position for e in await journal.read_all()]
    handler = Seen(fail_at=positions[1])
    subscription = SessionSubscription(journal, "flaky", batch=10)
    subscription.add_handler(handler, "opened")
    with pytest.raises(RuntimeError, match=f"handler failed at {positions[1]}"):
        await subscription.run_once()
    assert await journal.load_checkpoint("flaky") == positions[0]
    assert await subscription.run_once() == 2
    assert [n.session_id for n in handler.notices] == ["a", "b", "c"]


async def test_runs_in_a_task_group_and_wakes_on_new_events(journal: Journal) -> None:
    sessions = Sessions(journal)
    await sessions.open("early")
    subscription = SessionSubscription(journal, "live", wake_timeout=0.05)
    got: list[str] = []
    arrived = anyio.Event()

    @subscription.on("opened")
    async def record(notice: SessionNotice) -> None:
        got.append(notice.session_id)
        if notice.session_id == "late":
            arrived.set()

    async with anyio.create_task_group() as tg:
        await tg.start(subscription.run)
        assert got == ["early"]
        await sessions.open("late")
        with anyio.fail_after(10):
            await arrived.wait()
        tg.cancel_scope.cancel()
    assert got == ["early", "late"]


async def test_bad_registrations(journal: Journal) -> None:
    with pytest.raises(InvalidSessionError, match="invalid subscription name ''"):
        SessionSubscription(journal, "")
    subscription = SessionSubscription(journal)
    with pytest.raises(InvalidSessionError, match="unknown session event 'deleted': use one of opened, "):
        subscription.add_handler(Seen(), "deleted")  # type: ignore[arg-type]
