"""Export to JSON Lines and import: exact round trips, all-or-nothing imports."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rt_helpers import START
from sagalog.replay import events as wf
from sagalog.replay.inspect import timeline
from sagalog.replay.redact import UNMASKED
from sagalog.replay.timetravel import state_at
from sagalog.replay.transfer import export_histories, import_file, import_histories, read_histories
from sagalog.storage import Event, Journal, NewEvent, ZlibCodec, connect, encode_value

from sagalog.clock import ManualClock
from sagalog.errors import CorruptImportError, NotFoundError, ReplayToolError

pytestmark = pytest.mark.anyio


def same(event: Event) -> tuple[Any, ...]:
    """An event without its global position (which is the target journal's)."""
    return (event.stream_id, event.version, event.type, event.payload, event.metadata, event.recorded_at)


async def all_events(journal: Journal) -> list[tuple[Any, ...]]:
    streams = sorted(info.stream_id for info in await journal.list_streams())
    return [same(e) for s in streams for e in await journal.read_stream(s)]


async def export_text(journal: Journal, ids: list[str] | None = None) -> str:
    out = io.StringIO()
    await export_histories(journal, ids, out, clock=ManualClock(START))
    return out.getvalue()


async def test_round_trip_keeps_everything(filled: Journal, tmp_path: Path) -> None:
    text = await export_text(filled)
    lines = text.splitlines()
    assert json.loads(lines[0]) == {
        "format": "sagalog-history",
        "version": 1,
        "namespace": "default",
        "exported_at": "2026-01-01T12:00:00Z",
    }
    assert len(lines) == 1 + 10 + 3 + 7 + 1
    path = tmp_path / "all.jsonl"
    path.write_text(text)
    target = await connect("memory://")
    report = await import_file(target, path)
    assert (report.streams, report.events) == (4, 21)
    assert await all_events(target) == await all_events(filled)
    for ident in ("order-1", "order-2", "s1"):
        assert await state_at(target, ident) == await state_at(filled, ident)
    assert await export_text(target) == text


async def test_export_chosen_streams_and_unknown_id(filled: Journal) -> None:
    text = await export_text(filled, ["order-2", "session-s1"])
    streams = [json.loads(line)["stream_id"] for line in text.splitlines()[1:]]
    assert streams == ["wf-order-2"] * 7 + ["session-s1"] * 3
    out = io.StringIO()
    with pytest.raises(NotFoundError, match="no workflow instance or session 'ghost'"):
        await export_histories(filled, ["order-1", "ghost"], out)
    assert out.getvalue() == ""


async def test_import_through_a_codec() -> None:
    clock = ManualClock(START)
    source = await connect("memory://", clock=clock)
    await source.append("wf-z", 0, [NewEvent("A", b"x" * 100, {"k": "v"})])
    histories = read_histories(io.StringIO(await export_text(source)))
    target = await connect("memory://", codec=ZlibCodec())
    await import_histories(target, histories, codec=ZlibCodec())
    assert [same(e) for e in await target.read_stream("wf-z")] == [
        same(e) for e in await source.read_stream("wf-z")
    ]


# --- corrupt files: the line number, and nothing imported --------------------

GOOD_EVENT = {
    "stream_id": "wf-a",
    "version": 1,
    "type": "WorkflowStarted",
    "payload": "wA==",
    "recorded_at": "2026-01-01T00:00:00Z",
    "metadata": {},
}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "line 4: not valid JSON"),
        (
            json.dumps({**GOOD_EVENT, "version": "two"}),
            "line 4: not an exported event (Expected `int`, got `str`",
        ),
        (json.dumps({k: v for k, v in GOOD_EVENT.items() if k != "type"}), "missing required field `type`"),
        (json.dumps({**GOOD_EVENT, "payload": "%%%"}), "line 4: payload is not valid base64"),
        (json.dumps({**GOOD_EVENT, "version": 3}), "line 4: stream 'wf-a' has version 3 where version 2"),
        (json.dumps({**GOOD_EVENT, "version": 1}), "line 4: stream 'wf-a' has version 1 where version 2"),
        (json.dumps({**GOOD_EVENT, "stream_id": "a b"}), "line 4: invalid stream id 'a b'"),
        (json.dumps({**GOOD_EVENT, "type": "9lives"}), "line 4: invalid event type '9lives'"),
        (json.dumps({**GOOD_EVENT, "recorded_at": "2026-01-01T00:00:00"}), "line 4: not an exported event"),
    ],
)
async def test_corrupt_line_imports_nothing(
    journal: Journal, tmp_path: Path, line: str, problem: str
) -> None:
    header = json.dumps({"format": "sagalog-history", "version": 1})
    other = {**GOOD_EVENT, "stream_id": "wf-b"}
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([header, json.dumps(other), json.dumps(GOOD_EVENT), line, ""]))
    with pytest.raises(CorruptImportError, match=problem.replace("(", r"\(").replace("[", r"\[")) as caught:
        await import_file(journal, path)
    assert caught.value.line == 4
    assert str(caught.value).startswith(f"{path}, line 4: ")
    assert str(caught.value).endswith("; nothing was imported")
    assert await journal.list_streams() == []


