"""Following new events live, in global order: `sagalog replay tail`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from sagalog.replay.inspect import follow, last_position, print_tail
from sagalog.storage import ANY_VERSION, Journal, NewEvent, connect, encode_value

pytestmark = pytest.mark.anyio


async def test_last_position(filled: Journal) -> None:
    assert await last_position(filled) == 21
    assert await last_position(await connect("memory://")) == 0


async def test_follow_from_a_position_in_global_order(filled: Journal) -> None:
    seen = [(e.position, e.stream_id) async for e in follow(filled, after=9, limit=4)]
    assert seen == [(10, "wf-order-1"), (11, "session-s1"), (12, "session-s1"), (13, "session-s1")]
    everything = [e.position async for e in follow(filled, after=0, idle_timeout=0.01)]
    assert everything == list(range(1, 22))


async def test_follow_sees_events_appended_while_waiting(filled: Journal) -> None:
    seen: list[str] = []

    async def writer() -> None:
        for n in range(3):
            await filled.append(f"wf-live-{n}", ANY_VERSION, [NewEvent("Ping", encode_value({"n": n}))])
            await anyio.sleep(0.01)  # let the tail wait between events (real LISTEN/NOTIFY or polling)

    start = await last_position(filled)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(writer)
            async for event in follow(filled, after=start, limit=3, wait_step=1.0):
                seen.append(event.stream_id)
    assert seen == ["wf-live-0", "wf-live-1", "wf-live-2"]


async def test_idle_timeout_stops_an_empty_tail(filled: Journal) -> None:
    with anyio.fail_after(10):
        assert [e async for e in follow(filled, idle_timeout=0.05)] == []


async def test_printed_tail_masks_and_names_streams(filled: Journal) -> None:
    out = io.StringIO()
    assert await print_tail(filled, out=out, after=0, limit=2) == 2
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["STREAM", "V", "TIME"]
    assert lines[1].startswith("wf-order-1") and "WorkflowStarted" in lines[1] and '"***"' in lines[1]
    out = io.StringIO()
    await print_tail(filled, out=out, after=10, limit=2, as_json=True)
    entries = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["position"], e["type"]) for e in entries] == [(11, "SessionOpened"), (12, "SessionChanged")]
    assert entries[1]["payload"]["updates"]["api_token"] == "***"


def test_cli_tail(filled_url: str, sagalog: Callable[..., Any]) -> None:
    result = sagalog("replay", "tail", "--after", "19", "--timeout", "0.05", "--json", "--db", filled_url)
    assert result.status == 0, result.err
    assert [json.loads(line)["stream_id"] for line in result.out.splitlines()] == ["wf-order-2", "ledger-7"]
    result = sagalog("replay", "tail", "--after", "0", "--limit", "1", "--unmasked", "--db", filled_url)
    assert result.status == 0 and "hunter2" in result.out and len(result.out.splitlines()) == 2
