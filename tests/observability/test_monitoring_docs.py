"""The Monitoring section of docs/operations.md and the metrics agree: every metric a worker
exposes is in the table, and every name the table, the alert rules and the queries use exists."""

from __future__ import annotations

import re
from pathlib import Path

from sagalog.engine.worker_metrics import WorkerMetrics

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def monitoring_section() -> str:
    text = PAGE.read_text()
    start = text.index("## Monitoring")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def exposed() -> set[str]:
    """Metric family names of a worker's registry (as Prometheus shows them, suffixes aside)."""
    metrics = WorkerMetrics()
    metrics.watch_cache(lambda: (0, 0))  # what a Worker and its RunnerHandler add
    metrics.watch_breakers(dict)
    return {family.name for family in metrics.registry.collect()}


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_exposed_metric_is_in_the_table() -> None:
    table = {
        base(name)
        for row in monitoring_section().splitlines()
        if row.startswith("| `sagalog_")
        for name in re.findall(r"`(sagalog_\w+)", row.split(" | ")[0])
    }
    assert exposed() == table


def test_every_metric_the_section_names_exists() -> None:
    named = {base(name) for name in re.findall(r"\bsagalog_\w+", monitoring_section())}
    assert named - exposed() == set()
    assert {"sagalog_workflows_parked", "sagalog_timer_lag_seconds", "sagalog_lease_takeovers"} <= named
