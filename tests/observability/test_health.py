"""/healthz and /readyz of a real worker: ready while the database answers and its
schema is current; 503 with the reason when it is unreachable, behind, or draining."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.abc
import msgspec
import psycopg
import pytest
from obs_helpers import http_get, worker_on
from sagalog.storage import Journal, connect

from sagalog.errors import OperationalError

pytestmark = pytest.mark.anyio


async def ready(port: int) -> tuple[int, dict[str, str]]:
    status, kind, body = await http_get(port, "/readyz")
    assert kind == "application/json"
    answer: dict[str, str] = msgspec.json.decode(body)
    return status, answer


async def test_healthz_answers_and_unknown_paths_are_404(sqlite_url: str) -> None:
    journal = await connect(sqlite_url)
    async with worker_on(journal, worker_id="w-health") as worker:
        assert worker.metrics_port
        status, kind, body = await http_get(worker.metrics_port, "/healthz")
        missing = await http_get(worker.metrics_port, "/nope")
    assert (status, kind) == (200, "application/json")
    assert msgspec.json.decode(body) == {"status": "ok", "worker": "w-health"}
    assert missing[0] == 404
    assert b"try /metrics, /healthz or /readyz" in missing[2]
    await journal.close()


async def test_sqlite_readyz_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    journal = await connect(f"sqlite:///{path}")
    async with worker_on(journal) as worker:
        port = worker.metrics_port
        assert port
        assert await ready(port) == (200, {"status": "ready", "worker": "obs-worker"})

        path.rename(tmp_path / "moved.db")  # the volume went away under the worker
        status, answer = await ready(port)
        assert status == 503
        assert answer["status"] == "unavailable"
        assert "cannot be opened" in answer["reason"] and "journal.db" in answer["reason"]

        (tmp_path / "moved.db").rename(path)
        assert (await ready(port))[0] == 200

        with sqlite3.connect(path) as conn:  # a schema this code does not run
            conn.execute("PRAGMA user_version = 7")
        status, answer = await ready(port)
        assert status == 503
        assert "has schema version 7; this sagalog runs version 1" in answer["reason"]
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 1")
        assert (await ready(port))[0] == 200

        worker.shutdown()  # draining (the endpoint stays up while work in flight finishes)
        assert await worker.readiness() == "draining: shutting down"
    await journal.close()


async def test_postgres_readyz_wants_current_migrations(pg_url: str) -> None:
    journal = await connect(pg_url)
    async with worker_on(journal) as worker:
        assert worker.metrics_port
        assert (await ready(worker.metrics_port))[0] == 200
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("DELETE FROM schema_migrations WHERE version = 1")
        status, answer = await ready(worker.metrics_port)
        assert status == 503
        assert "is not migrated (missing 001" in answer["reason"]
        assert "sagalog admin migrate" in answer["reason"]
    await journal.close()


@asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[tuple[int, anyio.CancelScope]]:
    """Forward a local port to the target; cancelling the yielded scope closes the port
    and every connection through it (the database host goes away)."""

    async def pipe(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in source:
                await sink.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def forward(client: anyio.abc.SocketStream) -> None:
        server = await anyio.connect_tcp(target_host, target_port)
        async with client, server, anyio.create_task_group() as both:
            both.start_soon(pipe, client, server)
            both.start_soon(pipe, server, client)

    async with anyio.create_task_group() as tg:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        scope = anyio.CancelScope()
        tg.start_soon(_serve, listener, forward, scope)
        yield port, scope
        tg.cancel_scope.cancel()


async def _serve(listener: anyio.abc.SocketListener, handler: object, scope: anyio.CancelScope) -> None:
    with scope:
        async with listener:
            await listener.serve(handler)  # type: ignore[arg-type]


async def test_postgres_readyz_is_503_once_the_server_is_unreachable(pg_url: str) -> None:
    parts = urlsplit(pg_url)
    assert parts.hostname and parts.port
    async with tcp_proxy(parts.hostname, parts.port) as (port, cut):
        netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}")
        proxied = urlunsplit(parts._replace(netloc=netloc))
        journal = await connect(proxied)
        async with worker_on(journal) as worker:
            assert worker.metrics_port
            worker.ready_timeout = 2.0
            assert (await ready(worker.metrics_port))[0] == 200
            cut.cancel()  # every connection dropped, the port closed
            status, answer = await ready(worker.metrics_port)
            assert status == 503
            assert answer["status"] == "unavailable"
            # The pool's idle connection fails at once; a fresh one would time out (both say so).
            assert answer["reason"].startswith(("PostgreSQL at", "database did not answer within 2 s"))
            assert f"127.0.0.1:{port}" in answer["reason"] or "did not answer" in answer["reason"]
            status, answer = await ready(worker.metrics_port)  # again: no connection left to borrow
            assert status == 503
            worker.shutdown()
            worker.shutdown()  # no drain to wait for with the database gone
        with anyio.move_on_after(5):
            await journal.close()


async def test_sqlite_readyz_with_a_path_that_needs_quoting(tmp_path: Path) -> None:
    path = tmp_path / "odd dir?#%" / "journal.db"
    journal = await connect(f"sqlite:///{path}")
    await journal.check()  # the file is opened afresh by a URI: "?", "#" and "%" must not cut it
    path.unlink()
    with pytest.raises(OperationalError, match=r"cannot be opened: unable to open database file"):
        await journal.check()
    await journal.close()


async def test_check_passes_on_every_backend_when_all_is_well(journal: Journal) -> None:
    await journal.check()
