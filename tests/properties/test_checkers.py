"""The invariant checkers catch what they claim to: each gets a history that breaks its rule.

A checker that always answered "fine" would let every property pass, so
each violation it reports is shown here, with its message.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sagalog.replay import WorkflowEvent, encode_event
from sagalog.replay.events import (
    CompensationCompleted,
    CompensationStarted,
    ParentNotified,
    StepCompleted,
    StepScheduled,
    StepStarted,
    WorkflowCompensated,
    WorkflowCompleted,
    WorkflowFailed,
    WorkflowStarted,
)
from sagalog.storage import Event

from sagalog.testing import (
    check_compensations,
    check_completions,
    check_global,
    check_history,
    check_terminal,
    check_versions,
    terminal_status,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def history(*events: WorkflowEvent, stream: str = "wf-x", first: int = 1) -> list[Event]:
    out = []
    for version, event in enumerate(events, 1):
        new = encode_event(event)
        position = first + version - 1
        out.append(Event(position, stream, version, new.type, new.payload, new.metadata, "default", NOW))
    return out


START = WorkflowStarted("w", b"\x90")
A = StepScheduled(0, "s", b"", compensation="undo")
B = StepScheduled(1, "s", b"", compensation="undo")


def undo(seq: int, for_seq: int) -> list[WorkflowEvent]:
    started = CompensationStarted(seq, for_seq, "undo", b"")
    return [started, StepStarted(seq, 1), CompensationCompleted(seq, 1, b"")]


GOOD = [
    START, A, StepStarted(0, 1), StepCompleted(0, 1, b"\xc0"),
    B, StepStarted(1, 1), StepCompleted(1, 1, b"\xc0"),
    *undo(2, 1), *undo(3, 0), WorkflowCompensated("E", "boom"),
]  # fmt: skip


def test_a_correct_compensated_history_has_no_violation() -> None:
    assert check_history("x", history(*GOOD)) == []
    assert terminal_status(history(*GOOD)) == "compensated"


def test_check_terminal_wants_one_start_first_and_one_end_last() -> None:
    assert check_terminal("x", history(START)) == ["x: terminal events ['none'] (want exactly one)"]
    two = history(START, WorkflowCompleted(b"\xc0"), WorkflowFailed("E", "m"))
    assert check_terminal("x", two) == [
        "x: terminal events ['WorkflowCompleted', 'WorkflowFailed'] (want exactly one)"
    ]
    after = history(START, WorkflowCompleted(b"\xc0"), StepScheduled(0, "s", b""))
    assert check_terminal("x", after) == ["x: events after its terminal event: ['StepScheduled']"]
    assert check_terminal("x", history(START, WorkflowCompleted(b"\xc0"), ParentNotified("p"))) == []
    headless = history(StepScheduled(0, "s", b""), WorkflowCompleted(b"\xc0"))
    assert check_terminal("x", headless) == ["x: 0 WorkflowStarted event(s), want exactly one, first"]


def test_check_versions_wants_1_to_n_and_increasing_positions() -> None:
    events = history(START, A, StepStarted(0, 1))
    gap = [events[0], events[2]]
    assert check_versions("wf-x", gap) == ["wf-x: versions are not 1..2: [1, 3]"]
    swapped = [events[0], Event(0, *[getattr(events[1], f) for f in Event.__struct_fields__[1:]])]
    assert check_versions("wf-x", swapped) == ["wf-x: positions do not strictly increase"]


def test_check_completions_wants_each_completion_once_and_nothing_after_it() -> None:
    twice = history(START, A, StepStarted(0, 1), StepCompleted(0, 1, b""), StepCompleted(0, 2, b""))
    assert check_completions("x", twice) == ["x: completion recorded twice for #0"]
    rerun = history(START, A, StepStarted(0, 1), StepCompleted(0, 1, b""), StepStarted(0, 2))
    assert check_completions("x", rerun) == ["x: attempts started after the completion of [0]"]


def test_check_compensations_wants_the_completed_steps_reversed() -> None:
    in_order = [*GOOD[:7], *undo(2, 0), *undo(3, 1), WorkflowCompensated("E", "m")]
    assert check_compensations("x", history(*in_order)) == [
        "x: compensated steps [0, 1], want completed ones reversed [1, 0]"
    ]
    missing = [*GOOD[:7], *undo(2, 1), WorkflowCompensated("E", "m")]
    assert check_compensations("x", history(*missing)) == [
        "x: compensated steps [1], want completed ones reversed [1, 0]"
    ]


def test_check_compensations_wants_no_undo_of_what_never_completed() -> None:
    never = [START, A, StepStarted(0, 1), *undo(1, 0), WorkflowCompensated("E", "m")]
    assert check_compensations("x", history(*never)) == [
        "x: compensation of step #0, which never completed",
        "x: compensated steps [0], want completed ones reversed []",
    ]


def test_check_compensations_wants_no_step_after_compensation_began() -> None:
    late = [*GOOD[:4], CompensationStarted(1, 0, "undo", b""), B, StepStarted(7, 1)]
    assert check_compensations("x", history(*late)) == [
        "x: step #1 scheduled after compensation began",
        "x: step #7 started after compensation began",
    ]


def test_check_compensations_wants_none_for_a_completed_or_failed_saga() -> None:
    completed = [*GOOD[:4], *undo(1, 0), WorkflowCompleted(b"\xc0")]
    assert check_compensations("x", history(*completed)) == [
        "x: ended completed but ran compensations for steps [0]"
    ]
    failed = [*GOOD[:4], WorkflowFailed("E", "m")]
    assert check_compensations("x", history(*failed)) == [
        "x: ended failed with completed steps [0] left to compensate"
    ]


def test_check_global_wants_every_event_once_in_stream_order() -> None:
    x = history(START, A, stream="wf-x")
    y = history(START, stream="wf-y", first=3)
    assert check_global([*x, *y], {"wf-x": x, "wf-y": y}) == []
    assert check_global([x[0], *y], {"wf-x": x, "wf-y": y}) == [
        "wf-x: the global order disagrees with the stream (missing or reordered)"
    ]
    assert check_global([*x, x[1], *y], {"wf-x": x, "wf-y": y}) == [
        "global order: the same position twice",
        "global order: events twice: [('wf-x', 2)]",
        "wf-x: the global order disagrees with the stream (missing or reordered)",
    ]
    assert check_global([*y, *x], {"wf-x": x, "wf-y": y}) == ["global order: positions out of order"]
