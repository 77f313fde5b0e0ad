"""Moving histories between journals as JSON Lines files.

An export file starts with a header line, then holds one event per line, each
stream's events in version order::

    {"format": "sagalog-history", "version": 1, "namespace": "default", "exported_at": "..."}
    {"stream_id": "wf-42", "version": 1, "type": "WorkflowStarted", "payload": "<base64>",
     "metadata": {...}, "recorded_at": "2026-01-01T00:00:00Z"}

Payloads are the exact stored bytes in base64, so an imported stream is the
same stream: same versions, same payloads, same metadata, same ``recorded_at``
(its global positions are the target journal's). Import is all or nothing: the
whole file is parsed and checked first (a bad line is reported with its line
number), every target stream must be absent, and every event is then written in
one transaction.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, TextIO

import msgspec
from sagalog.replay.timetravel import resolve_stream
from sagalog.storage import (
    AppendRequest,
    Event,
    IdentityCodec,
    Journal,
    NewEvent,
    PayloadCodec,
    StreamFilter,
    check_stream_id,
)

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import ConcurrencyError, CorruptImportError, InvalidEventError, ReplayToolError

EXPORT_FORMAT = "sagalog-history"
"""The ``format`` of an export file's header line."""

EXPORT_VERSION = 1
"""The export format version this sagalog writes and reads."""

_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")


class ExportHeader(msgspec.Struct, frozen=True):
    """The first line of an export file."""

    format: str
    """Always ``sagalog-history``."""
    version: int
    """Format version."""
    namespace: str = "default"
    """The namespace the histories were exported from."""
    exported_at: datetime | None = None
    """When the file was written."""


class ExportedEvent(msgspec.Struct, frozen=True):
    """One event line of an export file."""

    stream_id: str
    """The stream it belongs to."""
    version: int
    """Its version within the stream."""
    type: str
    """Event type name."""
    payload: str
    """The stored payload bytes, base64."""
    recorded_at: Annotated[datetime, msgspec.Meta(tz=True)]
    """When the source journal recorded it."""
    metadata: dict[str, str] = {}
    """The event's metadata, as stored."""


class History(msgspec.Struct, frozen=True):
    """One stream's events, read from a file or a journal."""

    stream_id: str
    """The stream."""
    events: list[Event]
    """Its events in version order, from version 1."""


class TransferReport(msgspec.Struct, frozen=True):
    """What an export or import moved."""

    streams: int
    """Number of streams."""
    events: int
    """Number of events."""


_encoder = msgspec.json.Encoder()


# --- export ------------------------------------------------------------------


async def _all_stream_ids(journal: Journal) -> AsyncIterator[str]:
    offset, page = 0, 500
    while True:
        infos = await journal.list_streams(StreamFilter(limit=page, offset=offset))
        for info in infos:
            yield info.stream_id
        if len(infos) < page:
            return
        offset += page


async def export_histories(
    journal: Journal, idents: Sequence[str] | None, out: TextIO, *, clock: Clock = SYSTEM_CLOCK
) -> TransferReport:
    """Write the histories of ``idents`` (None: every stream) to ``out`` as JSON Lines.

    Streams are read in batches and written as they are read. Every id is
    resolved before anything is written, so an unknown id writes nothing.

    Raises:
        NotFoundError: an id names no stream.
    """
    header = ExportHeader(EXPORT_FORMAT, EXPORT_VERSION, journal.namespace, clock.now())
    if idents is None:
        stream_ids: Iterable[str] | AsyncIterator[str] = _all_stream_ids(journal)
    else:
        stream_ids = [(await resolve_stream(journal, ident))[0] for ident in dict.fromkeys(idents)]
    out.write(_encoder.encode(header).decode() + "\n")
    streams = events = 0
    async for stream_id in _aiter(stream_ids):
        streams += 1
        async for event in journal.iter_stream(stream_id):
            out.write(_encoder.encode(exported(event)).decode() + "\n")
            events += 1
    return TransferReport(streams, events)


async def _aiter(items: Iterable[str] | AsyncIterator[str]) -> AsyncIterator[str]:
    if isinstance(items, AsyncIterator):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def exported(event: Event) -> ExportedEvent:
    """The export line of a stored event."""
    return ExportedEvent(
        stream_id=event.stream_id,
        version=event.version,
        type=event.type,
        payload=binascii.b2a_base64(event.payload, newline=False).decode("ascii"),
        recorded_at=event.recorded_at,
        metadata=dict(event.metadata),
    )


# --- reading a file ------------------------------------------------------------


def read_histories(lines: Iterable[bytes | str], source: str = "<input>") -> list[History]:
    """Parse and check an export, keeping streams in the order they first appear.

    Header lines may appear again further down, so concatenated exports
    import as one.

    Raises:
        CorruptImportError: naming the first bad line and what is wrong with it.
    """
    streams: dict[str, list[Event]] = {}
    namespace = "default"
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        marker: bytes | str = b'"format"' if isinstance(line, bytes) else '"format"'
        if marker in line:  # type: ignore[operator]
            header = _header(line, source, number)
            if header is not None:
                namespace = header.namespace
                continue
        event = _event(line, source, number, namespace, streams)
        streams.setdefault(event.stream_id, []).append(event)
    return [History(stream_id, events) for stream_id, events in streams.items()]


