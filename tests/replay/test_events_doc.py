"""docs/events.md describes every workflow event and each of its fields."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sagalog.replay.events import EVENT_TYPES, SCHEMA_VERSION, StepScheduled, decode_event, encode_event
from sagalog.storage import Event

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()


def test_every_event_and_field_is_documented() -> None:
    for name, cls in EVENT_TYPES.items():
        rows = [line for line in DOC.splitlines() if line.startswith(f"| `{name}` |")]
        assert len(rows) == 1, f"{name} needs one row in docs/events.md"
        for field in msgspec.structs.fields(cls):
            assert f"`{field.name}`" in rows[0], f"{name}.{field.name} is not documented"


def test_events_round_trip_with_their_schema() -> None:
    new = encode_event(StepScheduled(3, "reserve", b"\x92\x90\x80", "release"), {"worker": "w1"})
    assert new.metadata == {"worker": "w1", "schema": str(SCHEMA_VERSION)}
    at = datetime(2026, 1, 1, tzinfo=UTC)
    stored = Event(1, "wf-x", 1, new.type, new.payload, new.metadata, "default", at)
    assert decode_event(stored) == StepScheduled(3, "reserve", b"\x92\x90\x80", "release")
