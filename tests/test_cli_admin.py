"""``sagalog admin``: migrate, create-namespace, namespaces — run in-process."""

from __future__ import annotations

import json
import socket

import pytest

from sagalog.cli import main


def sagalog(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.postgres
def test_migrate_applies_once_then_reports_up_to_date(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = sagalog(capsys, "admin", "migrate", "--db", pg_url)
    assert status == 0
    assert out.splitlines()[:4] == [
        "applied 001_journal", "applied 002_append_arrays", "applied 003_notices", "applied 004_tickets"
    ]
    assert out.splitlines()[4].endswith("is migrated")
    status, out, _ = sagalog(capsys, "admin", "migrate", "--db", pg_url)
    assert (status, out.strip().endswith("is up to date")) == (0, True)


@pytest.mark.postgres
def test_namespaces_are_created_and_listed(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    sagalog(capsys, "admin", "migrate", "--db", pg_url)
    status, out, _ = sagalog(capsys, "admin", "create-namespace", "tenant-a", "--db", pg_url)
    assert (status, out) == (0, "namespace 'tenant-a' is ready\n")
    assert sagalog(capsys, "admin", "create-namespace", "tenant-a", "--db", pg_url)[0] == 0
    assert sagalog(capsys, "admin", "namespaces", "--db", pg_url) == (0, "default\ntenant-a\n", "")
    status, out, _ = sagalog(capsys, "admin", "namespaces", "--db", pg_url, "--json")
    assert json.loads(out) == ["default", "tenant-a"]


def test_namespaces_on_sqlite(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert sagalog(capsys, "admin", "migrate", "--db", sqlite_url)[1].endswith("is up to date\n")
    sagalog(capsys, "admin", "create-namespace", "eu", "--db", sqlite_url)
    assert sagalog(capsys, "admin", "namespaces", "--db", sqlite_url)[1] == "default\neu\n"


def test_an_invalid_namespace_name_is_refused(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = sagalog(capsys, "admin", "create-namespace", "no spaces", "--db", sqlite_url)
    assert status == 1
    assert "invalid namespace 'no spaces'" in err


@pytest.mark.postgres
def test_an_unmigrated_database_tells_to_migrate(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = sagalog(capsys, "admin", "namespaces", "--db", pg_url)
    assert status == 1
    assert "is not migrated (missing 001_journal, 002_append_arrays, 003_notices, 004_tickets)" in err
    assert "run `sagalog admin migrate --db URL`" in err


def test_an_unsupported_url_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = sagalog(capsys, "admin", "migrate", "--db", "mysql://root:pw@db/app")
    assert status == 1
    assert err.startswith("sagalog: error: unsupported database URL 'mysql://root:***@db/app'")


def test_an_unreachable_database_is_named_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://app:hunter2@127.0.0.1:{port}/app?connect_timeout=2"
    status, _, err = sagalog(capsys, "admin", "migrate", "--db", url)
    assert status == 1
    assert f"PostgreSQL at postgresql://app:***@127.0.0.1:{port}/app" in err
    assert "hunter2" not in err


# -- sagalog admin rebuild ------------------------------------------------------


def _journal_with_a_timer(url: str) -> None:
    """A workflow waiting on a timer and an open session, with the work index wiped."""
    from typing import Any

    import anyio
    from sagalog.engine import Registry, Runner, Sessions, workflow
    from sagalog.replay import sleep
    from sagalog.storage import connect

    reg = Registry()

    @workflow(registry=reg, name="cli.nap")
    def nap(ctx: Any) -> Any:
        yield sleep(seconds=60)
        return "rested"

    async def setup() -> list[str]:
        journal = await connect(url)
        try:
            runner = Runner(journal, reg)
            await runner.start(nap, id="nap")
            await runner.run_until_idle()
            await Sessions(journal).open("s1", idle_timeout=300)
            await journal.clear_work_index()
            return [row.stream_id for row in await journal.work_index()]
        finally:
            await journal.close()

    assert anyio.run(setup) == []


def _work_index(url: str) -> list[str]:
    import anyio
    from sagalog.storage import connect

    async def read() -> list[str]:
        journal = await connect(url)
        try:
            return [row.stream_id for row in await journal.work_index()]
        finally:
            await journal.close()

    return anyio.run(read)


def test_rebuild_restores_the_work_index_and_says_what_it_did(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _journal_with_a_timer(sqlite_url)
    status, out, err = sagalog(capsys, "admin", "rebuild", "--db", sqlite_url)
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        f"rebuilt namespace 'default' of {sqlite_url} from 3 events",
        "  streams: 1 workflows, 1 sessions, 0 other",
        "  work index: 2 rows (leases reset)",
        "  snapshots: 1 written",
        "  subscription checkpoints: kept",
    ]
    assert _work_index(sqlite_url) == ["session-s1", "wf-nap"]
    status, out, _ = sagalog(capsys, "admin", "rebuild", "--db", sqlite_url, "--json")
    summary = json.loads(out)
    assert (summary["workflows"], summary["work_rows"], summary["undecodable"]) == (1, 2, [])


@pytest.mark.postgres
def test_rebuild_on_postgres(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _journal_with_a_timer(pg_url)
    status, out, _ = sagalog(capsys, "admin", "rebuild", "--db", pg_url)
    assert status == 0
    assert "work index: 2 rows (leases reset)" in out
    assert _work_index(pg_url) == ["session-s1", "wf-nap"]


def test_rebuild_of_an_unknown_namespace_is_refused(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sagalog(capsys, "admin", "migrate", "--db", sqlite_url)
    status, out, err = sagalog(
        capsys, "admin", "rebuild", "--db", sqlite_url, "--namespace", "nowhere"
    )
    assert (status, out) == (1, "")
    assert "unknown namespace 'nowhere': create it first" in err


def test_rebuild_of_an_unreachable_database_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://app:hunter2@127.0.0.1:{port}/app?connect_timeout=2"
    status, _, err = sagalog(capsys, "admin", "rebuild", "--db", url)
    assert status == 1
    assert f"PostgreSQL at postgresql://app:***@127.0.0.1:{port}/app" in err
    assert "hunter2" not in err
