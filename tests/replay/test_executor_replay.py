"""The executor against recorded histories: golden files, non-determinism, patches.

The golden histories next to this file were recorded by running ``book``
below (``python -P tests/replay/test_executor_replay.py`` writes them again).
``book_v1.json`` must replay cleanly; ``book_reordered.json`` was recorded by
an older version that charged before reserving, so replaying it with today's
code must fail, naming the event.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from sagalog.engine import Registry, Runner, step, workflow
from sagalog.engine.retry import Retry
from sagalog.replay import replay_history, sleep, wait_signal
from sagalog.replay.events import (
    MarkerRecorded,
    StepCompleted,
    StepScheduled,
    StepStarted,
    WorkflowEvent,
    WorkflowStarted,
    decode_event,
)
from sagalog.storage import connect

from sagalog.clock import ManualClock
from sagalog.errors import NonDeterminismError

HERE = Path(__file__).parent / "histories"
reg = Registry()


@step(registry=reg, name="reserve", retry=Retry.none())
async def reserve(item: str) -> str:
    return f"R-{item}"


@step(registry=reg, name="charge", retry=Retry.none())
async def charge(amount: int) -> str:
    return f"P-{amount}"


@step(registry=reg, name="notify", retry=Retry.none())
async def notify(text: str) -> None:
    return None


@workflow(registry=reg, name="book")
def book(ctx: Any, item: str, amount: int) -> Any:
    rid = yield reserve(item)
    pid = yield charge(amount)
    yield sleep(60)
    answer = yield wait_signal("confirm")
    return [rid, pid, answer]


def book_reordered(ctx: Any, item: str, amount: int) -> Any:
    """The old version: charged first."""
    pid = yield charge(amount)
    rid = yield reserve(item)
    yield sleep(60)
    answer = yield wait_signal("confirm")
    return [rid, pid, answer]


def book_shorter(ctx: Any, item: str, amount: int) -> Any:
    """A version that returns right after reserving."""
    rid = yield reserve(item)
    return rid


def load(name: str) -> list[tuple[int, WorkflowEvent]]:
    items = msgspec.json.decode((HERE / name).read_bytes(), type=list[tuple[int, WorkflowEvent]])
    return [(version, event) for version, event in items]


async def record(fn_name: str) -> list[tuple[int, WorkflowEvent]]:
    """Run ``book`` (or the reordered version) to the end and return its history."""
    local = Registry()
    local.steps.update(reg.steps)
    fn = book.fn if fn_name == "book" else book_reordered
    local.add(workflow(name="book", registry=local)(fn))
    clock = ManualClock()
    journal = await connect("memory://")
    runner = Runner(journal, local, clock=clock, worker_id="golden")
    iid = await runner.start("book", "lamp", 40, id="golden")
    await runner.run_until_idle()
    clock.advance(60)
    await runner.run_until_idle()
    await runner.signal(iid, "confirm", "yes")
    await runner.run_until_idle()
    return [(e.version, decode_event(e)) for e in await journal.read_stream("wf-golden")]


def test_golden_history_replays() -> None:
    executor = replay_history(book.fn, None, load("book_v1.json"))
    assert executor.status == "completed"
    assert msgspec.msgpack.decode(executor.result or b"") == ["R-lamp", "P-40", "yes"]


def test_golden_history_of_changed_code_is_non_deterministic() -> None:
    with pytest.raises(NonDeterminismError) as info:
        replay_history(book.fn, None, load("book_reordered.json"))
    assert str(info.value) == (
        "non-deterministic workflow at event 2: the history recorded StepScheduled('charge'), "
        "but the code now yielded StepScheduled('reserve')"
    )
    assert (info.value.version, info.value.recorded) == (2, "StepScheduled('charge')")


def test_code_that_ends_early_is_non_deterministic() -> None:
    with pytest.raises(NonDeterminismError, match="at event 5: the history recorded StepScheduled"):
        replay_history(book_shorter, None, load("book_v1.json"))


def test_replaying_a_prefix_stops_where_the_history_stops() -> None:
    history = load("book_v1.json")[:4]  # started, reserve scheduled, started, completed
    executor = replay_history(book.fn, None, history)
    assert executor.status == "running"
    assert [t.name for t in executor.open_steps()] == ["charge"]
    assert [type(e).__name__ for e in executor.decide()] == ["StepScheduled"]


def test_recorded_results_are_fed_without_running_steps() -> None:
    history: list[tuple[int, WorkflowEvent]] = [
        (1, WorkflowStarted("book", msgspec.msgpack.encode(["x", 1]))),
        (2, StepScheduled(0, reserve.name, msgspec.msgpack.encode([["x"], {}]))),
        (3, StepStarted(0, 1)),
        (4, StepCompleted(0, 1, msgspec.msgpack.encode("recorded, not computed"))),
    ]
    seen: list[Any] = []

    def spy(ctx: Any, item: str, amount: int) -> Any:
        seen.append((yield reserve(item)))
        yield charge(amount)

    replay_history(spy, None, history)
    assert seen == ["recorded, not computed"]


def test_args_can_be_given_instead_of_decoded() -> None:
    executor = replay_history(book.fn, ["other", 5], load("book_v1.json")[:1])
    assert executor.steps[0].args == msgspec.msgpack.encode([["other"], {}])


# -- patches ------------------------------------------------------------------


def patched_book(ctx: Any, item: str, amount: int) -> Any:
    rid = yield reserve(item)
    if ctx.patched("notify-first"):
        yield notify("charging you")
    pid = yield charge(amount)
    yield sleep(60)
    answer = yield wait_signal("confirm")
    return [rid, pid, answer]


def deprecated_book(ctx: Any, item: str, amount: int) -> Any:
    rid = yield reserve(item)
    ctx.deprecate_patch("notify-first")
    yield notify("charging you")
    pid = yield charge(amount)
    yield sleep(60)
    answer = yield wait_signal("confirm")
    return [rid, pid, answer]


def test_patched_is_false_for_histories_recorded_before_the_change() -> None:
    executor = replay_history(patched_book, None, load("book_v1.json"))
    assert executor.status == "completed"


def test_patched_is_true_and_journaled_for_new_runs() -> None:
    start = load("book_v1.json")[:4]
    executor = replay_history(patched_book, None, start)
    decisions = executor.decide()
    assert decisions[0] == MarkerRecorded(-1, "patch", patch_id="notify-first")
    assert isinstance(decisions[1], StepScheduled) and decisions[1].step == notify.name
    # ...and that new history replays with the patched and the deprecated code alike
    history = [*start, *((5 + i, e) for i, e in enumerate(decisions))]
    assert replay_history(patched_book, None, history).open_steps()[0].name == notify.name
    assert replay_history(deprecated_book, None, history).open_steps()[0].name == notify.name


def test_removing_a_patch_too_early_is_non_deterministic() -> None:
    expected = r"recorded StepScheduled\('charge'\), but the code now yielded StepScheduled\('notify'\)"
    with pytest.raises(NonDeterminismError, match=expected):
        replay_history(deprecated_book, None, load("book_v1.json"))


async def _write_goldens() -> None:
    HERE.mkdir(exist_ok=True)
    for fn_name, file in (("book", "book_v1.json"), ("reordered", "book_reordered.json")):
        history = await record(fn_name)
        (HERE / file).write_bytes(msgspec.json.format(msgspec.json.encode(history)) + b"\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    anyio.run(_write_goldens)
