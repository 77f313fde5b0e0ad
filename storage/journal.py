"""The journal: validation, codec, group commit and retries over one recorder.

Every backend is a :class:`~sagalog.storage.recorder.Recorder`; this class
is the same for all of them, so every rule about what may be appended lives
here once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

import msgspec
from sagalog.storage.codec import IdentityCodec, PayloadCodec
from sagalog.storage.group_commit import CommitObserver, GroupCommitter
from sagalog.storage.recorder import AppendOutcome, AppendRequest, Recorder
from sagalog.storage.records import (
    ANY_VERSION,
    DEFAULT_NAMESPACE,
    Claim,
    Event,
    NewEvent,
    Schedule,
    Snapshot,
    StreamFilter,
    StreamInfo,
    WorkItem,
)
from sagalog.storage.retry import Backoff, retry_transient
from sagalog.storage.watch import DecodedWatch, ReadWatch, Watch, head_position

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import (
    ConcurrencyError,
    InvalidEventError,
    NotFoundError,
    OperationalError,
    PayloadTooLargeError,
    UnknownNamespaceError,
)

DEFAULT_MAX_PAYLOAD = 1024 * 1024
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


class _Shared:
    """What all namespace views of one journal share: recorder, committer, config."""

    def __init__(
        self,
        recorder: Recorder,
        codec: PayloadCodec,
        clock: Clock,
        max_payload_bytes: int,
        backoff: Backoff,
    ) -> None:
        self.recorder = recorder
        self.codec = codec
        self.clock = clock
        self.max_payload_bytes = max_payload_bytes
        self.backoff = backoff
        self.identity = type(codec) is IdentityCodec
        """Payloads are stored as given: nothing to encode or decode."""
        self.committer: GroupCommitter[AppendRequest, AppendOutcome] = GroupCommitter(
            self._commit, depth=getattr(recorder, "overlapping_batches", 1)
        )
        self.known_namespaces: set[str] = {DEFAULT_NAMESPACE}
        self.known_types = _Names()
        """Event type names that passed validation."""

    async def _commit(self, batch: Sequence[AppendRequest]) -> list[AppendOutcome]:
        return await self.recorder.append_batch(batch)


def check_stream_id(stream_id: str) -> None:
    """Refuse stream ids that are empty, too long or not plain text."""
    if not isinstance(stream_id, str) or not _NAME.match(stream_id):
        raise InvalidEventError(
            f"invalid stream id {stream_id!r}: use 1-200 letters, digits or '_.:-'"
        )


def check_type_name(name: str) -> None:
    """Refuse event type names that are not a letter or '_' then up to 199 of '[A-Za-z0-9_.:-]'."""
    if not isinstance(name, str) or not _TYPE_NAME.match(name):
        raise InvalidEventError(
            f"invalid event type {name!r}: a name of 1-200 characters starting with a letter"
        )


class _Names(set[str]):
    """Names already checked, at most LIMIT of them (past that, it starts over)."""

    LIMIT = 4096

    def remember(self, name: str) -> None:
        """Add ``name``, first emptying the set when it is full."""
        if len(self) >= self.LIMIT:
            self.clear()
        self.add(name)


class Journal:
    """An append-only event store, scoped to one namespace.

    Create one with :func:`sagalog.storage.open_journal`. Other namespaces of
    the same store are reached with :meth:`in_namespace`; they share the
    connections and the group committer.
    """

    def __init__(
        self,
        recorder: Recorder,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        codec: PayloadCodec | None = None,
        clock: Clock = SYSTEM_CLOCK,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        backoff: Backoff | None = None,
        _shared: _Shared | None = None,
    ) -> None:
        self._shared = _shared or _Shared(
            recorder, codec or IdentityCodec(), clock, max_payload_bytes, backoff or Backoff()
        )
        self.namespace = namespace

    # -- configuration ---------------------------------------------------

    @property
    def recorder(self) -> Recorder:
        """The backend underneath."""
        return self._shared.recorder

    @property
    def clock(self) -> Clock:
        """The clock that stamps ``recorded_at``."""
        return self._shared.clock

    @property
    def backoff(self) -> Backoff:
        """How transient failures are retried."""
        return self._shared.backoff

    @property
    def description(self) -> str:
        """Where the journal stores (a DSN without its password)."""
        return self._shared.recorder.description

    @property
    def group_commits(self) -> int:
        """How many append transactions were made so far (all namespaces)."""
        return self._shared.committer.batches

    def observe_commits(self, observer: CommitObserver | None) -> None:
        """Call ``observer(seconds, batch_size)`` after every append transaction
        (all namespaces); None stops it. The engine feeds its metrics this way."""
        self._shared.committer.observer = observer

    async def check(self) -> None:
        """Readiness: one real query, no retries.

        Raises:
            OperationalError: the database cannot be reached.
            ProgrammingError: its schema is not the one this code needs (migrate it).
        """
        await self._shared.recorder.check()

    # -- namespaces --------------------------------------------------------

    async def create_namespace(self, name: str) -> None:
        """Create a namespace; creating an existing one is a no-op."""
        if not _NAME.match(name):
            raise InvalidEventError(f"invalid namespace {name!r}: use 1-200 letters, digits or '_.:-'")
        await self._shared.recorder.create_namespace(name)
        self._shared.known_namespaces.add(name)

    async def namespaces(self) -> list[str]:
        """Every namespace of this store."""
        return await self._shared.recorder.list_namespaces()

    async def in_namespace(self, name: str) -> Journal:
        """A view of the same store scoped to namespace ``name``.

        Raises:
            UnknownNamespaceError: ``name`` was never created.
        """
        if name not in self._shared.known_namespaces:
            if name not in await self._shared.recorder.list_namespaces():
                raise UnknownNamespaceError(
                    f"unknown namespace {name!r}: create it first "
                    f"(sagalog admin create-namespace {name})"
                )
            self._shared.known_namespaces.add(name)
        return Journal(self._shared.recorder, namespace=name, _shared=self._shared)

    # -- writing -------------------------------------------------------------

    def _validate(self, stream_id: str, expected_version: int, events: Sequence[NewEvent]) -> None:
        check_stream_id(stream_id)
        if not isinstance(expected_version, int) or expected_version < ANY_VERSION:
            raise InvalidEventError(
                f"invalid expected_version {expected_version!r}: use a version >= 0, "
                "NO_STREAM (0) or ANY_VERSION (-1)"
            )
        if not events:
            raise InvalidEventError(f"append to {stream_id!r} has no events")
        shared = self._shared
        limit = shared.max_payload_bytes
        known = shared.known_types
        for event in events:
            if not isinstance(event, NewEvent):
                raise InvalidEventError(f"append to {stream_id!r}: {event!r} is not a NewEvent")
            kind = event.type
            # A program uses a few event types over and over: each is matched
            # against the pattern once (a set lookup is a fifth of a match).
            if type(kind) is not str or kind not in known:
                check_type_name(kind)
                if type(kind) is str:
                    known.remember(kind)
            payload = event.payload
            if not isinstance(payload, bytes):
                raise InvalidEventError(
                    f"payload of {kind} must be bytes, not {type(payload).__name__} "
                    "(encode it with sagalog.storage.encode_value)"
                )
            if len(payload) > limit:
                raise PayloadTooLargeError(
                    f"payload of {kind} in {stream_id!r} is {len(payload)} bytes; "
                    f"the limit is {limit} bytes"
                )

    @retry_transient
    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        schedule: Schedule | None = None,
        quiet: bool = False,
        final: bool = False,
        hand_off: bool = False,
    ) -> list[Event]:
        """Append ``events`` to a stream in one transaction.

        Args:
            stream_id: the stream.
            expected_version: the version the stream must be at now; ``NO_STREAM``
                (0) for a new stream, ``ANY_VERSION`` (-1) to skip the check.
            events: at least one event.
            schedule: when given, the stream's work-index row changes in the
                same transaction (``ready_at=None`` removes it).
            quiet: the append makes no work for anyone but the caller, who
                holds the stream's lease and goes on with it: workers watching
                for work (``watch(work=True)``) are not told of it.
            final: the append may end what others await (a workflow's end, say):
                watchers of final appends (``watch(final=True)``) are told of it.
            hand_off: a start that makes the stream ready now: on PostgreSQL, when
                its commit holds it alone, an idle worker's ticket (:meth:`offer`)
                takes it, the work-index row is leased to that worker at once and
                only that worker is told (``Touch.handed``); else as without.

        Returns:
            The stored events with their versions and positions.

        Raises:
            ConcurrencyError: the stream is not at ``expected_version``.
            InvalidEventError, PayloadTooLargeError: the events are refused; nothing is written.
        """
        self._validate(stream_id, expected_version, events)
        shared = self._shared
        # The recorders copy each event's metadata into the stored record, so
        # the events go down as they are; only a real codec rebuilds them.
        if shared.identity:
            stored = events if isinstance(events, tuple) else tuple(events)
        else:
            stored = tuple(NewEvent(e.type, shared.codec.encode(e.payload), e.metadata) for e in events)
        request = AppendRequest(
            self.namespace, stream_id, expected_version, stored, shared.clock.now(), schedule, quiet,
            final, hand_off,
        )
        outcome = await shared.committer.submit(request)
        if isinstance(outcome, ConcurrencyError):
            raise outcome
        if shared.identity:
            return outcome
        return [self._decoded(e) for e in outcome]

    # -- reading ---------------------------------------------------------

    def _decoded(self, event: Event) -> Event:
        codec = self._shared.codec
        if self._shared.identity:
            return event
        return Event(
            position=event.position,
            stream_id=event.stream_id,
            version=event.version,
            type=event.type,
            payload=codec.decode(event.payload),
            metadata=event.metadata,
            namespace=event.namespace,
            recorded_at=event.recorded_at,
        )

    @retry_transient
    async def read_stream(
        self, stream_id: str, from_version: int = 1, limit: int | None = None
    ) -> list[Event]:
        """Events of ``stream_id`` from ``from_version`` on, oldest first (empty if none)."""
        raw = await self._shared.recorder.read_stream(self.namespace, stream_id, from_version, limit)
        return [self._decoded(e) for e in raw]

    async def iter_stream(
        self, stream_id: str, from_version: int = 1, batch: int = 1000
    ) -> AsyncIterator[Event]:
        """Every event of a stream, fetched ``batch`` at a time (for very long streams)."""
        version = from_version
        while True:
            page = await self.read_stream(stream_id, version, batch)
            for event in page:
                yield event
            if len(page) < batch:
                return
            version = page[-1].version + 1

    @retry_transient
    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[Event]:
        """Events of this namespace with position > ``after_position``, in global order.

        A reader that pages through with the last position it saw never skips
        an event, even one committed later by a slower writer.
        """
        raw = await self._shared.recorder.read_all(self.namespace, after_position, limit)
        return [self._decoded(e) for e in raw]

    @retry_transient
    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version (0 for a stream with no events)."""
        return await self._shared.recorder.stream_version(self.namespace, stream_id)

    async def require_stream(self, stream_id: str) -> int:
        """The stream's version, or NotFoundError when it has no events."""
        version = await self.stream_version(stream_id)
        if version == 0:
            raise NotFoundError(f"no stream {stream_id!r} in namespace {self.namespace!r}")
        return version

    @retry_transient
    async def list_streams(self, query: StreamFilter | None = None) -> list[StreamInfo]:
        """Streams of this namespace matching ``query``, most recently active first."""
        return await self._shared.recorder.list_streams(self.namespace, query or StreamFilter())

    async def wait_for_new(self, after_position: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an event past ``after_position``."""
        return await self._shared.recorder.wait_for_new(self.namespace, after_position, timeout)

    # -- snapshots -------------------------------------------------------

    @retry_transient
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a folded state of a stream (derived data: may be dropped any time)."""
        check_stream_id(snapshot.stream_id)
        await self._shared.recorder.save_snapshot(self.namespace, snapshot)

    @retry_transient
    async def latest_snapshot(
        self, stream_id: str, max_version: int | None = None, schema: int = 1
    ) -> Snapshot | None:
        """The newest snapshot of ``schema`` for ``stream_id`` at or below ``max_version``."""
        return await self._shared.recorder.latest_snapshot(
            self.namespace, stream_id, max_version, schema
        )

    # -- subscriber checkpoints -------------------------------------------

    @retry_transient
    async def save_checkpoint(self, name: str, position: int) -> None:
        """Remember that subscriber ``name`` has processed events up to ``position``."""
        await self._shared.recorder.save_checkpoint(self.namespace, name, position)

    @retry_transient
    async def load_checkpoint(self, name: str) -> int:
        """The last position saved for subscriber ``name`` (0 when none)."""
        return await self._shared.recorder.load_checkpoint(self.namespace, name)

    # -- the work index (derived; see Schedule) ----------------------------

    @retry_transient
    async def claim(
        self, owner: str, lease_seconds: float, limit: int = 10, *, read: int = 0
    ) -> list[Claim]:
        """Lease up to ``limit`` ready streams for ``lease_seconds``.

        ``read``: also read the first ``read`` events of each claimed stream
        (``Claim.events``); on PostgreSQL in the claim's own query, as of its
        snapshot (a later append is newer than what was read, so an append
        that expects the version read fails, as it should).
        """
        if read <= 0:
            now = self._shared.clock.now()
            until = now + timedelta(seconds=lease_seconds)
            return await self._shared.recorder.claim(self.namespace, owner, now, until, limit)
        claims, _ = await self._claim(owner, lease_seconds, limit, read, due=False)
        return claims

    @retry_transient
    async def claim_next(
        self, owner: str, lease_seconds: float, limit: int = 10, *, read: int = 0
    ) -> tuple[list[Claim], datetime | None]:
        """:meth:`claim`, and the earliest ``ready_at`` still in the future (None: none).

        For a worker: what to work on now, and when to look again at the
        latest (one query on PostgreSQL, with the reads).
        """
        return await self._claim(owner, lease_seconds, limit, read, due=True)

    async def _claim(
        self, owner: str, lease_seconds: float, limit: int, read: int, *, due: bool
    ) -> tuple[list[Claim], datetime | None]:
        now = self._shared.clock.now()
        until = now + timedelta(seconds=lease_seconds)
        recorder = self._shared.recorder
        native = getattr(recorder, "claim_next", None)
        if native is not None:
            claims, next_due = await native(self.namespace, owner, now, until, limit, read)
            if not self._shared.identity and read > 0:
                claims = [
                    msgspec.structs.replace(c, events=tuple(self._decoded(e) for e in c.events or ()))
                    for c in claims
                ]
            return claims, next_due
        claims = await recorder.claim(self.namespace, owner, now, until, limit)
        if claims and read > 0:
            claims = await self._read_claimed(claims, read)
        if not due:
            return claims, None
        return claims, await recorder.next_ready_at(self.namespace, now)

    async def _read_claimed(self, claims: list[Claim], read: int) -> list[Claim]:
        try:
            found = await self.read_streams([c.stream_id for c in claims])
        except OperationalError:
            return claims  # the leases are taken: hand them over unread rather than lose them
        return [
            msgspec.structs.replace(c, events=tuple(found.get(c.stream_id, ())[:read])) for c in claims
        ]

    @retry_transient
    async def renew(self, owner: str, stream_ids: Sequence[str], lease_seconds: float) -> list[str]:
        """Extend ``owner``'s leases; returns the streams it still holds."""
        until = self._shared.clock.now() + timedelta(seconds=lease_seconds)
        return await self._shared.recorder.renew(self.namespace, owner, stream_ids, until)

    @property
    def hands_off(self) -> bool:
        """Whether starts can be handed to idle workers here (:meth:`offer`; PostgreSQL)."""
        return hasattr(self._shared.recorder, "offer")

    @retry_transient
    async def offer(self, owner: str, slots: int, lease_seconds: float) -> datetime | None:
        """Leave (or renew) ``slots`` tickets of ``owner``, each for one of the next starts
        appended alone (see ``append(hand_off=True)``); 0 renews those left. Returns when the
        lease they offer runs out (None: this backend hands nothing off). One ticket is one
        hand-off."""
        native = getattr(self._shared.recorder, "offer", None)
        if native is None:
            return None
        until = self._shared.clock.now() + timedelta(seconds=lease_seconds)
        await native(self.namespace, owner, slots, until)
        return until

    @retry_transient
    async def withdraw(self, owner: str) -> None:
        """Delete the tickets of ``owner`` that no start took (a worker that drains)."""
        native = getattr(self._shared.recorder, "withdraw", None)
        if native is not None:
            await native(self.namespace, owner)

    @retry_transient
    async def release(self, owner: str, stream_ids: Sequence[str]) -> None:
        """Give up leases so any worker may claim those streams at once."""
        await self._shared.recorder.release(self.namespace, owner, stream_ids)

    @retry_transient
    async def next_ready_at(self) -> datetime | None:
        """The earliest time any stream of this namespace needs a worker."""
        return await self._shared.recorder.next_ready_at(self.namespace)

    async def close(self) -> None:
        """Close the underlying store (every namespace view)."""
        await self._shared.recorder.close()

    # -- rebuilding derived data (sagalog admin rebuild) ----------------------

    @retry_transient
    async def clear_work_index(self) -> None:
        """Delete this namespace's work index (before a rebuild from events)."""
        await self._shared.recorder.clear_work_index(self.namespace)

    @retry_transient
    async def clear_snapshots(self) -> None:
        """Delete this namespace's snapshots; readers fold from events until new ones exist."""
        await self._shared.recorder.clear_snapshots(self.namespace)

    @retry_transient
    async def put_work(self, stream_id: str, ready_at: datetime | None) -> None:
        """Set a stream's work-index time without appending (None removes its row).

        For rebuilding the index from events; live code changes it only
        through an append's ``Schedule``.
        """
        check_stream_id(stream_id)
        await self._shared.recorder.put_work(self.namespace, stream_id, ready_at)

    @retry_transient
    async def work_index(self) -> list[WorkItem]:
        """Every work-index row of this namespace, by stream id."""
        return await self._shared.recorder.work_index(self.namespace)

    @retry_transient
    async def read_streams(self, stream_ids: Sequence[str]) -> dict[str, list[Event]]:
        """Every event of each stream in ``stream_ids`` (a stream with none is left out).

        One query on a backend that has ``read_streams`` (PostgreSQL), one
        :meth:`read_stream` per stream elsewhere. For short streams, such as
        a batch of freshly claimed instances; long ones are better read alone.
        """
        recorder = self._shared.recorder
        found: dict[str, list[Event]] = {}
        many = getattr(recorder, "read_streams", None)
        if many is None:
            for stream_id in dict.fromkeys(stream_ids):
                events = await recorder.read_stream(self.namespace, stream_id, 1, None)
                if events:
                    found[stream_id] = [self._decoded(e) for e in events]
            return found
        for event in await many(self.namespace, list(dict.fromkeys(stream_ids))):
            found.setdefault(event.stream_id, []).append(self._decoded(event))
        return found

    async def watch(self, *, work: bool = False, final: bool = False, handed_to: str | None = None) -> Watch:
        """A :class:`~sagalog.storage.watch.Watch` of this namespace: what commits touch from now on.

        On PostgreSQL it reads the notifications' payloads (no query per
        commit); elsewhere it reads the new events. For waiters that need to
        know whose commit it was (a worker skips its own) or which stream it
        touched (a client awaiting one instance). ``work``: only appends that
        are not ``quiet`` need be told (a worker looking for work); ``final``:
        only ``final`` appends need be (a client awaiting a result). A backend
        without notifications tells them all. ``handed_to``: a worker's id; the
        starts that take its ticket (:meth:`offer`) come as ``Touch.handed``.
        """
        native = getattr(self._shared.recorder, "watch", None)
        if native is not None:
            watch: Watch = await native(self.namespace, work=work, final=final, handed_to=handed_to)
            return watch if self._shared.identity else DecodedWatch(watch, self._shared.codec.decode)
        return ReadWatch(self, await head_position(self))
