"""The pure parent/child decisions: when a child is an orphan, and what its parent is told."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sagalog.engine.children import may_be_orphan, orphan_verdict, outcome_for_parent, owes_parent
from sagalog.replay.events import CancelRequested, ChildCompleted, ChildFailed
from sagalog.replay.saga import ChildState, SagaState, StepState

CHILD = SagaState("c", "child", "running", 1, parent_id="p", parent_seq=2)
PARENT = SagaState("p", "parent", "running", 3)


def test_only_a_running_attached_child_that_was_not_cancelled_may_be_an_orphan() -> None:
    assert may_be_orphan(CHILD)
    assert not may_be_orphan(SagaState("c", "child", "running", 1))  # no parent
    assert not may_be_orphan(SagaState("c", "child", "running", 1, parent_id="p", detached=True))
    assert not may_be_orphan(SagaState("c", "child", "compensating", 4, parent_id="p", parent_seq=2))
    assert not may_be_orphan(SagaState("c", "child", "running", 2, parent_id="p", cancel_requested="x"))


def test_a_child_the_parent_recorded_is_adopted() -> None:
    parent = SagaState("p", "parent", "running", 4, children={2: ChildState(2, "c", "child")})
    assert orphan_verdict(CHILD, parent) == "adopted"


def test_a_running_parent_that_has_not_reached_the_child_yet_leaves_it_undecided() -> None:
    assert orphan_verdict(CHILD, PARENT) == "undecided"


@pytest.mark.parametrize(
    "parent",
    [
        SagaState("p", "parent", "completed", 5),
        SagaState("p", "parent", "compensating", 5),
        SagaState("p", "parent", "running", 5, cancel_requested="stop"),
    ],
    ids=["ended", "compensating", "cancel requested"],
)
def test_a_parent_that_decides_nothing_more_orphans_the_child(parent: SagaState) -> None:
    assert orphan_verdict(CHILD, parent) == CancelRequested("parent p never recorded starting it")


@pytest.mark.parametrize(
    "parent",
    [
        SagaState("p", "parent", "running", 5, steps={2: StepState(2, "charge")}),
        SagaState("p", "parent", "running", 5, timers={2: datetime(2026, 1, 1, tzinfo=UTC)}),
        SagaState("p", "parent", "running", 5, waits={2: "approve"}),
        SagaState("p", "parent", "running", 5, children={2: ChildState(2, "other", "child")}),
    ],
    ids=["step", "timer", "wait", "another child"],
)
def test_a_parent_that_recorded_another_command_in_its_place_orphans_the_child(parent: SagaState) -> None:
    assert orphan_verdict(CHILD, parent) == CancelRequested("parent p took another path")


def test_an_ended_child_tells_its_parent_once() -> None:
    done = SagaState("c", "child", "completed", 5, parent_id="p", parent_seq=2, result=b"\x07")
    assert owes_parent(done)
    assert outcome_for_parent(done) == ChildCompleted(2, "c", b"\x07")
    assert not owes_parent(SagaState("c", "child", "completed", 6, parent_id="p", parent_notified=True))
    assert not owes_parent(SagaState("c", "child", "completed", 5, parent_id="p", detached=True))
    assert not owes_parent(CHILD)


def test_a_child_that_returned_none_reports_an_encoded_none() -> None:
    done = SagaState("c", "child", "completed", 5, parent_id="p", parent_seq=2)
    assert outcome_for_parent(done) == ChildCompleted(2, "c", b"\xc0")


def test_a_child_that_failed_reports_how() -> None:
    failed = SagaState(
        "c", "child", "compensated", 9, parent_id="p", parent_seq=2, error_type="ValueError", message="no"
    )
    assert outcome_for_parent(failed) == ChildFailed(2, "c", "compensated", "ValueError", "no")
