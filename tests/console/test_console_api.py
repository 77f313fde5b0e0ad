"""The console's HTTP API against a real worker on SQLite and PostgreSQL.

Each test populates the journal through the Client and a worker running the
test workflows (``console_workflows``), then talks HTTP to the console, and
checks what the journal holds afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from console_helpers import Http, Stack
from console_workflows import LATE
from sagalog.engine.console import serve_console
from sagalog.engine.sessions import Sessions
from sagalog.replay.events import WorkflowStarted, encode_event
from sagalog.storage import NO_STREAM, Schedule, encode_value

pytestmark = pytest.mark.anyio


async def populate(stack: Stack) -> None:
    """One instance in each status an operator meets."""
    client = stack.client
    await client.start("order", {"id": "ok"}, id="ok")
    await client.start("order", {"id": "comp", "decline": True}, id="comp")
    await client.start("order", {"id": "o-stuck", "decline": True}, id="stuck")
    await client.start("order", {"id": "wait", "approval": True}, id="wait")
    await park_unknown(stack, "lost")
    assert await stack.settle("ok", "completed") == "completed"
    assert await stack.settle("comp", "compensated") == "compensated"
    assert await stack.settle("stuck", "compensation_failed") == "compensation_failed"
    assert await stack.settle("wait", "running") == "running"
    assert await stack.settle("lost", "parked") == "parked"


async def park_unknown(stack: Stack, instance_id: str) -> None:
    """An instance of a workflow the worker does not know: it parks it."""
    started = WorkflowStarted("late", encode_value([]))
    await stack.journal.append(
        f"wf-{instance_id}",
        NO_STREAM,
        [encode_event(started, {"worker": "test"})],
        schedule=Schedule(stack.journal.clock.now()),
    )


async def journal_versions(stack: Stack) -> dict[str, int]:
    """Every stream's version: equal before and after means nothing was written."""
    return {s.stream_id: s.version for s in await stack.journal.list_streams()}


# --- reading ------------------------------------------------------------------


async def test_lists_instances_newest_first_with_filters(stack: Stack) -> None:
    await populate(stack)
    http = stack.http
    everything = (await http.get("/api/instances")).json["instances"]
    assert {row["id"] for row in everything} == {"ok", "comp", "stuck", "wait", "lost"}
    row = next(r for r in everything if r["id"] == "ok")
    assert set(row) == {"id", "workflow", "status", "started_at", "updated_at", "version", "session_id"}
    assert (row["workflow"], row["status"], row["session_id"]) == ("order", "completed", None)
    assert datetime.fromisoformat(row["started_at"]).utcoffset() == timedelta(0)
    updated = [datetime.fromisoformat(r["updated_at"]) for r in everything]
    assert updated == sorted(updated, reverse=True)

    async def ids(query: str) -> set[str]:
        reply = await http.get(f"/api/instances?{query}")
        assert reply.status == 200, reply.body
        return {r["id"] for r in reply.json["instances"]}

    assert await ids("status=completed") == {"ok"}
    assert await ids("status=compensated,compensation_failed") == {"comp", "stuck"}
    assert await ids("status=parked") == {"lost"}
    assert await ids("workflow=order&status=running") == {"wait"}
    assert await ids("workflow=late") == {"lost"}
    assert len(await ids("limit=2")) == 2
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await ids(f"since={future}") == set()
    assert await ids("session=nobody") == set()


async def test_instance_detail_shows_input_result_and_error(stack: Stack) -> None:
    await populate(stack)
    ok = (await stack.http.get("/api/instances/ok")).json
    assert ok["status"] == "completed" and ok["workflow"] == "order"
    assert ok["input"] == [{"id": "ok"}]
    assert ok["result"] == {"reservation": "res-ok", "payment": "pay-ok"}
    assert ok["error"] is None and ok["parked_reason"] is None
    assert ok["state"]["status"] == "completed" and ok["version"] == ok["state"]["version"]
    comp = (await stack.http.get("/api/instances/comp")).json
    assert comp["status"] == "compensated"
    assert comp["error"]["type"] == "sagalog.errors.StepError"  # the step error the saga did not catch
    assert "card declined for order comp" in comp["error"]["message"]
    lost = (await stack.http.get("/api/instances/lost")).json
    assert lost["status"] == "parked" and "late" in lost["parked_reason"]