def _header(line: bytes | str, source: str, number: int) -> ExportHeader | None:
    try:
        raw = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        raise CorruptImportError(source, number, f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or "format" not in raw:
        return None
    try:
        header = msgspec.convert(raw, ExportHeader)
    except msgspec.ValidationError as exc:
        raise CorruptImportError(source, number, f"invalid header ({exc})") from None
    if header.format != EXPORT_FORMAT:
        raise CorruptImportError(source, number, f"not a sagalog history export (format {header.format!r})")
    if header.version > EXPORT_VERSION:
        raise CorruptImportError(
            source,
            number,
            f"written in export format {header.version}; this sagalog reads up to {EXPORT_VERSION}",
        )
    return header


def _event(
    line: bytes | str, source: str, number: int, namespace: str, streams: dict[str, list[Event]]
) -> Event:
    try:
        item = msgspec.json.decode(line, type=ExportedEvent)
    except msgspec.ValidationError as exc:
        raise CorruptImportError(source, number, f"not an exported event ({exc})") from None
    except msgspec.DecodeError as exc:
        raise CorruptImportError(source, number, f"not valid JSON ({exc})") from None
    try:
        check_stream_id(item.stream_id)
    except InvalidEventError as exc:
        raise CorruptImportError(source, number, str(exc)) from None
    if not _TYPE_NAME.match(item.type):
        raise CorruptImportError(source, number, f"invalid event type {item.type!r}")
    try:
        payload = binascii.a2b_base64(item.payload, strict_mode=True)
    except binascii.Error as exc:
        raise CorruptImportError(source, number, f"payload is not valid base64 ({exc})") from None
    previous = streams.get(item.stream_id)
    expected = 1 if previous is None else previous[-1].version + 1
    if item.version != expected:
        raise CorruptImportError(
            source,
            number,
            f"stream {item.stream_id!r} has version {item.version} where version {expected} "
            "was expected (versions run 1, 2, 3, ... without gaps or repeats)",
        )
    return Event(
        position=number,
        stream_id=item.stream_id,
        version=item.version,
        type=item.type,
        payload=payload,
        metadata=item.metadata,
        namespace=namespace,
        recorded_at=item.recorded_at,
    )


def load_file(path: str | Path) -> list[History]:
    """Read and check an export file (see :func:`read_histories`).

    Raises:
        CorruptImportError: a bad line (with its number).
        ReplayToolError: the file cannot be opened.
    """
    try:
        with open(path, "rb") as handle:
            return read_histories(handle, str(path))
    except OSError as exc:
        raise ReplayToolError(f"cannot read {path}: {exc.strerror or exc}") from None


# --- import --------------------------------------------------------------------


def _requests(history: History, namespace: str, codec: PayloadCodec) -> list[AppendRequest]:
    """Appends that recreate one stream, one per run of events with the same ``recorded_at``."""
    requests: list[AppendRequest] = []
    run: list[Event] = []
    for event in [*history.events, None]:
        if run and (event is None or event.recorded_at != run[0].recorded_at):
            requests.append(
                AppendRequest(
                    namespace=namespace,
                    stream_id=history.stream_id,
                    expected_version=run[0].version - 1,
                    events=tuple(NewEvent(e.type, codec.encode(e.payload), dict(e.metadata)) for e in run),
                    recorded_at=run[0].recorded_at,
                )
            )
            run = []
        if event is not None:
            run.append(event)
    return requests


async def import_histories(
    journal: Journal, histories: Sequence[History], *, codec: PayloadCodec | None = None
) -> TransferReport:
    """Write histories into ``journal`` in one transaction, exactly as they were.

    Args:
        codec: the payload codec ``journal`` was opened with (payloads are
            written below the journal, to keep their ``recorded_at``).

    Raises:
        ReplayToolError: a stream already exists in the journal; nothing is written.
    """
    for history in histories:
        current = await journal.stream_version(history.stream_id)
        if current:
            raise ReplayToolError(
                f"stream {history.stream_id!r} already exists in namespace {journal.namespace!r} "
                f"(version {current}); nothing was imported"
            )
    requests = [r for h in histories for r in _requests(h, journal.namespace, codec or IdentityCodec())]
    if requests:
        # One batch is one transaction on every backend: all or nothing.
        outcomes = await journal.recorder.append_batch(requests)
        conflicts = [o for o in outcomes if isinstance(o, ConcurrencyError)]
        if conflicts:
            raise ReplayToolError(
                f"stream {conflicts[0].stream_id!r} was written by someone else during the import "
                "(the other streams were imported)"
            )
    return TransferReport(len(histories), sum(len(h.events) for h in histories))


async def import_file(
    journal: Journal, path: str | Path, *, codec: PayloadCodec | None = None
) -> TransferReport:
    """Read, check and import an export file; nothing is imported unless all of it is.

    Raises:
        CorruptImportError: a bad line (with its number).
        ReplayToolError: the file cannot be read, or a stream already exists.
    """
    return await import_histories(journal, load_file(path), codec=codec)


async def read_journal_history(journal: Journal, stream_id: str) -> History:
    """A stream's whole history from a journal."""
    return History(stream_id, await journal.read_stream(stream_id))
