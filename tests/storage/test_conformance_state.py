"""Backend conformance kit, part 2: everything beside the events themselves.

Snapshots, namespaces, subscriber checkpoints, the work index, the codec
hook, and reopening a store. Every backend must pass these.
"""

from __future__ import annotations

import zlib
from datetime import timedelta

import anyio
import pytest
from sagalog.storage import (
    NO_STREAM,
    Claim,
    Journal,
    NewEvent,
    Schedule,
    Snapshot,
    StreamFilter,
    ZlibCodec,
    connect,
)

from sagalog.clock import ManualClock
from sagalog.errors import ConcurrencyError, DecodingError, InvalidEventError, UnknownNamespaceError

pytestmark = pytest.mark.anyio


def new(*types: str) -> list[NewEvent]:
    """Events named ``types`` whose payload is the type name."""
    return [NewEvent(t, t.encode()) for t in types]


# -- snapshots ------------------------------------------------------------------


async def test_latest_snapshot_at_or_below_a_version_of_one_schema(journal: Journal) -> None:
    for version in (2, 5, 8):
        await journal.save_snapshot(Snapshot("wf-1", version, f"s{version}".encode()))
    await journal.save_snapshot(Snapshot("wf-1", 6, b"v2-at-6", schema=2))
    await journal.save_snapshot(Snapshot("wf-2", 9, b"other stream"))

    async def state(max_version: int | None = None, schema: int = 1) -> bytes | None:
        snap = await journal.latest_snapshot("wf-1", max_version, schema)
        return None if snap is None else snap.state

    assert await journal.latest_snapshot("wf-1") == Snapshot("wf-1", 8, b"s8", 1)
    assert await state(7) == b"s5"
    assert await state(5) == b"s5"
    assert await state(1) is None
    assert await state(schema=2) == b"v2-at-6"
    assert await state(5, schema=2) is None
    assert await state(schema=3) is None
    assert await journal.latest_snapshot("wf-missing") is None


async def test_saving_a_snapshot_again_replaces_it(journal: Journal) -> None:
    await journal.save_snapshot(Snapshot("wf-1", 4, b"first"))
    await journal.save_snapshot(Snapshot("wf-1", 4, b"second"))
    assert await journal.latest_snapshot("wf-1") == Snapshot("wf-1", 4, b"second")


# -- namespaces -------------------------------------------------------------------


async def test_namespaces_are_isolated(timed_journal: Journal, clock: ManualClock) -> None:
    await timed_journal.create_namespace("tenant-a")
    await timed_journal.create_namespace("tenant-a")  # a no-op the second time
    assert await timed_journal.namespaces() == ["default", "tenant-a"]
    tenant = await timed_journal.in_namespace("tenant-a")
    assert tenant.namespace == "tenant-a"
    home = timed_journal
    await home.append("wf-1", NO_STREAM, new("Home1", "Home2"))
    [theirs] = await tenant.append("wf-1", NO_STREAM, new("Tenant1"))
    assert theirs.version == 1 and theirs.namespace == "tenant-a"
    await tenant.append("wf-only-tenant", NO_STREAM, new("T"))

    assert [e.type for e in await home.read_stream("wf-1")] == ["Home1", "Home2"]
    assert [e.type for e in await tenant.read_stream("wf-1")] == ["Tenant1"]
    assert [e.type for e in await home.read_all()] == ["Home1", "Home2"]
    assert [e.type for e in await tenant.read_all()] == ["Tenant1", "T"]
    assert await home.stream_version("wf-only-tenant") == 0
    assert [s.stream_id for s in await home.list_streams()] == ["wf-1"]
    assert [s.namespace for s in await tenant.list_streams(StreamFilter(prefix="wf-1"))] == ["tenant-a"]
    with pytest.raises(ConcurrencyError):
        await home.append("wf-1", 1, new("X"))  # the tenant's version 1 does not count here

    await home.save_snapshot(Snapshot("wf-1", 2, b"home"))
    assert await tenant.latest_snapshot("wf-1") is None
    await tenant.save_checkpoint("projector", 7)
    assert await home.load_checkpoint("projector") == 0
    await tenant.append("wf-2", NO_STREAM, new("A"), schedule=Schedule(clock.now()))
    assert await home.next_ready_at() is None
    assert await home.claim("w", 30) == []
    assert [c.stream_id for c in await tenant.claim("w", 30)] == ["wf-2"]
    assert await home.wait_for_new(0, 0) is True
    assert await tenant.wait_for_new(theirs.position, 0) is True


