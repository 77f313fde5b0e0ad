"""The Sessions API on every backend: lifecycle, concurrency, expiry, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sagalog.engine.sessions import Sessions
from sagalog.replay.folding import load_state
from sagalog.replay.sessions import SESSION_FOLD, BoundWorkflow
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock
from sagalog.errors import (
    AttributesTooLargeError,
    ConcurrencyError,
    EncodingError,
    InvalidSessionError,
    NotFoundError,
    SessionClosedError,
    SessionExpiredError,
    SessionNotFoundError,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def timed_journal(journal_url: str, clock: ManualClock) -> AsyncIterator[Journal]:
    """A journal whose work index runs on the test's clock."""
    opened = await connect(journal_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def sessions(timed_journal: Journal, clock: ManualClock) -> Sessions:
    return Sessions(timed_journal, clock=clock, snapshot_every=5)


async def test_open_get_and_idempotent_open(sessions: Sessions, clock: ManualClock) -> None:
    opened = await sessions.open("s1", kind="chat", attributes={"user": "ann", "tags": ("a", "b")})
    assert (opened.status, opened.kind, opened.version) == ("open", "chat", 1)
    assert opened.attributes == {"user": "ann", "tags": ["a", "b"]}  # as stored
    assert opened.created_at == clock.now()
    again = await sessions.open("s1", kind="chat", attributes={"other": 1})
    assert again == opened
    assert await sessions.get("s1") == opened
    generated = await sessions.open(kind="chat")
    assert len(generated.session_id) == 32 and generated.version == 1


async def test_changes_are_events(sessions: Sessions, timed_journal: Journal) -> None:
    await sessions.open("s1", attributes={"a": 1})
    await sessions.set("s1", "b", 2)
    await sessions.merge("s1", {"c": 3, "a": 10})
    await sessions.delete("s1", "b", "missing")
    state = await sessions.change("s1", {"only": True}, replace=True)
    assert state.attributes == {"only": True}
    assert (state.version, state.changes) == (5, 4)
    types = [e.type for e in await timed_journal.read_stream("session-s1")]
    assert types == ["SessionOpened"] + ["SessionChanged"] * 4


async def test_cold_reads_use_snapshots_and_see_other_writers(
    sessions: Sessions, timed_journal: Journal, clock: ManualClock
) -> None:
    await sessions.open("s1")
    for n in range(11):
        await sessions.set("s1", "n", n)
    snapshot = await timed_journal.latest_snapshot("session-s1", schema=SESSION_FOLD.schema)
    assert snapshot is not None and snapshot.version == 10
    other = Sessions(timed_journal, clock=clock)
    cold = await other.get("s1")
    assert cold == await sessions.get("s1") and cold.attributes == {"n": 10}
    await other.set("s1", "n", 99)
    assert (await sessions.get("s1")).attributes == {"n": 99}  # cache keyed by version


async def test_two_writers_one_conflict(sessions: Sessions, timed_journal: Journal) -> None:
    await sessions.open("s1")
    other = Sessions(timed_journal)
    seen = await sessions.get("s1")
    await sessions.set("s1", "who", "first", expected_version=seen.version)
    with pytest.raises(ConcurrencyError) as info:
        await other.set("s1", "who", "second", expected_version=seen.version)
    assert info.value.actual_version == 2
    assert "stream 'session-s1' is at version 2, but the append expected version 1" in str(info.value)
    assert (await other.get("s1")).attributes == {"who": "first"}
    # Without an expected version a writer applies its change to whatever is current.
    assert (await other.set("s1", "who", "second")).version == 3


async def test_idle_deadline_moves_with_touches(
    sessions: Sessions, timed_journal: Journal, clock: ManualClock
) -> None:
    start = clock.now()
    await sessions.open("s1", idle_timeout=60, lifetime=timedelta(hours=1))
    assert await timed_journal.next_ready_at() == start + timedelta(seconds=60)
    clock.advance(50)
    touched = await sessions.touch("s1")
    assert touched.idle_deadline == start + timedelta(seconds=110)
    assert await timed_journal.next_ready_at() == start + timedelta(seconds=110)
    clock.advance(59)
    assert await sessions.expire_if_due("s1") is False
    assert await timed_journal.claim("worker", 30) == []
    clock.advance(1)
    [claim] = await timed_journal.claim("worker", 30)
    assert claim.stream_id == "session-s1"
    assert await sessions.expire_if_due("s1") is True
    state = await sessions.get("s1")
    assert (state.status, state.end_reason, state.ended_at) == ("expired", "idle", clock.now())
    assert await timed_journal.next_ready_at() is None
    assert await sessions.expire_if_due("s1") is False


async def test_absolute_deadline_wins_over_touches(sessions: Sessions, clock: ManualClock) -> None:
    await sessions.open("s1", idle_timeout=60, lifetime=100)
    for _ in range(3):
        clock.advance(30)
        await sessions.touch("s1")
    clock.advance(10)
    assert await sessions.expire_if_due("s1") is True
    assert (await sessions.get("s1")).end_reason == "lifetime"


async def test_a_change_after_the_deadline_expires_the_session(
    sessions: Sessions, clock: ManualClock
) -> None:
    await sessions.open("s1", idle_timeout=10)
    clock.advance(10)
    with pytest.raises(SessionExpiredError, match=r"session 's1' expired at .* \(idle deadline passed\)"):
        await sessions.set("s1", "late", True)
    state = await sessions.get("s1")
    assert state.status == "expired" and "late" not in state.attributes


async def test_ended_sessions_refuse_changes_and_reopening(sessions: Sessions, clock: ManualClock) -> None:
    await sessions.open("s1")
    closed = await sessions.close("s1", "logged out")
    assert (closed.status, closed.end_reason) == ("closed", "logged out")
    assert await sessions.close("s1", "again") == closed  # closing twice changes nothing
    message = (
        "session 's1' was closed at .* \\(reason: logged out\\): a closed session accepts no "
        "changes and cannot be reopened; open a new session with another id"
    )
    with pytest.raises(SessionClosedError, match=message):
        await sessions.set("s1", "x", 1)
    with pytest.raises(SessionClosedError, match=message):
        await sessions.open("s1")
    await sessions.open("s2", idle_timeout=5)
    clock.advance(5)
    assert await sessions.expire_if_due("s2")
    with pytest.raises(
        SessionExpiredError, match="expired session accepts no changes and cannot be reopened"
    ):
        await sessions.open("s2")
    with pytest.raises(SessionExpiredError):
        await sessions.touch("s2")
    assert (await sessions.get("s1")).version == 2 and (await sessions.get("s2")).version == 2


async def test_unknown_session(sessions: Sessions) -> None:
    for call in (sessions.get("nope"), sessions.touch("nope"), sessions.close("nope")):
        with pytest.raises(SessionNotFoundError, match="no session 'nope' in namespace 'default'"):
            await call
    with pytest.raises(NotFoundError):
        await sessions.set("nope", "a", 1)
    assert await sessions.expire_if_due("nope") is False


async def test_bad_input_is_refused_and_nothing_is_stored(sessions: Sessions, timed_journal: Journal) -> None:
    await sessions.open("s1", attributes={"a": 1})
    with pytest.raises(
        EncodingError, match=r"attribute 'bad' of session 's1' cannot be encoded: builtins\.object"
    ):
        await sessions.merge("s1", {"ok": 1, "bad": object()})
    with pytest.raises(EncodingError, match="attribute 'huge' of session 's2' cannot be encoded"):
        await sessions.open("s2", attributes={"huge": 2**80})
    small = Sessions(timed_journal, max_attributes_bytes=100)
    with pytest.raises(
        AttributesTooLargeError,
        match=r"attributes of session 's1' would take 2\d\d bytes; the limit is 100 bytes",
    ):
        await small.set("s1", "text", "x" * 200)
    bad_calls = {
        "invalid session id '' ": sessions.open(""),
        "invalid session id 'a b'": sessions.get("a b"),
        "invalid session kind 'no spaces'": sessions.open("s3", kind="no spaces"),
        "idle_timeout must be a positive number of seconds, not -1": sessions.open("s3", idle_timeout=-1),
        "lifetime must be seconds \\(a number or timedelta\\), not '1h'": sessions.open(
            "s3",
            lifetime="1h",  # type: ignore[arg-type]
        ),
        "invalid attribute name '' for session 's1'": sessions.set("s1", "", 1),
        "invalid policy 'kill' for workflow 'w1'": sessions.bind_workflow("s1", "w1", "kill"),  # type: ignore[arg-type]
        "is already open with kind 'default', not 'chat'": sessions.open("s1", kind="chat"),
    }
    for message, call in bad_calls.items():
        with pytest.raises(InvalidSessionError, match=message.strip()):
            await call
    assert await timed_journal.stream_version("session-s1") == 1
    for other in ("s2", "s3"):
        assert await timed_journal.stream_version(f"session-{other}") == 0
    assert (await sessions.get("s1")).attributes == {"a": 1}


class RecordingControl:
    """Stands in for the engine's runner: records what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    async def cancel(self, instance_id: str, reason: str) -> None:
        self.calls.append(("cancel", instance_id, reason))

    async def signal(self, instance_id: str, name: str, payload: object) -> None:
        self.calls.append(("signal", instance_id, (name, payload)))


async def test_ending_a_session_applies_each_bound_workflows_policy(
    timed_journal: Journal, clock: ManualClock
) -> None:
    control = RecordingControl()
    sessions = Sessions(timed_journal, clock=clock, workflows=control)
    await sessions.open("s1", idle_timeout=30)
    await sessions.bind_workflow("s1", "w1")
    await sessions.bind_workflow("s1", "w2", "signal")
    state = await sessions.bind_workflow("s1", "w3", "none")
    assert state.workflows[0] == BoundWorkflow("w1", "cancel", clock.now())
    clock.advance(30)
    assert await sessions.expire_if_due("s1")
    payload = {"session_id": "s1", "status": "expired", "reason": "idle"}
    assert control.calls == [
        ("cancel", "w1", "session s1 expired: idle"),
        ("signal", "w2", ("session_ended", payload)),
    ]
    [last] = await timed_journal.read_stream("session-s1", 6)
    assert last.type == "WorkflowsNotified"
    assert (await sessions.get("s1")).workflows_notified
    assert await timed_journal.next_ready_at() is None


async def test_bound_workflows_are_notified_durably_by_a_later_worker(
    timed_journal: Journal, clock: ManualClock
) -> None:
    # Closed by something without control over workflows (the CLI, or a
    # process that crashed before notifying): the row stays due.
    await Sessions(timed_journal, clock=clock).open("s1")
    cli = Sessions(timed_journal, clock=clock)
    await cli.bind_workflow("s1", "w1", "cancel")
    closed = await cli.close("s1", "operator")
    assert closed.notification_pending
    assert await timed_journal.next_ready_at() == closed.ended_at
    control = RecordingControl()
    worker = Sessions(timed_journal, clock=clock, workflows=control)
    [claim] = await timed_journal.claim("worker-1", 30)
    assert claim.stream_id == "session-s1"
    assert await worker.expire_if_due("s1") is True  # nothing to expire, but w1 was told
    assert control.calls == [("cancel", "w1", "session s1 closed: operator")]
    assert not (await worker.get("s1")).notification_pending
    assert await timed_journal.next_ready_at() is None
    assert await worker.expire_if_due("s1") is False
    assert len(control.calls) == 1


async def test_list_sessions_filters_by_status_and_kind(sessions: Sessions) -> None:
    await sessions.open("a", kind="chat")
    await sessions.open("b", kind="checkout")
    await sessions.open("c", kind="chat")
    await sessions.close("c")
    assert {s.session_id for s in await sessions.list_sessions()} == {"a", "b", "c"}
    assert [s.session_id for s in await sessions.list_sessions(status="open", kind="chat")] == ["a"]
    assert len(await sessions.list_sessions(limit=2)) == 2


async def test_state_in_cache_equals_state_from_the_journal(
    sessions: Sessions, timed_journal: Journal
) -> None:
    await sessions.open("s1", attributes={"t": (1, 2)}, idle_timeout=5)
    await sessions.merge("s1", {"nested": {"x": (3,)}})
    await sessions.bind_workflow("s1", "w1", "signal")
    folded, _ = await load_state(timed_journal, "session-s1", SESSION_FOLD, use_snapshots=False)
    assert folded == await sessions.get("s1")


async def test_closing_a_session_past_its_deadline_expires_it(sessions: Sessions, clock: ManualClock) -> None:
    await sessions.open("s1", lifetime=30)
    clock.advance(31)
    state = await sessions.close("s1", "too late")
    assert (state.status, state.end_reason, state.version) == ("expired", "lifetime", 2)


async def test_binding_again_with_the_same_policy_changes_nothing(sessions: Sessions) -> None:
    await sessions.open("s1")
    first = await sessions.bind_workflow("s1", "w1", "signal")
    assert await sessions.bind_workflow("s1", "w1", "signal") == first
    changed = await sessions.bind_workflow("s1", "w1", "cancel")
    assert changed.version == 3 and [w.policy for w in changed.workflows] == ["cancel"]
    await sessions.close("s1")
    with pytest.raises(SessionClosedError):
        await sessions.bind_workflow("s1", "w1", "cancel")


async def test_the_workflow_that_closes_its_session_is_not_notified(
    timed_journal: Journal, clock: ManualClock
) -> None:
    control = RecordingControl()
    sessions = Sessions(timed_journal, clock=clock, workflows=control)
    await sessions.open("s1")
    await sessions.bind_workflow("s1", "w1")
    await sessions.bind_workflow("s1", "w2")
    closed = await sessions.close("s1", "checked out", by_instance="w1")
    assert closed.closed_by == "w1" and closed.workflows_notified is False
    assert control.calls == [("cancel", "w2", "session s1 closed: checked out")]
    assert (await sessions.get("s1")).workflows_notified
