"""Bad input gets a clear error, and nothing already stored changes.

Each test stores something first, makes the bad call, checks the exact
message, then checks the store reads back exactly as before.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sagalog.storage import (
    NO_STREAM,
    Event,
    Journal,
    NewEvent,
    Snapshot,
    StreamInfo,
    connect,
    encode_value,
)

from sagalog.errors import (
    ConcurrencyError,
    DatabaseError,
    EncodingError,
    InvalidEventError,
    PayloadTooLargeError,
    ProgrammingError,
    UnknownNamespaceError,
)

pytestmark = pytest.mark.anyio

State = tuple[list[Event], list[StreamInfo]]


async def contents(journal: Journal) -> State:
    """Everything a reader can see: every event and every stream."""
    return await journal.read_all(0, 10_000), await journal.list_streams()


@pytest.fixture
async def filled(journal: Journal) -> AsyncIterator[tuple[Journal, State]]:
    """The journal with two streams in it, and what it held before the test's bad call."""
    await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"1"), NewEvent("B", b"2")])
    await journal.append("wf-2", NO_STREAM, [NewEvent("C", b"3")])
    yield journal, await contents(journal)


async def refused(journal: Journal, error: type[Exception], message: str, *appended: Any) -> None:
    """Append ``appended`` (stream, expected, events) and check the exact error message."""
    with pytest.raises(error) as caught:
        await journal.append(*appended)
    assert str(caught.value) == message


async def test_wrong_expected_version(filled: tuple[Journal, State]) -> None:
    journal, before = filled
    message = "stream 'wf-1' is at version 2, but the append expected version 1"
    await refused(journal, ConcurrencyError, message, "wf-1", 1, [NewEvent("X", b"")])
    message = "stream 'wf-1' is at version 2, but the append expected version 0"
    await refused(journal, ConcurrencyError, message, "wf-1", NO_STREAM, [NewEvent("X", b"")])
    message = "invalid expected_version -2: use a version >= 0, NO_STREAM (0) or ANY_VERSION (-1)"
    await refused(journal, InvalidEventError, message, "wf-1", -2, [NewEvent("X", b"")])
    await refused(journal, InvalidEventError, "append to 'wf-1' has no events", "wf-1", 2, [])
    assert await contents(journal) == before


@pytest.mark.parametrize("name", ["", "1Started", "has space", "é", "A" * 201])
async def test_invalid_event_type_name(filled: tuple[Journal, State], name: str) -> None:
    journal, before = filled
    message = f"invalid event type {name!r}: a name of 1-200 characters starting with a letter"
    # the bad event comes second: the first must not be stored either
    events = [NewEvent("Fine", b""), NewEvent(name, b"")]
    await refused(journal, InvalidEventError, message, "wf-1", 2, events)
    assert await contents(journal) == before


async def test_payload_that_is_not_bytes(filled: tuple[Journal, State]) -> None:
    journal, before = filled
    message = "payload of A must be bytes, not str (encode it with sagalog.storage.encode_value)"
    await refused(journal, InvalidEventError, message, "wf-1", 2, [NewEvent("A", "text")])  # type: ignore[arg-type]
    message = "append to 'wf-1': ('A', b'') is not a NewEvent"
    await refused(journal, InvalidEventError, message, "wf-1", 2, [("A", b"")])
    assert await contents(journal) == before


class Money:
    """A class msgspec cannot encode."""


def test_value_that_cannot_be_encoded_names_its_type() -> None:
    with pytest.raises(EncodingError) as caught:
        encode_value({"total": Money()}, "argument 'order'")
    assert re.fullmatch(
        r"argument 'order' cannot be encoded: builtins\.dict is not supported by msgspec "
        r"\(Encoding objects of type .*Money is unsupported\)",
        str(caught.value),
    ), str(caught.value)
    with pytest.raises(EncodingError) as caught:
        encode_value(Money())
    assert str(caught.value) == (
        f"value cannot be encoded: {__name__}.Money is not supported by msgspec "
        "(Encoding objects of type Money is unsupported)"
    )


async def test_payload_over_the_size_limit(journal_url: str) -> None:
    journal = await connect(journal_url, max_payload_bytes=10)
    try:
        await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"x" * 10)])  # at the limit: fine
        before = await contents(journal)
        message = "payload of Big in 'wf-1' is 11 bytes; the limit is 10 bytes"
        events = [NewEvent("Small", b""), NewEvent("Big", b"x" * 11)]
        await refused(journal, PayloadTooLargeError, message, "wf-1", 1, events)
        assert await contents(journal) == before
    finally:
        await journal.close()


async def test_unknown_namespace(filled: tuple[Journal, State], journal_url: str) -> None:
    journal, before = filled
    message = "unknown namespace 'tenant-x': create it first (sagalog admin create-namespace tenant-x)"
    with pytest.raises(UnknownNamespaceError) as caught:
        await journal.in_namespace("tenant-x")
    assert str(caught.value) == message
    with pytest.raises(UnknownNamespaceError) as caught:
        await connect(journal_url, namespace="tenant-x")
    assert str(caught.value) == message
    assert await journal.namespaces() == ["default"]
    assert await contents(journal) == before


@pytest.mark.parametrize("stream_id", ["", "has space", "wf/1", "x" * 201, 17])
async def test_invalid_stream_id(filled: tuple[Journal, State], stream_id: Any) -> None:
    journal, before = filled
    message = f"invalid stream id {stream_id!r}: use 1-200 letters, digits or '_.:-'"
    await refused(journal, InvalidEventError, message, stream_id, NO_STREAM, [NewEvent("A", b"")])
    with pytest.raises(InvalidEventError) as caught:
        await journal.save_snapshot(Snapshot(stream_id, 1, b""))
    assert str(caught.value) == message
    assert await contents(journal) == before


async def test_unsupported_url_hides_the_password() -> None:
    with pytest.raises(ProgrammingError) as caught:
        await connect("mysql://app:secret@db.example/prod")
    assert str(caught.value) == (
        "unsupported database URL 'mysql://app:***@db.example/prod': use memory://, "
        "sqlite:///path/to/file.db or postgresql://user@host/dbname"
    )


async def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError) as caught:
        await connect(f"sqlite:///{tmp_path}")
    assert str(caught.value) == f"cannot open SQLite journal {str(tmp_path)!r}: it is a directory"
    assert [p async for p in anyio.Path(tmp_path).iterdir()] == []


async def test_sqlite_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    text = b"shopping list: eggs, milk, " * 100
    path.write_bytes(text)
    with pytest.raises(DatabaseError) as caught:
        await connect(f"sqlite:///{path}")
    assert str(caught.value) == f"{str(path)!r} is not a SQLite database (file is not a database)"
    assert path.read_bytes() == text
    assert [p.name async for p in anyio.Path(tmp_path).iterdir()] == ["notes.txt"]
