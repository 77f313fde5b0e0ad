"""PostgreSQL schema migrations: ordered SQL files, each applied once.

The files live in ``sagalog/storage/sql/`` and are named ``NNN_name.sql``;
they run in ``NNN`` order, and each one applied is recorded in
``schema_migrations``. Everything is unqualified, so a journal lives in the
first schema of the connection's ``search_path``.

Two processes may migrate at once (two workers starting together): each
takes a transaction-level advisory lock keyed by the schema first, so the
second waits, then finds the work done.
"""

from __future__ import annotations

import re
from importlib import resources

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from sagalog.errors import ProgrammingError

_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('sagalog.migrate'), hashtext(current_schema()))"
_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class Migration(msgspec.Struct, frozen=True):
    """One SQL file of the schema's history."""

    version: int
    """Its ``NNN`` prefix; files apply in this order."""
    name: str
    """The file name without prefix and suffix."""
    sql: str
    """The statements to run."""

    @property
    def label(self) -> str:
        """``001_journal`` as shown to users."""
        return f"{self.version:03d}_{self.name}"


def available() -> list[Migration]:
    """Every migration shipped with this version of sagalog, in order."""
    found = []
    for entry in resources.files("sagalog.storage").joinpath("sql").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


async def _current_schema(conn: psycopg.AsyncConnection[TupleRow]) -> str:
    cur = await conn.execute("SELECT current_schema()")
    row = await cur.fetchone()
    schema = None if row is None else row[0]
    if not isinstance(schema, str):
        search_path = await (await conn.execute("SHOW search_path")).fetchone()
        raise ProgrammingError(
            f"no schema of the search_path ({search_path[0] if search_path else '?'}) exists: "
            "create the schema first (CREATE SCHEMA name)"
        )
    return schema


async def applied_versions(conn: psycopg.AsyncConnection[TupleRow]) -> set[int]:
    """Versions recorded in ``schema_migrations`` (empty when the table is missing)."""
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return set()
    cur = await conn.execute("SELECT version FROM schema_migrations")
    return {int(r[0]) for r in await cur.fetchall()}


async def pending(conn: psycopg.AsyncConnection[TupleRow]) -> list[Migration]:
    """Migrations not yet applied to the connection's schema, in order."""
    done = await applied_versions(conn)
    return [m for m in available() if m.version not in done]


async def migrate(conn: psycopg.AsyncConnection[TupleRow]) -> list[Migration]:
    """Apply every pending migration in one transaction; returns those applied.

    Args:
        conn: a connection in autocommit mode; its search_path picks the schema.

    Raises:
        ProgrammingError: no schema of the search_path exists.
    """
    await _current_schema(conn)
    async with conn.transaction():
        # Serialise concurrent migrators of this schema; the lock ends with
        # the transaction, so a crashed migrator leaves nothing behind.
        await conn.execute(_LOCK)
        await conn.execute(_CREATE_TABLE)
        todo = await pending(conn)
        for migration in todo:
            await conn.execute(sql.SQL(migration.sql))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
    return todo


async def require_migrated(conn: psycopg.AsyncConnection[TupleRow], where: str) -> None:
    """Raise ProgrammingError when the connection's schema lacks a migration.

    Args:
        conn: a connection to the database.
        where: the DSN without password, for the message.
    """
    missing = await pending(conn)
    if missing:
        labels = ", ".join(m.label for m in missing)
        raise ProgrammingError(
            f"the database at {where} is not migrated (missing {labels}): "
            "run `sagalog admin migrate --db URL` with this database's URL, "
            "or open it with migrate=True"
        )


async def migrate_url(url: str) -> list[str]:
    """Bring the store at ``url`` up to date; returns the migrations applied.

    PostgreSQL applies its pending SQL files; SQLite creates its schema when
    opened; memory has nothing to migrate. Both of those return ``[]``.

    Raises:
        OperationalError: the database cannot be reached.
        ProgrammingError: the URL is not supported, or its schema does not exist.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        from sagalog.storage.urls import open_recorder

        recorder = await open_recorder(url, migrate=True)
        await recorder.close()
        return []
    from sagalog.storage.postgres import describe, translate_errors

    with translate_errors(describe(url)):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return [m.label for m in await migrate(conn)]
