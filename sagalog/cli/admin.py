"""``sagalog admin ...``: schema migrations and namespaces.

    sagalog admin migrate [--db URL]
    sagalog admin create-namespace NAME [--db URL]
    sagalog admin namespaces [--db URL] [--json]
"""

from __future__ import annotations

import argparse

from sagalog.cli.common import add_json_option, print_json, run
from sagalog.storage import connect, default_url, redact_url
from sagalog.storage.migrations import migrate_url


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``admin`` command group."""
    admin = subparsers.add_parser("admin", help="migrate the database, manage namespaces")
    commands = admin.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)

    migrate = commands.add_parser(
        "migrate",
        help="apply pending schema migrations (safe to run from several processes at once)",
    )
    _add_db(migrate)
    migrate.set_defaults(run=run_migrate)

    create = commands.add_parser("create-namespace", help="create a tenant namespace")
    create.add_argument("name", metavar="NAME", help="1-200 letters, digits or '_.:-'")
    _add_db(create)
    create.set_defaults(run=run_create_namespace)

    listing = commands.add_parser("namespaces", help="list the namespaces")
    _add_db(listing)
    add_json_option(listing)
    listing.set_defaults(run=run_namespaces)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        help="database URL (env SAGALOG_DB; default: the embedded SQLite file .sagalog/journal.db)",
    )


def run_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations and say which."""
    url = args.db or default_url()
    applied = run(lambda: migrate_url(url))
    where = redact_url(url)
    if applied:
        for label in applied:
            print(f"applied {label}")
        print(f"{where} is migrated")
    else:
        print(f"{where} is up to date")
    return 0


def run_create_namespace(args: argparse.Namespace) -> int:
    """Create a namespace (a no-op when it exists)."""
    url = args.db or default_url()

    async def create() -> None:
        journal = await connect(url, migrate=False)
        try:
            await journal.create_namespace(args.name)
        finally:
            await journal.close()

    run(create)
    print(f"namespace {args.name!r} is ready")
    return 0


def run_namespaces(args: argparse.Namespace) -> int:
    """Print every namespace, one per line (or a JSON list)."""
    url = args.db or default_url()

    async def names() -> list[str]:
        journal = await connect(url, migrate=False)
        try:
            return await journal.namespaces()
        finally:
            await journal.close()

    found = run(names)
    if args.json:
        print_json(found)
    else:
        for name in found:
            print(name)
    return 0
