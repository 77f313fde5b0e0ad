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
    assert out.splitlines()[0] == "applied 001_journal"
    assert out.splitlines()[1].endswith("is migrated")
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
    assert "is not migrated (missing 001_journal)" in err
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
