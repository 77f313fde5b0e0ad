"""Pure checkers of the saga guarantees: given stored events, the list of violations.

Each checker takes :class:`~sagalog.storage.Event` records as a journal
returns them and returns human-readable violations (empty: the guarantee
holds). They read nothing and run no workflow code, so the property tests,
the chaos harness (``tools/chaos.py``) and the worker process tests share
them. docs/guarantees.md says which guarantee each one checks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

from sagalog.replay.events import (
    ChildStarted,
    CompensationCompleted,
    CompensationSkipped,
    CompensationStarted,
    StepCompleted,
    StepScheduled,
    StepStarted,
    WorkflowStarted,
    decode_event,
)
from sagalog.storage import Event

TERMINAL_EVENTS = frozenset({
    "WorkflowCompleted", "WorkflowFailed", "WorkflowCompensated", "WorkflowCancelled",
    "WorkflowContinuedAsNew",
})  # fmt: skip
"""Event types that end an instance for good."""

_AFTER_END = frozenset({"ParentNotified"})
"""What may follow a terminal event (a child telling its parent it was notified)."""


def terminal_status(events: Sequence[Event]) -> str:
    """The status the stream's terminal event records (``unfinished`` without one)."""
    for event in reversed(events):
        if event.type in TERMINAL_EVENTS:
            if event.type == "WorkflowContinuedAsNew":
                return "completed"
            return event.type.removeprefix("Workflow").lower()
    return "unfinished"


def check_versions(stream: str, events: Sequence[Event]) -> list[str]:
    """Versions are 1..n without a gap and positions strictly increase (guarantee 7)."""
    problems = []
    versions = [e.version for e in events]
    if versions != list(range(1, len(events) + 1)):
        problems.append(f"{stream}: versions are not 1..{len(events)}: {versions[:20]}")
    positions = [e.position for e in events]
    if any(b <= a for a, b in pairwise(positions)):
        problems.append(f"{stream}: positions do not strictly increase")
    return problems


def check_terminal(instance_id: str, events: Sequence[Event]) -> list[str]:
    """One ``WorkflowStarted`` first, exactly one terminal event, nothing after it (guarantee 1).

    Only a ``ParentNotified`` may follow the terminal event.
    """
    problems = []
    starts = [e for e in events if e.type == "WorkflowStarted"]
    if len(starts) != 1 or not events or events[0].type != "WorkflowStarted":
        problems.append(f"{instance_id}: {len(starts)} WorkflowStarted event(s), want exactly one, first")
    ends = [i for i, e in enumerate(events) if e.type in TERMINAL_EVENTS]
    if len(ends) != 1:
        kinds = [events[i].type for i in ends] or ["none"]
        problems.append(f"{instance_id}: terminal events {kinds} (want exactly one)")
    else:
        after = [e.type for e in events[ends[0] + 1 :] if e.type not in _AFTER_END]
        if after:
            problems.append(f"{instance_id}: events after its terminal event: {after[:5]}")
    return problems


def check_completions(instance_id: str, events: Sequence[Event]) -> list[str]:
    """Each step's completion is recorded once, and no attempt starts after it (guarantee 4)."""
    seen: Counter[int] = Counter()
    late: list[int] = []
    for event in events:
        if event.type not in ("StepCompleted", "CompensationCompleted", "StepStarted"):
            continue
        decoded = decode_event(event)
        assert isinstance(decoded, StepCompleted | CompensationCompleted | StepStarted)
        if isinstance(decoded, StepStarted):
            if decoded.seq in seen:
                late.append(decoded.seq)
            continue
        seen[decoded.seq] += 1
    problems = []
    twice = [f"#{seq}" for seq, n in seen.items() if n > 1]
    if twice:
        problems.append(f"{instance_id}: completion recorded twice for {', '.join(twice)}")
    if late:
        problems.append(f"{instance_id}: attempts started after the completion of {late}")
    return problems


