"""Find or start a PostgreSQL for the tests, give the run a fresh database, drop it after.

Usage: ``python tools/pgtest.py -- COMMAND [ARGS...]``

Where the server comes from, in order:

1. ``SAGALOG_TEST_DSN`` when set (a server someone else runs);
2. a server answering on 127.0.0.1:5432 with trust auth (CI and dev machines);
3. a private cluster (always, with ``SAGALOG_PGTEST_PRIVATE=1``): ``initdb``
   into a temporary directory and ``pg_ctl start`` on a free port, from the
   installed binaries (``apt-get install postgresql`` first when they are
   missing and we are root).

The command runs with ``SAGALOG_TEST_DSN`` pointing at a database created for
this run alone, and ``SAGALOG_TEST_PG_RESTART`` holding a shell command that
restarts the server (crash-recovery tests use it). The database is dropped at
the end, and a private cluster is stopped and deleted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from psycopg.conninfo import conninfo_to_dict

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def answers(dsn: str) -> bool:
    """True when a server accepts a connection at ``dsn`` within a few seconds."""
    try:
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def pg_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl, newest major version first."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for directory in candidates:
        if Path(directory, "initdb").exists():
            return Path(directory)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def install_postgres() -> None:
    """Install PostgreSQL server binaries with apt-get (root only)."""
    if os.geteuid() != 0:
        sys.exit("pgtest: PostgreSQL is missing; install 'postgresql' or set SAGALOG_TEST_DSN")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_as_postgres_user() -> list[str]:
    """initdb refuses to run as root: run the cluster as the 'postgres' user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def private_cluster() -> Iterator[tuple[str, str]]:
    """Start a throwaway cluster; yield (admin DSN, restart command)."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        install_postgres()
        bin_dir = pg_bin_dir()
        assert bin_dir is not None, "apt-get installed postgresql but initdb is not found"
    prefix = run_as_postgres_user()
    workdir = Path(tempfile.mkdtemp(prefix="sagalog-pg-"))
    if prefix:
        shutil.chown(workdir, "postgres", "postgres")
    data, port = workdir / "data", free_port()
    subprocess.run(
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-sync"],
        check=True, stdout=subprocess.DEVNULL,
    )
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=on"
    pg_ctl = [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
              str(workdir / "log"), "-w"]
    subprocess.run([*pg_ctl, "start"], check=True, stdout=subprocess.DEVNULL)
    restart = " ".join(f"'{part}'" for part in [*pg_ctl, "restart", "-m", "fast"])
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", restart
    finally:
        subprocess.run([*pg_ctl, "stop", "-m", "fast"], check=False, stdout=subprocess.DEVNULL)
        shutil.rmtree(workdir, ignore_errors=True)


def local_restart_command() -> str:
    """The command that restarts the machine's own cluster on 5432, when we may."""
    versions = sorted(glob.glob("/etc/postgresql/*/main"))
    if not versions or os.geteuid() != 0:
        return ""
    version = Path(versions[-1]).parent.name
    return f"pg_ctlcluster --skip-systemctl-redirect {version} main restart -m fast"


@contextlib.contextmanager
def server() -> Iterator[tuple[str, str]]:
    """Yield (admin DSN, restart command) for whichever server we can use."""
    given = os.environ.get("SAGALOG_TEST_DSN")
    if given:
        yield given, os.environ.get("SAGALOG_TEST_PG_RESTART", "")
    elif not os.environ.get("SAGALOG_PGTEST_PRIVATE") and answers(LOCAL_DSN):
        yield LOCAL_DSN, local_restart_command()
    else:
        with private_cluster() as found:
            yield found


def as_url(dsn: str, dbname: str) -> str:
    """A ``postgresql://`` URL for database ``dbname`` on the server ``dsn`` names."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = quote(params.pop("user", "postgres"), safe="")
    password = params.pop("password", None)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    params.pop("dbname", None)
    auth = f"{user}:{quote(password, safe='')}" if password else user
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{auth}@{host}:{port}/{dbname}{query}"


@contextlib.contextmanager
def fresh_database(admin_dsn: str) -> Iterator[str]:
    """Create a database for this run alone and drop it afterwards."""
    name = f"sagalog_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield as_url(admin_dsn, name)
    finally:
        for _ in range(10):
            try:
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except psycopg.OperationalError:
                time.sleep(1)  # the server may be restarting after a crash test


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__)
        return 2
    command = argv[argv.index("--") + 1 :]
    with server() as (admin_dsn, restart), fresh_database(admin_dsn) as dsn:
        env = {**os.environ, "SAGALOG_TEST_DSN": dsn, "SAGALOG_TEST_PG_RESTART": restart}
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