async def test_unknown_and_invalid_namespaces(journal: Journal, journal_url: str) -> None:
    message = "unknown namespace 'nope': create it first (sagalog admin create-namespace nope)"
    with pytest.raises(UnknownNamespaceError) as caught:
        await journal.in_namespace("nope")
    assert str(caught.value) == message
    with pytest.raises(UnknownNamespaceError) as caught:
        await connect(journal_url, namespace="nope")
    assert str(caught.value) == message
    with pytest.raises(InvalidEventError) as invalid:
        await journal.create_namespace("bad name")
    assert str(invalid.value) == "invalid namespace 'bad name': use 1-200 letters, digits or '_.:-'"
    assert await journal.namespaces() == ["default"]


async def test_a_namespace_is_seen_by_other_connections(durable_url: str) -> None:
    first = await connect(durable_url)
    try:
        await first.create_namespace("tenant-b")
        second = await connect(durable_url, namespace="tenant-b")
        await second.append("wf-1", NO_STREAM, new("A"))
        await second.close()
        tenant = await first.in_namespace("tenant-b")
        assert [e.type for e in await tenant.read_stream("wf-1")] == ["A"]
    finally:
        await first.close()


# -- checkpoints ------------------------------------------------------------------


async def test_checkpoints(journal: Journal) -> None:
    assert await journal.load_checkpoint("projector") == 0
    await journal.save_checkpoint("projector", 5)
    await journal.save_checkpoint("mailer", 2)
    assert await journal.load_checkpoint("projector") == 5
    await journal.save_checkpoint("projector", 9)
    assert (await journal.load_checkpoint("projector"), await journal.load_checkpoint("mailer")) == (9, 2)


# -- the work index ---------------------------------------------------------------


async def test_work_index_claims_ready_streams_oldest_first(
    timed_journal: Journal, clock: ManualClock
) -> None:
    journal, t0 = timed_journal, clock.now()
    await journal.append("wf-late", NO_STREAM, new("A"), schedule=Schedule(t0 + timedelta(seconds=10)))
    await journal.append("wf-b", NO_STREAM, new("A"), schedule=Schedule(t0))
    await journal.append("wf-a", NO_STREAM, new("A"), schedule=Schedule(t0 - timedelta(seconds=5)))
    await journal.append("wf-c", NO_STREAM, new("A"), schedule=Schedule(t0))
    await journal.append("wf-idle", NO_STREAM, new("A"))
    assert await journal.next_ready_at() == t0 - timedelta(seconds=5)

    lease_end = t0 + timedelta(seconds=30)
    assert await journal.claim("w1", 30, limit=2) == [
        Claim("wf-a", t0 - timedelta(seconds=5), "w1", lease_end),
        Claim("wf-b", t0, "w1", lease_end),
    ]
    assert [c.stream_id for c in await journal.claim("w2", 30)] == ["wf-c"]
    assert await journal.claim("w3", 30) == []  # the rest is leased or not ready yet
    assert await journal.next_ready_at() == t0 - timedelta(seconds=5)  # leased rows count too
    clock.advance(10)
    assert [c.stream_id for c in await journal.claim("w3", 30)] == ["wf-late"]


async def test_a_claim_can_read_the_first_events_of_what_it_claimed(
    timed_journal: Journal, clock: ManualClock
) -> None:
    journal, t0 = timed_journal, clock.now()
    await journal.append("wf-long", NO_STREAM, new("A", "B", "C", "D"), schedule=Schedule(t0))
    await journal.append("wf-short", NO_STREAM, new("A"), schedule=Schedule(t0 + timedelta(seconds=1)))
    await journal.append("wf-later", NO_STREAM, new("A"), schedule=Schedule(t0 + timedelta(seconds=60)))
    clock.advance(2)
    claims = await journal.claim("w1", 30, read=3)
    assert [(c.stream_id, [(e.version, e.type) for e in c.events or ()]) for c in claims] == [
        ("wf-long", [(1, "A"), (2, "B"), (3, "C")]),  # the first three only
        ("wf-short", [(1, "A")]),
    ]
    stored = await journal.read_stream("wf-long")
    assert claims[0].events == tuple(stored[:3])  # the same records a read gives
    assert all(c.lease_owner == "w1" for c in claims)
    assert await journal.claim("w2", 30, read=3) == []  # leased: nothing more to claim