def check_compensations(instance_id: str, events: Sequence[Event]) -> list[str]:
    """Compensation runs exactly the completed steps, once each, in reverse order (guarantees 2, 3).

    * a compensation undoes only a step whose completion was recorded, and
      no step is scheduled, started or completed once compensation began;
    * an instance that ended ``compensated`` or ``cancelled`` compensated every
      completed step that has a compensation, in the reverse order of their
      recorded completions, each completion recorded once (or skipped by an operator);
    * one that ended ``completed`` or ``failed`` ran no compensation (``failed`` is
      the end of a saga with nothing to undo).
    """
    problems: list[str] = []
    undoable: set[int] = set()
    completed: list[int] = []
    started: list[tuple[int, int]] = []
    done: Counter[int] = Counter()
    skipped: set[int] = set()
    for event in events:
        decoded = decode_event(event)
        compensating = bool(started)
        match decoded:
            case StepScheduled(seq=seq, compensation=compensation):
                if compensation is not None:
                    undoable.add(seq)
                if compensating:
                    problems.append(f"{instance_id}: step #{seq} scheduled after compensation began")
            case StepCompleted(seq=seq):
                if seq in undoable:
                    completed.append(seq)
                if compensating:
                    problems.append(f"{instance_id}: step #{seq} completed after compensation began")
            case StepStarted(seq=seq) if compensating and seq not in {c for c, _ in started}:
                problems.append(f"{instance_id}: step #{seq} started after compensation began")
            case CompensationStarted(seq=seq, for_seq=for_seq):
                if for_seq not in completed:
                    problems.append(f"{instance_id}: compensation of step #{for_seq}, which never completed")
                started.append((seq, for_seq))
            case CompensationCompleted(seq=seq):
                done[seq] += 1
            case CompensationSkipped(seq=seq):
                skipped.add(seq)
            case _:
                pass
    status = terminal_status(events)
    order = [for_seq for _, for_seq in started]
    if status in ("compensated", "cancelled"):
        if order != completed[::-1]:
            want = completed[::-1]
            problems.append(f"{instance_id}: compensated steps {order}, want completed ones reversed {want}")
        wrong = [seq for seq, _ in started if done[seq] + (seq in skipped) != 1]
        if wrong:
            problems.append(f"{instance_id}: compensations {wrong} not recorded as completed exactly once")
    elif status in ("completed", "failed") and started:
        problems.append(f"{instance_id}: ended {status} but ran compensations for steps {order}")
    if status == "failed" and completed:
        problems.append(f"{instance_id}: ended failed with completed steps {completed} left to compensate")
    return problems


def check_history(instance_id: str, events: Sequence[Event]) -> list[str]:
    """Every per-stream check of an instance that should have ended."""
    stream = f"wf-{instance_id}"
    return [
        *check_versions(stream, events),
        *check_terminal(instance_id, events),
        *check_completions(instance_id, events),
        *check_compensations(instance_id, events),
    ]


def check_children(histories: Mapping[str, Sequence[Event]]) -> list[str]:
    """A child workflow runs steps only if its parent recorded starting it (guarantee 3).

    ``histories`` maps instance ids to their events and holds the parents of
    the children in it. A child its parent never recorded is an orphan:
    nobody waits for it, cancels it or hears of it, so it must not run.
    """
    recorded: set[tuple[str, str]] = set()
    for instance, events in histories.items():
        for event in events:
            if event.type == "ChildStarted":
                decoded = decode_event(event)
                assert isinstance(decoded, ChildStarted)
                recorded.add((instance, decoded.child_id))
    problems = []
    for instance, events in histories.items():
        if not events or events[0].type != "WorkflowStarted":
            continue
        started = decode_event(events[0])
        assert isinstance(started, WorkflowStarted)
        parent = started.parent_id
        if parent is None or started.detached or parent not in histories:
            continue
        ran = any(e.type == "StepStarted" for e in events)
        if ran and (parent, instance) not in recorded:
            problems.append(f"{instance}: ran steps although its parent {parent} never recorded starting it")
    return problems


def check_global(everything: Sequence[Event], streams: Mapping[str, Sequence[Event]]) -> list[str]:
    """The global order has no event twice, none missing, none out of order (guarantee 7).

    ``everything`` is the journal read in global order; ``streams`` the
    streams read one by one (by stream id). Positions may have gaps (a
    rolled-back transaction burns one on PostgreSQL); order and membership may not.
    """
    problems = []
    positions = [e.position for e in everything]
    if len(set(positions)) != len(positions):
        problems.append("global order: the same position twice")
    if positions != sorted(positions):
        problems.append("global order: positions out of order")
    keys = Counter((e.stream_id, e.version) for e in everything)
    twice = [k for k, n in keys.items() if n > 1]
    if twice:
        problems.append(f"global order: events twice: {twice[:5]}")
    per_stream: dict[str, list[int]] = {}
    for event in everything:
        per_stream.setdefault(event.stream_id, []).append(event.version)
    for stream, events in streams.items():
        if per_stream.get(stream, []) != [e.version for e in events]:
            problems.append(f"{stream}: the global order disagrees with the stream (missing or reordered)")
    return problems


def check_all(histories: Mapping[str, Sequence[Event]], everything: Iterable[Event]) -> list[str]:
    """:func:`check_history` of each instance (by id), :func:`check_children` and
    :func:`check_global` over them."""
    problems = [p for instance, events in histories.items() for p in check_history(instance, events)]
    streams = {f"wf-{instance}": events for instance, events in histories.items()}
    return problems + check_children(histories) + check_global(list(everything), streams)