async def test_timeline_shows_steps_and_compensations(stack: Stack) -> None:
    await populate(stack)
    timeline = (await stack.http.get("/api/instances/comp/timeline")).json
    assert (timeline["id"], timeline["status"]) == ("comp", "compensated")
    events = timeline["events"]
    assert [e["version"] for e in events] == list(range(1, timeline["version"] + 1))
    assert events[0]["type"] == "WorkflowStarted" and events[-1]["type"] == "WorkflowCompensated"
    assert events[0]["data"]["workflow"] == "order" and events[0]["metadata"]["worker"] == "client"
    assert all(datetime.fromisoformat(e["recorded_at"]).utcoffset() == timedelta(0) for e in events)
    steps = [(s["name"], s["kind"], s["status"], s["attempts"]) for s in timeline["steps"]]
    assert steps == [
        ("reserve", "step", "completed", 1),
        ("charge", "step", "failed", 2),
        ("release", "compensation", "completed", 1),
    ]
    reserve, charge, release = timeline["steps"]
    assert release["undoes"] == reserve["index"]
    assert charge["error"]["type"].endswith("Declined") and reserve["error"] is None
    assert all(s["duration_ms"] is not None and s["duration_ms"] >= 0 for s in timeline["steps"])
    stuck = (await stack.http.get("/api/instances/stuck/timeline")).json["steps"]
    assert stuck[-1]["kind"] == "compensation" and stuck[-1]["status"] == "failed"
    assert "warehouse offline" in stuck[-1]["error"]["message"]
    waiting = (await stack.http.get("/api/instances/wait/timeline")).json["steps"]
    assert (waiting[-1]["name"], waiting[-1]["kind"], waiting[-1]["status"]) == (
        "approved",
        "signal",
        "running",
    )
    assert waiting[-1]["ended_at"] is None and waiting[-1]["duration_ms"] is None


async def test_state_at_any_version(stack: Stack) -> None:
    await populate(stack)
    first = (await stack.http.get("/api/instances/comp/state?version=1")).json
    assert (first["version"], first["status"], first["state"]["steps"]) == (1, "running", {})
    top = first["max_version"]
    last = (await stack.http.get(f"/api/instances/comp/state?version={top}")).json
    assert (last["status"], last["version"], last["max_version"]) == ("compensated", top, top)
    latest = (await stack.http.get("/api/instances/comp/state")).json
    assert latest["version"] == top
    middle = (await stack.http.get("/api/instances/comp/state?version=3")).json
    assert middle["state"]["version"] == 3


async def test_sessions_list_and_detail(stack: Stack) -> None:
    sessions = Sessions(stack.journal)
    await sessions.open("cart-1", kind="checkout", attributes={"items": 2, "card_number": "4111"})
    await sessions.open("chat-1", kind="chat")
    await sessions.close("chat-1", "done")
    await stack.client.start("order", {"id": "s", "approval": True}, id="in-cart")
    http = stack.http
    rows = (await http.get("/api/sessions")).json["sessions"]
    assert {r["id"]: r["status"] for r in rows} == {"cart-1": "open", "chat-1": "closed"}
    assert (await http.get("/api/sessions?kind=checkout")).json["sessions"][0]["id"] == "cart-1"
    assert [r["id"] for r in (await http.get("/api/sessions?status=closed")).json["sessions"]] == ["chat-1"]
    cart = (await http.get("/api/sessions/cart-1")).json
    assert cart["kind"] == "checkout" and cart["status"] == "open"
    assert cart["attributes"] == {"items": 2, "card_number": "***"}  # masked as in `sagalog replay`
    assert [e["type"] for e in cart["events"]] == ["SessionOpened"]
    assert cart["workflows"] == [] and datetime.fromisoformat(cart["opened_at"])


async def test_summary_counts_statuses(stack: Stack) -> None:
    await populate(stack)
    await Sessions(stack.journal).open("cart-9", kind="checkout")
    summary = (await stack.http.get("/api/summary")).json
    assert summary["instances"] == {
        "completed": 1,
        "compensated": 1,
        "compensation_failed": 1,
        "running": 1,
        "parked": 1,
    }
    assert summary["sessions"] == {"open": 1}
    assert summary["metrics"] == {} and summary["workers"] == []  # served alone, not by a worker


async def test_connections_are_kept_alive(stack: Stack) -> None:
    for _ in range(5):
        assert (await stack.http.get("/api/summary")).status == 200
    assert stack.http.connections == 1


# --- acting ------------------------------------------------------------------------


