"""What the console's JSON says: pure functions from states and events to plain values.

Nothing here does I/O, so the shapes of the HTTP API can be tested without a
server. Values users supplied (arguments, results, payloads, attributes) go
through a :class:`~sagalog.replay.redact.Redactor`, which decodes msgpack and
masks sensitive fields exactly as ``sagalog replay`` does. Times are ISO-8601
strings in UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from sagalog.replay.events import (
    TERMINAL_TYPES,
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    CompensationCompleted,
    CompensationFailed,
    CompensationRetried,
    CompensationSkipped,
    CompensationStarted,
    SignalReceived,
    SignalTimedOut,
    SignalWaitStarted,
    StepCancelled,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepStarted,
    TimerFired,
    TimerStarted,
    WorkflowEvent,
)
from sagalog.replay.redact import Redactor
from sagalog.replay.saga import SagaState
from sagalog.replay.sessions import SessionState
from sagalog.storage import Event, StreamInfo


def iso(value: datetime | None) -> str | None:
    """A time as an ISO-8601 string in UTC (None stays None)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def error_of(type_name: str, message: str) -> dict[str, str] | None:
    """``{"type", "message"}`` of an error, or None when there is none."""
    if not type_name and not message:
        return None
    return {"type": type_name, "message": message}


# --- instances -----------------------------------------------------------------


def instance_row(state: SagaState, info: StreamInfo) -> dict[str, Any]:
    """One instance in a listing."""
    return {
        "id": state.instance_id,
        "workflow": state.workflow,
        "status": state.status,
        "started_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
        "version": state.version,
        "session_id": state.session_id,
    }


def instance_detail(state: SagaState, redactor: Redactor) -> dict[str, Any]:
    """One instance: status, input, result or error, and its whole folded state."""
    return {
        "id": state.instance_id,
        "workflow": state.workflow,
        "status": state.status,
        "version": state.version,
        "session_id": state.session_id,
        "input": redactor.plain(state.args) if state.args else [],
        "result": redactor.plain(state.result) if state.result is not None else None,
        "error": error_of(state.error_type, state.message),
        "parked_reason": state.parked_reason or None,
        "cancel_requested": state.cancel_requested,
        "state": redactor.plain(state),
    }


def event_json(event: Event, redactor: Redactor) -> dict[str, Any]:
    """One stored event: its place, type, time, decoded payload and metadata."""
    data = redactor.payload(event.payload)
    if isinstance(data, dict):
        data.pop("type", None)  # the msgspec tag repeats the event type
    return {
        "version": event.version,
        "position": event.position,
        "type": event.type,
        "recorded_at": iso(event.recorded_at),
        "data": data,
        "metadata": redactor.plain(event.metadata),
    }


# --- the timeline of steps ---------------------------------------------------------


class _Entry:
    """A step, compensation, timer, signal wait or child as the timeline builds it."""

    def __init__(self, index: int, name: str, kind: str, at: datetime) -> None:
        self.index = index
        self.name = name
        self.kind = kind
        self.status = "scheduled" if kind in ("step", "compensation") else "running"
        self.attempts = 0
        self.scheduled_at = at
        self.started_at: datetime | None = None if kind in ("step", "compensation") else at
        self.ended_at: datetime | None = None
        self.error: dict[str, str] | None = None
        self.undoes: int | None = None

    def end(self, status: str, at: datetime, error: dict[str, str] | None = None) -> None:
        self.status = status
        self.ended_at = at
        self.error = error

    def json(self) -> dict[str, Any]:
        duration = None
        if self.started_at is not None and self.ended_at is not None:
            duration = round((self.ended_at - self.started_at).total_seconds() * 1000, 3)
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "attempts": self.attempts,
            "started_at": iso(self.started_at or self.scheduled_at),
            "ended_at": iso(self.ended_at),
            "duration_ms": duration,
            "error": self.error,
            "undoes": self.undoes,
        }


