"""Time travel: state at a version, diffs between versions, `sagalog replay state`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sagalog.replay.redact import Redactor
from sagalog.replay.saga import SagaFold
from sagalog.replay.timetravel import diff_values, state_at, state_diff
from sagalog.storage import Journal

from sagalog.errors import NotFoundError, ReplayToolError

pytestmark = pytest.mark.anyio


async def test_state_at_each_version(filled: Journal) -> None:
    latest = await state_at(filled, "order-1")
    assert (latest.stream_id, latest.version, latest.of) == ("wf-order-1", 10, 10)
    assert latest.state["status"] == "completed" and latest.state["result"] == {"payment": "pay-1"}
    assert latest.state["args"] == [{"id": 1, "password": "***", "total": 42}]
    retrying = await state_at(filled, "order-1", 4)
    assert retrying.version == 4 and retrying.state["status"] == "running"
    assert retrying.state["steps"]["1"]["status"] == "retrying"
    assert retrying.state["steps"]["1"]["message"] == "stock service slow"
    empty = await state_at(filled, "order-1", 0)
    assert empty.state["status"] == "absent"


async def test_state_of_a_session_uses_the_session_fold(filled: Journal) -> None:
    view = await state_at(filled, "s1", 2)
    assert view.state["status"] == "open"
    assert view.state["attributes"] == {"cart": 2, "api_token": "***"}
    unmasked = await state_at(filled, "session-s1", redactor=Redactor(enabled=False))
    assert unmasked.state["attributes"]["api_token"] == "tk-9" and unmasked.state["touches"] == 1


async def test_state_with_and_without_snapshots_agree(filled: Journal) -> None:
    from sagalog.replay.folding import load_state, snapshot_if_due

    fold = SagaFold()
    state, version = await load_state(filled, "wf-order-1", fold, at_version=5)
    await snapshot_if_due(filled, "wf-order-1", fold, state, version, every=5)
    for at in (4, 5, 7, 10):
        assert (await state_at(filled, "order-1", at)).state == (
            await state_at(filled, "order-1", at, use_snapshots=False)
        ).state


async def test_diff_between_versions(filled: Journal) -> None:
    diff = await state_diff(filled, "order-1", 3, 6)
    changes = {c.path: (c.op, c.before, c.after) for c in diff.changes}
    assert changes["steps.1.status"] == ("changed", "running", "completed")
    assert changes["steps.1.attempts"] == ("changed", 1, 2)
    assert changes["steps.1.result"] == ("changed", None, {"rid": "r-1", "card": "***"})
    assert changes["compensations[0]"] == ("added", None, 1)
    assert changes["version"] == ("changed", 3, 6)
    assert (await state_diff(filled, "order-1", 6, 6)).changes == []


def test_diff_values_paths() -> None:
    changes = diff_values({"a": 1, "b": [1, 2], "c": {"x": 1}}, {"a": 1, "b": [1], "c": {}, "d": 0})
    assert [(c.path, c.op) for c in changes] == [("b[1]", "removed"), ("c.x", "removed"), ("d", "added")]
    assert [(c.path, c.op) for c in diff_values(1, "1")] == [("$", "changed")]


async def test_bad_versions_and_ids(filled: Journal) -> None:
    with pytest.raises(NotFoundError, match="stream 'wf-order-1' has 10 events; there is no version 11"):
        await state_at(filled, "order-1", 11)
    with pytest.raises(NotFoundError, match="there is no version 99"):
        await state_diff(filled, "order-1", 1, 99)
    with pytest.raises(ReplayToolError, match="invalid version -1: versions start at 1"):
        await state_at(filled, "order-1", -1)
    with pytest.raises(NotFoundError, match="no workflow instance or session 'ghost'"):
        await state_at(filled, "ghost")
    with pytest.raises(ReplayToolError, match="stream 'ledger-7' is neither a workflow instance"):
        await state_at(filled, "ledger-7")


# --- the command line -------------------------------------------------------


def test_cli_state(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "state", "order-1", "--at", "4", "--db", filled_url)
    assert result.status == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "wf-order-1 at version 4 of 10"
    assert '  status: "running"' in lines
    assert '      message: "stock service slow"' in lines
    result = sagalog("replay", "state", "order-1", "--json", "--unmasked", "--db", filled_url)
    view = json.loads(result.out)
    assert view["version"] == 10 and view["state"]["args"][0]["password"] == "hunter2"


def test_cli_diff(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "state", "order-1", "--diff", "3", "6", "--db", filled_url)
    assert result.status == 0, result.err
    assert result.out.splitlines()[0] == "wf-order-1: state from version 3 to 6"
    assert '  ~ steps.1.status: "running" -> "completed"' in result.out.splitlines()
    assert "  + compensations[0]: 1" in result.out.splitlines()
    result = sagalog("replay", "state", "order-1", "--diff", "3", "6", "--json", "--db", filled_url)
    assert {"path": "steps.1.attempts", "op": "changed", "before": 1, "after": 2} in json.loads(result.out)[
        "changes"
    ]


def test_cli_version_past_the_end(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "state", "order-1", "--at", "11", "--db", filled_url)
    assert result.status == 1
    assert result.err == "sagalog: error: stream 'wf-order-1' has 10 events; there is no version 11\n"
