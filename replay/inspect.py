"""Reading a journal as people do: listings, timelines, a live tail.

Everything here streams. A timeline is produced event by event from
:meth:`Journal.iter_stream`, and the printers write each line as it comes, so
a stream of 100,000 events is never held in memory at once. Payloads are
rendered generically (decoded msgpack, see :class:`Redactor`), so the tool can
show any stream, including events whose types this version does not know.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TextIO

import msgspec
from cachetools import LRUCache
from sagalog.replay.redact import Redactor
from sagalog.replay.timetravel import (
    SESSION_PREFIX,
    WORKFLOW_PREFIX,
    fold_for,
    resolve_stream,
    stream_kind,
)
from sagalog.storage import Event, Journal, StreamFilter, StreamInfo

from sagalog.errors import DecodingError, NotFoundError

_PREFIXES = {"workflow": WORKFLOW_PREFIX, "session": SESSION_PREFIX}
_STEP_KEYS = ("step", "step_name", "name", "signal", "timer", "workflow")
_SUMMARY_WIDTH = 72


# --- listing -----------------------------------------------------------------


class ListQuery(msgspec.Struct, frozen=True):
    """Which instances and sessions :func:`list_instances` returns."""

    kind: str | None = None
    """``"workflow"``, ``"session"`` or None for every stream."""
    workflow: str | None = None
    """Only instances of this workflow."""
    status: str | None = None
    """Only instances or sessions in this status (``running``, ``completed``, ``open``, ...)."""
    contains: str | None = None
    """Only ids containing this text."""
    since: datetime | None = None
    """Only those active at or after this time."""
    until: datetime | None = None
    """Only those last active before this time."""
    limit: int = 50
    """Page size."""
    offset: int = 0
    """How many matches to skip (paging)."""


class InstanceSummary(msgspec.Struct, frozen=True):
    """One line of a listing."""

    stream_id: str
    """The stream, e.g. ``wf-42``."""
    kind: str
    """``workflow``, ``session`` or ``other``."""
    workflow: str | None
    """The workflow name (or session kind) when the state knows it."""
    status: str | None
    """Status folded from the events; ``corrupt`` when they cannot be decoded."""
    version: int
    """Number of events."""
    created_at: datetime
    """When its first event was recorded."""
    updated_at: datetime
    """When its last event was recorded."""
    last_type: str
    """Type of its last event."""


async def summarise(journal: Journal, info: StreamInfo) -> InstanceSummary:
    """Fold a listed stream far enough to show its workflow and status."""
    kind = stream_kind(info.stream_id)
    name: str | None = None
    status: str | None = None
    fold = fold_for(info.stream_id, required=False)
    if fold is not None:
        from sagalog.replay.folding import load_state

        try:
            state, _ = await load_state(journal, info.stream_id, fold)
        except DecodingError:
            status = "corrupt"
        else:
            status = _text(getattr(state, "status", None))
            name = _text(getattr(state, "workflow", None) or getattr(state, "kind", None))
    return InstanceSummary(
        info.stream_id, kind, name, status, info.version, info.created_at, info.updated_at, info.last_type
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def list_instances(journal: Journal, query: ListQuery | None = None) -> list[InstanceSummary]:
    """Instances and sessions matching ``query``, most recently active first.

    Filters on workflow name or status need each stream's state, so pages of
    streams are folded until enough match.
    """
    query = query or ListQuery()
    if query.kind is not None and query.kind not in _PREFIXES:
        raise ValueError(f"unknown kind {query.kind!r}: use workflow or session")
    base = StreamFilter(
        prefix=_PREFIXES.get(query.kind or ""),
        contains=query.contains,
        since=query.since,
        until=query.until,
    )
    wanted = query.offset + query.limit
    found: list[InstanceSummary] = []
    page, offset = max(wanted, 50), 0
    while len(found) < wanted:
        infos = await journal.list_streams(msgspec.structs.replace(base, limit=page, offset=offset))
        for info in infos:
            summary = await summarise(journal, info)
            if query.workflow is not None and summary.workflow != query.workflow:
                continue
            if query.status is not None and summary.status != query.status:
                continue
            found.append(summary)
        if len(infos) < page:
            break
        offset += page
    return found[query.offset : wanted]


# --- timelines -----------------------------------------------------------------


class TimelineEntry(msgspec.Struct, frozen=True):
    """One event as a timeline shows it."""

    position: int
    """Global position."""
    stream_id: str
    """Its stream."""
    version: int
    """Version within the stream."""
    recorded_at: datetime
    """When it was recorded."""
    type: str
    """Event type."""
    step: str | None
    """Step (or signal, timer, workflow) name, when the payload has one."""
    attempt: int | None
    """Attempt number, when the payload has one."""
    summary: str
    """The payload in one short line (masked)."""
    since_previous: float | None
    """Seconds since the stream's previous event (None for the first shown)."""
    payload: Any
    """The whole payload as plain values (masked)."""
    metadata: dict[str, Any]
    """The event's metadata (masked)."""