async def test_cancel_a_running_saga_records_who_and_compensates(stack: Stack) -> None:
    await populate(stack)
    reply = await stack.http.post("/api/instances/wait/cancel", {"reason": "customer left"})
    assert reply.status == 200, reply.body
    assert reply.json["ok"] is True and reply.json["id"] == "wait"
    assert await stack.settle("wait", "cancelled") == "cancelled"
    cancel = [meta for kind, meta in await stack.events("wait") if kind == "CancelRequested"]
    assert len(cancel) == 1
    assert (cancel[0]["actor"], cancel[0]["remote"], cancel[0]["via"]) == (
        "anonymous",
        "127.0.0.1",
        "console",
    )
    steps = (await stack.http.get("/api/instances/wait/timeline")).json["steps"]
    assert ("release", "compensation", "completed") in [(s["name"], s["kind"], s["status"]) for s in steps]
    again = await stack.http.post("/api/instances/wait/cancel", {})
    assert again.status == 409 and again.error[0] == "not_allowed"


async def test_signal_delivers_the_payload(stack: Stack) -> None:
    await populate(stack)
    reply = await stack.http.post(
        "/api/instances/wait/signal", {"name": "approved", "payload": {"by": "ann"}}
    )
    assert reply.status == 200, reply.body
    assert await stack.client.result("wait", 30) == {
        "reservation": "res-wait",
        "payment": "pay-wait",
        "decision": {"by": "ann"},
    }
    signal = [meta for kind, meta in await stack.events("wait") if kind == "SignalReceived"]
    assert signal[0]["actor"] == "anonymous" and signal[0]["via"] == "console"


async def test_retry_and_skip_a_failed_compensation(stack: Stack) -> None:
    await populate(stack)
    retried = await stack.http.post("/api/instances/stuck/retry")
    assert retried.status == 200, retried.body
    assert await stack.settle("stuck", "compensation_failed") == "compensation_failed"
    kinds = [kind for kind, _ in await stack.events("stuck")]
    assert kinds.count("CompensationFailed") == 2 and "CompensationRetried" in kinds
    skipped = await stack.http.post("/api/instances/stuck/skip-compensation", {"reason": "released by hand"})
    assert skipped.status == 200, skipped.body
    assert await stack.settle("stuck", "compensated") == "compensated"
    events = await stack.events("stuck")
    retry_meta = next(meta for kind, meta in events if kind == "CompensationRetried")
    skip_meta = next(meta for kind, meta in events if kind == "CompensationSkipped")
    assert retry_meta["actor"] == "anonymous" and retry_meta["remote"] == "127.0.0.1"
    assert skip_meta["reason"] == "released by hand"
    timeline = (await stack.http.get("/api/instances/stuck/timeline")).json["steps"]
    assert timeline[-1]["status"] == "skipped" and timeline[-1]["attempts"] == 2


async def test_retry_a_parked_instance(stack: Stack) -> None:
    await populate(stack)
    before = await journal_versions(stack)
    refused = await stack.http.post("/api/instances/lost/retry")
    assert refused.status == 409
    assert refused.error[0] == "still_cannot_run" and "unknown workflow 'late'" in refused.error[1]
    assert await journal_versions(stack) == before
    # A console whose process has the code (as after a deploy) unparks it.
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            lambda task_status: serve_console(stack.journal, port=0, registry=LATE, task_status=task_status)
        )
        http = Http(port)
        reply = await http.post("/api/instances/lost/retry")
        await http.close()
        tg.cancel_scope.cancel()
    assert reply.status == 200, reply.body
    unparked = [meta for kind, meta in await stack.events("lost") if kind == "WorkflowUnparked"]
    assert unparked[0]["actor"] == "anonymous" and unparked[0]["via"] == "console"


