"""Parents and children: what one instance's state means for the other.

Pure decisions, read off folded states; the Runner's
:class:`~sagalog.engine.family.Family` reads the states and appends what
these return.
"""

from __future__ import annotations

from typing import Literal

from sagalog.replay.events import CancelRequested, ChildCompleted, ChildFailed, WorkflowEvent
from sagalog.replay.saga import SagaState

Verdict = Literal["adopted", "undecided"] | CancelRequested
"""What a child learns from its parent's state: it was recorded, not yet, or must cancel."""


def may_be_orphan(child: SagaState) -> bool:
    """Whether ``child`` must look at its parent before running (see :func:`orphan_verdict`).

    Only a running child attached to a parent can be an orphan; an unwinding
    or ended one makes no decision that would need its parent.
    """
    return (
        child.parent_id is not None
        and not child.detached
        and child.status == "running"
        and child.cancel_requested is None
    )


def orphan_verdict(child: SagaState, parent: SagaState) -> Verdict:
    """Whether ``parent`` recorded starting ``child``, may still, or never will.

    A child is created just before its parent records ``ChildStarted`` (so a
    crash cannot lose it). If that append then fails (a crash, a race lost to
    a cancel) and the replayed parent does not decide the same child again,
    the child is an orphan: nobody waits for it, cancels it or compensates
    it, so it must not run. It gets a ``CancelRequested`` naming why.
    """
    seq = child.parent_seq
    known = parent.children.get(seq) if seq is not None else None
    if known is not None and known.child_id == child.instance_id:
        return "adopted"
    # A parent that ended, or whose code was closed by a cancel or an error
    # (it only compensates now), makes no new decision: it will never record it.
    done = parent.terminal or parent.status in ("compensating", "compensation_failed")
    if done or parent.cancel_requested is not None:
        return CancelRequested(f"parent {child.parent_id} never recorded starting it")
    # A parent that recorded another command where this child was to be (a
    # re-run step returned something else, and its code took another path)
    # will not record it either.
    if known is not None or seq in parent.steps or seq in parent.timers or seq in parent.waits:
        return CancelRequested(f"parent {child.parent_id} took another path")
    return "undecided"


def owes_parent(child: SagaState) -> bool:
    """Whether ``child`` ended and its parent has not been told yet."""
    return bool(child.terminal and child.parent_id and not child.detached and not child.parent_notified)


def outcome_for_parent(child: SagaState) -> WorkflowEvent:
    """The event that tells the parent how ``child`` ended (``owes_parent`` must hold)."""
    assert child.parent_seq is not None
    if child.status == "completed":
        result = child.result or b"\xc0"  # msgpack nil: a child that returned None
        return ChildCompleted(child.parent_seq, child.instance_id, result)
    return ChildFailed(child.parent_seq, child.instance_id, child.status, child.error_type, child.message)
