"""The lock-free metrics expose what prometheus_client's own classes would."""

from __future__ import annotations

import prometheus_client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from sagalog.engine.tallies import Histogram, Tally

BOUNDS = (0.005, 0.01, 0.1, 1, 2.5, 60)


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample but the ``_created`` ones (a creation time differs by nature)."""
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def text(registry: CollectorRegistry) -> str:
    """The exposition Prometheus scrapes, without the ``_created`` families."""
    lines = generate_latest(registry).decode().splitlines()
    return "\n".join(line for line in lines if "_created" not in line)


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 100, allow_nan=False)), max_size=30))
def test_a_histogram_matches_prometheus_clients_for_the_same_observations(
    observed: list[tuple[str, float]],
) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    mine = Histogram("x_seconds", "help", ["step"], buckets=BOUNDS, registry=ours)
    reference = prometheus_client.Histogram("x_seconds", "help", ["step"], buckets=BOUNDS, registry=theirs)
    for step, value in observed:
        mine.labels(step).observe(value)
        reference.labels(step).observe(value)
    assert samples(ours) == samples(theirs)
    assert text(ours) == text(theirs)


def test_counters_and_gauges_match_prometheus_clients() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    steps, ref_steps = (
        Tally("steps", "h", registry=ours),
        prometheus_client.Counter("steps", "h", registry=theirs),
    )
    ended = Tally("ended", "h", ["status"], registry=ours)
    ref_ended = prometheus_client.Counter("ended", "h", ["status"], registry=theirs)
    busy, ref_busy = (
        Tally("busy", "h", registry=ours, gauge=True),
        prometheus_client.Gauge("busy", "h", registry=theirs),
    )
    for _ in range(3):
        steps.inc()
        ref_steps.inc()
    steps.inc(2.5)
    ref_steps.inc(2.5)
    ended.labels("failed").inc()
    ref_ended.labels("failed").inc()
    busy.inc()
    busy.inc()
    busy.dec()
    ref_busy.inc()
    ref_busy.inc()
    ref_busy.dec()
    assert samples(ours) == samples(theirs)
    assert text(ours) == text(theirs)
    assert "steps_total 5.5" in text(ours)


def test_wrong_label_values_are_refused_with_the_label_names() -> None:
    registry = CollectorRegistry()
    tally = Tally("ended", "h", ["workflow", "status"], registry=registry)
    with pytest.raises(ValueError, match=r"ended takes labels \('workflow', 'status'\), got \('x',\)"):
        tally.labels("x")
    assert samples(registry) == set()  # nothing was created by the refused call
