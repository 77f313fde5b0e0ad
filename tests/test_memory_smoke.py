"""A first round trip through the journal on the in-memory backend."""

import pytest
from sagalog.storage import NO_STREAM, NewEvent, connect

from sagalog.errors import ConcurrencyError

pytestmark = pytest.mark.anyio


async def test_round_trip_and_conflict() -> None:
    journal = await connect("memory://")
    stored = await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"1"), NewEvent("B", b"2")])
    assert [(e.version, e.type) for e in stored] == [(1, "A"), (2, "B")]
    with pytest.raises(ConcurrencyError, match="is at version 2, but the append expected version 0"):
        await journal.append("wf-1", NO_STREAM, [NewEvent("C", b"")])
    assert [e.payload for e in await journal.read_stream("wf-1")] == [b"1", b"2"]