async def test_bad_headers(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"format": "csv", "version": 1}) + "\n")
    with pytest.raises(CorruptImportError, match="line 1: not a sagalog history export \\(format 'csv'\\)"):
        read_histories(path.open("rb"), str(path))
    path.write_text("\n" + json.dumps({"format": "sagalog-history", "version": 9}) + "\n")
    with pytest.raises(
        CorruptImportError, match="line 2: written in export format 9; this sagalog reads up to 1"
    ):
        read_histories(path.open("rb"), str(path))


async def test_import_over_an_existing_stream_imports_nothing(filled: Journal, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    new = {**GOOD_EVENT, "stream_id": "wf-new"}
    path.write_text(json.dumps(new) + "\n" + (await export_text(filled, ["order-2"])))
    before = await all_events(filled)
    with pytest.raises(
        ReplayToolError,
        match="stream 'wf-order-2' already exists in namespace 'default' "
        r"\(version 7\); nothing was imported",
    ):
        await import_file(filled, path)
    assert await all_events(filled) == before


async def test_missing_file() -> None:
    with pytest.raises(ReplayToolError, match=r"cannot read /no/such\.jsonl: No such file or directory"):
        await import_file(await connect("memory://"), "/no/such.jsonl")


# --- property: export -> import -> same events, same states, same timelines ---

_kinds = st.sampled_from(["ok", "retry", "fail"])


@st.composite
def saga_history(draw: st.DrawFn) -> list[list[NewEvent]]:
    args = encode_value(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3)))
    batches = [[wf.encode_event(wf.WorkflowStarted(workflow="w", args=args))]]
    for seq in range(1, draw(st.integers(0, 4)) + 1):
        batches.append([wf.encode_event(wf.StepScheduled(seq=seq, step=f"s{seq}", args=args))])
        kind = draw(_kinds)
        for attempt in range(1, 3 if kind == "retry" else 2):
            batches.append([wf.encode_event(wf.StepStarted(seq=seq, attempt=attempt))])
            if kind == "retry" and attempt == 1:
                failed = wf.StepFailed(
                    seq=seq, attempt=1, error_type="E", message="m", retry_at=START + timedelta(seconds=seq)
                )
                batches.append([wf.encode_event(failed)])
        if kind == "fail":
            failure = wf.StepFailed(seq=seq, attempt=1, error_type="E", message=draw(st.text(max_size=5)))
            batches.append([wf.encode_event(failure), wf.encode_event(wf.WorkflowFailed("E", "m"))])
            return batches
        result = encode_value(draw(st.one_of(st.none(), st.integers(-1000, 1000), st.text(max_size=5))))
        batches.append([wf.encode_event(wf.StepCompleted(seq=seq, attempt=1, result=result))])
    if draw(st.booleans()):
        batches.append([wf.encode_event(wf.WorkflowCompleted(result=encode_value(None)))])
    return batches