class EntryMaker:
    """Turns stored events into timeline entries, one at a time.

    It remembers, per stream, when the previous event was recorded (for the
    durations) and the step name of each sequence number (``StepCompleted``
    names only its ``seq``; ``StepScheduled`` gave the name). Both memories are
    bounded, so a tail can run for days.
    """

    def __init__(self, redactor: Redactor | None = None, *, memory: int = 10_000) -> None:
        self.redactor = redactor or Redactor()
        self._previous: LRUCache[str, datetime] = LRUCache(maxsize=memory)
        self._steps: LRUCache[tuple[str, int], str] = LRUCache(maxsize=memory * 4)

    def entry(self, event: Event) -> TimelineEntry:
        """The timeline entry of one stored event."""
        payload = self.redactor.payload(event.payload)
        step: str | None = None
        attempt: int | None = None
        if isinstance(payload, dict):
            step = next((str(payload[k]) for k in _STEP_KEYS if isinstance(payload.get(k), str)), None)
            attempt = _int(payload.get("attempt"))
            seq = _int(payload.get("seq"))
            if seq is not None:
                if step is not None and "step" in payload:
                    self._steps[(event.stream_id, seq)] = step
                elif step is None:
                    step = self._steps.get((event.stream_id, seq))
        previous = self._previous.get(event.stream_id)
        self._previous[event.stream_id] = event.recorded_at
        return TimelineEntry(
            position=event.position,
            stream_id=event.stream_id,
            version=event.version,
            recorded_at=event.recorded_at,
            type=event.type,
            step=step,
            attempt=attempt,
            summary=summarise_payload(payload, skip={"type": event.type, "attempt": attempt, "step": step}),
            since_previous=None if previous is None else (event.recorded_at - previous).total_seconds(),
            payload=payload,
            metadata=self.redactor.plain(event.metadata),
        )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarise_payload(
    payload: Any, *, skip: dict[str, object] | None = None, width: int = _SUMMARY_WIDTH
) -> str:
    """A payload in one line of at most ``width`` characters.

    Args:
        skip: fields left out when they hold the given value (``{"type":
            "StepCompleted"}``); the ``step`` entry stands for every name field.
    """
    skip = skip or {}
    if isinstance(payload, dict):
        parts = []
        for key, value in payload.items():
            shown_as = "step" if key in _STEP_KEYS else key
            empty = value is False or value in (None, "", [], {})
            if empty or (shown_as in skip and skip[shown_as] == value):
                continue
            parts.append(f"{key}={_compact(value)}")
        text = " ".join(parts)
    else:
        text = _compact(payload)
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


async def timeline(
    journal: Journal, ident: str, *, redactor: Redactor | None = None, from_version: int = 1
) -> AsyncIterator[TimelineEntry]:
    """The events of an instance or session as timeline entries, streamed.

    Raises:
        NotFoundError: unknown id, or ``from_version`` past the end.
    """
    redactor = redactor or Redactor()
    stream_id, version = await resolve_stream(journal, ident)
    if from_version > version:
        raise NotFoundError(f"stream {stream_id!r} has {version} events; there is no version {from_version}")
    maker = EntryMaker(redactor)
    async for event in journal.iter_stream(stream_id, from_version):
        yield maker.entry(event)


# --- printing ------------------------------------------------------------------

_COLOURS = {"red": "31", "green": "32", "yellow": "33", "cyan": "36", "dim": "2", "bold": "1"}


