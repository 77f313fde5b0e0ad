"""Open a journal from a URL: ``memory://``, ``sqlite:///path.db`` or ``postgresql://...``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sagalog.storage.codec import PayloadCodec
from sagalog.storage.journal import DEFAULT_MAX_PAYLOAD, Journal
from sagalog.storage.memory import MemoryRecorder
from sagalog.storage.recorder import Recorder
from sagalog.storage.records import DEFAULT_NAMESPACE

from sagalog.clock import SYSTEM_CLOCK, Clock
from sagalog.errors import ProgrammingError

DEFAULT_URL = "sqlite:///.sagalog/journal.db"
"""The embedded default: one SQLite file under ``./.sagalog``."""


def default_url() -> str:
    """``SAGALOG_DB`` when set, else the embedded SQLite file."""
    return os.environ.get("SAGALOG_DB") or DEFAULT_URL


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, at, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    masked = f"{user}:***" if ":" in credentials else user
    return f"{scheme}://{masked}{at}{host}"


async def open_recorder(url: str, *, migrate: bool = True) -> Recorder:
    """Connect the backend a URL names, applying migrations when ``migrate``."""
    if url == "memory://" or url.startswith("memory:"):
        return MemoryRecorder()
    if url.startswith("sqlite:"):
        from sagalog.storage.sqlite import SqliteRecorder

        path = url.removeprefix("sqlite:").removeprefix("//").removeprefix("/") or "journal.db"
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        return await SqliteRecorder.open(path)
    if url.startswith(("postgresql://", "postgres://")):
        from sagalog.storage.postgres import PostgresRecorder

        return await PostgresRecorder.open(url, migrate=migrate)
    raise ProgrammingError(
        f"unsupported database URL {redact_url(url)!r}: use memory://, "
        "sqlite:///path/to/file.db or postgresql://user@host/dbname"
    )


async def connect(
    url: str | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    codec: PayloadCodec | None = None,
    clock: Clock = SYSTEM_CLOCK,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    migrate: bool = True,
) -> Journal:
    """Open the journal at ``url`` (default: :func:`default_url`); close it when done."""
    recorder = await open_recorder(url or default_url(), migrate=migrate)
    journal = Journal(recorder, codec=codec, clock=clock, max_payload_bytes=max_payload_bytes)
    if namespace == DEFAULT_NAMESPACE:
        return journal
    try:
        return await journal.in_namespace(namespace)
    except BaseException:
        await recorder.close()
        raise


@asynccontextmanager
async def open_journal(
    url: str | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    codec: PayloadCodec | None = None,
    clock: Clock = SYSTEM_CLOCK,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    migrate: bool = True,
) -> AsyncIterator[Journal]:
    """``async with open_journal(url) as journal:`` — connect, and close at the end."""
    journal = await connect(
        url,
        namespace=namespace,
        codec=codec,
        clock=clock,
        max_payload_bytes=max_payload_bytes,
        migrate=migrate,
    )
    try:
        yield journal
    finally:
        await journal.close()
