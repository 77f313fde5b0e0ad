"""Every backend against a pure model, under random appends, conflicts and reads.

Hypothesis drives a :class:`RuleBasedStateMachine`; the journal is async, so
one event loop runs in a blocking portal for the whole test and each rule
calls into it. Each example gets a fresh namespace of the same store (so
examples are independent without reopening the database every time).
"""

from __future__ import annotations

import uuid

import anyio
import hypothesis.strategies as st
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from sagalog.storage import ANY_VERSION, Journal, NewEvent, StreamFilter, connect

from sagalog.errors import ConcurrencyError

STREAMS = st.sampled_from(["wf-a", "wf-b", "session-c"])
EVENTS = st.lists(
    st.builds(NewEvent, st.sampled_from(["Started", "Done", "x.y:z"]), st.binary(max_size=16)),
    min_size=1,
    max_size=3,
)
EXPECTED = st.one_of(st.none(), st.just(ANY_VERSION), st.integers(0, 6))
"""``None`` stands for the stream's right version."""


class JournalMachine(RuleBasedStateMachine):
    """The journal must behave as lists of events per stream plus one global order."""

    def __init__(self, portal: BlockingPortal, store: Journal) -> None:
        super().__init__()
        self.portal = portal
        namespace = f"ex-{uuid.uuid4().hex[:12]}"
        portal.call(store.create_namespace, namespace)
        self.journal = portal.call(store.in_namespace, namespace)
        self.streams: dict[str, list[NewEvent]] = {}
        self.order: list[tuple[str, int]] = []
        """(stream, version) of every event, in global order."""
        self.positions: list[int] = []

    def stored(self, stream_id: str, events: list[NewEvent]) -> None:
        model = self.streams.setdefault(stream_id, [])
        for event in events:
            model.append(event)
            self.order.append((stream_id, len(model)))

    @rule(stream_id=STREAMS, expected=EXPECTED, events=EVENTS)
    def append(self, stream_id: str, expected: int | None, events: list[NewEvent]) -> None:
        current = len(self.streams.get(stream_id, []))
        expected = current if expected is None else expected
        try:
            written = self.portal.call(self.journal.append, stream_id, expected, events)
        except ConcurrencyError as exc:
            assert expected not in (ANY_VERSION, current)
            assert str(exc) == (
                f"stream {stream_id!r} is at version {current}, but the append expected version {expected}"
            )
            return
        assert expected in (ANY_VERSION, current)
        assert [e.version for e in written] == list(range(current + 1, current + 1 + len(events)))
        assert [(e.type, e.payload) for e in written] == [(e.type, e.payload) for e in events]
        positions = [e.position for e in written]
        assert positions == sorted(positions) and positions[0] > max(self.positions, default=0)
        self.positions += positions
        self.stored(stream_id, events)

    @rule(stream_id=STREAMS, writers=st.integers(2, 4))
    def race(self, stream_id: str, writers: int) -> None:
        current = len(self.streams.get(stream_id, []))
        outcomes: dict[int, str] = {}

        async def attempt(index: int) -> None:
            try:
                await self.journal.append(stream_id, current, [NewEvent("Raced", bytes([index]))])
                outcomes[index] = "won"
            except ConcurrencyError as exc:
                outcomes[index] = str(exc)

        async def run() -> None:
            async with anyio.create_task_group() as tg:
                for index in range(writers):
                    tg.start_soon(attempt, index)

        self.portal.call(run)
        winners = [i for i, outcome in outcomes.items() if outcome == "won"]
        assert len(winners) == 1
        lost = f"stream {stream_id!r} is at version {current + 1}, but the append expected version {current}"
        assert sorted(o for o in outcomes.values() if o != "won") == [lost] * (writers - 1)
        [event] = self.portal.call(self.journal.read_stream, stream_id, current + 1)
        assert event.payload == bytes(winners)
        self.positions.append(event.position)
        self.stored(stream_id, [NewEvent("Raced", bytes(winners))])

    @rule(stream_id=STREAMS, from_version=st.integers(1, 8), limit=st.none() | st.integers(0, 4))
    def read_stream(self, stream_id: str, from_version: int, limit: int | None) -> None:
        found = self.portal.call(self.journal.read_stream, stream_id, from_version, limit)
        model = self.streams.get(stream_id, [])[from_version - 1 :]
        model = model if limit is None else model[:limit]
        assert [(e.type, e.payload) for e in found] == [(e.type, e.payload) for e in model]
        assert [e.version for e in found] == list(range(from_version, from_version + len(found)))

    @rule(data=st.data(), limit=st.integers(1, 5))
    def read_all(self, data: st.DataObject, limit: int) -> None:
        skip = data.draw(st.integers(0, len(self.order)))
        after = self.positions[skip - 1] if skip else 0
        found = self.portal.call(self.journal.read_all, after, limit)
        assert [(e.stream_id, e.version) for e in found] == self.order[skip : skip + limit]
        assert [e.position for e in found] == self.positions[skip : skip + limit]

    @invariant()
    def versions_match(self) -> None:
        infos = self.portal.call(self.journal.list_streams, StreamFilter(limit=10))
        assert {i.stream_id: i.version for i in infos} == {s: len(e) for s, e in self.streams.items()}
        for stream_id, events in self.streams.items():
            assert self.portal.call(self.journal.stream_version, stream_id) == len(events)


def test_backend_matches_the_model(journal_url: str) -> None:
    with start_blocking_portal("asyncio") as portal:
        store = portal.call(connect, journal_url)
        try:

            class Machine(JournalMachine):
                def __init__(self) -> None:
                    super().__init__(portal, store)

            run_state_machine_as_test(Machine, settings=settings(stateful_step_count=15))
        finally:
            portal.call(store.close)
