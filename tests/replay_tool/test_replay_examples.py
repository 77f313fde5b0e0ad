"""The replay tool on journals filled by running docs/examples/order.py with the real Runner."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sagalog.engine.workflow import DEFAULT_REGISTRY

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@pytest.fixture
def order_module() -> Iterator[Any]:
    """docs/examples/order.py imported as ``order`` (the name `verify` will import it by)."""
    workflows, steps = dict(DEFAULT_REGISTRY.workflows), dict(DEFAULT_REGISTRY.steps)
    sys.path.insert(0, str(EXAMPLES))
    sys.modules.pop("order", None)
    try:
        yield importlib.import_module("order")
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("order", None)
        DEFAULT_REGISTRY.workflows.clear()
        DEFAULT_REGISTRY.workflows.update(workflows)
        DEFAULT_REGISTRY.steps.clear()
        DEFAULT_REGISTRY.steps.update(steps)


@pytest.fixture
def orders_url(db_url: str, order_module: Any) -> str:
    """A journal where the example placed a good order (1001) and a declined one (1002)."""
    anyio.run(order_module.main, db_url)
    return db_url


def test_list_show_and_state_of_real_runs(orders_url: str, sagalog: Callable[..., Any]) -> None:
    listed = json.loads(sagalog("replay", "list", "--json", "--db", orders_url).out)
    assert sorted((s["stream_id"], s["workflow"], s["status"]) for s in listed) == [
        ("wf-order-1001", "examples.place_order", "completed"),
        ("wf-order-1002", "examples.place_order", "compensated"),
    ]
    shown = sagalog("replay", "show", "order-1002", "--full", "--db", orders_url)
    assert shown.status == 0, shown.err
    assert "4000 0000 0000 0002" not in shown.out and '"card": "***"' in shown.out
    entries = json.loads(sagalog("replay", "show", "order-1002", "--json", "--db", orders_url).out)
    types = [e["type"] for e in entries]
    assert types[0] == "WorkflowStarted" and types[-1] == "WorkflowCompensated"
    assert "CompensationStarted" in types and "StepFailed" in types
    charge = next(e for e in entries if e["type"] == "StepFailed")
    assert charge["step"] == "order.charge_payment" and charge["attempt"] == 1
    state = json.loads(sagalog("replay", "state", "order-1001", "--json", "--db", orders_url).out)
    assert state["state"]["status"] == "completed" and state["version"] == state["of"]


def test_verify_export_import_of_real_runs(
    orders_url: str, tmp_path: Path, sagalog: Callable[..., Any]
) -> None:
    result = sagalog("replay", "verify", "order", "--db", orders_url)
    assert result.status == 0, result.out + result.err
    assert ": 2 ok, 0 diverged, 0 failed; " in result.out
    path = tmp_path / "orders.jsonl"
    assert sagalog("replay", "export", "--all", "-o", str(path), "--db", orders_url).status == 0
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    assert sagalog("replay", "import", str(path), "--db", target).status == 0
    for ident in ("order-1001", "order-1002"):
        states = [
            sagalog("replay", "state", ident, "--json", "--db", url).out for url in (orders_url, target)
        ]
        assert states[0] == states[1]
    reports = [
        json.loads(sagalog("replay", "verify", "order", "--json", *where).out)
        for where in (["--db", orders_url], ["--db", target], ["--file", str(path)])
    ]
    assert all((r["replayed"], r["ok"], r["events"]) == (2, 2, reports[0]["events"]) for r in reports)
