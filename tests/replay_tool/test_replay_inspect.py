"""Listing, timelines and redaction: the library and `sagalog replay list|show`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from sagalog.replay.inspect import (
    ListQuery,
    TimelinePrinter,
    format_duration,
    list_instances,
    print_timeline,
    timeline,
)
from sagalog.replay.redact import Redactor
from sagalog.storage import Journal, NewEvent, encode_value

from sagalog.errors import NotFoundError

pytestmark = pytest.mark.anyio


async def test_list_newest_first_with_state(filled: Journal) -> None:
    found = await list_instances(filled)
    assert [(s.stream_id, s.kind, s.workflow, s.status) for s in found] == [
        ("ledger-7", "other", None, None),
        ("wf-order-2", "workflow", "place_order", "running"),
        ("session-s1", "session", "checkout", "open"),
        ("wf-order-1", "workflow", "place_order", "completed"),
    ]
    assert found[-1].version == 10 and found[-1].last_type == "WorkflowCompleted"


async def test_list_filters_and_pages(filled: Journal) -> None:
    async def ids(**query: Any) -> list[str]:
        return [s.stream_id for s in await list_instances(filled, ListQuery(**query))]

    assert await ids(kind="workflow") == ["wf-order-2", "wf-order-1"]
    assert await ids(kind="session") == ["session-s1"]
    assert await ids(status="completed") == ["wf-order-1"]
    assert await ids(workflow="place_order", status="running") == ["wf-order-2"]
    assert await ids(workflow="nothing") == []
    assert await ids(contains="order") == ["wf-order-2", "wf-order-1"]
    assert await ids(limit=2) == ["ledger-7", "wf-order-2"]
    assert await ids(limit=2, offset=2) == ["session-s1", "wf-order-1"]
    first = (await list_instances(filled))[-1]
    assert await ids(until=first.updated_at + (first.updated_at - first.updated_at)) == []
    assert await ids(since=first.updated_at, kind="workflow") == ["wf-order-2", "wf-order-1"]


async def test_timeline_names_steps_attempts_and_durations(filled: Journal) -> None:
    entries = [e async for e in timeline(filled, "order-1")]
    assert [(e.version, e.type, e.step, e.attempt) for e in entries] == [
        (1, "WorkflowStarted", "place_order", None),
        (2, "StepScheduled", "reserve", None),
        (3, "StepStarted", "reserve", 1),
        (4, "StepFailed", "reserve", 1),
        (5, "StepStarted", "reserve", 2),
        (6, "StepCompleted", "reserve", 2),
        (7, "StepScheduled", "charge", None),
        (8, "StepStarted", "charge", 1),
        (9, "StepCompleted", "charge", 1),
        (10, "WorkflowCompleted", None, None),
    ]
    assert [e.since_previous for e in entries[:4]] == [None, 0.0, 1.5, 1.5]
    assert entries[3].summary.startswith('seq=1 error_type=TimeoutError message="stock service slow"')


async def test_timeline_masks_sensitive_fields(filled: Journal) -> None:
    started = await anext(timeline(filled, "wf-order-1"))
    assert started.payload["args"] == [{"id": 1, "password": "***", "total": 42}]
    assert "hunter2" not in started.summary
    completed = [e async for e in timeline(filled, "order-1")][5]
    assert completed.payload["result"] == {"rid": "r-1", "card": "***"}
    plain = [e async for e in timeline(filled, "order-1", redactor=Redactor(enabled=False))]
    assert plain[0].payload["args"][0]["password"] == "hunter2"
    custom = [e async for e in timeline(filled, "order-1", redactor=Redactor(["total"]))]
    assert custom[0].payload["args"][0] == {"id": 1, "password": "hunter2", "total": "***"}


def test_redactor_matching() -> None:
    redactor = Redactor()
    for key in ("password", "DB_Password", "accessToken", "card_number", "client-secret"):
        assert redactor.masks(key), key
    for key in ("id", "total", "name", 7):
        assert not redactor.masks(key), key
    assert redactor.plain({"nested": [{"token": "x"}], "b": b"\xc1"}) == {
        "nested": [{"token": "***"}],
        "b": "base64:wQ==",
    }


async def test_unknown_id_and_version_past_end(filled: Journal) -> None:
    with pytest.raises(NotFoundError, match="no workflow instance or session 'nope' in namespace 'default'"):
        [e async for e in timeline(filled, "nope")]
    with pytest.raises(NotFoundError, match="stream 'wf-order-1' has 10 events; there is no version 11"):
        [e async for e in timeline(filled, "order-1", from_version=11)]


async def test_printed_timeline_is_aligned_and_plain_when_piped(filled: Journal) -> None:
    out = io.StringIO()
    assert await print_timeline(filled, "order-1", out=out) == 10
    lines = out.getvalue().splitlines()
    assert lines[0] == "wf-order-1  (10 events, namespace default)"
    assert lines[1].split() == ["V", "TIME", "(UTC)", "DELTA", "TYPE", "STEP", "TRY", "SUMMARY"]
    assert lines[5].split()[:7] == [
        "4",
        "2026-01-01",
        "12:00:03.000",
        "+1.500s",
        "StepFailed",
        "reserve",
        "1",
    ]
    assert len({line.index("StepFailed") for line in lines if "StepFailed" in line}) == 1
    type_column = lines[1].index("TYPE")
    assert all(line[type_column:].startswith(("Step", "Workflow")) for line in lines[2:])
    assert "\x1b[" not in out.getvalue()


async def test_colour_on_a_terminal(filled: Journal) -> None:
    out = io.StringIO()
    await print_timeline(filled, "order-1", out=out, colour=True)
    assert "\x1b[31mStepFailed" in out.getvalue()


async def test_full_and_json_output(filled: Journal) -> None:
    out = io.StringIO()
    await print_timeline(filled, "order-1", out=out, full=True)
    assert '"error_type": "TimeoutError"' in out.getvalue() and '"schema": "1"' in out.getvalue()
    out = io.StringIO()
    await print_timeline(filled, "session-s1", out=out, as_json=True)
    entries = json.loads(out.getvalue())
    assert [e["type"] for e in entries] == ["SessionOpened", "SessionChanged", "SessionTouched"]
    assert entries[1]["payload"]["updates"] == {"cart": 2, "api_token": "***"}
    assert entries[1]["recorded_at"] == "2026-01-01T12:00:12Z"


def test_durations() -> None:
    assert [format_duration(s) for s in (None, 0.25, 61, 3725, 90000)] == [
        "",
        "+0.250s",
        "+1m01s",
        "+1h02m",
        "+1d01h",
    ]


def test_printer_widens_the_version_column() -> None:
    out = io.StringIO()
    TimelinePrinter(out, version_width=6).header()
    assert out.getvalue().startswith("     V  TIME")


# --- the command line -------------------------------------------------------


def test_cli_list(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "list", "--db", filled_url, "--kind", "workflow")
    assert result.status == 0
    lines = result.out.splitlines()
    assert lines[0].split() == [
        "ID",
        "KIND",
        "WORKFLOW",
        "STATUS",
        "EVENTS",
        "LAST",
        "ACTIVITY",
        "(UTC)",
        "LAST",
        "EVENT",
    ]
    assert lines[1].split()[:5] == ["wf-order-2", "workflow", "place_order", "running", "7"]
    assert lines[2].split()[:5] == ["wf-order-1", "workflow", "place_order", "completed", "10"]
    result = sagalog("replay", "list", "--db", filled_url, "--json", "--status", "open")
    assert [(s["stream_id"], s["workflow"]) for s in json.loads(result.out)] == [("session-s1", "checkout")]


def test_cli_show(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "show", "order-1", "--db", filled_url)
    assert result.status == 0, result.err
    assert "StepFailed" in result.out and "***" in result.out and "hunter2" not in result.out
    result = sagalog("replay", "show", "order-1", "--db", filled_url, "--unmasked", "--json")
    entries = json.loads(result.out)
    assert len(entries) == 10 and entries[0]["payload"]["args"][0]["password"] == "hunter2"
    result = sagalog("replay", "show", "order-1", "--db", filled_url, "--mask", "total", "--json")
    assert json.loads(result.out)[0]["payload"]["args"][0] == {"id": 1, "password": "hunter2", "total": "***"}


def test_cli_unknown_id(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "show", "nope", "--db", filled_url)
    assert result.status == 1
    assert result.err == (
        "sagalog: error: no workflow instance or session 'nope' in namespace 'default' "
        "(see `sagalog replay list`)\n"
    )


def test_cli_unreachable_database(sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "list", "--db", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert result.status == 1
    assert result.err.startswith(
        "sagalog: error: PostgreSQL at postgresql://nobody@127.0.0.1:1/nowhere failed"
    )
    assert "Connection refused" in result.err


def test_cli_not_a_database(tmp_path: Any, sagalog: Callable[..., Any]) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database")
    result = sagalog("replay", "show", "x", "--db", f"sqlite:///{path}")
    assert result.status == 1 and "is not a SQLite database" in result.err


def test_cli_bad_time(sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "list", "--since", "yesterday-ish")
    assert result.status == 2
    assert (
        "invalid time 'yesterday-ish': use an ISO time (2026-01-31T12:00) or an age (30m, 2h, 7d)"
        in result.err
    )


async def test_timeline_streams_instead_of_loading_first(journal: Journal) -> None:
    batch = [NewEvent("Tick", encode_value({"n": 1}))] * 1250
    await journal.append("wf-long", 0, batch)
    await journal.append("wf-long", 1250, batch)
    entries = timeline(journal, "wf-long")
    first = await anext(entries)
    # Appended after the first entry came out: a timeline that had read the whole
    # stream before yielding would not see it.
    await journal.append("wf-long", 2500, [NewEvent("Late", b"\xc0")])
    rest = [entry async for entry in entries]
    assert first.version == 1 and len(rest) == 2500 and rest[-1].type == "Late"


def test_cli_unknown_namespace(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "list", "--namespace", "nope", "--db", filled_url)
    assert result.status == 1
    assert result.err.startswith("sagalog: error: unknown namespace 'nope': create it first")
