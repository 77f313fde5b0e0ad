"""Shared fixtures: a journal on each real backend, a fresh one per test.

PostgreSQL comes from ``SAGALOG_TEST_DSN`` (``make test`` sets it through
tools/pgtest.py, to a database made for this run). Each test gets its own
schema in that database (through the connection's ``search_path``), so tests
never see each other's events.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from sagalog.storage import Journal, connect

settings.register_profile(
    "fast", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture
def anyio_backend() -> str:
    """Tests run on asyncio (the worker adds uvloop)."""
    return "asyncio"


def postgres_dsn() -> str:
    """The run's database; fails loudly when the tests were started without one."""
    dsn = os.environ.get("SAGALOG_TEST_DSN")
    if not dsn:
        pytest.fail("SAGALOG_TEST_DSN is not set: run the tests with `make test`")
    return dsn


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` with a libpq ``options`` parameter that selects ``schema``."""
    options = quote(f"-csearch_path={schema}")
    joiner = "&" if "?" in dsn else "?"
    if "://" not in dsn:  # key=value form
        return f"{dsn} options='-csearch_path={schema}'"
    return f"{dsn}{joiner}options={options}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh, empty schema in the run's PostgreSQL database."""
    dsn = postgres_dsn()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield with_search_path(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL to a new SQLite file."""
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture(params=BACKENDS)
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for each backend in turn: memory, SQLite file, PostgreSQL schema."""
    backend: str = request.param
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def journal(journal_url: str) -> AsyncIterator[Journal]:
    """An open, empty journal on each backend in turn."""
    opened = await connect(journal_url, migrate=True)
    try:
        yield opened
    finally:
        await opened.close()
