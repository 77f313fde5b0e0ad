"""The pure state-to-JSON functions behind the API, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sagalog.engine.console.views import iso, metric_values, timeline_steps
from sagalog.replay.events import (
    ChildCompleted,
    ChildFailed,
    ChildStarted,
    SignalReceived,
    SignalTimedOut,
    SignalWaitStarted,
    StepCompleted,
    StepFailed,
    StepScheduled,
    StepStarted,
    TimerFired,
    TimerStarted,
    WorkflowCancelled,
    WorkflowEvent,
)

T0 = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_iso_is_utc() -> None:
    assert iso(datetime(2026, 1, 31, 13, 0, tzinfo=UTC)) == "2026-01-31T13:00:00+00:00"
    assert iso(datetime(2026, 1, 31, 13, 0)) == "2026-01-31T13:00:00+00:00"  # naive times are UTC
    assert iso(None) is None


def test_steps_timers_signals_and_children_in_the_order_they_began() -> None:
    history: list[tuple[datetime, WorkflowEvent]] = [
        (at(0), StepScheduled(0, "fetch", b"\x92\x90\x80")),
        (at(0), StepStarted(0, 1)),
        (at(1), StepFailed(0, 1, "builtins.ConnectionError", "down", retry_at=at(2))),
        (at(2), StepStarted(0, 2)),
        (at(2.5), StepCompleted(0, 2, b"\xc0")),
        (at(3), TimerStarted(1, at(63))),
        (at(63), TimerFired(1)),
        (at(64), SignalReceived("go", b"\xc0")),  # before anyone waits: buffered
        (at(65), SignalWaitStarted(2, "go")),
        (at(66), SignalWaitStarted(3, "late", timeout_at=at(70))),
        (at(70), SignalTimedOut(3)),
        (at(71), ChildStarted(4, "child_flow", "c-1", b"\x90")),
        (at(75), ChildCompleted(4, "c-1", b"\xc0")),
        (at(76), ChildStarted(5, "child_flow", "c-2", b"\x90")),
        (at(80), ChildFailed(5, "c-2", "failed", "builtins.ValueError", "bad")),
        (at(81), SignalWaitStarted(6, "never")),
        (at(90), WorkflowCancelled("stop")),
    ]
    steps = timeline_steps(history)
    shown = [(s["index"], s["name"], s["kind"], s["status"], s["attempts"]) for s in steps]
    assert shown == [
        (0, "fetch", "step", "completed", 2),
        (1, "sleep", "timer", "completed", 0),
        (2, "go", "signal", "completed", 0),
        (3, "late", "signal", "failed", 0),
        (4, "child_flow", "child", "completed", 0),
        (5, "child_flow", "child", "failed", 0),
        (6, "never", "signal", "cancelled", 0),
    ]
    fetch = steps[0]
    assert fetch["duration_ms"] == 2500.0 and fetch["error"] is None  # the retry succeeded
    assert fetch["started_at"] == "2026-01-31T12:00:00+00:00"
    assert steps[1]["duration_ms"] == 60_000.0
    assert steps[3]["error"] == {"type": "SignalTimeoutError", "message": "timed out"}
    assert steps[5]["error"] == {"type": "builtins.ValueError", "message": "bad"}
    assert steps[6]["ended_at"] == iso(at(90))


def test_a_step_still_retrying_shows_its_last_error() -> None:
    steps = timeline_steps(
        [
            (at(0), StepScheduled(0, "charge", b"\x92\x90\x80")),
            (at(0), StepStarted(0, 1)),
            (at(1), StepFailed(0, 1, "builtins.TimeoutError", "slow", retry_at=at(5))),
        ]
    )
    assert steps[0]["status"] == "retrying" and steps[0]["ended_at"] is None
    assert steps[0]["error"] == {"type": "builtins.TimeoutError", "message": "slow"}


def test_metric_values_flatten_a_registry() -> None:
    registry = CollectorRegistry()
    Counter("jobs", "Jobs", ["status"], registry=registry).labels("failed").inc(2)
    Gauge("depth", "Depth", registry=registry).set(7)
    Histogram("latency_seconds", "Latency", registry=registry).observe(0.5)
    values = metric_values(registry)
    assert values['jobs_total{status="failed"}'] == 2
    assert values["depth"] == 7
    assert values["latency_seconds_count"] == 1 and values["latency_seconds_sum"] == 0.5
    assert not [name for name in values if name.endswith(("_bucket", "_created"))]