async def test_claim_next_tells_when_the_next_stream_is_due(
    timed_journal: Journal, clock: ManualClock
) -> None:
    journal, t0 = timed_journal, clock.now()
    assert await journal.claim_next("w1", 30) == ([], None)
    await journal.append("wf-now", NO_STREAM, new("A"), schedule=Schedule(t0))
    await journal.append("wf-soon", NO_STREAM, new("A"), schedule=Schedule(t0 + timedelta(seconds=5)))
    await journal.append("wf-later", NO_STREAM, new("A"), schedule=Schedule(t0 + timedelta(seconds=9)))
    claims, next_due = await journal.claim_next("w1", 30, read=10)
    assert [(c.stream_id, len(c.events or ())) for c in claims] == [("wf-now", 1)]
    assert next_due == t0 + timedelta(seconds=5)
    claims, next_due = await journal.claim_next("w2", 30)
    assert (claims, next_due) == ([], t0 + timedelta(seconds=5))  # a leased row is not "next"
    clock.advance(6)
    claims, next_due = await journal.claim_next("w2", 30)
    assert ([c.stream_id for c in claims], next_due) == (["wf-soon"], t0 + timedelta(seconds=9))
    assert claims[0].events is None  # nothing read unless asked


async def test_a_claim_reads_nothing_unless_asked(timed_journal: Journal, clock: ManualClock) -> None:
    await timed_journal.append("wf-a", NO_STREAM, new("A"), schedule=Schedule(clock.now()))
    [claim] = await timed_journal.claim("w1", 30)
    assert claim.events is None


async def test_concurrent_claimers_never_share_a_stream(journal: Journal, peer: Journal) -> None:
    ready = journal.clock.now() - timedelta(seconds=1)
    streams = [f"wf-{i}" for i in range(20)]
    for stream in streams:
        await journal.append(stream, NO_STREAM, new("A"), schedule=Schedule(ready))
    claimed: list[tuple[str, str]] = []

    async def claimer(journal: Journal, owner: str) -> None:
        for _ in range(10):  # bounded, so a backend that ignores leases fails instead of hanging
            batch = await journal.claim(owner, 300, limit=3)
            if not batch:
                return
            claimed.extend((c.stream_id, owner) for c in batch)

    async with anyio.create_task_group() as tg:
        for index in range(4):
            tg.start_soon(claimer, journal if index % 2 else peer, f"w{index}")
    assert sorted(stream for stream, _ in claimed) == sorted(streams)
    for stream, owner in claimed:  # each lease is held by the owner that got the claim
        assert await journal.renew(owner, [stream], 300) == [stream]


async def test_expired_leases_renew_and_release(timed_journal: Journal, clock: ManualClock) -> None:
    journal, t0 = timed_journal, clock.now()
    for stream in ("wf-1", "wf-2"):
        await journal.append(stream, NO_STREAM, new("A"), schedule=Schedule(t0))
    assert len(await journal.claim("w1", 30)) == 2
    clock.advance(20)
    assert await journal.renew("w1", ["wf-2", "wf-missing"], 30) == ["wf-2"]  # wf-2 now until t0+50
    clock.advance(15)  # t0+35: wf-1's lease has expired, wf-2's has not
    [taken] = await journal.claim("w2", 30)
    assert taken == Claim("wf-1", t0, "w2", t0 + timedelta(seconds=65), taken_over=True)
    assert await journal.renew("w1", ["wf-1", "wf-2"], 30) == ["wf-2"]  # w1 lost wf-1
    assert await journal.renew("w2", ["wf-2"], 30) == []
    await journal.release("w2", ["wf-2"])  # not w2's: nothing happens
    assert await journal.claim("w3", 30) == []
    await journal.release("w1", ["wf-2"])
    assert [(c.stream_id, c.taken_over) for c in await journal.claim("w3", 30)] == [("wf-2", False)]
    assert await journal.renew("w1", ["wf-2"], 30) == []


async def test_a_claim_tells_a_lease_that_ran_out_from_one_given_back(
    timed_journal: Journal, clock: ManualClock
) -> None:
    journal, t0 = timed_journal, clock.now()
    for stream in ("wf-new", "wf-released", "wf-expired"):
        await journal.append(stream, NO_STREAM, new("A"), schedule=Schedule(t0))
    assert len(await journal.claim("w1", 30, limit=2, read=1)) == 2  # wf-expired, wf-new
    await journal.release("w1", ["wf-new"])
    clock.advance(31)  # w1 "crashed" holding wf-expired
    claims, _ = await journal.claim_next("w2", 30, read=1)
    assert sorted((c.stream_id, c.taken_over) for c in claims) == [
        ("wf-expired", True),
        ("wf-new", False),  # given back
        ("wf-released", False),  # never leased
    ]
    clock.advance(31)
    assert {c.stream_id: c.taken_over for c in await journal.claim("w3", 30)} == {
        "wf-expired": True, "wf-new": True, "wf-released": True,
    }  # fmt: skip


