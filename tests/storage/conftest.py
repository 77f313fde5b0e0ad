"""Fixtures of the backend conformance kit (on top of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sagalog.storage import Journal, connect

from sagalog.clock import ManualClock


@pytest.fixture
async def clock() -> ManualClock:
    """A clock that only moves when the test says so."""
    return ManualClock()


@pytest.fixture
async def timed_journal(journal_url: str, clock: ManualClock) -> AsyncIterator[Journal]:
    """An empty journal on each backend whose ``recorded_at`` and leases follow ``clock``."""
    opened = await connect(journal_url, clock=clock)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL for each backend that outlives its connections: SQLite file, PostgreSQL schema."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    yield str(request.getfixturevalue(fixture))


@pytest.fixture
async def peer(journal: Journal, journal_url: str) -> AsyncIterator[Journal]:
    """A second journal on the same store as ``journal``: its own connection (memory: the same object).

    Races between two connections are what a database must get right;
    appends through one Journal are already serialised by its group committer.
    """
    if journal_url.startswith("memory"):
        yield journal
        return
    second = await connect(journal_url)
    try:
        yield second
    finally:
        await second.close()
