"""Workflows in sessions: ctx.session commands, bound instances, the shopping example."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
from sagalog.engine import Registry, Runner, workflow
from sagalog.engine.sessions import Sessions
from sagalog.replay import wait_signal
from sagalog.replay.executor import replay_history
from sagalog.replay.saga import TERMINAL, SagaState
from sagalog.storage import connect

from sagalog.clock import ManualClock
from sagalog.errors import NotFoundError, SessionClosedError, SessionNotFoundError, WorkflowError

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "shopping.py"
reg = Registry()


@workflow(registry=reg, name="tests.session_rw", session=True)
def read_write(ctx: Any, note: str) -> Any:
    before = yield ctx.session.get()
    after = yield ctx.session.merge({"note": note, "seen": before.version})
    yield ctx.session.delete("gone")
    touched = yield ctx.session.touch()
    return [ctx.session_id, before.attributes, after.attributes, touched.touches]


@workflow(registry=reg, name="tests.session_signal", on_session_end="signal")
def waits_for_the_end(ctx: Any) -> Any:
    ended = yield wait_signal("session_ended")
    return ended


@workflow(registry=reg, name="tests.no_session")
def without_session(ctx: Any) -> Any:
    yield ctx.session.get()
    return None


@workflow(registry=reg, name="tests.late_change", session=True)
def late_change(ctx: Any) -> Any:
    yield wait_signal("go")
    try:
        yield ctx.session.set("late", True)
    except Exception as exc:  # the refused change is thrown in at the yield
        return str(exc)
    return "changed"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def runner(journal_url: str, clock: ManualClock) -> AsyncIterator[Runner]:
    journal = await connect(journal_url, clock=clock)
    try:
        yield Runner(journal, reg, clock=clock, worker_id="test")
    finally:
        await journal.close()


async def settle(runner: Runner, instance_id: str) -> SagaState:
    await runner.run_until_idle()
    return await runner.describe(instance_id)


def result(state: SagaState) -> Any:
    assert state.result is not None, f"{state.status}: {state.message}"
    return msgspec.msgpack.decode(state.result)


async def test_session_commands_are_journaled_and_replay_without_touching_the_session(
    runner: Runner,
) -> None:
    await runner.sessions.open("s1", attributes={"gone": 1, "keep": "x"})
    instance = await runner.start(read_write, "hello", id="rw", session_id="s1")
    state = await settle(runner, instance)
    assert state.status == "completed" and state.session_id == "s1"
    assert result(state) == [
        "s1",
        {"gone": 1, "keep": "x"},
        {"gone": 1, "keep": "x", "note": "hello", "seen": 2},
        1,
    ]
    session = await runner.sessions.get("s1")
    assert session.attributes == {"keep": "x", "note": "hello", "seen": 2}
    assert [w.instance_id for w in session.workflows] == ["rw"]
    types = [e.type for e in await runner.journal.read_stream("session-s1")]
    assert types == ["SessionOpened", "WorkflowBound", "SessionChanged", "SessionChanged", "SessionTouched"]
    # Replay feeds the recorded states back (typed, as live) and changes nothing.
    history = await runner.journal.read_stream("wf-rw")
    replayed = replay_history(read_write.fn, None, history, decode_result=runner.loader.decode)
    assert replayed.status == "completed" and replayed.result == state.result
    assert (await runner.sessions.get("s1")).version == session.version


async def test_expiry_signals_a_bound_workflow_with_the_signal_policy(
    runner: Runner, clock: ManualClock
) -> None:
    await runner.sessions.open("s1", idle_timeout=60)
    instance = await runner.start(waits_for_the_end, id="w1", session_id="s1")
    assert (await settle(runner, instance)).status == "running"
    clock.advance(60)
    state = await settle(runner, instance)
    assert result(state) == {"session_id": "s1", "status": "expired", "reason": "idle"}
    assert (await runner.sessions.get("s1")).workflows_notified


async def test_a_change_refused_by_an_ended_session_is_thrown_in(runner: Runner) -> None:
    await runner.sessions.open("s1")
    instance = await runner.start(late_change, id="late", session_id="s1")
    await settle(runner, instance)
    await runner.sessions.close("s1", "by hand", by_instance="someone-else")
    state = await settle(runner, instance)
    assert state.status == "cancelled"  # its session closed: policy cancel
    await runner.sessions.open("s2")
    other = await runner.start(late_change, id="late2", session_id="s2")
    await settle(runner, other)
    # closed by an operator who spares the instance: its own change is refused
    await runner.sessions.close("s2", "maintenance", by_instance="late2")
    await runner.signal(other, "go")
    message = result(await settle(runner, other))
    assert "SessionClosedError: session 's2' was closed at" in message
    assert "after 1 attempt(s)" in message


async def test_bad_starts_and_sessionless_use(runner: Runner) -> None:
    with pytest.raises(
        WorkflowError, match=r"workflow 'tests\.session_rw' runs in a session: start it with session_id"
    ):
        await runner.start(read_write, "x", id="a")
    with pytest.raises(SessionNotFoundError, match="no session 'ghost' in namespace 'default'"):
        await runner.start(read_write, "x", id="b", session_id="ghost")
    await runner.sessions.open("done")
    await runner.sessions.close("done")
    with pytest.raises(SessionClosedError, match="session 'done' was closed"):
        await runner.start(read_write, "x", id="c", session_id="done")
    for refused in ("a", "b", "c"):
        assert await runner.journal.stream_version(f"wf-{refused}") == 0
    instance = await runner.start(without_session, id="d")
    state = await settle(runner, instance)
    assert state.status in TERMINAL and state.status != "completed"
    assert "workflow 'tests.no_session' (instance 'd') was not started in a session" in state.message


def load_example() -> ModuleType:
    name = "sagalog_example_shopping"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


async def test_shopping_example(journal_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    shopping = load_example()
    states = await shopping.main(journal_url)
    ann, bob = states["checkout-ann"], states["checkout-bob"]
    assert ann.status == "completed"
    assert result(ann) == {"reservation": "RES-ann", "payment": "PAY-4242", "items": ["BOOK-42", "LAMP-7"]}
    assert bob.status == "cancelled" and bob.message == "session cart-bob expired: idle"
    released = [s for s in bob.steps.values() if s.kind == "compensation" and s.status == "completed"]
    assert [s.name for s in released] == [shopping.release_items.name]
    out = capsys.readouterr().out
    assert "release reservation RES-bob" in out and "release reservation RES-ann" not in out
    assert "refund" not in out
    assert "checkout-ann => completed" in out and "(cart closed)" in out
    assert "checkout-bob => cancelled: session cart-bob expired: idle (cart expired)" in out
    if journal_url == "memory://":
        return  # a memory journal does not outlive main()
    journal = await connect(journal_url)
    try:
        sessions = Sessions(journal)
        cart_ann, cart_bob = await sessions.get("cart-ann"), await sessions.get("cart-bob")
        assert (cart_ann.status, cart_ann.closed_by, cart_ann.end_reason) == (
            "closed",
            "checkout-ann",
            "checked out",
        )
        assert cart_ann.attributes["checkout"] == "awaiting payment"
        assert (cart_bob.status, cart_bob.end_reason, cart_bob.workflows_notified) == (
            "expired",
            "idle",
            True,
        )
        assert await journal.next_ready_at() is None
    finally:
        await journal.close()


async def test_a_client_starts_an_instance_in_a_session(runner: Runner) -> None:
    from sagalog.engine.client import Client

    client = Client(runner.journal, reg)
    await runner.sessions.open("s1", attributes={"keep": "x"})
    instance = await client.start(read_write, "from a client", id="c1", session_id="s1")
    state = await settle(runner, instance)
    assert state.status == "completed" and state.session_id == "s1"
    assert [w.instance_id for w in (await runner.sessions.get("s1")).workflows] == ["c1"]
    with pytest.raises(WorkflowError, match=r"runs in a session: start it with session_id"):
        await client.start(read_write, "x", id="c2")
    with pytest.raises(SessionNotFoundError, match="no session 'ghost' in namespace 'default'"):
        await client.start(read_write, "x", id="c3", session_id="ghost")
    with pytest.raises(NotFoundError):
        await client.describe("c3")  # nothing was stored for the refused start
