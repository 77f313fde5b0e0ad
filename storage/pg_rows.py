"""How the PostgreSQL backend reads events rows back.

The column list every events query selects, and the conversion of such a
row into an :class:`~sagalog.storage.records.Event` with its time in UTC.
Shared by the recorder's reads (:mod:`sagalog.storage.postgres`) and the
claims that read what they claim (:mod:`sagalog.storage.pg_work`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sagalog.storage.records import Event

EVENT_COLUMNS = "position, stream_id, version, type, payload, metadata::text, namespace, recorded_at"


def utc(value: datetime) -> datetime:
    """A timestamptz from the driver, in UTC like the other backends return it."""
    return value.astimezone(UTC)


def to_event(row: Sequence[Any]) -> Event:
    """An events row (in EVENT_COLUMNS order) as a record."""
    position, stream_id, version, type_, payload, metadata, namespace, recorded_at = row
    return Event(
        position=position,
        stream_id=stream_id,
        version=version,
        type=type_,
        payload=bytes(payload),
        metadata=msgspec.json.decode(metadata, type=dict[str, str]),
        namespace=namespace,
        recorded_at=utc(recorded_at),
    )
