"""Fixtures of the replay tool's tests: filled journals, and running the command line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
import pytest
from rt_helpers import START, fill, fill_url
from sagalog.storage import Journal, connect

from sagalog.cli import main
from sagalog.clock import ManualClock


@pytest.fixture
async def filled(journal_url: str) -> AsyncIterator[Journal]:
    """A journal on each backend holding two orders, a session and a ledger stream."""
    clock = ManualClock(START)
    journal = await connect(journal_url, clock=clock)
    try:
        await fill(journal, clock)
        yield journal
    finally:
        await journal.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A URL of an empty journal that outlives one connection: a SQLite file, a Postgres schema."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def filled_url(db_url: str) -> str:
    """``db_url`` filled with the same histories as ``filled``."""
    anyio.run(fill_url, db_url)
    return db_url


@dataclass
class Result:
    """What a command line run printed, and its exit status."""

    status: int
    out: str
    err: str


@pytest.fixture
def sagalog(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run ``sagalog`` in this process: ``sagalog("replay", "show", "1", "--db", url)``."""

    def call(*argv: str) -> Result:
        capsys.readouterr()
        try:
            status = main(list(argv))
        except SystemExit as exc:  # argparse refusing an option
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)

    return call