# --- bad input ------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, str, Any, int, str, str]] = [
    ("GET", "/api/instances/nope", None, 404, "not_found", "no workflow instance 'nope'"),
    ("GET", "/api/instances/nope/timeline", None, 404, "not_found", "no workflow instance 'nope'"),
    ("GET", "/api/instances/nope/state?version=1", None, 404, "not_found", "no workflow instance 'nope'"),
    ("GET", "/api/instances/a%20b", None, 404, "not_found", "no workflow instance 'a b'"),
    ("GET", "/api/sessions/nope", None, 404, "not_found", "no session 'nope'"),
    ("GET", "/api/nowhere", None, 404, "not_found", "there is no route '/api/nowhere'"),
    ("GET", "/api/instances?status=bogus", None, 400, "invalid_parameter", "unknown status 'bogus'"),
    ("GET", "/api/instances?limit=0", None, 400, "invalid_parameter", "limit must be between 1 and 1000"),
    ("GET", "/api/instances?limit=5000", None, 400, "invalid_parameter", "limit must be between 1 and 1000"),
    ("GET", "/api/instances?limit=ten", None, 400, "invalid_parameter", "limit must be a whole number"),
    ("GET", "/api/instances?since=yesterday", None, 400, "invalid_parameter", "since must be an ISO-8601"),
    (
        "GET",
        "/api/instances?colour=red",
        None,
        400,
        "invalid_parameter",
        "unknown query parameter(s): colour",
    ),
    ("GET", "/api/instances?limit=1&limit=2", None, 400, "invalid_parameter", "'limit' is given 2 times"),
    ("GET", "/api/sessions?status=gone", None, 400, "invalid_parameter", "unknown status 'gone'"),
    (
        "GET",
        "/api/instances/comp/state?version=0",
        None,
        400,
        "invalid_parameter",
        "version must be between 1",
    ),
    (
        "GET",
        "/api/instances/comp/state?version=999",
        None,
        400,
        "invalid_parameter",
        "version must be between 1",
    ),
    ("GET", "/api/instances/comp/state?version=x", None, 400, "invalid_parameter", "whole number"),
    ("POST", "/api/instances/ok/cancel", {}, 409, "not_allowed", "'ok' is completed: it cannot be cancelled"),
    ("POST", "/api/instances/ok/signal", {"name": "approved"}, 409, "not_allowed", "has ended (completed)"),
    ("POST", "/api/instances/ok/retry", None, 409, "not_allowed", "only a parked or compensation_failed"),
    ("POST", "/api/instances/comp/skip-compensation", {}, 409, "not_allowed", "no failed compensation"),
    ("POST", "/api/instances/lost/cancel", {}, 409, "not_allowed", "is parked"),
    ("POST", "/api/instances/nope/cancel", {}, 404, "not_found", "no workflow instance 'nope'"),
    ("POST", "/api/instances/wait/signal", {}, 400, "invalid_body", "the field 'name' is required"),
    ("POST", "/api/instances/wait/signal", {"name": 5}, 400, "invalid_body", "'name' must be a string"),
    ("POST", "/api/instances/wait/signal", {"name": ""}, 400, "invalid_body", "non-empty string"),
    ("POST", "/api/instances/wait/cancel", {"reason": 1}, 400, "invalid_body", "'reason' must be a string"),
    ("POST", "/api/instances/wait/cancel", {"why": "x"}, 400, "invalid_body", "unknown field(s) why"),
    ("POST", "/api/instances/wait/cancel", b"{not json", 400, "invalid_json", "not valid JSON"),
    ("POST", "/api/instances/wait/cancel", b"[1, 2]", 400, "invalid_body", "must be a JSON object"),
    ("POST", "/api/instances/wait/cancel", b"\xff\xfe", 400, "invalid_json", "not valid JSON"),
    ("GET", "/api/instances/wait/cancel", None, 405, "method_not_allowed", "GET is not allowed"),
    ("DELETE", "/api/instances", None, 405, "method_not_allowed", "DELETE is not allowed"),
    ("POST", "/api/summary", {}, 405, "method_not_allowed", "use GET"),
]


async def test_bad_requests_get_clear_errors_and_change_nothing(stack: Stack) -> None:
    await populate(stack)
    before = await journal_versions(stack)
    for method, path, body, status, code, message in BAD_REQUESTS:
        raw = body if isinstance(body, bytes) else None
        reply = await stack.http.request(method, path, None if raw else body, raw=raw)
        assert reply.status == status, (method, path, reply.body)
        assert reply.headers["content-type"] == "application/json; charset=utf-8"
        assert reply.error[0] == code and message in reply.error[1], (method, path, reply.error)
        if status == 405:
            assert reply.headers["allow"] in ("GET", "POST")
    assert await journal_versions(stack) == before


async def test_an_oversized_body_is_refused_unread(stack: Stack) -> None:
    await populate(stack)
    before = await journal_versions(stack)
    payload = b'{"name": "approved", "payload": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    reply = await stack.http.post("/api/instances/wait/signal", raw=payload)
    assert reply.status == 413
    assert reply.error == ("body_too_large", "the request body is larger than 1048576 bytes")
    assert await journal_versions(stack) == before
    assert (await stack.http.get("/api/summary")).status == 200  # a new connection works