raw_history = st.lists(
    st.lists(
        st.builds(
            NewEvent,
            st.sampled_from(["A", "B.c", "d:e"]),
            st.binary(max_size=20),
            st.dictionaries(st.sampled_from(["actor", "trace"]), st.text(max_size=5), max_size=2),
        ),
        min_size=1,
        max_size=3,
    ),
    min_size=1,
    max_size=4,
)


@given(
    sagas=st.lists(saga_history(), min_size=1, max_size=3),
    others=st.lists(raw_history, max_size=2),
    gaps=st.lists(st.floats(0, 100), min_size=1, max_size=5),
)
def test_export_import_round_trip_property(
    sagas: list[list[list[NewEvent]]], others: list[list[list[NewEvent]]], gaps: list[float]
) -> None:
    async def run() -> None:
        clock = ManualClock(START)
        source = await connect("memory://", clock=clock)
        streams = [(f"wf-{i}", h) for i, h in enumerate(sagas)] + [
            (f"x-{i}", h) for i, h in enumerate(others)
        ]
        for n, (stream_id, batches) in enumerate(streams):
            version = 0
            for b, batch in enumerate(batches):
                await source.append(stream_id, version, batch)
                version += len(batch)
                clock.advance(gaps[(n + b) % len(gaps)])
        target = await connect("memory://")
        await import_histories(target, read_histories(io.StringIO(await export_text(source))))
        assert await all_events(target) == await all_events(source)
        for i in range(len(sagas)):
            stream_id = f"wf-{i}"
            for at in range(await source.stream_version(stream_id) + 1):
                assert await state_at(target, stream_id, at, redactor=UNMASKED) == await state_at(
                    source, stream_id, at, redactor=UNMASKED
                )
            here = [e.since_previous async for e in timeline(target, stream_id)]
            assert here == [e.since_previous async for e in timeline(source, stream_id)]

    anyio.run(run)


# --- the command line -------------------------------------------------------


def test_cli_export_import(filled_url: str, tmp_path: Path, sagalog: Callable[..., Any]) -> None:
    path = tmp_path / "out.jsonl"
    result = sagalog("replay", "export", "order-1", "s1", "-o", str(path), "--db", filled_url)
    assert result.status == 0, result.err
    assert result.err == "exported 2 streams, 13 events\n"
    target = f"sqlite:///{tmp_path / 'target.db'}"
    result = sagalog("replay", "import", str(path), "--db", target)
    assert result.status == 0, result.err
    assert result.out == "imported 2 streams, 13 events into namespace default\n"
    shown = [sagalog("replay", "show", "order-1", "--json", "--db", url).out for url in (filled_url, target)]
    strip = [[{k: v for k, v in e.items() if k != "position"} for e in json.loads(s)] for s in shown]
    assert strip[0] == strip[1]
    missing = tmp_path / "missing.jsonl"
    result = sagalog("replay", "export", "order-1", "ghost", "-o", str(missing), "--db", filled_url)
    assert result.status == 1 and "no workflow instance or session 'ghost'" in result.err
    assert not missing.exists()
    result = sagalog("replay", "export", "--db", filled_url)
    assert result.status == 1
    assert result.err == "sagalog: error: name the instances or sessions to export, or pass --all\n"
    result = sagalog("replay", "export", "--all", "--db", filled_url)
    assert len(result.out.splitlines()) == 22


def test_cli_corrupt_import(db_url: str, tmp_path: Path, sagalog: Callable[..., Any]) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(GOOD_EVENT) + "\n" + json.dumps({**GOOD_EVENT, "version": 2, "payload": 7}) + "\n"
    )
    result = sagalog("replay", "import", str(path), "--db", db_url)
    assert result.status == 1
    assert result.err == (
        f"sagalog: error: {path}, line 2: not an exported event "
        "(Expected `str`, got `int` - at `$.payload`); nothing was imported\n"
    )
    assert sagalog("replay", "list", "--json", "--db", db_url).out.strip() == "[]"