async def test_appends_reschedule_keep_the_lease_and_none_removes(
    timed_journal: Journal, clock: ManualClock
) -> None:
    journal, t0 = timed_journal, clock.now()
    await journal.append("wf-1", NO_STREAM, new("A"), schedule=Schedule(t0))
    await journal.append("wf-2", NO_STREAM, new("A"), schedule=Schedule(t0 + timedelta(seconds=3)))
    await journal.claim("w1", 30)
    later = t0 + timedelta(seconds=100)
    await journal.append("wf-1", 1, new("B"), schedule=Schedule(later))
    assert await journal.renew("w1", ["wf-1"], 30) == ["wf-1"]  # the holder keeps its lease
    assert await journal.next_ready_at() == t0 + timedelta(seconds=3)
    with pytest.raises(ConcurrencyError):
        await journal.append("wf-2", 0, new("B"), schedule=Schedule(None))
    assert await journal.next_ready_at() == t0 + timedelta(seconds=3)  # a refused append changes nothing
    await journal.append("wf-2", 1, new("B"), schedule=Schedule(None))
    assert await journal.next_ready_at() == later
    await journal.append("wf-1", 2, new("C"))  # no schedule: the row stays as it is
    assert await journal.next_ready_at() == later
    await journal.append("wf-1", 3, new("D"), schedule=Schedule(None))
    assert await journal.next_ready_at() is None
    clock.advance(1000)
    assert await journal.claim("w2", 30) == []


async def test_work_index_can_be_cleared(timed_journal: Journal, clock: ManualClock) -> None:
    await timed_journal.append("wf-1", NO_STREAM, new("A"), schedule=Schedule(clock.now()))
    await timed_journal.recorder.clear_work_index("default")
    assert await timed_journal.next_ready_at() is None
    assert await timed_journal.claim("w", 30) == []
    assert await timed_journal.stream_version("wf-1") == 1  # events are untouched


# -- the codec hook -----------------------------------------------------------------


async def test_zlib_codec_round_trip(journal: Journal) -> None:
    zipped = Journal(journal.recorder, codec=ZlibCodec())
    payload = b"hello " * 100
    [event] = await zipped.append("wf-1", NO_STREAM, [NewEvent("A", payload)])
    assert event.payload == payload
    assert [e.payload for e in await zipped.read_stream("wf-1")] == [payload]
    assert [e.payload for e in await zipped.read_all()] == [payload]
    await zipped.append("wf-2", NO_STREAM, [NewEvent("A", payload)], schedule=Schedule(zipped.clock.now()))
    [claim] = await zipped.claim("w", 30, read=5)
    assert [e.payload for e in claim.events or ()] == [payload]
    [stored] = await journal.read_stream("wf-1")  # without the codec: the bytes as stored
    assert stored.payload != payload and zlib.decompress(stored.payload) == payload


async def test_corrupt_stored_bytes_raise_decoding_error(journal: Journal) -> None:
    await journal.append("wf-1", NO_STREAM, [NewEvent("A", b"not zlib data")])
    zipped = Journal(journal.recorder, codec=ZlibCodec())
    with pytest.raises(DecodingError, match=r"^payload cannot be decompressed: Error -3 .*incorrect header"):
        await zipped.read_stream("wf-1")
    with pytest.raises(DecodingError, match=r"^payload cannot be decompressed: "):
        await zipped.read_all()


# -- durability -------------------------------------------------------------------


async def test_reopening_keeps_everything(durable_url: str) -> None:
    clock = ManualClock()
    first = await connect(durable_url, clock=clock)
    try:
        stored = await first.append("wf-1", NO_STREAM, new("A", "B"), schedule=Schedule(clock.now()))
        await first.save_snapshot(Snapshot("wf-1", 2, b"state"))
        await first.save_checkpoint("projector", 2)
        await first.create_namespace("tenant-a")
        await (await first.in_namespace("tenant-a")).append("wf-9", NO_STREAM, new("T"))
    finally:
        await first.close()

    again = await connect(durable_url, clock=clock)
    try:
        assert await again.read_stream("wf-1") == stored
        assert await again.latest_snapshot("wf-1") == Snapshot("wf-1", 2, b"state")
        assert await again.load_checkpoint("projector") == 2
        assert await again.next_ready_at() == clock.now()
        assert await again.namespaces() == ["default", "tenant-a"]
        tenant = await again.in_namespace("tenant-a")
        assert [e.type for e in await tenant.read_stream("wf-9")] == ["T"]
        [more] = await again.append("wf-1", 2, new("C"))
        assert more.version == 3 and more.position > stored[-1].position
    finally:
        await again.close()
