"""The in-memory backend: for tests and the model the others are checked against."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import anyio
import anyio.lowlevel
from sagalog.storage.recorder import AppendOutcome, AppendRequest, stored_events
from sagalog.storage.records import (
    ANY_VERSION,
    DEFAULT_NAMESPACE,
    Claim,
    Event,
    Snapshot,
    StreamFilter,
    StreamInfo,
    WorkItem,
)

from sagalog.errors import ConcurrencyError


def matches(info: StreamInfo, query: StreamFilter) -> bool:
    """Whether a stream passes a listing filter (shared by the non-SQL paths)."""
    if query.prefix is not None and not info.stream_id.startswith(query.prefix):
        return False
    if query.contains is not None and query.contains not in info.stream_id:
        return False
    if query.since is not None and info.updated_at < query.since:
        return False
    return not (query.until is not None and info.updated_at >= query.until)


class MemoryRecorder:
    """Keeps every record in Python lists; nothing survives the process."""

    description = "memory://"

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._streams: dict[tuple[str, str], list[Event]] = {}
        self._snapshots: dict[tuple[str, str], list[Snapshot]] = {}
        self._namespaces: set[str] = {DEFAULT_NAMESPACE}
        self._appended = anyio.Event()
        self._checkpoints: dict[tuple[str, str], int] = {}
        # (namespace, stream) -> [ready_at, lease_owner, lease_expires_at]
        self._work: dict[tuple[str, str], list[datetime | str | None]] = {}

    def _schedule(self, request: AppendRequest) -> None:
        if request.schedule is None:
            return
        key = (request.namespace, request.stream_id)
        if request.schedule.ready_at is None:
            self._work.pop(key, None)
        elif key in self._work:
            self._work[key][0] = request.schedule.ready_at
        else:
            self._work[key] = [request.schedule.ready_at, None, None]

    async def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendOutcome]:
        outcomes: list[AppendOutcome] = []
        for request in requests:
            key = (request.namespace, request.stream_id)
            stream = self._streams.setdefault(key, [])
            current = len(stream)
            if request.expected_version not in (ANY_VERSION, current):
                outcomes.append(
                    ConcurrencyError(request.stream_id, request.expected_version, current)
                )
                continue
            first = len(self._events) + 1
            written = stored_events(request, range(first, first + len(request.events)), current + 1)
            self._events += written
            stream += written
            outcomes.append(written)
            self._schedule(request)
        self._appended.set()
        self._appended = anyio.Event()
        await anyio.lowlevel.checkpoint()
        return outcomes

    async def read_stream(
        self, namespace: str, stream_id: str, from_version: int, limit: int | None
    ) -> list[Event]:
        stream = self._streams.get((namespace, stream_id), [])
        start = max(from_version, 1) - 1
        return stream[start : None if limit is None else start + limit]

    async def read_all(self, namespace: str, after_position: int, limit: int) -> list[Event]:
        found: list[Event] = []
        for event in self._events[max(after_position, 0) :]:
            if event.namespace == namespace:
                found.append(event)
                if len(found) >= limit:
                    break
        return found

    async def stream_version(self, namespace: str, stream_id: str) -> int:
        return len(self._streams.get((namespace, stream_id), []))

    async def list_streams(self, namespace: str, query: StreamFilter) -> list[StreamInfo]:
        infos = [
            StreamInfo(
                stream_id=stream_id,
                version=len(events),
                namespace=ns,
                created_at=events[0].recorded_at,
                updated_at=events[-1].recorded_at,
                last_type=events[-1].type,
            )
            for (ns, stream_id), events in self._streams.items()
            if ns == namespace and events
        ]
        chosen = [info for info in infos if matches(info, query)]
        chosen.sort(key=lambda i: (i.updated_at, i.stream_id), reverse=True)
        return chosen[query.offset : query.offset + query.limit]

    async def wait_for_new(self, namespace: str, after_position: int, timeout: float) -> bool:
        with anyio.move_on_after(timeout):
            while True:
                if await self.read_all(namespace, after_position, 1):
                    return True
                await self._appended.wait()
        return False

    async def save_snapshot(self, namespace: str, snapshot: Snapshot) -> None:
        kept = self._snapshots.setdefault((namespace, snapshot.stream_id), [])
        kept[:] = [s for s in kept if (s.version, s.schema) != (snapshot.version, snapshot.schema)]
        kept.append(snapshot)
        kept.sort(key=lambda s: s.version)

    async def latest_snapshot(
        self, namespace: str, stream_id: str, max_version: int | None, schema: int
    ) -> Snapshot | None:
        for snap in reversed(self._snapshots.get((namespace, stream_id), [])):
            if snap.schema == schema and (max_version is None or snap.version <= max_version):
                return snap
        return None

    async def create_namespace(self, name: str) -> None:
        self._namespaces.add(name)

    async def list_namespaces(self) -> list[str]:
        return sorted(self._namespaces)

    async def save_checkpoint(self, namespace: str, name: str, position: int) -> None:
        self._checkpoints[(namespace, name)] = position

    async def load_checkpoint(self, namespace: str, name: str) -> int:
        return self._checkpoints.get((namespace, name), 0)

    async def claim(
        self, namespace: str, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Claim]:
        ready = sorted(
            (row[0], stream_id)
            for (ns, stream_id), row in self._work.items()
            if ns == namespace
            and isinstance(row[0], datetime)
            and row[0] <= now
            and (row[1] is None or (isinstance(row[2], datetime) and row[2] <= now))
        )
        claims = []
        for ready_at, stream_id in ready[:limit]:
            row = self._work[(namespace, stream_id)]
            taken_over = row[1] is not None
            row[1:] = [owner, lease_until]
            claims.append(Claim(stream_id, ready_at, owner, lease_until, taken_over=taken_over))
        return claims

    async def renew(
        self, namespace: str, owner: str, stream_ids: Sequence[str], lease_until: datetime
    ) -> list[str]:
        held = []
        for stream_id in stream_ids:
            row = self._work.get((namespace, stream_id))
            if row is not None and row[1] == owner:
                row[2] = lease_until
                held.append(stream_id)
        return held

    async def release(self, namespace: str, owner: str, stream_ids: Sequence[str]) -> None:
        for stream_id in stream_ids:
            row = self._work.get((namespace, stream_id))
            if row is not None and row[1] == owner:
                row[1:] = [None, None]

    async def next_ready_at(self, namespace: str, after: datetime | None = None) -> datetime | None:
        times = [
            row[0]
            for (ns, _), row in self._work.items()
            if ns == namespace and isinstance(row[0], datetime) and (after is None or row[0] > after)
        ]
        return min(times, default=None)

    async def clear_work_index(self, namespace: str) -> None:
        for key in [k for k in self._work if k[0] == namespace]:
            del self._work[key]

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        """Always ready: there is nothing to reach."""
        return None

    async def clear_snapshots(self, namespace: str) -> None:
        for key in [k for k in self._snapshots if k[0] == namespace]:
            del self._snapshots[key]

    async def put_work(self, namespace: str, stream_id: str, ready_at: datetime | None) -> None:
        key = (namespace, stream_id)
        if ready_at is None:
            self._work.pop(key, None)
        elif key in self._work:
            self._work[key][0] = ready_at
        else:
            self._work[key] = [ready_at, None, None]

    async def work_index(self, namespace: str) -> list[WorkItem]:
        items = []
        for (ns, stream_id), (ready, owner, expires) in sorted(self._work.items()):
            if ns == namespace and isinstance(ready, datetime):
                items.append(
                    WorkItem(
                        stream_id,
                        ready,
                        owner if isinstance(owner, str) else None,
                        expires if isinstance(expires, datetime) else None,
                    )
                )
        return items
