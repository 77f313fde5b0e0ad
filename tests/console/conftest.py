"""Fixtures of the console tests; the helpers live in ``console_helpers``."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from console_helpers import Stack, running_stack  # noqa: E402


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str:
    """A fresh SQLite file or PostgreSQL schema."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
async def stack(backend_url: str) -> AsyncIterator[Stack]:
    """The stack without tokens (loopback)."""
    async with running_stack(backend_url) as made:
        yield made
