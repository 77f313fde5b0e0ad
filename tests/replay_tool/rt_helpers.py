"""Histories for the replay tool's tests, written with the real event types.

The journal gets a ManualClock, so ``recorded_at`` and the durations between
events are known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sagalog.engine.workflow import Registry
from sagalog.replay import events as wf
from sagalog.replay import sessions as se
from sagalog.replay.executor import Executor
from sagalog.storage import NO_STREAM, Journal, NewEvent, connect, encode_value

from sagalog.cli.replay import registry_code
from sagalog.clock import ManualClock

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def order_events(order_id: int, *, complete: bool = True) -> list[list[NewEvent]]:
    """An order saga: reserve fails once then succeeds; charge; completes (or is left running).

    Returned as batches, each appended at its own (clock) time.
    """
    args = encode_value([{"id": order_id, "password": "hunter2", "total": 42}])
    batches = [
        [
            wf.encode_event(wf.WorkflowStarted(workflow="place_order", args=args)),
            wf.encode_event(wf.StepScheduled(seq=1, step="reserve", args=args, compensation="release")),
        ],
        [wf.encode_event(wf.StepStarted(seq=1, attempt=1))],
        [
            wf.encode_event(
                wf.StepFailed(
                    seq=1,
                    attempt=1,
                    error_type="TimeoutError",
                    message="stock service slow",
                    retry_at=START + timedelta(seconds=5),
                )
            )
        ],
        [wf.encode_event(wf.StepStarted(seq=1, attempt=2))],
        [
            wf.encode_event(
                wf.StepCompleted(seq=1, attempt=2, result=encode_value({"rid": "r-1", "card": "4242"}))
            ),
            wf.encode_event(wf.StepScheduled(seq=2, step="charge", args=encode_value([42]))),
        ],
    ]
    if complete:
        batches += [
            [wf.encode_event(wf.StepStarted(seq=2, attempt=1))],
            [
                wf.encode_event(wf.StepCompleted(seq=2, attempt=1, result=encode_value("pay-1"))),
                wf.encode_event(wf.WorkflowCompleted(result=encode_value({"payment": "pay-1"}))),
            ],
        ]
    return batches


def session_events() -> list[list[NewEvent]]:
    """A session opened, changed (with a token), touched."""
    return [
        [
            se.encode_event(
                se.SessionOpened(session_id="s1", kind="checkout", at=START, attributes={"cart": 1})
            )
        ],
        [
            se.encode_event(
                se.SessionChanged(at=START + timedelta(seconds=1), updates={"cart": 2, "api_token": "tk-9"})
            )
        ],
        [se.encode_event(se.SessionTouched(at=START + timedelta(seconds=2)))],
    ]


async def append_batches(
    journal: Journal, clock: ManualClock, stream_id: str, batches: list[list[NewEvent]]
) -> None:
    """Append each batch 1.5 seconds after the previous one."""
    version = await journal.stream_version(stream_id) or NO_STREAM
    for batch in batches:
        await journal.append(stream_id, version, batch)
        version += len(batch)
        clock.advance(1.5)


async def fill(journal: Journal, clock: ManualClock) -> None:
    """Two orders (one done, one running), a session and a stream of another kind."""
    await append_batches(journal, clock, "wf-order-1", order_events(1))
    await append_batches(journal, clock, "session-s1", session_events())
    await append_batches(journal, clock, "wf-order-2", order_events(2, complete=False))
    await append_batches(journal, clock, "ledger-7", [[NewEvent("Posted", encode_value({"amount": 5}))]])


async def fill_url(url: str) -> None:
    """Fill a fresh journal at ``url`` (for command-line tests)."""
    clock = ManualClock(START)
    journal = await connect(url, clock=clock)
    try:
        await fill(journal, clock)
    finally:
        await journal.close()


async def run_workflow(
    journal: Journal,
    clock: ManualClock,
    registry: Registry,
    name: str,
    instance_id: str,
    *args: Any,
    signals: Sequence[str] = (),
) -> int:
    """Run a workflow in-process through THE executor, appending real histories.

    A small stand-in for the engine's runner: steps run inline and succeed at
    their first attempt, and each name in ``signals`` is delivered when the
    workflow waits. Returns the stream's version.
    """
    code = registry.workflow(name)
    options = registry_code(registry)
    executor = Executor(
        code.run, instance_id, name, decode_args=code.decode_args, decode_result=options["decode_result"]
    )
    pending: list[wf.WorkflowEvent] = [wf.WorkflowStarted(workflow=name, args=code.encode_args(args))]
    to_signal = list(signals)
    version = 0
    while pending:
        executor.feed([(version + n, event) for n, event in enumerate(pending, start=1)])
        batch = pending + executor.decide(clock.now())
        await journal.append(f"wf-{instance_id}", version, [wf.encode_event(e) for e in batch])
        version += len(batch)
        clock.advance(1)
        pending = []
        for task in executor.open_steps():
            step = registry.step(task.name)
            positional, keywords = step.decode_kwargs(task.args)
            result = step.fn(*positional, **keywords)
            pending += [
                wf.StepStarted(seq=task.seq, attempt=1),
                wf.StepCompleted(seq=task.seq, attempt=1, result=encode_value(result)),
            ]
        if not pending and executor.waits and to_signal:
            pending.append(wf.SignalReceived(name=to_signal.pop(0), payload=encode_value(None)))
    return version


# Regenerate: cd tests/replay_tool && PYTHONPATH=. ../../.venv/bin/python -P rt_helpers.py
GOLDEN = Path(__file__).resolve().parent / "golden"


async def write_golden() -> None:
    """Record the golden histories next to the tests (run this file to regenerate them).

    ``shop_v1.jsonl`` is recorded with the V1 code (one completed order, one
    waiting for approval); ``shop_nondeterministic.jsonl`` with the
    INCOMPATIBLE code, so the V1 code cannot replay it.
    """
    from rt_workflows import INCOMPATIBLE, NAME, V1
    from sagalog.replay.transfer import export_histories

    GOLDEN.mkdir(exist_ok=True)
    for file, registry in (("shop_v1.jsonl", V1), ("shop_nondeterministic.jsonl", INCOMPATIBLE)):
        clock = ManualClock(START)
        journal = await connect("memory://", clock=clock)
        await run_workflow(
            journal, clock, registry, NAME, "g-1", {"id": 1, "total": 30}, signals=["approved"]
        )
        await run_workflow(journal, clock, registry, NAME, "g-2", {"id": 2, "total": 45})
        with (GOLDEN / file).open("w") as out:
            await export_histories(journal, ["g-1", "g-2"], out, clock=clock)


if __name__ == "__main__":
    import anyio

    anyio.run(write_golden)
