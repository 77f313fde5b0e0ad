"""``sagalog admin ...``: schema migrations and namespaces.

    sagalog admin migrate [--db URL]
    sagalog admin create-namespace NAME [--db URL]
    sagalog admin namespaces [--db URL] [--json]
    sagalog admin rebuild [--db URL] [--namespace NS] [--snapshot-every N] [--json]
"""

from __future__ import annotations

import argparse

from sagalog.cli.common import add_db_options, add_json_option, open_from_args, print_json, run
from sagalog.replay.rebuild import DEFAULT_SNAPSHOT_EVERY, RebuildSummary, rebuild_derived
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

    rebuild = commands.add_parser(
        "rebuild",
        help="drop the work index and snapshots of a namespace and rebuild them from its events",
    )
    add_db_options(rebuild)
    rebuild.add_argument(
        "--snapshot-every",
        type=int,
        default=DEFAULT_SNAPSHOT_EVERY,
        metavar="N",
        help="snapshot streams with at least N events at their head (0: none; default: %(default)s)",
    )
    add_json_option(rebuild)
    rebuild.set_defaults(run=run_rebuild)


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


def run_rebuild(args: argparse.Namespace) -> int:
    """Rebuild the derived tables of one namespace from its events and summarise."""

    async def rebuild() -> RebuildSummary:
        journal = await open_from_args(args, migrate=False)
        try:
            return await rebuild_derived(journal, snapshot_every=args.snapshot_every)
        finally:
            await journal.close()

    summary = run(rebuild)
    if args.json:
        print_json(summary)
        return 0
    where = redact_url(args.db or default_url())
    print(f"rebuilt namespace {summary.namespace!r} of {where} from {summary.events} events")
    print(
        f"  streams: {summary.workflows} workflows, {summary.sessions} sessions, "
        f"{summary.other_streams} other"
    )
    print(f"  work index: {summary.work_rows} rows (leases reset)")
    print(f"  snapshots: {summary.snapshots} written")
    print("  subscription checkpoints: kept")
    for stream in summary.undecodable:
        print(f"  warning: {stream} has an event that cannot be decoded")
    return 0