def use_colour(out: TextIO) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set."""
    return out.isatty() and not os.environ.get("NO_COLOR")


def _type_colour(event_type: str) -> str:
    if event_type.endswith(("Failed", "Cancelled")) or "NonDeterminism" in event_type:
        return "red"
    if event_type.endswith(("Completed", "Compensated", "Fired", "Received")):
        return "green"
    if event_type.endswith("Parked") or event_type.startswith("Compensation"):
        return "yellow"
    return "cyan"


def format_duration(seconds: float | None) -> str:
    """``+0.120s``, ``+2m03s``, ``+5h10m``, ``+3d04h``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"+{seconds:.3f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"+{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"+{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"+{days}d{hours:02d}h"


class TimelinePrinter:
    """Writes timeline entries as aligned lines, one at a time.

    Column widths are fixed up front (the version column from the stream's
    length) because a streamed timeline cannot look ahead.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        colour: bool = False,
        full: bool = False,
        with_stream: bool = False,
        version_width: int = 4,
    ) -> None:
        self.out = out
        self.colour = colour
        self.full = full
        self.with_stream = with_stream
        self.version_width = max(version_width, 3)

    def _paint(self, text: str, colour: str) -> str:
        return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m" if self.colour and text else text

    def header(self) -> None:
        """Print the column titles."""
        cells = ["STREAM".ljust(24)] if self.with_stream else []
        cells += ["V".rjust(self.version_width), "TIME (UTC)".ljust(23), "DELTA".ljust(9)]
        cells += ["TYPE".ljust(22), "STEP".ljust(18), "TRY", "SUMMARY"]
        self.out.write(self._paint("  ".join(cells), "bold") + "\n")

    def entry(self, entry: TimelineEntry) -> None:
        """Print one entry (and with ``full``, its whole payload and metadata)."""
        cells = [entry.stream_id.ljust(24)] if self.with_stream else []
        cells += [
            str(entry.version).rjust(self.version_width),
            self._paint(entry.recorded_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:23], "dim"),
            format_duration(entry.since_previous).ljust(9),
            self._paint(entry.type.ljust(22), _type_colour(entry.type)),
            (entry.step or "").ljust(18),
            ("" if entry.attempt is None else str(entry.attempt)).rjust(3),
            entry.summary,
        ]
        self.out.write("  ".join(cells).rstrip() + "\n")
        if self.full:
            body = json.dumps(
                {"payload": entry.payload, "metadata": entry.metadata},
                indent=2,
                ensure_ascii=False,
                default=str,
            )
            self.out.write("".join(f"      {line}\n" for line in body.splitlines()))


def entry_json(entry: TimelineEntry) -> str:
    """One entry as a compact JSON object."""
    return json.dumps(
        msgspec.to_builtins(entry, builtin_types=(), enc_hook=_iso), ensure_ascii=False, default=str
    )


def _iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


async def print_timeline(
    journal: Journal,
    ident: str,
    *,
    out: TextIO | None = None,
    redactor: Redactor | None = None,
    full: bool = False,
    as_json: bool = False,
    colour: bool | None = None,
) -> int:
    """Print the timeline of an instance or session as it is read; returns the events shown.

    With ``as_json`` the output is one JSON array of entries, written element
    by element.
    """
    out = out or sys.stdout
    stream_id, version = await resolve_stream(journal, ident)
    entries = timeline(journal, stream_id, redactor=redactor)
    count = 0
    if as_json:
        out.write("[")
        async for entry in entries:
            out.write(("\n" if count == 0 else ",\n") + entry_json(entry))
            count += 1
        out.write("\n]\n" if count else "]\n")
        return count
    printer = TimelinePrinter(
        out, colour=use_colour(out) if colour is None else colour, full=full, version_width=len(str(version))
    )
    out.write(f"{stream_id}  ({version} events, namespace {journal.namespace})\n")
    printer.header()
    async for entry in entries:
        printer.entry(entry)
        count += 1
    return count


# --- following the global order ----------------------------------------------


async def last_position(journal: Journal) -> int:
    """The position of the newest event of the namespace (0 when empty).

    Starts from the last event of the most recently active stream and pages
    forward, so it reads only the events appended after that one.
    """
    position = 0
    recent = await journal.list_streams(StreamFilter(limit=1))
    if recent:
        tail = await journal.read_stream(recent[0].stream_id, recent[0].version, 1)
        position = tail[-1].position if tail else 0
    while True:
        page = await journal.read_all(position, 1000)
        if not page:
            return position
        position = page[-1].position


async def follow(
    journal: Journal,
    *,
    after: int | None = None,
    limit: int | None = None,
    idle_timeout: float | None = None,
    wait_step: float = 30.0,
) -> AsyncIterator[Event]:
    """Events appended to the namespace, in global order, as they arrive.

    Args:
        after: start after this position; None starts at the current end.
        limit: stop after this many events.
        idle_timeout: stop when no new event arrives for this many seconds.
        wait_step: longest single wait (``wait_for_new`` uses LISTEN/NOTIFY on
            PostgreSQL and polling on SQLite).
    """
    position = await last_position(journal) if after is None else after
    seen = 0
    while limit is None or seen < limit:
        page = await journal.read_all(position, 500 if limit is None else min(500, limit - seen))
        for event in page:
            position = event.position
            seen += 1
            yield event
        if page:
            continue
        wait = wait_step if idle_timeout is None else idle_timeout
        if not await journal.wait_for_new(position, wait) and idle_timeout is not None:
            return


async def print_tail(
    journal: Journal,
    *,
    out: TextIO | None = None,
    redactor: Redactor | None = None,
    as_json: bool = False,
    colour: bool | None = None,
    after: int | None = None,
    limit: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    """Print new events as they arrive (JSON Lines with ``as_json``); returns how many."""
    out = out or sys.stdout
    redactor = redactor or Redactor()
    printer = TimelinePrinter(out, colour=use_colour(out) if colour is None else colour, with_stream=True)
    if not as_json:
        printer.header()
        out.flush()
    maker = EntryMaker(redactor)
    count = 0
    async for event in follow(journal, after=after, limit=limit, idle_timeout=idle_timeout):
        entry = maker.entry(event)
        if as_json:
            out.write(entry_json(entry) + "\n")
        else:
            printer.entry(entry)
        out.flush()
        count += 1
    return count