def timeline_steps(events: Iterable[tuple[datetime, WorkflowEvent]]) -> list[dict[str, Any]]:
    """Steps, compensations, timers, signal waits and children, in the order they began.

    Args:
        events: an instance's decoded events with the time each was recorded.

    Each entry has its status, attempts (every attempt counts, including those
    after an operator's retry), start and end times, duration and last error.
    A compensation is an entry of its own (``kind: "compensation"``) whose
    ``undoes`` is the index of the step it undoes.
    """
    entries: dict[int, _Entry] = {}
    buffered: list[str] = []  # signals that arrived before a wait took them
    for at, event in events:
        match event:
            case StepScheduled(seq=seq, step=name):
                entries[seq] = _Entry(seq, name, "step", at)
            case CompensationStarted(seq=seq, step=name, for_seq=for_seq):
                entries[seq] = _Entry(seq, name, "compensation", at)
                entries[seq].undoes = for_seq
            case TimerStarted(seq=seq):
                entries[seq] = _Entry(seq, "sleep", "timer", at)
            case ChildStarted(seq=seq, workflow=name):
                entries[seq] = _Entry(seq, name, "child", at)
            case SignalWaitStarted(seq=seq, name=name):
                entries[seq] = _Entry(seq, name, "signal", at)
                if name in buffered:
                    buffered.remove(name)
                    entries[seq].end("completed", at)
            case StepStarted(seq=seq) if seq in entries:
                entry = entries[seq]
                entry.attempts += 1
                entry.status = "running"
                entry.started_at = entry.started_at or at
            case StepCompleted(seq=seq) | CompensationCompleted(seq=seq) if seq in entries:
                entries[seq].end("completed", at)
            case StepFailed(seq=seq, retry_at=retry_at) if seq in entries:
                error = error_of(event.error_type, event.message)
                if retry_at is None:
                    entries[seq].end("failed", at, error)
                else:
                    entries[seq].status, entries[seq].error = "retrying", error
            case CompensationFailed(seq=seq) if seq in entries:
                entries[seq].end("failed", at, error_of(event.error_type, event.message))
            case CompensationRetried(seq=seq) if seq in entries:
                entries[seq].status, entries[seq].ended_at = "scheduled", None
            case CompensationSkipped(seq=seq) if seq in entries:
                entries[seq].status = "skipped"
            case StepCancelled(seq=seq) if seq in entries:
                entries[seq].end("cancelled", at)
            case TimerFired(seq=seq) if seq in entries:
                entries[seq].end("completed", at)
            case SignalTimedOut(seq=seq) if seq in entries:
                entries[seq].end("failed", at, {"type": "SignalTimeoutError", "message": "timed out"})
            case SignalReceived(name=name):
                waiting = [e for e in entries.values() if e.kind == "signal" and e.name == name]
                open_waits = [e for e in waiting if e.status == "running"]
                if open_waits:
                    open_waits[0].end("completed", at)
                else:
                    buffered.append(name)
            case ChildCompleted(seq=seq) if seq in entries:
                entries[seq].end("completed", at)
            case ChildFailed(seq=seq) if seq in entries:
                entries[seq].end("failed", at, error_of(event.error_type, event.message))
            case _ if isinstance(event, TERMINAL_TYPES):
                for entry in entries.values():
                    if entry.status in ("running", "scheduled") and entry.kind != "child":
                        entry.end("cancelled", at)
    return [e.json() for e in entries.values()]  # dicts keep the order the entries began


# --- sessions ------------------------------------------------------------------------


def session_row(state: SessionState) -> dict[str, Any]:
    """One session in a listing."""
    return {
        "id": state.session_id,
        "kind": state.kind,
        "status": state.status,
        "opened_at": iso(state.created_at),
        "expires_at": iso(state.next_deadline),
        "ended_at": iso(state.ended_at),
        "end_reason": state.end_reason or None,
        "version": state.version,
        "workflows": [w.instance_id for w in state.workflows],
    }


def session_detail(state: SessionState, events: Iterable[Event], redactor: Redactor) -> dict[str, Any]:
    """One session: its listing fields, attributes and events."""
    return {
        **session_row(state),
        "attributes": redactor.plain(state.attributes),
        "events": [event_json(e, redactor) for e in events],
    }


# --- metrics -----------------------------------------------------------------------


def metric_values(registry: CollectorRegistry) -> dict[str, float]:
    """Every sample of a Prometheus registry as ``{name{label="v"}: value}``.

    Histogram buckets and ``_created`` timestamps are left out: the summary
    shows counts, sums and gauges, and Prometheus has the rest.
    """
    values: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values
